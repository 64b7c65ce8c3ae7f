"""Finding the Julia executable and its version."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Optional

from .errors import JuliaNotFoundError
from .paths import installed_julia

log = logging.getLogger(__name__)

JULIA_ENV = "JULIAPOOL_JULIA"


def find_julia(julia_path: Optional[str] = None) -> str:
    """The Julia executable to run, in this order: `julia_path`, $JULIAPOOL_JULIA, `julia` on PATH,
    juliaup's default folder, the runtime installed by `juliapool-install-julia`."""
    for source, candidate in _candidates(julia_path):
        if candidate is None:
            continue
        resolved = shutil.which(candidate) if os.sep not in candidate else candidate
        if resolved and os.access(resolved, os.X_OK) and not os.path.isdir(resolved):
            log.debug("using Julia %s (from %s)", resolved, source)
            return resolved
        if source in ("julia_path", JULIA_ENV):
            # An explicit choice that does not work is an error, never silently replaced.
            raise JuliaNotFoundError(f"{source}={candidate!r} is not an executable Julia; fix the path or unset it")
    raise JuliaNotFoundError(
        "Julia was not found: pass julia_path=, set $JULIAPOOL_JULIA, put `julia` on PATH "
        "(e.g. install it with juliaup), or run `juliapool-install-julia`"
    )


def _candidates(julia_path: Optional[str]):
    yield "julia_path", julia_path
    yield JULIA_ENV, os.environ.get(JULIA_ENV) or None
    yield "PATH", "julia"
    yield "juliaup", str(Path.home() / ".juliaup" / "bin" / "julia")
    installed = installed_julia()
    yield "juliapool-install-julia", str(installed) if installed else None


@lru_cache(maxsize=None)
def julia_version(julia: str) -> str:
    """`julia --version`, e.g. "1.5.3" (cheap: Julia prints it before loading the runtime)."""
    out = subprocess.run([julia, "--version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    words = out.stdout.split()
    return words[-1] if out.returncode == 0 and words else "unknown"
