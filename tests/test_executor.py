"""JuliaExecutor, the seed's front door: spawn mode and pool mode give the same answer for the same
code (stdout bytes, exit code, the error message in stderr), the shared pool is enabled and stopped
through class methods, and the executor falls back to spawning when the pool cannot serve."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Dict

import pytest

from juliapool import CodeExecResult, JuliaExecutor

# (name, code): each runs once by spawning julia and once on the pool; the answers must agree.
PARITY = [
    ("println", 'println("hello")'),
    ("no newline", 'print("no newline")'),
    ("struct", "struct P; x; end; println(P(1))"),
    ("parametric struct", "struct Q{T}; a::T; end; println([Q(1), Q(2)]); println(Q(1.5))"),
    ("error", 'error("Test error")'),
    ("error in function", 'f() = error("inner")\ng() = f()\ng()'),
    ("argument error", 'println("partial"); throw(ArgumentError("bad"))'),
    ("load and use a macro on one line", 'using Printf; @printf("%d\\n", 3); x = 1; @printf("%d\\n", x)'),
    # `b` uses the macro `a` defines: the statements of a line are evaluated in turn, as by `julia -e`
    ("define and use a macro on one line", "macro twice(x) :(2 * $(esc(x))) end; println(@twice 21)"),
    ("undefined variable", "println(undefined_thing)"),
    ("syntax error", "x = )"),
    ("exit 3", 'println("bye"); exit(3)'),
    ("exit 0", 'print("done"); exit(0)'),
    ("both streams", 'println(stderr, "to stderr"); println("to stdout")'),
    ("unicode", 'println("héllo, 世界 🎉")'),
    ("invalid utf8", "write(stdout, UInt8[0xff, 0xfe, 0x41])"),
    ("C output", 'ccall(:puts, Cint, (Cstring,), "from C")'),
    ("subprocess", "run(`echo from echo`)"),
    ("stdin", "println(repr(readline())); println(eof(stdin))"),
    ("display", "display([1, 2])"),
    ("program file and args", "println(repr(PROGRAM_FILE)); println(ARGS)"),
    ("stdlib", "using LinearAlgebra\nprintln(norm([3.0, 4.0]))"),
    ("multiline", "function fib(n)\n    n < 2 ? n : fib(n - 1) + fib(n - 2)\nend\nprintln(fib(20))"),
    ("long code", 'x = "' + "a" * 150_000 + '"\nprintln(length(x))'),
]
IDS = [name for name, _ in PARITY]


@pytest.fixture(scope="module")
def executor_pool():
    """The executors' shared pool, small: enabled for this module, stopped after it."""
    JuliaExecutor.shutdown_pool()
    assert JuliaExecutor.enable_process_pool(size=2, timeout=60) is True
    yield
    JuliaExecutor.shutdown_pool()


@pytest.fixture
def pooled(executor_pool) -> JuliaExecutor:
    # Re-enabling is a no-op while the pool runs; it restarts it if a test stopped it.
    assert JuliaExecutor.enable_process_pool(size=2, timeout=60) is True
    return JuliaExecutor(use_process_pool=True, pool_size=2)


@pytest.fixture(scope="module")
def spawned() -> Dict[str, CodeExecResult]:
    """Every parity snippet run in spawn mode once (two at a time: each spawn starts a julia)."""
    executor = JuliaExecutor()
    with ThreadPoolExecutor(2) as threads:
        results = list(threads.map(executor.run, [code for _, code in PARITY]))
    return dict(zip(IDS, results))


def test_executor_signature_keeps_the_seed_names_and_defaults():
    params = inspect.signature(JuliaExecutor).parameters
    assert [(n, params[n].default) for n in list(params)[:5]] == [
        ("timeout", 60), ("max_retries", 3), ("use_optimization_flags", True), ("use_process_pool", False),
        ("pool_size", 4)]
    enable = inspect.signature(JuliaExecutor.enable_process_pool).parameters
    assert [(n, enable[n].default) for n in list(enable)[:2]] == [("size", 4), ("timeout", 60)]
    assert all(enable[n].kind is inspect.Parameter.KEYWORD_ONLY for n in list(enable)[2:])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", IDS)
def test_pool_and_spawn_give_the_same_answer(name, spawned, pooled):
    code = dict(PARITY)[name]
    spawn = spawned[name]
    pool = pooled.run(code)
    assert isinstance(pool, CodeExecResult)
    assert pool.stdout == spawn.stdout
    assert pool.exit_code == spawn.exit_code
    if spawn.stderr:
        assert pool.stderr.splitlines()[0] == spawn.stderr.splitlines()[0]
        user_frames = [line for line in spawn.stderr.splitlines() if "none:" in line]
        assert all(line in pool.stderr.splitlines() for line in user_frames), (spawn.stderr, pool.stderr)
    else:
        assert pool.stderr == ""
    assert "worker.jl" not in pool.stderr and "include_string" not in pool.stderr, pool.stderr


def test_exit_codes_follow_the_seed(spawned):
    assert spawned["println"].exit_code == 0
    assert spawned["error"].exit_code == 1
    assert spawned["exit 3"].exit_code == 3
    assert spawned["error"].stderr.splitlines()[0] == "ERROR: Test error"


@pytest.mark.timeout(120)
def test_timeout_in_both_modes(executor_pool):
    code = 'println("before"); sleep(10)'
    spawn = JuliaExecutor(timeout=1).run(code)
    pool = JuliaExecutor(timeout=1, use_process_pool=True, pool_size=2).run(code)
    for r in (spawn, pool):
        assert r.timed_out and r.exit_code == -1, r
        assert "Execution timed out after 1 seconds" in r.stderr
    assert pool.stdout == "before\n"


@pytest.mark.timeout(120)
def test_run_takes_a_timeout_per_call_in_both_modes(executor_pool):
    # OpenEnv's JuliaCodeActEnv.step calls executor.run(code, timeout=...).
    code = 'println("before"); sleep(10)'
    for executor in (JuliaExecutor(timeout=60), JuliaExecutor(timeout=60, use_process_pool=True, pool_size=2)):
        r = executor.run(code, timeout=1)
        assert r.timed_out and r.exit_code == -1, r
        assert "Execution timed out after 1 seconds" in r.stderr
        r = executor.run('println("quick")', timeout=None)  # None: the executor's own timeout
        assert (r.stdout, r.exit_code, r.timed_out) == ("quick\n", 0, False)
    assert list(inspect.signature(JuliaExecutor.run).parameters.items())[2][1].default is None


def test_get_pool_metrics_reports_the_shared_pool(executor_pool):
    assert JuliaExecutor.enable_process_pool(size=2, timeout=60) is True
    JuliaExecutor(use_process_pool=True).run('println(1)')
    m = JuliaExecutor.get_pool_metrics()
    assert (m["enabled"], m["pool_size"], m["size"], m["timeout"]) == (True, 2, 2, 60)
    assert m["calls"] >= 1 and m["idle"] + m["busy"] == m["workers"]
    for key in ("starting", "restarts", "timeouts", "available_workers", "total_workers", "healthy_workers"):
        assert key in m, key
    JuliaExecutor.shutdown_pool()
    assert JuliaExecutor.get_pool_metrics() == {"enabled": False, "pool_size": 0, "available_workers": 0}


def test_pool_class_methods(executor_pool):
    assert JuliaExecutor.enable_process_pool(size=2, timeout=60) is True
    assert JuliaExecutor.is_pool_enabled() is True
    r = JuliaExecutor(use_process_pool=True).run('println("pooled")')
    assert (r.stdout, r.exit_code) == ("pooled\n", 0)


def test_shutdown_pool_is_idempotent_and_disables_the_pool(executor_pool):
    JuliaExecutor.shutdown_pool()
    JuliaExecutor.shutdown_pool()
    assert JuliaExecutor.is_pool_enabled() is False


@pytest.mark.timeout(120)
def test_falls_back_to_spawning_when_the_pool_stops_serving(executor_pool):
    assert JuliaExecutor.enable_process_pool(size=2, timeout=60) is True
    # Stop the running pool behind the executors' back: calls must still be answered.
    JuliaExecutor._pool.shutdown()
    r = JuliaExecutor(use_process_pool=True).run('println("answered anyway"); exit(4)')
    assert (r.stdout, r.exit_code) == ("answered anyway\n", 4)
    JuliaExecutor.shutdown_pool()


@pytest.mark.timeout(120)
def test_falls_back_to_spawning_when_the_pool_cannot_start(monkeypatch, julia_path):
    JuliaExecutor.shutdown_pool()
    monkeypatch.setenv("JULIAPOOL_JULIA", "/nonexistent/julia")  # where the pool looks for Julia
    try:
        executor = JuliaExecutor(use_process_pool=True, pool_size=1, julia_path=julia_path)
        r = executor.run('println("spawned")')
        assert (r.stdout, r.exit_code) == ("spawned\n", 0)
    finally:
        JuliaExecutor.shutdown_pool()


def test_spawn_mode_needs_no_pool():
    JuliaExecutor.shutdown_pool()
    r = JuliaExecutor().run('println(1 + 1)')
    assert (r.stdout, r.stderr, r.exit_code) == ("2\n", "", 0)
    assert JuliaExecutor.is_pool_enabled() is False
