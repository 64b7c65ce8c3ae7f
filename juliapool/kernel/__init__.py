"""The juliapool Jupyter kernel: Julia notebooks on warm, persistent Julia workers.

    python -m juliapool.kernel -f CONNECTION_FILE [--julia=PATH] [--julia-arg=ARG ...] [--pool-size=N] [--server]

`launch()` starts the Julia workers *before* it imports ipykernel, so that Julia boots while Python
loads the kernel machinery; the kernel itself (`kernel.JuliaKernel`) then answers `kernel_info` at
once and runs every cell of the notebook on the same worker. `install` writes the kernelspec.
With `--server` the notebook's worker is leased from the user's pool server (started in the
background if none runs); if that fails, the kernel logs why and uses a private pool as before.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from juliapool import JuliaPoolError, JuliaProcessPool

# Two workers: the notebook's own, and a warm spare that takes over at once if the first one dies.
DEFAULT_POOL_SIZE = 2


def _split_argv(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """Our own options, and the rest for ipykernel's application (connection file, log level)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--julia", default=None, help="the Julia executable")
    parser.add_argument("--julia-arg", action="append", default=[], dest="julia_args",
                        help="an extra argument for Julia, such as --threads=4 or --project=DIR")
    parser.add_argument("--pool-size", type=int, default=DEFAULT_POOL_SIZE)
    parser.add_argument("--server", action="store_true", help="lease the worker from the user's pool server")
    return parser.parse_known_args(list(argv))


def start_pool(julia: Optional[str] = None, julia_args: Sequence[str] = (),
               size: int = DEFAULT_POOL_SIZE) -> Tuple[Optional["JuliaProcessPool"], Optional["JuliaPoolError"]]:
    """The notebook's pool, started without waiting (the kernel answers while Julia boots), or the
    error that says why there is none: the kernel still starts then, and every cell says why."""
    from juliapool import JuliaPoolError, JuliaProcessPool  # light: no Jupyter imports

    try:
        return JuliaProcessPool(size=max(1, size), timeout=None, julia_path=julia, julia_args=julia_args,
                                wait=False, warm_kernel=True, fast_start=True), None
    except JuliaPoolError as e:
        return None, e


def connect_pool(julia: Optional[str] = None, julia_args: Sequence[str] = ()) -> Tuple[Optional[object], str]:
    """A client of the user's pool server for this notebook (one is started if none runs), or None
    and why not. A server whose workers run another Julia or other Julia options would not give
    the notebook what its kernelspec asks for: the kernel then uses a private pool."""
    from juliapool import JuliaPoolError
    from juliapool.client import connect

    serve_args = [f"--julia-arg={arg}" for arg in julia_args]
    try:
        client = connect(start=True, julia=julia, serve_args=serve_args, keep_sessions=False, timeout=None)
    except (JuliaPoolError, OSError) as e:
        return None, f"the pool server cannot be used ({e}); this notebook runs on a private pool"
    theirs = client.julia_args[-len(julia_args):] if julia_args else []
    if list(julia_args) != theirs or (julia and os.path.realpath(julia) != os.path.realpath(client.julia_path)):
        client.close()
        return None, (f"the pool server at {client.path} runs {client.julia_path} {client.julia_args}, not what this "
                      "kernelspec asks for; this notebook runs on a private pool")
    return client, f"this notebook leases its Julia worker from the pool server at {client.path}"


def launch(argv: Optional[Sequence[str]] = None) -> None:
    """Start the pool, then the kernel application; returns when the kernel shuts down."""
    opts, rest = _split_argv(sys.argv[1:] if argv is None else argv)
    client, note = connect_pool(opts.julia, opts.julia_args) if opts.server else (None, "")
    pool, error = (client, None) if client is not None else start_pool(opts.julia, opts.julia_args, opts.pool_size)
    from ipykernel.kernelapp import IPKernelApp  # the slow import, while Julia boots

    from .kernel import JuliaKernel

    JuliaKernel.preset_pool, JuliaKernel.preset_pool_error = pool, error  # type: ignore[assignment]
    JuliaKernel.preset_pool_note = note
    try:
        IPKernelApp.launch_instance(argv=rest, kernel_class=JuliaKernel)
    finally:
        if pool is not None:
            pool.shutdown()
