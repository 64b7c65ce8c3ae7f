"""The pool server's workers: started and warmed up in the background, idle until lent, replaced
when they die, never more than `max_workers` Julia processes at once.

Owned by the server's loop thread: every method is called there. Starting a worker takes seconds,
so it happens in a thread of its own, which hands the result back through `post` (the loop then
calls `_started`). A lent worker is not touched here until it comes back: its borrower does its I/O.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Dict, List, Optional, Sequence

from .errors import WorkerStartError
from .process import describe_exit
from .discovery import find_julia
from .recipe import BASE_FLAGS, StartRecipe, choose_sysimage
from .result import SHUT_DOWN
from .worker import Worker

log = logging.getLogger(__name__)

MAX_START_FAILURES = 3  # consecutive failures before the stock stops starting workers
Post = Callable[[Callable[[], None]], None]  # run a function on the loop thread


class WorkerStock:
    """Live workers (`workers`), the idle ones among them (`idle`), and starts under way."""

    def __init__(self, recipe: StartRecipe, spares: int, max_workers: int, post: Post) -> None:
        self.recipe = recipe
        self.spares = spares
        self.max_workers = max_workers
        self.workers: List[Worker] = []
        self.idle: List[Worker] = []
        self.starting: List[Worker] = []
        self.failures = 0
        self.last_error: Optional[WorkerStartError] = None
        self.counts = {"started": 0, "restarts": 0, "recycled": 0}
        self.on_ready: Callable[[], None] = lambda: None  # the server hands new idle workers out
        self._post = post
        self._seq = 0
        self._closed = False

    @property
    def total(self) -> int:
        return len(self.workers) + len(self.starting)

    def take(self) -> Optional[Worker]:
        """An idle live worker (taken out of `idle`), or None."""
        self.reap_dead_idle()
        return self.idle.pop(0) if self.idle else None

    def put(self, worker: Worker) -> None:
        """A worker back from a borrower or a closed session: idle again, or retired."""
        if worker not in self.workers:
            return
        if not worker.alive or worker.dirty:
            self.retire(worker)
        else:
            self.idle.append(worker)
        self.refill()

    def retire(self, worker: Worker, cause: str = "") -> None:
        """Take `worker` out (killing it first if `cause` says why) and stop it behind us."""
        if worker in self.idle:
            self.idle.remove(worker)
        if worker in self.workers:
            self.workers.remove(worker)
            self.counts["restarts" if not worker.alive or cause else "recycled"] += 1
        if cause:
            worker.kill(cause)
        threading.Thread(target=worker.stop, name=f"stop-{worker.name}", daemon=True).start()
        self.refill()

    def reap_dead_idle(self) -> None:
        for worker in [w for w in self.idle if not w.alive]:
            log.warning("%s: died while idle (%s)", worker.name, describe_exit(worker.poll()))
            self.retire(worker)

    def refill(self, waiting: int = 0) -> None:
        """Start workers until `spares` (or `waiting` callers, if more) are idle or starting,
        within `max_workers`."""
        want = max(self.spares, waiting)
        while (not self._closed and self.failures < MAX_START_FAILURES and self.total < self.max_workers
               and len(self.idle) + len(self.starting) < want):
            self._start_one()

    @property
    def broken(self) -> Optional[str]:
        """Why no worker can be had (nothing live, nothing starting, starts keep failing), or None."""
        if self.failures >= MAX_START_FAILURES and not self.workers and not self.starting:
            return f"no Julia worker can be started: {self.last_error}"
        return None

    # ---- starting (in threads) ---------------------------------------------------------------

    def _start_one(self) -> None:
        self._seq += 1
        worker = self.recipe.new_worker(f"server-worker-{self._seq}")
        self.starting.append(worker)
        threading.Thread(target=self._start, args=(worker,), name=worker.name, daemon=True).start()

    def _start(self, worker: Worker) -> None:
        error: Optional[WorkerStartError] = None
        try:
            worker.start(self.recipe.start_timeout)
            # A notebook's first cell (its value shown) is then ready too.
            self.recipe.prepare(worker, warm=True, first_cell=self.recipe.notebook)
        except WorkerStartError as e:
            worker.stop()
            error = e
        worker.started.set()
        self._post(lambda: self._started(worker, error))

    def _started(self, worker: Worker, error: Optional[WorkerStartError]) -> None:
        self.starting.remove(worker)
        if self._closed:
            threading.Thread(target=worker.stop, daemon=True).start()
            return
        if error is not None and self.recipe.sysimage and "-J" in worker.julia_args:
            log.warning("%s could not start on the system image %s; starting workers without it: %s",
                        worker.name, self.recipe.sysimage, error)
            self.recipe.sysimage = None
        elif error is not None:
            log.error("%s", error)
            self.failures += 1
            self.last_error = error
        else:
            self.failures = 0
            self.counts["started"] += 1
            self.workers.append(worker)
            self.idle.append(worker)
        self.refill()
        self.on_ready()

    # ---- the end -----------------------------------------------------------------------------

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop every worker, lent ones included (their borrowers' calls end with an error)."""
        self._closed = True
        for worker in self.starting:
            worker.cancel()
        threads = [threading.Thread(target=w.stop, args=(timeout, SHUT_DOWN), daemon=True) for w in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for worker in self.starting:
            worker.started.wait(timeout)
        self.workers.clear()
        self.idle.clear()

    def describe(self, lent: Dict[Worker, str]) -> List[Dict[str, object]]:
        """One line per worker for `juliapool status`: name, pid, state, memory."""
        rows = []
        for w in self.workers:
            state = "idle" if w in self.idle else lent.get(w, "held")
            rows.append({"name": w.name, "pid": w.pid, "state": state, "rss_mb": round(w.rss_bytes() / 2**20, 1),
                         "calls": w.calls})
        rows += [{"name": w.name, "pid": w.pid, "state": "starting", "rss_mb": 0.0, "calls": 0} for w in self.starting]
        return rows


def server_recipe(julia_args: Sequence[str] = (), preload: Sequence[str] = (), warmup: Optional[str] = None,
                  julia_path: Optional[str] = None) -> StartRecipe:
    """How the server's workers start: as a pool's (system image if one was built), warmed up for
    notebooks too (kernels lease them), compiled rather than interpreted (they live long)."""
    julia = find_julia(julia_path)
    args = BASE_FLAGS + list(julia_args)
    env = dict(os.environ, JULIAPOOL_INTERPRET_WORKER="0")
    return StartRecipe(julia, args, env, choose_sysimage(julia, args, None), 120.0, list(preload), warmup, True)
