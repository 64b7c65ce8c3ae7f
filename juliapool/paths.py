"""Where juliapool's files are: its home folder, the worker's Julia sources, the installed runtime
and the worker's system images.

Only names and cheap file checks live here (the pool calls them at every start); building things
is the job of `juliapool.runtime`, which the library core never imports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import List, Optional

log = logging.getLogger(__name__)

HOME_ENV = "JULIAPOOL_HOME"

# The runtime `juliapool-install-julia` unpacks (juliapool.runtime.install).
JULIA_VERSION = "1.5.3"
RUNTIME_DIRNAME = f"julia-{JULIA_VERSION}"
MARKER = ".juliapool-install.json"  # written last by the installer: its presence means "complete"
LIB_DIR = "usr/lib/x86_64-linux-gnu"
# Links the installer makes to system libraries; a library removed later leaves the runtime unusable.
SYSTEM_LIB_NAMES = ("libcurl-gnutls.so.4", "libgmp.so.10", "libmpfr.so.6", "libpcre2-8.so.0", "libssh2.so.1")

# System images (juliapool.runtime.sysimage builds them).
SYSIMAGE_ENV = "JULIAPOOL_SYSIMAGE"  # "off" (or 0/no/false): never; a path: that image
IMAGE_NAME = "juliapool.so"
META_NAME = "image.json"


def juliapool_home() -> Path:
    """$JULIAPOOL_HOME, else $XDG_DATA_HOME/juliapool, else ~/.local/share/juliapool."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().absolute()
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec says to ignore relative values
        return Path(xdg) / "juliapool"
    return Path.home() / ".local" / "share" / "juliapool"


# ---- the worker's Julia sources ------------------------------------------------------------------

def julia_source_dir() -> Path:
    """julia/ of a source checkout, or its copy juliapool/_julia in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_julia", here.parent / "julia"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"juliapool is incomplete: neither {here / '_julia'} nor {here.parent / 'julia'} exists")


def worker_script() -> Path:
    return julia_source_dir() / "worker.jl"


# ---- the installed runtime -----------------------------------------------------------------------

def installed_julia(home: Optional[Path] = None) -> Optional[Path]:
    """The wrapper ``<home>/julia-1.5.3/bin/julia`` if the runtime there is complete, else None.

    Only checks files (cheap enough to call before every pool start); it does not run Julia.
    """
    root = Path(home or juliapool_home()).expanduser() / RUNTIME_DIRNAME
    wrapper = root / "bin" / "julia"
    complete = (
        (root / MARKER).is_file()
        and os.access(wrapper, os.X_OK)
        and (root / "usr" / "bin" / "julia").is_file()
        and all((root / LIB_DIR / name).exists() for name in SYSTEM_LIB_NAMES)
    )
    return wrapper.absolute() if complete else None


# ---- system images -------------------------------------------------------------------------------

def images_home(home: Optional[Path] = None) -> Path:
    return Path(home or juliapool_home()) / "sysimages"


def sources_digest() -> str:
    """Changes whenever a worker source file does, or the build's recipe (its workload decides what
    the image holds compiled)."""
    h = hashlib.sha256()
    recipe = Path(__file__).with_name("runtime") / "sysimage.py"
    for path in sorted(julia_source_dir().glob("*.jl")) + [recipe]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def image_dir(julia: str, home: Optional[Path] = None) -> Path:
    """Where the image for `julia` and the current worker sources is, under juliapool's home."""
    key = hashlib.sha256(f"{os.path.realpath(julia)}\0{sources_digest()}".encode()).hexdigest()[:16]
    return images_home(home) / key


def file_stamp(path: str) -> List[float]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime]


def find_sysimage(julia: str) -> Optional[str]:
    """The image to start `julia` workers with: $JULIAPOOL_SYSIMAGE, else a valid built one, else None."""
    chosen = os.environ.get(SYSIMAGE_ENV, "").strip()
    if chosen.lower() in ("off", "0", "no", "false"):
        return None
    if chosen:
        return chosen
    return built_image(image_dir(julia))


def built_image(folder: Path) -> Optional[str]:
    """The image in `folder` if it was built against Julia's current own image, else None."""
    try:
        meta = json.loads((folder / META_NAME).read_text())
        if file_stamp(meta["base_image"]) == meta["base_stamp"] and (folder / IMAGE_NAME).is_file():
            return str(folder / IMAGE_NAME)
        log.info("ignoring the system image in %s: Julia's own image changed since it was built", folder)
    except (OSError, ValueError, KeyError):
        pass
    return None
