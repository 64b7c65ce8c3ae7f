"""What the kernel tests share: a private Jupyter environment and a leak check.

`jupyter_env()` installs the juliapool kernelspec (twice: interrupt_mode "signal" and "message") into a
temporary prefix and points JUPYTER_PATH, JUPYTER_DATA_DIR, JUPYTER_RUNTIME_DIR, JUPYTER_CONFIG_DIR and
IPYTHONDIR at temporary folders, so tests never read or write the real home.

Every kernel started from these kernelspecs gets TAG_VAR (it is in the kernelspec's env, so whatever
client starts the kernel: jupyter_client, nbclient, a JupyterLab server), and its Julia workers inherit
it: `tagged_pids()` finds them through /proc, whatever process group they live in, so a test can prove
none was left behind. The tag is not put into this process's environment, so pools that other tests
start are never mistaken for the kernels' workers.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

from juliapool.kernel.install import install

KERNEL_NAME = "juliapool-test"  # interrupt_mode "signal"
KERNEL_NAME_MSG = "juliapool-test-msg"  # interrupt_mode "message"
TAG_VAR = "JULIAPOOL_KERNEL_TEST_TAG"

_env: Optional[Dict[str, str]] = None
_tag = ""


def jupyter_env() -> Dict[str, str]:
    """Set up (once per test process) and return the private Jupyter environment variables."""
    global _env
    if _env is not None:
        return _env
    root = Path(tempfile.mkdtemp(prefix="juliapool-kernel-tests-"))
    atexit.register(shutil.rmtree, root, True)
    env = {
        "JUPYTER_PATH": str(root / "prefix" / "share" / "jupyter"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "IPYTHONDIR": str(root / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    os.environ.update(env)
    global _tag
    _tag = uuid.uuid4().hex
    for name, mode in ((KERNEL_NAME, "signal"), (KERNEL_NAME_MSG, "message")):
        install(prefix=str(root / "prefix"), name=name, display_name=f"Julia test ({mode})",
                interrupt_mode=mode, env={TAG_VAR: _tag})
    _env = env
    return env


def tagged_pids() -> List[int]:
    """Processes (other than this one) started with this test run's tag: kernels and workers."""
    jupyter_env()
    tag = f"{TAG_VAR}={_tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if tag in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue  # gone, or not ours to read
    return found


def julia_pids(pids: List[int]) -> List[int]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"worker.jl" in f.read():
                    out.append(pid)
        except OSError:
            continue
    return out


def wait_no_tagged_processes(timeout: float = 10.0) -> List[int]:
    """Wait until every tagged process has exited; return the ones still there (none is good)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in tagged_pids() if _alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False
