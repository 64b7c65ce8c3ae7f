"""The Julia side of the kernel (julia/kernel_support.jl), tested in Julia: tests/kernel_support_tests.jl
runs it against a stand-in for the worker's module (MIME bundles, display, completion offsets,
inspection, is_complete, special cells, stdin with and without a front end)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from juliapool.discovery import find_julia

pytestmark = pytest.mark.timeout(300)

TESTS = Path(__file__).resolve().parent / "kernel_support_tests.jl"


def test_kernel_support_in_julia(tmp_path: Path) -> None:
    out = subprocess.run([find_julia(), "--startup-file=no", "--history-file=no", str(TESTS)],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=280,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "kernel_support" in out.stdout
