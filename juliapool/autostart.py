"""Connect to the user's pool server, starting one in the background if none runs there.

The server is started detached (`sh` forks it and exits, so it is nobody's child and outlives the
process that started it), with `--idle-timeout`: it stops by itself once it has had no clients and
no sessions for that long. Two processes that start one at once race for the socket's lock; the
loser exits and both connect to the winner.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Union

from . import wire
from .client import PoolClient
from .errors import ServerUnavailableError

log = logging.getLogger(__name__)

IDLE_TIMEOUT_ENV = "JULIAPOOL_SERVER_IDLE_TIMEOUT"
DEFAULT_IDLE_TIMEOUT = 600.0  # seconds a server started on demand waits, unused, before it stops
LOG_NAME = "server.log"


def connect_or_start(path: Union[str, Path, None] = None, *, serve_args: Sequence[str] = (),
                     julia: Optional[str] = None, start_timeout: float = 30.0, **options: object) -> PoolClient:
    """A client of the server at `path` (default as `connect`); if nothing listens there, start
    `juliapool serve --socket path --idle-timeout S *serve_args` and connect to it once it listens.
    The client's `revive` does the same if that server goes away later. Raises
    ServerUnavailableError if it cannot be reached after `start_timeout` seconds."""
    where = Path(path) if path else wire.default_socket_path()
    revive = functools.partial(ensure_server, where, serve_args, julia, start_timeout)
    try:
        client = PoolClient(where, **options)  # type: ignore[arg-type]
    except ServerUnavailableError as e:
        if not getattr(e, "absent", False):
            raise  # there is a server, but not for us (another user, a mistake): never start a second one
        revive()
        client = PoolClient(where, **options)  # type: ignore[arg-type]
    client.revive = revive
    return client


def ensure_server(path: Path, serve_args: Sequence[str] = (), julia: Optional[str] = None,
                  start_timeout: float = 30.0) -> None:
    """Return once a server listens at `path`, starting one if nothing does."""
    if _listening(path):
        return
    spawn_server(path, serve_args, julia)
    deadline = time.monotonic() + start_timeout
    while not _listening(path):
        if time.monotonic() >= deadline:
            raise ServerUnavailableError(f"started a pool server at {path}, but it does not listen after "
                                         f"{start_timeout:g} s (its log: {path.parent / LOG_NAME})")
        time.sleep(0.02)


def _listening(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.connect(str(path))
        return True
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except OSError as e:
        raise ServerUnavailableError(f"cannot reach the pool server socket {path}: {e}") from e
    finally:
        probe.close()


def spawn_server(path: Path, serve_args: Sequence[str] = (), julia: Optional[str] = None) -> None:
    """Start `juliapool serve` on `path`, detached, logging to server.log beside the socket."""
    wire.private_dir(path)
    idle = os.environ.get(IDLE_TIMEOUT_ENV, "").strip() or str(DEFAULT_IDLE_TIMEOUT)
    cmd = [sys.executable, "-m", "juliapool.cli", *(["--julia", julia] if julia else []), "serve",
           "--socket", str(path), "--idle-timeout", idle, *serve_args]
    logfile = path.parent / LOG_NAME
    log.info("starting a pool server: %s", " ".join(cmd))
    # `sh` backgrounds the server and exits at once: the server is adopted by init, not our child.
    subprocess.run(["/bin/sh", "-c", '"$@" </dev/null >>"$LOGFILE" 2>&1 &', "sh", *cmd],
                   env=dict(os.environ, LOGFILE=str(logfile)), start_new_session=True, check=True, timeout=30)
