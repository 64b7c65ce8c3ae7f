"""The compile policy (julia/compile_policy.jl): every policy prints what `julia -e` prints for the
same code, and each one compiles or interprets what it says it does (user code can read Julia's
compile mode: `Base.JLOptions().compile_enabled` is 1 when compiling, 3 under `--compile=min`)."""

from __future__ import annotations

import pytest

from juliapool import JuliaExecutor, JuliaProcessPool
from juliapool.pool import COMPILE_POLICIES

MODE = "print(Base.JLOptions().compile_enabled)"
HOT = "function hot(n)\n    s = 0\n    while true\n        n > 0 || break\n        s += n\n        n -= 1\n    end\n    return (s, Base.JLOptions().compile_enabled)\nend\n"
LIGHT = "function light(n)\n    s = 0\n    for i in 1:n\n        s += i\n    end\n    return (s, Base.JLOptions().compile_enabled)\nend\n"

# (name, code): each policy must print the same as spawn mode.
SNIPPETS = [
    ("short loop", "for k in 1:5\n    println(k)\nend"),
    ("long loop", "t = 0.0\nfor i in 1:10^5\n    global t += sqrt(i)\nend\nprintln(t)"),
    ("soft scope", "s = 0\nfor k in 1:3\n    s += k\nend\nprintln(s)"),
    ("while", "x = 0\nwhile x < 1000\n    global x += 7\nend\nprintln(x)"),
    ("comprehension", "x = [i^2 for i in 1:10]\nprintln(sum(x), x[end])"),
    ("closure over big range", "println(sum(x -> x % 7, 1:10^6))"),
    ("recursion", "fib(n) = n < 2 ? n : fib(n - 1) + fib(n - 2)\nprintln(fib(20))"),
    ("documented function", '"doc"\nfunction d(n)\n    s = 0\n    for i in 1:n\n        s += i\n    end\n    s\nend\nprintln(d(10^6))'),
    ("one line", "a = 2; for i in 1:3; global a *= i; end; println(a)"),
    ("error in loop", "for i in 1:3\n    i == 2 && error(\"at $i\")\n    println(i)\nend"),
    ("global from earlier statement", "n = 10^5\nv = collect(1:n)\nprintln(sum(x -> x^2, v))"),
    ("value", "x = 1:3\ncollect(x)"),
]


@pytest.fixture(scope="module")
def policy_pools():
    pools = {p: JuliaProcessPool(size=1, compile_policy=p) for p in COMPILE_POLICIES}
    yield pools
    for pool in pools.values():
        pool.shutdown()


@pytest.fixture(scope="module")
def expected():
    spawn = JuliaExecutor(timeout=60)
    return {name: spawn.run(code) for name, code in SNIPPETS}


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="compile_policy must be one of tiered, toplevel, compiled, interpreted"):
        JuliaProcessPool(size=1, compile_policy="fast")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("policy", COMPILE_POLICIES)
def test_every_policy_prints_what_julia_prints(policy_pools, expected, policy):
    for name, code in SNIPPETS:
        got, want = policy_pools[policy].execute(code), expected[name]
        assert (got.stdout, got.exit_code) == (want.stdout, want.exit_code), (policy, name, got.stderr)
        if want.exit_code:
            assert got.stderr.splitlines()[0] == want.stderr.splitlines()[0], (policy, name)


@pytest.mark.timeout(120)
def test_tiered_interprets_short_statements_and_compiles_hot_code(policy_pools):
    pool = policy_pools["tiered"]
    assert pool.execute(MODE).stdout == "3"  # a short statement: interpreted
    assert pool.execute(f"for i in 1:3; end\n{MODE}").stdout == "3"
    assert pool.execute(f"begin\n    for i in 1:10^6; end\n    {MODE}\nend").stdout == "1"  # a long loop: compiled
    assert pool.execute(f"for i in 1:10^6; end\n{MODE}").stdout == "3"  # the next statement is short again
    assert pool.execute(HOT + "println(hot(10))").stdout == "(55, 1)\n"  # a `while` of unknown length: compiled
    # a `while` its text bounds: stepping towards a parameter (as `for i in 1:n`), dividing what it tests
    countdown = "function down(n)\n    s = 0\n    while n > 0\n        s += n\n        n -= 1\n    end\n    s\nend\n"
    digits = "function digsum(n)\n    s = 0\n    while n > 0\n        s += n % 10\n        n ÷= 10\n    end\n    s\nend\n"
    assert pool.execute(countdown + digits + f"print((down(10), digsum(987), {MODE[6:-1]}))").stdout == "(55, 24, 3)"
    assert pool.execute(countdown + f"print((down(10^6), {MODE[6:-1]}))").stdout == "(500000500000, 1)"  # survey: long
    # a walk along a structure, a loop until what it takes from is empty: once per element
    walk = "struct L; next::Union{L,Nothing}; end\nfunction len(l)\n    n = 1\n    while l.next !== nothing\n        l = l.next\n        n += 1\n    end\n    n\nend\n"
    drain = "function drain(q)\n    s = 0\n    while !isempty(q)\n        s += popfirst!(q)\n    end\n    s\nend\n"
    assert pool.execute(walk + drain + f"print((len(L(L(nothing))), drain([1, 2]), {MODE[6:-1]}))").stdout == "(2, 3, 3)"
    assert pool.execute(LIGHT + "println(light(10))").stdout == "(55, 3)\n"  # one loop of a guessed length: not
    # nested loops it cannot size look long, unless every use of the function is a call of the program
    # whose arguments size them (here to 4 and 100 runs): then interpreted; called from a function: compiled
    pairs = "function pairs_in(s)\n    n = 0\n    for i in 1:length(s), j in i:length(s)\n        n += 1\n    end\n    (n, Base.JLOptions().compile_enabled)\nend\n"
    assert pool.execute(pairs + '@show pairs_in("abcd")').stdout == 'pairs_in("abcd") = (10, 3)\n'
    assert pool.execute(pairs + 'twice(s) = pairs_in(s)\nprint(twice("abcd"))').stdout == "(10, 1)"
    assert pool.execute(pairs + 'print(pairs_in("abcd"), first(map(pairs_in, ["ab"])))').stdout == "(10, 1)(3, 1)"
    # a statement that reaches a hot function through another runs what it calls compiled
    assert pool.execute(HOT + f"outer(n) = (hot(n); {MODE[6:-1]})\nprint(outer(3))").stdout == "1"
    assert pool.execute(f"@show 1 + 1\n{MODE}").stdout == "1 + 1 = 2\n3"  # a macro call: interpreted
    assert pool.execute(f"print(({MODE[6:-1]}, [5724, 112946]))").stdout == "(3, [5724, 112946])"  # values
    assert pool.execute(f"print(({MODE[6:-1]}, sqrt(10^6)))").stdout == "(1, 1000.0)"  # a large number
    # a later call of the program makes the function loop long: compiled from its first, short call on
    assert pool.execute(LIGHT + "print(light(10))\nn = 10^5\nprint(light(n))").stdout == "(55, 1)(5000050000, 1)"
    # a method that converts its arguments and calls the method for the converted types: not recursion
    forward = "half(x::Int) = x ÷ 2\nhalf(x::AbstractString) = half(parse(Int, x))\n"
    assert pool.execute(forward + f"print((half(\"8\"), {MODE[6:-1]}))").stdout == "(4, 3)"
    fact = "fact(n) = n < 2 ? 1 : n * fact(n - 1)\n"
    assert pool.execute(fact + f"print((fact(5), {MODE[6:-1]}))").stdout == "(120, 1)"  # recursion: compiled
    plus = "struct P; x::Int; end\nBase.:+(a::P, b::P) = P(a.x + b.x)\n"   # calls another method of +
    assert pool.execute(plus + f"print(((P(1) + P(2)).x, {MODE[6:-1]}))").stdout == "(3, 3)"
    with pool.session() as session:  # the worker's own mode is back after each call
        assert session.execute("for i in 1:10^6; end").exit_code == 0
        assert session.execute(MODE).stdout == "3"


@pytest.mark.timeout(120)
def test_compiled_and_interpreted_policies(policy_pools):
    assert policy_pools["compiled"].execute(MODE).stdout == "1"
    assert policy_pools["toplevel"].execute(MODE).stdout == "1"
    assert policy_pools["interpreted"].execute(HOT + "println(hot(10))").stdout == "(55, 3)\n"


@pytest.mark.timeout(120)
def test_what_the_policy_learns_of_a_module_goes_with_the_module(policy_pools):
    """Julia keeps most modules alive: the policy's notes on a plain call's functions must not pile up."""
    pool = policy_pools["tiered"]
    count = "print(length(Main.JuliaPoolWorker.MENTIONS), length(Main.JuliaPoolWorker.HOT))"
    with pool.session() as session:
        session.execute("f(n) = n < 2 ? n : f(n - 1)")
        for i in range(20):
            assert pool.execute(f"g{i}(n) = n < 2 ? n : g{i}(n - 1)\nprint(g{i}(3))").stdout == "1"
        assert session.execute(count).stdout == "11"  # the session's own, kept for its next calls
    assert pool.execute(count).stdout == "00"
