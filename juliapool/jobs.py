"""What a caller waits for on a worker, besides an execution (juliapool.execution): the worker's
hello, and the answer to a short request. `Worker._serve` feeds every job the same way: `on_stream`,
`on_frame`, `on_death`, and its clock (`deadline`, `action`)."""

from __future__ import annotations

import logging
import time
from typing import Optional

from .execution import KILL
from .process import STDERR
from .protocol import Frame, Reply

log = logging.getLogger("juliapool.worker")


class Waiting:
    """A job that waits for one frame until a deadline (then the worker is killed: `late`)."""

    def __init__(self, timeout: float) -> None:
        self.deadline_at = time.monotonic() + timeout
        self.frame: Optional[Frame] = None
        self.late = False

    @property
    def complete(self) -> bool:
        return self.frame is not None

    def deadline(self) -> Optional[float]:
        return self.deadline_at

    def action(self, now: float) -> str:
        self.late = now >= self.deadline_at
        return KILL if self.late else ""

    def on_death(self) -> None:
        pass


class Hello(Waiting):
    """Job: wait for the worker's HELLO, keeping its stderr for the error if it never comes."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self.stderr = bytearray()

    def on_stream(self, name: str, data: bytes) -> None:
        if name == STDERR:
            self.stderr += data
            del self.stderr[:-65536]

    def on_frame(self, frame: Frame) -> Optional[str]:
        if frame.kind == Reply.HELLO:
            self.frame = frame
        return None


class Answer(Waiting):
    """Job: wait for the RESULT of one short request; output meanwhile belongs to nobody."""

    def __init__(self, rid: int, timeout: float) -> None:
        super().__init__(timeout)
        self.id = rid

    def on_stream(self, name: str, data: bytes) -> None:
        # Completion code may print: nobody's output. The worker logs its own errors in a request to
        # stderr (it answers with an empty result): keep those in our log.
        if name == STDERR and data:
            log.warning("%s", data.decode("utf-8", errors="replace").rstrip())

    def on_frame(self, frame: Frame) -> Optional[str]:
        if frame.id == self.id and frame.kind == Reply.RESULT:
            self.frame = frame
        return None
