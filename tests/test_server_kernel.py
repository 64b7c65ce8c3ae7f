"""Kernels on the pool server (`juliapool-kernel-install --server`), through jupyter_client: the
notebook's worker is leased from a real `juliapool serve` process; interrupt, restart, shutdown and a
killed kernel; a server started by the kernel itself; the fallback to a private pool."""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest
from jupyter_client.manager import start_new_kernel

import juliapool
import kernel_env
from kernel_env import julia_pids, jupyter_env, tagged_pids, wait_no_tagged_processes
from juliapool.kernel.install import install

from conftest import proc_stat, wait_until
from server_support import Server, socket_path, wait_dead, wait_stats
from test_kernel_faults import collect, value
from test_jupyterlab_e2e import CHROMIUM, CHROMIUM_ARGS, jupyterlab  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(240)

SERVER_KERNEL = "juliapool-test-server"


def server_kernelspec() -> str:
    env = jupyter_env()
    prefix = Path(env["JUPYTER_PATH"]).parent.parent
    if not (Path(env["JUPYTER_PATH"]) / "kernels" / SERVER_KERNEL).is_dir():
        install(prefix=str(prefix), name=SERVER_KERNEL, display_name="Julia test (server)", server=True,
                env={kernel_env.TAG_VAR: kernel_env._tag})
    return SERVER_KERNEL


@contextmanager
def server_kernel(path: Path, stderr_to: Optional[Path] = None, now: bool = False) -> Iterator:
    """A kernel from the --server kernelspec, its server socket at `path`."""
    env: Dict[str, str] = dict(os.environ, JULIAPOOL_SOCKET=str(path))
    extra = {}
    if stderr_to is not None:
        extra["stderr"] = open(stderr_to, "ab")
    km, kc = start_new_kernel(kernel_name=server_kernelspec(), startup_timeout=90, env=env, **extra)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=now)
        if "stderr" in extra:
            extra["stderr"].close()


def kernel_pid(km) -> int:
    return km.provisioner.process.pid


@pytest.fixture(scope="module")
def server():
    with Server(socket_path(), "--workers", "1", "--max-workers", "3") as srv:
        yield srv


def test_a_notebook_runs_on_a_leased_server_worker_with_interrupt_and_shutdown(server):
    with server_kernel(server.path) as (km, kc):
        assert value(kc, "x = 40 + 1") == "41"
        pid = int(value(kc, "getpid()"))
        assert pid in server.worker_pids() and julia_pids(tagged_pids()) == []  # no Julia of its own
        stats = server.stats()
        mine = [e for e in stats["session_list"] if e["worker_pid"] == pid]
        assert len(mine) == 1 and mine[0]["attached_to"] and not mine[0]["keep"]
        msg_id = kc.execute("sleep(100)")
        time.sleep(1.0)
        km.interrupt_kernel()
        reply, msgs = collect(kc, msg_id, timeout=30)
        assert reply["status"] == "error" and reply["ename"] == "InterruptException"
        assert value(kc, "x") == "41"  # the interrupt kept the state, on the same worker
        assert int(value(kc, "getpid()")) == pid
    # the kernel is gone: the server forgot its session and no longer holds its worker for it
    wait_stats(server, lambda s: not any(e["worker_pid"] == pid for e in s["session_list"]) and s["clients"] == 1)
    assert wait_no_tagged_processes() == []


def test_restart_gives_a_fresh_state_and_a_killed_kernel_frees_its_worker(server):
    with server_kernel(server.path, now=True) as (km, kc):
        assert value(kc, "y = 7") == "7"
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=90)
        assert value(kc, "@isdefined y") == "false"
        pid = int(value(kc, "getpid()"))
        kc.execute("sleep(300)")
        time.sleep(1.0)
        before = server.stats()
        os.kill(kernel_pid(km), signal.SIGKILL)  # the kernel dies mid-cell: its worker runs on
        assert wait_dead(pid, 20), "the worker of a killed kernel was not killed by the server"
    # The launcher's death ends the kernel with SIGTERM (zygote.py): either the kernel still gives
    # its busy worker back as dead (a restart to the server), or the server sees it go mid-call.
    ended = lambda s: s["killed_mid_call"] + s["restarts"]  # noqa: E731
    stats = wait_stats(server, lambda s: ended(s) > ended(before) and not s["session_list"])
    assert stats["workers"] <= 3


def test_a_kernel_starts_the_server_when_none_runs_and_others_share_it():
    path = socket_path()
    try:
        with server_kernel(path) as (km1, kc1), server_kernel(path) as (km2, kc2):
            assert value(kc1, "1 + 1") == "2" and value(kc2, "2 + 2") == "4"
            with juliapool.connect(path) as client:
                stats = client.get_stats()
            assert stats["sessions"] == 2 and stats["clients"] == 3
            # the server is nobody's child: it outlives the kernel that started it
            assert all(int(value(kc, "getpid()")) in [w["pid"] for w in stats["worker_list"]] for kc in (kc1, kc2))
        assert wait_until(lambda: juliapool.connect(path).get_stats()["sessions"] == 0, 30)
    finally:
        try:
            juliapool.connect(path).stop_server()
        except juliapool.ServerUnavailableError:
            pass
    assert wait_no_tagged_processes(30) == []


def test_without_a_usable_server_the_kernel_says_so_and_uses_a_private_pool(tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the socket's folder should be")
    log = tmp_path / "kernel.log"
    with server_kernel(blocked / "pool.sock", stderr_to=log) as (km, kc):
        assert value(kc, "1 + 1") == "2"
        assert julia_pids(tagged_pids())  # its own workers
    text = log.read_text(errors="replace")
    assert "the pool server cannot be used" in text and "private pool" in text
    assert wait_no_tagged_processes() == []


def test_a_kernel_whose_server_was_killed_goes_on_with_a_new_server():
    path = socket_path()
    first = Server(path, "--workers", "1")
    try:
        with server_kernel(path) as (km, kc):
            assert value(kc, "z = 3") == "3"
            first.stop(signal.SIGKILL)
            reply, msgs = collect(kc, kc.execute("@isdefined z"), timeout=90)
            assert reply["status"] == "ok"
            assert [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"] == ["false"]
            notes = "".join(c["text"] for t, c in msgs if t == "stream" and c["name"] == "stderr")
            assert "fresh" in notes  # the notebook is told its state is gone
            with juliapool.connect(path) as client:
                assert client.server_pid != first.proc.pid
    finally:
        first.stop()
        try:
            juliapool.connect(path).stop_server()
        except juliapool.ServerUnavailableError:
            pass
    assert wait_no_tagged_processes(30) == []


def test_the_kernel_is_forked_by_the_zygote_and_ends_with_its_launcher(server):
    with server_kernel(server.path, now=True) as (km, kc):
        worker = int(value(kc, "getpid()"))
        entry = next(e for e in server.stats()["session_list"] if e["worker_pid"] == worker)
        kernel, launcher = entry["attached_to"], kernel_pid(km)
        assert kernel != launcher
        zygote = proc_stat(kernel)["ppid"]
        assert "juliapool.kernel.zygote" in proc_stat(zygote)["cmdline"]  # forked, not started anew
        os.kill(launcher, signal.SIGKILL)
        assert wait_dead(kernel, 20), "the kernel outlived its launcher"
    wait_stats(server, lambda s: not any(e["worker_pid"] == worker for e in s["session_list"]))
    # The zygote outlives that end (a kernel's and its launcher's end often reach it together).
    with server_kernel(server.path, now=True) as (km, kc):
        worker = int(value(kc, "getpid()"))
        entry = next(e for e in server.stats()["session_list"] if e["worker_pid"] == worker)
        assert entry["attached_to"] != kernel_pid(km)
        assert proc_stat(entry["attached_to"])["ppid"] == zygote


@pytest.fixture
def lab_on_server(server, monkeypatch):
    """The module's server, its socket in the environment a JupyterLab server started now gets."""
    monkeypatch.setenv("JULIAPOOL_SOCKET", str(server.path))
    server_kernelspec()
    return server


def test_jupyterlab_runs_a_cell_on_a_server_kernel(lab_on_server, jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    display = "Julia test (server)"
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "first", "metadata": {}, "outputs": [],
                     "source": 'print("pid ", getpid())'}],
          "metadata": {"kernelspec": {"name": SERVER_KERNEL, "display_name": display, "language": "julia"}},
          "nbformat": 4, "nbformat_minor": 5}
    (jupyterlab.root_dir / "server.ipynb").write_text(json.dumps(nb))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{jupyterlab.url}/lab/tree/server.ipynb?reset&token={jupyterlab.token}",
                      wait_until="domcontentloaded")
            status = page.locator('#jp-main-statusbar .jp-StatusBar-TextItem[title^="Change kernel"]')
            status.filter(has_text=f"{display} | Idle").wait_for(timeout=90_000)
            cell = page.locator(".jp-Notebook .jp-Cell").first
            cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            cell.locator(".jp-OutputArea-output").filter(has_text="pid ").wait_for(timeout=60_000)
            text = cell.locator(".jp-OutputArea").inner_text()
            page.screenshot(path=str(tmp_path / "jupyterlab-server.png"))
        finally:
            browser.close()
    pid = int(text.split("pid ", 1)[1].split()[0])
    assert pid in lab_on_server.worker_pids()  # the cell ran on a worker of the pool server
