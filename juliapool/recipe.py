"""How a pool makes a worker: the command that starts Julia, then what the worker runs before it
takes work (preloaded packages, the user's warm-up code, and a warm-up of juliapool's own paths so
that the first real call does not pay for Julia compiling them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

from .errors import WorkerDiedError, WorkerStartError
from .paths import find_sysimage, worker_script
from .protocol import MAIN_MODULE, PLAIN, QUIET, cell_options, session_module
from .execution import Limits
from .worker import Worker

log = logging.getLogger(__name__)

BASE_FLAGS = ["--startup-file=no", "--history-file=no", "--color=no"]
WARM_UP_MODULE = session_module("warm-up")
PLAIN_WARM_UP = ["println(1); println(1.5); print(stderr, 2)", 'error("warm-up")',
                 # the fresh-state checks that follow a call defining methods (~0.3 s to compile)
                 "struct WarmUp; x::Int; end; Base.show(io::IO, w::WarmUp) = print(io, w.x); println(WarmUp(1))"]
CELL_WARM_UP = ['x = 1; for i in 1:2; x += i; end; println(x); display([1, 2]); "x"', 'error("warm-up")']


@dataclass
class StartRecipe:
    julia: str
    julia_args: List[str]
    env: Dict[str, str]
    sysimage: Optional[str] = None  # -J for every worker, dropped by the pool if a worker fails on it
    start_timeout: float = 120.0
    preload: List[str] = field(default_factory=list)  # packages to `using` in Main
    warmup: Optional[str] = None  # the user's code, run once in Main
    notebook: bool = False  # also compile the notebook paths (display, completion, help)

    @property
    def _limits(self) -> Limits:
        return Limits(timeout=self.start_timeout)

    def new_worker(self, name: str) -> Worker:
        args = self.julia_args + (["-J", self.sysimage] if self.sysimage else [])
        return Worker(self.julia, str(worker_script()), args, self.env, name)

    def prepare(self, worker: Worker, warm: bool, first_cell: bool = False) -> None:
        """Preload and run the user's warm-up (errors here are start errors), then, if `warm`,
        compile juliapool's own paths, and with `first_cell` a notebook's simplest cell too."""
        steps = ["using " + ", ".join(self.preload)] if self.preload else []
        steps += [self.warmup] if self.warmup else []
        for code in steps:
            reply = worker.execute(code, module=MAIN_MODULE, options=QUIET, limits=self._limits)
            if reply.status != "ok":
                raise WorkerStartError(f"preloading failed: {reply.evalue}", reply.traceback or reply.stderr)
        try:
            if warm:
                self._warm_up(worker)
            if first_cell:
                self.warm_first_cell(worker)
            if warm or first_cell:  # what compiling left: 15 MB of 120 (PSS of an idle worker, Julia 1.5)
                worker.collect()
        except WorkerDiedError as e:  # in a completion, inspection or collection of the warm-up
            raise WorkerStartError(f"the worker died while warming up: {e}") from e
        worker.calls = 0

    def _warm_up(self, worker: Worker) -> None:
        runs = [(code, "", PLAIN, "") for code in PLAIN_WARM_UP]
        if self.notebook:  # numbered as a kernel numbers cells: keeping `ans`, `In` and `Out` costs ~70 ms once
            runs += [(code, WARM_UP_MODULE, cell_options(), str(n)) for n, code in enumerate(CELL_WARM_UP, 1)]
        for code, module, options, history in runs:
            reply = worker.execute(code, module=module, options=options, limits=self._limits, history=history)
            if reply.worker_died:
                raise WorkerStartError(f"the worker died while warming up: {reply.evalue}", reply.stderr)
        if self.notebook:
            worker.complete(WARM_UP_MODULE, "prin", 4)
            worker.inspect(WARM_UP_MODULE, "println", 3)
            worker.is_complete("for i in 1:2")
            worker.drop(WARM_UP_MODULE)

    def warm_first_cell(self, worker: Worker) -> None:
        """Compile the simplest notebook cell (a kernel's first worker, while the front end connects)."""
        worker.execute("1 + 1", module=WARM_UP_MODULE, options=cell_options(), limits=self._limits, history="1")
        worker.drop(WARM_UP_MODULE)
        worker.calls = 0


def choose_sysimage(julia: str, julia_args: Sequence[str], sysimage: Union[str, bool, None]) -> Optional[str]:
    """The image workers start with: the caller's (a path), none (False, or -J in julia_args), or
    the one `juliapool sysimage` built for this Julia (None/True), if any."""
    if any(a in ("-J", "--sysimage") or a.startswith(("-J", "--sysimage=")) for a in julia_args):
        return None
    if sysimage is None or sysimage is True:
        return find_sysimage(julia)
    return sysimage or None
