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

    def to_result(self) -> CodeExecResult:
        return CodeExecResult(self.stdout, self.stderr, self.exit_code, self.timed_out, self.worker_restarted)
