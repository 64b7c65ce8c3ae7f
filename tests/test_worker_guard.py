"""No request may end a worker because of an error in the worker's own code (issue 10).

Faults are injected on purpose with $JULIAPOOL_FAIL_REQUESTS (julia/notebook.jl, `inject_fault`): the
handling of the listed request kinds fails at once, as a bug in the worker would. Each such request
must be answered with its kind's empty result (PROTOCOL.md), logged, and leave the worker, its
session state and the kernel running. (test_kernel_ijulia.py makes handlers fail through real
user code instead: a completer that throws, a `show` that throws, a docstring that cannot render.)
"""

from __future__ import annotations

import logging
import os

import pytest
from jupyter_client.manager import start_new_kernel

from juliapool import JuliaProcessPool

from kernel_env import KERNEL_NAME, jupyter_env, wait_no_tagged_processes

pytestmark = pytest.mark.timeout(120)


def faulty_env(kinds: str) -> dict:
    return dict(os.environ, JULIAPOOL_FAIL_REQUESTS=kinds)


def test_failed_requests_answer_empty_and_keep_the_session(caplog: pytest.LogCaptureFixture) -> None:
    with JuliaProcessPool(size=1, env=faulty_env("CIKD")) as pool:
        nb = pool.session("nb")
        assert nb.run("kept = 5; getpid()").status == "ok"
        pid = pool.worker_pids()
        with caplog.at_level(logging.WARNING, logger="juliapool"):
            assert nb.complete("prin", 4) == ([], 4, 4)
        assert any("internal error in a 'C' request" in r.getMessage() and "injected fault" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        assert nb.inspect("sin", 3) == {}
        assert nb.is_complete("for i in 1:3") == ("unknown", "")
        assert nb.run("kept").result["text/plain"] == "5"
        nb.close()  # its `D` request fails too, and is answered
        assert pool.worker_pids() == pid


def test_a_failed_exec_request_is_an_error_result_not_a_death() -> None:
    with JuliaProcessPool(size=1, env=faulty_env("E")) as pool:
        pid = pool.worker_pids()
        for _ in range(2):
            rep = pool.run('println("never runs")')
            assert (rep.status, rep.ename, rep.worker_died) == ("error", "JuliaPoolWorkerError", False), rep
            assert rep.stdout == "" and "injected fault" in rep.stderr
        assert pool.worker_pids() == pid


def test_kernel_requests_answered_when_the_worker_fails_them() -> None:
    jupyter_env()
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=60, env=faulty_env("CIK"))
    try:
        first = kc.execute_interactive("kept = 7; getpid()", timeout=60)
        assert first["content"]["status"] == "ok"
        reply = kc.complete("prin", 4, reply=True, timeout=30)["content"]
        assert (reply["status"], reply["matches"], reply["cursor_start"]) == ("ok", [], 4)
        reply = kc.inspect("sin", 3, reply=True, timeout=30)["content"]
        assert (reply["status"], reply["found"]) == ("ok", False)
        msg_id = kc.is_complete("for i in 1:3")
        reply = kc.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "unknown"
        outputs = []
        reply = kc.execute_interactive("kept", timeout=60, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok"
        results = [m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"]
        assert results == ["7"]  # same worker, same state
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert wait_no_tagged_processes() == [], "kernel or Julia worker processes were left behind"
