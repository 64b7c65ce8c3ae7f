# The compile policy: how the user's code runs (JULIAPOOL_COMPILE_POLICY, the pool's `compile_policy`).
# Included by compilation.jl. Figures: README.md ("Compile policies"), benchmarks/bench_programs.py.
#
# Real programs spend most of a pooled call compiling code they run once: a top-level loop that
# prints ten lines (3 to 20 ms to compile), a comprehension (Base's `collect` for a new closure
# type, ~25 ms), small helper functions. Julia's interpreter runs such code at once; compiled code
# is 10 to 100x faster once compiled. The policies:
#
#   "tiered"       (default) each top-level statement that looks short runs interpreted, as under
#                  `--compile=min`, Base's code it reaches too; one that looks long (a loop over a
#                  long range, a `while` that may run long, a large number or collection) runs
#                  compiled. A user function is hot when it calls itself, or loops longer than
#                  the budget by the same guess (work_guess.jl); a hot function is always
#                  compiled, and so is what a statement that names one (directly or through other
#                  functions of the module) calls. Macro calls and other forms that must stay
#                  top-level forms get the statement's mode too.
#   "toplevel"     compile every function, interpret short top-level loops only.
#   "compiled"     Julia's own choice: everything compiled, top-level loops too (the behaviour
#                  before compile policies existed).
#   "interpreted"  interpret everything not compiled already (the seed's `--compile=min`).
#
# The internals, checked by reading Julia's source: src/toplevel.c of 1.5 and of 1.12/master,
# src/gf.c of 1.5 and 1.6 (1.12's gf.c was not read; only "tiered" and "interpreted" depend on it):
# - jl_toplevel_eval_flex interprets a top-level statement unless its lowered code has a loop and
#   "defines" nothing, or it has a `foreigncall` (ccall), which is always compiled. A `copyast`
#   (a quoted expression) counts as a definition on all of them.
# - jl_compile_method_internal, under compile_enabled == COMPILE_MIN, runs a method in the
#   interpreter unless jl_code_requires_compiler (a foreigncall in its body) says it cannot be.
#   `tier_up_mark` uses both: its `ccall(:memset, ...)` makes the code that holds it compiled,
#   and sets compile_enabled back to COMPILE_ON when it runs.
#   The choice is cached per method instance: one first run interpreted stays interpreted in this
#   process (user functions live in the call's fresh module; Base's are shared, hence "tiered"
#   switches back to compiling as soon as real work shows up).
# On a Julia without jl_options.compile_enabled (COMPILE_FIELD === nothing) every policy runs as
# "toplevel" would, which needs no internals beyond the `copyast` rule.

const POLICIES = ("tiered", "toplevel", "compiled", "interpreted")
const POLICY = Ref("tiered")

function read_compile_policy()
    wanted = get(ENV, "JULIAPOOL_COMPILE_POLICY", "tiered")
    POLICY[] = wanted in POLICIES ? wanted : "tiered"
end

"Compile the policy's own code now (~0.3 s at start), rather than in the first calls."
function warm_up_policy()
    POLICY[] == "tiered" || return
    compile_printing()
    code = "f(n) = n < 2 ? n : f(n - 1)\nfor i in 1:2, j in xs; g(i) end\nx = [i for i in 1:10^6]\nsum(1:3)"
    m = Module(:WarmUp)
    Core.eval(m, :(xs = [1]))
    survey(m, statements(parse_program(code * "\nn = 10\nf(n)", "warm-up")))
    foreach(ex -> tiered_statement(m, ex), statements(parse_program(code, "warm-up")))
    forget_functions(m)
end

# Printing is the Base code that nearly every program runs, on the stream type that user code sees
# as `stdout` (a libuv pipe). Compiled now, it is never first reached from a statement that runs
# interpreted, and so never stuck interpreted (corpus program 0161 printed its characters 4x
# slower after an earlier `println` had run interpreted).
const PRINTED = (Char, String, SubString{String}, Int, Float64, Bool, Symbol, Nothing, BigInt, Rational{Int},
                 Vector{Int}, Vector{Float64}, Vector{String}, Vector{Any}, Matrix{Int}, UnitRange{Int},
                 Tuple{Int,Int}, Dict{String,Int}, Dict{Int,Int}, Complex{Float64})

function compile_printing()
    io = Base.PipeEndpoint
    for T in PRINTED
        for f in (print, println, show, string, repr)
            f in (string, repr) ? precompile(f, (T,)) : precompile(f, (io, T))
        end
        precompile(print, (T,)); precompile(println, (T,)); precompile(write, (io, T))
        precompile(print, (io, String, T)); precompile(println, (io, String, T))
    end
    precompile(println, (io,)); precompile(println, ()); precompile(write, (io, UInt8))
    precompile(show, (IOContext{io}, MIME"text/plain", Matrix{Int}))
end

"Run the user's code as the policy says (the caller restores the worker's own compile mode)."
function include_user_code(mod::Module, code::String, filename::String, soft::Bool)
    policy = COMPILE_FIELD === nothing && POLICY[] != "compiled" ? "toplevel" : POLICY[]
    rewrite = policy == "toplevel" ? toplevel_statement : identity
    mapexpr = soft ? (rewrite === identity ? REPL.softscope : ex -> REPL.softscope(rewrite(ex))) : rewrite
    program = parse_program(code, filename)
    if policy == "tiered"
        mapexpr = ex -> (soft ? REPL.softscope : identity)(tiered_statement(mod, ex))
        SURVEY[] = try survey(mod, statements(program)) catch; NO_SURVEY end   # a guess never fails a call
    end
    run() = try run_program(mapexpr, mod, program, filename) finally SURVEY[] = NO_SURVEY end
    policy == "compiled" || policy == "toplevel" && return compiled(run)
    return with_compile_mode(run, policy == "interpreted" ? COMPILE_MIN : COMPILE_ON)
end

# ---- parsed once, run statement by statement -------------------------------------------------
#
# The survey reads the whole program before it runs, and include_string would parse it again (on
# 1.5 in C, where its statements cannot be handed over): ~1 us a character, 2 ms for a program of
# 2 000, as much as running many small programs. So the program is parsed here, once, and run as
# include_string does it from Julia 1.6 on (base/loading.jl, v1.6 to v1.12).

"""The program as Julia's loader parses it: `Expr(:toplevel, line, statement, line, ...)`, a syntax
error being the statement where it is (`Expr(:error)`, `Expr(:incomplete)`), so that the statements
before it run first."""
function parse_program(code::String, filename::String)::Expr
    isdefined(Meta, :parseall) && return Meta.parseall(code; filename = filename)
    # 1.5: the parse include_string's C loader runs (jl-parse-all), exported by libjulia
    return ccall(:jl_parse_all, Any, (Ptr{UInt8}, Csize_t, Ptr{UInt8}, Csize_t),
                 code, sizeof(code), filename, sizeof(filename))
end

"The statements of a parsed program, up to the first that does not parse."
function statements(program::Expr)
    out = Any[]
    for ex in program.args
        ex isa LineNumberNode && continue
        ex isa Expr && ex.head in (:error, :incomplete) && break
        push!(out, ex)
    end
    return out
end

"""`include_string(mapexpr, mod, code, filename)` on the parsed program: each statement evaluated, at
its line, before the next is rewritten (`mapexpr` runs in the newest world, as the C loader of 1.5
calls it), an error rethrown as the LoadError naming the statement's line. The ccall is Core.eval
without its frame of boot.jl in user backtraces."""
function run_program(mapexpr, mod::Module, program::Expr, filename::String)
    line, value = LineNumberNode(1, Symbol(filename)), nothing
    try
        for ex in program.args
            ex isa LineNumberNode && (line = ex; continue)
            located = Expr(:toplevel, line, Base.invokelatest(mapexpr, ex))
            value = ccall(:jl_toplevel_eval_in, Any, (Any, Any), mod, located)
        end
    catch err
        rethrow(LoadError(filename, line.line, err))
    end
    return value
end

# Called by the marks at the start of a statement (the mode then holds for what the statement runs).
interpret_from_here() = (unsafe_store!(compile_mode_ptr(), COMPILE_MIN); nothing)
compile_from_here() = (unsafe_store!(compile_mode_ptr(), COMPILE_ON); nothing)

function with_compile_mode(f, mode::Int8)
    ptr = compile_mode_ptr()
    before = unsafe_load(ptr)
    unsafe_store!(ptr, mode)
    try
        return f()
    finally
        unsafe_store!(ptr, before)
    end
end

# ---- marks put into the user's code ---------------------------------------------------------

# Evaluated for its effect on Julia's choice only: `Core.typeof(:(begin end))` lowers to a
# `copyast` statement (a bare quote would be dropped by lowering as unused), so the statement
# that holds it is interpreted.
const INTERPRET_MARK = Expr(:call, GlobalRef(Core, :typeof), Expr(:quote, Expr(:block)))

"""`compile_enabled == ON || memset(&compile_enabled, ON, 1)`: a foreigncall, so the code that holds
it is compiled even under COMPILE_MIN, and once it runs, what runs after it is compiled too."""
function tier_up_mark()
    ptr = compile_mode_ptr()
    return Expr(:||, Expr(:call, GlobalRef(Core, :(===)), Expr(:call, GlobalRef(Base, :unsafe_load), ptr), COMPILE_ON),
                Expr(:call, :ccall, QuoteNode(:memset), Ptr{Cvoid}, Expr(:tuple, Ptr{Cvoid}, Cint, Csize_t),
                     ptr, Cint(COMPILE_ON), Csize_t(1)))
end

# ---- which statements and functions get which mark ------------------------------------------

# Forms that must stay top-level forms, or hold no loop that the statement itself runs.
const KEEP_AS_IS = (:module, :using, :import, :export, :error, :incomplete, :const, :global,
                    :struct, :abstract, :primitive, :macro, :macrocall, :thunk, :meta)
# Code under these heads is not run by the statement itself (function bodies, quoted code).
const NOT_RUN_HERE = (:function, :->, :quote, :macro, :module, :struct, :macrocall, :inert)

"toplevel: interpret a top-level statement with a short loop; leave the rest to Julia."
function toplevel_statement(@nospecialize(ex))
    ex isa Expr || return ex
    ex.head === :toplevel && return Expr(:toplevel, Any[toplevel_statement(a) for a in ex.args]...)
    (ex.head in KEEP_AS_IS || loop_cost(ex) == 0) && return ex
    return short_loop(ex) ? Expr(:block, INTERPRET_MARK, ex) : ex
end

"""tiered: mark the statement to run interpreted, or compiled if it looks long; mark hot functions."""
function tiered_statement(mod::Module, @nospecialize(ex))
    # A parse error runs nothing: wrapped, it would be thrown from deeper frames, each looked up
    # for its stack trace (3 ms more per syntax error, F007).
    (ex isa Expr && !(ex.head in (:error, :incomplete))) || return ex
    ex.head === :toplevel && return Expr(:toplevel, Any[tiered_statement(mod, a) for a in ex.args]...)
    ex = mark_hot_functions(mod, ex)
    is_method_definition(ex) && return ex
    body = ex.head === :macrocall ? Expr(:block, ex.args[2:end]...) : ex    # what a macro is given
    long = loop_cost(body, mod) > LOOP_BUDGET
    # A hot function must be compiled while the mode is ON: compiling a function resolves the callees
    # it names to the interpreter when the mode is MIN (codegen's work queue), and for good.
    compile = long || big_data(body, mod) || reduces(body) || reaches_hot(mod, body)
    if ex.head in KEEP_AS_IS      # a form that must stay a top-level form: set the mode before it
        return Expr(:toplevel, Expr(:call, GlobalRef(@__MODULE__, compile ? :compile_from_here : :interpret_from_here)), ex)
    elseif long
        return Expr(:block, tier_up_mark(), ex)     # compiled, though the last statement interpreted
    elseif compile
        return Expr(:block, Expr(:call, GlobalRef(@__MODULE__, :compile_from_here)), ex)
    end
    return Expr(:block, INTERPRET_MARK, Expr(:call, GlobalRef(@__MODULE__, :interpret_from_here)), ex)
end

# Per user module: the names each of its functions mentions, and the functions marked hot.
const MENTIONS = Dict{Module,Dict{Symbol,Set{Symbol}}}()
const HOT = Dict{Module,Set{Symbol}}()

"What the policy knows of `mod`'s functions, dropped when the module is (Julia keeps most modules alive)."
forget_functions(mod::Module) = (delete!(MENTIONS, mod); delete!(HOT, mod); nothing)

"""Put the tier-up mark first in the body of every function defined here that is hot, closures
defined inside other functions too (`inner`: not a global of the module, so not recorded)."""
function mark_hot_functions(mod::Module, @nospecialize(ex), inner::Bool = false)
    ex isa Expr || return ex
    if is_method_definition(ex)
        sig, body = ex.args[1], ex.args[2]
        name = function_name(sig)
        surveyed = inner ? NO_SURVEY : SURVEY[]
        hot = body isa Expr && ((loop_cost(body, mod) > LOOP_BUDGET && !(name in surveyed.short)) ||
                                recurses(sig, body) || reduces(body) || name in surveyed.hot)
        if name isa Symbol && !inner
            graph = get!(Dict{Symbol,Set{Symbol}}, MENTIONS, mod)
            mentioned_names(body, get!(Set{Symbol}, graph, name))
            hot && push!(get!(Set{Symbol}, HOT, mod), name)
        end
        body isa Expr && (body = Expr(body.head, Any[mark_hot_functions(mod, a, true) for a in body.args]...))
        return Expr(ex.head, sig, hot ? Expr(:block, tier_up_mark(), body) : body)
    end
    if ex.head === :macrocall && ex.args[1] === GlobalRef(Core, Symbol("@doc")) && length(ex.args) == 4
        return Expr(:macrocall, ex.args[1:3]..., mark_hot_functions(mod, ex.args[4], inner))   # "doc" f(x) = ...
    end
    ex.head in NOT_RUN_HERE && return ex
    return Expr(ex.head, Any[mark_hot_functions(mod, a, inner) for a in ex.args]...)
end

function mentioned_names(@nospecialize(ex), found::Set{Symbol} = Set{Symbol}())
    if ex isa Symbol
        push!(found, ex)
    elseif ex isa Expr
        for a in ex.args
            mentioned_names(a, found)
        end
    end
    return found
end

"Does `ex` name a hot function of `mod`, or a function of `mod` that names one, and so on?"
function reaches_hot(mod::Module, @nospecialize(ex))
    hot = get(HOT, mod, nothing)
    hot === nothing && return false
    graph = MENTIONS[mod]
    seen = Set{Symbol}()
    todo = collect(mentioned_names(ex))
    while !isempty(todo)
        n = pop!(todo)
        n in seen && continue
        push!(seen, n)
        n in hot && return true
        haskey(graph, n) && append!(todo, graph[n])
    end
    return false
end

is_method_definition(@nospecialize(ex)) = ex isa Expr && length(ex.args) == 2 &&
    (ex.head === :function || (ex.head === :(=) && function_name(ex.args[1]) !== nothing))

"The call `f(x)` of a signature `f(x)`, `f(x) where T` or `f(x)::T`; nothing if it has none."
function signature_call(@nospecialize(sig))
    while sig isa Expr && sig.head in (:where, :(::))
        sig = sig.args[1]
    end
    return sig isa Expr && sig.head === :call ? sig : nothing
end

"The name `f` of a signature `f(x)`, `f(x) where T`, `f(x)::T`, `M.f(x)`; nothing if it is none."
function function_name(@nospecialize(sig))
    call = signature_call(sig)
    call === nothing && return nothing
    f = call.args[1]
    f isa Symbol && return f
    f isa Expr && f.head === :. && f.args[end] isa QuoteNode && return f.args[end].value
    return nothing
end

"""Does the method with signature `sig` call itself in `body`: a call of its name with as many
positional arguments as it takes (any number, if it has defaults or varargs)? `r(x) = r(a(x), b(x))`
calls another method, and so does a call that converts each argument (`converts`)."""
function recurses(@nospecialize(sig), @nospecialize(body))
    name = function_name(sig)
    (name === nothing || extends_generic(sig, name)) && return false
    arity = positional_arity(sig)
    found(@nospecialize(ex)) = ex isa Expr && (
        (ex.head === :call && ex.args[1] === name && !converts(sig, ex) &&
         (arity === nothing || count_positional(ex) === nothing || count_positional(ex) == arity)) ||
        any(found, ex.args))
    return found(body)
end

"""`p(x::AbstractString, y::AbstractString) = p(hex2bytes(x), hex2bytes(y))`: every parameter names
its type and every argument of the call is converted by a function (not arithmetic, as `n - 1`):
the call dispatches to another method (corpus program 0033)."""
function converts(@nospecialize(sig), call::Expr)
    params = signature_call(sig).args[2:end]
    args = Any[a for a in call.args[2:end] if !(a isa Expr && a.head in (:parameters, :kw))]
    (isempty(args) || isempty(params)) && return false
    typed(@nospecialize(p)) = p isa Expr && (p.head === :(::) || (p.head === :kw && typed(p.args[1])))
    converted(@nospecialize(a)) = a isa Expr && a.head === :call && a.args[1] isa Symbol && !Base.isoperator(a.args[1])
    return all(p -> p isa Expr && p.head === :parameters || typed(p), params) && all(converted, args)
end

"""A method of an operator, of a function of another module (`Base.show`), or of a constructor
(a capitalised name): its call of the same name almost always dispatches to other types."""
function extends_generic(@nospecialize(sig), name::Symbol)
    signature_call(sig).args[1] isa Expr && return true            # M.f(x)
    Base.isoperator(name) && return true
    c = first(string(name))
    return isuppercase(c) || name in (:show, :print, :string, :convert, :hash, :iterate, :getindex, :length)
end

"The number of positional arguments of a call or a signature; nothing if it can vary."
function count_positional(@nospecialize(call))
    n = 0
    for a in call.args[2:end]
        a isa Expr && a.head === :parameters && continue
        a isa Expr && a.head in (:..., :kw, :(=)) && return nothing
        n += 1
    end
    return n
end

function positional_arity(@nospecialize(sig))
    call = signature_call(sig)
    return call === nothing ? nothing : count_positional(call)
end

# Reductions whose compiled code adds floating-point numbers in another order than the interpreter
# does (`@simd` in Base.mapreduce_impl; corpus program 0215 prints another last digit): code that
# calls one is compiled, so that it prints what `julia -e` prints.
const REDUCTIONS = (:sum, :prod, :mapreduce, :reduce, :mean, :dot, :norm, :var, :std, :cumsum)

function reduces(@nospecialize(ex))::Bool
    (ex isa Expr && !(ex.head in NOT_RUN_HERE)) || return false
    ex.head === :call && (ex.args[1] in REDUCTIONS || dotted_name(ex.args[1]) in REDUCTIONS) &&
        !all(integers_only, ex.args[2:end]) && return true
    for a in ex.args
        reduces(a) && return true
    end
    return false
end

"""Integers written out, or a function named (`reduce(^, [5, 3, 2])`, `sum(1:10)`): what adds them
up in any order gives the same result."""
integers_only(@nospecialize(a)) = a isa Integer || (a isa Symbol && Base.isoperator(a)) ||
    (a isa Expr && (a.head in LITERAL_COLLECTIONS || (a.head === :call && a.args[1] === :(:))) &&
     all((@nospecialize x) -> x isa Integer || x === :(:), a.args))

dotted_name(@nospecialize(f)) = f isa Expr && f.head === :. && f.args[end] isa QuoteNode ? f.args[end].value : nothing

include("work_guess.jl")     # how long a statement or a call will run, guessed from its text

# ---- backtraces as `julia -e` prints them ---------------------------------------------------

# Julia names a frame's file `./none` when the frame ran compiled code and `none` when it was
# interpreted (the debug info of compiled code carries the directory "."). Under `julia -e` every
# method is compiled, and so is a top-level statement with a loop. Where this policy interpreted
# such a frame, it is shown as `julia -e` would show it. (Checked on 1.5.3 only: Base.InterpreterIP's
# `code` and StackFrame's seven fields; on any failure the frames are left alone.)

"The frames of `user_frames`, each as `julia -e` would name its file."
function julia_e_frames(kept::Vector)
    frames = StackTraces.StackFrame[]
    for (ip, looked_up) in kept
        relocate = POLICY[] != "compiled" && ip isa Base.InterpreterIP && try compiled_under_julia_e(ip.code) catch; false end
        for f in looked_up
            push!(frames, relocate ? try compiled_name(f) catch; f end : f)
        end
    end
    return frames
end

compiled_under_julia_e(@nospecialize(code)) = code isa Core.MethodInstance ||
    (code isa Core.CodeInfo && only_our_mark(code) && has_backward_branch(code))

const DEFINING = (:method, :struct_type, :abstract_type, :primitive_type, :const, :thunk, :toplevel,
                  :module, :using, :import, :export)

"The statement defines nothing but our INTERPRET_MARK's `copyast`: without it, Julia compiles it."
function only_our_mark(code::Core.CodeInfo)
    copies = 0
    for s in code.code
        s isa Expr || continue
        s.head in DEFINING && return false
        copies += s.head === :copyast || (s.head === :(=) && s.args[2] isa Expr && s.args[2].head === :copyast)
    end
    return copies == 1
end

function has_backward_branch(code::Core.CodeInfo)
    for (i, s) in enumerate(code.code)
        s isa Core.GotoNode && s.label <= i && return true
        s isa Expr && s.head === :gotoifnot && s.args[2] isa Int && s.args[2] <= i && return true
        isdefined(Core, :GotoIfNot) && s isa getfield(Core, :GotoIfNot) && getfield(s, :dest) <= i && return true
    end
    return false
end

function compiled_name(f::StackTraces.StackFrame)
    file = string(f.file)
    (isempty(file) || isabspath(file) || startswith(file, "./")) && return f
    return StackTraces.StackFrame(f.func, Symbol("./", file), f.line, f.linfo, f.from_c, f.inlined, f.pointer)
end
