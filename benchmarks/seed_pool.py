"""The seed's pool, for comparison: OpenEnv's julia_env `JuliaProcessPool`, read from a checkout.

    OPENENV_REPO=/path/to/OpenEnv python benchmarks/bench_programs.py --modes seed,pool

juliapool grew out of OpenEnv's julia_env (envs/julia_env/server: `julia_process_pool.py`, its
worker `julia_repl_worker.jl`). Neither ships on PyPI and juliapool does not copy them: this module
loads them from $OPENENV_REPO at run time, as tests/test_openenv.py does.

The worker is run as the seed wrote it but for one change, made on a copy in a temporary folder:
it passes a `Pipe` to `redirect_stdout`, which Julia 1.5 does not accept (1.6 added that method),
so the copy links each pipe and passes its write end. Everything else is the seed's own: workers
started with `--compile=min`, each program `include_string`ed into the worker's `Main` (so one
program's names are there for the next), output read after the program ends.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

SERVER = Path("envs/julia_env/server")
HOW = "clone meta-pytorch/OpenEnv from GitHub and set OPENENV_REPO to the checkout"

# (seed's text, what the copy has instead)
PATCHES = [
    ("out_pipe = Pipe()", "out_pipe = Pipe(); Base.link_pipe!(out_pipe)"),
    ("err_pipe = Pipe()", "err_pipe = Pipe(); Base.link_pipe!(err_pipe)"),
    ("redirect_stdout(out_pipe) do", "redirect_stdout(out_pipe.in) do"),
    ("redirect_stderr(err_pipe) do", "redirect_stderr(err_pipe.in) do"),
]


def server_dir() -> Path:
    repo = os.environ.get("OPENENV_REPO")
    if not repo:
        raise SystemExit(f"mode 'seed' needs OpenEnv's julia_env: {HOW}")
    path = Path(repo) / SERVER
    if not (path / "julia_process_pool.py").is_file():
        raise SystemExit(f"{path} has no julia_process_pool.py: {HOW}")
    return path


def _load(package: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"{package}.{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def patched_worker(source: Path, folder: Path) -> Path:
    text = source.read_text()
    for old, new in PATCHES:
        if old not in text:
            raise SystemExit(f"{source} has changed: no {old!r} in it, so the Julia 1.5 patch does not apply")
        text = text.replace(old, new)
    out = folder / source.name
    out.write_text(text)
    return out


def seed_pool(size: int, julia_path: str, timeout: float) -> Any:
    """A started pool of the seed's class, its worker script the patched copy."""
    where = server_dir()
    package = "seed_julia_env"
    pkg = types.ModuleType(package)
    pkg.__path__ = [str(where)]  # for the pool module's `from .julia_executor import ...`
    sys.modules[package] = pkg
    _load(package, where / "julia_executor.py")
    pool_module = _load(package, where / "julia_process_pool.py")
    folder = Path(tempfile.mkdtemp(prefix="seed-worker-"))
    worker = patched_worker(where / "julia_repl_worker.jl", folder)

    class SeedPool(pool_module.JuliaProcessPool):  # type: ignore[name-defined, misc]
        def _find_worker_script(self) -> str:
            return str(worker)

    return SeedPool(size=size, timeout=int(timeout), julia_path=julia_path)
