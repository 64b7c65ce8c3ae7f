"""End to end: a real JupyterLab, driven by headless Chromium, runs a cell on the juliapool kernel.

The way a user would: open a notebook whose kernelspec is juliapool, wait until the kernel is idle,
press Shift+Enter in the first cell and read its output from the page.

Needs Debian's chromium, JupyterLab and Playwright (no browser download: Playwright drives the
system's /usr/bin/chromium). Without them the test is skipped and says what to install:
    apt-get install -y chromium && python3 -m pip install jupyterlab playwright
Everything the server writes goes to temporary folders (HOME, XDG_*, JUPYTER_*, IPYTHONDIR).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, Iterator, NamedTuple

import pytest

from juliapool.discovery import find_julia

from kernel_env import KERNEL_NAME, jupyter_env, wait_no_tagged_processes

pytestmark = pytest.mark.timeout(240)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DISPLAY_NAME = "Julia test (signal)"  # as kernel_env installs KERNEL_NAME
INSTALL_HINT = "apt-get install -y chromium && python3 -m pip install jupyterlab playwright"


def _missing() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        return f"Debian's chromium is not installed ({INSTALL_HINT})"
    for module in ("jupyterlab", "playwright"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed ({INSTALL_HINT})"
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(root: Path) -> Dict[str, str]:
    """The test's private Jupyter folders, plus a private HOME and XDG folders for the server."""
    env = dict(os.environ, **jupyter_env())
    for name in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        env[name] = str(root / name.lower())
        Path(env[name]).mkdir(parents=True, exist_ok=True)
    # HOME moves, so the kernel would not find the Julia that juliapool-install-julia put under it.
    env["JULIAPOOL_JULIA"] = find_julia()
    settings = (Path(env["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings" / "@jupyterlab"
                / "apputils-extension" / "notification.jupyterlab-settings")
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return env


def write_notebook(path: Path) -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "first", "metadata": {},
                   "outputs": [], "source": 'println("hello from ", "Julia")\n6 * 7'},
                  {"cell_type": "code", "execution_count": None, "id": "second", "metadata": {},
                   "outputs": [], "source": 'HTML("<b>rich</b> output")'}],
        "metadata": {"kernelspec": {"name": KERNEL_NAME, "display_name": DISPLAY_NAME, "language": "julia"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


class Server(NamedTuple):
    url: str  # http://127.0.0.1:PORT
    token: str
    root_dir: Path  # where its notebooks are


@pytest.fixture
def jupyterlab() -> Iterator[Server]:
    """A JupyterLab server on a free local port, with the test's private Jupyter folders."""
    missing = _missing()
    if missing:
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="juliapool-e2e-"))
    notebooks = root / "notebooks"
    notebooks.mkdir()
    port, token = free_port(), uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebooks}"],
        env=server_env(root), stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "wb"),
        stdin=subprocess.DEVNULL)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        yield Server(f"http://127.0.0.1:{port}", token, notebooks)
    finally:
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down cleanly
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log = (root / "server.log").read_text(errors="replace")
        shutil.rmtree(root, ignore_errors=True)
        assert wait_no_tagged_processes() == [], "processes left behind; server log:\n" + log[-3000:]


def wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyterlab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"jupyterlab did not answer {url} within {timeout}s")


def test_jupyterlab_runs_a_julia_cell(jupyterlab: Server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    write_notebook(jupyterlab.root_dir / "e2e.ipynb")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            # ?reset: no workspace of an earlier run restores other tabs.
            page.goto(f"{jupyterlab.url}/lab/tree/e2e.ipynb?reset&token={jupyterlab.token}",
                      wait_until="domcontentloaded")
            # The execution indicator says idle before the kernel has started (DESIGN.md 7): wait for
            # the status bar's "DISPLAY NAME | Idle" instead, or Shift+Enter is silently dropped.
            status = page.locator('#jp-main-statusbar .jp-StatusBar-TextItem[title^="Change kernel"]')
            status.filter(has_text=f"{DISPLAY_NAME} | Idle").wait_for(timeout=90_000)
            cell = page.locator(".jp-Notebook .jp-Cell").first
            cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            output = cell.locator(".jp-OutputArea-output")
            output.filter(has_text="42").wait_for(timeout=60_000)
            text = cell.locator(".jp-OutputArea").inner_text()
            # Shift+Enter moved to the second cell: its HTML result is rendered as HTML.
            page.keyboard.press("Shift+Enter")
            second = page.locator(".jp-Notebook .jp-Cell").nth(1)
            second.locator(".jp-OutputArea-output b", has_text="rich").wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "jupyterlab.png"))
        finally:
            browser.close()
    assert "hello from Julia" in text and "42" in text, text
