"""One `Worker` on its own, on real Julia: which step of the stop ladder ended its process
(`ended_by`: "quit", "terminate", "kill", or "exited" when it ended by itself), and a start that
cannot even run Julia. The ladder's steps get small timeouts: which step ends the process is tested,
not how patient each step is.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from conftest import pid_alive, wait_until
from juliapool.errors import WorkerStartError
from juliapool.execution import Limits
from juliapool.recipe import BASE_FLAGS, StartRecipe
from juliapool.result import EXITED, NOT_INTERRUPTIBLE, SHUT_DOWN, WorkerEnd
from juliapool.worker import Worker

pytestmark = pytest.mark.timeout(120)

STEP = 0.5  # seconds each step of the ladder waits

# Julia blocks SIGTERM in every thread and a listener thread takes it with sigwait, so SIG_IGN alone
# does not help (Linux never discards a blocked signal). Unblocking it on the main thread (the one
# running this code, whose mask the kernel checks for a signal sent to the process) makes SIG_IGN
# discard it. Linux's sigset_t: bit n-1 of the first word is signal n; SIG_UNBLOCK = 1.
IGNORE_SIGTERM = ("mask = zeros(UInt64, 16); mask[1] = UInt64(1) << (15 - 1); "
                  "ccall(:pthread_sigmask, Cint, (Cint, Ptr{UInt64}, Ptr{Cvoid}), 1, mask, C_NULL); "
                  "ccall(:signal, Ptr{Cvoid}, (Cint, Ptr{Cvoid}), 15, Ptr{Cvoid}(1)); ")


@pytest.fixture
def make_worker(julia_path: str) -> Iterator[Callable[[], Worker]]:
    """Started workers; each is stopped (idempotent) when the test ends, whatever it did."""
    made: List[Worker] = []

    def make() -> Worker:
        worker = StartRecipe(julia_path, list(BASE_FLAGS), dict(os.environ)).new_worker("ladder-test")
        made.append(worker)
        worker.start(120)
        return worker

    yield make
    for worker in made:
        worker.stop(STEP)


def jl_path(path: Path) -> str:
    return repr(str(path)).replace("'", '"')


def block_the_worker(worker: Worker, tmp_path: Path, ignore_sigterm: bool) -> None:
    """Leave the idle worker stuck in C code (a task's ccall to sleep), so it never reads a request."""
    go, blocked = tmp_path / "go", tmp_path / "blocked"
    code = ((IGNORE_SIGTERM if ignore_sigterm else "")
            + f"@async (while !isfile({jl_path(go)}) sleep(0.01) end; touch({jl_path(blocked)}); "
            "ccall(:sleep, Cuint, (Cuint,), 1000))")
    reply = worker.execute(code, limits=Limits(timeout=60))
    assert reply.status == "ok", reply
    go.touch()  # only now: the reply has come, the task may block the process
    assert wait_until(blocked.exists, 30), "the task did not start"


def test_a_healthy_idle_worker_ends_by_quit(make_worker):
    worker = make_worker()
    pid = worker.pid
    assert worker.execute('println("up")').stdout == "up\n"
    assert worker.stop(STEP, SHUT_DOWN) == "quit"  # as pool.shutdown() stops each worker
    assert (worker.ended_by, worker.poll(), worker.alive) == ("quit", 0, False)
    assert not pid_alive(pid)
    assert worker.stop(STEP) == "quit", "stopping again changes nothing"


def test_a_worker_that_does_not_read_the_quit_request_ends_by_sigterm(make_worker, tmp_path):
    worker = make_worker()
    block_the_worker(worker, tmp_path, ignore_sigterm=False)
    assert worker.stop(STEP) == "terminate"
    assert worker.poll() in (128 + 15, -15), worker.poll()  # Julia's exit on SIGTERM, or the signal itself


def test_a_worker_that_ignores_quit_and_sigterm_ends_by_kill(make_worker, tmp_path):
    worker = make_worker()
    block_the_worker(worker, tmp_path, ignore_sigterm=True)
    assert worker.stop(STEP) == "kill"
    assert worker.poll() == -signal.SIGKILL


def test_a_worker_that_exited_by_itself_reports_exited(make_worker):
    worker = make_worker()
    reply = worker.execute("exit(3)")
    assert reply.worker_end == WorkerEnd(3, EXITED), reply
    assert worker.ended_by == "exited"
    assert worker.stop(STEP) == "exited"


def test_a_worker_killed_from_outside_while_idle_reports_exited(make_worker):
    worker = make_worker()
    os.kill(worker.pid, signal.SIGKILL)  # not juliapool's doing: to juliapool it ended by itself
    assert wait_until(lambda: worker.poll() is not None, 30)
    assert worker.stop(STEP) == "exited"
    assert worker.poll() == -signal.SIGKILL


def test_collect_gives_what_a_finished_call_left_back_to_the_system(make_worker):
    """The COLLECT request (PROTOCOL.md, `G`): 200 MB a call made and dropped leave the worker's
    resident memory (if the collection between requests has not done it already); the worker still
    serves calls afterwards."""
    worker = make_worker()
    start = worker.rss_bytes()
    assert worker.execute("let x = ones(25 * 10^6); println(sum(x)); end").stdout == "2.5e7\n"
    live = worker.collect()
    assert worker.rss_bytes() - start < 50 * 2**20
    assert 0 < live < 100 * 2**20
    assert worker.execute("println(1)").stdout == "1\n"


def test_what_a_call_allocated_is_collected_while_the_worker_waits(make_worker):
    """A call that spent most of Julia's allocation budget leaves the collection it would have
    caused to the worker's idle time, not to the next call."""
    worker = make_worker()
    known = "isdefined(Base, :GC_Num) && hasfield(Base.GC_Num, :allocd) && hasfield(Base.GC_Num, :collect)"
    if worker.execute(f"print({known})").stdout != "true":   # as JuliaPoolWorker.GC_BUDGET_KNOWN
        pytest.skip("this Julia does not show its collection budget (Base.gc_num().collect): the worker leaves collecting to Julia")
    counters = 'let n = Base.gc_num(); print(n.allocd, " ", n.collect, " ", n.pause) end'
    spent, budget, pauses = map(int, worker.execute(counters).stdout.split())
    pieces = int((budget - spent) * 0.7) // 1100     # 1 KiB arrays: more than half the budget, not all
    in_call = worker.execute(f"let v = [zeros(UInt8, 1024) for _ in 1:{pieces}]; end; {counters}").stdout.split()
    assert int(in_call[0]) > budget // 2 and int(in_call[2]) == pauses   # spent, and not collected yet
    time.sleep(1)
    spent, _, after = map(int, worker.execute(counters).stdout.split())
    assert spent < budget // 4 and after == pauses + 1


def test_a_worker_that_dies_in_the_warm_up_is_a_start_error(make_worker, julia_path):
    """Warm-up requests other than code (a drop, completion, collection) fail with WorkerDiedError:
    the recipe says WorkerStartError, which pools and the server handle (a start that failed)."""
    worker = make_worker()
    os.kill(worker.pid, signal.SIGKILL)
    assert wait_until(lambda: worker.poll() is not None, 30)
    recipe = StartRecipe(julia_path, list(BASE_FLAGS), dict(os.environ))
    with pytest.raises(WorkerStartError, match="died while warming up"):
        recipe.prepare(worker, warm=False, first_cell=True)


def test_code_that_ignores_the_interrupt_ends_by_kill(make_worker):
    worker = make_worker()
    reply = worker.execute("while true end", limits=Limits(timeout=STEP, grace=STEP))
    assert reply.timed_out and reply.worker_end == WorkerEnd(-signal.SIGKILL, NOT_INTERRUPTIBLE), reply
    assert worker.ended_by == "kill"
    assert worker.stop(STEP) == "kill"


# ---- Julia that cannot be run --------------------------------------------------------------------

# Run in a fresh interpreter: no other thread (a session-wide pool replacing a worker) opens
# descriptors while they are counted.
START_FAILS = """
import os, sys
from juliapool.errors import WorkerStartError
from juliapool.paths import worker_script
from juliapool.worker import Worker

worker = Worker(sys.argv[1], str(worker_script()), [], None, "cannot-run")
before = sorted(os.listdir("/proc/self/fd"), key=int)
try:
    worker.start(10)
except WorkerStartError as e:
    print("raised:", e)
else:
    print("started")
    worker.stop(1)
after = sorted(os.listdir("/proc/self/fd"), key=int)
print("fds before:", before)
print("fds after:", after)
"""


@pytest.mark.parametrize("what", ["not-executable", "directory", "missing"])
def test_julia_that_cannot_be_run_raises_worker_start_error_and_leaves_no_descriptor(tmp_path, what):
    julia = tmp_path / "julia"
    if what == "not-executable":
        julia.write_text("#!/bin/sh\nexit 0\n")
        julia.chmod(stat.S_IRUSR | stat.S_IWUSR)
    elif what == "directory":
        julia.mkdir()
    out = subprocess.run([sys.executable, "-c", START_FAILS, str(julia)], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"raised: Failed to create worker: cannot run {str(julia)!r}"), out.stdout
    before, after = lines[-2].split(":", 1)[1], lines[-1].split(":", 1)[1]
    assert before == after, out.stdout
