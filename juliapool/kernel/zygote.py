"""The kernel zygote: a Python process that has imported the kernel machinery once and forks one
kernel per notebook, so that a notebook does not wait for Python and ipykernel to start.

    python -m juliapool.kernel.zygote SOCKET        (the pool server starts it beside its own socket)

A notebook's kernelspec runs `juliapool/kernel/launcher.py`, a tiny stdlib-only program, which
connects here and sends a `launch` packet (its kernel arguments, environment and working folder)
with its stdin, stdout and stderr (SCM_RIGHTS). The zygote forks; the child takes those descriptors,
environment and folder, and runs `juliapool.kernel.launch` (which leases the notebook's worker from
the pool server). The zygote answers `started` {pid}, and `exited` {code} when the child ends. If the
launcher's connection ends first (it was killed), the child is ended: SIGTERM, then SIGKILL.

The zygote is single-threaded (it forks), refuses any peer of another uid, and ends when the pool
server that started it ends. A kernel ends when its launcher does (it watches the launcher's pidfd).
"""

from __future__ import annotations

import gc
import logging
import os
import select
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Dict, List, Optional

# The slow imports, made once here and shared by every forked kernel (copy-on-write).
import faulthandler  # noqa: F401  (and tornado.gen: what the kernel application imports as it starts)
import tornado.gen  # noqa: F401
from ipykernel.kernelapp import IPKernelApp  # noqa: F401

from juliapool import wire
from juliapool.kernel import kernel as _kernel  # noqa: F401

log = logging.getLogger(__name__)

KERNELS_SOCKET = wire.KERNELS_SOCKET
TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a kernel whose launcher is gone


@dataclass(eq=False)
class Child:
    pid: int
    conn: socket.socket
    pidfd: int
    term_at: Optional[float] = None


class Zygote:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sel = selectors.DefaultSelector()
        self.children: Dict[int, Child] = {}
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            os.unlink(path)  # the pool server that started us holds the folder's lock
        except FileNotFoundError:
            pass
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(64)
        self.sel.register(self.listener, selectors.EVENT_READ, self._accept)
        self.stopping = False
        # The pool server started us: when it ends, so do we (kernels already forked go on).
        self.parent = os.pidfd_open(os.getppid())
        self.sel.register(self.parent, selectors.EVENT_READ, lambda fd: setattr(self, "stopping", True))

    def serve_forever(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        # Every object imported so far is left out of the collector's scans, here and in the kernels
        # forked from here: a scan writes to each object it visits, which would copy its page.
        gc.freeze()
        print("ready", flush=True)  # to the pool server, which waits for it before it listens
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        while not self.stopping:
            for key, _ in self.sel.select(0.5):
                # An earlier event of the same batch may have closed this one's file: a kernel's end
                # (its pidfd) and its launcher's (the connection) often come together.
                if self.sel.get_map().get(key.fd) is not key:
                    continue
                try:
                    key.data(key.fileobj)
                except Exception:  # one launcher's trouble must not end the zygote for all the others
                    log.exception("kernel zygote: handling %r failed", key.fileobj)
            self._escalate()
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    # ---- launchers -------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        pid, uid = wire.peer_uid(conn)
        if uid != os.getuid():
            log.warning("refused a launcher of uid %d (pid %d)", uid, pid)
            conn.close()
            return
        conn.settimeout(5.0)
        self.sel.register(conn, selectors.EVENT_READ, self._on_launcher)

    def _on_launcher(self, conn: socket.socket) -> None:
        child = next((c for c in self.children.values() if c.conn is conn), None)
        try:
            msg, fds = wire.recv(conn)
        except (OSError, ValueError):
            msg, fds = {}, []
        if child is not None:  # a launcher speaks once: anything more is its end
            wire._close_all(fds)
            self._launcher_gone(child)
            return
        if msg.get("op") != "launch" or len(fds) != 3:
            wire._close_all(fds)
            self.sel.unregister(conn)
            conn.close()
            return
        self._fork(conn, msg, fds)

    def _fork(self, conn: socket.socket, msg: dict, fds: List[int]) -> None:
        pid = os.fork()
        if pid == 0:
            self._become_kernel(msg, fds, wire.peer_uid(conn)[0])  # never returns
        wire._close_all(fds)
        pidfd = os.pidfd_open(pid)
        self.children[pid] = Child(pid, conn, pidfd)
        self.sel.register(pidfd, selectors.EVENT_READ, lambda fd, pid=pid: self._reap(pid))
        try:
            wire.send(conn, {"op": "started", "pid": pid})
        except OSError:
            self._launcher_gone(self.children[pid])
        log.info("kernel %d forked for launcher request %s", pid, msg.get("argv"))

    def _launcher_gone(self, child: Child) -> None:
        if child.term_at is None:
            log.info("the launcher of kernel %d is gone: ending it", child.pid)
            child.term_at = time.monotonic()
            _signal(child.pid, signal.SIGTERM)

    def _escalate(self) -> None:
        for child in self.children.values():
            if child.term_at is not None and time.monotonic() - child.term_at > TERM_GRACE:
                _signal(child.pid, signal.SIGKILL)

    def _reap(self, pid: int) -> None:
        child = self.children.pop(pid)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        self.sel.unregister(child.pidfd)
        os.close(child.pidfd)
        try:
            wire.send(child.conn, {"op": "exited", "code": code})
        except OSError:
            pass
        self.sel.unregister(child.conn)
        child.conn.close()

    # ---- the child -------------------------------------------------------------------------

    def _become_kernel(self, msg: dict, fds: List[int], launcher: int) -> None:
        code = 1
        try:
            os.setsid()  # its own session: Jupyter signals the launcher, which passes them on
            _end_with(launcher)
            for target, fd in zip((0, 1, 2), fds):
                os.dup2(fd, target)
            wire._close_all(fds)
            self.sel.close()
            self.listener.close()
            for child in self.children.values():
                child.conn.close()
                os.close(child.pidfd)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            logging.getLogger().handlers.clear()
            os.environ.clear()
            os.environ.update({str(k): str(v) for k, v in dict(msg.get("env", {})).items()})
            os.chdir(str(msg.get("cwd", "/")))
            argv = [str(a) for a in msg.get("argv", [])]
            # ipykernel's parent poller would end the kernel when its parent (we) ends, and reads
            # $JPY_PARENT_PID at import time (ours). The launcher watches Jupyter instead.
            argv.append("--IPKernelApp.parent_handle=0")
            sys.argv = ["juliapool-kernel", *argv]
            from juliapool.kernel import launch

            launch(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _end_with(launcher: int) -> None:
    """In a kernel: SIGTERM ourselves (a clean shutdown: the worker's lease is given back) when the
    launcher ends, even if the zygote is gone by then."""
    pidfd = os.pidfd_open(launcher)

    def watch() -> None:
        select.select([pidfd], [], [])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    Zygote(args[0]).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
