"""What the pool server keeps about its clients, the workers it lent them, sessions and waiting
callers (owned by the server's loop thread)."""

from __future__ import annotations

import mmap
import socket
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

from .wire import BUSY
from .worker import Worker


@dataclass(eq=False)
class Client:
    sock: socket.socket
    pid: int
    since: float = field(default_factory=time.monotonic)
    leases: Dict[int, "Lease"] = field(default_factory=dict)


@dataclass(eq=False)
class Lease:
    id: int
    worker: Worker
    client: Client
    key: Optional[str]  # the session it serves, or None: a plain borrow
    flag: mmap.mmap

    @property
    def busy(self) -> bool:
        return not self.flag.closed and self.flag[0] == BUSY


@dataclass(eq=False)
class Entry:
    """A session: its worker (None once that died), the lease it is out on, how its last worker ended."""

    key: str
    keep: bool
    worker: Optional[Worker] = None
    lease: Optional[Lease] = None
    lost: Optional[dict] = None
    used: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Waiter:
    client: Client
    rid: int
    deadline: Optional[float]
    key: Optional[str]
