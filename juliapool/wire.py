"""The pool server's wire protocol (PROTOCOL.md, "The pool server protocol"): where its socket is,
who may use it, and how messages and descriptors travel on it.

One Unix SOCK_SEQPACKET connection per client: each packet is one JSON object; descriptors ride on
the packet they belong to (SCM_RIGHTS). Both sides use this module: `juliapool.server` and
`juliapool.client`. Message kinds are named here once (`Op`).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from .errors import ServerUnavailableError

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
