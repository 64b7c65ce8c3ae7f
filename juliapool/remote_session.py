"""A session on the pool server: `Session`'s API, with its worker leased from the server.

The lease is held from the first call until `close()` (or the client's end): every call goes to the
worker directly. The server keeps the session's worker and module when the client disconnects, so
a client that asks for the same key later gets the same state back (`attached` says so). When the
worker died (during a call here, while idle, or with a client that died mid-call), the server says
how with the next lease, and the next call's reply carries it as today (`worker_restarted`,
`restarted_after`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple, TypeVar

from .errors import WorkerDiedError
from .execution import DisplayCallback, InputCallback, OutputCallback
from .protocol import PLAIN, cell_options, session_module
from .result import DIED_IDLE, SERVER_GONE, SHUT_DOWN, CodeExecResult, ExecReply, WorkerEnd
from .session import _byte_offset, _char_offset
from .wire import Op
from .worker import Worker

if TYPE_CHECKING:
    from .client import Lease, PoolClient

T = TypeVar("T")
log = logging.getLogger(__name__)


class RemoteSession:
    """One module on one worker of the server, under `key`."""

    def __init__(self, client: "PoolClient", key: str, keep: bool = True) -> None:
        self.client = client
        self.key = key
        self.keep = keep
        self.module = session_module(key)
        self.attached = False  # the last lease found this session's state on the server
        self._lease: Optional["Lease"] = None
        self._lost: Optional[WorkerEnd] = None
        self._calls = threading.Lock()
        self._running = False

    # ---- executing ---------------------------------------------------------------------------

    def execute(self, code: str, timeout: Optional[float] = None, *, on_output: Optional[OutputCallback] = None,
                memory_limit_mb: Optional[float] = None, output_limit_bytes: Optional[int] = None) -> CodeExecResult:
        return self.run(code, timeout=timeout, kernel=False, on_output=on_output, memory_limit_mb=memory_limit_mb,
                        output_limit_bytes=output_limit_bytes).to_result()

    def run(self, code: str, *, timeout: Optional[float] = None, filename: str = "none",
            soft_scope: bool = True, want_result: bool = True, allow_input: bool = False, kernel: bool = True,
            on_output: Optional[OutputCallback] = None, on_display: Optional[DisplayCallback] = None,
            on_input: Optional[InputCallback] = None, memory_limit_mb: Optional[float] = None,
            output_limit_bytes: Optional[int] = None, history: Optional[int] = None) -> ExecReply:
        """As `Session.run`: notebook semantics with `kernel=True`, `julia -e` semantics without;
        `history` (a cell's number) keeps `ans`, `In` and `Out`."""
        limits = self.client.limits(timeout, memory_limit_mb, output_limit_bytes)
        options = cell_options(soft_scope, want_result, allow_input) if kernel else PLAIN
        filename = filename if kernel else "none"
        with self._calls:
            for attempt in range(3):
                lease = self._acquire()
                self._running = True
                try:
                    with lease.busy() as worker:
                        reply = worker.execute(code, module=self.module, filename=filename, options=options,
                                               limits=limits, on_output=on_output, on_display=on_display,
                                               on_input=on_input,
                                               history="" if history is None or not kernel else str(history))
                    return self._annotate(self.client.count(reply))
                except WorkerDiedError as e:  # died while idle, before it read the code
                    self._give_back_dead(WorkerEnd(lease.worker.poll(), DIED_IDLE))
                    error = e
                finally:
                    self._running = False
            raise error

    async def execute_async(self, code: str, timeout: Optional[float] = None, *,
                            on_output: Optional[OutputCallback] = None, memory_limit_mb: Optional[float] = None,
                            output_limit_bytes: Optional[int] = None) -> CodeExecResult:
        """`execute` for asyncio (calls of one session still run one at a time, in order)."""
        limits = self.client.limits(timeout, memory_limit_mb, output_limit_bytes)
        loop = asyncio.get_running_loop()
        while not self._calls.acquire(blocking=False):
            await asyncio.sleep(0.005)
        try:
            for attempt in range(3):
                lease = self._lease if self._lease is not None else await loop.run_in_executor(None, self._acquire)
                self._running = True
                try:
                    with lease.busy() as worker:
                        reply = await worker.execute_async(code, module=self.module, limits=limits,
                                                           on_output=on_output)
                    return self._annotate(self.client.count(reply)).to_result()
                except WorkerDiedError as e:
                    self._give_back_dead(WorkerEnd(lease.worker.poll(), DIED_IDLE))
                    error = e
                finally:
                    self._running = False
            raise error
        finally:
            self._calls.release()

    def _annotate(self, reply: ExecReply) -> ExecReply:
        """What the session knows: this call ran on a fresh worker, or its state died here."""
        if self._lost is not None:
            reply.worker_restarted, reply.restarted_after = True, self._lost
            self._lost = None
        if reply.worker_end is not None:
            reply.state_lost = True
            self._give_back_dead(reply.worker_end)
        return reply

    # ---- the lease -----------------------------------------------------------------------------

    def _acquire(self) -> "Lease":
        lease = self._lease
        if lease is not None and lease.conn.gone:
            self._let_go()
        elif lease is not None:
            if lease.worker.alive:
                return lease
            self._give_back_dead(WorkerEnd(lease.worker.poll(), DIED_IDLE))
        self.client._check_open()  # a client that can revive its server connects to a new one here
        lease = self.client._lease(Op.SESSION, key=self.key, keep=self.keep)
        lost = lease.info.get("lost")
        if lost:
            self._lost = WorkerEnd(lost.get("returncode"), lost.get("cause", DIED_IDLE), lost.get("limit_mb"))
        self.attached = bool(lease.info.get("attached"))
        self._lease = lease
        return lease

    def _give_back_dead(self, end: WorkerEnd) -> None:
        """The worker ended: return its lease with how, so the server tells the next lease."""
        lease, self._lease = self._lease, None
        if lease is not None:
            self.client._return(lease, end=dataclasses.asdict(end))

    def server_gone(self) -> None:
        """The server went away (the client's reader thread says so): let go of an idle worker now,
        so that it ends; one that runs a call is let go at the next call."""
        if not self._running and self._calls.acquire(blocking=False):
            try:
                if self._lease is not None:
                    self._let_go()
            finally:
                self._calls.release()

    def _let_go(self) -> None:
        """Close our ends of a worker whose server is gone; the next call says the state went with it."""
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.close()
            self._lost = WorkerEnd(None, SERVER_GONE)

    def interrupt(self) -> bool:
        """SIGINT to the running call (thread-safe); the worker is killed if it does not stop within
        the client's interrupt_grace. Returns whether a call ran."""
        lease = self._lease
        return bool(self._running and lease is not None and lease.worker.interrupt())

    # ---- front-end helpers ---------------------------------------------------------------------

    def _ask(self, ask: Callable[[Worker], T]) -> T:
        with self._calls:
            lease = self._acquire()
            with lease.busy() as worker:
                return ask(worker)

    def complete(self, code: str, cursor_pos: int) -> Tuple[List[str], int, int]:
        matches, start, stop = self._ask(lambda w: w.complete(self.module, code, _byte_offset(code, cursor_pos)))
        return matches, _char_offset(code, start), _char_offset(code, stop)

    def inspect(self, code: str, cursor_pos: int, detail_level: int = 0) -> Dict[str, str]:
        return self._ask(lambda w: w.inspect(self.module, code, _byte_offset(code, cursor_pos), detail_level))

    def is_complete(self, code: str) -> Tuple[str, str]:
        return self._ask(lambda w: w.is_complete(code))

    def prepare(self) -> None:
        """Lease the session's worker now, so that the first call does not wait for it (a kernel
        does this while Jupyter connects to it). Errors are left for the first call to raise."""
        with self._calls:
            try:
                self._acquire()
            except Exception as e:  # noqa: BLE001  (the first call leases again and raises it)
                log.debug("could not lease session %s ahead of its first call: %s", self.key, e)

    def close(self) -> None:
        """Forget the session on the server: its module is dropped, its worker serves others."""
        with self._calls:
            if self.client.closed or self.client._conn.gone:
                return
            lease = self._lease or self._acquire()
            self._lease = None
            try:
                with lease.busy() as worker:
                    worker.drop(self.module)
            except WorkerDiedError:
                pass
            self.client._return(lease, close=True)

    def release(self) -> None:
        """Give the worker back to the server but keep the session there (a later call, from this
        client or another, leases it again with its state)."""
        lease = self._lease
        if self._running and lease is not None:  # a call runs: end it (its result says so) rather than wait
            lease.worker.kill(SHUT_DOWN)
        with self._calls:
            lease, self._lease = self._lease, None
            if lease is not None:
                self.client._return(lease)

    def __enter__(self) -> "RemoteSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
