"""What every juliapool test shares: Julia, two session-wide pools, process helpers, and a leak check.

Fixtures
    julia_path   the Julia executable the library finds (the suite needs one; nothing is skipped).
    shared_pool  a JuliaProcessPool(size=4) for the whole run. Tests must leave it healthy: no kills,
                 no exit(), no segfaults, no code that ignores interrupts, no long-held sessions.
    fault_pool   a JuliaProcessPool(size=2) that tests may damage on purpose (kill -9, exit(n), segfault,
                 endless loops). It replaces dead workers by itself; `wait_for_workers` waits for that.

The leak check (autouse, whole run): every process the tests start inherits RUN_TAG_VAR, and stays a
descendant of this process unless it leaks. After the last fixture is torn down, the check lists /proc
and fails the run if any such process is still alive (zombies count as ended) after a grace period.
A leaked worker whose parent died is adopted by init but keeps the tag, so it is still found; matching
on "julia/worker.jl" in the command line alone would also count workers of a test run or a benchmark
that someone else runs on the same machine at the same time.

The same check runs after each test module, once the module's own fixtures are torn down. The two
session-wide pools legitimately outlive a module: their workers carry SHARED_POOL_VAR (set to the
pool's name in the pool's env, so replacements and anything a worker spawns carry it too). Of those,
only what the pool accounts for is allowed: its current workers (worker_pids()) and as many other
worker processes as it says it is starting. Anything else, a child a test left running in a shared
worker included, is the module's leak. Leaked processes are killed after the failure is reported, so
that the next module is judged on its own.

Helpers for the tests (import them: `from conftest import wait_until`) live at the bottom.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from typing import Callable, Dict, List, Optional

import pytest

from juliapool import JuliaProcessPool
from juliapool.discovery import find_julia

RUN_TAG_VAR = "JULIAPOOL_TEST_RUN"
RUN_TAG = uuid.uuid4().hex
# Set at import, before any fixture or test starts a process: every child inherits it.
os.environ[RUN_TAG_VAR] = RUN_TAG

LEAK_GRACE = 15.0  # seconds for stop ladders that are still climbing (2 s per step) to finish
SHARED_POOL_VAR = "JULIAPOOL_TEST_SHARED_POOL"  # the session-wide pool a process belongs to
_session_pools: Dict[str, JuliaProcessPool] = {}  # name -> pool, once its fixture made it


# ---- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _no_leaked_processes():
    """Fail the run if a process started by the tests (Julia workers, their children) outlives it.

    Autouse and session-scoped, so it is set up first and torn down last, after every other fixture
    has shut its pools down."""
    yield
    _fail_if_left(wait_gone(lambda: leaked_processes(), LEAK_GRACE), "the tests")


@pytest.fixture(scope="module", autouse=True)
def _no_processes_left_by_the_module(request):
    """Fail the module if a process it started outlives it (but what the session-wide pools own).

    Autouse and module-scoped: set up before the module's other module-scoped fixtures (and the
    function- and class-scoped ones), so torn down after them."""
    yield
    _fail_if_left(wait_gone(_left_by_the_module, LEAK_GRACE), request.module.__name__)


def _fail_if_left(left: List[Dict], who: str) -> None:
    if not left:
        return
    lines = "\n".join(f"  pid {p['pid']} (parent {p['ppid']}): {p['cmdline']}" for p in left)
    for p in left:  # reported once: later checks judge only what comes after
        try:
            os.kill(p["pid"], signal.SIGKILL)
        except OSError:
            pass
    pytest.fail(f"{len(left)} process(es) started by {who} outlived it:\n{lines}", pytrace=False)


def _left_by_the_module() -> List[Dict]:
    """Live processes of this run that no session-wide pool accounts for."""
    by_pool: Dict[Optional[str], List[Dict]] = {}
    for p in leaked_processes():
        owner = next((name for name in _session_pools if has_env(p["pid"], SHARED_POOL_VAR, name)), None)
        by_pool.setdefault(owner, []).append(p)
    left = by_pool.pop(None, [])
    for name, procs in by_pool.items():
        left += _unaccounted(_session_pools[name], procs)
    return left


def _unaccounted(pool: JuliaProcessPool, procs: List[Dict]) -> List[Dict]:
    """Of the live processes carrying `pool`'s tag (listed before this call), those it does not own:
    all of them once it is shut down; else all but its workers and, while it says workers are
    starting, up to that many other worker processes (started, not yet in worker_pids())."""
    stats = pool.get_stats()  # before worker_pids(): a start ending in between is counted twice, not missed
    workers = set(pool.worker_pids())
    if stats["closed"]:
        return procs
    others = [p for p in procs if p["pid"] not in workers]
    starting = [p for p in others if p["pid"] == p["pgid"] and "worker.jl" in p["cmdline"]]
    if len(starting) <= stats["starting"]:
        others = [p for p in others if p not in starting]
    return others


@pytest.fixture(scope="session")
def julia_path() -> str:
    return find_julia()


@pytest.fixture(scope="session")
def shared_pool():
    """A healthy pool of 4 shared by every test that does not damage it."""
    pool = _session_pool("shared_pool", size=4, timeout=60)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="session")
def fault_pool():
    """A pool of 2 that tests may damage; each test that needs it whole calls wait_for_workers."""
    pool = _session_pool("fault_pool", size=2, timeout=60, interrupt_grace=1.0)
    yield pool
    pool.shutdown()


def _session_pool(name: str, **options) -> JuliaProcessPool:
    """A pool whose processes carry SHARED_POOL_VAR=name, known to the per-module leak check."""
    pool = JuliaProcessPool(env=dict(os.environ, **{SHARED_POOL_VAR: name}), **options)
    _session_pools[name] = pool
    return pool


# ---- helpers -------------------------------------------------------------------------------------

def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; returns its last truth."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


def wait_gone(listing: Callable[[], list], timeout: float) -> list:
    """Poll `listing` until it is empty or `timeout` passes; returns what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = listing()
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def wait_for_workers(pool: JuliaProcessPool, timeout: float = 90.0) -> List[int]:
    """Wait until the pool has `size` live workers again (after a test killed one); their pids."""
    def full() -> bool:
        pids = pool.worker_pids()
        return len(pids) == pool.size and all(pid_alive(p) for p in pids)
    assert wait_until(full, timeout, 0.1), f"the pool did not get back to {pool.size} workers: {pool.worker_pids()}"
    return pool.worker_pids()


def proc_stat(pid: int) -> Optional[Dict[str, object]]:
    """State, parent and command line of a process from /proc, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, ValueError):
        return None
    rest = stat.rsplit(")", 1)[1].split()  # the command name in parentheses may hold spaces
    return {"pid": pid, "state": rest[0], "ppid": int(rest[1]), "pgid": int(rest[2]), "cmdline": cmdline}


def all_procs() -> List[Dict[str, object]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_stat(int(entry))
            if info is not None:
                out.append(info)
    return out


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie has ended; only its entry is left)."""
    info = proc_stat(pid)
    return info is not None and info["state"] not in ("Z", "X")


def zombie_children(parent: Optional[int] = None) -> List[Dict[str, object]]:
    parent = os.getpid() if parent is None else parent
    return [p for p in all_procs() if p["ppid"] == parent and p["state"] == "Z"]


def has_env(pid: int, var: str, value: str) -> bool:
    """True if the process `pid` was started with `var=value` in its environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{var}={value}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def _has_run_tag(pid: int) -> bool:
    return has_env(pid, RUN_TAG_VAR, RUN_TAG)


def tagged_env(var: str) -> Dict[str, str]:
    """This environment plus `var` set to a new unique value (read it back from the result)."""
    return dict(os.environ, **{var: uuid.uuid4().hex})


def julia_workers_with(var: str, value: str) -> List[Dict[str, object]]:
    """Live Julia worker processes started with `var=value` (e.g. by one pool given tagged_env)."""
    return [p for p in all_procs() if p["state"] not in ("Z", "X") and "worker.jl" in str(p["cmdline"])
            and has_env(int(p["pid"]), var, value)]


def descendants(root: Optional[int] = None) -> List[Dict[str, object]]:
    """Live processes below `root` (default: this process) in the parent tree."""
    root = os.getpid() if root is None else root
    procs = all_procs()
    children: Dict[int, list] = {}
    for p in procs:
        children.setdefault(p["ppid"], []).append(p)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child["pid"])
    return [p for p in out if p["state"] not in ("Z", "X")]


def leaked_processes() -> List[Dict[str, object]]:
    """Live processes started by this test run, other than this process: descendants of it, and any
    process carrying this run's tag (a worker whose parent died is adopted by init but keeps the tag).
    A concurrent test run of someone else carries another tag and is not counted."""
    me = os.getpid()
    found = {p["pid"]: p for p in descendants(me)}
    for p in all_procs():
        if p["pid"] != me and p["pid"] not in found and p["state"] not in ("Z", "X") and _has_run_tag(p["pid"]):
            found[p["pid"]] = p
    return list(found.values())


def run_in_thread(fn, *args, **kwargs):
    """Start `fn` in a daemon thread; returns (thread, box) where box gets 'result' or 'error'."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: B902 - handed to the test
            box["error"] = e
        box["ended_at"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


class Lines:
    """An on_output callback that collects text per stream and signals when a line shows up."""

    def __init__(self) -> None:
        self.text = {"stdout": "", "stderr": ""}
        self.chunks: List[tuple] = []
        self.seen = threading.Event()
        self.lock = threading.Lock()
        self.want = ""

    def __call__(self, stream: str, text: str) -> None:
        with self.lock:
            self.chunks.append((time.monotonic(), stream, text))
            self.text[stream] += text
            if self.want and self.want in self.text[stream]:
                self.seen.set()

    def wait_for(self, want: str, timeout: float = 30.0) -> bool:
        with self.lock:
            self.want = want
            if want in self.text["stdout"] or want in self.text["stderr"]:
                return True
        return self.seen.wait(timeout)
