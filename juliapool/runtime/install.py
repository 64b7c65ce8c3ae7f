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
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Iterable, Iterator

from ..errors import InstallError
from ..paths import JULIA_VERSION, LIB_DIR, MARKER, RUNTIME_DIRNAME, SYSTEM_LIB_NAMES, installed_julia
from ..paths import juliapool_home as default_home

log = logging.getLogger("juliapool.install")


# From Debian 11. libunwind8 is pinned: bookworm's newer one is what crashes Julia 1.5.3.
BULLSEYE_PACKAGES = (
    "julia", "julia-common", "libjulia1", "libllvm9", "libgit2-1.1", "libmbedcrypto3",
    "libmbedtls12", "libmbedx509-0", "libopenlibm3", "libdsfmt-19937-1", "libutf8proc2",
    "libffi7", "libunwind8",
)
# From Debian 12: not installed on a fresh machine, but needed (libgfortran5 by OpenBLAS).
BOOKWORM_PACKAGES = ("libgfortran5", "libhttp-parser2.9", "libpcre3")
REQUIRED_PACKAGES = BULLSEYE_PACKAGES + BOOKWORM_PACKAGES
# Used when available (always downloaded): Julia 1.5 asks MPFR for "%.Re", which MPFR 4.2 (Debian 12)
# reads as "0 digits", so BigFloat prints as "2.0" for 1.5. Debian 11's MPFR 4.1 prints it right.
OPTIONAL_PACKAGES = ("libmpfr6",)
PINNED_VERSIONS = {"libunwind8": "1.3.2-2", "libmpfr6": "4.1.0-3"}

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

ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")  # has bullseye + bookworm keys
DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                 "oldoldstable", "oldstable", "stable", "testing", "unstable"}

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


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise InstallError(f"{name} not found: {hint}")
    return path


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

def debs_in_dir(folder: Path) -> dict[str, Path]:
    """Map each required package to its .deb in ``folder``, after checking SHA256SUMS if present."""
    if not folder.is_dir():
        raise InstallError(f"--from-debs: {folder} is not a folder of .deb files")
    sums = folder / "SHA256SUMS"
    if sums.is_file():
        verify_sha256sums(sums)
    else:
        log.warning("%s has no SHA256SUMS: using its .deb files unverified", folder)
    by_package: dict[str, list[tuple[str, Path]]] = {}
    for deb in sorted(folder.glob("*.deb")):
        package, version = _deb_fields(deb)
        by_package.setdefault(package, []).append((version, deb))
    chosen = {name: _pick_version(name, by_package.get(name, []), folder)
              for name in REQUIRED_PACKAGES}
    for name in OPTIONAL_PACKAGES:
        if any(version == PINNED_VERSIONS[name] for version, _ in by_package.get(name, [])):
            chosen[name] = _pick_version(name, by_package[name], folder)
        else:
            log.warning("%s has no %s %s (Debian 11): using the system's library instead; with "
                        "MPFR 4.2 Julia 1.5 prints BigFloat numbers with too few digits",
                        folder, name, PINNED_VERSIONS[name])
    return chosen


def verify_sha256sums(sums: Path) -> None:
    """Check every file ``sums`` lists (sha256sum format); every .deb beside it must be listed."""
    listed: set[str] = set()
    for lineno, line in enumerate(sums.read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if not match:
            raise InstallError(f"{sums}:{lineno}: not a sha256sum line: {line!r}")
        expected, name = match.group(1).lower(), match.group(2)
        listed.add(name)
        path = sums.parent / name
        if not path.is_file():
            raise InstallError(f"{sums} lists {name}, which is missing from {sums.parent}")
        actual = _sha256(path)
        if actual != expected:
            raise InstallError(
                f"checksum mismatch for {path}: expected {expected}, got {actual}. "
                "The file is corrupt or was replaced: fetch it again (or remove the folder and "
                "run without --from-debs to download).")
    unlisted = sorted(p.name for p in sums.parent.glob("*.deb") if p.name not in listed)
    if unlisted:
        raise InstallError(f"{sums} does not list {', '.join(unlisted)}: cannot verify them")
    log.info("Verified %d files against %s", len(listed), sums)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _deb_fields(deb: Path) -> tuple[str, str]:
    """(Package, Version) read from the .deb itself: file names can lie or be mangled."""
    dpkg_deb = _require_tool("dpkg-deb", "this installer needs Debian's dpkg tools; "
                                         "install Julia yourself (juliaup) and put it on PATH")
    result = subprocess.run([dpkg_deb, "--show", "--showformat=${Package}\t${Version}", str(deb)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise InstallError(f"{deb} is not a valid .deb file: {result.stderr.strip()}")
    package, version = result.stdout.split("\t")
    return package, version


def _pick_version(name: str, candidates: list[tuple[str, Path]], folder: Path) -> Path:
    wanted = PINNED_VERSIONS.get(name)
    if wanted:
        candidates = [c for c in candidates if c[0] == wanted]
    if not candidates:
        version = f" version {wanted}" if wanted else ""
        raise InstallError(f"{folder} has no .deb for package {name}{version}; it needs all of: "
                           f"{', '.join(REQUIRED_PACKAGES)} (see --help)")
    if len(candidates) > 1:
        names = ", ".join(p.name for _, p in candidates)
        raise InstallError(f"{folder} has several .deb files for {name} ({names}): keep one")
    return candidates[0][1]


# ---------------------------------------------------------------------------------------------
# The .deb files: downloaded with apt-get and a private configuration
# ---------------------------------------------------------------------------------------------

def find_debian_mirror(etc_apt: Path = Path("/etc/apt")) -> str | None:
    """The URI of the main Debian archive in the system's apt sources (not -security), or None."""
    entries = list(_deb822_entries(etc_apt)) + list(_one_line_entries(etc_apt))
    for uri, suites, keyring in entries:
        if "security" in uri or all(s.endswith("-security") for s in suites):
            continue
        looks_debian = "debian-archive" in keyring or any(
            s.split("-")[0] in DEBIAN_SUITES for s in suites)
        if looks_debian and not uri.startswith("cdrom:"):
            return uri.rstrip("/")
    return None


def _deb822_entries(etc_apt: Path) -> Iterator[tuple[str, list[str], str]]:
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for match in re.finditer(r"^([\w-]+):[ \t]*(.*)$", stanza, re.MULTILINE):
                fields[match.group(1).lower()] = match.group(2).strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no" or not fields.get("uris"):
                continue
            yield (fields["uris"].split()[0], fields.get("suites", "").split(),
                   fields.get("signed-by", ""))


def _one_line_entries(etc_apt: Path) -> Iterator[tuple[str, list[str], str]]:
    paths = [etc_apt / "sources.list"] + sorted((etc_apt / "sources.list.d").glob("*.list"))
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"\s*deb\s+(?:\[([^\]]*)\]\s*)?(\S+)\s+(\S+)", line.split("#")[0])
            if match:
                options, uri, suite = match.groups()
                yield uri, [suite], options or ""


def _download_debs(home: Path, mirror: str | None) -> Path:
    """apt-get download the packages into ``<home>/debs`` (replaced as a whole) and return it."""
    _require_tool("apt-get", "install Julia yourself (juliaup) or pass --from-debs DIR")
    mirror = mirror or find_debian_mirror()
    if not mirror:
        raise InstallError("no Debian archive found in /etc/apt/sources.list{,.d}: pass --mirror URI "
                           "(a Debian mirror that carries bullseye) or --from-debs DIR")
    if not ARCHIVE_KEYRING.is_file():
        raise InstallError(f"{ARCHIVE_KEYRING} is missing: sudo apt-get install debian-archive-keyring")
    work = Path(tempfile.mkdtemp(prefix=".apt-", dir=home))
    try:
        options = _private_apt_config(work, mirror)
        log.info("Fetching package lists for bullseye and bookworm from %s", mirror)
        _apt_get(options, "update", cwd=work, mirror=mirror)
        download = work / "debs"
        download.mkdir()
        log.info("Downloading %d packages", len(REQUIRED_PACKAGES + OPTIONAL_PACKAGES))
        _apt_get(options, "download", *_package_selectors(), cwd=download, mirror=mirror)
        # apt checked each file against the signed index; record that for later --from-debs runs.
        sums = "".join(f"{_sha256(p)}  {p.name}\n" for p in sorted(download.glob("*.deb")))
        (download / "SHA256SUMS").write_text(sums)
        target = home / "debs"
        shutil.rmtree(target, ignore_errors=True)
        download.rename(target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _package_selectors() -> list[str]:
    """apt-get arguments naming each package's release (or exact version), never "the newest":
    with both suites in the list apt would otherwise take e.g. bookworm's libutf8proc2."""
    selectors = []
    for package in REQUIRED_PACKAGES + OPTIONAL_PACKAGES:
        if package in PINNED_VERSIONS:
            selectors.append(f"{package}={PINNED_VERSIONS[package]}")
        else:
            suite = "bookworm" if package in BOOKWORM_PACKAGES else "bullseye"
            selectors.append(f"{package}/{suite}")
    return selectors


def _private_apt_config(work: Path, mirror: str) -> list[str]:
    """apt-get options that replace the system's sources, indexes, cache and pins with ours."""
    for sub in ("lists/partial", "cache/archives/partial"):
        (work / sub).mkdir(parents=True)
    opts = f"signed-by={ARCHIVE_KEYRING} arch=amd64 targets=Packages"
    sources = work / "sources.list"
    sources.write_text("".join(f"deb [{opts}] {mirror} {suite} main\n"
                               for suite in ("bullseye", "bookworm")))
    # The system's update hooks (PackageKit, AppStream) are about the system's lists, not ours.
    conf = work / "apt.conf"
    conf.write_text("#clear APT::Update::Pre-Invoke;\n#clear APT::Update::Post-Invoke;\n"
                    "#clear APT::Update::Post-Invoke-Success;\n")
    settings = {
        "Dir::Etc::SourceList": sources, "Dir::Etc::SourceParts": "/dev/null",
        "Dir::Etc::Preferences": "/dev/null", "Dir::Etc::PreferencesParts": "/dev/null",
        "Dir::State::Lists": work / "lists", "Dir::Cache": work / "cache",
        "Acquire::Languages": "none", "APT::Architecture": "amd64",
    }
    options = ["-c", str(conf), "-q"]
    for key, value in settings.items():
        options += ["-o", f"{key}={value}"]
    return options


def _apt_get(options: list[str], action: str, *args: str, cwd: Path, mirror: str) -> None:
    command = ["apt-get", *options, action, *args]
    log.debug("Running %s", " ".join(command))
    env = dict(os.environ, LC_ALL="C.UTF-8", DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    # apt-get update can exit 0 after failing to fetch an index ("W: Failed to fetch").
    failed = result.returncode != 0 or re.search(r"^(E:|W: Failed to fetch)", result.stderr, re.M)
    if failed:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise InstallError(
            f"apt-get {action} failed (mirror {mirror}):\n{tail}\n"
            "Pass --mirror URI for a Debian mirror that still carries bullseye, or --from-debs DIR "
            "with the .deb files.")


# ---------------------------------------------------------------------------------------------
# Building the runtime folder
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
