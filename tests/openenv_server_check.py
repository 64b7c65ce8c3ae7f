"""OpenEnv's julia_env server on juliapool's pool, driven over HTTP in one process (no port opened).

Run by tests/test_openenv.py as `python openenv_server_check.py OPENENV_REPO OUT`; writes one JSON
object to OUT with what the server and the environment answered (its stdout carries the server's logs). OpenEnv's app.py enables the shared pool with
$JULIA_MAX_WORKERS workers when it is imported.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(sys.argv[1], "envs"))

import juliapool.openenv  # noqa: E402

juliapool.openenv.install()

from fastapi.testclient import TestClient  # noqa: E402
from julia_env import JuliaAction  # noqa: E402
from julia_env.server import JuliaCodeActEnv  # noqa: E402
from julia_env.server.app import app  # noqa: E402
from julia_env.server.julia_executor import JuliaExecutor  # noqa: E402

out = {}
with TestClient(app) as client:
    out["pool_status"] = client.get("/pool_status").json()
    out["http_step"] = client.post("/step", json={"action": {"core_code": 'println("hi")'}}).json()
env = JuliaCodeActEnv(use_process_pool=True)
env.reset()
tests = 'using Test\n@testset "t" begin\n@test f(1) == 1\n@test f(2) == 3\nend'
obs = env.step(JuliaAction(core_code="f(x) = x", test_code=tests))
out["tests"] = {"passed": obs.tests_passed, "failed": obs.tests_failed, "exit_code": obs.exit_code}
obs = env.step(JuliaAction(core_code="sleep(30)"), timeout=1)
out["timeout"] = {"exit_code": obs.exit_code, "stderr": obs.stderr}
out["metrics_after"] = JuliaExecutor.get_pool_metrics()
JuliaExecutor.shutdown_pool()
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
