"""Tests of the Julia runtime installer (juliapool.install), offline, from ../shared/julia-debs.

One real install is shared by the module; the failure cases use their own empty homes and stop
before (or right after) unpacking, so the suite stays fast.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from juliapool import paths
from juliapool.runtime import debs
from juliapool.runtime import install as inst
from juliapool.errors import InstallError

REPO = Path(__file__).resolve().parents[1]
SHARED_DEBS = Path(__file__).resolve().parents[2] / "shared" / "julia-debs"

pytestmark = [
    pytest.mark.skipif(not SHARED_DEBS.is_dir(), reason=f"no offline .deb copy at {SHARED_DEBS}"),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb"),
]

# Every .so of the runtime must load, with all its dependencies found (catches a library that is
# unpacked outside LD_LIBRARY_PATH, as libpcre3's lib/ folder once was).
DLOPEN_ALL = """
using Libdl
root = normpath(joinpath(Sys.BINDIR, "..", ".."))
for dir in ("usr/lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu/julia", "lib/x86_64-linux-gnu")
    for f in readdir(joinpath(root, dir); join=true)
        (occursin(".so", basename(f)) && isfile(f)) || continue
        try dlopen(f) catch e; println(sprint(showerror, e)) end
    end
end
"""


def run_julia(julia: Path, code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(julia), "--startup-file=no", "-e", code], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JULIAPOOL_")}
    clean["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "juliapool.runtime.install", *args], capture_output=True,
                          text=True, timeout=120, env={**clean, **(env or {})},
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("juliapool-home")
    inst.install(from_debs=SHARED_DEBS, home=home)
    return home


@pytest.fixture(scope="module")
def julia(home: Path) -> Path:
    found = paths.installed_julia(home)
    assert found is not None
    return found


@pytest.fixture
def debs_copy(tmp_path: Path) -> Path:
    """The shared .debs as symlinks (cheap) plus a real copy of SHA256SUMS, to corrupt at will."""
    copy = tmp_path / "debs"
    copy.mkdir()
    for deb in SHARED_DEBS.glob("*.deb"):
        (copy / deb.name).symlink_to(deb)
    shutil.copy(SHARED_DEBS / "SHA256SUMS", copy / "SHA256SUMS")
    return copy


# --- the installed runtime --------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_wrapper_runs_julia_1_5_3(home: Path, julia: Path) -> None:
    assert julia == home / "julia-1.5.3" / "bin" / "julia"
    assert julia.read_text().startswith("#!/bin/sh\n")
    result = run_julia(julia, "print(VERSION)")
    assert (result.returncode, result.stdout) == (0, "1.5.3"), result.stderr


@pytest.mark.timeout(120)
def test_exceptions_with_backtraces_do_not_segfault(julia: Path) -> None:
    caught = run_julia(julia, 'f() = error("boom"); '
                              'try f() catch e; showerror(stdout, e, catch_backtrace()) end')
    assert caught.returncode == 0, caught.stderr
    assert "boom" in caught.stdout and "f()" in caught.stdout
    # Uncaught: Julia prints the stack trace and exits 1 (a bad libunwind gives -11, SIGSEGV).
    uncaught = run_julia(julia, 'g() = error("boom"); g()')
    assert uncaught.returncode == 1, uncaught.stderr
    assert "boom" in uncaught.stderr and "Stacktrace" in uncaught.stderr


@pytest.mark.timeout(120)
def test_linear_algebra_and_stdlib(julia: Path) -> None:
    code = ('using LinearAlgebra, SparseArrays, Random, Printf, Dates, Statistics; import LibGit2; '
            'A = [2.0 1; 1 3]; @printf("%.1f %s %s", det(A), A \\ [1.0, 2.0] ≈ [0.2, 0.6], '
            'match(r"a(b)", "xab")[1])')
    result = run_julia(julia, code)
    assert (result.returncode, result.stdout) == (0, "5.0 true b"), result.stderr


@pytest.mark.timeout(120)
def test_every_shared_library_loads(julia: Path) -> None:
    result = run_julia(julia, DLOPEN_ALL)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


@pytest.mark.timeout(120)
def test_bigfloat_prints_all_digits(julia: Path) -> None:
    if not list(SHARED_DEBS.glob("libmpfr6_4.1.0-3_*.deb")):
        pytest.xfail("shared/julia-debs lacks Debian 11's libmpfr6 4.1.0-3, so the system's MPFR "
                     "4.2 is used and Julia 1.5 prints BigFloat(1.5) as 2.0")
    result = run_julia(julia, "print(BigFloat(1.5), ' ', big(1)/4)")
    assert result.stdout == "1.5 0.25", result.stderr


# --- idempotence and the command line ---------------------------------------------------------

@pytest.mark.timeout(60)
def test_rerun_is_a_no_op(home: Path, julia: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = home / "julia-1.5.3" / paths.MARKER
    before = marker.stat()

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("an installed runtime must not be rebuilt")

    monkeypatch.setattr(inst, "_build", fail)
    monkeypatch.setattr(inst, "debs_in_dir", fail)
    assert inst.install(from_debs=SHARED_DEBS, home=home) == julia
    result = run_cli("--home", str(home), "--from-debs", str(SHARED_DEBS), "--no-sysimage")
    assert (result.returncode, result.stdout) == (0, f"{julia}\n"), result.stderr
    assert "already installed" in result.stderr
    after = marker.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.timeout(60)
def test_print_path(home: Path, julia: Path, tmp_path: Path) -> None:
    found = run_cli("--print-path", "--home", str(home))
    assert (found.returncode, found.stdout) == (0, f"{julia}\n")
    by_env = run_cli("--print-path", env={"JULIAPOOL_HOME": str(home)})
    assert (by_env.returncode, by_env.stdout) == (0, f"{julia}\n")
    missing = run_cli("--print-path", "--home", str(tmp_path))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert "not installed" in missing.stderr


@pytest.mark.timeout(10)
def test_installed_julia_needs_a_complete_runtime(tmp_path: Path) -> None:
    assert paths.installed_julia(tmp_path) is None
    wrapper = tmp_path / "julia-1.5.3" / "bin" / "julia"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text("#!/bin/sh\n")
    wrapper.chmod(0o755)
    assert paths.installed_julia(tmp_path) is None  # no marker: an interrupted install


@pytest.mark.timeout(10)
def test_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JULIAPOOL_HOME", str(tmp_path / "a"))
    assert paths.juliapool_home() == tmp_path / "a"
    monkeypatch.delenv("JULIAPOOL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.juliapool_home() == tmp_path / "xdg" / "juliapool"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert paths.juliapool_home() == Path.home() / ".local" / "share" / "juliapool"


# --- failures are clear and leave nothing behind ----------------------------------------------

@pytest.mark.timeout(60)
def test_corrupted_deb_fails_clearly(debs_copy: Path, tmp_path: Path) -> None:
    victim = debs_copy / "libffi7_3.3-6_amd64.deb"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.unlink()  # it was a symlink into the read-only shared folder
    victim.write_bytes(bytes(data))
    result = run_cli("--home", str(tmp_path / "home"), "--from-debs", str(debs_copy), "--no-sysimage")
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr and victim.name in result.stderr
    assert not (tmp_path / "home" / "julia-1.5.3").exists()


@pytest.mark.timeout(60)
def test_altered_sums_file_fails_clearly(debs_copy: Path, tmp_path: Path) -> None:
    sums = debs_copy / "SHA256SUMS"
    lines = sums.read_text().splitlines(keepends=True)
    lines[0] = ("0" if lines[0][0] != "0" else "1") + lines[0][1:]
    sums.write_text("".join(lines))
    with pytest.raises(InstallError, match="checksum mismatch"):
        inst.install(from_debs=debs_copy, home=tmp_path / "home")
    assert paths.installed_julia(tmp_path / "home") is None


@pytest.mark.timeout(30)
def test_missing_debs_dir_fails_clearly(tmp_path: Path) -> None:
    result = run_cli("--home", str(tmp_path / "home"), "--from-debs", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "nowhere" in result.stderr and "not a folder of .deb files" in result.stderr
    with pytest.raises(InstallError, match="not a folder"):
        inst.install(from_debs=tmp_path / "nowhere", home=tmp_path / "home")


@pytest.mark.timeout(60)
def test_missing_package_fails_clearly(debs_copy: Path, tmp_path: Path) -> None:
    (debs_copy / "SHA256SUMS").unlink()
    (debs_copy / "libunwind8_1.3.2-2_amd64.deb").unlink()
    with pytest.raises(InstallError, match="no .deb for package libunwind8 version 1.3.2-2"):
        inst.install(from_debs=debs_copy, home=tmp_path / "home")


@pytest.mark.timeout(60)
def test_missing_system_library_names_the_package(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(inst, "SYSTEM_LIB_DIRS", (tmp_path / "empty",))
    with pytest.raises(InstallError, match=r"apt-get install libcurl3-gnutls libgmp10 .*libssh2-1"):
        inst.install(from_debs=SHARED_DEBS, home=tmp_path / "home")


@pytest.mark.timeout(180)
def test_force_reinstall_is_atomic(home: Path, julia: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Uses the shared runtime: whatever happens here, it must stay usable at the same path.
    first = (home / "julia-1.5.3").stat().st_ino

    def broken(julia: Path) -> str:
        raise InstallError("smoke test failed on purpose")

    with monkeypatch.context() as patch:
        patch.setattr(inst, "smoke_test", broken)
        with pytest.raises(InstallError, match="on purpose"):
            inst.install(from_debs=SHARED_DEBS, home=home, force=True)
    # The failed reinstall left the old runtime in place and no half-built folder beside it.
    assert (home / "julia-1.5.3").stat().st_ino == first
    assert sorted(p.name for p in home.iterdir()) == [".install.lock", "julia-1.5.3"]
    assert inst.install(from_debs=SHARED_DEBS, home=home, force=True) == julia
    assert (home / "julia-1.5.3").stat().st_ino != first
    assert sorted(p.name for p in home.iterdir()) == [".install.lock", "julia-1.5.3"]
    assert run_julia(julia, "print(1 + 1)").stdout == "2"


# --- finding the Debian mirror in the system's apt configuration ------------------------------

@pytest.mark.timeout(10)
def test_find_debian_mirror_deb822(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.invalid/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    (tmp_path / "sources.list.d" / "other.list").write_text(
        "deb https://packages.invalid/apt cloud-sdk main\n")
    assert debs.find_debian_mirror(tmp_path) == "http://mirror.invalid/debian"


@pytest.mark.timeout(10)
def test_find_debian_mirror_one_line(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://old.invalid/debian buster main\n"
        "deb http://security.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://mirror.invalid/debian bookworm main contrib\n")
    assert debs.find_debian_mirror(tmp_path) == "http://mirror.invalid/debian"
    (tmp_path / "sources.list").write_text("deb http://ppa.invalid/ubuntu jammy main\n")
    assert debs.find_debian_mirror(tmp_path) is None


# --- the download path (needs the Debian archive; opt in) -------------------------------------

@pytest.mark.skipif(not os.environ.get("JULIAPOOL_TEST_ONLINE"),
                    reason="downloads about 55 MB from Debian's archive: set JULIAPOOL_TEST_ONLINE=1")
@pytest.mark.timeout(900)
def test_download_from_the_debian_archive(tmp_path: Path) -> None:
    julia = inst.install(home=tmp_path)
    result = run_julia(julia, "print(VERSION, ' ', BigFloat(1.5))")
    assert result.stdout == "1.5.3 1.5", result.stderr
    # The same packages as the offline copy, byte for byte (plus libmpfr6).
    downloaded = (tmp_path / "debs" / "SHA256SUMS").read_text().splitlines()
    assert set((SHARED_DEBS / "SHA256SUMS").read_text().splitlines()) <= set(downloaded)


@pytest.mark.timeout(10)
def test_the_runtime_check_and_the_installer_agree_on_the_system_libraries() -> None:
    assert tuple(inst.SYSTEM_LIBS) == paths.SYSTEM_LIB_NAMES


@pytest.mark.timeout(30)
def test_the_library_never_imports_the_runtime_tools() -> None:
    """The core finds what the tools made (juliapool.paths) but does not load the tools themselves."""
    probe = ("import sys, juliapool, juliapool.kernel.kernel, juliapool.cli; "
             "print(sorted(m for m in sys.modules if m.startswith('juliapool.runtime')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (0, "[]\n"), out.stderr
