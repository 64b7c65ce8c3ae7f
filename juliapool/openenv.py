"""juliapool as OpenEnv's julia_env executor (meta-pytorch/OpenEnv, envs/julia_env/server).

OpenEnv's environment imports `JuliaExecutor` from its module `julia_executor`, which imports
`JuliaProcessPool` from `julia_process_pool`. `install()` puts juliapool's modules in their place,
so that `JuliaCodeActEnv` and the server (`app.py`: `/pool_status` reports
`JuliaExecutor.get_pool_metrics()`) run on juliapool without any OpenEnv file edited::

    import juliapool.openenv
    juliapool.openenv.install()          # before julia_env.server is imported
    from julia_env.server.app import app

Both of OpenEnv's import layouts are covered: the in-repo package (`julia_env.server.…`) and the
standalone server (`server.…`, as in its Docker image).
"""

from __future__ import annotations

import sys
from typing import List

from . import executor, pool

PACKAGES = ("julia_env.server", "server")


def install() -> List[str]:
    """Map OpenEnv's two module names onto juliapool's; returns the names mapped. Idempotent.
    Call it before `julia_env.server` is imported (an already imported one keeps its own)."""
    names = []
    for package in PACKAGES:
        for name, module in (("julia_executor", executor), ("julia_process_pool", pool)):
            sys.modules[f"{package}.{name}"] = module
            names.append(f"{package}.{name}")
    return names
