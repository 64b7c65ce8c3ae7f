"""JuliaPoolActor: what runs inside each Ray actor of a RayJuliaPool. This module never imports Ray.

`juliapool.ray` turns the class into a Ray actor (threaded: up to `workers` calls at once), so Ray
creates it in the actor's own process, and its JuliaProcessPool starts Julia on the node where Ray
placed the actor. A ReaperGuard (juliapool/reaper.py) kills those workers if the actor process dies
without shutting its pool down (ray.kill is a SIGKILL: no atexit hook runs).

Each call method is a generator of two items: the actor's `incarnation` (a new id each time Ray
creates or restarts the actor), then the result. The driver asks Ray to pause the generator after the
first item until the driver has taken it (a backpressure of one object), so the code runs only once
the driver has seen the first item. A call whose first item never reached the driver did not run, and
may be retried on another actor; one that died after it may have run, and is reported as such.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any, Dict, Iterator, List, Optional

from .pool import JuliaProcessPool
from .reaper import ReaperGuard
from .result import CodeExecResult
from .session import Session

log = logging.getLogger(__name__)


class JuliaPoolActor:
    """One JuliaProcessPool of `workers` Julia processes, with the sessions the driver pinned here."""

    def __init__(self, workers: int, pool_kwargs: Dict[str, Any]) -> None:
        self.incarnation = uuid.uuid4().hex
        self._pool: Optional[JuliaProcessPool] = None
        # The guard comes first: workers begin to start inside JuliaProcessPool's constructor.
        self._guard = ReaperGuard(lambda: self._pool.worker_pids() if self._pool else [])
        try:
            self._pool = JuliaProcessPool(size=workers, **pool_kwargs)
        except BaseException:
            self._guard.close()
            raise
        self._guard.update()
        self._sessions: Dict[str, Session] = {}
        self._lock = threading.Lock()
        log.info("juliapool actor %s on %s: %d Julia workers", self.incarnation[:8], socket.gethostname(), workers)

    @property
    def pool(self) -> JuliaProcessPool:
        assert self._pool is not None
        return self._pool

    # ---- calls (generators: incarnation, then the result) ----------------------------------

    def execute(self, code: str, timeout: Optional[float]) -> Iterator[Any]:
        yield self.incarnation
        self._guard.update()  # a worker started since the guard's last look may take this call
        yield self.pool.execute(code, timeout=timeout)

    def session_execute(self, key: str, code: str, timeout: Optional[float]) -> Iterator[Any]:
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = self.pool.session(key)
        yield self.incarnation
        self._guard.update()
        result: CodeExecResult = session.execute(code, timeout=timeout)
        yield result

    # ---- control (their own concurrency group: never queued behind running code) -----------

    def close_session(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def stats(self) -> Dict[str, Any]:
        """The pool's stats, and where this actor runs."""
        return {**self.pool.get_stats(), "incarnation": self.incarnation, "host": socket.gethostname(),
                "pid": os.getpid(), "guard_pid": self._guard.pid, "worker_pids": self.worker_pids()}

    def worker_pids(self) -> List[int]:
        return self.pool.worker_pids()

    def ready(self) -> str:
        return self.incarnation

    def shutdown(self) -> None:
        """Stop every Julia worker, then let the guard go (nothing is left for it to kill)."""
        self.pool.shutdown()
        self._guard.close()
