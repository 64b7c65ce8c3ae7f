"""JuliaProcessPool: a thread-safe pool of persistent Julia workers, with sessions.

Data flow::

    caller (thread or coroutine)            JuliaProcessPool                     Julia processes
    ----------------------------            ----------------                     ---------------
    pool.execute(code) ----checkout()--->   idle workers  (Condition; futures
    await pool.execute_async(code)            for coroutines)
         |                                  sessions: key -> Worker (affinity)
         |  <-------- a Worker ----------   keeper thread: replaces dead idle
         |                                  workers; StartRecipe starts and
         v                                  prepares replacements off-lock
    Worker.execute(code)  --- REQ pipe: frames ------------------------------->  worker.jl
         ^   the caller's own thread selects (a coroutine: the event loop           eval in a
         |   watches the one epoll fd) on:                                           module
         |     REP pipe (frames)  <------------------------------------------------
         |     stdout/stderr pipes (user output + markers) <-------------------------
         |     pidfd (process death), wake pipe (interrupts)
    CodeExecResult / ExecReply  ---checkin()--->  idle (or retired and replaced)

Who owns what: the pool's lock guards only bookkeeping (idle set, sessions, counts, waiters);
starting Julia, stopping it and every byte of I/O happen outside it. A checked-out Worker belongs to
one caller, which does that worker's I/O itself until it checks the worker back in.

Plain `execute` calls run each snippet in a fresh module, so nothing leaks from one caller to the
next. A `Session` pins one worker and one module for all its calls (a notebook, a REPL). Limits
(timeout, memory, output) are the pool's defaults, overridable per call.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Dict, Iterable, List, Optional, Sequence, Union

from .calls import PoolCalls
from .discovery import find_julia, julia_version
from .errors import JuliaPoolError, PoolShutDownError, WorkerDiedError
from .execution import OutputCallback
from .recipe import BASE_FLAGS, StartRecipe, choose_sysimage
from .result import CodeExecResult, ExecReply
from .session import Session
from .worker import Worker
from .workers import WorkerSet

log = logging.getLogger(__name__)

# A long-lived worker compiles each snippet once and may run it long: keep Julia's default
# optimisation (measured in benchmarks/bench_flags.py); only start-up noise is removed.
WORKER_OPT_FLAGS: List[str] = []
# How workers run the user's top-level code (julia/compile_policy.jl; figures in README.md).
COMPILE_POLICIES = ("tiered", "toplevel", "compiled", "interpreted")
_live_pools: "weakref.WeakSet[JuliaProcessPool]" = weakref.WeakSet()


@atexit.register
def _shutdown_live_pools() -> None:
    for pool in list(_live_pools):
        pool.shutdown()


def _choose_policy(chosen: Optional[str]) -> str:
    policy = chosen or os.environ.get("JULIAPOOL_COMPILE_POLICY") or COMPILE_POLICIES[0]
    if policy not in COMPILE_POLICIES:
        raise ValueError(f"compile_policy must be one of {', '.join(COMPILE_POLICIES)}, not {policy!r}")
    return policy


def _env_int(name: str, default: Optional[int]) -> Optional[int]:
    value = os.environ.get(name)
    return int(value) if value else default


class JuliaProcessPool(PoolCalls):
    """A pool of `size` persistent Julia workers.

    Arguments of the seed API: `size`, `timeout` (default seconds per execution), `julia_path`
    (else $JULIAPOOL_JULIA, `julia` on PATH, juliaup, the installed runtime), `optimization_flags`
    (add the Julia flags measured fastest for long-lived workers), `auto_recover` (replace workers
    that die). Further keyword arguments: `julia_args` (e.g. ["--threads=2", "--project=."]),
    `preload` (packages to `using` in every worker before it takes work), `warmup` (code run once
    per worker), `max_calls` / `max_rss_mb` (recycle a worker holding no session after that many
    calls or that much memory: Julia never frees code made by eval), `checkout_timeout` (how long a
    caller waits for a free worker), `interrupt_grace` (seconds between SIGINT and SIGKILL),
    `wait` (block until all workers are up; False returns at once and workers start behind),
    `warm_kernel` (also compile the notebook paths before a worker takes work), `fast_start` (a
    worker is ready in a fraction of the time because its own rarely-run code, e.g. error
    printing, is interpreted instead of compiled; the user's code is compiled either way: the
    kernel sets it, a long-running pool does better without), `sysimage` (a Julia system image to
    start workers with: None finds the one `juliapool sysimage` built for this Julia, if any; False
    never uses one; a path uses that file. A worker that cannot start on it starts without it),
    `compile_policy` (how the user's top-level code runs, one of COMPILE_POLICIES: "tiered", the
    default, interprets statements that look short, Base's code they reach included, and compiles
    long ones and functions that loop or recurse; "toplevel" compiles all but short top-level loops;
    "compiled" compiles everything, as Julia does on its own; "interpreted" interprets everything,
    like `--compile=min`; else $JULIAPOOL_COMPILE_POLICY).
    """

    def __init__(self, size: int = 4, timeout: Optional[float] = 60, julia_path: Optional[str] = None,
                 optimization_flags: bool = True, auto_recover: bool = True, *,
                 julia_args: Sequence[str] = (), preload: Sequence[str] = (), warmup: Optional[str] = None,
                 max_calls: Optional[int] = None, max_rss_mb: Optional[int] = None,
                 checkout_timeout: Optional[float] = None, interrupt_grace: float = 2.0,
                 start_timeout: float = 120.0, wait: bool = True, env: Optional[Dict[str, str]] = None,
                 warm_kernel: bool = False, fast_start: bool = False,
                 sysimage: Union[str, bool, None] = None, memory_limit_mb: Optional[float] = None,
                 output_limit_bytes: Optional[int] = None, compile_policy: Optional[str] = None) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.compile_policy = _choose_policy(compile_policy)
        self.size = size
        self.timeout = timeout
        julia = find_julia(julia_path)
        args = BASE_FLAGS + (WORKER_OPT_FLAGS if optimization_flags else []) + list(julia_args)
        self.recipe = StartRecipe(
            julia, args, dict(os.environ if env is None else env, JULIAPOOL_INTERPRET_WORKER="1" if fast_start else "0",
                              JULIAPOOL_COMPILE_POLICY=self.compile_policy),
            choose_sysimage(julia, args, sysimage), start_timeout, list(preload), warmup, warm_kernel)
        self.max_calls = max_calls if max_calls is not None else _env_int("JULIAPOOL_MAX_CALLS", 5000)
        self.max_rss_mb = max_rss_mb if max_rss_mb is not None else _env_int("JULIAPOOL_MAX_RSS_MB", 2048)
        self.interrupt_grace = interrupt_grace
        self.memory_limit_mb = memory_limit_mb
        self.output_limit_bytes = output_limit_bytes
        self._lock = threading.Lock()  # the counters and session numbers
        self._counts = {"calls": 0, "errors": 0, "timeouts": 0}
        self._sessions_made = 0
        self.workers = WorkerSet(self.recipe, size, auto_recover=auto_recover, max_calls=self.max_calls,
                                 max_rss_mb=self.max_rss_mb, checkout_timeout=checkout_timeout, wait=wait)
        _live_pools.add(self)
        if wait:
            self.workers.wait_until_started()

    # the recipe's parts, under the names the pool has always had
    @property
    def julia_path(self) -> str:
        return self.recipe.julia

    @property
    def julia_args(self) -> List[str]:
        return self.recipe.julia_args

    @property
    def sysimage(self) -> Optional[str]:
        return self.recipe.sysimage

    # ---- public API ------------------------------------------------------------------------

    def run(self, code: str, timeout: Optional[float] = None, *, on_output: Optional[OutputCallback] = None,
            memory_limit_mb: Optional[float] = None, output_limit_bytes: Optional[int] = None) -> ExecReply:
        """Like `execute`, returning the full `ExecReply`."""
        limits = self.limits(timeout, memory_limit_mb, output_limit_bytes)
        for attempt in range(3):
            worker = self.checkout()
            try:
                return self.count(worker.execute(code, limits=limits, on_output=on_output))
            except WorkerDiedError as e:  # died before it read the code: safe to run it elsewhere
                log.warning("%s: %s; retrying on another worker", worker.name, e)
                error = e
            finally:
                self.checkin(worker)
        raise error

    async def run_async(self, code: str, timeout: Optional[float] = None, *,
                        on_output: Optional[OutputCallback] = None, memory_limit_mb: Optional[float] = None,
                        output_limit_bytes: Optional[int] = None) -> ExecReply:
        """Like `execute_async`, returning the full `ExecReply`."""
        limits = self.limits(timeout, memory_limit_mb, output_limit_bytes)
        for attempt in range(3):
            worker = await self.checkout_async()
            try:
                return self.count(await worker.execute_async(code, limits=limits, on_output=on_output))
            except WorkerDiedError as e:
                log.warning("%s: %s; retrying on another worker", worker.name, e)
                error = e
            finally:
                self.checkin(worker)
        raise error

    def map(self, codes: Iterable[str], timeout: Optional[float] = None) -> List[CodeExecResult]:
        """Run many snippets on all workers, each like `execute`; results in input order.

        One thread per worker takes the next snippet until none is left. A snippet that fails,
        times out or kills its worker only gives its own result; a pool error for one snippet
        (e.g. no worker could be started) becomes its result (exit code 1, the error on stderr).
        A pool shut down meanwhile raises PoolShutDownError."""
        if self.closed:
            raise PoolShutDownError("this JuliaProcessPool was shut down; create a new one")
        items = list(codes)
        results: List[Optional[CodeExecResult]] = [None] * len(items)
        todo = iter(range(len(items)))
        lock = threading.Lock()
        failure: List[BaseException] = []

        def drain() -> None:
            while not failure:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    results[i] = self.execute(items[i], timeout=timeout)
                except PoolShutDownError as e:
                    failure.append(e)
                except JuliaPoolError as e:
                    results[i] = CodeExecResult("", f"juliapool: {e}\n", 1)

        threads = [threading.Thread(target=drain, name=f"juliapool-map-{n}", daemon=True)
                   for n in range(min(self.size, len(items)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failure:
            raise failure[0]
        return [r for r in results if r is not None]

    def session(self, key: Optional[str] = None) -> Session:
        """A Session: every call reaches the same worker and the same module (state persists)."""
        if self.closed:
            raise PoolShutDownError("this JuliaProcessPool was shut down; create a new one")
        with self._lock:
            self._sessions_made += 1
            return Session(self, key if key is not None else f"session-{self._sessions_made}")

    def get_stats(self) -> Dict[str, object]:
        """Counters and worker states, for monitoring (OpenEnv's /pool_status reports them).

        `recycled` counts workers replaced for age or memory or after a call that left state behind;
        `retired` breaks the latter down by reason. `total_workers`, `healthy_workers`,
        `available_workers` and `shutdown` are the names OpenEnv's own pool reports."""
        with self._lock:
            counts = dict(self._counts)
        workers = self.workers.stats()
        return {"size": self.size, **workers, **counts, "closed": self.closed, "timeout": self.timeout,
                "total_workers": self.size, "available_workers": workers["idle"], "shutdown": self.closed}

    def count(self, reply: ExecReply) -> ExecReply:
        """Count one finished call (plain or session) in the pool's stats."""
        with self._lock:
            self._counts["calls"] += 1
            self._counts["errors"] += reply.status != "ok"
            self._counts["timeouts"] += reply.timed_out
        return reply

    @property
    def julia_version(self) -> str:
        """The Julia version the workers run: a ready worker's own word, else a `julia --version`
        probe (cached), so that a kernel can answer kernel_info before any worker is up."""
        return self.workers.ready_version() or julia_version(self.recipe.julia)

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop every worker (ask, SIGTERM, SIGKILL). Idempotent; running calls end with an error."""
        self.workers.shutdown(timeout)

    # ---- lending workers (the Session uses these too) ------------------------------------------

    def checkout(self, want: Optional[Worker] = None) -> Worker:
        """Take an idle worker (`want` if given); wait up to `checkout_timeout` (PoolBusyError)."""
        return self.workers.checkout(want)

    async def checkout_async(self, want: Optional[Worker] = None) -> Worker:
        return await self.workers.checkout_async(want)

    def checkin(self, worker: Worker, *, served: bool = True) -> None:
        """Give a worker back after a call: idle again, or retired (dead, or due for recycling)."""
        self.workers.checkin(worker, served=served)

    def __enter__(self) -> "JuliaProcessPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        stats = self.workers.stats()
        return (f"<JuliaProcessPool size={self.size} workers={stats['workers']} idle={stats['idle']} "
                f"{'closed' if self.closed else 'open'}>")

    @property
    def closed(self) -> bool:
        return self.workers.closed

    @property
    def checkout_timeout(self) -> Optional[float]:
        return self.workers.checkout_timeout

    @property
    def auto_recover(self) -> bool:
        return self.workers.auto_recover

    def worker_pids(self) -> List[int]:
        return self.workers.pids()

