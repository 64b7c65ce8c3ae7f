"""The pool server against in-process pools and standalone kernels, measured in one run.

    python benchmarks/bench_server.py [--calls 500] [--rounds 5] [--notebooks 10] [--memory 6]
                                      [--ten-standalone] [--out FILE.json]   (default results/bench_server.json)

(a) per-call latency: `println(i)` through `JuliaProcessPool(size=1)` in this process and through
    `juliapool.connect()` (a worker lent by a server process), in alternating blocks; medians and
    their ratio (target: within 1.25x).
(b) kernel start to first result (`1 + 1`, sent at once, jupyter_client): a `--server` kernelspec
    with the server warm, the standalone juliapool kernelspec, and ipykernel; alternating rounds.
(c) --notebooks server kernels started at once, each to its first result (median and max); with
    --ten-standalone, the same number of standalone kernels too (slow: two Julia processes each).
(d) memory: the PSS (proportional set size, /proc/PID/smaps_rollup) of --memory notebooks: standalone
    kernels with their workers, against server kernels plus the server and all its workers.

Servers and kernelspecs live in temporary folders; nothing is installed into the real home. Figures
on a loaded machine are noisy: each comparison is measured in one run, so its ratio is what counts.
Writes results/bench_server.json and, with matplotlib, results/server.png.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from bench_kernel import PYTHON_KERNEL, private_jupyter_env, start, start_to_first_result, stop
from bench_pool import RESULTS, environment, write_json

import juliapool
from juliapool.kernel.install import install

SERVER_KERNEL, STANDALONE_KERNEL = "juliapool-bench-server", "juliapool-bench"
BLOCK = 50


def start_server(path: Path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "juliapool.cli", "serve", "--socket", str(path), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            juliapool.connect(path).close()
            return proc
        except juliapool.ServerUnavailableError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.1)


def wait_idle(path: Path, n: int, timeout: float = 600) -> None:
    """Until the server has `n` warm idle workers (its spares are warmed up in the background)."""
    deadline = time.monotonic() + timeout
    with juliapool.connect(path) as c:
        while c.get_stats()["idle"] < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not get {n} idle workers")
            time.sleep(0.5)


def stop_server(path: Path, proc: subprocess.Popen) -> None:
    try:
        juliapool.connect(path).stop_server()
    except juliapool.ServerUnavailableError:
        pass
    proc.wait(60)


# ---- (a) per call ------------------------------------------------------------------------------

def per_call(path: Path, calls: int) -> Dict[str, List[float]]:
    pool, client = juliapool.JuliaProcessPool(size=1), juliapool.connect(path)
    times: Dict[str, List[float]] = {"in_process": [], "server": []}
    try:
        for run in (pool.execute, client.execute):
            run("println(0)")  # warm
        for start_at in range(0, calls, BLOCK):
            for name, run in (("in_process", pool.execute), ("server", client.execute)):
                for i in range(start_at, min(calls, start_at + BLOCK)):
                    t = time.perf_counter()
                    run(f"println({i})")
                    times[name].append(time.perf_counter() - t)
    finally:
        client.close()
        pool.shutdown()
    return times


# ---- (b) and (c) kernel starts -----------------------------------------------------------------

def kernel_starts(rounds: int) -> Dict[str, List[Dict[str, float]]]:
    out: Dict[str, List[Dict[str, float]]] = {SERVER_KERNEL: [], STANDALONE_KERNEL: [], PYTHON_KERNEL: []}
    for _ in range(rounds):
        for name in out:
            out[name].append(start_to_first_result(name))
            time.sleep(1.0)  # a standalone kernel's workers are reaped; the server's worker goes back
    return out


def many_at_once(name: str, n: int) -> List[float]:
    """`n` kernels started at the same moment, each timed from then to its first result."""
    times: List[float] = [float("nan")] * n
    t0 = time.perf_counter()

    def one(i: int) -> None:
        km, kc = start(name)
        msg_id = kc.execute("1 + 1")
        while True:
            msg = kc.get_shell_msg(timeout=300)
            if msg["parent_header"].get("msg_id") == msg_id:
                times[i] = time.perf_counter() - t0
                break
        kernels.append((km, kc))

    kernels: List[Tuple[Any, Any]] = []
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for km, kc in kernels:
        stop(km, kc)
    return times


# ---- (d) memory --------------------------------------------------------------------------------

def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        return 0


def tree(pid: int) -> List[int]:
    """`pid` and its descendants."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def julia_in(pids: List[int]) -> List[int]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"worker.jl" in f.read():
                    out.append(pid)
        except OSError:
            continue
    return out


def wait_for(predicate, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the kernels' workers did not all start")
        time.sleep(0.5)


def memory(name: str, n: int, extra_roots: List[int]) -> int:
    """Total PSS (kB) of `n` started notebooks of kernelspec `name` (each has run a cell), their
    process trees, and the trees of `extra_roots` (the server)."""
    kernels = [start(name) for _ in range(n)]
    try:
        for km, kc in kernels:
            kc.wait_for_ready(timeout=300)
            kc.execute_interactive("x = 1 + 1", timeout=300)
        if name == STANDALONE_KERNEL:  # each keeps a spare, started after the first cell: wait for them
            wait_for(lambda: len(julia_in([p for km, _ in kernels for p in tree(km.provisioner.process.pid)])) >= 2 * n)
        time.sleep(10)  # let the last starts and warm-ups settle
        pids = {p for km, _ in kernels for p in tree(km.provisioner.process.pid)}
        pids |= {p for root in extra_roots for p in tree(root)}
        return sum(pss_kb(p) for p in pids)
    finally:
        for km, kc in kernels:
            stop(km, kc)


# ---- report ------------------------------------------------------------------------------------

def med(xs: List[float]) -> float:
    return statistics.median([x for x in xs if x == x])


def report(r: Dict[str, Any]) -> Dict[str, Any]:
    ms = lambda s: f"{s * 1e3:9.2f} ms"  # noqa: E731
    s: Dict[str, Any] = {}
    a, b = med(r["per_call"]["in_process"]), med(r["per_call"]["server"])
    s["per_call"] = {"in_process_s": a, "server_s": b, "ratio": b / a}
    print(f"per call println(i), median   in-process {ms(a)}   server {ms(b)}   ratio {b / a:.2f} (target <= 1.25)")
    starts = {k: med([x["first_result"] for x in v]) for k, v in r["starts"].items()}
    s["first_result_s"] = starts
    py = starts[PYTHON_KERNEL]
    for k, label in ((SERVER_KERNEL, "server kernel"), (STANDALONE_KERNEL, "standalone kernel"), (PYTHON_KERNEL, "ipykernel")):
        print(f"start to first result, {label:18} {ms(starts[k])}   {starts[k] / py:.2f}x ipykernel's")
    for k, times in r["at_once"].items():
        s.setdefault("at_once", {})[k] = {"median_s": med(times), "max_s": max(times)}
        print(f"{len(times)} notebooks at once, {k:22} median {ms(med(times))}   max {ms(max(times))}")
    if "memory_kb" in r:
        m = r["memory_kb"]
        s["memory_kb"] = m
        print(f"PSS of {r['memory_n']} notebooks: server {m['server'] / 1024:.0f} MB, standalone "
              f"{m['standalone'] / 1024:.0f} MB, ratio {m['server'] / m['standalone']:.2f} (target <= 0.6)")
    return s


def plot(summary: Dict[str, Any], out: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    pc = summary["per_call"]
    axes[0].bar(["in-process pool", "pool server"], [pc["in_process_s"] * 1e3, pc["server_s"] * 1e3],
                color=["#b0b0b0", "#9558b2"])
    axes[0].set_title(f"per call, println(i) (ratio {pc['ratio']:.2f})")
    axes[0].set_ylabel("ms (median)")
    fr = summary["first_result_s"]
    axes[1].bar(["server kernel", "standalone", "ipykernel"],
                [fr[SERVER_KERNEL], fr[STANDALONE_KERNEL], fr[PYTHON_KERNEL]], color=["#9558b2", "#389826", "#b0b0b0"])
    axes[1].set_title("kernel start to first result")
    axes[1].set_ylabel("s (median)")
    if "memory_kb" in summary:
        m = summary["memory_kb"]
        axes[2].bar(["server", "standalone"], [m["server"] / 1024, m["standalone"] / 1024], color=["#9558b2", "#389826"])
        axes[2].set_title("PSS of the notebooks (all processes)")
        axes[2].set_ylabel("MB")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--notebooks", type=int, default=10)
    p.add_argument("--memory", type=int, default=6, help="notebooks for the memory figure (0: skip)")
    p.add_argument("--ten-standalone", action="store_true", help="also start --notebooks standalone kernels at once")
    p.add_argument("--out", type=Path, default=RESULTS / "bench_server.json")
    opts = p.parse_args()
    env = environment()
    raw: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="juliapool-bench-server-") as root:
        private_jupyter_env(root)
        install(prefix=root, name=SERVER_KERNEL, display_name="Julia (juliapool server bench)", server=True)
        path = Path(root) / "srv" / "pool.sock"
        os.environ["JULIAPOOL_SOCKET"] = str(path)
        proc = start_server(path, "--workers", str(opts.notebooks), "--max-workers", str(opts.notebooks + 2))
        try:
            wait_idle(path, 2)
            raw["per_call"] = per_call(path, opts.calls)
            wait_idle(path, 2)
            raw["starts"] = kernel_starts(opts.rounds)
            wait_idle(path, opts.notebooks)
            raw["at_once"] = {"server": many_at_once(SERVER_KERNEL, opts.notebooks)}
        finally:
            stop_server(path, proc)
        if opts.ten_standalone:
            raw["at_once"]["standalone"] = many_at_once(STANDALONE_KERNEL, opts.notebooks)
        if opts.memory:
            proc = start_server(path, "--workers", "1", "--max-workers", str(opts.memory + 2))
            try:
                wait_idle(path, 1)
                server_kb = memory(SERVER_KERNEL, opts.memory, [proc.pid])
            finally:
                stop_server(path, proc)
            raw["memory_kb"] = {"server": server_kb, "standalone": memory(STANDALONE_KERNEL, opts.memory, [])}
            raw["memory_n"] = opts.memory
    print(f"juliapool at {env['commit'][:10]}, Julia {env['julia']}, {env['cpus']} cores, "
          f"load {env['loadavg_at_start'][0]:.2f}, system image: {env['sysimage'] or 'none'}")
    summary = report(raw)
    write_json(opts.out, {"environment": env, "summary": summary, "raw": raw})
    plot(summary, opts.out.with_name("server.png"))


if __name__ == "__main__":
    main()
