# Julia side of the Jupyter kernel (juliapool.kernel).
#
# `include`d inside the worker's module (`module JuliaPoolWorker`, which does `using REPL, Base64`);
# the worker calls these functions for requests made in kernel mode:
#
#   mime_bundle(x)                      rich MIME bundle of a cell's value, or of `display(x)`
#   complete(mod, code, cursor)         REPL completions, byte offsets
#   inspect(mod, code, cursor, detail)  docstring of the name at the cursor
#   is_complete(code)                   "complete" | "incomplete" | "invalid", indent
#   rewrite_cell(code)                  `?help`, `;shell` and `]pkg` cells to plain Julia
#   KernelDisplay                       display(x) mid-cell -> emit_display(bundle) (worker)
#   with_stdin(f, ask), without_stdin(f)  stdin reads answered by the front end, or refused
#
# Stdlib only, and nothing newer than Julia 1.5 in syntax or API: the same file runs on 1.5 to 1.12.

# ---------------------------------------------------------------------------------------------
# Rich output

# The MIME types a Jupyter front end renders, richest first; text/plain is always added.
const KERNEL_MIMES = ["text/html", "text/markdown", "text/latex", "image/svg+xml",
                      "image/png", "image/jpeg", "application/json"]

"""
    mime_bundle(x) -> Vector{Pair{String,String}}

`x` as Jupyter wants it: "text/plain" as the REPL shows it, plus every type of `KERNEL_MIMES` that
`x` is `showable` as. Binary types are base64 text. A representation whose `show` throws is left
out; text/plain is always there (a safe fallback when the user's `show` fails).
"""
function mime_bundle(x)::Vector{Pair{String,String}}
    bundle = Pair{String,String}["text/plain" => plain_text(x)]
    for m in KERNEL_MIMES
        data = bundle_entry(MIME(m), x)
        data === nothing || push!(bundle, m => data)
    end
    return bundle
end

# User types may define `show`/`showable` after this code was compiled: go through invokelatest.
function bundle_entry(m::MIME, x)::Union{String,Nothing}
    try
        Base.invokelatest(showable, m, x) || return nothing
        return render_mime(m, x)
    catch
        return nothing
    end
end

function render_mime(m::MIME, x)::String
    if istextmime(m)
        return sprint(io -> Base.invokelatest(show, IOContext(io, :limit => true), m, x))
    end
    return base64encode(io -> Base.invokelatest(show, io, m, x))
end

function plain_text(x)::String
    try
        return sprint(io -> Base.invokelatest(show, IOContext(io, :limit => true, :color => false),
                                              MIME"text/plain"(), x))
    catch e
        # The REPL would print the error instead of the value; say both, never fail.
        msg = try sprint(showerror, e) catch; string(typeof(e)) end
        return string(safe_repr(x), "\n(error showing value of type ", typeof(x), ": ", msg, ")")
    end
end

function safe_repr(x)::String
    try
        return sprint(Base.show_default, x)
    catch
        return string("<", typeof(x), ">")
    end
end

"""
    KernelDisplay()

The display the worker pushes while a kernel cell runs: `display(x)` sends a `display_data`
message at once, through the worker's `emit_display(bundle)`.
"""
struct KernelDisplay <: AbstractDisplay end

# Any textual MIME type may be displayed explicitly (`display("text/csv", x)`), as in IJulia.
Base.displayable(::KernelDisplay, m::MIME) =
    m == MIME"text/plain"() || string(m) in KERNEL_MIMES || istextmime(m)

function Base.display(::KernelDisplay, x)
    emit_display(display_bundle(x))
    return nothing
end

# display(d, mime, x): that one representation, plus text/plain as Jupyter's fallback.
function Base.display(d::KernelDisplay, m::MIME, x)
    is_raw_data(m, x) || Base.invokelatest(showable, m, x) || throw(MethodError(display, (d, m, x)))
    emit_display(mime_display_bundle(m, x))
    return nothing
end

Base.display(d::KernelDisplay, m::AbstractString, x) = display(d, MIME(m), x)

# ---------------------------------------------------------------------------------------------
# Completion, inspection, is_complete

"""
    complete(mod, code, cursor) -> (start, stop, matches)

REPL completions of `code` at `cursor`, a 0-based byte offset. `start` and `stop` are 0-based byte
offsets of the text the matches replace.
"""
function complete(mod::Module, code::String, cursor::Int)::Tuple{Int,Int,Vector{String}}
    cursor = clamp(cursor, 0, ncodeunits(code))
    cursor == 0 && return (0, 0, String[])
    pos = thisind(code, cursor)  # first byte of the character that ends before the cursor
    comps, range, should_complete = REPL.REPLCompletions.completions(code, pos, mod)
    # should_complete is false for method signature lists (`f(` then TAB): nothing to insert.
    should_complete || return (cursor, cursor, String[])
    matches = unique!(String[completion_string(c) for c in comps])
    (isempty(matches) || isempty(range)) && return (cursor, cursor, matches)
    return (first(range) - 1, cursor, matches)
end

"""
    inspect(mod, code, cursor, detail) -> Vector{Pair{String,String}}

The documentation of the name at (or just before) the byte `cursor`, as the REPL's `?name` shows it
in `mod`; an empty vector when there is no name there or it does not exist.
"""
function inspect(mod::Module, code::String, cursor::Int, detail::Int)::Vector{Pair{String,String}}
    name = name_at(code, clamp(cursor, 0, ncodeunits(code)))
    isempty(name) && return Pair{String,String}[]
    doc = try
        eval_help(mod, devnull, name)
    catch
        return Pair{String,String}[]
    end
    text = plain_text(doc)
    # helpmode answers unknown names with "No documentation found ... does not exist".
    occursin("does not exist", text) && occursin("No documentation found", text) &&
        return Pair{String,String}[]
    bundle = mime_bundle(doc)
    any(p -> first(p) == "text/markdown", bundle) || push!(bundle, "text/markdown" => text)
    return bundle
end

# Characters that may belong to a dotted name (`Base.Math.sin`) or a macro name (`@time`).
is_name_char(c::Char) = Base.is_id_char(c) || c == '.' || c == '@' || c == '!'

# The name at the cursor; inside a call's parentheses (`sin(1, |`), the called function's name,
# as Shift+Tab in a notebook expects.
function name_at(code::String, cursor::Int)::String
    cursor = clamp(cursor, 0, ncodeunits(code))
    name = name_around(code, cursor)
    isempty(name) || return name
    open = enclosing_paren(code, cursor)
    return open == 0 ? "" : name_around(code, open - 1)
end

# The byte index of the unmatched `(` before `cursor`, or 0. (Parentheses inside strings count
# too: good enough for a documentation lookup.)
function enclosing_paren(code::String, cursor::Int)::Int
    depth = 0
    i = cursor == 0 ? 0 : thisind(code, cursor)
    while i > 0
        c = code[i]
        if c == ')'
            depth += 1
        elseif c == '('
            depth == 0 && return i
            depth -= 1
        end
        i = prevind(code, i)
    end
    return 0
end

# The name around the cursor: scan left and right over name characters.
function name_around(code::String, cursor::Int)::String
    isempty(code) && return ""
    stop = cursor
    while stop < ncodeunits(code)
        i = nextind(code, stop)
        i > ncodeunits(code) && break
        is_name_char(code[i]) || break
        stop = nextind(code, i) - 1
    end
    start = stop
    while start > 0
        i = thisind(code, start)
        is_name_char(code[i]) || break
        start = i - 1
    end
    name = strip(String(codeunits(code)[start+1:stop]), '.')  # byte offsets at character ends
    # `@time` is a name, `x@y` or `a.@b` only at their last part.
    at = findlast('@', name)
    at === nothing || (name = name[at:end])
    return String(name)
end

# The help expression runs in a `let`: from 1.11 on it starts with `docs = ...` (REPL.helpmode in
# stdlib/REPL/src/docview.jl at v1.11.7 and v1.12.5), which at top level would assign the user's
# own `docs` (or fail where `docs` is a constant or a function). In a `let` it is a local.
eval_help(mod::Module, io::IO, name::AbstractString) =
    Core.eval(mod, Expr(:let, Expr(:block), help_expr(mod, io, name)))

# REPL.helpmode gained a module argument in later Julia versions; use it where it exists.
function help_expr(mod::Module, io::IO, name::AbstractString)
    if applicable(REPL.helpmode, io, name, mod)
        return REPL.helpmode(io, name, mod)
    end
    return REPL.helpmode(io, name)
end

"""
    is_complete(code) -> (status, indent)

"incomplete" when more lines could complete the input (as the REPL decides when Enter does not
run it), "invalid" on a syntax error, else "complete". `indent` is a hint for the next line.
"""
function is_complete(code::String)::Tuple{String,String}
    ex = try
        Base.parse_input_line(code)
    catch
        return ("invalid", "")
    end
    if ex isa Expr && ex.head === :incomplete
        return ("incomplete", next_indent(code))
    elseif ex isa Expr && (ex.head === :error || (ex.head === :toplevel && any(is_parse_error, ex.args)))
        return ("invalid", "")
    end
    return ("complete", "")
end

is_parse_error(x) = x isa Expr && (x.head === :error || x.head === :incomplete)

function next_indent(code::String)::String
    lines = split(code, '\n')
    last_line = isempty(lines) ? "" : lines[end]
    lead = match(r"^[ \t]*", last_line).match
    return string(lead, "    ")
end

# ---------------------------------------------------------------------------------------------
# Special cells: ?help, ;shell, ]pkg (as in the REPL and IJulia)

# The path of this module as user code can reach it, whatever the user module shadows.
# (Built without a comprehension: compiling one at load time costs half a second on Julia 1.5.)
# The worker module is Main's `JuliaPoolWorker`, loaded as a package or from its source.
const SUPPORT_MODULE_PATH = "Core.Main." * string(nameof(@__MODULE__))

"""
    rewrite_cell(code) -> String

IJulia-style special cells as Julia code for the user's module: `?name` shows help (the doc is the
cell's value), `;cmd` runs a shell command (`cd dir` changes Julia's directory), `]cmd` runs a Pkg
REPL command. Any other code comes back unchanged.
"""
function rewrite_cell(code::String)::String
    body = lstrip(code)
    isempty(body) && return code
    first_char = body[1]
    first_char in ('?', ';', ']') || return code
    rest = String(strip(body[nextind(body, 1):end]))
    fn = first_char == '?' ? "help_cell" : first_char == ';' ? "shell_cell" : "pkg_cell"
    # A trailing `;` of a shell command must not suppress anything: the helpers return nothing.
    return string(SUPPORT_MODULE_PATH, ".", fn, "(@__MODULE__, ", repr(rest), ")")
end

# `?name`: the REPL's help mode; its "search:" line goes to stdout, the doc is the value.
function help_cell(mod::Module, name::String)
    return eval_help(mod, stdout, name)
end

# `;cmd`: run through `sh -c` so pipes and globs work; output goes to the worker's real fds.
function shell_cell(mod::Module, cmd::String)
    words = split(cmd)
    if !isempty(words) && words[1] == "cd"
        dir = length(words) > 1 ? expanduser(join(words[2:end], " ")) : homedir()
        cd(dir)
        println(pwd())
        return nothing
    end
    flush(stdout); flush(stderr)
    run(ignorestatus(Cmd(["sh", "-c", cmd])))
    return nothing
end

const PKG_ID = Base.PkgId(Base.UUID("44cfe95a-1eb2-52ea-b672-e2afdf69b78f"), "Pkg")

# `]cmd`: Pkg's REPL mode, for whatever Pkg can do here (`]st` needs no registry).
function pkg_cell(mod::Module, cmd::String)
    pkg = Base.require(PKG_ID)
    Base.invokelatest(pkg.REPLMode.pkgstr, cmd)
    return nothing
end

# ---------------------------------------------------------------------------------------------
# stdin: reads become input requests to the front end
#
# As IJulia does (src/stdio.jl), `Base.stdin` is swapped for an IO of our own while the cell
# runs: `readline()` and friends find it through the global. Each answer from the front end is one
# line. An answer of "\x04" (Ctrl-D, as ipykernel reads it) is end of file.

mutable struct KernelStdin <: IO
    ask::Function        # (prompt::String, password::Bool) -> String
    orig::IO             # the real stdin, for child processes
    buf::IOBuffer
    at_eof::Bool
end

KernelStdin(ask::Function, orig::IO) = KernelStdin(ask, orig, PipeBuffer(), false)

const STDIN_PROMPT = "stdin> "

# Ask the front end for one more line; false at end of file.
function ask_line!(io::KernelStdin, prompt::AbstractString=STDIN_PROMPT, password::Bool=false)::Bool
    io.at_eof && return false
    answer = String(io.ask(String(prompt), password))
    if answer == "\x04"
        io.at_eof = true
        return false
    end
    write(io.buf, answer, "\n")
    return true
end

Base.isopen(io::KernelStdin) = !io.at_eof
Base.close(io::KernelStdin) = (io.at_eof = true; nothing)
Base.bytesavailable(io::KernelStdin) = bytesavailable(io.buf)
Base.eof(io::KernelStdin) = bytesavailable(io.buf) == 0 && !ask_line!(io)

function Base.read(io::KernelStdin, ::Type{UInt8})
    eof(io) && throw(EOFError())
    return read(io.buf, UInt8)
end

function Base.unsafe_read(io::KernelStdin, p::Ptr{UInt8}, n::UInt)
    for i in 1:n
        unsafe_store!(p, read(io, UInt8), i)
    end
    return nothing
end

Base.readavailable(io::KernelStdin) = eof(io) ? UInt8[] : take!(io.buf)

function Base.readline(io::KernelStdin; keep::Bool=false)
    bytesavailable(io.buf) == 0 && !ask_line!(io) && return ""
    return readline(io.buf; keep=keep)
end

# The front end's input box holds one answer: read(stdin, String) is what is buffered plus it.
function Base.read(io::KernelStdin, ::Type{String})
    bytesavailable(io.buf) == 0 && ask_line!(io)
    return String(take!(io.buf))
end

# Base.prompt and Base.getpass show their message in the input box itself.
function Base.prompt(input::KernelStdin, output::IO, message::AbstractString;
                     default::AbstractString="")
    ask_line!(input, string(message, ": ")) || return nothing
    answer = chomp(readline(input.buf))
    return isempty(answer) ? String(default) : String(answer)
end

# 1.12 passes `with_suffix` (base/util.jl at v1.12.5: getpass(prompt; with_suffix=true) calls
# getpass(stdin, stdout, prompt; with_suffix)); earlier versions never pass it.
function Base.getpass(input::KernelStdin, output::IO, message::AbstractString; with_suffix::Bool=true)
    ask_line!(input, with_suffix ? string(message, ": ") : String(message), true) || return Base.SecretBuffer()
    answer = chomp(readline(input.buf))
    return Base.SecretBuffer!(Vector{UInt8}(codeunits(answer)))
end

# Child processes (`run`, `;cmd`) inherit the real stdin, never the front end's.
Base.setup_stdio(io::KernelStdin, child_readable::Bool) = Base.setup_stdio(io.orig, child_readable)

"""
    with_stdin(f, ask)

Run `f()` with stdin reads answered by `ask(prompt::String, password::Bool)::String`.
"""
function with_stdin(f::Function, ask::Function)
    orig = stdin
    Core.eval(Base, Expr(:(=), :stdin, KernelStdin(ask, orig)))
    try
        return f()
    finally
        Core.eval(Base, Expr(:(=), :stdin, orig))
    end
end

const NO_STDIN_MESSAGE =
    "stdin is not available: this front end does not accept input (allow_stdin=false)"

"""
    without_stdin(f)

Run `f()` so that a stdin read fails at once with a clear error instead of waiting forever.
"""
function without_stdin(f::Function)
    return with_stdin(f, (prompt, password) -> error(NO_STDIN_MESSAGE))
end
