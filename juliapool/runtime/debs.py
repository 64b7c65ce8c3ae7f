"""The Debian packages of the runtime: which ones, finding them in a folder (checked against its
SHA256SUMS), or downloading them with apt-get and a private configuration that leaves the system's
apt state untouched. Used by juliapool.runtime.install."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InstallError

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

ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")  # has bullseye + bookworm keys
DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                 "oldoldstable", "oldstable", "stable", "testing", "unstable"}

def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise InstallError(f"{name} not found: {hint}")
    return path


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
