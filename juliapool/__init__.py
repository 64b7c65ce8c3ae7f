"""juliapool: run Julia code fast from Python and Jupyter on warm, persistent Julia workers."""

import logging
from importlib import metadata as _metadata

from .client import PoolClient, connect
from .errors import (JuliaNotFoundError, JuliaPoolError, PoolBrokenError, PoolBusyError, PoolShutDownError,
                     ServerGoneError, ServerUnavailableError, WorkerDiedError, WorkerStartError)
from .executor import JuliaExecutor
from .pool import JuliaProcessPool
from .result import CodeExecResult, DisplayEvent, ExecReply
from .session import Session

try:
    __version__ = _metadata.version("juliapool")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = [
    "CodeExecResult", "DisplayEvent", "ExecReply", "JuliaExecutor", "JuliaProcessPool", "Session",
    "JuliaPoolError", "JuliaNotFoundError", "WorkerStartError", "WorkerDiedError", "PoolShutDownError",
    "PoolBusyError", "PoolBrokenError", "connect", "PoolClient", "ServerUnavailableError", "ServerGoneError",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
