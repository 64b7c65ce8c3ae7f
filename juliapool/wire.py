"""The pool server's wire protocol (PROTOCOL.md, "The pool server protocol"): where its socket is,
who may use it, and how messages and descriptors travel on it.

One Unix SOCK_SEQPACKET connection per client: each packet is one JSON object; descriptors ride on
the packet they belong to (SCM_RIGHTS). Both sides use this module: `juliapool.server` and
`juliapool.client`. Message kinds are named here once (`Op`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import struct
import threading
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import ServerGoneError, ServerUnavailableError

SERVER_PROTOCOL = 1
SOCKET_ENV = "JULIAPOOL_SOCKET"
SOCKET_NAME = "pool.sock"
KERNELS_SOCKET = "kernels.sock"  # the kernel zygote's, beside it (juliapool/kernel/launcher.py knows it too)
MAX_PACKET = 1 << 16
MAX_FDS = 8
# The descriptors of a lease, in the order they ride on its LEASE packet.
LEASE_FDS = ("request", "reply", "stdout", "stderr", "exit", "flag")
BUSY, IDLE = 1, 0  # the lease's flag byte: a request is under way on the worker (or not)

Message = Dict[str, Any]
log = logging.getLogger(__name__)


class Op(str, Enum):
    """Kinds of packets. Client -> server: each carries an `id`, answered by a packet with that id
    (LEASE, OK or ERROR), except RETURN and COUNT, which are not answered. Server -> client:
    GIVE_BACK (id 0) asks for idle plain leases back."""

    HELLO = "hello"  # version -> OK {server pid, julia version, options}
    BORROW = "borrow"  # wait -> LEASE (+ fds) | ERROR busy/broken
    SESSION = "session"  # key, keep, wait -> LEASE (+ fds) {attached, lost}
    RETURN = "return"  # lease, end, calls, dirty, close (a session: forget it)
    EXIT_STATUS = "exit_status"  # lease -> OK {returncode}: the worker ended; its parent reaps it
    COUNT = "count"  # calls, errors, timeouts: counters of finished calls
    STATS = "stats"  # -> OK {stats}
    STOP = "stop"  # -> OK, then the server shuts down
    LEASE = "lease"
    OK = "ok"
    ERROR = "error"
    GIVE_BACK = "give_back"


# ---- where the socket lives, and who may use it ----------------------------------------------

def default_socket_path() -> Path:
    """$JULIAPOOL_SOCKET, else $XDG_RUNTIME_DIR/juliapool/pool.sock (a folder only this user can
    open), else /tmp/juliapool-<uid>/pool.sock."""
    chosen = os.environ.get(SOCKET_ENV, "").strip()
    if chosen:
        return Path(chosen).expanduser().absolute()
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime) and os.path.isdir(runtime):
        return Path(runtime) / "juliapool" / SOCKET_NAME
    return Path(f"/tmp/juliapool-{os.getuid()}") / SOCKET_NAME


def private_dir(path: Path) -> Path:
    """Make (or check) the socket's folder: ours, a real folder, and open to nobody else (0700).
    Raises ServerUnavailableError with what to do if it is not."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
    except OSError as e:
        raise ServerUnavailableError(f"cannot make the server's folder {folder}: {e}") from e
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ServerUnavailableError(f"{folder} is not a folder of this user (uid {os.getuid()}): "
                                     f"remove it, or choose another socket with ${SOCKET_ENV}")
    if st.st_mode & 0o077:
        os.chmod(folder, 0o700)  # ours: close it to others before the socket appears in it
    return folder


def peer_uid(sock: socket.socket) -> Tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket, from the kernel (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


# ---- packets ---------------------------------------------------------------------------------

def send(sock: socket.socket, msg: Message, fds: Sequence[int] = ()) -> None:
    """Send one packet (and descriptors with it). Raises OSError if the peer is gone."""
    data = json.dumps(msg, separators=(",", ":")).encode()
    if len(data) > MAX_PACKET:
        raise ValueError(f"a {msg.get('op')} message of {len(data)} bytes is over {MAX_PACKET}")
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv(sock: socket.socket) -> Tuple[Message, List[int]]:
    """One packet and the descriptors that came with it; ({}, []) at end of connection.
    Raises ValueError for a packet that is not a JSON object (descriptors are closed then)."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_PACKET, MAX_FDS)
    if not data:
        _close_all(fds)
        return {}, []
    try:
        msg = json.loads(data)
        if not isinstance(msg, dict):
            raise ValueError("not an object")
    except ValueError as e:
        _close_all(fds)
        raise ValueError(f"a packet that is not a JSON object: {data[:80]!r}") from e
    return msg, fds


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# ---- the client's end ---------------------------------------------------------------------

class Connection:
    """A client's connection to the server: requests with ids, answered through a reader thread that
    also passes on packets that answer nothing (`on_push`) and the end of the connection (`on_gone`)."""

    def __init__(self, path: Path, on_push, on_gone) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(str(path))
        except PermissionError as e:
            self.sock.close()
            raise ServerUnavailableError(f"the pool server socket {path} is not open to this user ({e.strerror}): "
                                         "a server serves only the user who started it") from e
        except OSError as e:
            self.sock.close()
            error = ServerUnavailableError(f"no juliapool server at {path} ({e.strerror or e}): start one with "
                                           f"`juliapool serve`, or set ${SOCKET_ENV}")
            error.absent = isinstance(e, (FileNotFoundError, ConnectionRefusedError))  # type: ignore[attr-defined]
            raise error from e
        _pid, uid = peer_uid(self.sock)
        if uid != os.getuid():  # a socket planted by someone else: talk to nobody but our own user
            self.sock.close()
            raise ServerUnavailableError(f"the socket {path} is served by uid {uid}, not by this user")
        self.gone = False
        self.refusal = ""
        self._on_push, self._on_gone = on_push, on_gone
        self._lock = threading.Lock()
        self._pending: Dict[int, list] = {}  # id -> [event, message, fds]
        self._rid = 0
        self._reader = threading.Thread(target=self._read, name="juliapool-client", daemon=True)
        self._reader.start()

    def request(self, op: Op, timeout: Optional[float] = None, **fields: object) -> Tuple[dict, List[int]]:
        """Send a request and wait for its answer. Raises ServerGoneError if the server is gone."""
        slot: list = [threading.Event(), None, []]
        with self._lock:
            self._rid += 1
            rid = self._rid
            self._pending[rid] = slot
        try:
            self.send(op, id=rid, **fields)
            answered = slot[0].wait(timeout)
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        if not answered or slot[1] is None:
            raise self.gone_error() if answered or self.gone else ServerGoneError(
                f"the juliapool server at {self.path} did not answer a {op.value} request within {timeout}s")
        return slot[1], slot[2]

    def send(self, op: Op, **fields: object) -> None:
        if self.gone:
            raise self.gone_error()
        try:
            send(self.sock, {"op": op, **fields})
        except OSError as e:
            raise self.gone_error() from e

    def gone_error(self) -> ServerUnavailableError:
        if self.refusal:
            return ServerUnavailableError(f"the juliapool server at {self.path} refused us: {self.refusal}")
        return ServerGoneError(f"the juliapool server at {self.path} went away (stopped or killed); "
                               "start it again (`juliapool serve`) and connect again")

    def _read(self) -> None:
        while True:
            try:
                msg, fds = recv(self.sock)
            except ValueError as e:
                log.warning("ignoring a bad packet from the server: %s", e)
                continue
            except OSError:
                msg, fds = {}, []
            if not msg:
                break
            with self._lock:
                slot = self._pending.get(int(msg.get("id", 0)))
            if slot is not None:
                slot[1], slot[2] = msg, fds
                slot[0].set()
                continue
            _close_all(fds)
            if msg.get("op") == Op.ERROR:
                self.refusal = str(msg.get("message", ""))
            else:
                self._on_push(msg)
        with self._lock:
            self.gone = True
            slots, self._pending = list(self._pending.values()), {}
        for slot in slots:
            slot[0].set()
        self._on_gone()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's recv
        except OSError:
            pass
        if self._reader is not threading.current_thread():
            self._reader.join(5.0)
        self.sock.close()
