"""RayJuliaPool on a local Ray (`ray.init(num_cpus=2)`, started once for this module): ordered maps,
session affinity, async calls, and faults on purpose: a killed Julia worker, a killed actor (plain
calls and sessions), a SIGKILLed driver; none may hang or leave a Julia process behind.

Actors ask for half a CPU each, so that the fault tests can have pools of their own next to the
module's pool. Ray's own daemons inherit the leak check's tag: the fixture shuts Ray down and checks
that every process it started is gone before the module ends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test,ray]' to run these tests")

from conftest import leaked_processes, pid_alive, run_in_thread, wait_gone, wait_until  # noqa: E402
from juliapool.errors import ActorsLostError, PoolShutDownError, WorkerStartError  # noqa: E402
from juliapool.ray import ACTOR_DIED_EXIT_CODE, RayJuliaPool  # noqa: E402

# The module's first test also waits for Ray to start (30 to 120 s on a loaded 2-core machine);
# no test takes more than about 30 s once it runs.
pytestmark = pytest.mark.timeout(300)
HALF = 0.5  # CPUs per test actor
RAY_START_TRIES = 3
_ray_start_error: list = []  # a failed start fails the module's tests at once, not once per test


def start_ray(before: set) -> None:
    """ray.init, tried again when Ray gives up waiting for its raylet (a fixed 30 s, which a loaded
    machine can exceed); what a failed try started is killed before the next one."""
    options = dict(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="ERROR",
                   log_to_driver=False)
    # The raylet gives its agents 15 s to start by default, which a loaded 2-core machine exceeds.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "90000")
    for attempt in range(RAY_START_TRIES):
        try:
            ray.init(**options)
            return
        except BaseException as e:  # also pytest-timeout's Failed: leave nothing half started
            ray.shutdown()
            kill_started_since(before)
            if "timed out during startup" not in str(e) or attempt == RAY_START_TRIES - 1:
                raise


def kill_started_since(before: set) -> None:
    """SIGKILL the processes this run started (its tag, or below it) that `before` did not list."""
    for p in leaked_processes():
        if p["pid"] not in before:
            try:
                os.kill(p["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_gone(lambda: [p for p in leaked_processes() if p["pid"] not in before], 10)


@pytest.fixture(scope="module")
def ray_cluster():
    if _ray_start_error:
        pytest.fail(f"Ray did not start: {_ray_start_error[0]}", pytrace=False)
    before = {p["pid"] for p in leaked_processes()}
    try:
        start_ray(before)
    except BaseException as e:
        _ray_start_error.append(e)
        raise
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    left = wait_gone(lambda: [p for p in leaked_processes() if p["pid"] not in before], 30)
    assert not left, "Ray or Julia processes outlived the module:\n" + "\n".join(str(p) for p in left)


@pytest.fixture(scope="module")
def rpool(ray_cluster):
    """Two actors of one worker each, shared by the tests that leave it healthy."""
    pool = RayJuliaPool(actors=2, workers_per_actor=1, num_cpus=HALF, timeout=60)
    yield pool
    pool.shutdown()


@pytest.fixture
def fresh_pool(ray_cluster):
    """A pool of its own for a test that kills things; shut down after it."""
    pools = []

    def make(**kwargs) -> RayJuliaPool:
        pools.append(RayJuliaPool(**{"actors": 1, "workers_per_actor": 1, "num_cpus": HALF, "timeout": 60, **kwargs}))
        return pools[-1]
    yield make
    for pool in pools:
        pool.shutdown()


def every_pid(pool: RayJuliaPool) -> list:
    """Julia workers, guards and actor processes of a pool (from the actors' own stats)."""
    stats = [s for s in pool.get_stats()["per_actor"] if s]
    return [p for s in stats for p in s["worker_pids"] + [s["guard_pid"], s["pid"]]]


def incarnation(actor) -> str:
    """The actor's incarnation (new at each restart); waits while Ray restarts it. Asked in the
    actors' control group, so it never waits behind running code."""
    return ray.get(actor.ready.options(concurrency_group="control", max_task_retries=-1).remote(), timeout=60)


def back_again(actor, old: str) -> None:
    """Wait until Ray has restarted `actor` (its incarnation changed)."""
    assert wait_until(lambda: incarnation(actor) != old, 60, 0.2)


# ---- calls --------------------------------------------------------------------------------------

def test_map_keeps_order_over_all_actors(rpool):
    before = [s["calls"] for s in rpool.get_stats()["per_actor"]]
    results = rpool.map([f"println({i} * {i})" for i in range(300)])
    assert [(r.stdout, r.exit_code) for r in results] == [(f"{i * i}\n", 0) for i in range(300)]
    after = [s["calls"] for s in rpool.get_stats()["per_actor"]]
    assert all(a - b > 0 for a, b in zip(after, before)), (before, after)  # both actors served
    assert sum(after) - sum(before) == 300


def test_a_bad_snippet_in_a_map_gets_its_own_error(rpool):
    codes = [f"println({i})" for i in range(20)]
    codes[7] = 'error("bad snippet 7")'
    results = rpool.map(codes, timeout=30)
    assert results[7].exit_code == 1 and "bad snippet 7" in results[7].stderr, results[7]
    assert [r.stdout for i, r in enumerate(results) if i != 7] == [f"{i}\n" for i in range(20) if i != 7]


def test_plain_calls_share_no_state_and_time_out(rpool):
    rpool.execute("leak = 1")
    assert rpool.execute("println(isdefined(@__MODULE__, :leak))").stdout == "false\n"
    r = rpool.execute('println("partial"); flush(stdout); sleep(30)', timeout=1)
    assert (r.timed_out, r.exit_code, r.stdout) == (True, -1, "partial\n"), r


def test_session_affinity_across_ten_calls(rpool):
    a, b = rpool.session("episode-a"), rpool.session("episode-b")
    a.execute("x = 0")
    b.execute("x = 100")
    seen = set()
    for i in range(1, 11):
        ra, rb = a.execute("x += 1; println(x, ' ', getpid())"), b.execute("x += 1; println(x)")
        value, pid = ra.stdout.split()
        assert (int(value), rb.stdout, ra.worker_restarted) == (i, f"{100 + i}\n", False), (ra, rb)
        seen.add(pid)
    assert len(seen) == 1, seen  # one worker, hence one actor
    incarnations = {incarnation(s.actor) for s in (a, b)}
    assert len(incarnations) == 2  # two sessions spread over the two actors
    a.close()
    b.close()
    assert rpool.get_stats()["sessions"] == 0


def test_async_calls_and_sessions(rpool):
    async def main():
        results = await asyncio.gather(*(rpool.execute_async(f"println({i} + 1)") for i in range(20)))
        s = rpool.session("async")
        outs = [await s.execute_async(code) for code in ("y = 2", "y *= 21", "println(y)")]
        s.close()
        return results, outs
    results, outs = asyncio.run(main())
    assert [r.stdout for r in results] == [f"{i + 1}\n" for i in range(20)]
    assert outs[-1].stdout == "42\n"


def test_a_call_runs_only_after_the_driver_has_its_first_item(rpool, tmp_path):
    """What makes retries safe: Ray holds the actor's generator after the incarnation until the
    driver has taken it, so a call whose first item never reached the driver did not run."""
    from juliapool.ray import STREAM
    mark = tmp_path / "ran"
    gen = rpool.actors[0].execute.options(**STREAM).remote(f'write("{mark}", "ran"); println(7)', None)
    time.sleep(2)  # nobody takes the first item meanwhile
    assert not mark.exists()
    assert len(ray.get(next(gen))) == 32  # the incarnation (a uuid4 hex)
    assert ray.get(next(gen)).stdout == "7\n" and mark.read_text() == "ran"


# ---- faults -------------------------------------------------------------------------------------

def test_a_killed_worker_is_replaced_and_the_session_says_so(fresh_pool):
    pool = fresh_pool()
    s = pool.session("k")
    pid = int(s.execute("x = 1; print(getpid())").stdout)
    thread, box = run_in_thread(s.execute, "sleep(60)")
    assert wait_until(lambda: pool.get_stats()["busy"] == 1, 30)
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert box["result"].exit_code == -9, box
    after = s.execute("println(@isdefined(x))")
    assert (after.stdout, after.worker_restarted) == ("false\n", True), after
    assert not pid_alive(pid)


def test_a_killed_actor_fails_its_running_call_and_retries_its_queued_one(fresh_pool):
    pool = fresh_pool(actors=2)
    codes = [f'println("start {i}"); sleep(3); println("done {i}")' for i in range(4)]
    calls = [run_in_thread(pool.execute, code) for code in codes]
    # 4 calls on 2 one-worker actors: each runs one and holds one in Ray's queue.
    assert wait_until(lambda: pool.get_stats()["busy"] == 2 and pool.get_stats()["inflight"] == 4, 60)
    victim = pool.actors[0]
    old_pids = ray.get(victim.worker_pids.options(concurrency_group="control").remote())
    ray.kill(victim, no_restart=False)
    for thread, _ in calls:
        thread.join(60)
    results = [box["result"] for _, box in calls]
    died = [r for r in results if r.exit_code == ACTOR_DIED_EXIT_CODE]
    done = [r for r in results if r.exit_code == 0]
    assert len(died) == 1 and len(done) == 3, results  # the queued call ran elsewhere, once
    assert died[0].stdout == "" and "the Ray actor running this call died" in died[0].stderr
    assert len({r.stdout for r in done} & {f"start {i}\ndone {i}\n" for i in range(4)}) == 3, done
    assert not wait_gone(lambda: [p for p in old_pids if pid_alive(p)], 20)
    assert [r.stdout for r in pool.map(["println(1)"] * 4)] == ["1\n"] * 4  # the actor is back


def test_a_session_whose_actor_died_says_its_state_is_gone(fresh_pool):
    pool = fresh_pool()
    s = pool.session("episode-17")
    s.execute("x = 5")
    actor = s.actor
    old = incarnation(actor)
    ray.kill(actor, no_restart=False)  # while idle
    back_again(actor, old)
    r = s.execute("println(@isdefined(x))")
    assert (r.stdout, r.worker_restarted, r.exit_code) == ("false\n", True, 0), r
    assert "earlier state is gone" in r.stderr
    s.execute("x = 6")
    thread, box = run_in_thread(s.execute, "sleep(60)")  # now while it runs
    assert wait_until(lambda: pool.get_stats()["busy"] == 1, 30)
    ray.kill(actor, no_restart=False)
    thread.join(60)
    died = box["result"]
    assert died.exit_code == ACTOR_DIED_EXIT_CODE and "the session's state" in died.stderr, died
    r = s.execute("println(@isdefined(x))")
    assert (r.stdout, r.worker_restarted) == ("false\n", True), r
    assert s.execute("x = 1; println(x)").worker_restarted is False


def test_a_session_moves_to_another_actor_when_its_own_is_dead_for_good(fresh_pool):
    pool = fresh_pool(actors=2)
    s = pool.session("moving")
    s.execute("x = 1")
    first = incarnation(s.actor)
    actor_pid = ray.get(s.actor.stats.options(concurrency_group="control").remote())["pid"]
    ray.kill(s.actor, no_restart=True)
    assert wait_until(lambda: not pid_alive(actor_pid), 30)  # else the call could still reach it
    r = s.execute("println(@isdefined(x))")
    assert (r.stdout, r.worker_restarted) == ("false\n", True), r
    assert incarnation(s.actor) != first
    assert pool.get_stats()["dead_actors"] == 1
    assert [r.stdout for r in pool.map(["println(3)"] * 4)] == ["3\n"] * 4


def test_actor_death_leaves_no_julia_process(fresh_pool):
    pool = fresh_pool(workers_per_actor=2, max_restarts=0)  # so this death is for good
    thread, box = run_in_thread(pool.execute, "while true end")  # deaf to interrupts
    assert wait_until(lambda: pool.get_stats()["busy"] == 1, 30)
    pids = every_pid(pool)
    assert len(pids) == 4, pids  # two workers (one busy, one idle), the guard, the actor
    ray.kill(pool.actors[0], no_restart=False)
    thread.join(30)
    assert box["result"].exit_code == ACTOR_DIED_EXIT_CODE, box
    assert not wait_gone(lambda: [p for p in pids if pid_alive(p)], 20)
    with pytest.raises(ActorsLostError, match="create a new RayJuliaPool"):
        pool.execute("println(1)")


def test_shutdown_leaves_no_julia_process(fresh_pool):
    pool = fresh_pool(actors=None)  # one per node: this Ray has one
    assert len(pool.actors) == 1
    s = pool.session("open")
    s.execute("z = 1")
    thread, _ = run_in_thread(pool.execute, "sleep(60)")
    assert wait_until(lambda: pool.get_stats()["busy"] == 1, 30)
    pids = every_pid(pool)
    pool.shutdown()
    thread.join(30)
    assert not wait_gone(lambda: [p for p in pids if pid_alive(p)], 20)
    with pytest.raises(PoolShutDownError):
        pool.execute("println(1)")
    pool.shutdown()  # idempotent


DRIVER = textwrap.dedent("""
    import sys, ray
    from juliapool.ray import RayJuliaPool
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    pool = RayJuliaPool(actors=1, workers_per_actor=1, num_cpus=0.5)
    stats = pool.get_stats()["per_actor"][0]
    print(*stats["worker_pids"], stats["guard_pid"], stats["pid"], flush=True)
    pool.execute("while true end")
""")


def test_a_sigkilled_driver_leaves_no_julia_process(ray_cluster):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, ray_cluster], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(pids) == 3 and all(pid_alive(p) for p in pids), pids
    finally:
        driver.kill()
        driver.wait()
        driver.stdout.close()
    # Ray ends the actors of a dead driver; their guards end the Julia workers.
    assert not wait_gone(lambda: [p for p in pids if pid_alive(p)], 30)


# ---- bad input ----------------------------------------------------------------------------------

def test_bad_arguments_say_what_to_do(ray_cluster):
    with pytest.raises(TypeError, match="workers_per_actor"):
        RayJuliaPool(actors=1, size=2)
    with pytest.raises(ValueError, match="at least 1"):
        RayJuliaPool(actors=0)
    with pytest.raises(WorkerStartError, match="lower actors, workers_per_actor or num_cpus"):
        RayJuliaPool(actors=1, workers_per_actor=1, num_cpus=64, start_timeout=3)
    with pytest.raises(ValueError, match="no live Ray node has 64 CPUs"):
        RayJuliaPool(actors=None, num_cpus=64)


def test_a_julia_that_cannot_start_is_a_start_error(ray_cluster):
    with pytest.raises(WorkerStartError, match="could not start its Julia workers"):
        RayJuliaPool(actors=1, workers_per_actor=1, num_cpus=HALF, julia_path="/nonexistent/julia")


def test_juliapool_itself_never_imports_ray():
    code = "import sys, juliapool, juliapool.ray_actor, juliapool.reaper; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "False\n"
