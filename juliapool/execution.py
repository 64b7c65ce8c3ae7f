"""One execution on a worker: its output, display events and end, put back in the order Julia made them.

The user's stdout and stderr and the reply frames travel on three different pipes, so they are read in
no particular order. Markers (PROTOCOL.md) restore it: before each `display`, the worker writes a
marker `nonce + seq` to both streams; a stream's output after that marker waits until the display
`seq` has gone out, and the display goes out once both streams have reached its marker and its `M`
frame has come. The end marker closes each stream.
"""

from __future__ import annotations

import codecs
import logging
import time
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple, Union

from . import protocol
from .process import STREAMS
from .protocol import END_SEQ, Done, Frame, MarkerScanner, Reply
from .result import (EXITED, MEMORY_LIMIT, NOT_INTERRUPTIBLE, STDIO_CLOSED, TIMEOUT_EXIT_CODE, ExecReply, WorkerEnd,
                     describe_end, truncation_note)

log = logging.getLogger(__name__)

OutputCallback = Callable[[str, str], None]  # (stream name, text)
DisplayCallback = Callable[[Dict[str, str]], None]
InputCallback = Callable[[str, bool], str]  # (prompt, password) -> answer

Item = Union[bytes, Tuple[bytes]]  # output, or a marker's seq

# What the worker should do next for an execution (Execution.action).
INTERRUPT, KILL = "interrupt", "kill"
# A stream that closes before its end marker: either the process is dying (its exit is noticed
# within this time) or the code closed it, and the worker can no longer mark its output.
STDIO_CLOSED_GRACE = 0.5
MEMORY_CHECK_INTERVAL = 0.05  # seconds between two looks at the worker's memory during a call


class Execution:
    """The state of one EXEC request, fed by `Worker` with stream bytes and reply frames.

    It also keeps the call's clock: at `timeout` seconds it asks for an interrupt, and `grace`
    seconds after any interrupt (the timeout's or `Worker.interrupt()`'s) for a kill."""

    def __init__(self, rid: int, nonce: str, on_output: Optional[OutputCallback] = None,
                 on_display: Optional[DisplayCallback] = None, on_input: Optional[InputCallback] = None,
                 print_errors: bool = False, timeout: Optional[float] = None, grace: float = 2.0,
                 output_limit: Optional[int] = None, memory_limit: Optional[int] = None,
                 memory_probe: Optional[Callable[[], int]] = None) -> None:
        self.id = rid
        self.output_limit = output_limit or None  # bytes of output passed on (both streams together)
        self.output_passed = 0
        self.output_truncated = False
        self.memory_limit = memory_limit or None  # bytes of resident memory the worker may use
        self.memory_probe = memory_probe
        self.memory_check_at = time.monotonic() if self.memory_limit and memory_probe else None
        self.print_errors = print_errors  # `julia -e` style: the interrupt's trace goes to stderr
        self.nonce = nonce
        self.on_output = on_output
        self.on_display = on_display
        self.on_input = on_input
        self.scanners = {name: MarkerScanner(nonce) for name in STREAMS}
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in STREAMS}
        self.queues: Dict[str, Deque[Item]] = {name: deque() for name in STREAMS}  # not yet passed on
        self.chunks: Dict[str, List[bytes]] = {name: [] for name in STREAMS}
        self.ended = {name: False for name in STREAMS}  # end marker passed
        self.displays: Deque[Tuple[bytes, dict]] = deque()  # (seq, bundle) not yet passed on
        self.done: Optional[Done] = None
        self.died = False
        self.killed = False  # we killed the worker: the code did not stop after an interrupt
        self.stream_closed_at: Optional[float] = None  # a stream closed before its end marker
        self.cause = ""  # why we kill the worker, if we do (a name from juliapool.result)
        self.timed_out = False
        self.timeout = timeout
        self.grace = grace
        self.timeout_at = time.monotonic() + timeout if timeout else None
        self.interrupted_at: Optional[float] = None  # set by Worker.interrupt (any thread)
        self.callback_error: Optional[BaseException] = None
        self.late_output = False  # the code left a task running (it said so, or printed after the end)

    @property
    def complete(self) -> bool:
        return self.died or (self.done is not None and all(self.ended.values()))

    def saw_interrupt(self) -> bool:
        return self.done is not None and self.done.ename == "InterruptException"

    # ---- the clock -----------------------------------------------------------------------------

    def deadline(self) -> Optional[float]:
        """When `action` has something to say next (None: only events matter)."""
        kill_at = self.interrupted_at + self.grace if self.interrupted_at is not None else None
        closed_at = self.stream_closed_at + STDIO_CLOSED_GRACE if self.stream_closed_at is not None else None
        times = [t for t in (None if self.timed_out else self.timeout_at, kill_at, closed_at, self.memory_check_at)
                 if t is not None]
        return min(times) if times else None

    def action(self, now: float) -> str:
        """What the worker must do now: INTERRUPT (the timeout passed), KILL (an interrupt did not
        stop the code in time, or the code closed its stdio), or "" (nothing)."""
        if self.memory_check_at is not None and now >= self.memory_check_at:
            self.memory_check_at = now + MEMORY_CHECK_INTERVAL
            assert self.memory_probe is not None and self.memory_limit is not None
            if self.memory_probe() > self.memory_limit:
                self.memory_check_at = None
                self.cause = MEMORY_LIMIT
                return KILL
        if self.stream_closed_at is not None and now >= self.stream_closed_at + STDIO_CLOSED_GRACE:
            self.cause = STDIO_CLOSED
            return KILL
        if self.interrupted_at is not None and now >= self.interrupted_at + self.grace:
            self.killed = True
            self.cause = NOT_INTERRUPTIBLE
            return KILL
        if self.timeout_at is not None and now >= self.timeout_at and not self.timed_out:
            self.timed_out = True
            return INTERRUPT
        return ""

    # ---- input from the worker -----------------------------------------------------------------

    def on_stream(self, name: str, data: bytes) -> None:
        """Bytes the worker wrote to a stream; b"" means the stream was closed."""
        if not data:
            if not self.ended[name] and self.stream_closed_at is None:  # no end marker can come now
                self.stream_closed_at = time.monotonic()
            return
        if self.ended[name]:
            self.late_output = True  # after the end marker: a background task's output, nobody's
            return
        self.queues[name].extend(self.scanners[name].feed(data))
        self._pass_on()

    def on_frame(self, frame: Frame) -> Optional[str]:
        """Handle a reply frame; returns an answer to send back for an input request."""
        if frame.id != self.id:
            log.debug("ignoring frame %r for request %d", frame.kind, frame.id)
        elif frame.kind == Reply.DONE:
            self.done = Done.from_frame(frame)
        elif frame.kind == Reply.DISPLAY:
            self.displays.append((frame.fields[0], protocol.bundle_from_fields(frame.fields[1:])))
            self._pass_on()
        elif frame.kind == Reply.INPUT:
            prompt, password = frame.text(0), frame.text(1) == "1"
            answer = self._callback(self.on_input, prompt, password) if self.on_input else ""
            return answer if isinstance(answer, str) else ""
        return None

    def on_death(self) -> None:
        """The worker is gone: pass on everything it managed to write, in the best order we have."""
        self.died = self.done is None or not all(self.ended.values())
        for name in STREAMS:
            self.queues[name].append(self.scanners[name].flush())
            for item in self.queues[name]:
                if not isinstance(item, tuple) and not self.ended[name]:
                    self._emit(name, item)
            self.queues[name].clear()
        for _, bundle in self.displays:
            self._display(bundle)
        self.displays.clear()

    # ---- passing output on in order ------------------------------------------------------------

    def _pass_on(self) -> None:
        moved = True
        while moved:
            moved = any([self._pass_stream(name) for name in STREAMS]) | self._pass_display()

    def _pass_stream(self, name: str) -> bool:
        """Pass on the stream's output up to its next display marker; True if anything moved."""
        queue, moved = self.queues[name], False
        while queue and not isinstance(queue[0], tuple):
            data = queue.popleft()
            assert isinstance(data, bytes)
            self._emit(name, data)
            moved = True
        if queue and queue[0][0] == END_SEQ:
            queue.popleft()
            self.ended[name], moved = True, True
            if any(not isinstance(item, tuple) for item in queue):
                self.late_output = True
            queue.clear()
        return moved

    def _pass_display(self) -> bool:
        """The next display goes once both streams wait at its marker; True if it went."""
        if not self.displays:
            return False
        seq = self.displays[0][0]
        if not all(self.queues[n] and self.queues[n][0] == (seq,) for n in STREAMS):
            return False
        for name in STREAMS:
            self.queues[name].popleft()
        self._display(self.displays.popleft()[1])
        return True

    def _emit(self, name: str, data: bytes) -> None:
        if not data or self.output_truncated:
            return
        if self.output_limit is not None and self.output_passed + len(data) > self.output_limit:
            data = data[:self.output_limit - self.output_passed]
            self.output_truncated = True  # the rest is still read (and its markers found), and dropped
            self._emit_now(name, data)
            self._emit_now(name, truncation_note(self.output_limit).encode())
            return
        self.output_passed += len(data)
        self._emit_now(name, data)

    def _emit_now(self, name: str, data: bytes) -> None:
        if not data:
            return
        self.chunks[name].append(data)
        if self.on_output is not None:
            text = self.decoders[name].decode(data)
            if text:
                self._callback(self.on_output, name, text)

    def _display(self, bundle: dict) -> None:
        if self.on_display is not None:
            self._callback(self.on_display, bundle)

    def _callback(self, fn: Callable, *args: object) -> object:
        """Call a caller's callback. If it raises, stop calling callbacks and keep the error for the
        caller: the execution itself goes on, so the worker is clean before anyone else gets it."""
        if self.callback_error is not None:
            return None
        try:
            return fn(*args)
        except BaseException as e:  # noqa: B036 - re-raised by Worker.execute once the run is over
            self.callback_error = e
            return None

    # ---- the result ----------------------------------------------------------------------------

    def reply(self, returncode: Optional[int], kill_cause: str = "") -> ExecReply:
        """The result, once the execution is complete or its worker is gone. `kill_cause` says why
        juliapool killed the worker, if it did (a name from juliapool.result)."""
        self._report_interrupt()
        raw = {n: b"".join(self.chunks[n]) for n in STREAMS}
        out = {n: raw[n].decode("utf-8", errors="replace") for n in STREAMS}
        rep = ExecReply(stdout=out["stdout"], stderr=out["stderr"], output_truncated=self.output_truncated,
                        stdout_bytes=raw["stdout"], stderr_bytes=raw["stderr"])
        if self.done is not None:
            d = self.done
            rep.status, rep.ename, rep.evalue, rep.traceback, rep.result = d.status, d.ename, d.evalue, d.traceback, d.result
            self.late_output = self.late_output or d.lingering
            rep.exit_code = 0 if d.status == "ok" else 1
        if self.died:
            self._died(rep, returncode, kill_cause)
        if self.timed_out:
            self._timed_out(rep)
        elif self.killed:
            rep.ename = "InterruptException"
        return rep

    def _died(self, rep: ExecReply, returncode: Optional[int], kill_cause: str) -> None:
        cause = kill_cause or self.cause or EXITED
        limit_mb = self.memory_limit / 2**20 if cause == MEMORY_LIMIT and self.memory_limit else None
        rep.worker_end = WorkerEnd(returncode, cause, limit_mb)
        rep.status = "error"
        rep.exit_code = returncode if returncode is not None else -9
        rep.ename, rep.evalue = "WorkerDied", describe_end(rep.worker_end)

    def _timeout_note(self) -> str:
        return f"Execution timed out after {self.timeout:g} seconds"

    def _report_interrupt(self) -> None:
        """Julia leaves our interrupts to us: a timeout gets the seed's note (as in spawn mode),
        an explicit interrupt Julia's own trace, both on stderr and to the output callback."""
        if self.timed_out:
            text = self._timeout_note()
        elif self.print_errors and self.saw_interrupt():
            text = self.done.traceback if self.done else ""
        else:
            return
        printed = b"".join(self.chunks["stderr"])
        sep = "" if not printed or printed.endswith(b"\n") else "\n"
        self._emit_now("stderr", (sep + text.rstrip("\n") + "\n").encode())

    def _timed_out(self, rep: ExecReply) -> None:
        rep.timed_out = True
        rep.status = "error"
        rep.exit_code = TIMEOUT_EXIT_CODE
        rep.ename, rep.evalue = "TimeoutError", self._timeout_note()
