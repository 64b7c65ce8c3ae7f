# What a notebook cell does beyond running code, as IJulia users know it. Included into the worker
# module (JuliaPoolWorker.jl) after kernel_support.jl:
#
#   mime_display_bundle(mime, x)         display(mime, x), a string for a textual type being the data
#   prepare_notebook!(mod)               `IJulia`, `In`, `Out`, `ans` in a notebook's module
#   with_hooks(f)                        IJulia's pre-/post-execute and post-error hooks around a cell
#   record_cell!(mod, source, value, history, code)   `ans`, `In[n]`, `Out[n]` after a cell
#   IJulia                               the module notebooks see: clear_output, display updates, ...
#   handle_guarded(frame)                no request may end the worker because of the worker's own error
#
# Stdlib only, Julia 1.5 syntax; version differences are found by feature detection (compat.jl).

# ---------------------------------------------------------------------------------------------
# display(mime, x) of data given as it is (used by KernelDisplay, kernel_support.jl)

"""
    is_raw_data(mime, x)

IJulia's rule: a string given for a textual MIME type other than text/plain *is* the data
(`display(MIME("text/html"), "<b>hi</b>")`), as are bytes for a binary one (`image/png`).
"""
is_raw_data(m::MIME, x) =
    istextmime(m) ? (x isa AbstractString && m != MIME"text/plain"()) : x isa AbstractVector{UInt8}

function mime_display_bundle(m::MIME, x)::Vector{Pair{String,String}}
    if is_raw_data(m, x)
        data = istextmime(m) ? String(x) : base64encode(x)
        # A textual representation is its own best plain-text fallback (IJulia sends it too).
        return Pair{String,String}["text/plain" => (istextmime(m) ? data : plain_text(x)), string(m) => data]
    end
    return with_compile(COMPILE_MIN) do       # as display_bundle: see there why
        b = Pair{String,String}["text/plain" => plain_text(x)]
        m == MIME"text/plain"() || push!(b, string(m) => render_mime(m, x))
        b
    end
end

# ---------------------------------------------------------------------------------------------
# The names a notebook module gets: IJulia, In, Out, ans

"""
    prepare_notebook!(mod)

Give a notebook's module what IJulia gives `Main`: the module `IJulia`, the dictionaries `In`
(cell number => source) and `Out` (cell number => value) and `ans`. `Main.IJulia` is set too, so
that `isdefined(Main, :IJulia) && Main.IJulia.inited` says "in a notebook", as packages check it.
Names the user defined are left alone.
"""
function prepare_notebook!(mod::Module)
    isdefined(mod, :IJulia) && return
    set_const(mod, :IJulia, IJulia)
    isdefined(mod, :In) || set_const(mod, :In, Dict{Int,String}())
    isdefined(mod, :Out) || set_const(mod, :Out, Dict{Int,Any}())
    isdefined(mod, :ans) || set_global(mod, :ans, nothing)
    isdefined(Main, :IJulia) || set_const(Main, :IJulia, IJulia)
    return
end

"""
    record_cell!(mod, source, value, history, code)

With `history` given (decimal text, from the kernel; empty: the cell keeps no history, as user
expressions do), after a cell ran without error `ans` is its value (as in IJulia and the REPL),
and for a cell number n > 0 `In[n]` is its source and `Out[n]` its value, unless the value is
`nothing` or hidden by a trailing `;`. Never throws: a user who rebound `In` or `Out` loses that
bookkeeping, not the cell.
"""
function record_cell!(mod::Module, source::String, value, history::String, code::String)
    isempty(history) && return
    try
        set_global(mod, :ans, value)
        n = parse(Int, history)
        n > 0 || return
        inputs = global_value(mod, :In)
        inputs isa AbstractDict && (inputs[n] = source)
        outputs = global_value(mod, :Out)
        # (`Out` as a cell's value is not stored in itself, as IJulia decided: JuliaLang/julia#3066.)
        if outputs isa AbstractDict && value !== nothing && value !== outputs && !REPL.ends_with_semicolon(code)
            outputs[n] = value
        end
    catch e
        log_worker_error("recording In/Out", e, catch_backtrace())
    end
    return
end

"""
    with_hooks(f)

Run a cell `f()` between IJulia's hooks: pre-execute hooks before, post-execute hooks after it
succeeded, post-error hooks after it failed (the error is then rethrown).
"""
function with_hooks(f::Function)
    run_hooks(IJulia.PREEXECUTE_HOOKS)
    value = try
        f()
    catch
        run_hooks(IJulia.POSTERROR_HOOKS)
        rethrow()
    end
    run_hooks(IJulia.POSTEXECUTE_HOOKS)
    return value
end

run_hooks(hooks::Vector{Function}) = foreach(Base.invokelatest, copy(hooks))

# ---------------------------------------------------------------------------------------------
# Requests that must never end the worker

"""
    handle_guarded(frame)

`handle(frame)`, except that an error in the worker's own code (completion, inspection,
is_complete, a display, a help lookup) is logged to the worker's stderr and answered with an empty
result instead of ending the worker, which would lose the notebook's state.
"""
function handle_guarded(frame::Frame)
    try
        inject_fault(frame.kind)
        handle(frame)
    catch e
        e isa InterruptException && rethrow()
        log_worker_error("a $(repr(frame.kind)) request", e, catch_backtrace())
        answer_failed(frame, e)
    end
end

# Fault injection for tests: $JULIAPOOL_FAIL_REQUESTS lists request kinds (letters, e.g. "CIK")
# whose handling fails at once with an error of the worker's own, as a bug in it would.
function inject_fault(kind::Char)
    kinds = get(ENV, "JULIAPOOL_FAIL_REQUESTS", "")
    (isempty(kinds) || kind == 'Q' || !(kind in kinds)) && return
    error("injected fault in a $(repr(kind)) request (\$JULIAPOOL_FAIL_REQUESTS)")
end

function log_worker_error(what::String, e, bt)
    try
        msg = sprint(showerror, e, bt)     # one write, so that it is logged as one message
        print(stderr, string("juliapool worker: internal error in ", what, " (answered with an empty result): ", msg, "\n"))
        flush(stderr)
    catch
    end
end

# The empty answer of each request kind (PROTOCOL.md); an exec request gets an error reply.
function answer_failed(frame::Frame, e)
    k = frame.kind
    if k == 'E'
        CURRENT[] = nothing
        ACTIVE_MODULE[] = Main
        length(frame.fields) >= 3 && write_marker(Request(frame.id, field_string(frame, 3), 0), END_SEQ)
        evalue = try sprint(showerror, e) catch; string(typeof(e)) end
        send_frame(DONE, frame.id, ["error", "JuliaPoolWorkerError", evalue,
                                   "juliapool worker: internal error: " * evalue * "\n", ""])
    elseif k == 'C'
        cursor = length(frame.fields) >= 3 ? field_string(frame, 3) : "0"
        reply(frame, [cursor, cursor])
    elseif k == 'I'
        reply(frame, ["0"])
    elseif k == 'K'
        reply(frame, ["unknown", ""])
    elseif k != 'Q'
        reply(frame, String[])
    end
end
