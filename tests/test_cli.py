"""The `juliapool` command (juliapool/cli.py), run as a user runs it: exit codes, output, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, Optional

import pytest

pytestmark = pytest.mark.timeout(180)


def juliapool(*args: str, stdin: str = "", env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "juliapool.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=150, env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("spawn", [[], ["--spawn"]], ids=["pool", "spawn"])
def test_run_exits_with_the_snippets_own_code(spawn):
    ok = juliapool("run", *spawn, 'println("hi"); print(stderr, "e")')
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "hi\n", "e")
    assert juliapool("run", *spawn, "exit(3)").returncode == 3
    failed = juliapool("run", *spawn, 'error("boom")')
    assert failed.returncode == 1 and failed.stderr.startswith("ERROR: boom")


def test_run_reads_code_from_stdin():
    out = juliapool("run", "-", stdin="x = 20\nprintln(x + 22)\n")
    assert (out.returncode, out.stdout) == (0, "42\n")


def test_run_timeout_keeps_partial_output_and_exits_124():
    out = juliapool("run", "--timeout", "1", 'println("before"); flush(stdout); sleep(30)')
    assert out.returncode == 124
    assert out.stdout == "before\n"
    assert "timed out" in out.stderr


def test_segfault_exits_128_plus_the_signal():
    out = juliapool("run", "unsafe_load(Ptr{Int}(0))")
    assert out.returncode == 128 + 11, (out.returncode, out.stderr[-500:])


def test_no_julia_exits_127_with_a_hint():
    out = juliapool("--julia", "/nonexistent/julia", "run", "1")
    assert out.returncode == 127
    assert "/nonexistent/julia" in out.stderr and "juliapool-install-julia" in out.stderr


def test_version_names_julia_and_the_system_image():
    out = juliapool("version")
    assert out.returncode == 0
    assert out.stdout.startswith("juliapool ") and "\njulia 1." in out.stdout and "system image: " in out.stdout


def test_demo_measures_both_modes_and_compares_their_output():
    out = juliapool("demo", "-n", "3", "--size", "1")
    assert out.returncode == 0, out.stderr
    assert "speedup in this run:" in out.stdout
    assert "identical stdout in both modes: 3/3" in out.stdout
    assert "timed_out=True" in out.stdout
