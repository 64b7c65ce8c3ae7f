"""JuliaProcessPool: a thread-safe pool of persistent Julia workers, with sessions.

Data flow::

    caller thread                           JuliaProcessPool                     Julia processes
    -------------                           ----------------                     ---------------
    pool.execute(code) ----checkout()--->   idle workers  (Condition)
         |                                  sessions: key -> Worker (affinity)
         |  <-------- a Worker ----------   keeper thread: replaces dead idle
         |                                  workers, recycles old ones,
         v                                  starts replacements off-lock
    Worker.execute(code)  --- REQ pipe: frames ------------------------------->  worker.jl
         ^   the caller's own thread selects on:                                   eval in a
         |     REP pipe (frames)  <------------------------------------------------  module
         |     stdout/stderr pipes (user output + markers) <-------------------------
         |     pidfd (process death), wake pipe (interrupts)
    CodeExecResult / ExecReply  ---checkin()--->  idle (or retired and replaced)

Who owns what: the pool's lock guards only bookkeeping (idle set, sessions, counts); starting Julia,
stopping it and every byte of I/O happen outside it. A checked-out Worker belongs to one caller
thread, which does that worker's I/O itself until it checks the worker back in.

Plain `execute` calls run each snippet in a fresh module, so nothing leaks from one caller to the
next. A `Session` pins one worker and one module for all its calls (a notebook, a REPL).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Dict, Iterable, List, Optional, Sequence, Union

from .discovery import find_julia, julia_version, worker_script
from .errors import JuliaPoolError, PoolBusyError, PoolShutDownError, WorkerDiedError, WorkerStartError
from .result import CodeExecResult, ExecReply
from .session import Session
from .sysimage import find_sysimage
from .execution import OutputCallback, describe_exit
from .worker import Worker

log = logging.getLogger(__name__)

BASE_FLAGS = ["--startup-file=no", "--history-file=no", "--color=no"]
# A long-lived worker compiles each snippet once and may run it long: keep Julia's default
# optimisation (measured in benchmarks/bench_flags.py); only start-up noise is removed.
WORKER_OPT_FLAGS: List[str] = []
MAX_START_FAILURES = 3  # consecutive start failures before the pool gives up replacing workers
RSS_CHECK_EVERY = 16  # calls between two looks at a worker's memory
SPARES_AFTER = 1.5  # seconds after the first worker of a wait=False pool is ready

_live_pools: "weakref.WeakSet[JuliaProcessPool]" = weakref.WeakSet()


@atexit.register
def _shutdown_live_pools() -> None:
    for pool in list(_live_pools):
        pool.shutdown()


def _env_int(name: str, default: Optional[int]) -> Optional[int]:
    value = os.environ.get(name)
    return int(value) if value else default


class JuliaProcessPool:
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
    never uses one; a path uses that file. A worker that cannot start on it starts without it).
    """

    def __init__(self, size: int = 4, timeout: Optional[float] = 60, julia_path: Optional[str] = None,
                 optimization_flags: bool = True, auto_recover: bool = True, *,
                 julia_args: Sequence[str] = (), preload: Sequence[str] = (), warmup: Optional[str] = None,
                 max_calls: Optional[int] = None, max_rss_mb: Optional[int] = None,
                 checkout_timeout: Optional[float] = None, interrupt_grace: float = 2.0,
                 start_timeout: float = 120.0, wait: bool = True, env: Optional[Dict[str, str]] = None,
                 warm_kernel: bool = False, fast_start: bool = False,
                 sysimage: Union[str, bool, None] = None) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.timeout = timeout
        self.julia_path = find_julia(julia_path)
        self.auto_recover = auto_recover
        self.julia_args = BASE_FLAGS + (WORKER_OPT_FLAGS if optimization_flags else []) + list(julia_args)
        self.sysimage = self._choose_sysimage(sysimage)
        self.preload = list(preload)
        self.warmup = warmup
        self.max_calls = max_calls if max_calls is not None else _env_int("JULIAPOOL_MAX_CALLS", 5000)
        self.max_rss_mb = max_rss_mb if max_rss_mb is not None else _env_int("JULIAPOOL_MAX_RSS_MB", 2048)
        self.checkout_timeout = checkout_timeout
        self.interrupt_grace = interrupt_grace
        self.start_timeout = start_timeout
        self.env = dict(os.environ if env is None else env, JULIAPOOL_INTERPRET_WORKER="1" if fast_start else "0")
        self.warm_kernel = warm_kernel
        self._cond = threading.Condition()
        self._workers: List[Worker] = []  # every live worker, busy or idle
        self._idle: List[Worker] = []
        self._launching: List[Worker] = []  # being started and warmed up
        self._start_failures = 0
        self._start_error: Optional[WorkerStartError] = None
        self._closed = False
        self._seq = 0
        self._counts = {"calls": 0, "errors": 0, "timeouts": 0, "restarts": 0, "recycled": 0}
        self._retired: Dict[str, int] = {}  # workers retired after a call, by reason ("piracy", ...)
        _live_pools.add(self)
        # With wait=False (the kernel) someone waits for the FIRST worker: start it alone, so that the
        # others do not compete for the CPU with it, nor with the caller's own start-up (a kernel's
        # Python side); they start when a second caller needs one, after the first call, or
        # SPARES_AFTER seconds after the first is ready.
        self._first_awaited = not wait
        self._deferred = 0 if wait else size - 1  # starts held back
        self._spares_due: Optional[float] = None  # when the held-back starts begin anyway
        with self._cond:
            for _ in range(size - self._deferred):
                self._start_worker_async()
        self._keeper = threading.Thread(target=self._keep, name="juliapool-keeper", daemon=True)
        self._keeper.start()
        if wait:
            self._wait_until_started()

    # ---- public API ------------------------------------------------------------------------

    def execute(self, code: str, timeout: Optional[float] = None, *,
                on_output: Optional[OutputCallback] = None) -> CodeExecResult:
        """Run `code` in a fresh module on a free worker. `on_output(stream, text)` streams output."""
        return self.run(code, timeout=timeout, on_output=on_output).to_result()

    def run(self, code: str, timeout: Optional[float] = None, *, on_output: Optional[OutputCallback] = None) -> ExecReply:
        """Like `execute`, returning the full `ExecReply`."""
        for attempt in range(3):
            worker = self.checkout()
            try:
                return self.count(worker.execute(code, timeout=self._timeout(timeout), grace=self.interrupt_grace,
                                                 on_output=on_output))
            except WorkerDiedError as e:  # died before it read the code: safe to run it elsewhere
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
        self._check_open()
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
        self._check_open()
        with self._cond:
            self._seq += 1
            return Session(self, key if key is not None else f"session-{self._seq}")

    def get_stats(self) -> Dict[str, object]:
        """Counters and worker states, for monitoring (OpenEnv's /pool_status reports them).

        `recycled` counts workers replaced for age or memory or after a call that left state behind;
        `retired` breaks the latter down by reason. `total_workers`, `healthy_workers`,
        `available_workers` and `shutdown` are the names OpenEnv's own pool reports."""
        with self._cond:
            healthy = sum(w.alive for w in self._workers)
            return {"size": self.size, "workers": len(self._workers), "idle": len(self._idle),
                    "busy": len(self._workers) - len(self._idle), "starting": len(self._launching) + self._deferred,
                    "sessions": sum(len(w.sessions) for w in self._workers), **self._counts,
                    "retired": dict(self._retired), "closed": self._closed, "timeout": self.timeout,
                    "total_workers": self.size, "healthy_workers": healthy,
                    "available_workers": len(self._idle), "shutdown": self._closed}

    def count(self, reply: ExecReply) -> ExecReply:
        """Count one finished call (plain or session) in the pool's stats."""
        with self._cond:
            self._counts["calls"] += 1
            self._counts["errors"] += reply.status != "ok"
            self._counts["timeouts"] += reply.timed_out
        return reply

    @property
    def julia_version(self) -> str:
        """The Julia version the workers run: a ready worker's own word, else a `julia --version`
        probe (cached), so that a kernel can answer kernel_info before any worker is up."""
        with self._cond:
            told = next((w.julia_version for w in self._workers if w.julia_version), "")
        return told or julia_version(self.julia_path)

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop every worker (ask, SIGTERM, SIGKILL). Idempotent; running calls end with an error."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            launching = list(self._launching)
            for worker in launching:  # their threads may not outlive us (daemons): end them now
                worker.cancel()
            workers = list(self._workers)
            self._workers.clear()
            self._idle.clear()
            self._cond.notify_all()
        threads = [threading.Thread(target=w.stop, args=(timeout, "the pool was shut down during this call"), daemon=True)
                   for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for worker in launching:  # their start threads reap them (they were killed above)
            worker.started.wait(timeout)
        log.info("pool shut down (%d workers)", len(workers))

    def __enter__(self) -> "JuliaProcessPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (f"<JuliaProcessPool size={self.size} workers={len(self._workers)} idle={len(self._idle)} "
                f"{'closed' if self._closed else 'open'}>")

    @property
    def closed(self) -> bool:
        return self._closed

    def worker_pids(self) -> List[int]:
        with self._cond:
            return [w.pid for w in self._workers if w.pid]

    # ---- checkout / checkin ----------------------------------------------------------------

    def _timeout(self, timeout: Optional[float]) -> Optional[float]:
        t = self.timeout if timeout is None else timeout
        return t if t and t > 0 else None

    def _check_open(self) -> None:
        if self._closed:
            raise PoolShutDownError("this JuliaProcessPool was shut down; create a new one")

    def checkout(self, want: Optional[Worker] = None) -> Worker:
        """Take an idle worker (`want` if given) and mark it busy; wait, without polling, up to
        `checkout_timeout` seconds. Dead idle workers found on the way are replaced."""
        deadline = None if self.checkout_timeout is None else time.monotonic() + self.checkout_timeout
        with self._cond:
            while True:
                self._check_open()
                if want is None:
                    pick = _fewest_sessions(self._idle)
                elif want in self._workers:
                    pick = want if want in self._idle else None
                else:
                    raise LookupError(f"{want.name} is gone")
                if pick is not None and not pick.alive:  # died while idle: replace, look again
                    self._reap_dead_idle()
                    continue
                if pick is not None:
                    self._idle.remove(pick)
                    return pick
                self._raise_if_broken()
                if want is None and self._workers:  # every ready worker is busy: no more holding back
                    self._start_deferred()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PoolBusyError(f"no Julia worker became free within {self.checkout_timeout}s")
                self._cond.wait(left)

    def checkin(self, worker: Worker, *, served: bool = True) -> None:
        """Return a worker after a call: idle again, or retired (dead, or due for recycling)."""
        # A worker whose stdio the code closed cannot serve even its own sessions; other dirt (piracy,
        # Main, tasks) retires it once no session's state lives there.
        retire = not worker.alive or worker.dirty_reason == "stdio" or (
            not worker.sessions and (worker.dirty or self._due_for_recycling(worker)))
        with self._cond:
            if served:
                self._start_deferred()
            if worker not in self._workers:  # removed by shutdown meanwhile
                threading.Thread(target=worker.stop, daemon=True).start()
            elif retire:
                if worker.alive and worker.dirty:
                    log.info("%s: retired after a call (%s)", worker.name, worker.dirty_reason or "task")
                    self._retired[worker.dirty_reason or "task"] = self._retired.get(worker.dirty_reason or "task", 0) + 1
                elif worker.alive:
                    log.info("%s: recycled after %d calls", worker.name, worker.calls)
                self._retire(worker)
            else:
                self._idle.append(worker)
            self._cond.notify_all()

    def _due_for_recycling(self, worker: Worker) -> bool:
        if self.max_calls and worker.calls >= self.max_calls:
            return True
        # Memory grows slowly (code made by eval): looking every RSS_CHECK_EVERY calls is enough.
        if not self.max_rss_mb or worker.calls % RSS_CHECK_EVERY:
            return False
        return worker.rss_bytes() > self.max_rss_mb * 2**20

    def _reap_dead_idle(self) -> None:
        """Under the lock: drop idle workers whose process ended, and start replacements."""
        for worker in [w for w in self._idle if not w.alive]:
            log.warning("%s: died while idle (%s)", worker.name, describe_exit(worker.poll()))
            self._idle.remove(worker)
            self._retire(worker)

    def _retire(self, worker: Worker) -> None:
        """Under the lock: take a worker out of the pool, stop it behind us, start a replacement."""
        self._workers.remove(worker)
        self._counts["restarts" if not worker.alive else "recycled"] += 1
        threading.Thread(target=worker.stop, daemon=True).start()
        if self._should_replace():
            self._start_worker_async()

    def _start_deferred(self) -> None:
        """Under the lock: start the workers held back while the first one was awaited."""
        if self._closed:
            return
        for _ in range(self._deferred):
            self._start_worker_async()
        self._deferred = 0

    def _should_replace(self) -> bool:
        return (self.auto_recover and not self._closed and self._start_failures < MAX_START_FAILURES
                and len(self._workers) + len(self._launching) + self._deferred < self.size)

    def _raise_if_broken(self) -> None:
        if not self._workers and not self._launching:
            raise self._start_error or WorkerStartError("no Julia worker is left and auto_recover is off")

    # ---- starting workers (never under the lock) -------------------------------------------

    def _start_worker_async(self) -> None:
        """Under the lock: count a start and do it in a thread of its own."""
        self._seq += 1
        args = self.julia_args + (["-J", self.sysimage] if self.sysimage else [])
        worker = Worker(self.julia_path, str(worker_script()), args, self.env, f"julia-worker-{self._seq}")
        self._launching.append(worker)
        threading.Thread(target=self._start_worker, args=(worker,), name=worker.name, daemon=True).start()

    def _start_worker(self, worker: Worker) -> None:
        try:
            worker.start(self.start_timeout)
            self._prepare(worker)
        except WorkerStartError as e:
            worker.stop()
            self._started(worker, e)
            return
        self._started(worker, None)
        if self.warm_kernel and self._first_awaited:
            self._warm_while_idle(worker)

    def _warm_while_idle(self, worker: Worker) -> None:
        """The first worker of a wait=False pool went to work cold. If nobody took it yet (a kernel's
        front end is usually still connecting), compile the simplest cell now rather than in the
        first real one."""
        with self._cond:
            if worker not in self._idle:
                return
            self._idle.remove(worker)
        try:
            worker.execute("1 + 1", module="session:warm-up", flags="ksr", timeout=self.start_timeout)
            worker.request("D", ["session:warm-up"], timeout=self.start_timeout)
        except JuliaPoolError as e:
            log.debug("%s: warm-up while idle failed: %s", worker.name, e)
        finally:
            worker.calls = 0
            self.checkin(worker, served=False)

    def _started(self, worker: Worker, error: Optional[WorkerStartError]) -> None:
        worker.started.set()
        with self._cond:
            self._launching.remove(worker)
            if error is not None:
                self._start_deferred()
            elif self._deferred and self._spares_due is None:
                self._spares_due = time.monotonic() + SPARES_AFTER
            if error is not None and worker.cancelled:
                log.debug("%s: start cancelled by shutdown", worker.name)
            elif error is not None and self.sysimage and "-J" in worker.julia_args and not self._closed:
                log.warning("%s could not start on the system image %s, so workers start without it "
                            "(rebuild it with `juliapool sysimage`): %s", worker.name, self.sysimage, error)
                self.sysimage = None
                self._start_worker_async()
            elif error is not None:
                log.error("%s", error)
                self._start_failures += 1
                self._start_error = error
            elif self._closed:
                threading.Thread(target=worker.stop, daemon=True).start()
            else:
                self._start_failures = 0
                self._workers.append(worker)
                self._idle.append(worker)
            self._cond.notify_all()

    def _choose_sysimage(self, sysimage: Union[str, bool, None]) -> Optional[str]:
        if any(a in ("-J", "--sysimage") or a.startswith(("-J", "--sysimage=")) for a in self.julia_args):
            return None  # the caller chose an image in julia_args
        if sysimage is None or sysimage is True:
            return find_sysimage(self.julia_path)
        return sysimage or None

    def _prepare(self, worker: Worker) -> None:
        """Preload packages and warm up, before the worker takes work. Errors here are start errors."""
        steps = [("using " + ", ".join(self.preload), "Main")] if self.preload else []
        if self.warmup:
            steps.append((self.warmup, "Main"))
        for code, module in steps:
            reply = worker.execute(code, module=module, flags="", timeout=self.start_timeout)
            if reply.status != "ok":
                raise WorkerStartError(f"preloading failed: {reply.evalue or describe_exit(worker.poll())}",
                                       reply.traceback or reply.stderr)
        # With wait=False someone is waiting for the first worker: warming it up would only delay
        # that first call by the compilation it is meant to save. Later workers (spares) get it.
        if self._workers or not self._first_awaited:
            self._warm_up(worker)
        worker.calls = 0

    def _warm_up(self, worker: Worker) -> None:
        """Compile the worker's own paths (success, error, and for notebooks display, completion),
        so that the first real call does not pay Julia's compilation of them."""
        calls = [("println(1); println(1.5); print(stderr, 2)", ""), ('error("warm-up")', ""),
                 # the fresh-state checks that follow a call defining methods (~0.3 s to compile)
                 ("struct WarmUp; x::Int; end; Base.show(io::IO, w::WarmUp) = print(io, w.x); println(WarmUp(1))", "")]
        if self.warm_kernel:
            cell = 'x = 1; for i in 1:2; x += i; end; println(x); display([1, 2]); "x"'
            calls += [(cell, "session:warm-up"), ('error("warm-up")', "session:warm-up")]
        for code, module in calls:
            reply = worker.execute(code, module=module, flags="ksr" if module else "", timeout=self.start_timeout)
            if reply.worker_died:
                raise WorkerStartError(f"the worker died while warming up: {reply.evalue}", reply.stderr)
        if self.warm_kernel:
            for kind, fields in (("C", ["session:warm-up", "prin", "4"]), ("I", ["session:warm-up", "println", "3", "0"]),
                                 ("K", ["for i in 1:2"]), ("D", ["session:warm-up"])):
                worker.request(kind, fields, timeout=self.start_timeout)

    def _wait_until_started(self) -> None:
        with self._cond:
            while self._launching and not self._start_error:
                self._cond.wait()
            error = self._start_error
        if error is not None:
            self.shutdown()
            raise error

    # ---- the keeper: notices workers that die while idle -----------------------------------

    def _keep(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._reap_dead_idle()
                if self._spares_due is not None and time.monotonic() >= self._spares_due:
                    self._start_deferred()
                self._cond.wait(0.5)


def _fewest_sessions(idle: List[Worker]) -> Optional[Worker]:
    """Plain calls prefer clean workers that hold no session state (they may be recycled freely); a
    worker that a session's code left dirty (piracy, Main) serves plain calls only when no other is idle."""
    return min(idle, key=lambda w: (w.dirty, len(w.sessions)), default=None)
