"""Interrupts, worker crashes, restart and shutdown of the juliapool kernel, through jupyter_client.

Each test starts its own kernel (its Julia workers are damaged on purpose) and proves at the end that
neither the kernel nor any Julia worker it started is left behind. Both kernelspec interrupt modes are
covered: "signal" (jupyter_client sends SIGINT to the kernel's process group, which the workers are
not in) and "message" (an interrupt_request on the control channel).
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

from conftest import proc_stat, wait_until
from kernel_env import (KERNEL_NAME, KERNEL_NAME_MSG, julia_pids, jupyter_env, tagged_pids,
                        wait_no_tagged_processes)

pytestmark = pytest.mark.timeout(120)

Kernel = Tuple[KernelManager, BlockingKernelClient]


@contextmanager
def own_kernel(name: str = KERNEL_NAME, env: Optional[Dict[str, str]] = None, now: bool = False) -> Iterator[Kernel]:
    """A kernel of its own; when done, it is shut down (`now`: at once) and nothing of it may be left."""
    jupyter_env()
    km, kc = start_new_kernel(kernel_name=name, startup_timeout=60, **({} if env is None else {"env": env}))
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=now)
    assert wait_no_tagged_processes() == [], "kernel or Julia worker processes were left behind"


@pytest.fixture(params=[KERNEL_NAME, KERNEL_NAME_MSG], ids=["signal", "message"])
def kernel(request: Any) -> Iterator[Kernel]:
    """A fresh kernel per test, in each interrupt mode; nothing of it may outlive the test."""
    with own_kernel(request.param) as k:
        yield k


def submit(kc: BlockingKernelClient, code: str, allow_stdin: bool = False) -> str:
    return kc.execute(code, allow_stdin=allow_stdin)


def collect(kc: BlockingKernelClient, msg_id: str, timeout: float = 60) -> Tuple[Dict[str, Any], List[Tuple[str, Dict]]]:
    """The reply content and the iopub messages (type, content) of one execute request."""
    msgs: List[Tuple[str, Dict]] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        if msg["msg_type"] not in ("status", "execute_input"):
            msgs.append((msg["msg_type"], msg["content"]))
    while True:
        reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], msgs


def run(kc: BlockingKernelClient, code: str, timeout: float = 60) -> Tuple[Dict[str, Any], List[Tuple[str, Dict]]]:
    return collect(kc, submit(kc, code), timeout)


def value(kc: BlockingKernelClient, code: str) -> str:
    reply, msgs = run(kc, code)
    assert reply["status"] == "ok", reply
    return [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"][0]


RUNNING = 'println("running"); '  # put before a cell's code: wait_running() waits for its line


def wait_running(kc: BlockingKernelClient, msg_id: str) -> None:
    """Wait until the cell `msg_id` has printed "running\n" (once): its code runs now (nothing is
    guessed about how long the kernel and Julia take to get there). The line's stream messages are
    consumed here, so `collect` afterwards sees only what comes after it.

    Code to be interrupted prints it from inside the loop that is interrupted: printed before the
    loop, the line can come while Julia still compiles the loop, and a SIGINT there is Julia 1.5's
    "Internal error: encountered unexpected error in runtime" on stderr (or stops code meant to be
    uninterruptible)."""
    printed = ""
    while printed != "running\n":
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            printed += msg["content"]["text"]
            assert "running\n".startswith(printed), printed


def interrupt_after_start(km: KernelManager, kc: BlockingKernelClient, code: str) -> Tuple[Dict, List, float]:
    """Run `code`, which prints "running\n" once it runs, and interrupt it then."""
    msg_id = submit(kc, code)
    wait_running(kc, msg_id)
    start = time.monotonic()
    km.interrupt_kernel()
    reply, msgs = collect(kc, msg_id, timeout=30)
    return reply, msgs, time.monotonic() - start


# ---- interrupts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [
    RUNNING + "sleep(30)",
    "v = Float64[]\nprinted = false\nwhile true\n    push!(v, rand())\n"
    "    printed || (global printed = true; println(\"running\"))\n    length(v) > 10^6 && empty!(v)\nend",
], ids=["sleep", "allocating-loop"])
def test_interrupt_stops_the_cell_and_keeps_state(kernel: Kernel, code: str) -> None:
    km, kc = kernel
    assert value(kc, "x = 41") == "41"
    reply, msgs, elapsed = interrupt_after_start(km, kc, code)
    assert reply["status"] == "error" and reply["ename"] == "InterruptException", reply
    assert [t for t, _ in msgs] == ["error"], msgs
    assert elapsed < 5, elapsed  # the target (benchmarks) is under 1 s; a kill would lose `x`
    assert value(kc, "x + 1") == "42"


def test_uninterruptible_loop_is_killed_and_says_state_is_lost(kernel: Kernel) -> None:
    km, kc = kernel
    value(kc, "y = 1")
    spin = 'let first = true\n    while true\n        first && (first = false; println("running"))\n    end\nend'
    reply, msgs, elapsed = interrupt_after_start(km, kc, spin)  # no safepoint after the first round
    assert reply["status"] == "error" and reply["ename"] == "InterruptException"
    text = "\n".join(reply["traceback"])
    assert "killed" in text and "lost" in text, text
    assert elapsed < 15
    assert value(kc, "1 + 1") == "2"
    reply, _ = run(kc, "y")
    assert reply["ename"] == "UndefVarError"


def test_interrupt_while_waiting_for_input(kernel: Kernel) -> None:
    km, kc = kernel
    value(kc, "w = 7")
    msg_id = submit(kc, "readline()", allow_stdin=True)
    assert kc.get_stdin_msg(timeout=30)["msg_type"] == "input_request"
    km.interrupt_kernel()
    reply, _ = collect(kc, msg_id, timeout=30)
    assert reply["status"] == "error"
    assert value(kc, "w") == "7"


# ---- worker deaths -------------------------------------------------------------------------------

@pytest.mark.parametrize("code, what", [
    ("exit(3)", "exited with code 3"),
    ("unsafe_load(Ptr{Int}(1))", "signal 11"),
    ("ccall(:raise, Cint, (Cint,), 9)", "signal 9"),
], ids=["exit", "segfault", "sigkill"])
def test_worker_death_ends_the_cell_and_the_next_runs_fresh(kernel: Kernel, code: str, what: str) -> None:
    km, kc = kernel
    value(kc, "z = 1")
    reply, msgs = run(kc, code)
    assert reply["status"] == "error"
    errors = [c for t, c in msgs if t == "error"]
    assert len(errors) == 1
    text = "\n".join(errors[0]["traceback"])
    assert what in text and "lost" in text, text
    assert km.is_alive()
    start = time.monotonic()
    assert value(kc, "1 + 1") == "2"
    assert time.monotonic() - start < 10  # the target (benchmarks) is under 1 s, with the warm spare
    reply, _ = run(kc, "z")
    assert reply["ename"] == "UndefVarError"


def test_worker_killed_from_outside_during_a_cell(kernel: Kernel) -> None:
    km, kc = kernel
    pid = int(value(kc, "getpid()"))
    msg_id = submit(kc, RUNNING + "sleep(30)")
    wait_running(kc, msg_id)
    os.kill(pid, signal.SIGKILL)
    reply, _ = collect(kc, msg_id, timeout=30)
    assert reply["status"] == "error" and "signal 9" in reply["evalue"]
    assert value(kc, "1 + 1") == "2"


def test_worker_killed_between_cells_is_reported_with_the_next_cell(kernel: Kernel) -> None:
    km, kc = kernel
    pid = int(value(kc, "getpid()"))
    os.kill(pid, signal.SIGKILL)
    # Wait until the kernel has reaped it (its /proc entry is gone): the death is known before the
    # next cell is sent. A cell sent the moment the process shows as a zombie may still find the
    # kernel taking it for alive, and is then reported as dying with it (not what this test is about).
    assert wait_until(lambda: proc_stat(pid) is None, 10)
    reply, msgs = run(kc, "1 + 1")
    assert reply["status"] == "ok", (reply, msgs)
    stderr = "".join(c["text"] for t, c in msgs if t == "stream" and c["name"] == "stderr")
    assert "fresh" in stderr and "gone" in stderr, msgs


# ---- restart and shutdown ------------------------------------------------------------------------

def test_restart_leaves_no_julia_behind() -> None:
    with own_kernel() as (km, kc):
        run(kc, "a = 1")
        before = set(julia_pids(tagged_pids()))
        assert before
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=60)
        reply, _ = run(kc, "a")
        assert reply["ename"] == "UndefVarError"  # a restart starts from nothing
        deadline = time.monotonic() + 10
        while set(julia_pids(tagged_pids())) & before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not set(julia_pids(tagged_pids())) & before


def test_shutdown_during_an_endless_cell_leaves_nothing() -> None:
    with own_kernel() as (km, kc):
        msg_id = submit(kc, RUNNING + "while true end")
        wait_running(kc, msg_id)
        assert julia_pids(tagged_pids()), "the cell runs in a Julia worker that the shutdown must end"


def test_sigterm_to_the_kernel_leaves_nothing() -> None:
    with own_kernel(now=True) as (km, kc):
        run(kc, "1")
        assert julia_pids(tagged_pids())
        km.provisioner.process.send_signal(signal.SIGTERM)
        km.provisioner.process.wait(timeout=30)


# ---- no Julia ------------------------------------------------------------------------------------

def test_without_julia_the_kernel_starts_and_cells_say_why() -> None:
    env = dict(os.environ, JULIAPOOL_JULIA="/nonexistent/julia")
    with own_kernel(env=env) as (km, kc):
        info = kc.kernel_info(reply=True, timeout=30)["content"]
        assert info["language_info"]["name"] == "julia"
        reply, msgs = run(kc, "1 + 1")
        assert reply["status"] == "error" and reply["ename"] == "JuliaNotFoundError"
        assert "/nonexistent/julia" in reply["evalue"]
        assert [t for t, _ in msgs] == ["error"], msgs


# ---- a flood of output ---------------------------------------------------------------------------

def test_a_flood_of_output_is_cut_with_a_note_and_the_cell_completes() -> None:
    env = dict(os.environ, JULIAPOOL_MAX_CELL_OUTPUT="100000")
    with own_kernel(env=env) as (km, kc):
        reply, msgs = run(kc, 'for i in 1:100_000; println("line ", i); end; print(stderr, "late"); 42')
        assert reply["status"] == "ok"
        text = "".join(c["text"] for t, c in msgs if t == "stream")
        assert text.startswith("line 1\nline 2\n")
        assert text.count("output truncated") == 1 and "JULIAPOOL_MAX_CELL_OUTPUT" in text
        assert len(text) < 100_000 + 300 and "late" not in text  # ~1.2 MB printed
        assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == ["42"]
        reply, msgs = run(kc, 'println("after")')  # the next cell has its own allowance
        assert [c["text"] for t, c in msgs if t == "stream"] == ["after\n"]
