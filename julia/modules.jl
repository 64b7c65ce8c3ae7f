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

# jl_set_const is 3x faster than eval; where it is unfit (1.12, see compat.jl) or forced, a const
# declaration is evaluated.
function set_const(m::Module, name::Symbol, value)
    if BINDING_PARTITIONS || compat_forced("set_const")
        Core.eval(m, Expr(:const, Expr(:(=), name, QuoteNode(value))))
    else
        ccall(:jl_set_const, Cvoid, (Any, Any, Any), m, name, value)
    end
    return nothing
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
# that in one place (compat.jl says where, per version); teach it that the running module counts as Main.
"""
    patch_show()

Make types defined by user code print as in Main (`Point(1, 2)`, not `Main.Snippet.Point(1, 2)`).
Where `Base.active_module()` decides (1.9 to 1.11.0), it answers the running module; where that
does not work (1.5 to 1.8, 1.11.1 and later) `Base.isvisible` is replaced by
`visible_as_main`. Checked with a probe; if neither works, types print with their prefix.
"""
function patch_show()
    if isdefined(Base, :active_module) && hasmethod(Base.active_module, Tuple{})
        @eval Base active_module() = $ACTIVE_MODULE[]
        shows_as_main() && return
    end
    if hasmethod(Base.isvisible, Tuple{Symbol,Module,Module})
        @eval Base isvisible(sym::Symbol, parent::Module, from::Module) = $visible_as_main(sym, parent, from)
    end
    shows_as_main() || println(stderr, "juliapool worker: user types will print with a module prefix on this Julia")
    return
end
