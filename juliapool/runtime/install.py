"""Install a Julia runtime for juliapool, as a normal user, without touching apt.

Why this module exists
----------------------
Debian 12 (bookworm) has no Julia package, and the machines juliapool targets often cannot reach
julialang.org. Debian 11 (bullseye) still ships Julia 1.5.3 in Debian's own archive, so we take those
.deb files and unpack them into a private folder::

    <home>/julia-1.5.3/            home: $JULIAPOOL_HOME, $XDG_DATA_HOME/juliapool or ~/.local/share/juliapool
        bin/julia                  the command to run: a sh wrapper (see below)
        usr/bin/julia              the real binary, from the julia package
        usr/lib/x86_64-linux-gnu/  bullseye libraries, plus links to 5 system libraries
        lib/x86_64-linux-gnu/      libpcre.so.3 (libpcre3 installs there, not in usr/lib)
        .juliapool-install.json    written last: its presence means "complete"

The .deb files come either from a folder (``--from-debs DIR``, checked against ``DIR/SHA256SUMS``)
or from ``apt-get download`` run with a private sources list, private index and cache folders, so the
system's apt configuration and package state are never changed and no root is needed.

Traps this layout works around (see DESIGN.md section 5):

* Bookworm's libunwind8 1.6 makes Julia 1.5.3 segfault on every exception that collects a backtrace.
  The bullseye libunwind8 1.3.2 must be the copy that is loaded, so the wrapper puts the prefix's
  library folders FIRST in ``LD_LIBRARY_PATH``. This is also why ``apt-get install julia`` from
  bullseye into the system is wrong: apt would keep the newer libunwind.
* ``usr/lib/x86_64-linux-gnu/julia/*.so`` are relative symlinks (``../libgmp.so.10`` ...) to libraries
  that Debian installs system-wide. We link those five names to the system's copies; without them
  Julia fails at start-up (``Regex`` needs pcre2).
* Debian 12's MPFR 4.2 reads Julia 1.5's "%.Re" format as "no digits", so BigFloat(1.5) prints as
  "2.0". Debian 11's libmpfr6 is therefore downloaded too and, when present, unpacked instead of
  linking the system's copy.

Everything is unpacked into a temporary folder beside the target and renamed into place only after a
smoke test passed, so a half-finished install is never picked up. An flock on ``<home>/.install.lock``
serialises concurrent installers.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Iterable, Iterator

from ..errors import InstallError
from ..paths import JULIA_VERSION, LIB_DIR, MARKER, RUNTIME_DIRNAME, installed_julia
from ..paths import juliapool_home as default_home

from .debs import OPTIONAL_PACKAGES, PINNED_VERSIONS, REQUIRED_PACKAGES, _download_debs, _require_tool, debs_in_dir

log = logging.getLogger("juliapool.install")


# Targets of the relative symlinks in usr/lib/x86_64-linux-gnu/julia/, and the Debian package that
# provides each one system-wide.
SYSTEM_LIBS = {
    "libcurl-gnutls.so.4": "libcurl3-gnutls",
    "libgmp.so.10": "libgmp10",
    "libmpfr.so.6": "libmpfr6",
    "libpcre2-8.so.0": "libpcre2-8-0",
    "libssh2.so.1": "libssh2-1",
}
SYSTEM_LIB_DIRS = (Path("/usr/lib/x86_64-linux-gnu"), Path("/lib/x86_64-linux-gnu"))

# Loads OpenBLAS (needs libgfortran5) and libgit2 (needs libpcre3), and throws (needs the right
# libunwind): the things that break when the runtime is put together wrongly.
SMOKE_TEST = ('using LinearAlgebra; import LibGit2; LibGit2.version(); '
              'try error("x") catch; end; print(VERSION)')

WRAPPER = """\
#!/bin/sh
# Written by juliapool-install-julia: Julia @VERSION@ unpacked from Debian packages.
# The folder's own libraries must come first: the system's newer libunwind makes this
# Julia segfault on every exception that collects a backtrace. (libpcre3, which libgit2
# needs, unpacks into lib/ rather than usr/lib/.)
self=$(readlink -f -- "$0" 2>/dev/null) || self=$0
root=$(dirname -- "$(dirname -- "$self")")
lib="$root/usr/lib/x86_64-linux-gnu"
LD_LIBRARY_PATH="$lib:$lib/julia:$root/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$root/usr/bin/julia" "$@"
"""


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def install(from_debs: Path | None = None, home: Path | None = None,
            mirror: str | None = None, force: bool = False) -> Path:
    """Install Julia 1.5.3 under ``home`` and return the path of its ``bin/julia`` wrapper.

    ``from_debs`` (default ``$JULIAPOOL_JULIA_DEBS``) is a folder of .deb files; without it they are
    downloaded with apt-get from ``mirror`` (default ``$JULIAPOOL_DEBIAN_MIRROR``, else the Debian
    archive in the system's apt sources). Returns at once if already installed, unless ``force``.
    """
    _check_platform()
    home = Path(home or default_home()).expanduser().absolute()
    from_debs = from_debs or _env_path("JULIAPOOL_JULIA_DEBS")
    mirror = mirror or os.environ.get("JULIAPOOL_DEBIAN_MIRROR") or None
    if not force and (found := installed_julia(home)):
        log.info("Julia %s is already installed: %s", JULIA_VERSION, found)
        return found
    home.mkdir(parents=True, exist_ok=True)
    with _install_lock(home):
        # Another installer may have finished while we waited for the lock.
        if not force and (found := installed_julia(home)):
            return found
        _remove_leftovers(home)
        if from_debs is None:
            _find_system_libs(provided=REQUIRED_PACKAGES + OPTIONAL_PACKAGES)  # before a long download
            from_debs = _download_debs(home, mirror)
        debs = debs_in_dir(Path(os.path.abspath(Path(from_debs).expanduser())))
        return _build(home, debs, _find_system_libs(provided=debs))


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def _check_platform() -> None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise InstallError(
            f"juliapool-install-julia only supports Linux x86_64 (this is {sys.platform} "
            f"{platform.machine()}): install Julia yourself (juliaup) and put it on PATH")


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def _find_system_libs(provided: Iterable[str] = ()) -> dict[str, Path]:
    """Locate the system libraries Julia's relative symlinks point at, or say what to apt-get.

    Libraries whose package is among ``provided`` (the .debs we unpack) are not needed.
    """
    provided = set(provided)
    needed = [name for name, package in SYSTEM_LIBS.items() if package not in provided]
    found: dict[str, Path] = {}
    for name in needed:
        for folder in SYSTEM_LIB_DIRS:
            if (folder / name).exists():
                found[name] = folder / name
                break
    missing = [name for name in needed if name not in found]
    if missing:
        packages = " ".join(SYSTEM_LIBS[name] for name in missing)
        raise InstallError(
            f"missing system libraries: {', '.join(missing)}. "
            f"Install them first: sudo apt-get install {packages}")
    return found


# ---------------------------------------------------------------------------------------------
# The .deb files: from a folder, verified
# ---------------------------------------------------------------------------------------------

def _build(home: Path, debs: dict[str, Path], system_libs: dict[str, Path]) -> Path:
    """Unpack, link, wrap and test in a temp folder, then rename it into place."""
    started = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=f".{RUNTIME_DIRNAME}.partial-", dir=home))
    try:
        staging.chmod(0o755)
        _extract(debs.values(), staging)
        _link_system_libs(staging, system_libs)
        wrapper = _write_wrapper(staging)
        version = smoke_test(wrapper)
        _write_marker(staging, debs)
        _swap_into_place(staging, home / RUNTIME_DIRNAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful swap
    found = installed_julia(home)
    if found is None:
        raise InstallError(f"installed into {home / RUNTIME_DIRNAME}, but it looks incomplete")
    log.info("Installed Julia %s in %.1f s: %s", version, time.monotonic() - started, found)
    return found


def _extract(debs: Iterable[Path], dest: Path) -> None:
    dpkg_deb = _require_tool("dpkg-deb", "install Julia yourself (juliaup) and put it on PATH")
    debs = list(debs)
    log.info("Unpacking %d packages into %s", len(debs), dest)
    for deb in debs:
        result = subprocess.run([dpkg_deb, "-x", str(deb), str(dest)], capture_output=True, text=True)
        if result.returncode != 0:
            raise InstallError(f"dpkg-deb -x {deb} failed: {result.stderr.strip()}")


def _link_system_libs(root: Path, system_libs: dict[str, Path]) -> None:
    """Give the relative symlinks in usr/lib/.../julia/ their targets; then check none dangles."""
    lib = root / LIB_DIR
    for name, target in system_libs.items():
        link = lib / name
        if not link.exists():  # a package may one day ship it itself
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    dangling = sorted(str(p.relative_to(root)) for p in (lib / "julia").iterdir()
                      if p.is_symlink() and not p.exists())
    if dangling:
        raise InstallError(f"unresolved library links in the runtime: {', '.join(dangling)}")


def _write_wrapper(root: Path) -> Path:
    wrapper = root / "bin" / "julia"
    wrapper.parent.mkdir()
    wrapper.write_text(WRAPPER.replace("@VERSION@", JULIA_VERSION))
    wrapper.chmod(0o755)
    return wrapper


def smoke_test(julia: Path, timeout: float = 300) -> str:
    """Run ``SMOKE_TEST`` with ``julia``; return its VERSION or raise with Julia's stderr."""
    command = [str(julia), "--startup-file=no", "-e", SMOKE_TEST]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"the Julia smoke test did not finish within {timeout:.0f} s") from exc
    if result.returncode != 0 or result.stdout.strip() != JULIA_VERSION:
        raise InstallError(
            f"the installed Julia failed its smoke test (exit code {result.returncode}, "
            f"output {result.stdout.strip()!r}):\n{result.stderr.strip()}")
    return result.stdout.strip()


def _write_marker(root: Path, debs: dict[str, Path]) -> None:
    info = {"julia_version": JULIA_VERSION, "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "debs": sorted(p.name for p in debs.values())}
    (root / MARKER).write_text(json.dumps(info, indent=2) + "\n")


def _swap_into_place(staging: Path, final: Path) -> None:
    """rename() is atomic; an old runtime (--force) is moved aside first and then deleted."""
    old = None
    if final.exists():
        old = final.with_name(f".{RUNTIME_DIRNAME}.old-{os.getpid()}")
        final.rename(old)
    staging.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _install_lock(home: Path) -> Iterator[None]:
    with open(home / ".install.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("Another juliapool-install-julia is running in %s: waiting for it", home)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_leftovers(home: Path) -> None:
    """Delete folders of installers that were killed (we hold the lock, so none is running)."""
    for pattern in (f".{RUNTIME_DIRNAME}.partial-*", f".{RUNTIME_DIRNAME}.old-*", ".apt-*"):
        for path in home.glob(pattern):
            log.debug("Removing leftover %s", path)
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="juliapool-install-julia",
        description=f"Install Julia {JULIA_VERSION} (from Debian 11 packages) into a private folder "
                    "for juliapool. No root needed; the system's apt configuration is not changed.",
        epilog=f"Packages used: {', '.join(REQUIRED_PACKAGES)}, and {', '.join(OPTIONAL_PACKAGES)} "
               f"if available; pinned versions: {PINNED_VERSIONS}.")
    parser.add_argument("--home", "--prefix", dest="home", type=Path, default=None,
                        help="juliapool home; the runtime goes to HOME/julia-1.5.3 "
                             "(default: $JULIAPOOL_HOME, $XDG_DATA_HOME/juliapool or "
                             "~/.local/share/juliapool)")
    parser.add_argument("--from-debs", type=Path, default=None, metavar="DIR",
                        help="use the .deb files in DIR, checked against DIR/SHA256SUMS if present "
                             "(default: $JULIAPOOL_JULIA_DEBS, else download them with apt-get)")
    parser.add_argument("--mirror", default=None, metavar="URI",
                        help="Debian mirror to download from (default: $JULIAPOOL_DEBIAN_MIRROR, "
                             "else the Debian archive in the system's apt sources)")
    parser.add_argument("--force", action="store_true", help="reinstall even if already installed")
    parser.add_argument("--no-sysimage", action="store_true",
                        help="do not build the system image that makes workers start ready "
                             "(2-4 minutes; `juliapool sysimage` builds it later)")
    parser.add_argument("--print-path", action="store_true",
                        help="print the julia command if installed (exit 1 if not); install nothing")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings, errors and the path")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(format="juliapool-install-julia: %(message)s",
                        level=logging.WARNING if args.quiet else logging.INFO)
    if args.print_path:
        found = installed_julia(args.home)
        if found is None:
            log.error("Julia is not installed in %s: run juliapool-install-julia",
                      Path(args.home or default_home()) / RUNTIME_DIRNAME)
            return 1
        print(found)
        return 0
    try:
        path = install(from_debs=args.from_debs, home=args.home, mirror=args.mirror,
                       force=args.force)
    except InstallError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted; an installed runtime, if any, was left as it was")
        return 130
    if not args.no_sysimage:
        _build_sysimage(path, force=args.force, home=args.home)
    print(path)
    return 0


def _build_sysimage(julia: Path, force: bool, home: Path | None) -> None:
    """The runtime works without the image, only slower to start: a failed build is a warning."""
    from .sysimage import SysimageError, build_sysimage

    for noisy in ("juliapool.pool", "juliapool.worker"):  # the build's own workers starting and stopping
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        build_sysimage(str(julia), say=log.info, force=force, home=home)
    except SysimageError as exc:
        log.warning("%s\nJulia is installed; workers will start without a system image", exc)


if __name__ == "__main__":
    sys.exit(main())
