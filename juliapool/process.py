"""One Julia worker process: its start, its file descriptors, signals, and the stop ladder.

`WorkerProcess` knows nothing of requests: it spawns `julia worker.jl`, owns every descriptor that
connects us to it (request and reply pipes, the user's stdout and stderr, a pidfd, a wake-up pipe),
reads whatever is ready on them (`read_events`), and ends the process. Its verbs are
`subprocess.Popen`'s: `poll`, `send_signal`, `kill`, `stop`. Which step of the ladder ended the process
is recorded in `ended_by`, so callers and tests can tell a polite quit from a SIGKILL.

Thread safety: `send_signal`, `kill`, `wake` and `poll` may be called from any thread; reading,
writing and `close` belong to the one thread that owns the worker at the time.
"""

from __future__ import annotations

import fcntl
import logging
import os
import selectors
import signal
import subprocess
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import protocol
from .errors import WorkerStartError

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

# What `read_events` reports: output of a stream, reply bytes (b"" at end of file), the process exited.
STDOUT, STDERR, REPLY, EXIT, WAKE = "stdout", "stderr", "reply", "exit", "wake"
STREAMS = (STDOUT, STDERR)
Event = Tuple[str, bytes]
ExitStatus = Callable[[], Optional[int]]  # an adopted worker's exit code, from its parent


def describe_exit(returncode: Optional[int]) -> str:
    """A process's end in words (the one place that says it)."""
    if returncode is None:
        return "the Julia worker stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the Julia worker was killed by signal {-returncode} ({name})"
    return f"the Julia worker exited with code {returncode}"


class WorkerProcess:
    """`julia [args] worker.jl <protocol> <REQ> <REP>` in a process group of its own."""

    def __init__(self, julia: str, script: str, julia_args: Sequence[str], env: Optional[Mapping[str, str]]) -> None:
        self.command = [julia, *julia_args, script]
        self.env = dict(env) if env is not None else None
        self.proc: Optional[subprocess.Popen] = None
        self.ended_by = ""  # the step that ended it: "exited" (by itself), "quit", "terminate", "kill"
        self._fds: Dict[int, str] = {}  # every pipe end and pidfd we made -> what it carries; closed in close()
        self._streams: Dict[int, str] = {}  # the user's stdout and stderr (Popen's file objects close them)
        self._killed = False
        self._req_w = -1
        self._sel: Optional[selectors.BaseSelector] = None
        self._wake_w = -1

    # ---- start -------------------------------------------------------------------------------

    def open(self) -> None:
        """Spawn Julia with the protocol pipes. Raises WorkerStartError if it cannot be run; no
        descriptor is left open then."""
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        wake_r, self._wake_w = os.pipe()
        self._own(req_w, "request")
        self._own(rep_r, REPLY)
        self._own(wake_r, WAKE)
        self._own(self._wake_w, "wake-w")
        self._req_w = req_w
        cmd = [*self.command, protocol.PROTOCOL_VERSION, str(req_r), str(rep_w)]
        log.debug("starting %s", cmd)
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         pass_fds=(req_r, rep_w), start_new_session=True, env=self.env)
        except OSError as e:
            self.close()
            raise WorkerStartError(f"cannot run {self.command[0]!r}: {e}") from e
        finally:
            os.close(req_r)  # the child's ends: it has its own copies now
            os.close(rep_w)
        assert self.proc.stdout and self.proc.stderr
        _offer_to_the_oom_killer(self.proc.pid)
        self._streams = {self.proc.stdout.fileno(): STDOUT, self.proc.stderr.fileno(): STDERR}
        self._watch()

    @classmethod
    def adopt(cls, fds: Mapping[str, int], pid: int, exit_status: "ExitStatus") -> "WorkerProcess":
        """A worker that another process started (the pool server), over descriptors it handed us:
        `fds` maps "request", REPLY, STDOUT, STDERR, EXIT (a pidfd) to descriptors we now own. We
        cannot wait for a process that is not our child: `exit_status()` asks its parent for the
        exit code once the pidfd says it ended. Nothing is spawned; `stop` only closes our ends."""
        self = cls("", "", (), None)
        self.proc = _Adopted(pid, fds[EXIT], fds[STDOUT], fds[STDERR], exit_status)  # type: ignore[assignment]
        self._req_w = fds["request"]
        for what in ("request", REPLY, EXIT):
            self._own(fds[what], what)
        wake_r, self._wake_w = os.pipe()
        self._own(wake_r, WAKE)
        self._own(self._wake_w, "wake-w")
        self._streams = {fds[STDOUT]: STDOUT, fds[STDERR]: STDERR}
        self._sel = selectors.DefaultSelector()
        for fd, what in [*self._fds.items(), *self._streams.items()]:
            if what in (REPLY, WAKE, STDOUT, STDERR, EXIT):
                os.set_blocking(fd, False) if what != EXIT else None
                self._sel.register(fd, selectors.EVENT_READ, what)
        os.set_blocking(self._wake_w, False)
        return self

    def _own(self, fd: int, what: str) -> None:
        self._fds[fd] = what

    def _watch(self) -> None:
        """One selector over everything that can wake the owner: replies, output, exit, wake-ups."""
        assert self.proc is not None
        self._sel = selectors.DefaultSelector()
        for fd, what in [*self._fds.items(), *self._streams.items()]:
            if what in (REPLY, WAKE, STDOUT, STDERR):
                os.set_blocking(fd, False)
                self._sel.register(fd, selectors.EVENT_READ, what)
            if what in STREAMS:  # bigger pipes: fewer wake-ups and reads for large outputs
                try:
                    fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
                except OSError:
                    pass
        os.set_blocking(self._wake_w, False)
        try:
            pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):  # old kernel or Python: EOF on the reply pipe tells us instead
            return
        self._own(pidfd, EXIT)
        self._sel.register(pidfd, selectors.EVENT_READ, EXIT)

    # ---- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def poll(self) -> Optional[int]:
        """The exit code if the process has ended, else None (like Popen.poll); -1 if never started."""
        return self.proc.poll() if self.proc else -1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the process (0 if unknown)."""
        try:
            with open(f"/proc/{self.pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError, TypeError):
            return 0

    # ---- I/O ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write all of `data` to the request pipe (blocking: Julia reads it while we write).
        Raises OSError if the worker is gone."""
        view = memoryview(data)
        while view:
            n = os.write(self._req_w, view)
            view = view[n:]

    def read_events(self, timeout: Optional[float]) -> List[Event]:
        """Wait up to `timeout` seconds (None: forever) for something to happen; read what is ready.

        Each event is (what, bytes). End of file on a pipe is reported once, as (what, b""), and
        the pipe is watched no more; so is the process's exit (EXIT, b"")."""
        if self._sel is None:
            return [(EXIT, b"")]
        events = []
        for key, _ in self._sel.select(None if timeout is None else max(0.0, timeout)):
            what = key.data
            data = b"" if what == EXIT else _read(key.fd)
            if data is None:
                continue  # woken for nothing after all
            if not data and what != WAKE:
                self._sel.unregister(key.fd)
            events.append((what, data))
        return events

    def descriptors(self) -> Dict[str, int]:
        """Our ends of the worker's pipes and its pidfd, by what they carry ("request", REPLY,
        STDOUT, STDERR, EXIT): what the pool server lends a client (`adopt` on the other side).
        They stay ours; the borrower gets copies."""
        named = {what: fd for fd, what in self._fds.items() if what in ("request", REPLY, EXIT)}
        named.update({what: fd for fd, what in self._streams.items()})
        return named

    def event_fd(self) -> int:
        """One descriptor that is readable whenever `read_events` has something (epoll's own fd),
        for an event loop to watch (asyncio's add_reader); -1 if there is none."""
        fileno = getattr(self._sel, "fileno", None)
        return fileno() if fileno is not None else -1

    def drain_streams(self, seconds: float) -> List[Event]:
        """After the process ended: read what is left on stdout and stderr until both reach end of
        file (children that held them are dead too) or `seconds` pass."""
        left = dict(self._streams)
        end = time.monotonic() + seconds
        events: List[Event] = []
        while left and time.monotonic() < end:
            for fd, what in list(left.items()):
                data = _read(fd)
                if data:
                    events.append((what, data))
                elif data == b"":
                    del left[fd]
            if left:
                time.sleep(0.005)
        return events

    def wake(self) -> None:
        """Make the owner's `read_events` return now (thread-safe)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # ---- signals and the stop ladder -----------------------------------------------------------

    def send_signal(self, sig: int, group: bool = False) -> None:
        """Signal the worker (or its whole process group); nothing if it has ended. Thread-safe."""
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            os.killpg(self.proc.pid, sig) if group else self.proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (it and whatever it spawned). Thread-safe."""
        self._killed = True
        self.send_signal(signal.SIGKILL, group=True)
        self.wake()

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Wait for the process to end; its exit code, or None if `timeout` passed first."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def reap(self) -> Optional[int]:
        """SIGKILL the process group and wait. The group is signalled even when the worker itself
        has exited: children it started (run(`...`)) may still hold our pipes."""
        if self.proc is None:
            return None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        code = self.proc.wait()
        self.ended_by = self.ended_by or ("kill" if self._killed else "exited")
        return code

    def stop(self, timeout: float = 2.0) -> str:
        """End the process: ask it to quit, then SIGTERM, then SIGKILL, each step with `timeout`;
        reap it and close every descriptor. Idempotent. Returns `ended_by`."""
        if self.proc is None:
            self.close()
            return self.ended_by or "never-started"
        if self.proc.poll() is None:
            self.ended_by = self._climb(timeout)
        self.ended_by = self.ended_by or "exited"
        self.reap()
        self.close()
        return self.ended_by

    def _climb(self, timeout: float) -> str:
        try:
            self.write(protocol.encode_frame(protocol.Request.QUIT, 0))
            if self.wait(timeout) is not None:
                return "quit"
        except OSError:
            pass
        for step, sig in (("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)):
            self.send_signal(sig, group=sig == signal.SIGKILL)
            if self.wait(timeout) is not None:
                return step
        return "kill"

    def close(self) -> None:
        """Close every descriptor we own (idempotent). The process itself is not touched."""
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        for fd in list(self._fds):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self._req_w = self._wake_w = -1
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


def _offer_to_the_oom_killer(pid: int) -> None:
    """If the machine runs out of memory, the kernel should kill a worker (which the pool replaces),
    never the Python process that owns it: raise the worker's oom_score_adj to the maximum (an
    unprivileged process may raise its children's)."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def _read(fd: int) -> Optional[bytes]:
    """Bytes ready on `fd`; b"" at end of file; None if nothing is ready (or it is closed)."""
    try:
        return os.read(fd, READ_SIZE)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


class _Adopted:
    """What `WorkerProcess` needs of a `Popen` (pid, returncode, poll, wait, send_signal, stdout and
    stderr), for a worker that is not our child: its pidfd says when it ended, its parent the code."""

    def __init__(self, pid: int, pidfd: int, stdout: int, stderr: int, exit_status: ExitStatus) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None
        self._pidfd = pidfd
        self._exit_status = exit_status
        self._ended = False
        self.stdout, self.stderr = _FdStream(stdout), _FdStream(stderr)

    def poll(self) -> Optional[int]:
        return self.wait(0)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        if not self._ended:
            with selectors.DefaultSelector() as sel:
                try:
                    sel.register(self._pidfd, selectors.EVENT_READ)
                except (ValueError, OSError):  # our pidfd is closed: we no longer know
                    return self.returncode
                if not sel.select(timeout):
                    if timeout is None or timeout > 0:
                        raise subprocess.TimeoutExpired("julia", timeout or 0)
                    return None
            self._ended = True
            self.returncode = self._exit_status()
        return self.returncode if self.returncode is not None else -signal.SIGKILL

    def send_signal(self, sig: int) -> None:
        if not self._ended:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except OSError:  # it ended meanwhile, or our pidfd is closed
                pass


class _FdStream:
    """A pipe end the way Popen's file objects expose it (fileno, close)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1
