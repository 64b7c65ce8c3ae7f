"""The juliapool Jupyter kernel against ipykernel's Python kernel, measured in one run, same client.

    python benchmarks/bench_kernel.py [--rounds 5] [--cells 200] [--out FILE.json]   (default results/bench_kernel.json)

Both kernels are started and driven by jupyter_client (KernelManager + BlockingKernelClient), as
JupyterLab's server and nbclient do:

(a) start to first result: from `start_kernel()` to the execute_result of `1 + 1` sent at once (the
    client does not wait for kernel_info first). Also the time to the first kernel_info reply.
(b) per-cell round trip: `1 + 1` on a started kernel, from execute_request to the reply and the idle
    status (what a front end waits for), median of --cells.
(c) juliapool only: a cell after a worker crash: `exit()` in a cell, then the time to the result of
    the next cell (served by the warm spare). And interrupt: `sleep(30)`, interrupt, time to reply.

DESIGN.md section 6 targets are reported as met or not, never asserted: start to first result no
slower than ipykernel's; the cell after a crash within 1 s; an interrupt back to idle within 1 s.
The kernelspec is installed into a temporary folder (JUPYTER_PATH), never the real home. The
kernel uses the system image `juliapool sysimage` built, if any (JULIAPOOL_SYSIMAGE=off: none).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from bench_pool import RESULTS, environment, write_json

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

JULIA_KERNEL = "juliapool-bench"
PYTHON_KERNEL = "python3"
CELL = "1 + 1"


def private_jupyter_env(root: str) -> None:
    """Install the juliapool kernelspec under `root` and point Jupyter's folders there."""
    os.environ.update({
        "JUPYTER_PATH": os.path.join(root, "share", "jupyter"),
        "JUPYTER_DATA_DIR": os.path.join(root, "data"),
        "JUPYTER_RUNTIME_DIR": os.path.join(root, "runtime"),
        "JUPYTER_CONFIG_DIR": os.path.join(root, "config"),
        "IPYTHONDIR": os.path.join(root, "ipython"),
    })
    from juliapool.kernel.install import install

    install(prefix=root, name=JULIA_KERNEL, display_name="Julia (juliapool bench)")


def start(name: str) -> Tuple[KernelManager, BlockingKernelClient]:
    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.blocking_client()
    kc.start_channels()
    return km, kc


def stop(km: KernelManager, kc: BlockingKernelClient) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def wait_reply(kc: BlockingKernelClient, msg_id: str, timeout: float = 120) -> Dict[str, Any]:
    """Wait for the reply and the idle status of `msg_id`; returns the reply content."""
    reply, idle = None, False
    deadline = time.monotonic() + timeout
    while reply is None or not idle:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no reply to {msg_id} within {timeout}s")
        if reply is None:
            msg = kc.get_shell_msg(timeout=left)
            if msg["parent_header"].get("msg_id") == msg_id:
                reply = msg["content"]
            continue
        msg = kc.get_iopub_msg(timeout=left)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            idle = True
    return reply


def start_to_first_result(name: str) -> Dict[str, float]:
    t0 = time.perf_counter()
    km, kc = start(name)
    info_id = kc.kernel_info()
    exec_id = kc.execute(CELL)
    info_at = result_at = None
    while result_at is None:
        msg = kc.get_shell_msg(timeout=120)
        if msg["parent_header"].get("msg_id") == info_id:
            info_at = time.perf_counter() - t0
        elif msg["parent_header"].get("msg_id") == exec_id:
            assert msg["content"]["status"] == "ok", msg["content"]
            result_at = time.perf_counter() - t0
    stop(km, kc)
    return {"kernel_info": info_at if info_at is not None else float("nan"), "first_result": result_at}


def per_cell(kc: BlockingKernelClient, cells: int, code: str = CELL) -> List[float]:
    wait_reply(kc, kc.execute(code))  # warm
    times = []
    for _ in range(cells):
        t = time.perf_counter()
        assert wait_reply(kc, kc.execute(code))["status"] == "ok"
        times.append(time.perf_counter() - t)
    return times


def after_crash(kc: BlockingKernelClient, rounds: int) -> List[float]:
    times = []
    for _ in range(rounds):
        time.sleep(15)  # let the pool start and warm up a new spare after the previous crash
        assert wait_reply(kc, kc.execute("exit(1)"))["status"] == "error"
        t = time.perf_counter()
        assert wait_reply(kc, kc.execute(CELL))["status"] == "ok"
        times.append(time.perf_counter() - t)
    return times


def interrupt_latency(km: KernelManager, kc: BlockingKernelClient, rounds: int) -> List[float]:
    times = []
    for _ in range(rounds):
        msg_id = kc.execute("sleep(30)")
        time.sleep(1.0)
        t = time.perf_counter()
        km.interrupt_kernel()
        assert wait_reply(kc, msg_id)["ename"] == "InterruptException"
        times.append(time.perf_counter() - t)
    return times


def median(xs: List[float]) -> float:
    return statistics.median(xs)


def measure(rounds: int, cells: int) -> Dict[str, Any]:
    results: Dict[str, Any] = {"start": {JULIA_KERNEL: [], PYTHON_KERNEL: []}}
    for _ in range(rounds):  # alternate, so both see the same machine load
        for name in (PYTHON_KERNEL, JULIA_KERNEL):
            results["start"][name].append(start_to_first_result(name))
    for name in (PYTHON_KERNEL, JULIA_KERNEL):
        km, kc = start(name)
        kc.wait_for_ready(timeout=120)
        results.setdefault("cell", {})[name] = per_cell(kc, cells)
        if name == JULIA_KERNEL:
            results["interrupt"] = interrupt_latency(km, kc, rounds)
            results["after_crash"] = after_crash(kc, rounds)
        stop(km, kc)
    return results


def report(r: Dict[str, Any]) -> Dict[str, Any]:
    ms = lambda s: f"{s * 1e3:8.1f} ms"  # noqa: E731
    summary: Dict[str, Any] = {}
    print(f"{'':34}{'juliapool':>12}{'ipykernel':>12}{'ratio':>8}")
    for key, label in (("kernel_info", "start -> kernel_info reply"), ("first_result", "start -> first cell result")):
        j = median([x[key] for x in r["start"][JULIA_KERNEL]])
        p = median([x[key] for x in r["start"][PYTHON_KERNEL]])
        summary[key] = {"juliapool_s": j, "ipykernel_s": p}
        print(f"{label:34}{ms(j):>12}{ms(p):>12}{j / p:8.2f}")
    j, p = median(r["cell"][JULIA_KERNEL]), median(r["cell"][PYTHON_KERNEL])
    summary["cell"] = {"juliapool_s": j, "ipykernel_s": p}
    print(f"{'per-cell round trip (median)':34}{ms(j):>12}{ms(p):>12}{j / p:8.2f}")
    crash, intr = median(r["after_crash"]), median(r["interrupt"])
    summary["after_crash_s"], summary["interrupt_s"] = crash, intr
    print(f"{'cell after a worker crash':34}{ms(crash):>12}   (max {max(r['after_crash']) * 1e3:.1f} ms)")
    print(f"{'interrupt sleep() -> reply':34}{ms(intr):>12}   (max {max(r['interrupt']) * 1e3:.1f} ms)")
    targets = {
        "start to first result <= ipykernel": summary["first_result"]["juliapool_s"] <= summary["first_result"]["ipykernel_s"],
        "cell after a crash < 1 s": max(r["after_crash"]) < 1.0,
        "interrupt < 1 s": max(r["interrupt"]) < 1.0,
    }
    for what, met in targets.items():
        print(f"target {what}: {'met' if met else 'NOT met'}")
    summary["targets"] = targets
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cells", type=int, default=200)
    p.add_argument("--out", type=Path, default=RESULTS / "bench_kernel.json", help="JSON results (%(default)s)")
    opts = p.parse_args()
    env = environment()
    with tempfile.TemporaryDirectory(prefix="juliapool-bench-kernel-") as root:
        private_jupyter_env(root)
        raw = measure(opts.rounds, opts.cells)
    print(f"juliapool at {env['commit'][:10]}, Julia {env['julia']}, Python {env['python']}, {env['cpus']} cores, "
          f"load {env['loadavg_at_start'][0]:.2f}, {opts.rounds} rounds, {opts.cells} cells, "
          f"system image: {env['sysimage'] or 'none'}")
    summary = report(raw)
    write_json(opts.out, {"environment": env, "summary": summary, "raw": raw})


if __name__ == "__main__":
    main()
