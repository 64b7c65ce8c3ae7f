"""Pool vs spawn, measured in one run: per-call latency, throughput by worker count, output volume.

    python benchmarks/bench_pool.py [-n 100] [--calls 200] [--rounds 3] [--mb 100] [--out FILE.json]

(a) the seed's benchmark: `println(i)` 100 times through `JuliaExecutor()` (a new julia per call)
    and through `JuliaExecutor.enable_process_pool(size=4)`; per-call median, p10, p90 and the ratio.
(b) throughput: a CPU-bound snippet (define and run fib(25) in a fresh module, as every plain call
    does) from 8 client threads on pools of 1, 2 and 4 workers, in calls per second (median of 3 rounds).
(c) output: one call printing 100 MB (10^6-byte lines), in MB/s (MB = 10^6 bytes).
(d) the seed's own pool is not part of this repository, so it is not measured.

DESIGN.md section 6 targets are reported as met or not, never asserted: pool median under 0.5 ms
and at least 300x faster than spawn in the same run; 100 MB from one call at 100 MB/s or more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

from juliapool import JuliaExecutor, JuliaProcessPool, __version__
from juliapool.cli import format_duration as fmt
from juliapool.paths import find_sysimage
from juliapool.discovery import find_julia, julia_version

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CPU_SNIPPET = "fib(n) = n < 2 ? n : fib(n - 1) + fib(n - 2)\nprintln(fib(25))"
OUTPUT_SNIPPET = 'let line = "x"^999_999 * "\\n"\n    for _ in 1:{n}\n        print(line)\n    end\nend'
TARGET_MEDIAN_S = 0.5e-3
TARGET_RATIO = 300
TARGET_MB_S = 100


# ---- helpers shared with bench_flags.py ---------------------------------------------------------

def summarize(seconds: Sequence[float]) -> Dict[str, float]:
    """median, p10, p90 (nearest rank), mean, min and total of a list of durations, in seconds."""
    s = sorted(seconds)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, round(q * (len(s) - 1)))]

    return {"n": len(s), "median": statistics.median(s), "p10": rank(0.1), "p90": rank(0.9),
            "mean": statistics.fmean(s), "min": s[0], "total": sum(s)}


def time_each(call: Callable[[str], object], codes: Sequence[str]) -> List[float]:
    times = []
    for code in codes:
        start = time.perf_counter()
        call(code)
        times.append(time.perf_counter() - start)
    return times


def environment() -> Dict[str, Any]:
    """What the figures were measured on: commit (and whether library files had local changes), machine."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    julia = find_julia()
    return {
        "commit": git("rev-parse", "HEAD"), "commit_subject": git("log", "-1", "--format=%s"),
        "library_changes_not_committed": git("status", "--porcelain", "--", "juliapool", "julia").splitlines(),
        "juliapool": __version__, "julia": julia_version(julia), "julia_path": julia,
        "sysimage": find_sysimage(julia),
        "python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_at_start": list(os.getloadavg()),
    }


def write_json(path: Path, data: Dict[str, Any]) -> None:
    data["environment"]["loadavg_at_end"] = list(os.getloadavg())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


# ---- (a) the seed benchmark ---------------------------------------------------------------------

def bench_seed(n: int, size: int) -> Dict[str, Any]:
    codes = [f"println({i})" for i in range(n)]
    print(f"(a) seed benchmark: {n} x println(i), spawn vs pool(size={size}) ...", flush=True)
    spawn = time_each(JuliaExecutor().run, codes)
    start = time.perf_counter()
    if not JuliaExecutor.enable_process_pool(size=size):
        raise SystemExit("the process pool could not start")
    started = time.perf_counter() - start
    try:
        pool = time_each(JuliaExecutor(use_process_pool=True).run, codes)
    finally:
        JuliaExecutor.shutdown_pool()
    s, p = summarize(spawn), summarize(pool)
    ratio = s["median"] / p["median"]
    return {"iterations": n, "pool_size": size, "pool_start_s": started, "spawn": s, "pool": p,
            "speedup_median": ratio, "speedup_total": s["total"] / p["total"],
            "target_pool_median_met": p["median"] < TARGET_MEDIAN_S, "target_speedup_met": ratio >= TARGET_RATIO}


# ---- (b) throughput by worker count -------------------------------------------------------------

def _hammer(pool: JuliaProcessPool, calls: int, threads: int) -> float:
    """`calls` CPU-bound calls spread over `threads` client threads; returns the wall time."""
    todo = list(range(calls))
    lock = threading.Lock()
    failures: List[str] = []

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            result = pool.execute(CPU_SNIPPET)
            if result.stdout != "75025\n":
                failures.append(result.stderr[:200])

    workers = [threading.Thread(target=client) for _ in range(threads)]
    start = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} CPU-bound calls failed, e.g. {failures[0]}")
    return time.perf_counter() - start


def bench_throughput(sizes: Sequence[int], calls: int, threads: int, rounds: int) -> List[Dict[str, Any]]:
    """calls/s per pool size: the median of `rounds` rounds of `calls` calls each."""
    rows = []
    for size in sizes:
        print(f"(b) throughput: {rounds} x {calls} calls of fib(25) from {threads} threads, {size} worker(s) ...",
              flush=True)
        with JuliaProcessPool(size=size) as pool:
            _hammer(pool, 4 * size, size)  # every worker has run the snippet's code paths once
            walls = [_hammer(pool, calls, threads) for _ in range(rounds)]
        rates = [calls / w for w in walls]
        rows.append({"workers": size, "threads": threads, "calls": calls, "rounds": rounds,
                     "calls_per_s": statistics.median(rates), "calls_per_s_rounds": rates})
    return rows


# ---- (c) output volume --------------------------------------------------------------------------

def bench_output(megabytes: int, repeats: int) -> Dict[str, Any]:
    code = OUTPUT_SNIPPET.format(n=megabytes)
    expected = megabytes * 10**6
    print(f"(c) output: {megabytes} MB from one call, {repeats} times ...", flush=True)
    with JuliaProcessPool(size=1, timeout=300) as pool:
        pool.execute(OUTPUT_SNIPPET.format(n=1))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = pool.execute(code)
            times.append(time.perf_counter() - start)
            if len(result.stdout) != expected or result.exit_code != 0:
                raise RuntimeError(f"got {len(result.stdout)} bytes (exit {result.exit_code}), wanted {expected}")
    s = summarize(times)
    return {"megabytes": megabytes, "seconds": s, "mb_per_s_median": megabytes / s["median"],
            "mb_per_s_best": megabytes / s["min"], "target_met": megabytes / s["median"] >= TARGET_MB_S}


# ---- report -------------------------------------------------------------------------------------

def report(seed: Dict[str, Any], throughput: List[Dict[str, Any]], output: Dict[str, Any]) -> None:
    sp, po = seed["spawn"], seed["pool"]
    print(f"\n(a) println(i), {seed['iterations']} calls each (pool of {seed['pool_size']} started in "
          f"{seed['pool_start_s']:.1f} s)")
    print(f"    {'mode':<6} {'median':>10} {'p10':>10} {'p90':>10} {'mean':>10}")
    for name, s in (("spawn", sp), ("pool", po)):
        print(f"    {name:<6} {fmt(s['median']):>10} {fmt(s['p10']):>10} {fmt(s['p90']):>10} {fmt(s['mean']):>10}")
    print(f"    speedup (medians): {seed['speedup_median']:.0f}x   (totals): {seed['speedup_total']:.0f}x")
    print(f"    target pool median < 0.5 ms: {'met' if seed['target_pool_median_met'] else 'NOT met'}; "
          f">= {TARGET_RATIO}x: {'met' if seed['target_speedup_met'] else 'NOT met'}")
    print("\n(b) CPU-bound throughput (fib(25) in a fresh module per call, 8 client threads)")
    print(f"    {'workers':>7} {'calls/s':>9}   rounds")
    for row in throughput:
        rounds = " ".join(f"{r:.0f}" for r in row["calls_per_s_rounds"])
        print(f"    {row['workers']:>7} {row['calls_per_s']:>9.1f}   {rounds}")
    print(f"\n(c) {output['megabytes']} MB from one call: median {fmt(output['seconds']['median'])} = "
          f"{output['mb_per_s_median']:.0f} MB/s (best {output['mb_per_s_best']:.0f} MB/s); "
          f"target >= {TARGET_MB_S} MB/s: {'met' if output['target_met'] else 'NOT met'}")
    print("\n(d) the seed's own pool is not in this repository: not measured")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--iterations", type=int, default=100, help="calls per mode in (a)")
    parser.add_argument("--size", type=int, default=4, help="pool size in (a)")
    parser.add_argument("--calls", type=int, default=200, help="CPU-bound calls per round in (b)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per worker count in (b)")
    parser.add_argument("--threads", type=int, default=8, help="client threads in (b)")
    parser.add_argument("--mb", type=int, default=100, help="megabytes printed in (c)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of (c)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_pool.json")
    args = parser.parse_args(argv)
    env = environment()
    print(f"juliapool {env['juliapool']} at {env['commit'][:10]}, Julia {env['julia']}, {env['cpus']} CPUs, "
          f"load {env['loadavg_at_start'][0]:.2f}")
    seed = bench_seed(args.iterations, args.size)
    throughput = bench_throughput([1, 2, 4], args.calls, args.threads, args.rounds)
    output = bench_output(args.mb, args.repeats)
    report(seed, throughput, output)
    write_json(args.out, {"environment": env, "seed": seed, "throughput": throughput, "output": output})
    return 0


if __name__ == "__main__":
    sys.exit(main())
