# How long a top-level statement, or a call of a user function, will run: guessed from the code's
# text before it runs, for the tiered compile policy (compile_policy.jl, which includes this file).

# The closures that walk an expression's arguments are `@nospecialize`: else Julia compiles each
# again for every kind of value it meets there (Int, Char, Float64, ...), a few ms in every worker
# (seen with --trace-compile over the corpus).

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
# collection's length, over anything else SHORT_GUESS iterations; a `while` as its test and body
# tell (`while_iterations`); generators and comprehensions count as loops;
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
        if ex.head === :while
            looping = true
            return sat_mul(while_iterations(ex, mod), sat_add(1, cost(ex.args[2])))
        end
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

# ---- how often a `while` runs ---------------------------------------------------------------

const LOG_GUESS = 64            # a loop that divides what it tests: as many runs as bits
const COMPARISONS = (:<, :<=, :≤, :>, :>=, :≥, :!=, :≠, :!==, :(==), :(===))
const SCALING = (:/=, :÷=, :>>=, :>>>=, :*=, :<<=)    # updates that scale a variable
const DIVISIONS = (:/, :÷, :div, :fld, :>>, :>>>)
const LENGTHS = (:length, :lastindex, :endof, :ncodeunits, :size, :sizeof)   # a bound `i <= length(xs)`
const TAKERS = (:pop!, :popfirst!, :shift!, :splice!, :deleteat!, :popat!, :empty!)  # calls that shrink their first argument
const GIVERS = (:push!, :pushfirst!, :unshift!, :append!, :prepend!, :insert!, :resize!)

"""How often a `while` runs, where its text tells. A test (or one of the `&&`-joined tests) that
names a variable the body scales (`x /= 2`, `n = n ÷ 10`) runs about LOG_GUESS times; one that
compares a variable the body steps (`i += 1`) with a bound runs as often as the bound says: a
collection's length (`i <= length(xs)`), a number, or SHORT_GUESS where unknown, as a `for` over an
unknown range does. So does a walk along a structure (`node = node.next`), and a loop until a
collection the body only takes from is empty (`while !isempty(q)` with `popfirst!(q)`: its
length if known). Any other loop (`while !done(x)`, `while length(seen) < 1000`, `while true`)
is taken to be long: corpus programs 0239, 0249 and 0283 search that way 10^5 times."""
function while_iterations(ex::Expr, mod)::Int
    updates = Dict{Symbol,Symbol}()      # variable => :scaled, :stepped, :walked, :shrunk or :grown
    collect_updates!(updates, ex.args[2])
    best = typemax(Int)
    for test in conjuncts(ex.args[1])
        xs = emptiness_of(test)
        if xs isa Symbol && get(updates, xs, nothing) === :shrunk
            n = size_guess(xs, mod)
            best = min(best, n === nothing ? SHORT_GUESS : n)
        end
        (test isa Expr && test.head === :call && length(test.args) == 3 && test.args[1] in COMPARISONS) || continue
        named = mentioned_names(test)      # compile_policy.jl
        for (var, kind) in updates
            var in named || continue
            kind === :scaled && (best = min(best, LOG_GUESS))
            kind === :walked && (best = min(best, SHORT_GUESS))
        end
        for (var, bound) in ((test.args[2], test.args[3]), (test.args[3], test.args[2]))
            var isa Symbol && get(updates, var, nothing) === :stepped && (best = min(best, bound_iterations(bound, var, mod)))
        end
    end
    return best
end

function conjuncts(@nospecialize(c))::Vector{Any}
    (c isa Expr && c.head === :&&) || return Any[c]
    out = Any[]
    for a in c.args
        append!(out, conjuncts(a))
    end
    return out
end

"What the loop body `ex` does to each variable it changes (see `while_iterations`)."
function collect_updates!(updates::Dict{Symbol,Symbol}, @nospecialize(ex))
    (ex isa Expr && !isempty(ex.args)) || return
    ex.head in NOT_RUN_HERE && return
    target = ex.args[1] isa Expr && ex.args[1].head === :global ? ex.args[1].args[1] : ex.args[1]
    f = ex.args[1]
    if ex.head === :call && length(ex.args) >= 2 && ex.args[2] isa Symbol && (f in TAKERS || f in GIVERS)
        xs = ex.args[2]      # `popfirst!(queue)`: a loop until it is empty runs once per element
        f in GIVERS ? (updates[xs] = :grown) : get!(updates, xs, :shrunk)
    elseif target isa Symbol && ex.head === :(=) && length(ex.args) == 2 && ex.args[2] isa Expr &&
           ex.args[2].head === :. && ex.args[2].args[1] === target
        get!(updates, target, :walked)      # `node = node.next`: once per element of a structure
    elseif target isa Symbol && ex.head in SCALING
        updates[target] = :scaled
    elseif target isa Symbol && ex.head in (:+=, :-=)
        get!(updates, target, :stepped)
    elseif target isa Symbol && ex.head === :(=) && length(ex.args) == 2
        rhs = ex.args[2]
        if divides(rhs, target)
            updates[target] = :scaled
        elseif rhs isa Expr && rhs.head === :call && rhs.args[1] in (:+, :-) && target in rhs.args[2:end]
            get!(updates, target, :stepped)
        end
    end
    foreach((@nospecialize a) -> collect_updates!(updates, a), ex.args)
end

"`xs` of a test `!isempty(xs)` (or `isempty(xs) == false`), else nothing."
function emptiness_of(@nospecialize(test))
    test isa Expr && test.head === :call || return nothing
    inner = test.args[1] === :! && length(test.args) == 2 ? test.args[2] :
            test.args[1] === :(==) && length(test.args) == 3 && test.args[3] === false ? test.args[2] : nothing
    inner isa Expr && inner.head === :call && length(inner.args) == 2 && inner.args[1] === :isempty || return nothing
    return inner.args[2]
end

"Does `ex` divide (or shift right) `var` somewhere: `n ÷ 10`, `div(n, 2)`, `iseven(n) ? n >> 1 : ...`?"
function divides(@nospecialize(ex), var::Symbol)::Bool
    ex isa Expr || return false
    ex.head === :call && ex.args[1] in DIVISIONS && length(ex.args) >= 2 && ex.args[2] === var && return true
    return any((@nospecialize a) -> divides(a, var), ex.args)
end

"Runs of a loop stepping `var` towards `bound`: a length, a known number, or the counter's own start."
function bound_iterations(@nospecialize(bound), var::Symbol, mod)::Int
    if bound isa Expr && bound.head === :call && length(bound.args) >= 2 && bound.args[1] in LENGTHS
        n = size_guess(bound.args[2], mod)
        return n === nothing ? SHORT_GUESS : n
    end
    n = literal_int(bound, mod)
    n === nothing && return SHORT_GUESS
    abs(n) > 1 && return Int(min(abs(n), typemax(Int)))
    start = literal_int(var, mod)      # counting down to 0 or 1: as often as the counter's value
    return start === nothing ? SHORT_GUESS : Int(min(abs(start), typemax(Int)))
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
        if any((@nospecialize x) -> x === nothing, b)
            # `j in coin+1:amount`, counting up to a known end: at most that end's size, as far
            # as it tells (such a start is positive in nearly every loop); else nothing
            hi, step = b[end], length(b) == 3 ? b[2] : 1
            (hi === nothing || b[1] !== nothing || step === nothing || step <= 0) && return nothing
            return Int(min(abs(hi) ÷ step, typemax(Int)))
        end
        return try Int(min(length(length(b) == 2 ? (b[1]:b[2]) : (b[1]:b[2]:b[3])), typemax(Int))) catch; typemax(Int) end
    elseif r.head in (:vect, :tuple, :vcat, :hcat, :braces)
        any((@nospecialize a) -> a isa Expr && a.head === :..., r.args) && return nothing
        return length(r.args)
    elseif r.head === :ref && !isempty(r.args)
        return size_guess(r.args[1], mod)          # a part of a collection is no larger
    elseif r.head === :call && length(r.args) >= 2
        f = r.args[1] isa Symbol ? r.args[1] : dotted_name(r.args[1])
        if f === :zip
            sizes = Any[size_guess(a, mod) for a in r.args[2:end]]
            known = filter((@nospecialize x) -> x !== nothing, sizes)
            return isempty(known) ? nothing : minimum(known)
        end
        f in SAME_SIZE && return size_guess(r.args[2] isa Expr && r.args[2].head === :parameters ? r.args[3] : r.args[2], mod)
    end
    return nothing
end

const LITERAL_OPS = Dict{Symbol,Function}(:+ => +, :- => -, :* => *, :^ => ^, :÷ => div)

const COUNTS = LENGTHS[1:4]     # those that give a number of elements, as a value (`1:length(s)`)

"""The value of an integer literal, an integer global, the length of a collection `size_guess`
knows, or arithmetic of them such as `10^6`; else nothing."""
function literal_int(@nospecialize(x), mod)
    x isa Integer && return as_int(x)
    v = global_value(x, mod)
    v isa Integer && return as_int(v)
    x isa Expr && x.head === :call && length(x.args) == 2 && x.args[1] in COUNTS && return size_guess(x.args[2], mod)
    (x isa Expr && x.head === :call && haskey(LITERAL_OPS, x.args[1]) && length(x.args) >= 2) || return nothing
    args = Any[literal_int(a, mod) for a in x.args[2:end]]
    any((@nospecialize a) -> a === nothing, args) && return nothing
    n = try LITERAL_OPS[x.args[1]](map(Int128, args)...) catch; return nothing end   # `10^20` does not wrap
    return as_int(n)
end

# An Int where it fits: the ranges and tables built from guessed numbers are then of the types the
# worker was compiled for (an Int128 range, a UInt8 stored in a Dict{Symbol,Any}: ~10 ms to compile).
function as_int(@nospecialize(n::Integer))
    n isa Int && return n
    n isa Union{Bool,Int8,Int16,Int32,UInt8,UInt16,UInt32} && return Int(n)   # (no mixed comparison to compile)
    return typemin(Int) <= n <= typemax(Int) ? Int(n) : n
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
        return any((@nospecialize a) -> big_data(a, mod, argument), ex.args[2:end])
    end
    inside = ex.head === :call ? true : ex.head in LITERAL_COLLECTIONS ? false : argument
    return any((@nospecialize a) -> big_data(a, mod, inside), ex.head === :call ? ex.args[2:end] : ex.args)
end

const LITERAL_COLLECTIONS = (:vect, :tuple, :vcat, :hcat, :row, :braces)

# ---- what a program's own calls say ------------------------------------------------------

"""What a program's own top-level calls, with the values they pass, say of the functions it defines
(looked at before it runs):

- `hot`: a call makes the function loop past the budget (`f(n) = (for i in 1:n ... end)` and
  `f(1000)`). It is hot from its first call on, even when an earlier call (`f(10)`) is short: a
  function that ran interpreted once stays interpreted (compile_policy.jl).
- `short`: every use of the function's name is such a call, each with a loop cost under the budget
  (`lcs("thisisatest", "testing")`): the guesses its definition alone would make for lengths it
  cannot see (SHORT_GUESS per unknown loop, so nested ones look long) do not count."""
struct Survey
    hot::Set{Symbol}
    short::Set{Symbol}
end
Survey() = Survey(Set{Symbol}(), Set{Symbol}())

const NO_SURVEY = Survey()        # never changed: what is known of code not surveyed
const SURVEY = Ref(NO_SURVEY)     # of the code being run (include_user_code)

function survey(mod::Module, statements::Vector{Any})::Survey
    defs = Dict{Symbol,Vector{Any}}()     # name => [(parameters, body)]
    known = Bound(mod, Dict{Symbol,Any}())
    found = Survey()
    short_calls = Dict{Symbol,Int}()
    for ex in statements
        collect_definitions!(defs, ex)
        for (name, args) in top_level_calls(ex)
            haskey(defs, name) || continue
            cost, bound = call_cost(defs[name], args, known)
            if cost > LOOP_BUDGET
                bound && push!(found.hot, name)
            else
                short_calls[name] = get(short_calls, name, 0) + 1
            end
        end
        record_literal!(known, ex)
    end
    for (name, calls) in short_calls
        # any other use (a call inside a function, `map(f, xs)`, recursion) is a call the survey cannot size
        name in found.hot || uses_of(name, statements) != calls + length(defs[name]) || push!(found.short, name)
    end
    return found
end

function collect_definitions!(defs::Dict{Symbol,Vector{Any}}, @nospecialize(ex))
    ex isa Expr || return
    if is_method_definition(ex)
        name = function_name(ex.args[1])
        name isa Symbol && push!(get!(Vector{Any}, defs, name), (parameters(ex.args[1]), ex.args[2]))
    elseif !(ex.head in (:function, :->, :quote, :struct, :module))
        foreach((@nospecialize a) -> collect_definitions!(defs, a), ex.args)
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

# Macros that run their arguments as they are (`@show f(10)`).
const ARGUMENT_MACROS = (Symbol("@show"), Symbol("@printf"), Symbol("@sprintf"), Symbol("@time"),
                         Symbol("@elapsed"), Symbol("@assert"), Symbol("@test"))

"Calls `name(args...)` that the statement itself makes (not those inside the functions it defines)."
function top_level_calls(@nospecialize(ex), found = Tuple{Symbol,Vector{Any}}[])
    ex isa Expr || return found
    if ex.head === :macrocall && ex.args[1] in ARGUMENT_MACROS
        foreach((@nospecialize a) -> top_level_calls(a, found), ex.args[3:end])
        return found
    end
    ex.head in NOT_RUN_HERE && return found
    if ex.head === :call && ex.args[1] isa Symbol
        push!(found, (ex.args[1], Any[a for a in ex.args[2:end] if !(a isa Expr && a.head === :parameters)]))
    end
    foreach((@nospecialize a) -> top_level_calls(a, found), ex.args)
    return found
end

"""The largest loop cost of a call `name(args...)` over the methods it may reach, and whether any
argument's value was known."""
function call_cost(methods::Vector{Any}, args::Vector{Any}, known::Bound)::Tuple{Int,Bool}
    cost, bound = 0, false
    for (params, body) in methods
        length(params) >= length(args) || continue
        values = Dict{Symbol,Any}()
        for (p, a) in zip(params, args)
            v = known_value(a, known)
            p isa Symbol && v !== nothing && (values[p] = v)
        end
        bound |= !isempty(values)
        cost = max(cost, loop_cost(body, Bound(known.mod, values)))
    end
    return cost, bound
end

"""What the survey knows of a value before the program runs: an integer (`literal_int`), a string
literal, or for a literal collection its length (as that many `nothing`s: only its size is read)."""
function known_value(@nospecialize(a), known::Bound)
    v = literal_int(a, known)
    v === nothing || return v
    a isa AbstractString && return a
    a isa Symbol && return get(known.values, a, nothing)
    n = a isa Expr && a.head in (:vect, :tuple) ? size_guess(a, known) : nothing
    return n === nothing ? nothing : fill(nothing, n)
end

"How often `name` appears in `ex` (a `QuoteNode` of it too: `M.name`)."
function uses_of(name::Symbol, @nospecialize(ex))::Int
    ex === name && return 1
    ex isa QuoteNode && return uses_of(name, ex.value)
    n = 0
    if ex isa Expr || ex isa Vector{Any}
        for a in (ex isa Expr ? ex.args : ex)
            n += uses_of(name, a)
        end
    end
    return n
end

"""`n = 1000` (or `const n = 10^3`, `s = "abc"`) at top level: `n` is 1000 for the calls after it."""
function record_literal!(known::Bound, @nospecialize(ex))
    ex isa Expr && ex.head === :const && (ex = ex.args[1])
    (ex isa Expr && ex.head === :(=) && ex.args[1] isa Symbol) || return
    v = known_value(ex.args[2], known)
    v === nothing ? delete!(known.values, ex.args[1]) : (known.values[ex.args[1]] = v)
end
