"""Results of running code: the seed's `CodeExecResult`, and the richer `ExecReply` behind it.

An `ExecReply` carries facts (how the worker ended, whether a session's state went with it); the
functions at the bottom turn them into words, once, where a result leaves the library
(`to_result`, the CLI). The kernel uses the same facts and says them in a notebook's words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .process import describe_exit

TIMEOUT_EXIT_CODE = -1


@dataclass
class CodeExecResult:
    """What a snippet produced, as the seed API defines it.

    `exit_code` is 0 on success, 1 for an uncaught error, n for `exit(n)`, -N when the process was
    ended by signal N (as `subprocess` reports it), and -1 when the call timed out.
    """

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    worker_restarted: bool = False


# Why a worker ended (WorkerEnd.cause): by itself, or why juliapool ended it.
EXITED = "exited"  # the process ended by itself: exit(n), a crash, a signal from outside
NOT_INTERRUPTIBLE = "not-interruptible"  # the code did not stop within the grace after SIGINT
SHUT_DOWN = "shut-down"  # the pool was shut down during the call
STOPPED = "stopped"  # the worker was stopped during the call (recycled, replaced)
STDIO_CLOSED = "stdio-closed"  # (for `restarted_after`) the session's code closed the worker's stdout or stderr
MEMORY_LIMIT = "memory-limit"  # the worker's memory grew past the call's memory limit
NO_ANSWER = "no-answer"  # a short request got no answer in time
CLIENT_GONE = "client-gone"  # the pool server's client that was running a call went away
SERVER_GONE = "server-gone"  # the pool server went away, and its workers with it
DIED_IDLE = "died-idle"  # (for WorkerEnd in `restarted_after`) the worker died between calls


@dataclass(frozen=True)
class WorkerEnd:
    """How a worker process ended: its exit status and the cause (one of the names above)."""

    returncode: Optional[int]  # the exit code, -N for signal N, None if unknown
    cause: str = EXITED
    limit_mb: Optional[float] = None  # the memory limit, when the cause is MEMORY_LIMIT

    @property
    def by_the_code(self) -> bool:
        """The code's own `exit(n)`: a normal end, as under `julia -e`, not a failure to report."""
        return self.cause == EXITED and self.returncode is not None and self.returncode >= 0


class DisplayEvent(dict):
    """What `on_display` gets for IJulia's display calls (PROTOCOL.md `U` event), instead of a plain
    bundle: `kind` is "clear" (IJulia.clear_output; `wait` says whether to wait for the next output),
    "display" (a display with `display_id`) or "update" (replaces the display `display_id`). The dict
    itself is the MIME bundle (empty for "clear"), so a callback that only knows bundles still works."""

    def __init__(self, kind: str, bundle: Dict[str, str], display_id: str = "", wait: bool = False) -> None:
        super().__init__(bundle)
        self.kind = kind
        self.display_id = display_id
        self.wait = wait


@dataclass
class ExecReply:
    """Everything a pooled execution reports (the kernel uses all of it)."""

    status: str = "ok"  # "ok" or "error"
    stdout: str = ""  # what the code printed (nothing added by juliapool but a timeout's note)
    stderr: str = ""
    exit_code: int = 0
    result: Dict[str, str] = field(default_factory=dict)  # MIME bundle of the last value
    ename: str = ""
    evalue: str = ""
    traceback: str = ""
    timed_out: bool = False
    worker_end: Optional[WorkerEnd] = None  # the worker process ended during this call
    state_lost: bool = False  # a session's state (its module) ended with that worker
    worker_restarted: bool = False  # this call ran on a fresh worker: earlier session state is gone
    restarted_after: Optional[WorkerEnd] = None  # how the session's previous worker ended
    output_truncated: bool = False  # the output passed the call's output limit; the rest was dropped

    # The bytes the code wrote, unharmed: `stdout`/`stderr` replace what is not UTF-8 with U+FFFD.
    # (The timeout note is in both; notes about a dead worker or a lost session only in the strings.)
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    # Why the worker cannot serve another caller after this call ("" = clean): "stdio", "package",
    # "piracy", "invalidated", "main", "task", "cwd" (PROTOCOL.md, `O` frame). The pool retires it before anyone else uses it.
    retire_reason: str = ""

    @property
    def worker_died(self) -> bool:
        return self.worker_end is not None

    def to_result(self) -> CodeExecResult:
        return CodeExecResult(self.stdout, stderr_with_notes(self), self.exit_code, self.timed_out,
                              self.worker_restarted)


# ---- the words, said once ------------------------------------------------------------------------

PREFIX = "juliapool: "

_CAUSES = {
    NOT_INTERRUPTIBLE: "the code did not stop after an interrupt, so its worker was killed",
    SHUT_DOWN: "the pool was shut down during this call",
    STOPPED: "the worker was stopped during this call",
    NO_ANSWER: "the Julia worker did not answer, so it was killed",
    STDIO_CLOSED: "the session's code closed the worker's stdout or stderr",
    CLIENT_GONE: "the client that was running a call on the worker went away, so the server killed it",
    SERVER_GONE: "the pool server went away, and its workers with it",
    MEMORY_LIMIT: "the call used more memory than its memory limit, so its worker was killed",
}


def truncation_note(limit: int) -> str:
    """The note that replaces output past a call's output limit (it goes into the stream itself)."""
    return (f"\n[juliapool: output truncated: this call printed more than {limit} bytes; the rest was "
            "dropped. The limit is output_limit_bytes; in a notebook $JULIAPOOL_MAX_CELL_OUTPUT, 0 for none]\n")


def describe_end(end: WorkerEnd) -> str:
    """How a worker ended, in one clause ("the Julia worker was killed by signal 11 (SIGSEGV)")."""
    if end.cause == MEMORY_LIMIT and end.limit_mb:
        return f"the call used more memory than its memory limit of {end.limit_mb:g} MB, so its worker was killed"
    if end.cause == DIED_IDLE:
        return f"the session's worker died while idle ({describe_exit(end.returncode)})"
    return _CAUSES.get(end.cause) or describe_exit(end.returncode)


def leading_notes(reply: ExecReply) -> List[str]:
    """Lines that go before the call's own stderr: the call ran on a fresh worker."""
    if not reply.worker_restarted:
        return []
    why = describe_end(reply.restarted_after) if reply.restarted_after else "the session's worker had ended"
    return [f"{PREFIX}{why}; this call ran on a new worker, earlier state is gone"]


def trailing_notes(reply: ExecReply) -> List[str]:
    """Lines that go after the call's own stderr: its worker ended, and what that cost."""
    end = reply.worker_end
    if end is None:
        return []
    if reply.state_lost:
        return [f"{PREFIX}{describe_end(end)}; the session's state (variables, functions) is lost; "
                "the next call runs on a new worker"]
    return [] if end.by_the_code or end.cause == NOT_INTERRUPTIBLE else [PREFIX + describe_end(end)]


def stderr_with_notes(reply: ExecReply) -> str:
    lead = "".join(line + "\n" for line in leading_notes(reply))
    tail = "".join(line + "\n" for line in trailing_notes(reply))
    sep = "" if not tail or not reply.stderr or reply.stderr.endswith("\n") else "\n"
    return lead + reply.stderr + sep + tail
