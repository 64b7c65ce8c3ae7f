"""The exceptions juliapool raises. Each subclasses a builtin, so callers can catch generically."""

from __future__ import annotations


class JuliaPoolError(Exception):
    """Base class of every juliapool error."""


class JuliaNotFoundError(JuliaPoolError, FileNotFoundError):
    """No Julia executable: neither `julia_path`, $JULIAPOOL_JULIA, `julia` on PATH nor the runtime
    installed by `juliapool-install-julia`."""


class WorkerStartError(JuliaPoolError, RuntimeError):
    """A Julia worker failed to start; the message carries Julia's own stderr."""

    def __init__(self, reason: str, stderr: str = "") -> None:
        text = f"Failed to create worker: {reason}"
        if stderr.strip():
            text += "\n--- julia stderr ---\n" + stderr.strip()
        super().__init__(text)
        self.reason = reason
        self.stderr = stderr


class PoolBrokenError(JuliaPoolError, RuntimeError):
    """The pool can no longer serve: no worker is left and none can be started (the last start
    failure is chained as the cause, with Julia's stderr), or auto_recover is off. Create a new pool
    once the cause is fixed."""


class PoolShutDownError(JuliaPoolError, RuntimeError):
    """The pool was shut down: it takes no more work. Create a new pool."""


class PoolBusyError(JuliaPoolError, TimeoutError):
    """No worker became free within `checkout_timeout` seconds."""


class WorkerDiedError(JuliaPoolError, RuntimeError):
    """A worker process ended while it was serving a request that cannot be answered from output
    alone (completion, inspection)."""


class InstallError(JuliaPoolError, RuntimeError):
    """`juliapool-install-julia` could not install the runtime; the message says what to do about it."""


class SysimageError(JuliaPoolError, RuntimeError):
    """A system image could not be built; the message says which step failed and why."""


class ActorsLostError(JuliaPoolError, RuntimeError):
    """Every Ray actor of a RayJuliaPool is dead for good (its `max_restarts` used up, or its node
    gone): create a new RayJuliaPool."""
class ServerUnavailableError(JuliaPoolError, ConnectionError):
    """No pool server could be reached (`juliapool.connect()`): none runs at the socket, it belongs to
    another user, or it could not be started. Start one with `juliapool serve`, or use a
    JuliaProcessPool of your own."""


class ServerGoneError(ServerUnavailableError):
    """The pool server this client was connected to went away (it was stopped or killed). A call
    already running on a lent worker finishes; later calls raise this. Connect again once a server
    runs (`juliapool serve`)."""
