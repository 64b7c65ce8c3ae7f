"""Output of a cell on its way to the front end, in fewer `stream` messages."""

from __future__ import annotations

import threading
from typing import Callable, List, Optional

STREAM_FLUSH_INTERVAL = 0.05  # seconds output may wait to be sent with what follows it


class StreamBatcher:
    """Collects the small chunks a worker prints into fewer `stream` messages.

    Julia writes output in many small pieces; one message per piece would flood the front end.
    Text waits at most STREAM_FLUSH_INTERVAL, and is sent at once when the other stream or a
    display comes next, so the order of everything the cell printed is kept. (How much of a
    cell's output reaches it at all is the pool's output limit, JULIAPOOL_MAX_CELL_OUTPUT.)
    """

    def __init__(self, send: Callable[[str, str], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._name = ""
        self._parts: List[str] = []
        self._timer: Optional[threading.Timer] = None

    def write(self, name: str, text: str) -> None:
        with self._lock:
            if self._parts and name != self._name:
                self._flush_locked()
            self._name = name
            self._parts.append(text)
            if self._timer is None:
                self._timer = threading.Timer(STREAM_FLUSH_INTERVAL, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._parts:
            text, self._parts = "".join(self._parts), []
            self._send(self._name, text)
