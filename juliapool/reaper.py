"""A guard process that kills a pool's Julia workers when the process that owns the pool dies.

Why: workers run in their own process group (start_new_session), so a signal to their owner never
reaches them, and SIGKILL of the owner (Ray's `ray.kill`, the OOM killer) skips its atexit hook. An
idle worker still ends by itself (its request pipe reaches end of file), but one that runs code
(an endless loop, a long `sleep` whose timeout its dead owner can no longer enforce) would live on.

How::

    owner process (e.g. a Ray actor)                 guard: python juliapool/reaper.py
      ReaperGuard thread: every WATCH_INTERVAL s,      own session (a kill of the owner's group
      when the pool's worker pids changed,  --stdin-->  spares it); keeps the last line it read;
      writes them as one line                          at end of file: SIGKILL each listed group

The owner holds the only write end of that pipe, so the guard reads end of file when the owner
ends, however it ends. A clean shutdown sends an empty line first: nothing is left to kill. The
owner may also call `update()` before it hands a worker code (the Ray actor does), so that a worker
started since the last look is listed before it can get busy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Callable, List, Optional

WATCH_INTERVAL = 0.2  # seconds between two looks at the pool's worker pids


def kill_groups(pgids: List[int]) -> List[int]:
    """SIGKILL each process group that still exists; returns the ones that did."""
    killed = []
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
            killed.append(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def guard(stream=None) -> List[int]:
    """The guard's main loop: remember the last list of groups, kill them at end of file."""
    stream = sys.stdin if stream is None else stream
    pgids: List[int] = []
    for line in stream:
        pgids = [int(p) for p in line.split()]
    return kill_groups(pgids)


class ReaperGuard:
    """Starts the guard process and keeps it told which worker groups `pids()` currently lists.

    Workers are process-group leaders (start_new_session), so a worker's pid is its group id."""

    def __init__(self, pids: Callable[[], List[int]], interval: float = WATCH_INTERVAL) -> None:
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self._sent: Optional[List[int]] = None
        self._lock = threading.Lock()  # the watch thread and callers of update() both send
        # Run by path: the guard needs only this file (stdlib), not the package and its imports.
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                     start_new_session=True)
        self._thread = threading.Thread(target=self._watch, name="juliapool-reaper-guard", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            self.update()

    def update(self) -> None:
        """Tell the guard the current worker pids, if they changed since last time."""
        with self._lock:
            pids = sorted(self._pids())
            if pids != self._sent:
                self._send(pids)

    def _send(self, pids: List[int]) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((" ".join(map(str, pids)) + "\n").encode())
            self.proc.stdin.flush()
            self._sent = pids
        except (OSError, ValueError):  # the guard is gone (or closed): nothing more to tell it
            pass

    def close(self, timeout: float = 5.0) -> None:
        """After the pool stopped its workers: tell the guard nothing is left, let it exit."""
        self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            self._send([])
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the owner must not end the guard first
    killed = guard()
    if killed:
        print(f"juliapool.reaper: owner gone, killed worker group(s) {killed}", file=sys.stderr)
