"""Sessions (`pool.session(key)`): state that persists across calls, on one worker and one module;
isolation from other sessions and plain calls; and what a session says when its worker dies."""

from __future__ import annotations

import os
import re
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

import pytest

from conftest import Lines, run_in_thread, wait_for_workers, wait_until
from juliapool import Session


def pid_and_module(session: Session) -> tuple:
    r = session.execute("println(getpid()); println(@__MODULE__)")
    assert r.exit_code == 0, r
    pid, module = r.stdout.split()
    return int(pid), module


def test_session_keeps_state_on_the_same_worker_and_module(shared_pool):
    with shared_pool.session("keeps-state") as session:
        assert isinstance(session, Session)
        first = pid_and_module(session)
        r = session.execute("x = 1; f(y) = y + x; struct S; v; end; const LIMIT = 10")
        assert (r.stdout, r.stderr, r.exit_code) == ("", "", 0), r
        for i in range(2, 7):
            shared_pool.execute('println("a plain call in between")')
            r = session.execute(f"x += 1; println(x, \" \", f(100), \" \", S({i}), \" \", LIMIT)")
            assert (r.stdout, r.exit_code, r.worker_restarted) == (f"{i} {100 + i} S({i}) 10\n", 0, False), r
            assert pid_and_module(session) == first, "a session stays on one worker and one module"


def test_sessions_are_isolated_from_each_other_and_from_plain_calls(shared_pool):
    with shared_pool.session("one") as one, shared_pool.session("two") as two:
        one.execute('who = "one"')
        two.execute('who = "two"')
        assert one.execute("println(who)").stdout == "one\n"
        assert two.execute("println(who)").stdout == "two\n"
        for _ in range(shared_pool.size + 1):
            r = shared_pool.execute("println(isdefined(@__MODULE__, :who))")
            assert r.stdout == "false\n"


def test_sessions_without_a_key_are_distinct(shared_pool):
    a, b = shared_pool.session(), shared_pool.session()
    try:
        assert a.key != b.key
        a.execute("mine = 1")
        assert b.execute("println(isdefined(@__MODULE__, :mine))").stdout == "false\n"
    finally:
        a.close()
        b.close()


def test_closing_a_session_forgets_its_state(shared_pool):
    session = shared_pool.session("closing")
    session.execute("forgotten = 1")
    session.close()
    again = shared_pool.session("closing")
    try:
        assert again.execute("println(isdefined(@__MODULE__, :forgotten))").stdout == "false\n"
    finally:
        again.close()


def test_session_runs_calls_from_two_threads_one_at_a_time(shared_pool):
    with shared_pool.session("shared-counter") as session:
        session.execute("n = 0")
        errors = []

        def bump() -> None:
            for _ in range(25):
                r = session.execute("local_copy = n; yield(); global n = local_copy + 1")
                if r.exit_code != 0:
                    errors.append(r)

        threads = [threading.Thread(target=bump, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and not any(t.is_alive() for t in threads)
        assert session.execute("println(n)").stdout == "50\n"


def test_session_error_keeps_state(shared_pool):
    with shared_pool.session("error-keeps") as session:
        session.execute("kept = 5")
        r = session.execute('error("Test error")')
        assert r.exit_code == 1 and r.stderr.splitlines()[0] == "ERROR: Test error"
        assert not r.worker_restarted
        assert session.execute("println(kept)").stdout == "5\n"


# ---- when the session's worker dies ------------------------------------------------------------------

@contextmanager
def session_on(fault_pool, key: str) -> Iterator[Session]:
    """A session on the whole fault pool; closed after, and the pool whole again."""
    wait_for_workers(fault_pool)
    session = fault_pool.session(key)
    try:
        yield session
    finally:
        session.close()
    wait_for_workers(fault_pool)


def assert_goes_on_fresh(session: Session, old_pid: int) -> None:
    """After its worker died: the next call says so, runs on a new worker with fresh state, and
    the calls after it run normally there."""
    new_pid = assert_restarted(session.execute("println(isdefined(@__MODULE__, :x)); println(getpid())"), old_pid)
    assert_continues(session, new_pid)


def assert_restarted(r, old_pid: int) -> int:
    """The first result after a death: says so, runs on a new worker, with fresh state."""
    assert r.worker_restarted, r
    assert r.exit_code == 0, r
    assert "worker" in r.stderr and "state" in r.stderr, f"a note about the lost state: {r.stderr!r}"
    defined, pid = r.stdout.split()
    assert defined == "false", "earlier state is gone"
    assert int(pid) != old_pid
    return int(pid)


def assert_continues(session: Session, pid: int) -> None:
    r = session.execute("x = 10")
    assert (r.exit_code, r.worker_restarted, r.stderr) == (0, False, ""), r
    r = session.execute("println(x + 1, \" \", getpid())")
    assert (r.stdout, r.worker_restarted) == (f"11 {pid}\n", False), r


@pytest.mark.timeout(150)
def test_session_continues_after_its_worker_died_while_idle(fault_pool):
    with session_on(fault_pool, "idle-death") as session:
        pid = int(session.execute("x = 1; println(getpid())").stdout)
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: pid not in fault_pool.worker_pids(), 10)
        assert_goes_on_fresh(session, pid)


@pytest.mark.timeout(150)
def test_session_continues_after_its_worker_was_killed_mid_call(fault_pool):
    with session_on(fault_pool, "mid-call-death") as session:
        session.execute("x = 1")
        lines = Lines()
        thread, box = run_in_thread(session.execute, 'println("PID ", getpid()); sleep(60)', on_output=lines)
        assert wait_until(lambda: re.search(r"PID (\d+)\n", lines.text["stdout"]), 30)
        pid = int(re.search(r"PID (\d+)\n", lines.text["stdout"]).group(1))
        os.kill(pid, signal.SIGKILL)
        thread.join(15)
        assert not thread.is_alive(), "the call on the killed worker must return"
        died = box["result"]
        assert died.exit_code == -9, died
        assert "state" in died.stderr, f"the result says the session's state is lost: {died.stderr!r}"
        assert_goes_on_fresh(session, pid)


@pytest.mark.timeout(150)
def test_session_continues_after_a_stuck_call_was_killed(fault_pool):
    with session_on(fault_pool, "stuck") as session:
        pid = int(session.execute("x = 1; println(getpid())").stdout)
        stuck = session.execute("while true end", timeout=1)
        assert stuck.timed_out and "Execution timed out after 1 seconds" in stuck.stderr, stuck
        assert_goes_on_fresh(session, pid)
