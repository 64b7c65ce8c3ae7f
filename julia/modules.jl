# Modules for user code: a fresh one per plain call (no state leaks), a persistent one per session
# key. Included into the worker module (JuliaPoolWorker.jl).

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
    resolve_as_in_main(m)
    return m
end

"Resolve in `m` the names Julia's start-up resolved in Main (julia/worker.jl records them)."
function resolve_as_in_main(m::Module)
    names = isdefined(Main, Symbol("#juliapool_main_resolved")) ? getfield(Main, Symbol("#juliapool_main_resolved")) : ()
    found = 0     # used, or the compiler drops the isdefined calls, which resolve an implicit import
    for n in names
        found += n isa Symbol && try isdefined(m, n) catch; false end
    end
    return found
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
