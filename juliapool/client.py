"""`juliapool.connect()`: a pool client with JuliaProcessPool's API, served by the user's pool server.

The client borrows a worker from the server (its pipes and pidfd arrive over the Unix socket) and
runs it with the same `Worker` code an in-process pool uses: a call never passes through the
server. A plain borrow is kept between calls (the next call needs no round trip) until the server
asks for it back (`GIVE_BACK`, when another caller waits and no more workers may start) or the
client closes. A session leases its worker for its life (`juliapool.remote_session`).

Threads: callers do their workers' I/O themselves; one reader thread per client receives the
server's packets (answers, GIVE_BACK, end of connection).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import mmap
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Union

from . import wire
from .calls import PoolCalls
from .discovery import julia_version
from .errors import JuliaPoolError, PoolBrokenError, PoolBusyError, ServerUnavailableError, WorkerDiedError
from .execution import OutputCallback
from .process import EXIT, REPLY, STDERR, STDOUT, WorkerProcess
from .result import ExecReply
from .wire import BUSY, IDLE, LEASE_FDS, Connection, Op
from .worker import Worker

log = logging.getLogger(__name__)

GIVE_BACK_GRACE = 1.0  # seconds after a GIVE_BACK during which finished plain borrows go back at once
COUNT_EVERY = 1.0  # seconds between two reports of call counters to the server
EXIT_STATUS_WAIT = 10.0

_live_clients: "weakref.WeakSet[PoolClient]" = weakref.WeakSet()


@atexit.register
def _close_live_clients() -> None:
    """A process that ends without close() still reports its counters and gives its workers back."""
    for client in list(_live_clients):
        client.close()


class Lease:
    """A worker lent by the server: our copies of its descriptors, and the flag the server reads."""

    def __init__(self, msg: dict, fds: List[int], conn: Connection, exit_status) -> None:
        named = dict(zip(LEASE_FDS, fds))
        self.conn = conn  # the connection it came on: it is returned there, or not at all
        for fd in fds:
            os.set_inheritable(fd, False)  # a process we spawn must not keep the worker's pipes open
        self.id = int(msg["lease"])
        self.key: Optional[str] = msg.get("key")
        self.info = msg
        self.flag = mmap.mmap(named["flag"], mmap.PAGESIZE)
        os.close(named["flag"])
        process = WorkerProcess.adopt({"request": named["request"], REPLY: named["reply"], STDOUT: named["stdout"],
                                       STDERR: named["stderr"], EXIT: named["exit"]}, int(msg["pid"]),
                                      lambda: exit_status(self))
        self.worker = Worker.over(process, str(msg.get("name", "worker")), str(msg.get("julia_version", "")))

    @contextlib.contextmanager
    def busy(self) -> Iterator[Worker]:
        """Mark the worker in use while a request is under way (if we die now, the server kills it)."""
        self.flag[0] = BUSY
        try:
            yield self.worker
        finally:
            self.flag[0] = IDLE

    def close(self) -> None:
        self.worker.process.close()
        self.flag.close()


class PoolClient(PoolCalls):
    """The pool API (execute, run, execute_async, run_async, session, get_stats, shutdown) over the
    user's pool server. Arguments as JuliaProcessPool's: `timeout` (seconds per call; 0/None: none),
    `checkout_timeout` (how long a call waits for a worker, then PoolBusyError), `interrupt_grace`,
    `memory_limit_mb`, `output_limit_bytes`; `keep_sessions` (False: the server forgets this
    client's sessions when it disconnects, as a kernel wants)."""

    def __init__(self, path: Union[str, Path, None] = None, *, timeout: Optional[float] = 60,
                 checkout_timeout: Optional[float] = None, interrupt_grace: float = 2.0,
                 memory_limit_mb: Optional[float] = None, output_limit_bytes: Optional[int] = None,
                 keep_sessions: bool = True) -> None:
        self.path = Path(path) if path else wire.default_socket_path()
        self.timeout, self.checkout_timeout, self.interrupt_grace = timeout, checkout_timeout, interrupt_grace
        self.memory_limit_mb, self.output_limit_bytes = memory_limit_mb, output_limit_bytes
        self.keep_sessions = keep_sessions
        self._lock = threading.Lock()
        self._idle: List[Lease] = []
        self._asked_at = 0.0
        self._counted = {"calls": 0, "errors": 0, "timeouts": 0}
        self._counted_at = time.monotonic()
        self._seq = 0
        self._closed = False
        self._sessions: "weakref.WeakSet" = weakref.WeakSet()
        self.revive: Optional[Callable[[], None]] = None  # set: called to bring a lost server back
        self._revive_lock = threading.Lock()
        self._conn = self._open()
        _live_clients.add(self)

    # ---- the pool's API ------------------------------------------------------------------------

    def run(self, code: str, timeout: Optional[float] = None, *, on_output: Optional[OutputCallback] = None,
            memory_limit_mb: Optional[float] = None, output_limit_bytes: Optional[int] = None) -> ExecReply:
        """Like `execute`, returning the full `ExecReply`."""
        limits = self.limits(timeout, memory_limit_mb, output_limit_bytes)
        for attempt in range(3):
            lease = self._borrow()
            try:
                with lease.busy() as worker:
                    return self.count(worker.execute(code, limits=limits, on_output=on_output))
            except WorkerDiedError as e:  # died before it read the code: safe to run it elsewhere
                error = e
            finally:
                self._give_back(lease)
        raise error

    async def run_async(self, code: str, timeout: Optional[float] = None, *,
                        on_output: Optional[OutputCallback] = None, memory_limit_mb: Optional[float] = None,
                        output_limit_bytes: Optional[int] = None) -> ExecReply:
        """`run` for asyncio: the reply is awaited on the worker's epoll fd; a borrow that needs the
        server (no worker kept) waits in the loop's executor."""
        limits = self.limits(timeout, memory_limit_mb, output_limit_bytes)
        for attempt in range(3):
            lease = self._kept() or await asyncio.get_running_loop().run_in_executor(None, self._borrow)
            try:
                with lease.busy() as worker:
                    return self.count(await worker.execute_async(code, limits=limits, on_output=on_output))
            except WorkerDiedError as e:
                error = e
            finally:
                self._give_back(lease)
        raise error

    def session(self, key: Optional[str] = None):
        """A session on the server: the same worker and module for every call, kept by the server
        when this client disconnects (unless keep_sessions=False), until closed or its idle TTL."""
        from .remote_session import RemoteSession

        self._check_open()
        with self._lock:
            self._seq += 1
        session = RemoteSession(self, key if key is not None else f"client-{os.getpid()}-{id(self)}-{self._seq}",
                                self.keep_sessions)
        self._sessions.add(session)
        return session

    def get_stats(self) -> Dict[str, object]:
        """The server's counters and its workers, sessions and clients (see `juliapool status`)."""
        self._check_open()
        self._report_counts(force=True)
        msg, _ = self._conn.request(Op.STATS, timeout=30.0)
        return dict(msg.get("stats", {}))

    def count(self, reply: ExecReply) -> ExecReply:
        """Count a finished call; counters reach the server at most every COUNT_EVERY seconds."""
        with self._lock:
            self._counted["calls"] += 1
            self._counted["errors"] += reply.status != "ok"
            self._counted["timeouts"] += reply.timed_out
        self._report_counts()
        return reply

    @property
    def julia_version(self) -> str:
        """The workers' Julia version: as the server's workers said it, else `julia --version`."""
        if not self._julia_version and self.julia_path:
            self._julia_version = julia_version(self.julia_path)
        return self._julia_version

    @property
    def closed(self) -> bool:
        return self._closed

    def stop_server(self) -> None:
        """Ask the server to shut down (every client's calls then end; see ServerGoneError)."""
        self._conn.request(Op.STOP, timeout=30.0)
        self.close()

    def close(self) -> None:
        """Give back kept workers and disconnect. Sessions stay on the server (unless keep_sessions
        is False). Idempotent. The server keeps running."""
        if self._closed:
            return
        self._closed = True
        self._report_counts(force=True)
        with self._lock:
            kept, self._idle = self._idle, []
        for lease in kept:
            self._return(lease)
        for session in list(self._sessions):
            session.release()
        self._conn.close()

    shutdown = close  # the pool's name: code written for JuliaProcessPool ends its use of the server

    def __enter__(self) -> "PoolClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PoolClient {self.path} server pid {self.server_pid} {'closed' if self._closed else 'open'}>"

    # ---- the connection ------------------------------------------------------------------------

    def _open(self) -> Connection:
        """Connect and say hello; learn the server's pid and how its workers run."""
        conn = Connection(self.path, self._on_push, self._on_gone)
        try:
            hello, _ = conn.request(Op.HELLO, timeout=30.0, version=wire.SERVER_PROTOCOL)
        except ServerUnavailableError:
            conn.close()
            raise
        if hello.get("op") != Op.OK:
            conn.close()
            raise ServerUnavailableError(f"the juliapool server at {self.path}: {hello.get('message')}")
        self.server_pid = int(hello["pid"])
        self.julia_path = str(hello.get("julia", ""))
        self.julia_args: List[str] = list(hello.get("julia_args", []))
        self._julia_version = str(hello.get("julia_version", ""))  # a worker's own word, if one is up
        return conn

    def _check_open(self) -> None:
        """Raise if closed or if the server went away; with `revive` set, try to bring it back first
        (a kernel's client: the notebook goes on, on a fresh worker)."""
        if self._closed:
            raise JuliaPoolError("this pool client was closed; connect again with juliapool.connect()")
        if not self._conn.gone:
            return
        with self._revive_lock:
            if self._conn.gone and self.revive is not None:
                try:
                    self.revive()
                    self._conn = self._open()
                    log.warning("the pool server at %s went away; connected to a new one (pid %d)",
                                self.path, self.server_pid)
                except ServerUnavailableError as e:
                    log.warning("the pool server at %s went away and could not be brought back: %s", self.path, e)
        if self._conn.gone:
            raise self._conn.gone_error()

    # ---- leases --------------------------------------------------------------------------------

    def _kept(self) -> Optional[Lease]:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _borrow(self) -> Lease:
        self._check_open()
        return self._kept() or self._lease(Op.BORROW)

    def _lease(self, op: Op, **fields: object) -> Lease:
        """Ask the server for a worker (waits up to checkout_timeout); raises the pool's errors."""
        conn = self._conn
        msg, fds = conn.request(op, None, wait=self.checkout_timeout, **fields)
        if msg.get("op") == Op.LEASE and len(fds) == len(LEASE_FDS):
            return Lease(msg, fds, conn, self._exit_status)
        wire._close_all(fds)
        error = {"busy": PoolBusyError, "broken": PoolBrokenError}.get(str(msg.get("error")), JuliaPoolError)
        raise error(str(msg.get("message", msg)))

    def _give_back(self, lease: Lease) -> None:
        """After a plain call: keep the worker for the next call, or return it."""
        worker = lease.worker
        keep = (worker.alive and not worker.dirty and not self._closed and not lease.conn.gone
                and time.monotonic() - self._asked_at > GIVE_BACK_GRACE)
        if keep:
            with self._lock:
                if not self._idle:
                    self._idle.append(lease)
                    return
        self._return(lease)

    def _return(self, lease: Lease, end: Optional[dict] = None, close: bool = False) -> None:
        worker = lease.worker
        try:
            lease.conn.send(Op.RETURN, lease=lease.id, calls=worker.calls,
                            dirty=worker.dirty, end=end, close=close)
        except ServerUnavailableError:
            pass
        lease.close()

    def _exit_status(self, lease: Lease) -> Optional[int]:
        """The exit code of a lent worker that ended: the server is its parent and reaps it."""
        try:
            msg, _ = lease.conn.request(Op.EXIT_STATUS, timeout=EXIT_STATUS_WAIT, lease=lease.id)
            return msg.get("returncode")
        except ServerUnavailableError:
            return None

    def _report_counts(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._counted_at < COUNT_EVERY:
                return
            counted = {f"counted_{k}": v for k, v in self._counted.items()}
            self._counted = dict.fromkeys(self._counted, 0)
            self._counted_at = time.monotonic()
        if any(counted.values()):
            try:
                self._conn.send(Op.COUNT, **counted)
            except ServerUnavailableError:
                pass

    def _on_push(self, msg: dict) -> None:
        """The reader thread got a packet that answers nothing: the server wants idle workers back."""
        if msg.get("op") == Op.GIVE_BACK:
            self._asked_at = time.monotonic()
            with self._lock:
                kept, self._idle = self._idle, []
            for lease in kept:
                self._return(lease)

    def _on_gone(self) -> None:
        """The server went away: close kept workers' pipes now, so those workers end (a session's
        worker that runs a call is let go when the call ends)."""
        with self._lock:
            kept, self._idle = self._idle, []
        for lease in kept:
            lease.close()
        for session in list(self._sessions):
            session.server_gone()


def connect(path: Union[str, Path, None] = None, *, start: bool = False, **options: object) -> PoolClient:
    """A client of the user's pool server: at `path`, else $JULIAPOOL_SOCKET, else the private
    default (`juliapool.wire.default_socket_path`). Raises ServerUnavailableError if none runs
    there, unless `start`: then one is started in the background (`juliapool.autostart`; it stops
    after $JULIAPOOL_SERVER_IDLE_TIMEOUT seconds unused). `options` are PoolClient's."""
    if start:
        from .autostart import connect_or_start

        return connect_or_start(path, **options)
    return PoolClient(path, **options)  # type: ignore[arg-type]
