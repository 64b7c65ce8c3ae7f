# Compiled code that a call made invalid. Included into the worker module (JuliaPoolWorker.jl); used by
# piracy.jl.
#
# A method added to a function of another module, even for the call's own types
# (`Base.:+(a::Integer, b::Modulo)`), can change what code compiled before it calls, so Julia marks
# that code invalid and compiles it again the next time it runs. A later caller would pay for an
# earlier caller's methods: after corpus program 0195, the error message of F003 took 0.5 s instead
# of 35 ms (Julia 1.5.3). Such a worker is retired ("invalidated"), as one with pirated methods is.
#
# Julia's own log of invalidations prints to stdout on 1.5, so the worker looks for itself: it
# gathers the compiled code of Base and of its own module once (88 000 instances, ~90 ms on 1.5.3, at
# the first call that added a method to another module's function: a warm-up does), and after each
# such call looks for code whose world range ended during it (0.2 to 0.7 ms).

const WATCHED = Core.CodeInstance[]
const WATCHING = Ref(false)
const MAX_WORLD_ATOMIC = Ref(false)

"""Julia 1.7 and later declare some fields of compiler objects atomic, and a plain read of such a
field throws: does reading `x.f` need an order?"""
function read_needs_order(@nospecialize(x), f::Symbol)::Bool
    try
        getfield(x, f)
        return false
    catch
        return true
    end
end

read_field(@nospecialize(x), f::Symbol, atomic::Bool) = atomic ? getfield(x, f, :monotonic) : getfield(x, f)

max_world(c::Core.CodeInstance) = read_field(c, :max_world, MAX_WORLD_ATOMIC[])::UInt

"The method instances of `m`: a list, a tree (1.5, 1.6) or one instance (1.10 on, `Base.specializations`)."
function each_instance(f, m::Method)
    if isdefined(Base, :specializations)
        foreach(f, Base.specializations(m))
        return
    end
    s = m.specializations
    if s isa Core.SimpleVector
        for i in 1:length(s)
            isassigned(s, i) && f(s[i])
        end
    elseif s !== nothing
        Base.visit(f, s)
    end
end

"""Gather the compiled code of the functions of Base (and its submodules) and of the worker's
module that was valid in world `w`, so that code the current call invalidated is among it."""
function watch_compiled_code(w::UInt)
    WATCHING[] = true
    atomic = nothing
    add(@nospecialize mi) = begin
        if mi isa Core.MethodInstance && isdefined(mi, :cache)
            atomic === nothing && (atomic = read_needs_order(mi, :cache))
            c = read_field(mi, :cache, atomic)
            if c isa Core.CodeInstance
                isempty(WATCHED) && (MAX_WORLD_ATOMIC[] = read_needs_order(c, :max_world))
                max_world(c) >= w && push!(WATCHED, c)
            end
        end
        nothing
    end
    seen = Set{Any}()
    for m in [module_tree(Base); module_tree(@__MODULE__)], name in names(m; all = true)     # piracy.jl
        isdefined(m, name) || continue
        v = getfield(m, name)
        (v isa Function && !(v in seen)) || continue
        push!(seen, v)
        for method in methods(v).ms
            each_instance(add, method)
        end
    end
end

"Did the call that started in world `w` make compiled code of the worker invalid?"
function invalidated_since(w::UInt)::Bool
    if !WATCHING[]
        try
            compiled(() -> watch_compiled_code(w))     # compilation.jl: an interpreted worker too
        catch err
            @debug "juliapool: the worker's compiled code could not be gathered" err
            empty!(WATCHED)     # no watch: no worker is retired for this reason
        end
    end
    for c in WATCHED
        w <= max_world(c) < typemax(UInt) && return true
    end
    return false
end
