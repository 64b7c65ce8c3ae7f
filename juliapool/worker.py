"""One Julia worker process and its lifecycle (`Worker`).

A `Worker` is used by one caller at a time (the pool guarantees it); that caller's thread does the
I/O of its request itself: it waits with one `select` on the reply pipe, the user's stdout and
stderr pipes, the process's pidfd and a wake-up pipe. So output is drained while the code runs
(no pipe ever fills up), a death is noticed at once, and no extra thread sits between the caller
and its result. Only `interrupt()` and `kill()` are called from other threads.

Lifecycle, in `subprocess.Popen`'s words: `start` -> (`execute` | `request`)* -> `stop`, which climbs
a ladder: ask the worker to quit, SIGTERM, SIGKILL to its process group, each with a timeout.
"""

from __future__ import annotations

import fcntl
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from typing import List, Optional, Sequence

from . import protocol
from .errors import WorkerDiedError, WorkerStartError
from .execution import (STREAMS, DisplayCallback, Execution, InputCallback, OutputCallback,
                        describe_exit)
from .protocol import Frame, FrameReader
from .result import ExecReply

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
EXIT_WAIT = 5.0  # seconds a worker that is exiting by itself gets before SIGKILL


class Worker:
    """One persistent Julia process (`julia/worker.jl`), spoken to over private pipes."""

    def __init__(self, julia: str, script: str, julia_args: Sequence[str] = (), env: Optional[dict] = None,
                 name: str = "worker") -> None:
        self.julia = julia
        self.script = script
        self.julia_args = list(julia_args)
        self.env = env
        self.name = name
        self.proc: Optional[subprocess.Popen] = None
        self.julia_version = ""
        self.calls = 0  # executions served, for recycling
        self.sessions: set = set()  # session keys whose module lives here
        self.ended_by = ""  # which step of the stop ladder ended the process
        self.kill_reason = ""  # why we killed it, for the result of the call it was running
        # Set when output arrived outside any request: a task left behind by some earlier code
        # prints on its own, so the pool retires this worker before it can print into a stranger's call.
        self.dirty = False
        self.cancelled = False
        self.started = threading.Event()  # set by the pool when start() returned or failed
        self._next_id = 0
        self._busy = threading.RLock()  # held by the one caller doing I/O
        self._state_lock = threading.Lock()
        self._running: Optional[Execution] = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 120.0) -> None:
        """Spawn Julia and wait for its hello; raise WorkerStartError with Julia's stderr if it fails."""
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        cmd = [self.julia, *self.julia_args, self.script, protocol.PROTOCOL_VERSION, str(req_r), str(rep_w)]
        log.debug("%s: starting %s", self.name, cmd)
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(req_r, rep_w), start_new_session=True, env=self.env)
        except OSError as e:
            for fd in (req_r, rep_w, self._req_w, self._rep_r):
                os.close(fd)
            raise WorkerStartError(f"cannot run {self.julia!r}: {e}") from e
        finally:
            if self.proc is not None:
                os.close(req_r)
                os.close(rep_w)
        if self.cancelled:  # cancel() came before the process existed
            self.kill()
        self._open_selector()
        self._grow_output_pipes()
        hello = self._wait_for_hello(time.monotonic() + timeout)
        self.julia_version = hello.text(0)
        log.info("%s: Julia %s ready (pid %s)", self.name, self.julia_version, self.pid)

    def _grow_output_pipes(self) -> None:
        # Bigger pipes (Linux: F_SETPIPE_SZ) mean fewer wake-ups and reads for large outputs.
        for fd in self._out_fds:
            try:
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
            except (OSError, AttributeError):
                pass

    def _open_selector(self) -> None:
        assert self.proc and self.proc.stdout and self.proc.stderr
        self._out_fds = {self.proc.stdout.fileno(): "stdout", self.proc.stderr.fileno(): "stderr"}
        self._sel = selectors.DefaultSelector()
        for fd, name in self._out_fds.items():
            os.set_blocking(fd, False)
            self._sel.register(fd, selectors.EVENT_READ, name)
        os.set_blocking(self._rep_r, False)
        self._sel.register(self._rep_r, selectors.EVENT_READ, "reply")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._pidfd = -1
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self.proc.pid)
                self._sel.register(self._pidfd, selectors.EVENT_READ, "exit")
            except OSError:  # old kernel: EOF on the reply pipe tells us instead
                self._pidfd = -1
        self._frames = FrameReader()

    def _wait_for_hello(self, deadline: float) -> Frame:
        err = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise WorkerStartError("Julia did not start within the start-up timeout", err.decode(errors="replace"))
            for key, _ in self._sel.select(min(left, 1.0)):
                what = key.data
                if what == "reply":
                    frames = self._read_frames()
                    if frames and frames[0].kind == "H":
                        return frames[0]
                    if frames is None:
                        self._start_failed(err)
                elif what in STREAMS:
                    data = self._read(key.fd)
                    if what == "stderr" and data:
                        err += data[-65536:]
                elif what == "exit":
                    self._start_failed(err)
            if self.proc and self.proc.poll() is not None:
                self._start_failed(err)

    def _start_failed(self, err: bytearray) -> None:
        # Give stderr a moment to deliver Julia's last words before reporting.
        fd = self.proc.stderr.fileno() if self.proc and self.proc.stderr else -1
        end = time.monotonic() + 1.0
        while fd >= 0 and time.monotonic() < end:
            data = self._read(fd)
            if not data:
                break
            err += data
        code = self.proc.wait() if self.proc else None
        self._close_fds()
        raise WorkerStartError(describe_exit(code), err.decode(errors="replace"))

    def poll(self) -> Optional[int]:
        """The exit code if the process has ended, else None (like Popen.poll)."""
        return self.proc.poll() if self.proc else -1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the process (0 if unknown), for recycling decisions."""
        try:
            with open(f"/proc/{self.pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def interrupt(self) -> bool:
        """Send SIGINT if a request is running (thread-safe). Returns whether one was sent."""
        with self._state_lock:
            run = self._running
            if run is None or not self.alive:
                return False
            if run.interrupted_at is None:
                run.interrupted_at = time.monotonic()
            self._signal(signal.SIGINT)
        self._wake()
        return True

    def cancel(self) -> None:
        """Stop a start in progress (thread-safe): the process is killed, `start` raises."""
        self.cancelled = True
        self.kill("the pool was shut down")

    def kill(self, reason: str = "") -> None:
        """SIGKILL the worker's whole process group (it and whatever it spawned); thread-safe.
        `reason` becomes the message of the call that was running."""
        self.kill_reason = self.kill_reason or reason
        self._signal(signal.SIGKILL, group=True)
        self._wake()

    def _signal(self, sig: int, group: bool = False) -> None:
        if not self.proc or self.proc.returncode is not None:
            return
        try:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def stop(self, timeout: float = 2.0, reason: str = "") -> str:
        """End the process: ask it to quit, then SIGTERM, then SIGKILL, each step with `timeout`.
        Idempotent. Returns the step that ended it ("exited", "quit", "terminate", "kill").

        If a caller is mid-request, the process is killed at once and that caller, which owns the
        pipes, gets a result that gives `reason`; the pipes are closed when it lets go."""
        if self.proc is None:
            return self.ended_by or "never-started"
        if not self._busy.acquire(blocking=False):
            self.kill(reason or "the worker was stopped")
            self.ended_by = self.ended_by or "kill"
            return self.ended_by
        try:
            if self.proc.poll() is None:
                self.ended_by = self._stop_ladder(timeout)
            self._reap()
            self._close_fds()
        finally:
            self._busy.release()
        return self.ended_by or "exited"

    def _stop_ladder(self, timeout: float) -> str:
        assert self.proc
        try:
            os.write(self._req_w, protocol.encode_frame("Q", 0))
            self.proc.wait(timeout)
            return "quit"
        except (OSError, subprocess.TimeoutExpired):
            pass
        for step, sig in (("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)):
            self._signal(sig, group=sig == signal.SIGKILL)
            try:
                self.proc.wait(timeout)
                return step
            except subprocess.TimeoutExpired:
                continue
        return "kill"

    def _close_fds(self) -> None:
        if hasattr(self, "_sel"):
            self._sel.close()  # idempotent
        for attr in ("_req_w", "_rep_r", "_pidfd"):
            fd = getattr(self, attr, -1)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, -1)
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    # ---- low-level I/O ---------------------------------------------------------------------

    def _read(self, fd: int) -> bytes:
        try:
            return os.read(fd, READ_SIZE)
        except OSError:  # nothing to read now (non-blocking), or already closed
            return b""

    def _read_frames(self) -> Optional[List[Frame]]:
        """Frames now readable on the reply pipe; None at end of file (the worker is gone)."""
        try:
            data = os.read(self._rep_r, READ_SIZE)
        except BlockingIOError:
            return []
        if not data:
            return None
        return self._frames.feed(data)

    def _send(self, kind: str, request_id: int, fields: Sequence[protocol.Field] = ()) -> None:
        view = memoryview(protocol.encode_frame(kind, request_id, fields))
        while view:  # the request pipe stays blocking: Julia reads it while we write
            n = os.write(self._req_w, view)
            view = view[n:]

    def _new_id(self) -> int:
        self._next_id = (self._next_id % 0xFFFFFFFE) + 1
        return self._next_id

    def _drain_stale_output(self) -> None:
        """Drop output that arrived between requests (a background task): it belongs to nobody."""
        for key, _ in self._sel.select(0):
            if key.data in STREAMS or key.data == "wake":
                data = self._read(key.fd)
                if key.data in STREAMS and data:
                    log.debug("%s: dropped %d bytes of %s printed between requests", self.name, len(data), key.data)
                    self.dirty = True

    # ---- requests --------------------------------------------------------------------------

    def execute(self, code: str, *, module: str = "", filename: str = "none", flags: str = "p",
                timeout: Optional[float] = None, grace: float = 2.0, history: str = "",
                on_output: Optional[OutputCallback] = None, on_display: Optional[DisplayCallback] = None,
                on_input: Optional[InputCallback] = None) -> ExecReply:
        """Run `code` (PROTOCOL.md `E` request) and return when it is done, dead or timed out."""
        with self._busy:
            self._drain_stale_output()
            rid = self._new_id()
            run = Execution(rid, protocol.new_nonce(), on_output, on_display, on_input, print_errors="p" in flags)
            with self._state_lock:
                self._running = run
            try:
                try:
                    self._send("E", rid, [module, code, run.nonce, filename, flags] + ([history] if history else []))
                except OSError as e:  # it died before it could read the code: nothing ran
                    raise WorkerDiedError(describe_exit(self._reap())) from e
                try:
                    self._pump(run, timeout, grace)
                except BaseException:  # e.g. KeyboardInterrupt: the code still runs, so end it
                    run.killed = True
                    self.kill("the caller stopped waiting for this call")
                    self._collect_after_death(run)
                    raise
            finally:
                with self._state_lock:
                    self._running = None
            self.calls += 1
            reply = run.reply(self.proc.returncode if self.proc else None, self.kill_reason)
            self.dirty = self.dirty or run.late_output
            if run.interrupted_at is not None and not run.saw_interrupt() and self.alive:
                self._settle_late_interrupt()
            if run.callback_error is not None:
                raise run.callback_error
            return reply

    def _pump(self, run: Execution, timeout: Optional[float], grace: float) -> None:
        """Move bytes until the execution is complete. Escalation: at the timeout, SIGINT; `grace`
        seconds after any SIGINT (the timeout's or `interrupt()`'s), SIGKILL."""
        timeout_at = time.monotonic() + timeout if timeout else None
        while not run.complete:
            now = time.monotonic()
            if timeout_at is not None and now >= timeout_at and not run.timed_out:
                run.timed_out, run.timeout = True, timeout
                self.interrupt()
            kill_at = run.interrupted_at + grace if run.interrupted_at is not None else None
            if kill_at is not None and now >= kill_at:
                log.warning("%s: code did not stop %.1fs after SIGINT: killing the worker", self.name, grace)
                run.killed = True
                self.kill()
                self._collect_after_death(run)
                return
            deadlines = [t for t in (None if run.timed_out else timeout_at, kill_at) if t is not None]
            for key, _ in self._sel.select(max(0.0, min(deadlines) - now) if deadlines else None):
                if self._handle_event(key, run):
                    self._collect_after_death(run)
                    return

    def _handle_event(self, key: selectors.SelectorKey, run: Execution) -> bool:
        """Process one readable fd; True when the worker has ended."""
        what = key.data
        if what in STREAMS:
            data = self._read(key.fd)
            if data:
                run.on_stream(what, data)
        elif what == "reply":
            frames = self._read_frames()
            if frames is None:
                return True
            for frame in frames:
                answer = run.on_frame(frame)
                if answer is not None:
                    self._send("N", run.id, [answer])
        elif what == "wake":
            self._read(key.fd)
        elif what == "exit":
            return True
        return False

    def _reap(self) -> Optional[int]:
        """SIGKILL the process group and wait for the worker. The group is signalled even when the
        worker itself has already exited: children it started (run(`...`)) may still hold our pipes."""
        if self.proc is None:
            return None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.wait()

    def _collect_after_death(self, run: Execution) -> None:
        """The worker ended (or is being killed): reap it and keep every byte it wrote."""
        assert self.proc
        if not run.killed:
            # It is ending by itself (exit(n) runs atexit hooks after closing our pipe): let it
            # finish, so that its own exit status is what we report.
            try:
                self.proc.wait(EXIT_WAIT)
            except subprocess.TimeoutExpired:
                pass
        self._reap()  # also ends children that hold our pipes open
        end = time.monotonic() + 2.0
        open_fds = dict(self._out_fds)
        while open_fds and time.monotonic() < end:
            for fd, name in list(open_fds.items()):
                data = self._read(fd)
                if data:
                    run.on_stream(name, data)
                else:
                    del open_fds[fd]
        run.on_death()

    def _settle_late_interrupt(self) -> None:
        # The code finished just as our SIGINT was sent: let the signal land in the idle loop
        # (where the worker ignores it) before anyone else's code runs here.
        time.sleep(0.05)
        try:
            self.request("P", [], timeout=5.0)
        except WorkerDiedError:
            pass

    def _log_request_stderr(self, fd: Optional[int] = None) -> None:
        """The worker reports its own errors in a short request on stderr, and answers with an empty
        result (PROTOCOL.md): log what is there now (the fds are non-blocking)."""
        if fd is None:
            fd = next(f for f, name in self._out_fds.items() if name == "stderr")
        data = b""
        for _ in range(64):  # bounded: a background task may be printing all the time
            chunk = self._read(fd)
            if not chunk:
                break
            data += chunk
        if data:
            log.warning("%s: %s", self.name, data.decode("utf-8", errors="replace").rstrip())

    def request(self, kind: str, fields: Sequence[protocol.Field], timeout: float = 30.0) -> Frame:
        """A short request that answers with one `R` frame (complete, inspect, is_complete, ping, drop)."""
        with self._busy:
            if not self.alive:
                raise WorkerDiedError(describe_exit(self.poll()))
            self._drain_stale_output()
            rid = self._new_id()
            self._send(kind, rid, fields)
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise WorkerDiedError(f"the Julia worker did not answer a {kind!r} request within {timeout}s; it was killed")
                for key, _ in self._sel.select(left):
                    if key.data == "reply":
                        frames = self._read_frames()
                        if frames is None:
                            raise WorkerDiedError(describe_exit(self.proc.wait() if self.proc else None))
                        for frame in frames:
                            if frame.id == rid and frame.kind == "R":
                                self._log_request_stderr()  # written before the reply
                                return frame
                    elif key.data in STREAMS:
                        # Completion code may print: it belongs to nobody. What goes to stderr is logged.
                        self._log_request_stderr(key.fd) if key.data == "stderr" else self._read(key.fd)
                    elif key.data == "exit":
                        raise WorkerDiedError(describe_exit(self.proc.wait() if self.proc else None))
