"""When the process that owns a pool is SIGKILLed (its atexit hook never runs), no Julia worker may
live on: an idle worker ends by itself (its request pipe reaches end of file), and the ReaperGuard
(juliapool/reaper.py) kills one that is running code. No Ray here: a plain Python owner process."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import pid_alive, wait_gone, wait_until
from juliapool.reaper import guard

OWNER = textwrap.dedent("""
    import sys, threading, time
    from juliapool import JuliaProcessPool
    from juliapool.reaper import ReaperGuard
    use_guard, busy = sys.argv[1] == "guard", sys.argv[2] == "busy"
    pool = JuliaProcessPool(size=2 if busy else 1, timeout=600)
    reaper = ReaperGuard(pool.worker_pids) if use_guard else None
    if busy:
        threading.Thread(target=pool.execute, args=("println(\\"looping\\"); flush(stdout); while true end",),
                         daemon=True).start()
        while pool.get_stats()["busy"] < 1:
            time.sleep(0.05)
    if reaper:
        reaper.update()
    print(" ".join(map(str, pool.worker_pids())), reaper.pid if reaper else 0, flush=True)
    time.sleep(600)
""")


def start_owner(mode: str, work: str):
    proc = subprocess.Popen([sys.executable, "-c", OWNER, mode, work], stdout=subprocess.PIPE, text=True)
    *workers, guard_pid = (int(p) for p in proc.stdout.readline().split())
    assert workers and all(pid_alive(p) for p in workers), workers
    return proc, workers, guard_pid


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


@pytest.mark.timeout(90)
def test_an_idle_worker_ends_by_itself_when_its_owner_is_sigkilled():
    proc, workers, _ = start_owner("no-guard", "idle")
    sigkill(proc)
    assert not wait_gone(lambda: [p for p in workers if pid_alive(p)], 20), "the idle worker outlived its owner"


@pytest.mark.timeout(90)
def test_the_guard_kills_a_busy_worker_when_its_owner_is_sigkilled():
    proc, workers, guard_pid = start_owner("guard", "busy")
    assert len(workers) == 2 and pid_alive(guard_pid)
    sigkill(proc)
    left = wait_gone(lambda: [p for p in workers + [guard_pid] if pid_alive(p)], 20)
    assert not left, f"still alive after the owner's SIGKILL: {left} (workers {workers}, guard {guard_pid})"


@pytest.mark.timeout(30)
def test_guard_kills_the_groups_of_its_last_line_at_end_of_file():
    sleepers = [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(3)]
    try:
        pids = [p.pid for p in sleepers]
        # The last line wins: the first sleeper had stopped (left the list), the others had not.
        killed = guard(io.StringIO(f"{pids[0]}\n{pids[1]} {pids[2]}\n"))
        assert killed == pids[1:]
        assert wait_until(lambda: all(p.poll() is not None for p in sleepers[1:]), 10)
        assert sleepers[0].poll() is None
        assert guard(io.StringIO(f"{pids[0]}\n\n")) == []  # a clean shutdown sends an empty line
        assert sleepers[0].poll() is None
    finally:
        for p in sleepers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
