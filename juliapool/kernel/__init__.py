"""The juliapool Jupyter kernel: Julia notebooks on warm, persistent Julia workers.

    python -m juliapool.kernel -f CONNECTION_FILE [--julia=PATH] [--julia-arg=ARG ...] [--pool-size=N]

`launch()` starts the Julia workers *before* it imports ipykernel, so that Julia boots while Python
loads the kernel machinery; the kernel itself (`kernel.JuliaKernel`) then answers `kernel_info` at
once and runs every cell of the notebook on the same worker. `install` writes the kernelspec.
"""

from __future__ import annotations

import argparse
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


def launch(argv: Optional[Sequence[str]] = None) -> None:
    """Start the pool, then the kernel application; returns when the kernel shuts down."""
    opts, rest = _split_argv(sys.argv[1:] if argv is None else argv)
    pool, error = start_pool(opts.julia, opts.julia_args, opts.pool_size)
    from ipykernel.kernelapp import IPKernelApp  # the slow import, while Julia boots

    from .kernel import JuliaKernel

    JuliaKernel.preset_pool, JuliaKernel.preset_pool_error = pool, error
    try:
        IPKernelApp.launch_instance(argv=rest, kernel_class=JuliaKernel)
    finally:
        if pool is not None:
            pool.shutdown()
