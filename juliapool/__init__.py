"""juliapool: run Julia code fast from Python and Jupyter on warm, persistent Julia workers."""

import logging

from .errors import (JuliaNotFoundError, JuliaPoolError, PoolBusyError, PoolShutDownError, WorkerDiedError,
                     WorkerStartError)
from .executor import JuliaExecutor
from .pool import JuliaProcessPool
from .result import CodeExecResult, DisplayEvent, ExecReply
from .session import Session

__version__ = "0.1.0"
__all__ = [
    "CodeExecResult", "DisplayEvent", "ExecReply", "JuliaExecutor", "JuliaProcessPool", "Session",
    "JuliaPoolError", "JuliaNotFoundError", "WorkerStartError", "WorkerDiedError", "PoolShutDownError",
    "PoolBusyError",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
