"""The kernelspec's kernel provisioner: jupyter_client's local one, except that starting a kernel
returns once the kernel listens on its ports.

Why: jupyter_client connects its ZeroMQ sockets the moment the kernel process exists. A connection
attempt that finds no listener is retried by ZeroMQ after 100 to 200 ms (its reconnect interval,
randomised), so a kernel that is ready 60 ms after its start, as a kernel forked by the pool
server's zygote is, still gets its first request 130 to 220 ms after the start. Waiting here until
every port accepts a connection (a TCP probe, closed at once; ZeroMQ drops it) makes the first
attempt the one that connects.

Jupyter finds it by name through the `jupyter_client.kernel_provisioners` entry point
(pyproject.toml); the kernelspec names it in its metadata (juliapool/kernel/install.py). If the
kernel never listens (it failed to start), the wait ends when its process does, or after
READY_TIMEOUT, and jupyter_client carries on as it would have.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any, List, Tuple

from jupyter_client.provisioning import LocalProvisioner

NAME = "juliapool-provisioner"
PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
READY_TIMEOUT = 30.0  # seconds; a standalone kernel with no system image listens after about 1 s
PROBE_EVERY = 0.002  # seconds between rounds of probes


class JuliaPoolProvisioner(LocalProvisioner):  # type: ignore[misc]
    """LocalProvisioner whose launch waits until the kernel listens on all of its ports."""

    async def launch_kernel(self, cmd: List[str], **kwargs: Any) -> Any:
        info = await super().launch_kernel(cmd, **kwargs)
        await self._wait_listening(info)
        return info

    async def _wait_listening(self, info: Any) -> None:
        waiting = _endpoints(info)
        deadline = time.monotonic() + READY_TIMEOUT
        while waiting and time.monotonic() < deadline and self.process is not None and self.process.poll() is None:
            waiting = [e for e in waiting if not _listening(*e)]
            if waiting:
                await asyncio.sleep(PROBE_EVERY)
        if waiting:
            self.log.debug("kernel %s: not listening on %s; leaving it to jupyter_client", self.kernel_id, waiting)


def _endpoints(info: Any) -> List[Tuple[str, str, int]]:
    transport, ip = str(info.get("transport", "tcp")), str(info.get("ip", "127.0.0.1"))
    return [(transport, ip, int(info[p])) for p in PORTS if info.get(p)]


def _listening(transport: str, ip: str, port: int) -> bool:
    if transport == "ipc":  # ZeroMQ makes the socket file when it binds
        return os.path.exists(f"{ip}-{port}")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}.get(ip, ip)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect((host, port))
            return True
        except OSError:
            return False
