"""The pool's workers: which are idle, busy or starting, who waits for one, and the policy that
starts, replaces and recycles them. `JuliaProcessPool` is the public face; this is its machinery.

Everything here happens under one Condition lock, except starting and stopping Julia, which run in
threads of their own (`_start_worker`, `Worker.stop`), so that no caller waits on another's start.
Waiters are threads (the Condition) and coroutines (futures resolved from any thread).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Dict, List, Optional, Tuple

from .errors import PoolBrokenError, PoolBusyError, PoolShutDownError, WorkerDiedError, WorkerStartError
from .process import describe_exit
from .recipe import StartRecipe
from .result import SHUT_DOWN
from .worker import Worker

log = logging.getLogger("juliapool.pool")

MAX_START_FAILURES = 3  # consecutive start failures before the pool gives up replacing workers
RSS_CHECK_EVERY = 16  # calls between two looks at a worker's memory
SPARES_AFTER = 1.5  # seconds after the first worker of a wait=False pool is ready


class WorkerSet:
    """`size` workers made by `recipe`, lent to one caller at a time (`checkout` / `checkin`)."""

    def __init__(self, recipe: StartRecipe, size: int, *, auto_recover: bool, max_calls: Optional[int],
                 max_rss_mb: Optional[int], checkout_timeout: Optional[float], wait: bool) -> None:
        self.recipe = recipe
        self.size = size
        self.auto_recover = auto_recover
        self.max_calls = max_calls
        self.max_rss_mb = max_rss_mb
        self.checkout_timeout = checkout_timeout
        self.counts = {"restarts": 0, "recycled": 0}
        self._cond = threading.Condition()
        self._workers: List[Worker] = []  # every live worker, busy or idle
        self._idle: List[Worker] = []
        self._async_waiters: List[Tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._launching: List[Worker] = []  # being started and warmed up
        self._start_failures = 0
        self._start_error: Optional[WorkerStartError] = None
        self._closed = False
        self._seq = 0
        self._hold_spares(wait)
        threading.Thread(target=self._keep, name="juliapool-keeper", daemon=True).start()

    def _hold_spares(self, wait: bool) -> None:
        """With wait=False (the kernel) someone waits for the FIRST worker: start it alone, so that
        the others compete for the CPU neither with it nor with the caller's own start-up (a
        kernel's Python side); they start when a second caller needs one, after the first call, or
        SPARES_AFTER seconds after the first is ready."""
        self._first_awaited = not wait
        self._deferred = 0 if wait else self.size - 1  # starts held back
        self._spares_due: Optional[float] = None  # when the held-back starts begin anyway
        with self._cond:
            for _ in range(self.size - self._deferred):
                self._start_worker_async()

    # ---- state --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def pids(self) -> List[int]:
        with self._cond:
            return [w.pid for w in self._workers if w.pid]

    def stats(self) -> Dict[str, int]:
        with self._cond:
            return {"workers": len(self._workers), "idle": len(self._idle),
                    "busy": len(self._workers) - len(self._idle), "starting": len(self._launching) + self._deferred,
                    "sessions": sum(len(w.sessions) for w in self._workers), **self.counts}

    def ready_version(self) -> str:
        """The Julia version a ready worker said in its hello ("" before any is ready)."""
        with self._cond:
            return next((w.julia_version for w in self._workers if w.julia_version), "")

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
            self._notify()
        threads = [threading.Thread(target=w.stop, args=(timeout, SHUT_DOWN), daemon=True) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for worker in launching:  # their start threads reap them (they were killed above)
            worker.started.wait(timeout)
        log.info("pool shut down (%d workers)", len(workers))

    # ---- checkout / checkin ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PoolShutDownError("this JuliaProcessPool was shut down; create a new one")

    def checkout(self, want: Optional[Worker] = None) -> Worker:
        """Take an idle worker (`want` if given) and mark it busy; wait, without polling, up to
        `checkout_timeout` seconds. Dead idle workers found on the way are replaced."""
        deadline = None if self.checkout_timeout is None else time.monotonic() + self.checkout_timeout
        with self._cond:
            while True:
                pick = self._pick(want)
                if pick is not None:
                    return pick
                self._cond.wait(self._time_left(deadline))

    async def checkout_async(self, want: Optional[Worker] = None) -> Worker:
        """`checkout` for asyncio: waits on a future that a check-in resolves, not on a thread."""
        deadline = None if self.checkout_timeout is None else time.monotonic() + self.checkout_timeout
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                pick = self._pick(want)
                if pick is not None:
                    return pick
                left = self._time_left(deadline)
                woken: asyncio.Future = loop.create_future()
                self._async_waiters.append((loop, woken))
            try:
                await asyncio.wait_for(asyncio.shield(woken), left)
            except asyncio.TimeoutError:
                pass  # _pick raises PoolBusyError once the deadline has passed

    def _pick(self, want: Optional[Worker]) -> Optional[Worker]:
        """Under the lock: an idle worker taken out of the idle list, or None (then wait)."""
        while True:
            self._check_open()
            if want is None:
                pick = _fewest_sessions(self._idle)
            elif want in self._workers:
                pick = want if want in self._idle else None
            else:
                raise LookupError(f"{want.name} is gone")
            if pick is None or pick.alive:
                break
            self._reap_dead_idle()  # died while idle: replace it, look again
        if pick is not None:
            self._idle.remove(pick)
            return pick
        self._raise_if_broken()
        if want is None and self._workers:  # every ready worker is busy: no more holding back
            self._start_deferred()
        return None

    def _time_left(self, deadline: Optional[float]) -> Optional[float]:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise PoolBusyError(f"no Julia worker became free within {self.checkout_timeout}s")
        return left

    def _notify(self) -> None:
        """Under the lock: a worker may be free, or the pool closed: wake every waiter."""
        self._cond.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for loop, woken in waiters:
            if not woken.done():
                try:
                    loop.call_soon_threadsafe(_resolve, woken)
                except RuntimeError:  # that loop is closed
                    pass

    def checkin(self, worker: Worker, *, served: bool = True) -> None:
        """Return a worker after a call: idle again, or retired (dead, or due for recycling)."""
        retire = not worker.alive or (not worker.sessions and (worker.dirty or self._due_for_recycling(worker)))
        with self._cond:
            if served:
                self._start_deferred()
            if worker not in self._workers:  # removed by shutdown meanwhile
                threading.Thread(target=worker.stop, daemon=True).start()
            elif retire:
                if worker.alive:
                    log.info("%s: recycled after %d calls", worker.name, worker.calls)
                self._retire(worker)
            else:
                self._idle.append(worker)
            self._notify()

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
        self.counts["restarts" if not worker.alive else "recycled"] += 1
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
            why = "no Julia worker is left: " + (str(self._start_error) if self._start_error else "auto_recover is off")
            raise PoolBrokenError(why) from self._start_error

    # ---- starting workers (never under the lock) -------------------------------------------

    def _start_worker_async(self) -> None:
        """Under the lock: count a start and do it in a thread of its own."""
        self._seq += 1
        worker = self.recipe.new_worker(f"julia-worker-{self._seq}")
        self._launching.append(worker)
        threading.Thread(target=self._start_worker, args=(worker,), name=worker.name, daemon=True).start()

    def _start_worker(self, worker: Worker) -> None:
        try:
            worker.start(self.recipe.start_timeout)
            # With wait=False someone is waiting for the first worker: warming it up would only
            # delay that first call by the compilation it is meant to save. Spares get it.
            self.recipe.prepare(worker, warm=bool(self._workers) or not self._first_awaited)
        except WorkerStartError as e:
            worker.stop()
            self._started(worker, e)
            return
        self._started(worker, None)
        if self.recipe.notebook and self._first_awaited:
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
            self.recipe.warm_first_cell(worker)
        except (WorkerDiedError, WorkerStartError) as e:
            log.debug("%s: warm-up while idle failed: %s", worker.name, e)
        finally:
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
            elif error is not None and self.recipe.sysimage and "-J" in worker.julia_args and not self._closed:
                log.warning("%s could not start on the system image %s, so workers start without it "
                            "(rebuild it with `juliapool sysimage`): %s", worker.name, self.recipe.sysimage, error)
                self.recipe.sysimage = None
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
            self._notify()

    def wait_until_started(self) -> None:
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


def _resolve(future: "asyncio.Future") -> None:
    if not future.done():
        future.set_result(None)


def _fewest_sessions(idle: List[Worker]) -> Optional[Worker]:
    """Plain calls prefer workers that hold no session state (they may be recycled freely)."""
    return min(idle, key=lambda w: len(w.sessions), default=None)
