# juliapool worker: one persistent Julia process serving requests from Python.
#
#   julia worker.jl <protocol-version> <REQ fd> <REP fd>
#
# Requests arrive as frames on REQ, replies leave on REP (PROTOCOL.md). The user's code runs in its
# own Task so that SIGINT becomes an InterruptException inside that task and the worker lives on.
# Everything else (reading and writing frames, markers) runs with SIGINT deferred, so a late signal
# can never cut a frame in half; a deferred signal surfaces in the idle loop, where it is ignored.
#
# Stdlib only, and nothing newer than Julia 1.5 in syntax or API.

module JuliaPoolWorker

using REPL, Base64

include("protocol.jl")
include("kernel_support.jl")

mutable struct Request
    id::UInt32
    nonce::String
    display_seq::Int
end

const REQ_IO = Ref{IO}()
const REP_IO = Ref{IO}()
const REP_FD = Ref{Int}(-1)
const SESSIONS = Dict{String,Module}()
const CURRENT = Ref{Union{Request,Nothing}}(nothing)
# The module user code runs in, so that its own types print as they would in Main (see patch_show).
const ACTIVE_MODULE = Ref{Module}(Main)

# ---------------------------------------------------------------------------------------------
# Modules: a fresh one per plain call (no state leaks), a persistent one per session key.

struct EvalInto
    m::Module
end
(e::EvalInto)(x) = Core.eval(e.m, x)

struct IncludeInto
    m::Module
end
(i::IncludeInto)(path::AbstractString) = Base.include(i.m, path)
(i::IncludeInto)(mapexpr::Function, path::AbstractString) = Base.include(mapexpr, i.m, path)

function set_const(m::Module, name::Symbol, value)
    try
        ccall(:jl_set_const, Cvoid, (Any, Any, Any), m, name, value)   # 3x faster than eval
    catch
        Core.eval(m, Expr(:const, Expr(:(=), name, value)))
    end
end

"A module that behaves like Main for user code: it has `eval` and `include` of its own."
function new_module(name::Symbol)
    m = Module(name)
    set_const(m, :eval, EvalInto(m))
    set_const(m, :include, IncludeInto(m))
    return m
end

# Making a module costs ~0.2 ms (Julia checks Base's exports for conflicts), so the worker makes
# the next plain call's module while it waits for requests.
const SPARE_MODULE = Ref{Union{Module,Nothing}}(nothing)

function prepare_spare_module()
    if SPARE_MODULE[] === nothing && bytesavailable(REQ_IO[]) == 0
        SPARE_MODULE[] = new_module(:Snippet)
    end
end

# patch_show costs ~0.5 s (Julia re-checks what depended on the method it replaces), so it is done
# after the hello, while the worker waits for its first request, or at the latest before that runs.
const SHOW_PATCHED = Ref(false)

function patch_show_once()
    SHOW_PATCHED[] && return
    SHOW_PATCHED[] = true
    patch_show()
end

function fresh_module()
    m = SPARE_MODULE[]
    SPARE_MODULE[] = nothing
    return m === nothing ? new_module(:Snippet) : m
end

function module_for(key::String)
    key == "" && return fresh_module()
    key == "Main" && return Main
    return get!(() -> new_module(:Notebook), SESSIONS, key)
end

# Types defined by user code live in its module, not in Main, so Julia would print them with a
# module prefix (`Main.Snippet.Point(1, 2)`) where `julia -e` prints `Point(1, 2)`. Julia decides
# that in one place; teach it that the running module counts as Main. Best effort, per version.
function patch_show()
    if isdefined(Base, :active_module) && hasmethod(Base.active_module, Tuple{})
        @eval Base active_module() = $ACTIVE_MODULE[]                          # Julia >= 1.9
    elseif VERSION < v"1.9" && hasmethod(Base.isvisible, Tuple{Symbol,Module,Module})
        @eval Base function isvisible(sym::Symbol, parent::Module, from::Module)   # Julia 1.5 - 1.8
            from === Main && parent === $ACTIVE_MODULE[] && return isdefined(parent, sym)
            owner = ccall(:jl_binding_owner, Any, (Any, Any), parent, sym)
            from_owner = ccall(:jl_binding_owner, Any, (Any, Any), from, sym)
            return owner !== nothing && from_owner === owner &&
                !isdeprecated(parent, sym) && isdefined(from, sym)
        end
    end
end

# ---------------------------------------------------------------------------------------------
# Compilation. Julia compiles every method before it first runs it, and compiling the worker's own
# paths (error printing, MIME bundles, completion) takes seconds on first use, far more than
# running them. With JULIAPOOL_INTERPRET_WORKER=1 (the pool's `fast_start`, which the kernel uses)
# the worker's own code runs in Julia's interpreter (as under --compile=min), except the request
# loop compiled at start-up, and the user's code is compiled as usual: we flip
# jl_options.compile_enabled around each snippet. Code that background tasks run between
# requests is then interpreted too (slower, still correct).

const COMPILE_ON = Int8(1)     # JL_OPTIONS_COMPILE_ON
const COMPILE_MIN = Int8(3)    # JL_OPTIONS_COMPILE_MIN
const SWITCH_COMPILE = Ref(false)

function set_compile(mode::Int8)
    SWITCH_COMPILE[] || return
    field = findfirst(==(:compile_enabled), fieldnames(Base.JLOptions))
    unsafe_store!(Ptr{Int8}(cglobal(:jl_options) + fieldoffset(Base.JLOptions, field)), mode)
end

"Interpret the worker's own code, unless Julia was started with its own --compile choice."
function interpret_worker_code()
    wanted = get(ENV, "JULIAPOOL_INTERPRET_WORKER", "0") == "1"
    SWITCH_COMPILE[] = wanted && :compile_enabled in fieldnames(Base.JLOptions) &&
                       Base.JLOptions().compile_enabled == COMPILE_ON
    set_compile(COMPILE_MIN)
end

function with_compile(f, mode::Int8)
    SWITCH_COMPILE[] || return f()
    before = Base.JLOptions().compile_enabled
    set_compile(mode)
    try
        return f()
    finally
        set_compile(before)
    end
end

compiled(f) = with_compile(f, COMPILE_ON)

# Showing a value is interpreted too: compiling `show` for each new type costs 0.2 to 0.8 s the first
# time (measured: the first `1+1` result 409 ms compiled, 102 ms interpreted; a 1000x1000 matrix
# 831 ms vs 231 ms), which a notebook pays again for every new type it displays.
display_bundle(x) = with_compile(() -> mime_bundle(x), COMPILE_MIN)

# ---------------------------------------------------------------------------------------------
# Output markers (PROTOCOL.md): tell Python where a request's output ends on each stream.

"""Write `data` to file descriptor `fd` with one system call, as `io` would but without a trip
through the event loop (that trip costs ~20 us a write, a third of a trivial call). What the pipe
does not take at once (it is full, or the fd is non-blocking and busy) goes through `io`."""
function fast_write(io::IO, fd::Integer, data::Vector{UInt8})
    flush(io)       # anything `io` still holds goes first
    n = ccall(:write, Cssize_t, (Cint, Ptr{UInt8}, Csize_t), fd, data, length(data))
    if n < length(data)
        write(io, n > 0 ? data[n+1:end] : data)
        flush(io)
    end
    return nothing
end

send_frame(kind::Char, id::Integer, fields) = fast_write(REP_IO[], REP_FD[], encode_frame(kind, id, fields))

function write_marker(req::Request, seq::AbstractString)
    Libc.flush_cstdio()     # C output (printf via ccall) sits in libc's buffer until flushed
    marker = Vector{UInt8}(codeunits(req.nonce * seq))
    for (io, fd) in ((stdout, 1), (stderr, 2))
        try
            fast_write(io, fd, marker)
        catch
            # user code closed or replaced the stream: Python will time out and replace us
        end
    end
end

"Called by KernelDisplay: send a display bundle in its place among the printed output."
function emit_display(bundle::Vector{Pair{String,String}})
    req = CURRENT[]
    req === nothing && return
    req.display_seq += 1
    seq = string(req.display_seq, base = 16, pad = 8)
    write_marker(req, seq)
    disable_sigint(() -> send_frame('M', req.id, [seq; bundle_fields(bundle)]))
end

"Called when user code reads stdin in a kernel cell that allows it: ask the front end."
function ask_front_end(prompt::String, password::Bool)::String
    req = CURRENT[]
    req === nothing && return ""
    disable_sigint() do
        send_frame('N', req.id, [prompt, password ? "1" : "0"])
        reply = read_frame(REQ_IO[])
        reply === nothing && exit(0)
        return field_string(reply, 1)
    end
end

# ---------------------------------------------------------------------------------------------
# Running user code.

lookup(ip) = try StackTraces.lookup(ip) catch; StackTraces.StackFrame[] end
is_own_frame(f) = dirname(string(f.file)) == @__DIR__     # worker.jl, kernel_support.jl, protocol.jl

function trim_backtrace(bt)
    # Keep the user's frames: cut at the first frame of include_string (our entry point), drop the
    # Core.eval frames some Julia versions put between it and the user's top-level code, and the
    # worker's own frames (its stdin and display stand-ins) wherever they are.
    cut = something(findfirst(ip -> any(f -> f.func === :include_string, lookup(ip)), bt), length(bt) + 1)
    kept = bt[1:cut-1]
    while !isempty(kept) && all(f -> endswith(string(f.file), "boot.jl"), lookup(kept[end]))
        pop!(kept)
    end
    return filter(ip -> !any(is_own_frame, lookup(ip)), kept)
end

unwrap(e) = e isa LoadError ? unwrap(e.error) : e

function error_fields(mod::Module, err, bt)
    e = unwrap(err)
    io = IOContext(IOBuffer(), :module => mod, :limit => true)
    text = try
        print(io, "ERROR: ")
        Base.invokelatest(showerror, io, e, trim_backtrace(bt); backtrace = true)
        println(io)
        String(take!(io.io))
    catch
        "ERROR: " * string(typeof(e)) * " (its message could not be shown)\n"
    end
    evalue = try
        Base.invokelatest(sprint, showerror, e; context = :module => mod)
    catch
        string(typeof(e))
    end
    return ["error", string(typeof(e)), evalue, text]
end

function evaluate(mod::Module, code::String, filename::String, flags::String)
    kernel = 'k' in flags
    try
        code = kernel ? rewrite_cell(code) : code
        run() = compiled() do
            's' in flags ? include_string(REPL.softscope, mod, code, filename) : include_string(mod, code, filename)
        end
        value = kernel ? with_kernel_io(run, 'i' in flags) : run()
        fields = ["ok", "", "", ""]
        if 'r' in flags && value !== nothing && !REPL.ends_with_semicolon(code)
            append!(fields, bundle_fields(display_bundle(value)))
        end
        return fields
    catch err
        fields = error_fields(mod, err, catch_backtrace())
        # An interrupt is Python's doing (a timeout or an explicit interrupt): Python reports it.
        if 'p' in flags && !(unwrap(err) isa InterruptException)
            print(stderr, fields[4])
            flush(stderr)
        end
        return fields
    end
end

function with_kernel_io(f, allow_input::Bool)
    display = KernelDisplay()
    pushdisplay(display)
    try
        return allow_input ? with_stdin(f, ask_front_end) : without_stdin(f)
    finally
        popdisplay(display)
    end
end

"Wait for the user's task; SIGINT lands here or in the task, and is forwarded to the task."
function wait_interruptible(task::Task)
    while !istaskdone(task)
        try
            wait(task)
        catch e
            if e isa InterruptException && !istaskdone(task)
                try schedule(task, e; error = true) catch end
            elseif !(e isa InterruptException)
                break       # the task itself failed outside `evaluate`: reported below
            end
        end
    end
end

"""Work the event loop holds: active libuv handles (timers, sockets, processes) and queued tasks.
If a call leaves more than it found, it left something running that may print into a later call."""
function pending_work()::Int
    handles = try
        Int(unsafe_load(Ptr{Cuint}(Base.eventloop() + sizeof(Ptr{Cvoid}))))  # uv_loop_t.active_handles
    catch
        0
    end
    queued = try
        isempty(Base.Workqueues[Threads.threadid()]) ? 0 : 1
    catch
        0
    end
    return handles + queued
end

function handle_exec(frame::Frame)
    key, code, nonce, filename, flags = (field_string(frame, i) for i in 1:5)
    patch_show_once()
    mod = module_for(key)
    req = Request(frame.id, nonce, 0)
    CURRENT[] = req
    ACTIVE_MODULE[] = mod
    task = Task(() -> evaluate(mod, code, filename, flags))
    work_before = pending_work()
    Base.sigatomic_end()        # SIGINT may now arrive: it is meant for this code
    try
        schedule(task)
        wait_interruptible(task)
    finally
        Base.sigatomic_begin()
    end
    fields = istaskfailed(task) ? ["error", "InterruptException", "interrupted", "InterruptException\n"] :
                                  fetch(task)
    # (An interrupted sleep leaves its timer armed: harmless, and not counted.)
    interrupted = fields[2] == "InterruptException"
    insert!(fields, 5, !interrupted && pending_work() > work_before ? "1" : "0")
    CURRENT[] = nothing
    ACTIVE_MODULE[] = Main
    write_marker(req, END_SEQ)
    send_frame('O', frame.id, fields)
end

# ---------------------------------------------------------------------------------------------
# The other requests.

function reply(frame::Frame, fields)
    send_frame('R', frame.id, fields)
end

function handle(frame::Frame)
    k = frame.kind
    if k == 'E'
        handle_exec(frame)
    elseif k == 'C'
        mod = module_for(field_string(frame, 1))
        start, stop, matches = complete(mod, field_string(frame, 2), parse(Int, field_string(frame, 3)))
        reply(frame, [string(start); string(stop); matches])
    elseif k == 'I'
        mod = module_for(field_string(frame, 1))
        bundle = inspect(mod, field_string(frame, 2), parse(Int, field_string(frame, 3)),
                         parse(Int, field_string(frame, 4)))
        reply(frame, [isempty(bundle) ? "0" : "1"; bundle_fields(bundle)])
    elseif k == 'K'
        status, indent = is_complete(field_string(frame, 1))
        reply(frame, [status, indent])
    elseif k == 'D'
        delete!(SESSIONS, field_string(frame, 1))
        reply(frame, String[])
    elseif k == 'P'
        reply(frame, String[])
    elseif k == 'Q'
        flush(stdout); flush(stderr)
        exit(0)
    else
        error("juliapool worker: unknown request kind $(repr(k))")
    end
end

"Read the next request; a SIGINT that arrives while idle is ignored."
function next_request()
    while true
        try
            return read_frame(REQ_IO[])
        catch e
            e isa InterruptException || rethrow()
        end
    end
end

function serve()
    while true
        Base.sigatomic_begin()      # SIGINT is deferred while we read, write and dispatch
        try
            bytesavailable(REQ_IO[]) == 0 && patch_show_once()
            prepare_spare_module()
        finally
            Base.sigatomic_end()
        end
        frame = next_request()
        frame === nothing && return      # Python closed the channel: we are done
        Base.sigatomic_begin()
        try
            handle(frame)
        catch e
            e isa InterruptException || rethrow()
        finally
            try
                Base.sigatomic_end()
            catch e
                # A deferred SIGINT surfaces here, after the reply went out: too late to matter.
                e isa InterruptException || rethrow()
            end
        end
    end
end

"""Compile the loop that every request runs through now (~1 s), rather than within the first calls.
Skipped under `fast_start`: a notebook cell does not notice an interpreted loop (~3 ms a request),
but it notices a second more of start-up."""
function compile_hot_path()
    P = Base.PipeEndpoint
    for (f, types) in ((serve, ()), (next_request, ()), (read_frame, (P,)), (read_exact, (P, Int)),
                       (decode_body, (Vector{UInt8},)), (field_string, (Frame, Int)), (handle, (Frame,)),
                       (handle_exec, (Frame,)), (module_for, (String,)), (fresh_module, ()),
                       (prepare_spare_module, ()), (patch_show_once, ()), (new_module, (Symbol,)), (set_const, (Module, Symbol, EvalInto)),
                       (set_const, (Module, Symbol, IncludeInto)), (write_marker, (Request, String)),
                       (evaluate, (Module, String, String, String)), (wait_interruptible, (Task,)), (pending_work, ()),
                       (encode_frame, (Char, UInt32, Vector{String})), (send_frame, (Char, UInt32, Vector{String})),
                       (fast_write, (P, Int, Vector{UInt8})), (fast_write, (Base.TTY, Int, Vector{UInt8})),
                       (reply, (Frame, Vector{String})), (compiled, (Function,)), (set_compile, (Int8,)))
        precompile(f, types) || @debug "precompile failed" f types
    end
end

"Compile the interrupt path now, so that the first interrupt is as quick as the others."
function warm_up_interrupts()
    task = Task(() -> try sleep(10) catch e; e end)
    schedule(task)
    yield()
    schedule(task, InterruptException(); error = true)
    wait(task)
    error_fields(Main, InterruptException(), backtrace())
end

function open_channel(fd::Int)
    # Not for children: a process started by user code must not hold our channel open.
    ccall(:fcntl, Cint, (Cint, Cint, Cint), fd, 2, 1)    # F_SETFD, FD_CLOEXEC (Linux and macOS)
    return open(RawFD(fd))    # a libuv pipe: fdio() would block on pipes in Julia 1.5 (DESIGN.md)
end

function main(args)
    args[1] == PROTOCOL_VERSION || error("juliapool worker: protocol $(args[1]) requested, this is $PROTOCOL_VERSION")
    Base.exit_on_sigint(false)
    REQ_IO[] = open_channel(parse(Int, args[2]))
    REP_FD[] = parse(Int, args[3])
    REP_IO[] = open_channel(REP_FD[])
    # User code should see what `julia -e` shows it: no arguments, no program file.
    empty!(ARGS)
    try Core.eval(Base, :(PROGRAM_FILE = "")) catch end
    if !SWITCH_COMPILE[]     # a compiled worker (the default): pay for the loop and interrupts now
        compile_hot_path()
        warm_up_interrupts()
    end
    send_frame('H', 0, [string(VERSION), string(getpid())])
    serve()
end

end # module

# Decided before `main` runs: compiling `main` would infer the whole worker first.
JuliaPoolWorker.interpret_worker_code()
JuliaPoolWorker.main(copy(ARGS))
