# juliapool worker: one persistent Julia process serving requests from Python. julia/worker.jl
# loads this module and calls `main`:
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
include("compat.jl")
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

include("modules.jl")
include("compilation.jl")
include("notebook.jl")
include("ijulia.jl")
include("piracy.jl")
include("invalidation.jl")
include("process_state.jl")

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
            # User code closed the stream object; Julia keeps fds 1 and 2 apart from it (it dups
            # them at start-up), so the marker still reaches Python (the reply says "stdio").
            ccall(:write, Cssize_t, (Cint, Ptr{UInt8}, Csize_t), fd, marker, length(marker))
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
    disable_sigint(() -> send_frame(DISPLAY, req.id, [seq; bundle_fields(bundle)]))
end

"""Called by IJulia.clear_output and IJulia's display updates: a `U` event (PROTOCOL.md) that keeps
its place among the printed output, as `emit_display` does."""
function emit_display_event(action::String, arg::String, bundle::Vector{Pair{String,String}})
    req = CURRENT[]
    req === nothing && return
    req.display_seq += 1
    seq = string(req.display_seq, base = 16, pad = 8)
    write_marker(req, seq)
    disable_sigint(() -> send_frame(DISPLAY_EVENT, req.id, [seq; action; arg; bundle_fields(bundle)]))
end

"Called when user code reads stdin in a kernel cell that allows it: ask the front end."
function ask_front_end(prompt::String, password::Bool)::String
    req = CURRENT[]
    req === nothing && return ""
    disable_sigint() do
        send_frame(INPUT, req.id, [prompt, password ? "1" : "0"])
        reply = read_frame(REQ_IO[])
        reply === nothing && exit(0)
        return field_string(reply, 1)
    end
end

# ---------------------------------------------------------------------------------------------
# Running user code.

lookup(ip) = try StackTraces.lookup(ip) catch; StackTraces.StackFrame[] end
is_own_frame(f) = dirname(string(f.file)) == @__DIR__     # this file, kernel_support.jl, modules.jl, ...

# Where the worker hands a statement to Julia (compile_policy.jl): every frame past it is the worker's.
const ENTRY_POINTS = (:run_program,)

"""The user's frames of `bt`, each IP with what it looks up to. Kept: the frames before the first
entry point, without the Core.eval frames some Julia versions put between it and the user's
top-level code, and without the worker's own frames
(its stdin and display stand-ins) wherever they are. Each IP is looked up once, and none past the
entry point: a lookup costs about 1 ms on 1.5.3, and an error's text took 15 ms when each was
looked up four times."""
function user_frames(bt)
    kept = Tuple{Any,Vector{StackTraces.StackFrame}}[]
    for ip in bt
        frames = lookup(ip)
        any(f -> f.func in ENTRY_POINTS, frames) && break
        push!(kept, (ip, frames))
    end
    while !isempty(kept) && all(f -> endswith(string(f.file), "boot.jl"), kept[end][2])
        pop!(kept)
    end
    return filter(k -> !any(is_own_frame, k[2]), kept)
end

unwrap(@nospecialize(e)) = e isa LoadError ? unwrap(e.error) : e

function error_fields(mod::Module, @nospecialize(err), bt)
    e = as_in_main(unwrap(err), mod)
    io = IOContext(IOBuffer(), :module => mod, :limit => true)
    text = try
        print(io, "ERROR: ")
        Base.invokelatest(showerror, io, e, julia_e_frames(user_frames(bt)); backtrace = true)
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

function evaluate(mod::Module, code::String, filename::String, flags::String, history::String="")
    kernel = FLAG_NOTEBOOK in flags
    try
        source = code
        code = kernel ? rewrite_cell(code) : code
        run() = include_user_code(mod, code, filename, FLAG_SOFT_SCOPE in flags)     # compile_policy.jl
        kernel && prepare_notebook!(mod)
        value = kernel ? with_kernel_io(() -> with_hooks(run), FLAG_ALLOW_INPUT in flags) : run()
        kernel && record_cell!(mod, source, value, history, code)
        fields = ["ok", "", "", ""]
        if FLAG_WANT_RESULT in flags && value !== nothing && !REPL.ends_with_semicolon(code)
            append!(fields, bundle_fields(display_bundle(value)))
        end
        return fields
    catch err
        fields = error_fields(mod, err, catch_backtrace())
        # An interrupt is Python's doing (a timeout or an explicit interrupt): Python reports it.
        if FLAG_PRINT_ERRORS in flags && !(unwrap(err) isa InterruptException)
            try
                print(stderr, fields[4])
                flush(stderr)
            catch       # the code closed stderr: the reply says so ("stdio")
            end
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
pending_work()::Int = active_libuv_handles() + (tasks_queued() ? 1 : 0)

"""Julia internal: libuv's count of active handles, read from the loop itself. Every libuv 1.x
begins `uv_loop_t` with `void* data; unsigned int active_handles;` (checked in libuv's uv.h, which
Julia 1.5 to 1.12 bundle); run on 1.5.3. Where reading it fails, 0: only queued tasks are seen."""
function active_libuv_handles()::Int
    try
        return Int(unsafe_load(Ptr{Cuint}(Base.eventloop() + sizeof(Ptr{Cvoid}))))
    catch
        return 0
    end
end

"""Julia internal: whether tasks wait in this thread's run queue (`Base.Workqueues`, a vector
indexed by thread id on 1.5.3, where it was run). Where Julia keeps its queues otherwise, false:
then only libuv handles are seen."""
function tasks_queued()::Bool
    try
        return !isempty(Base.Workqueues[Threads.threadid()])
    catch
        return false
    end
end

function handle_exec(frame::Frame)
    key, code, nonce, filename, flags = (field_string(frame, i) for i in 1:5)
    history = length(frame.fields) >= 6 ? field_string(frame, 6) : ""     # optional (PROTOCOL.md)
    patch_show_once()
    mod = module_for(key)
    req = Request(frame.id, nonce, 0)
    CURRENT[] = req
    ACTIVE_MODULE[] = mod
    fresh = key == "" || FLAG_RESET in flags       # a plain call, or a session's reset
    task = Task(() -> evaluate(mod, code, filename, flags, history))
    before = capture_state(fresh, key == "")
    Base.sigatomic_end()        # SIGINT may now arrive: it is meant for this code
    try
        schedule(task)
        wait_interruptible(task)
    finally
        Base.sigatomic_begin()
    end
    fields = istaskfailed(task) ? ["error", "InterruptException", "interrupted", "InterruptException\n"] :
                                  fetch(task)
    interrupted = fields[2] == "InterruptException"
    # If the check itself fails (a Julia it was not written for), the worker is not trusted ("check").
    reason = key == "Main" ? "" : try settle_state(before, mod, code, fresh, interrupted) catch; "check" end
    insert!(fields, 5, reason)
    key == "Main" && record_baseline()      # preloading and warm-up make the worker's own state
    key == "" && forget_functions(mod)      # compile_policy.jl: a plain call's module is not used again
    CURRENT[] = nothing
    ACTIVE_MODULE[] = Main
    write_marker(req, END_SEQ)
    send_frame(DONE, frame.id, fields)
end

# ---------------------------------------------------------------------------------------------
# The other requests.

reply(frame::Frame, fields) = send_frame(RESULT, frame.id, fields)

function handle_complete(frame::Frame)
    mod = module_for(field_string(frame, 1))
    start, stop, matches = complete(mod, field_string(frame, 2), parse(Int, field_string(frame, 3)))
    reply(frame, [string(start); string(stop); matches])
end

function handle_inspect(frame::Frame)
    mod = module_for(field_string(frame, 1))
    bundle = inspect(mod, field_string(frame, 2), parse(Int, field_string(frame, 3)), parse(Int, field_string(frame, 4)))
    reply(frame, [isempty(bundle) ? "0" : "1"; bundle_fields(bundle)])
end

function handle_is_complete(frame::Frame)
    status, indent = is_complete(field_string(frame, 1))
    reply(frame, [status, indent])
end

function handle_drop(frame::Frame)
    mod = pop!(SESSIONS, field_string(frame, 1), nothing)
    mod === nothing || forget_functions(mod)
    reply(frame, String[])
end

handle_ping(frame::Frame) = reply(frame, String[])

"""Give back to the system what warm-up compiling left behind: 15 MB of an idle worker's 120 MB
(PSS, measured on 1.5.3). Mostly call stacks: each call runs on a task of its own, whose stack Julia
takes from those earlier calls left (deep compiling dirtied them), so this runs on the worker's own
task instead. Three collections, because on 1.5.3 two leave those stacks in place."""
function handle_collect(frame::Frame)
    GC.gc(); GC.gc(); GC.gc()
    reply(frame, [isdefined(Base, :gc_live_bytes) ? string(Base.gc_live_bytes()) : "0"])
end

# Julia 1.5 to 1.9 collect when the bytes allocated since the last collection (`allocd`) reach a
# budget (`collect`); Base.gc_num() shows both. Elsewhere the worker leaves collecting to Julia.
const GC_BUDGET_KNOWN = isdefined(Base, :GC_Num) && hasfield(Base.GC_Num, :allocd) && hasfield(Base.GC_Num, :collect)

"""Between requests, collect once more than half of the budget is spent: the collection the next
call would stop for happens while the worker waits (one took 60 ms inside corpus program 0087, a
program of 80 ms, after 21 others had run on its worker)."""
function collect_if_due()
    GC_BUDGET_KNOWN || return
    n = Base.gc_num()
    n.collect > 0 && n.allocd > n.collect ÷ 2 && GC.gc(false)
    return nothing
end

function handle_quit(frame::Frame)
    try flush(stdout); flush(stderr) catch end     # they may have been closed by user code
    exit(0)
end

# One handler per request kind (PROTOCOL.md, "Requests").
const HANDLERS = Dict{Char,Function}(
    EXEC => handle_exec, COMPLETE => handle_complete, INSPECT => handle_inspect,
    IS_COMPLETE => handle_is_complete, DROP => handle_drop, PING => handle_ping, COLLECT => handle_collect,
    QUIT => handle_quit)

function handle(frame::Frame)
    handler = get(HANDLERS, frame.kind, nothing)
    handler === nothing && error("juliapool worker: unknown request kind $(repr(frame.kind))")
    handler(frame)
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
            bytesavailable(REQ_IO[]) == 0 && collect_if_due()
        finally
            Base.sigatomic_end()
        end
        frame = next_request()
        frame === nothing && return      # Python closed the channel: we are done
        Base.sigatomic_begin()
        try
            handle_guarded(frame)
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
                       (handle_exec, (Frame,)), (handle_guarded, (Frame,)), (module_for, (String,)), (fresh_module, ()),
                       (prepare_spare_module, ()), (patch_show_once, ()), (collect_if_due, ()), (new_module, (Symbol,)), (set_const, (Module, Symbol, EvalInto)),
                       (set_const, (Module, Symbol, IncludeInto)), (write_marker, (Request, String)),
                       (evaluate, (Module, String, String, String)), (wait_interruptible, (Task,)), (pending_work, ()),
                       (encode_frame, (Char, UInt32, Vector{String})), (send_frame, (Char, UInt32, Vector{String})),
                       (fast_write, (P, Int, Vector{UInt8})), (fast_write, (Base.TTY, Int, Vector{UInt8})),
                       (reply, (Frame, Vector{String})), (compiled, (Function,)), (set_compile, (Int8,)),
                       (handle_ping, (Frame,)), (handle_drop, (Frame,)), (handle_collect, (Frame,)),
                       (capture_state, (Bool, Bool)), (settle_state, (StateBefore, Module, String, Bool, Bool)),
                       (new_methods_reason, (UInt, Module, String)), (named_functions, (Module, String, Vector{Module})),
                       (record_baseline, ()), (stdio_reason, ()), (main_changed, (StateBefore,)))
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
    record_baseline()
    send_frame(HELLO, 0, [string(VERSION), string(getpid())])
    serve()
end

end # module
