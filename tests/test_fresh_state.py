"""A fresh process state for every plain call (README: "What a plain call may change").

Each leak of the list is tried on a pool of ONE worker, so that the next call surely meets the same
Julia process unless the pool retired it: what can be put back is put back on the same worker (its
pid stays); what cannot retires the worker (`retire_reason`, a new pid) before the next call.
"""

from __future__ import annotations

import pytest

from juliapool import JuliaProcessPool


@pytest.fixture(scope="module")
def pool():
    p = JuliaProcessPool(size=1, timeout=60)
    yield p
    p.shutdown()


def one_pid(pool) -> int:
    pids = pool.worker_pids()
    assert len(pids) == 1, pids
    return pids[0]


def leak_then_check(pool, leak: str, check: str):
    """Run `leak`, then `check`; returns (leak reply, check reply, same worker?)."""
    before = one_pid(pool)
    first = pool.run(leak)
    second = pool.run(check)
    return first, second, one_pid(pool) == before


# ---- put back on the same worker ---------------------------------------------------------------

def test_env_changes_are_undone_on_the_same_worker(pool):
    first, second, same = leak_then_check(
        pool, 'ENV["JULIAPOOL_LEAK"] = "1"; delete!(ENV, "PATH"); ENV["HOME"] = "/nowhere"',
        'println(get(ENV, "JULIAPOOL_LEAK", "-"), " ", haskey(ENV, "PATH"), " ", ENV["HOME"] != "/nowhere")')
    assert (first.exit_code, first.retire_reason) == (0, "")
    assert second.stdout == "- true true\n"
    assert same


def test_working_directory_is_put_back_on_the_same_worker(pool, tmp_path):
    start = pool.execute("println(pwd())").stdout
    first, second, same = leak_then_check(pool, f'cd("{tmp_path}")', "println(pwd())")
    assert first.retire_reason == ""
    assert second.stdout == start
    assert same


def test_load_path_is_put_back_on_the_same_worker(pool, tmp_path):
    first, second, same = leak_then_check(pool, f'push!(LOAD_PATH, "{tmp_path}"); empty!(DEPOT_PATH)',
                                          f'println("{tmp_path}" in LOAD_PATH, " ", isempty(DEPOT_PATH))')
    assert first.retire_reason == ""
    assert second.stdout == "false false\n"
    assert same


def test_a_package_the_worker_did_not_have_retires_it(pool, tmp_path):
    (tmp_path / "JuliapoolLeakPkg.jl").write_text("module JuliapoolLeakPkg\nf() = 7\nBase.length(::Symbol) = 0\nend\n")
    first, second, same = leak_then_check(
        pool, f'push!(LOAD_PATH, "{tmp_path}"); using JuliapoolLeakPkg; println(JuliapoolLeakPkg.f())',
        'println(any(m -> nameof(m) == :JuliapoolLeakPkg, values(Base.loaded_modules)), " ", applicable(length, :a))')
    assert (first.stdout, first.retire_reason) == ("7\n", "package"), first
    assert second.stdout == "false false\n"
    assert not same


def test_global_rng_is_seeded_afresh_after_random_seed(pool):
    # What the leaked stream would give next: the second number after seed!(7).
    seeded = pool.execute("using Random; Random.seed!(7); a = rand(); println(a, \" \", rand())").stdout.split()
    first, second, same = leak_then_check(pool, "using Random; Random.seed!(7); println(rand())",
                                          "using Random; println(rand())")
    assert first.stdout.strip() == seeded[0]
    assert second.stdout.strip() not in seeded
    assert same


def test_a_method_for_the_calls_own_type_costs_no_worker(pool):
    code = ('struct Point; x::Int; y::Int; end\n'
            'Base.show(io::IO, p::Point) = print(io, "<", p.x, ",", p.y, ">")\n'
            'Base.:+(a::Point, b::Point) = Point(a.x + b.x, a.y + b.y)\n'
            'Base.length(::Point) = 2\n'
            'println(Point(1, 2) + Point(3, 4), " ", length(Point(0, 0)))')
    first, second, same = leak_then_check(pool, code, "println(length(5), \" \", 1 + 2)")
    assert (first.stdout, first.retire_reason) == ("<4,6> 2\n", "")
    assert second.stdout == "1 3\n"
    assert same


def test_plain_functions_structs_and_closures_cost_no_worker(pool):
    code = ("struct Box{T}; v::T; end\nBox(a, b) = Box(a + b)\nf(x; k = 1) = x + k\ng(x, y = 2) = x * y\n"
            "module Inner\n  struct R end\n  Base.length(::R) = 0\nend\n"
            "println(f(1), g(3), Box(1, 2).v, sum(map(x -> x + 1, [1, 2])), length(Inner.R()))")
    first, _, same = leak_then_check(pool, code, "nothing")
    assert (first.stdout, first.exit_code, first.retire_reason) == ("26350\n", 0, "")
    assert same


# ---- retired before anyone else gets the worker ---------------------------------------------------

INVALIDATES = "struct M; x::Int; end; Base.convert(::Type{T}, m::M) where T<:Integer = convert(T, m.x)"

@pytest.mark.parametrize("leak, check, want, reason", [
    ("@eval Main leaked = 42", "println(isdefined(Main, :leaked))", "false\n", "main"),
    ("Core.eval(Main, :(using Random))", "println(isdefined(Main, :Random))", "false\n", "main"),
    ("Base.length(x::Int) = 99", "println(length(5))", "1\n", "piracy"),
    ('Base.show(io::IO, x::Bool) = print(io, "nope")', "println(true)", "true\n", "piracy"),
    ("@eval Base juliapool_new_function(x::Int) = 1", "println(isdefined(Base, :juliapool_new_function))",
     "false\n", "piracy"),
    ("f(x) = 1; Base.length(x::Float64) = 99", "println(length(1.5))", "1\n", "piracy"),
    # matches every type, the call's own among them, but is not its own
    ("struct P end; (::Type{X})(a::Symbol) where X = 1", "println(applicable(Int, :a))", "false\n", "piracy"),
    ("atexit(() -> println(\"bye\"))", 'println("ok")', "ok\n", "task"),
    # the call's own method (it mentions M), but compiled Base code that converts to an Integer may
    # now call it: Julia marks that code invalid, and a later caller would compile it again
    (INVALIDATES, "reduce(+, 0, (1, 2))", "", "invalidated"),
])
def test_what_cannot_be_undone_retires_the_worker(pool, leak, check, want, reason):
    first, second, same = leak_then_check(pool, leak, check)
    assert (first.exit_code, first.retire_reason) == (0, reason), first
    assert second.stdout == want
    assert not same
    assert pool.get_stats()["retired"].get(reason, 0) >= 1


@pytest.mark.parametrize("leak", ['print("before"); close(stdout)', 'print(stderr, "before"); close(stderr)',
                                  'print("before"); Libc.flush_cstdio(); ccall(:close, Cint, (Cint,), 1)',
                                  # both: the pipe itself closes (Python sees end of file)
                                  'print("before"); close(stdout); ccall(:close, Cint, (Cint,), 1)'])
def test_a_closed_stdout_or_stderr_ends_the_call_at_once(pool, leak):
    first, second, same = leak_then_check(pool, leak, 'println("next"); println(stderr, "err")')
    assert not first.timed_out, first
    assert (first.exit_code, first.retire_reason) == (0, "stdio"), first
    assert "before" in first.stdout + first.stderr
    assert (second.stdout, second.stderr, second.exit_code) == ("next\n", "err\n", 0)
    assert not same


def test_an_error_printed_to_a_closed_stderr_is_still_an_error(pool):
    r = pool.run('close(stderr); error("boom")')
    assert (r.exit_code, r.ename, r.retire_reason, r.timed_out) == (1, "ErrorException", "stdio", False)


# ---- sessions keep their state; reset() starts afresh ---------------------------------------------

def test_session_keeps_env_and_directory_while_plain_calls_see_the_workers_own(pool, tmp_path):
    start = pool.execute("println(pwd())").stdout
    with pool.session("keeps") as s:
        s.execute(f'ENV["JULIAPOOL_SESSION"] = "on"; cd("{tmp_path}"); x = 1')
        plain = pool.execute('println(get(ENV, "JULIAPOOL_SESSION", "-"), " ", pwd())')
        assert plain.stdout == f"- {start}"
        again = s.execute('println(get(ENV, "JULIAPOOL_SESSION", "-"), " ", pwd(), " ", x)')
        assert again.stdout == f"on {tmp_path} 1\n"


def test_reset_gives_a_fresh_module_and_process_state_on_the_same_worker(pool, tmp_path):
    start = pool.execute("println(pwd())").stdout.strip()
    with pool.session("reset-same") as s:
        s.execute(f'x = 41; ENV["JULIAPOOL_SESSION"] = "on"; cd("{tmp_path}")')
        pid = one_pid(pool)
        s.reset()
        r = s.execute('println(isdefined(@__MODULE__, :x), " ", get(ENV, "JULIAPOOL_SESSION", "-"), " ", pwd())')
        assert (r.stdout, r.worker_restarted) == (f"false - {start}\n", False)
        assert one_pid(pool) == pid
        s.execute("x = 1")
        assert s.execute("println(x + 1)").stdout == "2\n"


def test_reset_after_piracy_in_a_session_moves_it_to_a_fresh_worker(pool):
    with pool.session("reset-piracy") as s:
        r = s.run("Base.length(x::Int) = 99; println(length(5))", kernel=False)
        assert (r.stdout, r.retire_reason) == ("99\n", "piracy")
        assert s.execute("println(length(5))").stdout == "99\n"   # a session keeps what it did
        pid = one_pid(pool)
        s.reset()
        r = s.execute("println(length(5))")
        assert (r.stdout, r.worker_restarted) == ("1\n", False)
        assert one_pid(pool) != pid


def test_a_session_keeps_its_worker_when_its_code_invalidates_compiled_code(pool):
    with pool.session("invalidates") as s:
        r = s.run(INVALIDATES + "; println(convert(Int, M(3)))", kernel=False)
        assert (r.stdout, r.retire_reason) == ("3\n", "invalidated")
        pid = one_pid(pool)
        assert s.execute("println(convert(Int8, M(4)))").stdout == "4\n"
        assert one_pid(pool) == pid
    # no session lives there now: the next plain call meets a fresh worker
    assert pool.execute("println(1)").stdout == "1\n"
    assert one_pid(pool) != pid


def test_session_whose_code_closes_stdout_goes_on_on_a_new_worker(pool):
    with pool.session("closes") as s:
        s.execute("x = 1")
        r = s.execute("close(stdout)")
        assert (r.exit_code, r.timed_out) == (0, False)
        r = s.execute('println(isdefined(@__MODULE__, :x))')
        assert r.worker_restarted and r.stdout == "false\n"
        assert "closed the worker's stdout or stderr" in r.stderr


@pytest.mark.timeout(120)
def test_notebook_cells_and_the_kernels_warm_up_retire_no_worker():
    """The worker's own notebook machinery (the IJulia module it puts into Main, In/Out/ans, display)
    is not the code's change: a kernel-like pool keeps its workers."""
    with JuliaProcessPool(size=1, warm_kernel=True, fast_start=True, wait=False) as nb_pool:
        session = nb_pool.session("nb")
        pid = int(session.run("getpid()").result["text/plain"])
        for cell in ["x = 1", "ans + 1", "display([1, 2])", "IJulia.clear_output()", "?sin"]:
            reply = session.run(cell, history=1)
            assert (reply.status, reply.retire_reason) == ("ok", ""), (cell, reply)
        session.close()
        assert nb_pool.execute("println(getpid())").stdout == f"{pid}\n"
        stats = nb_pool.get_stats()
        assert (stats["recycled"], stats["restarts"], stats["retired"]) == (0, 0, {}), stats
