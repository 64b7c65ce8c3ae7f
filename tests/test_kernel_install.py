"""`juliapool-kernel-install`: where the kernelspec goes, what it holds, and that Jupyter lists it.

Every install goes to a temporary folder (JUPYTER_PATH / JUPYTER_DATA_DIR point there), never the
real home or the real Python prefix.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from juliapool.kernel import install as kernel_install

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def jupyter_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Path]:
    dirs = {"prefix": tmp_path / "prefix", "data": tmp_path / "data", "sys_prefix": tmp_path / "sys"}
    monkeypatch.setenv("JUPYTER_PATH", str(dirs["prefix"] / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setattr(sys, "prefix", str(dirs["sys_prefix"]))
    return dirs


def spec_of(folder: Path) -> dict:
    return json.loads((folder / "kernel.json").read_text())


def test_prefix_install_with_julia_options(jupyter_dirs: Dict[str, Path]) -> None:
    code = kernel_install.main(["--prefix", str(jupyter_dirs["prefix"]), "--name", "julia-proj",
                                "--display-name", "Julia (my project)", "--threads", "4",
                                "--project", "/srv/proj", "--julia-arg=--optimize=3",
                                "--julia", "/opt/julia/bin/julia", "--interrupt-mode", "message",
                                "--env", "JULIA_DEPOT_PATH=/srv/depot"])
    assert code == 0
    folder = jupyter_dirs["prefix"] / "share" / "jupyter" / "kernels" / "julia-proj"
    spec = spec_of(folder)
    assert spec["argv"][:5] == [sys.executable, "-m", "juliapool.kernel", "-f", "{connection_file}"]
    assert spec["argv"][5:] == ["--julia=/opt/julia/bin/julia", "--julia-arg=--optimize=3",
                                "--julia-arg=--threads=4", "--julia-arg=--project=/srv/proj"]
    assert spec["display_name"] == "Julia (my project)"
    assert spec["language"] == "julia"
    assert spec["interrupt_mode"] == "message"
    assert spec["env"] == {"JULIA_DEPOT_PATH": "/srv/depot"}
    for logo in ("logo-32x32.png", "logo-64x64.png"):
        assert (folder / logo).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_defaults_and_user_install(jupyter_dirs: Dict[str, Path]) -> None:
    assert kernel_install.main(["--user"]) == 0
    spec = spec_of(jupyter_dirs["data"] / "kernels" / "juliapool")
    assert spec["display_name"] == "Julia (juliapool)"
    assert spec["interrupt_mode"] == "signal"
    assert spec["argv"][5:] == []


def test_install_byte_compiles_juliapool(jupyter_dirs: Dict[str, Path]) -> None:
    """So that a kernel does not compile juliapool's sources at every start (editable installs,
    PYTHONDONTWRITEBYTECODE)."""
    import importlib.util

    import juliapool.result

    cached = Path(importlib.util.cache_from_source(juliapool.result.__file__))
    cached.unlink(missing_ok=True)
    assert kernel_install.main(["--prefix", str(jupyter_dirs["prefix"])]) == 0
    assert cached.is_file()


def test_sys_prefix_install(jupyter_dirs: Dict[str, Path]) -> None:
    assert kernel_install.main(["--sys-prefix", "--name", "jp"]) == 0
    spec = spec_of(jupyter_dirs["sys_prefix"] / "share" / "jupyter" / "kernels" / "jp")
    assert spec["display_name"] == "jp"  # another name, and no display name: the name shows


def test_jupyter_kernelspec_list_shows_it(jupyter_dirs: Dict[str, Path]) -> None:
    kernel_install.main(["--prefix", str(jupyter_dirs["prefix"])])
    out = subprocess.run([sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    specs = json.loads(out.stdout)["kernelspecs"]
    assert specs["juliapool"]["spec"]["language"] == "julia"
    assert specs["juliapool"]["resource_dir"].startswith(str(jupyter_dirs["prefix"]))


def test_where_options_exclude_each_other(jupyter_dirs: Dict[str, Path]) -> None:
    with pytest.raises(SystemExit):
        kernel_install.main(["--user", "--prefix", str(jupyter_dirs["prefix"])])


def test_the_kernelspec_names_the_provisioner_that_jupyter_finds(jupyter_dirs: Dict[str, Path]) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.provisioning import KernelProvisionerFactory

    for args in ([], ["--server"]):
        assert kernel_install.main(["--prefix", str(jupyter_dirs["prefix"]), "--name", "jp", *args]) == 0
        spec = KernelSpecManager().get_kernel_spec("jp")
        assert spec.metadata["kernel_provisioner"]["provisioner_name"] == "juliapool-provisioner"
        assert spec.metadata["debugger"] is False
        assert KernelProvisionerFactory.instance().is_provisioner_available(spec)  # the entry point


def _fake_kernel(folder: Path, name: str, body: str) -> None:
    """A kernelspec that runs `body` (Python) under the juliapool provisioner."""
    kdir = folder / "share" / "jupyter" / "kernels" / name
    kdir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-c", body, "{connection_file}"], "display_name": name, "language": "python",
            "metadata": {"kernel_provisioner": {"provisioner_name": "juliapool-provisioner"}}}
    (kdir / "kernel.json").write_text(json.dumps(spec))


# Binds its five ports 0.3 s after it starts, then waits for SIGTERM.
LATE_LISTENER = """
import json, signal, socket, sys, time
info = json.load(open(sys.argv[1]))
time.sleep(0.3)
socks = []
for p in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
    s = socket.socket(); s.bind((info["ip"], info[p])); s.listen(8); socks.append(s)
signal.sigwait([signal.SIGTERM])
"""


def test_starting_a_kernel_returns_once_it_listens_and_not_before(jupyter_dirs: Dict[str, Path]) -> None:
    from jupyter_client import KernelManager

    from juliapool.kernel.provisioner import JuliaPoolProvisioner

    _fake_kernel(jupyter_dirs["prefix"], "late", LATE_LISTENER)
    _fake_kernel(jupyter_dirs["prefix"], "dies", "import sys; sys.exit(3)")
    km = KernelManager(kernel_name="late")
    km.start_kernel()
    try:
        assert isinstance(km.provisioner, JuliaPoolProvisioner)
        for port in (km.shell_port, km.iopub_port, km.stdin_port, km.control_port, km.hb_port):
            socket.create_connection((km.ip, port), timeout=1).close()  # refused if start returned early
    finally:
        km.shutdown_kernel(now=True)
    km = KernelManager(kernel_name="dies")  # never listens: the wait ends with its process
    km.start_kernel()
    try:
        assert km.provisioner is not None and km.provisioner.process.wait(10) == 3
    finally:
        km.cleanup_resources()
