"""Session: worker affinity. Every call of a session reaches the same worker and the same module."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from .errors import JuliaPoolError, WorkerDiedError
from .result import CodeExecResult, ExecReply
from .execution import DisplayCallback, InputCallback, OutputCallback, describe_exit
from .protocol import bundle_from_fields
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
    moves to another worker with a fresh module, and its next result says so (`worker_restarted`,
    and a note at the top of stderr).
    """

    def __init__(self, pool: "JuliaProcessPool", key: str) -> None:
        self.pool = pool
        self.key = key
        self.module = "session:" + key
        self._worker: Optional[Worker] = None
        self._lost: Optional[str] = None  # why earlier state is gone, told with the next result
        self._calls = threading.Lock()  # a session runs one call at a time, in order
        self._running = False
        self._generation = 0  # bumped by reset(): each generation has its own module

    # ---- executing ---------------------------------------------------------------------------

    def execute(self, code: str, timeout: Optional[float] = None, *,
                on_output: Optional[OutputCallback] = None) -> CodeExecResult:
        """Like `JuliaProcessPool.execute`, in this session's persistent module."""
        return self.run(code, timeout=timeout, kernel=False, on_output=on_output).to_result()

    def run(self, code: str, *, timeout: Optional[float] = None, filename: str = "none",
            soft_scope: bool = True, want_result: bool = True, allow_input: bool = False, kernel: bool = True,
            on_output: Optional[OutputCallback] = None, on_display: Optional[DisplayCallback] = None,
            on_input: Optional[InputCallback] = None) -> ExecReply:
        """Run a cell. With `kernel=True` (notebook semantics): REPL soft scope, special cells
        (`?help`, `;shell`, `]pkg`), `display` to `on_display`, the last value's MIME bundle in
        `result`, stdin through `on_input`. With `kernel=False`: `julia -e` semantics, like `execute`."""
        if kernel:
            flags = "k" + ("s" if soft_scope else "") + ("r" if want_result else "") + ("i" if allow_input else "")
        else:
            flags, filename = "p", "none"
        with self._calls:
            for attempt in range(3):
                worker = self._acquire()
                self._running = True
                try:
                    reply = worker.execute(code, module=self.module, filename=filename, flags=flags,
                                           timeout=self.pool._timeout(timeout), grace=self.pool.interrupt_grace,
                                           on_output=on_output, on_display=on_display, on_input=on_input)
                    return self._annotate(self.pool.count(reply))
                except WorkerDiedError as e:  # died while idle, before it read the code
                    self._lost = f"the session's worker died while idle ({e})"
                    error = e
                finally:
                    self._running = False
                    self._release(worker)
            raise error

    def _annotate(self, reply: ExecReply) -> ExecReply:
        if self._lost is not None:
            reply.worker_restarted = True
            reply.stderr = f"juliapool: {self._lost}; this call ran on a new worker, earlier state is gone\n" + reply.stderr
            self._lost = None
        if reply.worker_died:
            why = reply.evalue or describe_exit(reply.exit_code)
            self._lost = f"the session's worker ended ({why})"
            note = "the session's state (variables, functions) is lost; the next call runs on a new worker"
            reply.evalue = f"{why}; {note}"
            reply.stderr += f"juliapool: {why}; {note}\n"
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
                self._lost = f"the session's worker died while idle ({describe_exit(worker.poll())})"

    def _release(self, worker: Worker) -> None:
        if worker.alive and worker.dirty_reason == "stdio":  # the pool retires it: say why next time
            self._lost = "the session's code closed the worker's stdout or stderr"
        if not worker.alive or worker.dirty_reason == "stdio":
            worker.sessions.discard(self.key)
            self._worker = None
        self.pool.checkin(worker)

    def reset(self) -> None:
        """Start the session afresh: a new module on the same warm worker, and the process state a
        new `julia` would see (ENV and working directory of the worker's start, the global RNG
        reseeded). If the session's code left what cannot be undone (type piracy, changes to Main,
        tasks; `ExecReply.retire_reason`), the session moves to a fresh worker instead, and the old
        one is retired once no session lives there."""
        with self._calls:
            worker, self._worker = self._worker, None
            old_module = self.module
            self._generation += 1
            self.module = f"session:{self.key}#{self._generation}"
            self._lost = None
            if worker is None or self.pool.closed:
                return
            try:
                worker = self.pool.checkout(want=worker)
            except LookupError:
                return
            try:
                worker.request("D", [old_module])
                if worker.alive and not worker.dirty:
                    reply = worker.execute("nothing", module=self.module, flags="z", timeout=30.0)
                    if reply.status == "ok" and not reply.retire_reason:
                        self._worker = worker
            except JuliaPoolError:
                pass
            finally:
                if self._worker is None:
                    worker.sessions.discard(self.key)
                self.pool.checkin(worker, served=False)

    def interrupt(self) -> bool:
        """Interrupt this session's running call (SIGINT; the worker is killed and replaced if the code
        does not stop within the pool's `interrupt_grace`). Thread-safe. Returns whether a call ran."""
        worker = self._worker
        return bool(self._running and worker is not None and worker.interrupt())

    # ---- front-end helpers (the kernel's completion, inspection, is_complete) ------------------

    def _request(self, kind: str, fields: List[str], any_worker: bool = False):
        with self._calls:
            worker = self.pool.checkout() if any_worker else self._acquire()
            try:
                return worker.request(kind, fields)
            finally:
                self.pool.checkin(worker) if any_worker else self._release(worker)

    def complete(self, code: str, cursor_pos: int) -> Tuple[List[str], int, int]:
        """Completions at `cursor_pos` (characters); returns (matches, start, end) in characters."""
        frame = self._request("C", [self.module, code, str(_byte_offset(code, cursor_pos))])
        start, stop = (_char_offset(code, int(frame.text(i))) for i in (0, 1))
        return frame.texts(2), start, stop

    def inspect(self, code: str, cursor_pos: int, detail_level: int = 0) -> Dict[str, str]:
        """Documentation of the name at `cursor_pos` as a MIME bundle ({} if none)."""
        frame = self._request("I", [self.module, code, str(_byte_offset(code, cursor_pos)), str(detail_level)])
        return bundle_from_fields(frame.fields[1:]) if frame.text(0) == "1" else {}

    def is_complete(self, code: str) -> Tuple[str, str]:
        """("complete" | "incomplete" | "invalid", indent)."""
        frame = self._request("K", [code], any_worker=True)
        return frame.text(0), frame.text(1)

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
                worker.request("D", [self.module])
            finally:
                worker.sessions.discard(self.key)
                self.pool.checkin(worker)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
