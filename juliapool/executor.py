"""JuliaExecutor: run a snippet by spawning `julia`, or through one shared JuliaProcessPool."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
from typing import ClassVar, Dict, List, Optional

from .discovery import find_julia
from .errors import JuliaNotFoundError, JuliaPoolError
from .pool import BASE_FLAGS, JuliaProcessPool
from .result import TIMEOUT_EXIT_CODE, CodeExecResult

log = logging.getLogger(__name__)

# Julia's default optimisation, as the pool's workers use it (pool.WORKER_OPT_FLAGS): other levels
# change results (-O0 sums an array in another order: corpus program 0215 prints another last digit)
# and -O0 runs the heaviest programs 1.4x to 5x slower (benchmarks/bench_programs.py, README "Spawn mode flags").
# -O0 was chosen before on a `println` micro-benchmark (benchmarks/bench_flags.py), where it saves ~10%.
SPAWN_OPT_FLAGS: List[str] = []
MAX_ARG_BYTES = 100_000  # longer code goes through a temporary file (Linux caps one argument at 128 KiB)
# Runs a file's code as `-e` would: in Main, file name "none", errors printed the way -e prints them.
FILE_DRIVER = """try
    include_string(Main, read(popfirst!(ARGS), String), "none")
catch err
    bt = catch_backtrace()
    cut = findfirst(ip -> any(f -> f.func === :include_string, StackTraces.lookup(ip)), bt)
    print(stderr, "ERROR: ")
    showerror(stderr, err isa LoadError ? err.error : err, cut === nothing ? bt : bt[1:cut-1]; backtrace = true)
    println(stderr)
    exit(1)
end"""


class JuliaExecutor:
    """Runs Julia code and returns `CodeExecResult(stdout, stderr, exit_code)`.

    Spawn mode (the default) starts `julia` for every call. With `use_process_pool=True` the call
    goes to a pool shared by all executors (created on first use with `pool_size` workers, or by
    `enable_process_pool`); if the pool cannot serve, the executor falls back to spawning.
    Both modes give the same stdout bytes and exit code for the same code.
    """

    _pool: ClassVar[Optional[JuliaProcessPool]] = None
    _pool_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, timeout: float = 60, max_retries: int = 3, use_optimization_flags: bool = True,
                 use_process_pool: bool = False, pool_size: int = 4, julia_path: Optional[str] = None) -> None:
        self.timeout = timeout
        self.max_retries = max_retries
        self.use_optimization_flags = use_optimization_flags
        self.use_process_pool = use_process_pool
        self.pool_size = pool_size
        self.julia_path = julia_path

    def run(self, code: str, timeout: Optional[float] = None) -> CodeExecResult:
        """Execute Julia code; never raises for the code's own failures (see `exit_code`).
        `timeout` (seconds) is for this call; None uses the executor's own `timeout`."""
        timeout = self.timeout if timeout is None else timeout
        if self.use_process_pool:
            pool = self._get_pool()
            if pool is not None:
                try:
                    return pool.execute(code, timeout=timeout)
                except JuliaPoolError as e:
                    log.warning("process pool failed (%s); falling back to spawning julia", e)
        return self._spawn_with_retries(code, timeout)

    # ---- spawn mode --------------------------------------------------------------------------

    def _spawn_with_retries(self, code: str, timeout: Optional[float]) -> CodeExecResult:
        last: Optional[OSError] = None
        for attempt in range(self.max_retries + 1):
            try:
                return self._spawn(code, timeout)
            except JuliaNotFoundError:
                raise
            except OSError as e:  # julia could not be started at all: worth another try
                last = e
                log.warning("spawning julia failed (attempt %d): %s", attempt + 1, e)
        return CodeExecResult("", f"Failed to start julia: {last}", 1)

    def spawn_command(self, code_arg: List[str]) -> List[str]:
        flags = BASE_FLAGS + (SPAWN_OPT_FLAGS if self.use_optimization_flags else [])
        return [find_julia(self.julia_path), *flags, *code_arg]

    def _spawn(self, code: str, timeout: Optional[float]) -> CodeExecResult:
        with tempfile.TemporaryDirectory(prefix="juliapool-") as tmp:
            if len(code.encode()) <= MAX_ARG_BYTES:
                code_arg = ["-e", code]
            else:
                path = os.path.join(tmp, "code.jl")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(code)
                code_arg = ["-e", FILE_DRIVER, path]
            proc = subprocess.Popen(self.spawn_command(code_arg), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            try:
                out, err = proc.communicate(timeout=timeout if timeout and timeout > 0 else None)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                out, err = proc.communicate()
                note = f"Execution timed out after {timeout:g} seconds\n"
                return CodeExecResult(_text(out), _text(err) + note, TIMEOUT_EXIT_CODE, timed_out=True)
            finally:
                _kill_group(proc.pid)  # whatever the snippet left running in the background
        return CodeExecResult(_text(out), _text(err), proc.returncode)

    # ---- the shared pool ---------------------------------------------------------------------

    def _get_pool(self) -> Optional[JuliaProcessPool]:
        if not JuliaExecutor.is_pool_enabled() and not JuliaExecutor.enable_process_pool(
                self.pool_size, self.timeout, julia_path=self.julia_path):
            return None
        return JuliaExecutor._pool

    @classmethod
    def enable_process_pool(cls, size: int = 4, timeout: float = 60, *, julia_path: Optional[str] = None) -> bool:
        """Start the pool shared by all executors. Returns True if it is running."""
        with cls._pool_lock:
            if cls._pool is not None and not cls._pool.closed:
                return True
            try:
                cls._pool = JuliaProcessPool(size=size, timeout=timeout, julia_path=julia_path)
            except (JuliaPoolError, OSError) as e:
                log.warning("could not start the Julia process pool: %s", e)
                cls._pool = None
                return False
            return True

    @classmethod
    def shutdown_pool(cls) -> None:
        """Stop the shared pool (idempotent)."""
        with cls._pool_lock:
            pool, cls._pool = cls._pool, None
        if pool is not None:
            pool.shutdown()

    @classmethod
    def is_pool_enabled(cls) -> bool:
        return cls._pool is not None and not cls._pool.closed

    @classmethod
    def get_pool_metrics(cls) -> Dict[str, object]:
        """The shared pool's `get_stats()` plus the keys OpenEnv's server reports (`enabled`,
        `pool_size`, `timeout`, `available_workers`); `{"enabled": False, ...}` without a pool."""
        pool = cls._pool
        if pool is None or pool.closed:
            return {"enabled": False, "pool_size": 0, "available_workers": 0}
        stats = pool.get_stats()
        return {**stats, "enabled": True, "pool_size": pool.size, "timeout": pool.timeout,
                "available_workers": stats["idle"]}


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
