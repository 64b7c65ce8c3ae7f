# Which methods a call added, and whether any of them is type piracy. Every function here takes
# functions and types as @nospecialize arguments: each call brings new ones, and compiling these
# functions anew for each would cost milliseconds per call. Included into the worker module
# (JuliaPoolWorker.jl); used by process_state.jl.
#
# A method the call added is its own when its function or one of the types in its signature belongs
# to the call's module (or a module inside it). Anything else changes how code of other modules
# behaves for every later caller: `Base.length(x::Int) = 99`, `Base.show(io::IO, x::Bool) = ...`.

"The call's module and the modules it defined inside it."
function module_tree(mod::Module)::Vector{Module}
    tree = Module[mod]
    i = 1
    while i <= length(tree)
        m = tree[i]
        for n in names(m; all = true)
            isdefined(m, n) || continue
            v = getfield(m, n)
            v isa Module && v !== m && parentmodule(v) === m && !(v in tree) && push!(tree, v)
        end
        i += 1
    end
    return tree
end

owns(tree::Vector{Module}, m::Module) = any(t -> t === m, tree)

"Does type `T` (a signature or part of one) mention a type that belongs to `tree`?"
function mentions(@nospecialize(T), tree::Vector{Module}, depth::Int = 0)::Bool
    depth > 8 && return false
    if T isa UnionAll
        return mentions(T.var.ub, tree, depth + 1) || mentions(T.body, tree, depth + 1)
    elseif T isa Union
        return mentions(T.a, tree, depth + 1) || mentions(T.b, tree, depth + 1)
    elseif T isa TypeVar
        return mentions(T.ub, tree, depth + 1)
    elseif T isa DataType
        owns(tree, T.name.module) && return true
        return any((@nospecialize p) -> mentions(p, tree, depth + 1), T.parameters)
    end
    return false
end

"""The methods of `f` (a function, or a type: its constructors) added after world `w`. A function's
own method table is walked where Julia has one per function (1.5 to 1.11: fast); otherwise
`methods` looks them up."""
function new_in(@nospecialize(f), w::UInt)::Vector{Method}
    T = typeof(f)
    if f isa Function && !isdefined(Core, :methodtable) && isdefined(T.name, :mt) && T.name.mt !== NONFUNCTION_MT
        return new_in_table(T.name.mt, w)
    end
    return try [m for m in methods(f) if method_world(m) > w] catch; Method[] end
end

# The table that holds the methods of callable objects of all non-function types (1.5 to 1.11).
const NONFUNCTION_MT = isdefined(Core, :methodtable) ? nothing : Int.name.mt

"""New methods of the functions and types defined in the call's modules (each one is its own):
a function's methods, a type's constructors, a closure's body (its type's singleton instance),
keyword sorters of Julia 1.5 to 1.8 that exist (later ones share Core.kwcall: left to the slower
paths)."""
function own_new_methods(tree::Vector{Module}, w::UInt)::Vector{Method}
    found = Method[]
    # (A new method that merely matches, like `(::Type{X})(a) where X`, mentions no own type: not own.)
    add(ms) = for m in ms; mentions(m.sig, tree) && !any(x -> x === m, found) && push!(found, m); end
    parametric = false
    for m in tree, name in names(m; all = true)
        isdefined(m, name) || continue
        v = getfield(m, name)
        T = v isa Type ? Base.unwrap_unionall(v) : typeof(v)
        T isa DataType && owns(tree, T.name.module) || continue
        # A function's type (`#f` beside `f`) has no constructors worth the lookup (~0.3 ms each).
        v isa Type && T <: Function || add(new_in(v, w))
        parametric |= v isa UnionAll && !(T <: Function)
        f = v isa Function ? v : v isa Type && T <: Function && isdefined(T, :instance) ? T.instance : nothing
        if f === nothing    # a closure that captures variables (`t -> t[column]`) has no instance
            v isa Type && T <: Function && isdefined(T.name, :mt) && add(new_in_table(T.name.mt, w))
            continue
        end
        f === v || add(new_in(f, w))
        mt = isdefined(typeof(f).name, :mt) ? typeof(f).name.mt : nothing
        if mt isa Core.MethodTable && isdefined(mt, :kwsorter) && !isdefined(Core, :kwcall)
            add(new_in(mt.kwsorter, w))
        end
    end
    # `(::Type{X{T}})(a) where T`, a parametric type's constructor, is in Type's own table (1.5 to
    # 1.11; ~0.3 ms to walk), not its type's, and `methods(X)` does not list it.
    parametric && TYPE_MT !== nothing && add(new_in_table(TYPE_MT, w))
    return found
end

const TYPE_MT = isdefined(Core, :methodtable) ? nothing : Base.unwrap_unionall(Type).name.mt

"Functions the code names (`show`, `Base.show`, `LinearAlgebra.norm`) that are not the call's own."
function named_functions(mod::Module, code::String, tree::Vector{Module})::Vector{Any}
    found = Any[]
    ex = try Base.parse_input_line(code) catch; return found end
    visit(@nospecialize x) = begin
        v = resolve(mod, x)
        if v isa Function && !owns(tree, parentmodule(v)) && !any(f -> f === v, found)
            push!(found, v)
        end
        if x isa Expr
            foreach(visit, x.args)
        end
    end
    visit(ex)
    return found
end

function resolve(mod::Module, @nospecialize(x))
    try
        if x isa Symbol
            return isdefined(mod, x) ? getfield(mod, x) : nothing
        elseif x isa Expr && x.head === :. && length(x.args) == 2 && x.args[2] isa QuoteNode
            parent = resolve(mod, x.args[1])
            name = x.args[2].value
            return parent isa Module && name isa Symbol && isdefined(parent, name) ? getfield(parent, name) : nothing
        elseif x isa GlobalRef
            return isdefined(x.mod, x.name) ? getfield(x.mod, x.name) : nothing
        end
    catch
    end
    return nothing
end

"Every module Julia has loaded and the modules inside them (~10 ms on 1.5: the slow path)."
function all_modules()::Vector{Module}
    todo = Module[Main, Core, Base]
    append!(todo, Base.loaded_modules_array())
    seen = Set{Module}()
    while !isempty(todo)
        m = pop!(todo)
        m in seen && continue
        push!(seen, m)
        for n in names(m; all = true)
            isdefined(m, n) || continue
            v = try getfield(m, n) catch; continue end
            v isa Module && v !== m && push!(todo, v)
        end
    end
    return collect(seen)
end

"""Every method table, for the slow path (~10 ms on 1.5). Julia 1.5 to 1.11 keep one per function
type, plus shared ones for constructors (Type's) and for callable objects; newer ones keep a
single `Core.methodtable`. `nothing` where neither can be read (the caller then assumes piracy)."""
function all_method_tables()
    isdefined(Core, :methodtable) && return Any[Core.methodtable]
    tables = Any[]
    seen = Set{Any}()
    add(mt) = mt isa Core.MethodTable && !(mt in seen) && (push!(seen, mt); push!(tables, mt))
    add(Base.unwrap_unionall(Type).name.mt)
    for m in all_modules(), n in names(m; all = true)
        isdefined(m, n) || continue
        v = try getfield(m, n) catch; continue end
        T = v isa Type ? Base.unwrap_unionall(v) : typeof(v)
        (T isa DataType && isdefined(T.name, :mt)) || continue
        mt = T.name.mt
        add(mt)
        isdefined(mt, :kwsorter) && add(typeof(mt.kwsorter).name.mt)
    end
    return tables
end

function new_in_table(mt, w::UInt)::Vector{Method}
    found = Method[]
    Base.visit(mt) do m
        m isa Method && method_world(m) > w && push!(found, m)
    end
    return found
end

"A method is the call's own when its signature (which starts with the function's type) mentions a type of the call's modules."
pirated(ms, tree) = any(m -> !mentions(m.sig, tree), ms)

"""The reason word for the methods a call added since world `w`: "piracy", "invalidated"
(invalidation.jl) or ""."""
function new_methods_reason(w::UInt, mod::Module, code::String)::String
    WORLD_FIELD == 0 && return "piracy"     # cannot tell: be safe
    tree = module_tree(mod)
    own = own_new_methods(tree, w)
    # Methods of the call's own functions only: no code compiled before the call can call them.
    length(own) >= world() - w && return ""
    pirated_since(w, mod, code, tree, own) && return "piracy"
    return invalidated_since(w) ? "invalidated" : ""
end

"Is any method added since world `w` that is not among the call's `own` ones pirated?"
function pirated_since(w::UInt, mod::Module, code::String, tree::Vector{Module}, own::Vector{Method})::Bool
    named = Method[]
    for f in named_functions(mod, code, tree), m in new_in(f, w)
        any(x -> x === m, named) || any(x -> x === m, own) || push!(named, m)
    end
    length(own) + length(named) >= world() - w && return pirated(named, tree)
    try
        for mt in all_method_tables()
            pirated(new_in_table(mt, w), tree) && return true
        end
    catch err
        @debug "juliapool: method tables could not be read" err
        return true     # cannot tell: be safe
    end
    return false
end
