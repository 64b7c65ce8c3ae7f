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
import signal
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple, Union

from . import protocol
from .protocol import END_SEQ, Frame, MarkerScanner
from .result import TIMEOUT_EXIT_CODE, ExecReply

log = logging.getLogger(__name__)

OutputCallback = Callable[[str, str], None]  # (stream name, text)
DisplayCallback = Callable[[Dict[str, str]], None]
InputCallback = Callable[[str, bool], str]  # (prompt, password) -> answer

STREAMS = ("stdout", "stderr")
Item = Union[bytes, Tuple[bytes]]  # output, or a marker's seq


def describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "the Julia worker stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the Julia worker was killed by signal {-returncode} ({name})"
    return f"the Julia worker exited with code {returncode}"


class Execution:
    """The state of one `E` request, fed by `Worker` with stream bytes and reply frames."""

    def __init__(self, rid: int, nonce: str, on_output: Optional[OutputCallback],
                 on_display: Optional[DisplayCallback], on_input: Optional[InputCallback],
                 print_errors: bool = False) -> None:
        self.id = rid
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
        self.done: Optional[Frame] = None
        self.died = False
        self.killed = False
        self.timed_out = False
        self.timeout: Optional[float] = None
        self.interrupted_at: Optional[float] = None
        self.callback_error: Optional[BaseException] = None
        self.late_output = False  # the code left a task running (it said so, or printed after the end)
        self.closed_streams: List[str] = []  # the code closed its stdout or stderr (end of file here)

    @property
    def complete(self) -> bool:
        return self.died or (self.done is not None and all(self.ended.values()))

    def saw_interrupt(self) -> bool:
        return self.done is not None and self.done.text(1) == "InterruptException"

    # ---- input from the worker -----------------------------------------------------------------

    def on_stream(self, name: str, data: bytes) -> None:
        if self.ended[name]:
            self.late_output = True  # after the end marker: a background task's output, nobody's
            return
        self.queues[name].extend(self.scanners[name].feed(data))
        self._pass_on()

    def on_stream_closed(self, name: str) -> None:
        """End of file on a stream: the code closed it (`close(stdout)`), so no end marker will come."""
        if self.ended[name]:
            return
        self.closed_streams.append(name)
        self.queues[name].append(self.scanners[name].flush())
        for item in self.queues[name]:
            if not isinstance(item, tuple):
                self._emit(name, item)
        self.queues[name].clear()
        self.ended[name] = True
        self._pass_on()

    def on_frame(self, frame: Frame) -> Optional[str]:
        """Handle a reply frame; returns an answer to send back for an input request."""
        if frame.id != self.id:
            log.debug("ignoring frame %r for request %d", frame.kind, frame.id)
        elif frame.kind == "O":
            self.done = frame
        elif frame.kind == "M":
            self.displays.append((frame.fields[0], protocol.bundle_from_fields(frame.fields[1:])))
            self._pass_on()
        elif frame.kind == "N":
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

    def reply(self, returncode: Optional[int], kill_reason: str = "") -> ExecReply:
        self._report_interrupt()
        out = {n: b"".join(self.chunks[n]).decode("utf-8", errors="replace") for n in STREAMS}
        rep = ExecReply(stdout=out["stdout"], stderr=out["stderr"])
        if self.done is not None:
            status, ename, evalue, tb, reason = self.done.texts()[:5]
            rep.status, rep.ename, rep.evalue, rep.traceback = status, ename, evalue, tb
            rep.retire_reason = reason or ("task" if self.late_output else "")
            rep.result = protocol.bundle_from_fields(self.done.fields[5:])
            rep.exit_code = 0 if status == "ok" else 1
        if self.closed_streams:
            rep.retire_reason = "stdio"
        if self.died:
            self._died(rep, returncode, kill_reason)
        if self.timed_out:
            self._timed_out(rep)
        elif self.killed:
            rep.ename = "InterruptException"
            rep.evalue = "the code did not stop after an interrupt, so its worker was killed"
        return rep

    def _died(self, rep: ExecReply, returncode: Optional[int], kill_reason: str) -> None:
        rep.worker_died = True
        rep.status = "error"
        rep.exit_code = returncode if returncode is not None else -9
        if not self.killed:
            rep.ename, rep.evalue = "WorkerDied", kill_reason or describe_exit(returncode)
            if kill_reason or (returncode or 0) < 0:  # not the code's own exit(n): say what happened
                rep.stderr += f"juliapool: {rep.evalue}\n"

    def _timeout_note(self) -> str:
        return f"Execution timed out after {self.timeout:g} seconds"

    def _report_interrupt(self) -> None:
        """Julia leaves our interrupts to us: a timeout gets the seed's note (as in spawn mode),
        an explicit interrupt Julia's own trace, both on stderr and to the output callback."""
        if self.timed_out:
            text = self._timeout_note()
        elif self.print_errors and self.saw_interrupt():
            text = self.done.text(3) if self.done else ""
        else:
            return
        printed = b"".join(self.chunks["stderr"])
        sep = "" if not printed or printed.endswith(b"\n") else "\n"
        self._emit("stderr", (sep + text.rstrip("\n") + "\n").encode())

    def _timed_out(self, rep: ExecReply) -> None:
        rep.timed_out = True
        rep.status = "error"
        rep.exit_code = TIMEOUT_EXIT_CODE
        rep.ename, rep.evalue = "TimeoutError", self._timeout_note()
