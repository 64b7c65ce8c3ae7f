"""The pool server: one warm pool per user, shared by that user's processes (`juliapool serve`).

Data flow::

    client process                         server process (one per user)            Julia workers
    --------------                         -----------------------------            -------------
    juliapool.connect() --SEQPACKET-----> accept: peer uid == ours? (SO_PEERCRED)
    BORROW | SESSION(key) ------------>    WorkerStock: idle, starting, refills
                          <--- LEASE + fds (request, reply, stdout, stderr pipes, pidfd, flag page)
    Worker over those fds  ====== frames and output, directly: no server in between =====> worker.jl
    RETURN                ------------>    idle again | kept for its session | retired, replaced

The server never touches a lent worker: the borrower does every byte of its I/O, so a call costs
what it costs in-process. The borrower sets the lease's flag byte (a shared memory page) while a
request is under way, so when a client dies the server knows at once whether its worker is clean
(lend it again) or ran someone's code (kill it and start another).

One thread (the loop) owns every structure here; worker starts run in threads and post back.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import mmap
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional

from . import wire
from .process import EXIT, REPLY, STDERR, STDOUT
from .recipe import StartRecipe
from .result import CLIENT_GONE, DIED_IDLE, SHUT_DOWN
from .serverstats import server_stats
from .leases import Client, Entry, Lease, Waiter
from .stock import WorkerStock
from .wire import Op
from .worker import Worker

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between looks at deadlines, idle sessions and idle workers
GIVE_BACK_EVERY = 0.5
ZYGOTE_WAIT = 30.0  # seconds the kernel zygote may take to import the kernel machinery  # seconds between two requests to clients for idle leases


class AlreadyRunning(Exception):
    """Another server holds the lock of this socket (it won the race to start)."""

    def __init__(self, path: Path, pid: str) -> None:
        super().__init__(f"a juliapool server already runs at {path} (pid {pid or 'unknown'})")
        self.pid = pid


class PoolServer:
    """Listens on `path`, lends workers of a WorkerStock to the user's clients."""

    def __init__(self, path: Path, recipe: StartRecipe, *, spares: int = 2, max_workers: int = 4,
                 idle_timeout: Optional[float] = None, session_ttl: Optional[float] = 3600.0,
                 kernels: bool = True) -> None:
        self.path = Path(path)
        self.kernels = kernels  # run a kernel zygote beside us (juliapool.kernel.zygote)
        self._zygote: Optional[subprocess.Popen] = None
        self.idle_timeout = idle_timeout
        self.session_ttl = session_ttl
        self.started_at = time.time()
        self.clients: Dict[socket.socket, Client] = {}
        self.sessions: Dict[str, Entry] = {}
        self.counts = {"calls": 0, "errors": 0, "timeouts": 0, "clients_gone": 0, "killed_mid_call": 0}
        self.stock = WorkerStock(recipe, spares, max_workers, self.post)
        self.stock.on_ready = self._serve_waiters
        self._waiters: List[Waiter] = []
        self._posted: Deque[Callable[[], None]] = collections.deque()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False
        self._seq = 0
        self._quiet_since = time.monotonic()
        self._asked_back = 0.0
        self._lock_fd = -1
        self._listener: Optional[socket.socket] = None

    # ---- start and stop ----------------------------------------------------------------------

    def bind(self) -> None:
        """Take the socket's lock (raises AlreadyRunning if another server holds it), replace a
        stale socket file, listen. The folder is made private first."""
        wire.private_dir(self.path)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(self.path, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd  # never unlinked: a racing server must lock this same file
        try:
            self.path.unlink()  # a socket left by a server that was killed: we hold the lock now
        except FileNotFoundError:
            pass
        self.stock.refill()
        if self.kernels:  # before we listen: a kernel launcher that finds us finds the zygote too
            self._start_zygote()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._sel.register(listener, selectors.EVENT_READ, self._accept)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        log.info("juliapool server %d listening on %s", os.getpid(), self.path)

    def _start_zygote(self) -> None:
        """The process that forks notebook kernels (it imports ipykernel once, for all of them)."""
        try:
            self._zygote = subprocess.Popen([sys.executable, "-m", "juliapool.kernel.zygote",
                                             str(self.path.with_name(wire.KERNELS_SOCKET))],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        except OSError as e:
            log.warning("no kernel zygote (%s): notebooks start their kernels themselves", e)
            return
        assert self._zygote.stdout is not None
        ready, _, _ = select.select([self._zygote.stdout], [], [], ZYGOTE_WAIT)  # it says "ready" once it listens
        if not ready or not self._zygote.stdout.readline().strip():
            log.warning("the kernel zygote is not ready after %g s: notebooks may start their kernels themselves",
                        ZYGOTE_WAIT)
        self._zygote.stdout.close()

    def serve_forever(self) -> None:
        """Run the loop until `stop()` (or SIGTERM/SIGINT in the main thread), then shut down."""
        try:
            while not self._stopping:
                for key, _ in self._sel.select(TICK):
                    key.data(key.fileobj)
                while self._posted:
                    self._posted.popleft()()
                self._tick()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the loop to shut down (thread-safe, also from a signal handler)."""
        self._stopping = True
        self._wake()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.stop())

    def post(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop thread (thread-safe)."""
        self._posted.append(fn)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _on_wake(self, _fd: int) -> None:
        try:
            os.read(self._wake_r, 4096)
        except OSError:
            pass

    def _shutdown(self) -> None:
        log.info("juliapool server %d shutting down", os.getpid())
        if self._listener is not None:
            self._sel.unregister(self._listener)
            self._listener.close()
            try:
                if os.stat(self.path).st_uid == os.getuid() and self._lock_fd >= 0:
                    self.path.unlink()
            except OSError:
                pass
        for client in list(self.clients.values()):
            for lease in client.leases.values():  # their borrowers' calls end, and say why
                lease.worker.kill(SHUT_DOWN)
            client.sock.close()
        self.stock.shutdown()
        if self._zygote is not None:
            self._zygote.terminate()
            try:
                self._zygote.wait(5)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
                self._zygote.wait()
        self._sel.close()
        for fd in (self._wake_r, self._wake_w, self._lock_fd):
            if fd >= 0:
                os.close(fd)

    # ---- clients -----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        pid, uid = wire.peer_uid(sock)
        if uid != os.getuid():
            log.warning("refused a connection from pid %d: uid %d is not this server's user (uid %d)",
                        pid, uid, os.getuid())
            _try_send(sock, {"op": Op.ERROR, "id": 0, "error": "refused",
                             "message": f"this juliapool server serves uid {os.getuid()} only, not uid {uid}"})
            sock.close()
            return
        sock.settimeout(5.0)  # a client that stops reading may not stall the loop for long
        self.clients[sock] = Client(sock, pid)
        self._sel.register(sock, selectors.EVENT_READ, self._on_client)
        log.debug("client pid %d connected", pid)

    def _on_client(self, sock: socket.socket) -> None:
        client = self.clients[sock]
        try:
            msg, fds = wire.recv(sock)
        except (OSError, ValueError) as e:
            log.warning("client pid %d: %s; dropping it", client.pid, e)
            msg, fds = {}, []
        for fd in fds:  # clients send none
            os.close(fd)
        if not msg:
            self._drop_client(client)
            return
        handler = self._handlers().get(msg.get("op", ""))
        if handler is None:
            self._reply(client, msg, Op.ERROR, error="bad-request", message=f"unknown op {msg.get('op')!r}")
            return
        handler(client, msg)

    def _drop_client(self, client: Client) -> None:
        """The client is gone (closed, or killed): its leases come back; a worker it was running a
        request on is killed (someone's code runs there) and replaced."""
        self._sel.unregister(client.sock)
        del self.clients[client.sock]
        client.sock.close()
        self._waiters = [w for w in self._waiters if w.client is not client]
        self.counts["clients_gone"] += 1
        for lease in list(client.leases.values()):
            self._settle(lease, gone=True)
        client.leases.clear()
        self._serve_waiters()
        log.debug("client pid %d gone", client.pid)

    def _handlers(self) -> Dict[str, Callable[[Client, dict], None]]:
        return {Op.HELLO: self._hello, Op.BORROW: self._borrow, Op.SESSION: self._session,
                Op.RETURN: self._return, Op.EXIT_STATUS: self._exit_status, Op.COUNT: self._count,
                Op.STATS: self._stats, Op.STOP: self._stop}

    def _reply(self, client: Client, msg: dict, op: Op, fds: List[int] = (), **fields: object) -> bool:  # type: ignore[assignment]
        try:
            wire.send(client.sock, {"op": op, "id": msg.get("id", 0), **fields}, fds)
            return True
        except OSError as e:
            log.debug("client pid %d: cannot send: %s", client.pid, e)
            return False

    # ---- requests ----------------------------------------------------------------------------

    def _hello(self, client: Client, msg: dict) -> None:
        if msg.get("version") != wire.SERVER_PROTOCOL:
            self._reply(client, msg, Op.ERROR, error="version",
                        message=f"server protocol {wire.SERVER_PROTOCOL}, client {msg.get('version')}: "
                                "use the same juliapool for both")
            return
        recipe = self.stock.recipe
        version = next((w.julia_version for w in self.stock.workers if w.julia_version), "")
        self._reply(client, msg, Op.OK, pid=os.getpid(), julia=recipe.julia, julia_args=recipe.julia_args,
                    preload=recipe.preload, julia_version=version)

    def _borrow(self, client: Client, msg: dict) -> None:
        self._wait(client, msg, None)

    def _session(self, client: Client, msg: dict) -> None:
        key = str(msg.get("key", ""))
        entry = self.sessions.get(key)
        if entry is None:
            entry = self.sessions[key] = Entry(key, bool(msg.get("keep", True)))
        self._wait(client, msg, key)

    def _wait(self, client: Client, msg: dict, key: Optional[str]) -> None:
        wait = msg.get("wait")
        deadline = None if wait is None else time.monotonic() + float(wait)
        self._waiters.append(Waiter(client, int(msg.get("id", 0)), deadline, key))
        self._serve_waiters()

    def _return(self, client: Client, msg: dict) -> None:
        lease = client.leases.pop(int(msg.get("lease", -1)), None)
        if lease is None:
            return
        lease.worker.calls += int(msg.get("calls", 0))
        lease.worker.dirty = lease.worker.dirty or bool(msg.get("dirty"))
        self._count(client, msg)
        self._settle(lease, end=msg.get("end"), close=bool(msg.get("close")))
        self._serve_waiters()

    def _exit_status(self, client: Client, msg: dict) -> None:
        lease = client.leases.get(int(msg.get("lease", -1)))
        code = lease.worker.process.reap() if lease is not None else None  # it has ended: no wait
        self._reply(client, msg, Op.OK, returncode=code)

    def _count(self, client: Client, msg: dict) -> None:
        for name in ("calls", "errors", "timeouts"):
            self.counts[name] += int(msg.get("counted_" + name, 0))

    def _stats(self, client: Client, msg: dict) -> None:
        self._reply(client, msg, Op.OK, stats=server_stats(self))

    def _stop(self, client: Client, msg: dict) -> None:
        self._reply(client, msg, Op.OK)
        self.stop()

    # ---- lending -----------------------------------------------------------------------------

    def _serve_waiters(self) -> None:
        """Hand free workers to waiters, in order; start more (or ask clients for idle ones) for the rest."""
        unserved = 0
        for waiter in list(self._waiters):
            if self.stock.broken:
                self._fail(waiter, "broken", self.stock.broken)
            elif waiter.key is None:
                worker = self.stock.take()
                if worker is None:
                    unserved += 1
                elif self._lend(waiter, worker, None, {}) is None:
                    self.stock.put(worker)
            else:
                unserved += not self._lend_session(waiter)
        self.stock.refill(waiting=unserved)
        if unserved and self.stock.total >= self.stock.max_workers:
            self._ask_give_back()

    def _lend_session(self, waiter: Waiter) -> bool:
        entry = self.sessions.setdefault(waiter.key or "", Entry(waiter.key or "", True))
        if entry.lease is not None:
            return False  # out on another lease: this one waits for it
        if entry.worker is not None and not entry.worker.alive:
            entry.lost = {"returncode": entry.worker.poll(), "cause": DIED_IDLE}
            self.stock.retire(entry.worker)
            entry.worker = None
        attached = entry.worker is not None
        worker = entry.worker or self.stock.take()
        if worker is None:
            return False
        worker.sessions.add(entry.key)
        entry.worker = worker
        entry.lease = self._lend(waiter, worker, entry.key, {"attached": attached, "lost": entry.lost})
        if entry.lease is not None:
            entry.lost = None
        return True

    def _lend(self, waiter: Waiter, worker: Worker, key: Optional[str], extra: dict) -> Optional[Lease]:
        """Send `worker`'s descriptors to the waiter; the lease, or None if the client is gone."""
        self._waiters.remove(waiter)
        flag_fd = os.memfd_create("juliapool-lease", os.MFD_CLOEXEC)
        try:
            os.ftruncate(flag_fd, mmap.PAGESIZE)
            flag = mmap.mmap(flag_fd, mmap.PAGESIZE)
            d = worker.process.descriptors()
            fds = [d["request"], d[REPLY], d[STDOUT], d[STDERR], d[EXIT], flag_fd]
            self._seq += 1
            lease = Lease(self._seq, worker, waiter.client, key, flag)
            sent = self._reply(waiter.client, {"id": waiter.rid}, Op.LEASE, fds, lease=lease.id, pid=worker.pid,
                               name=worker.name, julia_version=worker.julia_version, key=key, **extra)
        finally:
            os.close(flag_fd)  # the client has its copy; our mapping stays
        if not sent:
            flag.close()
            return None
        waiter.client.leases[lease.id] = lease
        return lease

    def _settle(self, lease: Lease, end: Optional[dict] = None, close: bool = False, gone: bool = False) -> None:
        """A lease came back (or its client died): put its worker where it belongs now."""
        worker, killed = lease.worker, gone and lease.busy
        lease.flag.close()
        if killed:
            self.counts["killed_mid_call"] += 1
            log.warning("client pid %d died during a request on %s: killing it", lease.client.pid, worker.name)
        entry = self.sessions.get(lease.key) if lease.key is not None else None
        if entry is None:
            self.stock.retire(worker, CLIENT_GONE) if killed else self.stock.put(worker)
            return
        entry.lease, entry.used = None, time.monotonic()
        if killed or end or not worker.alive:
            entry.worker = None
            entry.lost = {"returncode": -signal.SIGKILL, "cause": CLIENT_GONE} if killed else (
                end or {"returncode": worker.poll(), "cause": DIED_IDLE})
            self.stock.retire(worker, CLIENT_GONE if killed else "")
        if close or not entry.keep:
            del self.sessions[entry.key]
            if entry.worker is not None:
                worker.sessions.discard(entry.key)
                # closed by its client (who dropped the module) or forgotten: a fresh worker is cleaner
                self.stock.put(worker) if close else self.stock.retire(worker)

    def _fail(self, waiter: Waiter, error: str, message: str) -> None:
        self._waiters.remove(waiter)
        self._reply(waiter.client, {"id": waiter.rid}, Op.ERROR, error=error, message=message)

    def _ask_give_back(self) -> None:
        now = time.monotonic()
        if now - self._asked_back < GIVE_BACK_EVERY:
            return
        self._asked_back = now
        for client in self.clients.values():
            if any(lease.key is None and not lease.busy for lease in client.leases.values()):
                self._reply(client, {}, Op.GIVE_BACK)

    # ---- the clock ---------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        for waiter in [w for w in self._waiters if w.deadline is not None and now >= w.deadline]:
            self._fail(waiter, "busy", "no Julia worker became free in time "
                                       f"({self.stock.total} of at most {self.stock.max_workers} are in use)")
        for entry in list(self.sessions.values()):
            if entry.lease is None and self.session_ttl and now - entry.used > self.session_ttl:
                log.info("session %r unused for %.0f s: forgotten", entry.key, now - entry.used)
                del self.sessions[entry.key]
                if entry.worker is not None:
                    self.stock.retire(entry.worker)
        self.stock.reap_dead_idle()
        self.stock.refill()
        if self.clients or self.sessions:
            self._quiet_since = now
        elif self.idle_timeout and now - self._quiet_since >= self.idle_timeout:
            log.info("no clients and no sessions for %.0f s: stopping", self.idle_timeout)
            self.stop()


def _try_send(sock: socket.socket, msg: dict) -> None:
    try:
        wire.send(sock, msg)
    except OSError:
        pass
