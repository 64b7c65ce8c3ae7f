"""The system image (juliapool/sysimage.py): which image a pool picks, when it ignores one, what a
worker on it does, and the errors of a build that cannot work.

The image itself is built by the README's set-up (`juliapool-install-julia` builds it for the runtime
it installs; CI runs that first). `test_workers_on_the_built_image_behave_like_workers_without` uses
it; it is skipped where none is built, unless JULIAPOOL_TEST_REQUIRE_SYSIMAGE=1 (CI) makes that a
failure.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from juliapool import JuliaProcessPool
from juliapool import paths as si
from juliapool.runtime import sysimage as build

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def private_home(tmp_path, monkeypatch):
    """Images are looked up under $JULIAPOOL_HOME/sysimages; nothing chosen by the environment."""
    monkeypatch.setenv("JULIAPOOL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(si.SYSIMAGE_ENV, raising=False)
    return tmp_path / "home"


def fake_built_image(julia: str, base_image: Path) -> Path:
    """The files a build leaves behind, without building (the lookup reads only these)."""
    folder = si.image_dir(julia)
    folder.mkdir(parents=True)
    (folder / si.IMAGE_NAME).write_bytes(b"not really an image")
    meta = {"base_image": str(base_image), "base_stamp": si.file_stamp(str(base_image))}
    (folder / si.META_NAME).write_text(json.dumps(meta))
    return folder / si.IMAGE_NAME


def test_environment_variable_turns_images_off_or_names_one(private_home, monkeypatch):
    monkeypatch.setenv(si.SYSIMAGE_ENV, "off")
    assert si.find_sysimage("/usr/bin/julia") is None
    monkeypatch.setenv(si.SYSIMAGE_ENV, "/images/mine.so")
    assert si.find_sysimage("/usr/bin/julia") == "/images/mine.so"


def test_a_built_image_is_found_until_julias_own_image_changes(private_home, tmp_path):
    base = tmp_path / "sys.so"
    base.write_bytes(b"julia's own image")
    image = fake_built_image("/opt/julia/bin/julia", base)
    assert si.find_sysimage("/opt/julia/bin/julia") == str(image)
    assert si.find_sysimage("/opt/other-julia/bin/julia") is None  # built for another Julia
    base.write_bytes(b"julia's own image, upgraded")
    assert si.find_sysimage("/opt/julia/bin/julia") is None


def test_changed_worker_sources_need_a_new_image(private_home, tmp_path, monkeypatch):
    base = tmp_path / "sys.so"
    base.write_bytes(b"julia's own image")
    sources = tmp_path / "julia"
    shutil.copytree(si.julia_source_dir(), sources)
    monkeypatch.setattr(si, "julia_source_dir", lambda: sources)
    fake_built_image("/opt/julia/bin/julia", base)
    assert si.find_sysimage("/opt/julia/bin/julia") is not None
    with open(sources / "JuliaPoolWorker.jl", "a") as f:
        f.write("\n# changed\n")
    assert si.find_sysimage("/opt/julia/bin/julia") is None


def test_a_pool_falls_back_when_workers_cannot_start_on_the_image(julia_path, tmp_path, caplog):
    broken = tmp_path / "broken.so"
    broken.write_bytes(b"\x7fELF but not really")
    with caplog.at_level(logging.WARNING, logger="juliapool"):
        pool = JuliaProcessPool(size=1, julia_path=julia_path, sysimage=str(broken))
        try:
            assert pool.execute('print("still works")').stdout == "still works"
            assert pool.sysimage is None
        finally:
            pool.shutdown()
    assert any(str(broken) in r.getMessage() and "without it" in r.getMessage() for r in caplog.records)


def test_an_image_named_in_julia_args_wins(julia_path, private_home):
    pool = JuliaProcessPool(size=1, julia_path=julia_path, wait=False, julia_args=["--sysimage=/x/y.so"])
    try:
        assert pool.sysimage is None  # juliapool adds no -J of its own
    finally:
        pool.shutdown()


def worker_cmdline(pool: JuliaProcessPool) -> list:
    pid = pool._workers[0].pid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")


CELLS = ["x = 2; for i in 1:3; x += i; end; x", "[1 2; 3 4]", 'println("out"); display(1.5); "s"',
         "sqrt(-1)", "struct P; a::Int; end; P(3)", "?sqrt"]


def run_notebook(pool: JuliaProcessPool) -> list:
    shown: list = []
    with pool.session("compare") as s:
        replies = [s.run(c, on_output=lambda *_: None, on_display=shown.append) for c in CELLS]
        completions = s.complete("sqr", 3)
    return [(r.status, r.stdout, r.result, r.ename, r.evalue) for r in replies] + [shown, completions]


def test_workers_on_the_built_image_behave_like_workers_without(julia_path, monkeypatch):
    monkeypatch.delenv(si.SYSIMAGE_ENV, raising=False)
    image = si.find_sysimage(julia_path)
    if image is None:
        if os.environ.get("JULIAPOOL_TEST_REQUIRE_SYSIMAGE") == "1":
            pytest.fail(f"no system image is built for {julia_path}: the set-up should have built one")
        pytest.skip(f"no system image built for {julia_path} (run `juliapool sysimage`)")
    with_image = JuliaProcessPool(size=1, julia_path=julia_path, warm_kernel=True, fast_start=True)
    without = JuliaProcessPool(size=1, julia_path=julia_path, warm_kernel=True, fast_start=True, sysimage=False)
    try:
        assert with_image.sysimage == image
        assert worker_cmdline(with_image)[1:] .count("-J") == 1 and image in worker_cmdline(with_image)
        assert "-J" not in worker_cmdline(without)
        assert run_notebook(with_image) == run_notebook(without)
        assert with_image.sysimage == image  # no fallback happened
    finally:
        with_image.shutdown()
        without.shutdown()


def test_cli_says_which_image_workers_use(julia_path, private_home):
    env = dict(os.environ, JULIAPOOL_JULIA=julia_path)
    out = subprocess.run([sys.executable, "-m", "juliapool.cli", "sysimage", "--check"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and f"no system image for {julia_path}" in out.stdout
    env[si.SYSIMAGE_ENV] = "/images/mine.so"
    out = subprocess.run([sys.executable, "-m", "juliapool.cli", "version"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert "system image: /images/mine.so" in out.stdout


def test_a_new_image_replaces_older_ones_for_the_same_julia(private_home, tmp_path):
    base = tmp_path / "sys.so"
    base.write_bytes(b"julia's own image")
    current = fake_built_image("/opt/julia/bin/julia", base).parent
    home = current.parent

    def folder(name: str, julia: str = "", age_days: float = 0) -> Path:
        f = home / name
        f.mkdir()
        if julia:
            (f / si.META_NAME).write_text(json.dumps({"julia": julia}))
        os.utime(f, (time.time() - age_days * 86400,) * 2)
        return f

    older = folder("0123456789abcdef", julia="/opt/julia/bin/julia")  # other worker sources
    other_julia = folder("fedcba9876543210", julia="/opt/other/bin/julia")
    dead_build = folder("build-old", age_days=2)
    running_build = folder("build-new")
    gone = build.remove_older_images("/opt/julia/bin/julia", keep=current)
    assert sorted(gone) == sorted([older, dead_build])
    assert current.is_dir() and other_julia.is_dir() and running_build.is_dir()


# ---- a build that cannot work says why -----------------------------------------------------------

def test_build_with_a_julia_that_does_not_run(private_home, tmp_path):
    fake = tmp_path / "julia"
    fake.write_text("#!/bin/sh\necho 'julia: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(build.SysimageError, match="could not ask .* about itself:\njulia: cannot start"):
        build.build_sysimage(str(fake), say=lambda _: None)
    assert not list(private_home.joinpath("sysimages").glob("build-*"))  # nothing left behind


def test_link_without_a_c_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "")
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, no gcc
    info = {"libjulia": "/lib/libjulia.so.1", "libjulia_internal": ""}
    with pytest.raises(build.SysimageError, match="needs a C compiler"):
        build._link(info, tmp_path / "x.o", tmp_path / "x.so")


def test_link_failure_shows_the_linkers_words(tmp_path, monkeypatch):
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho 'ld: cannot find libjulia' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    info = {"libjulia": "/lib/libjulia.so.1", "libjulia_internal": ""}
    with pytest.raises(build.SysimageError, match="could not link the image:\nld: cannot find libjulia"):
        build._link(info, tmp_path / "x.o", tmp_path / "x.so")
