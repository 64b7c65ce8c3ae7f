# How long a top-level statement, or a call of a user function, will run: guessed from the code's
# text before it runs, for the tiered compile policy (compile_policy.jl, which includes this file).

"""Globals of `mod` with some names bound to values: a function's parameters at a call site, or
the literal assignments of the statements before it."""
struct Bound
    mod::Module
    values::Dict{Symbol,Any}
end

const Scope = Union{Module,Bound,Nothing}

# A loop runs about 12x slower interpreted than compiled (on 1.5: 10^6 iterations of
# `global t += sqrt(i)`, 0.52 s against 0.04 s); Base's code interpreted, e.g. `sum(f, 1:10^6)`
# with a new closure, 100 to 400x slower. Compiling costs 3 to 30 ms once, so interpreting pays up
# to some 10^4 statement runs. What a statement will run is guessed from its text and from the
# values of the globals it names (earlier statements have run when it is looked at): a `for` over
# `a:b` counts its length (literal arithmetic and integer globals allowed), over a global
# collection, a literal one, or a wrapper of one (`enumerate(xs)`, `zip`, `xs[i:j]`) that
# collection's length, over anything else SHORT_GUESS iterations; a `while` is taken to be long
# (corpus programs 0239 and 0283 run one 10^5 times); generators and comprehensions count as loops;
# nested loops multiply. A statement that names a number (not an element of a literal collection)
# or a collection of BIG_DATA or more runs compiled too.
const LOOP_BUDGET = 20_000        # statements (Expr nodes) times iterations, interpreted at most
const SHORT_GUESS = 100
const BIG_DATA = 5_000

short_loop(ex) = loop_cost(ex) <= LOOP_BUDGET

"Statement runs of `ex` if interpreted, 0 if it has no loop (`typemax(Int)`: too long to guess)."
function loop_cost(@nospecialize(ex), mod::Scope = nothing)::Int
    looping = false
    cost(@nospecialize(ex)) = begin
        ex isa Expr || return 0
        if ex.head === :-> && mod isa Bound    # a function handed to a call (`findlast(x -> ..., v)`)
            looping = true                     # is taken to run once per element
            return sat_mul(SHORT_GUESS, sat_add(1, cost(ex.args[end])))
        end
        ex.head in NOT_RUN_HERE && return 1
        ex.head === :while && (looping = true; return typemax(Int))
        # `for spec; body; end`, and `body for spec...` (a generator: Base loops over it)
        specs = ex.head === :for ? ex.args[1:1] : ex.head === :generator ? ex.args[2:end] : ()
        inner = 1
        for a in (ex.head === :for ? ex.args[2:end] : ex.head === :generator ? ex.args[1:1] : ex.args)
            inner = sat_add(inner, cost(a))
        end
        isempty(specs) && return inner
        looping = true
        for spec in specs
            inner = sat_mul(inner, iterations(spec, mod))
        end
        return inner
    end
    c = cost(ex)
    return looping ? c : 0
end

sat_add(a::Int, b::Int) = a > typemax(Int) - b ? typemax(Int) : a + b
sat_mul(a::Int, b::Int) = b != 0 && a > typemax(Int) ÷ b ? typemax(Int) : a * b

"How often a `for` head (`i = a:b`, `x = xs`, or several of them in a block) iterates."
function iterations(@nospecialize(spec), mod)::Int
    if spec isa Expr && spec.head === :block
        n = 1
        for s in spec.args
            s isa LineNumberNode || (n = sat_mul(n, iterations(s, mod)))
        end
        return n
    end
    spec isa Expr && spec.head === :filter && return iterations(spec.args[end], mod)
    (spec isa Expr && length(spec.args) == 2) || return SHORT_GUESS
    n = size_guess(spec.args[2], mod)
    return n === nothing ? SHORT_GUESS : n
end

# Calls whose result has as many elements as their first argument, or fewer.
const SAME_SIZE = (:enumerate, :reverse, :eachindex, :pairs, :keys, :values, :collect, :sort,
                   :unique, :filter, :axes, :eachrow, :eachcol, :take, :drop, :rest, :Set)

"The number of elements of `r` if its text or a global's value tells; nothing otherwise."
function size_guess(@nospecialize(r), mod)
    r isa Symbol && return data_size(global_value(r, mod))
    r isa AbstractString && return ncodeunits(r)
    r isa Expr || return nothing
    if r.head === :call && r.args[1] === :(:) && length(r.args) in (3, 4)
        b = Any[literal_int(x, mod) for x in r.args[2:end]]
        any(x -> x === nothing, b) && return nothing
        return try Int(min(length(length(b) == 2 ? (b[1]:b[2]) : (b[1]:b[2]:b[3])), typemax(Int))) catch; typemax(Int) end
    elseif r.head in (:vect, :tuple, :vcat, :hcat, :braces)
        any(a -> a isa Expr && a.head === :..., r.args) && return nothing
        return length(r.args)
    elseif r.head === :ref && !isempty(r.args)
        return size_guess(r.args[1], mod)          # a part of a collection is no larger
    elseif r.head === :call && length(r.args) >= 2
        f = r.args[1] isa Symbol ? r.args[1] : dotted_name(r.args[1])
        if f === :zip
            sizes = Any[size_guess(a, mod) for a in r.args[2:end]]
            known = filter(x -> x !== nothing, sizes)
            return isempty(known) ? nothing : minimum(known)
        end
        f in SAME_SIZE && return size_guess(r.args[2] isa Expr && r.args[2].head === :parameters ? r.args[3] : r.args[2], mod)
    end
    return nothing
end

const LITERAL_OPS = Dict{Symbol,Function}(:+ => +, :- => -, :* => *, :^ => ^, :÷ => div)

"The value of an integer literal, an integer global, or arithmetic of them such as `10^6`; else nothing."
function literal_int(@nospecialize(x), mod)
    x isa Integer && return x
    v = global_value(x, mod)
    v isa Integer && return v
    (x isa Expr && x.head === :call && haskey(LITERAL_OPS, x.args[1]) && length(x.args) >= 2) || return nothing
    args = Any[literal_int(a, mod) for a in x.args[2:end]]
    any(a -> a === nothing, args) && return nothing
    return try LITERAL_OPS[x.args[1]](map(Int128, args)...) catch; nothing end
end

"""The value of global `x` in `mod` if it is already bound there; nothing otherwise. Only bindings
resolved already are looked at: resolving one would change what the user's code may do with the
name (extend a Base function of that name, or not). Base.isbindingresolved: checked on 1.5;
where it is missing, globals are not looked at."""
function global_value(@nospecialize(x), mod)
    mod isa Bound && x isa Symbol && haskey(mod.values, x) && return mod.values[x]
    mod isa Bound && (mod = mod.mod)
    (x isa Symbol && mod isa Module && isdefined(Base, :isbindingresolved)) || return nothing
    try
        Base.isbindingresolved(mod, x) && isdefined(mod, x) || return nothing
        return getfield(mod, x)
    catch
        return nothing
    end
end

"A number of elements or bytes, for what may be large; nothing for anything else."
function data_size(@nospecialize(v))
    v isa Union{AbstractArray,AbstractDict,AbstractSet,AbstractRange,Tuple,NamedTuple} && return length(v)
    v isa AbstractString && return ncodeunits(v)
    return nothing
end

"""Does `ex` hand a large number to a function (`perfects(10000)`, `1:10^6`), or name a large
global collection? A number is a size only where a function other than arithmetic gets it: in
`@show 5^3^2` or `[5724, 112946]` it is a value."""
function big_data(@nospecialize(ex), mod, argument::Bool = false)::Bool
    ex isa Integer && return argument && abs(ex) >= BIG_DATA
    if ex isa Symbol
        v = global_value(ex, mod)
        v isa Integer && return argument && abs(v) >= BIG_DATA
        n = data_size(v)
        return n !== nothing && n >= BIG_DATA
    end
    (ex isa Expr && !(ex.head in NOT_RUN_HERE)) || return false
    if ex.head === :call && haskey(LITERAL_OPS, ex.args[1])      # arithmetic passes its operands on
        n = literal_int(ex, mod)
        n !== nothing && return argument && abs(n) >= BIG_DATA
        return any(a -> big_data(a, mod, argument), ex.args[2:end])
    end
    inside = ex.head === :call ? true : ex.head in LITERAL_COLLECTIONS ? false : argument
    return any(a -> big_data(a, mod, inside), ex.head === :call ? ex.args[2:end] : ex.args)
end

const LITERAL_COLLECTIONS = (:vect, :tuple, :vcat, :hcat, :row, :braces)

# ---- what a program's own calls say ------------------------------------------------------

"""The names of the functions `code` defines that one of its own top-level calls, with the numbers
it passes, makes loop past the budget: `f(n) = (for i in 1:n ... end)` and `f(1000)`. Such a
function is hot from its first call on, even when an earlier call (`f(10)`) is short: a function
that ran interpreted once stays interpreted (compile_policy.jl)."""
function survey_hot(mod::Module, code::String)::Set{Symbol}
    defs = Dict{Symbol,Vector{Any}}()     # name => [(parameters, body)]
    known = Bound(mod, Dict{Symbol,Any}())
    hot = Set{Symbol}()
    for ex in parse_statements(code)
        collect_definitions!(defs, ex)
        for (name, args) in top_level_calls(ex)
            haskey(defs, name) && !(name in hot) && call_loops_long(defs[name], args, known) && push!(hot, name)
        end
        record_literal!(known, ex)
    end
    return hot
end

"The top-level statements of `code`, up to the first that does not parse."
function parse_statements(code::String)
    out, pos = Any[], 1
    while pos <= ncodeunits(code)
        ex, next = try Meta.parse(code, pos; raise = false) catch; break end
        (next <= pos || (ex isa Expr && ex.head in (:error, :incomplete))) && break
        ex === nothing || push!(out, ex)
        pos = next
    end
    return out
end

function collect_definitions!(defs::Dict{Symbol,Vector{Any}}, @nospecialize(ex))
    ex isa Expr || return
    if is_method_definition(ex)
        name = function_name(ex.args[1])
        name isa Symbol && push!(get!(Vector{Any}, defs, name), (parameters(ex.args[1]), ex.args[2]))
    elseif !(ex.head in (:function, :->, :quote, :struct, :module))
        foreach(a -> collect_definitions!(defs, a), ex.args)
    end
end

"The positional parameter names of a signature (nothing for one without a name, such as `::Int`)."
function parameters(@nospecialize(sig))
    call = signature_call(sig)
    names = Any[]
    call === nothing && return names
    for a in call.args[2:end]
        a isa Expr && a.head === :parameters && continue
        a isa Expr && a.head === :kw && (a = a.args[1])
        a isa Expr && a.head === :(::) && (a = length(a.args) == 2 ? a.args[1] : nothing)
        push!(names, a isa Symbol ? a : nothing)
    end
    return names
end

"Calls `name(args...)` that the statement itself makes (not those inside the functions it defines)."
function top_level_calls(@nospecialize(ex), found = Tuple{Symbol,Vector{Any}}[])
    ex isa Expr || return found
    ex.head in NOT_RUN_HERE && return found
    if ex.head === :call && ex.args[1] isa Symbol
        push!(found, (ex.args[1], Any[a for a in ex.args[2:end] if !(a isa Expr && a.head === :parameters)]))
    end
    foreach(a -> top_level_calls(a, found), ex.args)
    return found
end

function call_loops_long(methods::Vector{Any}, args::Vector{Any}, known::Bound)
    for (params, body) in methods
        length(params) >= length(args) || continue
        values = Dict{Symbol,Any}()
        for (p, a) in zip(params, args)
            v = literal_int(a, known)
            p isa Symbol && v !== nothing && (values[p] = v)
        end
        isempty(values) && continue
        loop_cost(body, Bound(known.mod, values)) > LOOP_BUDGET && return true
    end
    return false
end

"`n = 1000` (or `const n = 10^3`) at top level: `n` is 1000 for the calls after it."
function record_literal!(known::Bound, @nospecialize(ex))
    ex isa Expr && ex.head === :const && (ex = ex.args[1])
    (ex isa Expr && ex.head === :(=) && ex.args[1] isa Symbol) || return
    v = literal_int(ex.args[2], known)
    v === nothing ? delete!(known.values, ex.args[1]) : (known.values[ex.args[1]] = v)
end
