"""juliapool as a drop-in for OpenEnv's julia_env (meta-pytorch/OpenEnv, envs/julia_env/server).

OpenEnv's own test file, tests/envs/test_julia_env.py, runs unchanged with juliapool's modules in
place of its `julia_executor` and `julia_process_pool` (tests/openenv_plugin.py), in a pytest of its
own so that its sys.path changes stay there. Neither julia_env nor that test file ships in a PyPI
package (openenv-core has neither), and juliapool does not copy OpenEnv's code: the tests read a
checkout named by $OPENENV_REPO and skip, saying how to get one, without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from juliapool.discovery import find_julia

HERE = Path(__file__).resolve().parent
OPENENV_TEST = Path("tests/envs/test_julia_env.py")
HOW = ("OpenEnv's julia_env is not on PyPI: clone meta-pytorch/OpenEnv from GitHub and set "
       "OPENENV_REPO to the checkout (README: 'Using juliapool in OpenEnv')")


@pytest.fixture(scope="module")
def openenv_repo() -> Path:
    repo = os.environ.get("OPENENV_REPO")
    if not repo:
        pytest.skip(f"$OPENENV_REPO is not set. {HOW}")
    path = Path(repo)
    if not (path / OPENENV_TEST).is_file() or not (path / "envs/julia_env/server").is_dir():
        pytest.skip(f"{path} has no {OPENENV_TEST} and envs/julia_env. {HOW}")
    pytest.importorskip("openenv.core", reason="pip install --no-deps openenv-core==0.3.0 (.ci/run does)")
    return path


def _env() -> dict:
    """Julia on PATH (OpenEnv's tests skip without `julia` there), juliapool and the plugin importable."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(find_julia()) + os.pathsep + env.get("PATH", "")
    paths = [str(HERE.parent), str(HERE), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


@pytest.mark.timeout(600)
def test_openenvs_own_julia_env_tests_pass_on_juliapool(openenv_repo, tmp_path):
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "openenv_plugin", "-p", "no:cacheprovider",
         f"--junitxml={report}", "--rootdir", str(openenv_repo), str(openenv_repo / OPENENV_TEST)],
        cwd=openenv_repo, env=_env(), capture_output=True, text=True, timeout=580)
    assert "juliapool-shim: in use" in proc.stdout, proc.stdout + proc.stderr
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = kinds[0] if kinds else "passed"
    assert len(outcomes) >= 17, outcomes
    # The time-column test is marked xfail on Julia < 1.8 by the plugin; junit calls that "skipped".
    # Nothing else may fail or skip: the Julia tests must really have run.
    not_passed = {name: kind for name, kind in outcomes.items() if kind != "passed"}
    assert set(not_passed) <= {"test_step_with_tests_pass"}, (not_passed, proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(300)
def test_openenv_server_and_environment_run_on_the_pool(openenv_repo, tmp_path):
    env = _env()
    env.update(JULIA_MAX_WORKERS="1", JULIA_LOG_FILE=str(tmp_path / "julia_env.log"))
    result = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(HERE / "openenv_server_check.py"), str(openenv_repo), str(result)],
                          env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(result.read_text())
    status = out["pool_status"]
    assert status["pool_enabled"] is True
    metrics = status["pool_metrics"]
    assert metrics["enabled"] is True and metrics["pool_size"] == 1
    for key in ("size", "idle", "busy", "starting", "calls", "restarts", "timeouts", "available_workers"):
        assert key in metrics, key
    assert out["http_step"]["observation"]["stdout"] == "hi\n"
    assert out["tests"] == {"passed": 1, "failed": 1, "exit_code": 1}
    assert out["timeout"]["exit_code"] == -1 and "timed out after 1 seconds" in out["timeout"]["stderr"]
    assert out["metrics_after"]["calls"] >= 3 and out["metrics_after"]["timeouts"] == 1
