"""What the pool server tests share: a server process of their own, and clients in other processes.

`Server(path, ...)` runs `python -m juliapool.cli serve` on a private socket; `stop()` ends it with
SIGTERM (SIGKILL after a grace) and waits for its workers to go. `run_client(path, code)` runs Python
code in a separate process with `client = juliapool.connect(path)` already made, and returns its
stdout (JSON lines are parsed by `client_json`). `spawn_client` starts one and waits for a line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import juliapool
from juliapool.errors import ServerUnavailableError

from conftest import pid_alive, wait_until

PRELUDE = "import json, os, sys, time, juliapool\nclient = juliapool.connect(sys.argv[1])\n"


def socket_path() -> Path:
    return Path(tempfile.mkdtemp(prefix="jp-srv-")) / "run" / "pool.sock"


class Server:
    """A `juliapool serve` process on `path`."""

    def __init__(self, path: Path, *args: str, wait: bool = True) -> None:
        self.path = path
        self.log = path.parent.parent / "server.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "juliapool.cli", "serve", "--socket", str(path), *args],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if wait:
            assert wait_until(self.ready, 60, 0.1), f"the server did not come up: {self.log_text()}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            return True
        try:
            juliapool.connect(self.path).close()
            return True
        except ServerUnavailableError:
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> List[int]:
        with juliapool.connect(self.path) as c:
            return [w["pid"] for w in c.get_stats()["worker_list"] if w["pid"]]

    def stats(self) -> dict:
        with juliapool.connect(self.path) as c:
            return c.get_stats()

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_client(path: Path, code: str, *, timeout: float = 120, check: bool = True,
               preexec: Sequence[str] = (), env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run `code` (after PRELUDE) in a new Python process; `preexec` goes before python (setpriv ...)."""
    proc = subprocess.run([*preexec, sys.executable, "-c", PRELUDE + textwrap.dedent(code), str(path)],
                          capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy())
    if check:
        assert proc.returncode == 0, f"client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@contextlib.contextmanager
def package_for_another_user() -> Iterator[Dict[str, str]]:
    """An environment in which another user's Python imports juliapool: a copy of the package in a
    folder anyone may read (the checkout itself may sit in a folder only its owner can open, as a
    fresh clone under mktemp does)."""
    folder = Path(tempfile.mkdtemp(prefix="jp-pkg-"))
    try:
        shutil.copytree(Path(juliapool.__file__).parent, folder / "juliapool",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for place in [folder, *folder.rglob("*")]:
            place.chmod(0o755 if place.is_dir() else 0o644)
        yield dict(os.environ, PYTHONPATH=str(folder), PYTHONDONTWRITEBYTECODE="1")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def client_json(path: Path, code: str, **kwargs: object) -> list:
    """Run a client and parse each line it prints as JSON."""
    out = run_client(path, code, **kwargs).stdout  # type: ignore[arg-type]
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def spawn_client(path: Path, code: str) -> subprocess.Popen:
    """Start a client that prints a line when it is where the test wants it; returns after that line."""
    proc = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip(), f"the client ended early: {proc.stderr.read() if proc.stderr else ''}"
    proc.first_line = line.strip()  # type: ignore[attr-defined]
    return proc


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def wait_dead(pid: int, timeout: float = 15) -> bool:
    return wait_until(lambda: not pid_alive(pid), timeout, 0.05)


def wait_stats(server: Server, predicate, timeout: float = 30) -> dict:
    box: dict = {}

    def check() -> bool:
        box["s"] = server.stats()
        return bool(predicate(box["s"]))
    assert wait_until(check, timeout, 0.1), f"server stats never matched: {box.get('s')}"
    return box["s"]


def now() -> float:
    return time.monotonic()
