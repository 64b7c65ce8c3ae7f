# Julia-version differences the worker depends on, one place. Included first into the worker module
# (JuliaPoolWorker.jl). Each is found by feature detection (isdefined, hasmethod, trying it), never
# by version number; the comment of each says which Julia sources were read for it. Only 1.5.3 runs
# here: the other branches are written from reading Julia's source at v1.6.7, v1.7.3, v1.8.5,
# v1.9.4, v1.10.8, v1.11.7 and v1.12.5 (README, "Julia versions").
#
# JULIAPOOL_COMPAT_FALLBACK=name,name forces the fallback of the named points that 1.5 can run
# (tests use it): `set_const` (a `const` declaration, as on 1.12, instead of jl_set_const).

compat_forced(name::AbstractString)::Bool =
    name in split(get(ENV, "JULIAPOOL_COMPAT_FALLBACK", ""), ',')

# Module globals ------------------------------------------------------------------------------

# `jl_set_const` makes a constant without lowering anything (3x faster than eval). From 1.12 on,
# bindings have world-age partitions and Julia's own source marks jl_set_const as only fit for
# initialisation (src/module.c at v1.12.5: it sets the partition's min_world to 0); Core.BindingPartition
# is how one tells. There, and when forced, a `const` declaration is evaluated instead.
const BINDING_PARTITIONS = isdefined(Core, :BindingPartition)

# A plain (non-constant) global, set after every notebook cell (`ans`). An evaluated assignment is
# lowered first (~2 ms in the interpreted worker on 1.5), so it only makes a new name (1.12 wants a
# global declared before setglobal!, base/docs/basedocs.jl at v1.12.5); an existing one is set
# directly: Core.setglobal! from 1.9, jl_set_global (src/module.c) before.
function set_global(m::Module, name::Symbol, value)
    if !isdefined(m, name)
        Core.eval(m, Expr(:(=), name, QuoteNode(value)))
    elseif isdefined(Core, :setglobal!)
        Core.setglobal!(m, name, value)
    else
        ccall(:jl_set_global, Cvoid, (Any, Any, Any), m, name, value)
    end
    return nothing
end

# Reading a module's global: Core.getglobal from 1.9 (getfield on a module is the older spelling).
global_value(m::Module, name::Symbol) = isdefined(Core, :getglobal) ? Core.getglobal(m, name) : getfield(m, name)

# Completion ----------------------------------------------------------------------------------

# REPLCompletions.completion_text(c) is what a completion inserts, on 1.5 to 1.11. 1.12 dropped its
# method for BslashCompletion (`\alp` => `\alpha`) in favour of named_completion(c).completion
# (JuliaLang/julia#54800, read in stdlib/REPL/src/REPLCompletions.jl at v1.12.5).
function completion_string(c)::String
    RC = REPL.REPLCompletions
    if isdefined(RC, :named_completion)
        return String(RC.named_completion(c).completion)
    end
    return String(RC.completion_text(c))
end

# Errors ----------------------------------------------------------------------------------------

# From 1.11, UndefVarError has a `scope` field and its message names it ("not defined in
# `Main.Snippet`"; base/errorshow.jl at v1.11.7 and v1.12.5). `julia -e` says `Main`: the snippet's
# module stands for Main there, as it does in printed types.
function as_in_main(e, mod::Module)
    if e isa UndefVarError && isdefined(e, :scope) && getfield(e, :scope) === mod   # unset when thrown without one
        return UndefVarError(e.var, Main)
    end
    return e
end

# Printing user types as in Main ----------------------------------------------------------------
#
# Julia prints a type's module prefix unless `isvisible(name, parent, from)`, with `from` the
# IOContext's :module, or Main without one (base/show.jl, show_type_name: `get(io, :module, Main)`
# at v1.5 to v1.8 and again from v1.11.1, JuliaLang/julia#55316; `get(io, :module,
# active_module())` at v1.9.4, v1.10.8 and v1.11.0). The worker shows values with :module set to
# the running module where it can (kernel_support.jl); for user code that prints to stdout it
# teaches Julia that the running module counts as Main.

"Does a type defined in the active module print without a prefix? (probe with a scratch module)"
function shows_as_main()::Bool
    probe = Module(:JuliaPoolProbe)
    Core.eval(probe, :(struct JuliaPoolProbeType end))
    before = ACTIVE_MODULE[]
    ACTIVE_MODULE[] = probe
    try
        return Base.invokelatest(repr, Core.eval(probe, :JuliaPoolProbeType)) == "JuliaPoolProbeType"
    catch
        return false
    finally
        ACTIVE_MODULE[] = before
    end
end

# Our own visibility rule (not Julia's code): a name is visible from `from` when it is defined there
# and means the same object as in `parent`. The running module counts as Main.
function visible_as_main(sym::Symbol, parent::Module, from::Module)::Bool
    from === Main && parent === ACTIVE_MODULE[] && return isdefined(parent, sym)
    try
        isdefined(from, sym) && isdefined(parent, sym) || return false
        Base.isdeprecated(parent, sym) && return false
        return global_value(from, sym) === global_value(parent, sym)
    catch
        return false
    end
end

