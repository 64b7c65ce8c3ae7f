# Unit tests of julia/kernel_support.jl, run by tests/test_kernel_support.py:
#     julia --startup-file=no tests/kernel_support_tests.jl
# A stand-in for the worker's module provides `emit_display` (it records what is displayed),
# `display_bundle` and `with_compile`.
module JuliaPoolWorker
using REPL, Base64
const DISPLAYED = Any[]
emit_display(bundle::Vector{Pair{String,String}}) = push!(DISPLAYED, bundle)
const COMPILE_MIN = Int8(3)
with_compile(f, mode::Int8) = f()          # the worker switches Julia's compiler here
display_bundle(x) = mime_bundle(x)
const ACTIVE_MODULE = Ref{Module}(Main)
include(joinpath(@__DIR__, "..", "julia", "protocol.jl"))
include(joinpath(@__DIR__, "..", "julia", "compat.jl"))
include(joinpath(@__DIR__, "..", "julia", "kernel_support.jl"))
include(joinpath(@__DIR__, "..", "julia", "notebook.jl"))   # display(mime, x) of raw data
end
W = JuliaPoolWorker
m = Module(:UserMod)
using Test
@testset "kernel_support" begin
  b = W.mime_bundle(1)
  @test b == ["text/plain" => "1"]
  md = Core.eval(m, Meta.parse("""using Markdown; md"# Hi *there*" """))
  b = Dict(W.mime_bundle(md)); @test haskey(b, "text/markdown") && haskey(b, "text/html") && haskey(b, "text/latex")
  Core.eval(m, :(struct P end; Base.show(io::IO, ::MIME"image/png", ::P) = write(io, UInt8[0x89, 0x50]); Base.show(io::IO, ::MIME"text/html", ::P) = error("boom")))
  b = Dict(W.mime_bundle(Core.eval(m, :(P())))); @test b["image/png"] == "iVA=" ; @test !haskey(b, "text/html")
  Core.eval(m, :(struct Bad end; Base.show(io::IO, ::MIME"text/plain", ::Bad) = error("bad show")))
  b = Dict(W.mime_bundle(Core.eval(m, :(Bad())))); @test occursin("bad show", b["text/plain"])
  b = Dict(W.mime_bundle(collect(1:1000))); @test occursin("⋮", b["text/plain"])
  # display
  pushdisplay(W.KernelDisplay())
  display(1:3); display("text/html", md); display(MIME("text/plain"), 5)
  @test_throws Exception display(MIME("image/png"), 5)
  popdisplay()
  @test length(W.DISPLAYED) == 3
  @test Dict(W.DISPLAYED[2])["text/html"] != ""
  # complete
  @test W.complete(m, "prin", 4) == (0, 4, ["print", "println", "printstyled"])
  s = "x = \"aé\"; Base.pri"
  st, sp, ms = W.complete(m, s, ncodeunits(s)); @test st == ncodeunits(s) - 3 && sp == ncodeunits(s) && "println" in ms
  @test W.complete(m, "sin(", 4)[3] == String[]
  @test W.complete(m, "\\alp", 4) == (0, 4, ["\\alpha"])
  Core.eval(m, :(myvariable_xyz = 3))
  @test W.complete(m, "1 + myvar", 9) == (4, 9, ["myvariable_xyz"])
  @test W.complete(m, "myvar + 1", 5) == (0, 5, ["myvariable_xyz"])
  @test W.complete(m, "", 0) == (0, 0, String[])
  @test W.complete(m, "é", 2)[3] == String[]
  # inspect
  d = Dict(W.inspect(m, "sin(1)", 2, 0)); @test occursin("sine", d["text/plain"]) && haskey(d, "text/markdown")
  d = Dict(W.inspect(m, "Base.Math.sin", 13, 0)); @test occursin("sine", d["text/plain"])
  d = Dict(W.inspect(m, "@time 1", 3, 0)); @test occursin("time", d["text/plain"])
  @test isempty(W.inspect(m, "xyzzy_nope", 3, 0))
  @test isempty(W.inspect(m, "   ", 1, 0))
  d = Dict(W.inspect(m, "myvariable_xyz", 14, 0)); @test occursin("Int64", d["text/plain"])
  @test W.name_at("foo(bar)", 5) == "bar"; @test W.name_at("foo(bar)", 3) == "foo"; @test W.name_at("foo(bar)", 8) == ""
  # is_complete
  @test W.is_complete("1+")[1] == "incomplete"
  @test W.is_complete("for i in 1:3") == ("incomplete", "    ")
  @test W.is_complete("1 2")[1] == "invalid"
  @test W.is_complete("x = )")[1] == "invalid"
  @test W.is_complete("f(x)=x")[1] == "complete"
  @test W.is_complete("")[1] == "complete"
  # rewrite
  @test W.rewrite_cell("1+1") == "1+1"
  v = include_string(m, W.rewrite_cell("?sin")); @test occursin("sine", sprint(show, MIME"text/plain"(), v))
  include_string(m, W.rewrite_cell("]st"))
  # stdin
  answers = ["alice", "42", "\x04"]
  asked = Any[]
  ask = (p, pw) -> (push!(asked, (p, pw)); popfirst!(answers))
  r = W.with_stdin(ask) do
      a = readline(); b = parse(Int, readline(stdin)); c = readline()
      (a, b, c, eof(stdin))
  end
  @test r == ("alice", 42, "", true)
  r = W.with_stdin((p, pw) -> "whole text") do
      read(stdin, String)
  end
  @test r == "whole text\n"
  r = W.with_stdin((p, pw) -> (push!(asked, (p, pw)); "bob")) do
      secret = Base.getpass("Pass")
      answer = (Base.prompt("Name"), read(secret, String))
      Base.shred!(secret)
      answer
  end
  @test r == ("bob", "bob")
  @test asked[end-1:end] == [("Pass: ", true), ("Name: ", false)]
  @test W.with_stdin((p, pw) -> "x") do
      read(`cat`, String)
  end == ""
  @test stdin isa IO && !(stdin isa W.KernelStdin)
  e = try W.without_stdin(() -> readline()); nothing catch e; e end
  @test e isa ErrorException && occursin("allow_stdin=false", e.msg)
end
@testset "name_at in calls" begin
  @test W.name_at("sin(", 4) == "sin"
  @test W.name_at("sin(1, ", 7) == "sin"
  @test W.name_at("foo(bar(1), ", 12) == "foo"
  @test W.name_at("foo(x)", 6) == ""
  @test W.name_at("Base.sin(", 9) == "Base.sin"
  @test W.name_at("x = é(", 7) == "é"; @test W.name_at("x = é(", 99) == "é"
  d = Dict(W.inspect(m, "sin(1, ", 7, 0)); @test occursin("sine", d["text/plain"])
end
@testset "IJulia habits and version points (issue 10)" begin
  # A string given for a textual MIME type is the data; bytes for a binary one.
  @test W.is_raw_data(MIME("text/html"), "<b>x</b>") && !W.is_raw_data(MIME("text/plain"), "x")
  @test W.is_raw_data(MIME("image/png"), UInt8[1, 2]) && !W.is_raw_data(MIME("image/png"), "x")
  @test Dict(W.mime_display_bundle(MIME("text/latex"), "\\frac12")) == Dict("text/plain" => "\\frac12", "text/latex" => "\\frac12")
  @test Dict(W.mime_display_bundle(MIME("image/png"), UInt8[0x89, 0x50]))["image/png"] == "iVA="
  pushdisplay(W.KernelDisplay()); n = length(W.DISPLAYED)
  display("text/csv", "a,b"); popdisplay()
  @test Dict(W.DISPLAYED[n+1]) == Dict("text/plain" => "a,b", "text/csv" => "a,b")
  # ?help and Shift-Tab run in a `let`: a user's constant `docs` is neither reassigned nor in the way.
  h = Module(:HelpUser); Core.eval(h, :(const docs = 3))
  @test occursin("sine", sprint(show, MIME"text/plain"(), W.eval_help(h, devnull, "sin")))
  @test Core.eval(h, :docs) == 3 && !isempty(W.inspect(h, "sin", 3, 0))
  # getpass as Julia 1.12 calls it, with_suffix=false: the prompt as given.
  asked = Any[]
  secret = W.with_stdin((p, pw) -> (push!(asked, (p, pw)); "s3")) do
      Base.getpass(stdin, stdout, "Token> "; with_suffix=false)
  end
  @test read(secret, String) == "s3" && asked == [("Token> ", true)]; Base.shred!(secret)
  # What a completion inserts, through the one helper that knows both APIs.
  comps, _, _ = W.REPL.REPLCompletions.completions("\\alp", 4, m)
  @test W.completion_string(comps[1]) == "\\alpha"
  # UndefVarError names Main where it has a scope (1.11+); unchanged without one (1.5).
  e = W.as_in_main(UndefVarError(:nope), m)
  @test e isa UndefVarError && e.var === :nope
  isdefined(e, :scope) && @test getfield(e, :scope) !== m
  # Our visibility rule: the running module counts as Main; other names must mean the same object.
  Core.eval(m, :(struct Seen end))
  W.ACTIVE_MODULE[] = m
  @test W.visible_as_main(:Seen, m, Main) && W.visible_as_main(:sin, Base, Main)
  W.ACTIVE_MODULE[] = Main
  @test !W.visible_as_main(:Seen, m, Main) && !W.visible_as_main(:no_such_name_here, Base, Main)
end
