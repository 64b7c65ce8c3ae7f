# The module a notebook sees as `IJulia` (and `Main.IJulia`): IJulia's names for what the kernel
# can do, so that code written for IJulia runs unchanged. Included into the worker module after
# notebook.jl; each function acts on the cell that is running.
#
#   IJulia.clear_output(wait=false)          a `clear_output` message
#   IJulia.display(x; display_id=true)       display_data with a display id -> DisplayHandle
#   IJulia.update_display(x; display_id=id)  update_display_data (also update_display(handle, x))
#   IJulia.readprompt(prompt; password=false), IJulia.inited, IJulia.clear_history()
#   IJulia.push_preexecute_hook(f) / postexecute / posterror and their pop_ functions
#
# IJulia itself has no display ids; these follow IPython's `display(obj, display_id=...)`.

module IJulia

const W = parentmodule(@__MODULE__)

"True in a notebook: packages test `isdefined(Main, :IJulia) && Main.IJulia.inited`."
const inited = true

"""
    clear_output(wait=false)

Clear the running cell's output; with `wait=true` the front end clears it only when the next
output arrives, so that an animation does not flicker. `clear_output(wait=true)` works too.
"""
function clear_output(w::Bool=false; wait::Bool=w)
    W.emit_display_event("clear", wait ? "1" : "0", Pair{String,String}[])
    return nothing
end

"A display that can be updated later: `update_display(handle, x)`."
struct DisplayHandle
    display_id::String
end

const DISPLAY_COUNT = Ref(0)

# Unique within the worker and across workers (pid); no Random needed.
new_display_id()::String = string("jp-", getpid(), "-", time_ns(), "-", DISPLAY_COUNT[] += 1)

display_id_of(id::Bool) = id ? new_display_id() : throw(ArgumentError("display_id=false: give true or a string"))
display_id_of(id::AbstractString) = String(id)
display_id_of(h::DisplayHandle) = h.display_id

"""
    display(x; display_id=nothing)
    display(mime, x; display_id=nothing)

Without `display_id`, Base's `display`. With one (`true` for a new id, or a string), show `x` as
a display that `update_display` can replace later; returns its `DisplayHandle`.
"""
function display(x; display_id=nothing)
    display_id === nothing && return Base.display(x)
    id = display_id_of(display_id)
    W.emit_display_event("display", id, W.display_bundle(x))
    return DisplayHandle(id)
end

function display(m::Union{MIME,AbstractString}, x; display_id=nothing)
    display_id === nothing && return Base.display(m, x)
    id = display_id_of(display_id)
    W.emit_display_event("display", id, W.mime_display_bundle(MIME(string(m)), x))
    return DisplayHandle(id)
end

"""
    update_display(x; display_id)
    update_display(handle::DisplayHandle, x)

Replace what an earlier `display(...; display_id=id)` showed, wherever it is in the notebook.
"""
function update_display(x; display_id)
    W.emit_display_event("update", display_id_of(display_id), W.display_bundle(x))
    return nothing
end

update_display(h::DisplayHandle, x) = update_display(x; display_id=h)

"""
    readprompt(prompt; password=false)

Ask the front end for a line of text, showing `prompt`; with `password=true` the answer is hidden.
"""
function readprompt(prompt::AbstractString; password::Bool=false)
    input = stdin
    input isa W.KernelStdin || error(W.NO_STDIN_MESSAGE)
    W.ask_line!(input, prompt, password) || return ""
    return String(chomp(readline(input.buf)))
end

"Forget the notebook's input and output history (`In`, `Out`) and `ans`."
function clear_history()
    mod = W.ACTIVE_MODULE[]
    for name in (:In, :Out)
        isdefined(mod, name) && W.global_value(mod, name) isa AbstractDict && empty!(W.global_value(mod, name))
    end
    W.set_global(mod, :ans, nothing)
    return nothing
end

"Accepted for IJulia's sake; the kernel's own logging is configured on the Python side."
set_verbose(v::Bool=true) = nothing

const PREEXECUTE_HOOKS = Function[]
const POSTEXECUTE_HOOKS = Function[]
const POSTERROR_HOOKS = Function[]

pop_hook!(hooks::Vector{Function}, f::Function) = splice!(hooks, findlast(isequal(f), hooks))

"Run `f()` before every cell."
push_preexecute_hook(f::Function) = push!(PREEXECUTE_HOOKS, f)
"Run `f()` after every cell that did not fail."
push_postexecute_hook(f::Function) = push!(POSTEXECUTE_HOOKS, f)
"Run `f()` after every cell that failed."
push_posterror_hook(f::Function) = push!(POSTERROR_HOOKS, f)
pop_preexecute_hook(f::Function) = pop_hook!(PREEXECUTE_HOOKS, f)
pop_postexecute_hook(f::Function) = pop_hook!(POSTEXECUTE_HOOKS, f)
pop_posterror_hook(f::Function) = pop_hook!(POSTERROR_HOOKS, f)

end # module IJulia
