"""Session: worker affinity. Every call of a session reaches the same worker and the same module."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from .errors import WorkerDiedError
from .execution import DisplayCallback, InputCallback, OutputCallback
from .protocol import PLAIN, cell_options, session_module
from .result import DIED_IDLE, CodeExecResult, ExecReply, WorkerEnd
from .worker import Worker

if TYPE_CHECKING:
    from .pool import JuliaProcessPool


def _byte_offset(text: str, chars: int) -> int:
    return len(text[:chars].encode("utf-8"))


def _char_offset(text: str, nbytes: int) -> int:
    return len(text.encode("utf-8")[:nbytes].decode("utf-8", errors="ignore"))


class Session:
    """State that persists across calls: one module on one pinned worker.

    If that worker dies (or is killed after an interrupt that did not stop the code), the session
    moves to another worker with a fresh module: the result of the call it died in says
    `state_lost`, and the next result `worker_restarted` (the facts; `to_result()` adds the notes).
    """

    def __init__(self, pool: "JuliaProcessPool", key: str) -> None:
        self.pool = pool
        self.key = key
        self.module = session_module(key)
        self._worker: Optional[Worker] = None
        self._lost: Optional[WorkerEnd] = None  # how the worker with earlier state ended, for the next result
        self._calls = threading.Lock()  # a session runs one call at a time, in order
        self._running = False

    # ---- executing ---------------------------------------------------------------------------

    def execute(self, code: str, timeout: Optional[float] = None, *, on_output: Optional[OutputCallback] = None,
                memory_limit_mb: Optional[float] = None, output_limit_bytes: Optional[int] = None) -> CodeExecResult:
        """Like `JuliaProcessPool.execute`, in this session's persistent module."""
        return self.run(code, timeout=timeout, kernel=False, on_output=on_output, memory_limit_mb=memory_limit_mb,
                        output_limit_bytes=output_limit_bytes).to_result()

    async def execute_async(self, code: str, timeout: Optional[float] = None, *,
                            on_output: Optional[OutputCallback] = None, memory_limit_mb: Optional[float] = None,
                            output_limit_bytes: Optional[int] = None) -> CodeExecResult:
        """`execute` for asyncio (calls of one session still run one at a time, in order)."""
        limits = self.pool.limits(timeout, memory_limit_mb, output_limit_bytes)
        while not self._calls.acquire(blocking=False):  # another call of this session runs
            await asyncio.sleep(0.005)
        try:
            for attempt in range(3):
                worker = await self._acquire_async()
                self._running = True
                try:
                    reply = await worker.execute_async(code, module=self.module, limits=limits, on_output=on_output)
                    return self._annotate(self.pool.count(reply)).to_result()
                except WorkerDiedError as e:  # died while idle, before it read the code
                    self._lost = WorkerEnd(worker.poll(), DIED_IDLE)
                    error = e
                finally:
                    self._running = False
                    self._release(worker)
            raise error
        finally:
            self._calls.release()

    def run(self, code: str, *, timeout: Optional[float] = None, filename: str = "none",
            soft_scope: bool = True, want_result: bool = True, allow_input: bool = False, kernel: bool = True,
            on_output: Optional[OutputCallback] = None, on_display: Optional[DisplayCallback] = None,
            on_input: Optional[InputCallback] = None, memory_limit_mb: Optional[float] = None,
            output_limit_bytes: Optional[int] = None) -> ExecReply:
        """Run a cell. With `kernel=True` (notebook semantics): REPL soft scope, special cells
        (`?help`, `;shell`, `]pkg`), `display` to `on_display`, the last value's MIME bundle in
        `result`, stdin through `on_input`. With `kernel=False`: `julia -e` semantics, like `execute`."""
        limits = self.pool.limits(timeout, memory_limit_mb, output_limit_bytes)
        if kernel:
            options = cell_options(soft_scope, want_result, allow_input)
        else:
            options, filename = PLAIN, "none"
        with self._calls:
            for attempt in range(3):
                worker = self._acquire()
                self._running = True
                try:
                    reply = worker.execute(code, module=self.module, filename=filename, options=options, limits=limits,
                                           on_output=on_output, on_display=on_display, on_input=on_input)
                    return self._annotate(self.pool.count(reply))
                except WorkerDiedError as e:  # died while idle, before it read the code
                    self._lost = WorkerEnd(worker.poll(), DIED_IDLE)
                    error = e
                finally:
                    self._running = False
                    self._release(worker)
            raise error

    def _annotate(self, reply: ExecReply) -> ExecReply:
        """Add what the session knows: this call ran on a fresh worker, or its state died here."""
        if self._lost is not None:
            reply.worker_restarted, reply.restarted_after = True, self._lost
            self._lost = None
        if reply.worker_end is not None:
            reply.state_lost = True
            self._lost = reply.worker_end
        return reply

    def _acquire(self) -> Worker:
        while True:
            worker = self._worker
            if worker is None:
                worker = self.pool.checkout()
                worker.sessions.add(self.key)
                self._worker = worker
                return worker
            try:
                return self.pool.checkout(want=worker)
            except LookupError:
                self._worker = None
                self._lost = WorkerEnd(worker.poll(), DIED_IDLE)

    async def _acquire_async(self) -> Worker:
        while True:
            worker = self._worker
            if worker is None:
                worker = await self.pool.checkout_async()
                worker.sessions.add(self.key)
                self._worker = worker
                return worker
            try:
                return await self.pool.checkout_async(want=worker)
            except LookupError:
                self._worker = None
                self._lost = WorkerEnd(worker.poll(), DIED_IDLE)

    def _release(self, worker: Worker) -> None:
        if not worker.alive:
            worker.sessions.discard(self.key)
            self._worker = None
        self.pool.checkin(worker)

    def interrupt(self) -> bool:
        """Interrupt this session's running call (SIGINT; the worker is killed and replaced if the code
        does not stop within the pool's `interrupt_grace`). Thread-safe. Returns whether a call ran."""
        worker = self._worker
        return bool(self._running and worker is not None and worker.interrupt())

    # ---- front-end helpers (the kernel's completion, inspection, is_complete) ------------------

    def _ask(self, ask, any_worker: bool = False):
        """Run `ask(worker)` on the session's worker (or any free one), one call at a time."""
        with self._calls:
            worker = self.pool.checkout() if any_worker else self._acquire()
            try:
                return ask(worker)
            finally:
                self.pool.checkin(worker) if any_worker else self._release(worker)

    def complete(self, code: str, cursor_pos: int) -> Tuple[List[str], int, int]:
        """Completions at `cursor_pos` (characters); returns (matches, start, end) in characters."""
        matches, start, stop = self._ask(lambda w: w.complete(self.module, code, _byte_offset(code, cursor_pos)))
        return matches, _char_offset(code, start), _char_offset(code, stop)

    def inspect(self, code: str, cursor_pos: int, detail_level: int = 0) -> Dict[str, str]:
        """Documentation of the name at `cursor_pos` as a MIME bundle ({} if none)."""
        return self._ask(lambda w: w.inspect(self.module, code, _byte_offset(code, cursor_pos), detail_level))

    def is_complete(self, code: str) -> Tuple[str, str]:
        """("complete" | "incomplete" | "invalid", indent)."""
        return self._ask(lambda w: w.is_complete(code), any_worker=True)

    def close(self) -> None:
        """Forget the session's module (its worker may then be recycled)."""
        with self._calls:
            worker, self._worker = self._worker, None
            if worker is None or self.pool.closed:
                return
            try:
                worker = self.pool.checkout(want=worker)
            except LookupError:
                return
            try:
                worker.drop(self.module)
            finally:
                worker.sessions.discard(self.key)
                self.pool.checkin(worker)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
