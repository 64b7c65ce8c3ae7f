"""Results of running code: the seed's `CodeExecResult`, and the richer `ExecReply` behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict


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


TIMEOUT_EXIT_CODE = -1


@dataclass
class ExecReply:
    """Everything a pooled execution reports (the kernel uses all of it)."""

    status: str = "ok"  # "ok" or "error"
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    result: Dict[str, str] = field(default_factory=dict)  # MIME bundle of the last value
    ename: str = ""
    evalue: str = ""
    traceback: str = ""
    timed_out: bool = False
    worker_died: bool = False  # the worker process ended during this call
    worker_restarted: bool = False  # this call ran on a fresh worker: earlier session state is gone
    # Why the worker cannot serve another caller after this call ("" = clean): "stdio", "package",
    # "piracy", "main", "task", "cwd" (PROTOCOL.md, `O` frame). The pool retires it before anyone else uses it.
    retire_reason: str = ""

    def to_result(self) -> CodeExecResult:
        return CodeExecResult(self.stdout, self.stderr, self.exit_code, self.timed_out, self.worker_restarted)
