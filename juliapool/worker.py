"""One Julia worker: requests and their replies over the pipes of a `WorkerProcess`.

A `Worker` is used by one caller at a time (the pool guarantees it); that caller's thread does the
I/O of its request itself, in one loop (`_serve`) that waits on everything at once: the reply pipe,
the user's stdout and stderr, the process's exit and a wake-up pipe. Whatever the caller waits
for (the hello, an execution, a short request) is a *job* that the loop feeds with output, frames
and the end of the process, and that keeps its own clock. So output is drained while code runs (no
pipe ever fills), a death is noticed at once, and no thread sits between the caller and its result.
Only `interrupt()` and `kill()` are called from other threads.

Lifecycle: `start` -> (`execute` | `complete` | `inspect` | ...)* -> `stop` (the process's ladder).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import WorkerDiedError, WorkerStartError
from .execution import INTERRUPT, KILL, NO_LIMITS, DisplayCallback, Execution, InputCallback, Limits, OutputCallback
from .jobs import Answer, Hello
from .process import EXIT, REPLY, STDERR, STREAMS, Event, WorkerProcess, describe_exit
from .protocol import (FRESH_MODULE, PLAIN, ExecOptions, Frame, FrameReader, Request, bundle_from_fields,
                       encode_frame, new_nonce)
from .result import NO_ANSWER, ExecReply

log = logging.getLogger(__name__)

EXIT_WAIT = 5.0  # seconds a worker that is exiting by itself gets before SIGKILL
DRAIN_AFTER_DEATH = 2.0  # seconds to collect what a dead worker's pipes still hold
REQUEST_TIMEOUT = 30.0




class Worker:
    """One persistent Julia process (`julia/worker.jl`), spoken to over private pipes."""

    def __init__(self, julia: str, script: str, julia_args: Sequence[str] = (), env: Optional[Dict[str, str]] = None,
                 name: str = "worker") -> None:
        self.name = name
        self.julia_args = list(julia_args)
        self.process = WorkerProcess(julia, script, julia_args, env)
        self.julia_version = ""
        self.calls = 0  # executions served, for recycling
        self.sessions: set = set()  # session keys whose module lives here
        self.kill_cause = ""  # why juliapool killed it (juliapool.result), for the call it was running
        # Set when output arrived outside any request: a task left behind by some earlier code
        # prints on its own, so the pool retires this worker before it can print into a stranger's call.
        self.dirty = False
        self.dirty_reason = ""  # the first retire reason seen ("task" for output between requests)
        self.cancelled = False
        self.started = threading.Event()  # set by the pool when start() returned or failed
        self._next_id = 0
        self._frames = FrameReader()
        self._busy = threading.RLock()  # held by the one caller doing I/O
        self._state_lock = threading.Lock()
        self._running: Optional[Execution] = None

    @classmethod
    def over(cls, process: WorkerProcess, name: str, julia_version: str) -> "Worker":
        """A Worker over a process that is running and has said hello already (one the pool server
        lent us, see `WorkerProcess.adopt`)."""
        worker = cls("", "", (), None, name)
        worker.process = process
        worker.julia_version = julia_version
        worker.started.set()
        return worker

    def __repr__(self) -> str:
        return f"<Worker {self.name} pid={self.pid} {'alive' if self.alive else 'ended'}>"

    # ---- the process ---------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.alive

    @property
    def ended_by(self) -> str:
        return self.process.ended_by

    def poll(self) -> Optional[int]:
        return self.process.poll()

    def rss_bytes(self) -> int:
        return self.process.rss_bytes()

    def start(self, timeout: float = 120.0) -> None:
        """Spawn Julia and wait for its hello; raise WorkerStartError with Julia's stderr if it fails."""
        self.process.open()
        if self.cancelled:  # cancel() came before the process existed
            self.kill()
        hello = Hello(timeout)
        if not self._serve(hello):
            stderr = hello.stderr.decode(errors="replace")
            reason = "Julia did not start within the start-up timeout" if hello.late else describe_exit(self.poll())
            self.process.close()
            raise WorkerStartError(reason, stderr)
        assert hello.frame is not None
        self.julia_version = hello.frame.text(0)
        log.info("%s: Julia %s ready (pid %s)", self.name, self.julia_version, self.pid)

    def interrupt(self) -> bool:
        """Send SIGINT if an execution is running (thread-safe). Returns whether one was sent."""
        with self._state_lock:
            run = self._running
            if run is None or not self.alive:
                return False
            if run.interrupted_at is None:
                run.interrupted_at = time.monotonic()
            self.process.send_signal(signal.SIGINT)
        self.process.wake()
        return True

    def cancel(self) -> None:
        """Stop a start in progress (thread-safe): the process is killed, `start` raises."""
        self.cancelled = True
        self.kill()

    def kill(self, cause: str = "") -> None:
        """SIGKILL the worker's process group (thread-safe). `cause` (juliapool.result) is what the
        running call's result reports."""
        self.kill_cause = self.kill_cause or cause
        self.process.kill()

    def stop(self, timeout: float = 2.0, cause: str = "") -> str:
        """End the process (ask, SIGTERM, SIGKILL; idempotent) and return the step that did.
        If a caller is mid-request, the process is killed at once and that caller, which owns the
        pipes, gets a result that gives `cause`; the pipes are closed when it lets go."""
        if not self._busy.acquire(blocking=False):
            self.kill(cause)
            return "kill"
        try:
            return self.process.stop(timeout)
        finally:
            self._busy.release()

    # ---- the one loop ----------------------------------------------------------------------------

    def _serve(self, job) -> bool:
        """Feed `job` until it is complete (True) or the worker has ended (False). The job's clock
        may ask for an interrupt or a kill."""
        while not job.complete:
            due = job.deadline()
            events = self.process.read_events(None if due is None else due - time.monotonic())
            ended = self._feed(job, events)
            if ended is not None:
                self._collect_after_death(job, killed=ended)
                return False
        return True

    def _feed(self, job, events: List[Event]) -> Optional[bool]:
        """Pass `events` to `job`, then follow its clock. None while the worker lives; else whether
        we killed it (True) or it ended by itself (False)."""
        ended = False
        for what, data in events:
            if what in STREAMS:
                job.on_stream(what, data)
            elif what == REPLY:
                ended = ended or not data
                for frame in self._frames.feed(data):
                    answer = job.on_frame(frame)
                    if answer is not None:
                        self._send(Request.INPUT, frame.id, [answer])
            elif what == EXIT:
                ended = True
        if ended:
            return False
        due = job.deadline()
        if due is not None and time.monotonic() >= due and self._act(job.action(time.monotonic())):
            return True
        return None

    def _act(self, action: str) -> bool:
        """Carry out a job's wish; True when the worker is being killed."""
        if action == INTERRUPT:
            self.interrupt()
        elif action == KILL:
            self.process.kill()
            return True
        return False

    def _collect_after_death(self, job, killed: bool) -> None:
        """The worker ended (or is being killed): reap it and give `job` every byte it wrote."""
        if not killed:
            # It is ending by itself (exit(n) runs atexit hooks after closing our pipe): let it
            # finish, so that its own exit status is what we report.
            self.process.wait(EXIT_WAIT)
        self.process.reap()  # also ends children that hold our pipes open
        for what, data in self.process.drain_streams(DRAIN_AFTER_DEATH):
            job.on_stream(what, data)
        job.on_death()

    def _send(self, kind: Request, request_id: int, fields: Sequence[str] = ()) -> None:
        self.process.write(encode_frame(kind, request_id, fields))

    def _new_id(self) -> int:
        self._next_id = (self._next_id % 0xFFFFFFFE) + 1
        return self._next_id

    def _drain_stale_output(self) -> None:
        """Drop output that arrived between requests (a background task): it belongs to nobody."""
        for what, data in self.process.read_events(0):
            if what in STREAMS and data:
                log.debug("%s: dropped %d bytes of %s printed between requests", self.name, len(data), what)
                self.dirty, self.dirty_reason = True, self.dirty_reason or "task"

    # ---- executing code --------------------------------------------------------------------------

    def execute(self, code: str, *, module: str = FRESH_MODULE, filename: str = "none", options: ExecOptions = PLAIN,
                limits: Limits = NO_LIMITS, history: str = "", on_output: Optional[OutputCallback] = None,
                on_display: Optional[DisplayCallback] = None, on_input: Optional[InputCallback] = None) -> ExecReply:
        """Run `code` (an EXEC request) and return when it is done, dead or timed out. `history` (a
        notebook cell's number, PROTOCOL.md) makes the worker keep `ans`, `In` and `Out`."""
        with self._busy:
            run = self._begin(code, module, filename, options, limits, on_output, on_display, on_input, history)
            try:
                self._serve(run)
            except BaseException:  # e.g. KeyboardInterrupt: the code still runs, so end it
                run.killed = True
                self.process.kill()
                self._collect_after_death(run, killed=True)
                raise
            finally:
                self._running = None
            if run.interrupted_at is not None and not run.saw_interrupt() and self.alive:
                self._settle_late_interrupt()
            return self._end(run)

    async def execute_async(self, code: str, *, module: str = FRESH_MODULE, filename: str = "none",
                            options: ExecOptions = PLAIN, limits: Limits = NO_LIMITS,
                            on_output: Optional[OutputCallback] = None) -> ExecReply:
        """`execute` for asyncio: the event loop watches the worker's descriptors (one epoll fd), so
        waiting for the reply takes no thread. Rare slow paths (a death, a late interrupt) run in
        the loop's default executor."""
        loop = asyncio.get_running_loop()
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"{self.name} is in use by another caller")
        try:
            run = self._begin(code, module, filename, options, limits, on_output, None, None)
            try:
                killed = await self._serve_async(loop, run)
            finally:
                self._running = None
            if killed is not None:
                await loop.run_in_executor(None, self._collect_after_death, run, killed)
            elif run.interrupted_at is not None and not run.saw_interrupt() and self.alive:
                await loop.run_in_executor(None, self._settle_late_interrupt)
            return self._end(run)
        finally:
            self._busy.release()

    async def _serve_async(self, loop: asyncio.AbstractEventLoop, run: Execution) -> Optional[bool]:
        """Feed `run` from the event loop until it is complete (None) or the worker ended (then
        whether we killed it). The call's clock runs on the loop's timers."""
        done: asyncio.Future = loop.create_future()
        timer: List[Optional[asyncio.TimerHandle]] = [None]

        def step() -> None:
            if done.done():
                return
            ended = self._feed(run, self.process.read_events(0))
            if ended is not None or run.complete:
                done.set_result(ended)
                return
            if timer[0] is not None:
                timer[0].cancel()
            due = run.deadline()
            timer[0] = None if due is None else loop.call_later(max(0.0, due - time.monotonic()), step)

        fd = self.process.event_fd()
        loop.add_reader(fd, step)
        try:
            step()
            return await done
        except asyncio.CancelledError:  # the caller gave up: the code still runs, so end it
            run.killed = True
            self.process.kill()
            raise
        finally:
            loop.remove_reader(fd)
            if timer[0] is not None:
                timer[0].cancel()

    def _begin(self, code: str, module: str, filename: str, options: ExecOptions, limits: Limits,
               on_output: Optional[OutputCallback], on_display: Optional[DisplayCallback],
               on_input: Optional[InputCallback], history: str = "") -> Execution:
        """Send the EXEC request; the caller then serves the returned Execution."""
        self._drain_stale_output()
        run = Execution(self._new_id(), new_nonce(), on_output, on_display, on_input,
                        print_errors=options.print_errors, timeout=limits.timeout, grace=limits.grace,
                        output_limit=limits.output_bytes, memory_limit=limits.memory_bytes,
                        memory_probe=self.process.rss_bytes)
        try:
            self._send(Request.EXEC, run.id, [module, code, run.nonce, filename, options.flags()] + ([history] if history else []))
        except OSError as e:  # it died before it could read the code: nothing ran
            raise WorkerDiedError(describe_exit(self.process.reap())) from e
        with self._state_lock:
            self._running = run
        return run

    def _end(self, run: Execution) -> ExecReply:
        self.calls += 1
        reply = run.reply(self.poll(), self.kill_cause)
        if reply.retire_reason:
            self.dirty, self.dirty_reason = True, self.dirty_reason or reply.retire_reason
        if run.callback_error is not None:
            raise run.callback_error
        return reply

    def _settle_late_interrupt(self) -> None:
        # The code finished just as our SIGINT was sent: let the signal land in the idle loop
        # (where the worker ignores it) before anyone else's code runs here.
        time.sleep(0.05)
        try:
            self.ping(timeout=5.0)
        except WorkerDiedError:
            pass

    # ---- short requests --------------------------------------------------------------------------

    def request(self, kind: Request, fields: Sequence[str] = (), timeout: float = REQUEST_TIMEOUT) -> Frame:
        """A short request that answers with one RESULT frame. Raises WorkerDiedError if the worker
        is gone or does not answer within `timeout` (it is killed then)."""
        with self._busy:
            if not self.alive:
                raise WorkerDiedError(describe_exit(self.poll()))
            self._drain_stale_output()
            job = Answer(self._new_id(), timeout)
            try:
                self._send(kind, job.id, fields)
            except OSError as e:
                raise WorkerDiedError(describe_exit(self.process.reap())) from e
            if not self._serve(job):
                if job.late:
                    self.kill_cause = self.kill_cause or NO_ANSWER
                    raise WorkerDiedError(f"the Julia worker did not answer a {kind.name} request within "
                                          f"{timeout}s; it was killed")
                raise WorkerDiedError(describe_exit(self.poll()))
            assert job.frame is not None
            self._log_request_stderr()
            return job.frame

    def _log_request_stderr(self) -> None:
        """The worker reports its own errors in a short request on stderr, written before its empty
        answer (PROTOCOL.md): log what is there now, so it is not taken for a stray task's output."""
        for what, data in self.process.read_events(0):
            if what == STDERR and data:
                log.warning("%s: %s", self.name, data.decode("utf-8", errors="replace").rstrip())

    def complete(self, module: str, code: str, cursor: int) -> Tuple[List[str], int, int]:
        """REPL completions at byte offset `cursor`: (matches, start, stop) in bytes."""
        frame = self.request(Request.COMPLETE, [module, code, str(cursor)])
        return frame.texts(2), int(frame.text(0)), int(frame.text(1))

    def inspect(self, module: str, code: str, cursor: int, detail: int = 0) -> Dict[str, str]:
        """Documentation of the name at byte offset `cursor` as a MIME bundle ({} if none)."""
        frame = self.request(Request.INSPECT, [module, code, str(cursor), str(detail)])
        return bundle_from_fields(frame.fields[1:]) if frame.text(0) == "1" else {}

    def is_complete(self, code: str) -> Tuple[str, str]:
        """("complete" | "incomplete" | "invalid", indent)."""
        frame = self.request(Request.IS_COMPLETE, [code])
        return frame.text(0), frame.text(1)

    def drop(self, module: str) -> None:
        """Forget a session module."""
        self.request(Request.DROP, [module])

    def collect(self) -> int:
        """Collect garbage, outside any call (PROTOCOL.md, `G`); the bytes still live."""
        return int(self.request(Request.COLLECT, []).text(0) or 0)

    def ping(self, timeout: float = REQUEST_TIMEOUT) -> None:
        self.request(Request.PING, [], timeout=timeout)
