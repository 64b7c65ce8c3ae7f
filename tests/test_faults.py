"""Faults injected on purpose into real Julia workers: timeouts, interrupts, kill -9 (mid-call and idle),
exit(n), a segfault, code that ignores interrupts, children left behind. Every one must end in a clear
result, never a hang, and the pool must keep serving.

Tests that kill workers use `fault_pool` (size 2, replaces its dead workers); tests that only time out
or interrupt use `shared_pool`, whose workers must survive them.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from conftest import (Lines, pid_alive, proc_stat, run_in_thread, wait_for_workers, wait_gone, wait_until,
                      zombie_children)

SLEEP_CODE = 'println("PID ", getpid()); sleep(60)'


def wait_for_pid(lines: Lines, timeout: float = 30.0) -> int:
    assert wait_until(lambda: re.search(r"PID (\d+)\n", lines.text["stdout"]), timeout), lines.text
    return int(re.search(r"PID (\d+)\n", lines.text["stdout"]).group(1))


# ---- timeouts and interrupts -------------------------------------------------------------------------

def test_timeout_interrupts_the_code_and_keeps_the_worker_and_session_state(shared_pool):
    session = shared_pool.session("timeout-survivor")
    try:
        pid = int(session.execute("kept = 7; println(getpid())").stdout)
        start = time.monotonic()
        r = session.execute('println("before"); sleep(10)', timeout=1)
        elapsed = time.monotonic() - start
        assert r.timed_out and r.exit_code == -1, r
        assert "Execution timed out after 1 seconds" in r.stderr
        assert r.stdout == "before\n", "output printed before the timeout is kept"
        assert elapsed < 6, f"a timeout of 1 s took {elapsed:.1f} s"
        after = session.execute("println(kept, \" \", getpid())")
        assert (after.stdout, after.exit_code, after.worker_restarted) == (f"7 {pid}\n", 0, False), after
        assert pid in shared_pool.worker_pids()
    finally:
        session.close()


def test_timeout_of_a_plain_call_keeps_every_worker(shared_pool):
    before = sorted(shared_pool.worker_pids())
    start = time.monotonic()
    r = shared_pool.execute('println(stderr, "partial"); sleep(10); println("never")', timeout=1)
    assert time.monotonic() - start < 6
    assert r.timed_out and r.stdout == "" and r.stderr.startswith("partial\n"), r
    assert r.stderr.rstrip().endswith("Execution timed out after 1 seconds"), r.stderr
    assert sorted(shared_pool.worker_pids()) == before
    for _ in range(shared_pool.size + 1):
        assert shared_pool.execute('println("ok")').stdout == "ok\n"


@pytest.mark.timeout(150)
def test_code_that_ignores_interrupts_is_killed_after_the_grace_period(fault_pool):
    before = set(wait_for_workers(fault_pool))
    start = time.monotonic()
    reply = fault_pool.run("while true end", timeout=1)
    assert time.monotonic() - start < 15, "timeout + grace period, then SIGKILL"
    assert reply.timed_out and reply.worker_died, reply
    assert "Execution timed out after 1 seconds" in reply.stderr
    gone = before - set(fault_pool.worker_pids())
    assert len(gone) == 1, "exactly the stuck worker is replaced"
    assert not wait_gone(lambda: [p for p in gone if pid_alive(p)], 10)
    assert fault_pool.execute('println("still serving")').stdout == "still serving\n"
    after = set(wait_for_workers(fault_pool))
    assert not gone & after


def test_session_interrupt_from_another_thread_stops_sleep_and_keeps_variables(shared_pool):
    session = shared_pool.session("interrupted")
    try:
        assert session.interrupt() is False, "nothing runs: nothing to interrupt"
        pid = int(session.execute("kept = 41; println(getpid())").stdout)
        lines = Lines()
        thread, box = run_in_thread(session.execute, 'println("sleeping"); sleep(30); println("woke")', on_output=lines)
        assert lines.wait_for("sleeping\n")
        start = time.monotonic()
        assert session.interrupt() is True
        thread.join(15)
        assert not thread.is_alive(), "the interrupted call did not return"
        assert time.monotonic() - start < 10
        r = box["result"]
        assert r.exit_code == 1 and "InterruptException" in r.stderr and "woke" not in r.stdout, r
        assert not r.timed_out
        after = session.execute("println(kept + 1, \" \", getpid())")
        assert (after.stdout, after.worker_restarted) == (f"42 {pid}\n", False), after
    finally:
        session.close()


# ---- deaths ------------------------------------------------------------------------------------------

@pytest.mark.timeout(150)
def test_kill_9_mid_call_gives_a_clear_result(fault_pool):
    wait_for_workers(fault_pool)
    lines = Lines()
    start = time.monotonic()
    thread, box = run_in_thread(fault_pool.run, SLEEP_CODE, on_output=lines)
    pid = wait_for_pid(lines)
    assert pid in fault_pool.worker_pids()
    os.kill(pid, signal.SIGKILL)
    thread.join(15)
    assert not thread.is_alive(), "a call on a killed worker must not hang"
    assert time.monotonic() - start < 20
    reply = box["result"]
    assert reply.worker_died and reply.exit_code == -9, reply
    assert reply.to_result().exit_code == -9
    assert reply.stdout == f"PID {pid}\n"
    assert "signal 9" in reply.evalue or "SIGKILL" in reply.evalue, reply.evalue
    assert fault_pool.execute('println("next")').stdout == "next\n"
    assert pid not in wait_for_workers(fault_pool)


@pytest.mark.timeout(150)
def test_kill_9_of_an_idle_worker_is_noticed_and_replaced(fault_pool):
    victim = wait_for_workers(fault_pool)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: victim not in fault_pool.worker_pids(), 10), "the dead idle worker is noticed"
    pids = wait_for_workers(fault_pool)
    assert victim not in pids and len(pids) == fault_pool.size
    for _ in range(2 * fault_pool.size):
        r = fault_pool.execute("println(getpid())")
        assert r.exit_code == 0 and int(r.stdout) in pids, r


@pytest.mark.timeout(150)
def test_exit_n_gives_exit_code_n(fault_pool):
    for n in (3, 0):
        wait_for_workers(fault_pool)
        r = fault_pool.execute(f'println("bye"); exit({n})')
        assert (r.stdout, r.exit_code) == ("bye\n", n), r
    assert fault_pool.execute('println("next")').stdout == "next\n"


@pytest.mark.timeout(150)
def test_segfault_gives_a_negative_exit_code_and_the_pool_continues(fault_pool):
    wait_for_workers(fault_pool)
    reply = fault_pool.run('println("about to crash"); unsafe_load(Ptr{Int}(0))')
    assert reply.worker_died and reply.exit_code == -11, reply
    assert reply.stdout == "about to crash\n"
    assert "signal (11)" in reply.stderr or "Segmentation fault" in reply.stderr, reply.stderr
    assert fault_pool.execute('println("next")').stdout == "next\n"
    wait_for_workers(fault_pool)


def test_workers_run_in_their_own_process_group(shared_pool):
    mine = os.getpgid(0)
    for pid in shared_pool.worker_pids():
        assert os.getpgid(pid) == pid != mine
        assert os.getsid(pid) == pid


@pytest.mark.timeout(150)
def test_child_started_by_the_code_dies_with_its_worker(fault_pool):
    wait_for_workers(fault_pool)
    r = fault_pool.execute('p = run(`sleep 1000`, wait=false); println(getpid(p), " ", getpid())')
    child, worker = map(int, r.stdout.split())
    assert pid_alive(child) and proc_stat(child)["pgid"] == worker, "the child is in its worker's group"
    os.kill(worker, signal.SIGKILL)
    assert not wait_gone(lambda: [p for p in (worker, child) if pid_alive(p)], 15), \
        "the child must not outlive its killed worker"
    wait_for_workers(fault_pool)


@pytest.mark.timeout(150)
def test_child_started_by_the_code_dies_when_its_call_is_killed(fault_pool):
    wait_for_workers(fault_pool)
    start = time.monotonic()
    reply = fault_pool.run('p = run(`sleep 1000`, wait=false); println(getpid(p)); while true end', timeout=1)
    assert time.monotonic() - start < 15 and reply.worker_died, reply
    child = int(reply.stdout)
    assert not wait_gone(lambda: [child] if pid_alive(child) else [], 10)
    wait_for_workers(fault_pool)


@pytest.mark.timeout(60)
def test_no_zombie_children_are_left(fault_pool):
    wait_for_workers(fault_pool)
    assert not wait_gone(zombie_children, 20), "every ended worker is reaped"
