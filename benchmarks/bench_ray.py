"""RayJuliaPool on a local Ray, measured in one run: CPU-bound throughput with 1 and 2 actors, and
the time Ray adds to each call compared with a local JuliaProcessPool.

    python benchmarks/bench_ray.py [--calls 100] [--rounds 3] [-n 200] [--trivial 500] [--out FILE.json]

(a) throughput: the CPU-bound snippet of bench_pool.py (define and run fib(25) in a fresh module)
    through `RayJuliaPool.map` with 1 and 2 actors of one worker each (one CPU each, on
    `ray.init(num_cpus=2)`), and through a local JuliaProcessPool of 1 and 2 workers fed by as many
    threads; calls/s, median of the rounds.
(b) per-call overhead: `println(1)` one call after the other, through a local pool of one worker,
    through a RayJuliaPool of one actor with one worker, and a no-op method of a plain Ray actor
    (what Ray itself costs per round trip); medians, and Ray's median minus the local one.
(c) ceiling: `println(1)` through `RayJuliaPool.map` with 2 actors, 3 rounds of `--trivial` calls:
    calls/s when Ray's own cost, not Julia's, is what limits one driver.

Needs `pip install 'juliapool[ray]'`. Nothing is asserted; the machine's load is recorded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import ray

from bench_pool import CPU_SNIPPET, RESULTS, environment, fmt, summarize, time_each, write_json
from juliapool import JuliaProcessPool
from juliapool.ray import RayJuliaPool

CPU_OUTPUT = "75025\n"


def _rounds(run: Callable[[List[str]], List[Any]], calls: int, rounds: int) -> List[float]:
    """calls/s of `rounds` runs of `calls` CPU-bound snippets; every result is checked."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        results = run([CPU_SNIPPET] * calls)
        wall = time.perf_counter() - start
        bad = [r for r in results if r.stdout != CPU_OUTPUT]
        if bad:
            raise RuntimeError(f"{len(bad)} CPU-bound calls failed, e.g. {bad[0]}")
        rates.append(calls / wall)
    return rates


def bench_throughput(calls: int, rounds: int) -> List[Dict[str, Any]]:
    rows = []
    for n in (1, 2):
        print(f"(a) {rounds} x {calls} x fib(25): RayJuliaPool of {n} actor(s), then a local pool of {n} ...",
              flush=True)
        with RayJuliaPool(actors=n, workers_per_actor=1, num_cpus=1) as rpool:
            rpool.map([CPU_SNIPPET] * (4 * n))  # every worker has run the snippet's paths once
            ray_rates = _rounds(rpool.map, calls, rounds)
        with JuliaProcessPool(size=n) as pool, ThreadPoolExecutor(n) as threads:
            def local_map(codes: List[str]) -> List[Any]:
                return list(threads.map(pool.execute, codes))
            local_map([CPU_SNIPPET] * (4 * n))
            local_rates = _rounds(local_map, calls, rounds)
        rows.append({"actors_or_workers": n, "calls": calls, "rounds": rounds,
                     "ray_calls_per_s": statistics.median(ray_rates), "ray_rounds": ray_rates,
                     "local_calls_per_s": statistics.median(local_rates), "local_rounds": local_rates})
    return rows


class _Echo:
    def noop(self) -> None:
        return None


def bench_overhead(n: int) -> Dict[str, Any]:
    codes = ["println(1)"] * n
    print(f"(b) {n} x println(1) one after the other: local pool, RayJuliaPool, a plain Ray actor ...", flush=True)
    with JuliaProcessPool(size=1) as pool:
        time_each(pool.execute, codes[:20])
        local = time_each(pool.execute, codes)
    with RayJuliaPool(actors=1, workers_per_actor=1, num_cpus=1) as rpool:
        time_each(rpool.execute, codes[:20])
        through_ray = time_each(rpool.execute, codes)
    echo = ray.remote(_Echo).options(num_cpus=0).remote()
    ray.get(echo.noop.remote())
    plain = time_each(lambda _: ray.get(echo.noop.remote()), codes)
    ray.kill(echo)
    loc, rj, pl = summarize(local), summarize(through_ray), summarize(plain)
    return {"calls": n, "local": loc, "ray": rj, "plain_ray_actor_call": pl,
            "ray_overhead_median_s": rj["median"] - loc["median"], "ratio_median": rj["median"] / loc["median"]}


def bench_ceiling(calls: int, rounds: int) -> Dict[str, Any]:
    print(f"(c) {rounds} x {calls} x println(1) through map, 2 actors ...", flush=True)
    rates = []
    with RayJuliaPool(actors=2, workers_per_actor=1, num_cpus=1) as rpool:
        rpool.map(["println(1)"] * 20)
        for _ in range(rounds):
            start = time.perf_counter()
            results = rpool.map(["println(1)"] * calls)
            rates.append(calls / (time.perf_counter() - start))
            if any(r.stdout != "1\n" for r in results):
                raise RuntimeError("a trivial call failed")
    return {"calls": calls, "rounds": rounds, "calls_per_s": statistics.median(rates), "rounds_calls_per_s": rates}


def report(throughput: List[Dict[str, Any]], overhead: Dict[str, Any], ceiling: Dict[str, Any]) -> None:
    print("\n(a) CPU-bound throughput (fib(25) in a fresh module per call), calls/s")
    print(f"    {'n':>3} {'Ray actors':>11} {'local workers':>14} {'Ray/local':>10}")
    for row in throughput:
        ratio = row["ray_calls_per_s"] / row["local_calls_per_s"]
        print(f"    {row['actors_or_workers']:>3} {row['ray_calls_per_s']:>11.1f} {row['local_calls_per_s']:>14.1f} "
              f"{ratio:>9.2f}x")
    one, two = throughput[0]["ray_calls_per_s"], throughput[-1]["ray_calls_per_s"]
    print(f"    2 actors / 1 actor: {two / one:.2f}x")
    loc, rj, pl = overhead["local"], overhead["ray"], overhead["plain_ray_actor_call"]
    print(f"\n(b) println(1), {overhead['calls']} calls one after the other")
    print(f"    {'path':<22} {'median':>10} {'p10':>10} {'p90':>10}")
    for name, s in (("local pool", loc), ("RayJuliaPool", rj), ("plain Ray actor no-op", pl)):
        print(f"    {name:<22} {fmt(s['median']):>10} {fmt(s['p10']):>10} {fmt(s['p90']):>10}")
    print(f"    Ray adds {fmt(overhead['ray_overhead_median_s'])} per call (medians; {overhead['ratio_median']:.1f}x the local call)")
    rounds = " ".join(f"{r:.0f}" for r in ceiling["rounds_calls_per_s"])
    print(f"\n(c) println(1) through map, 2 actors: {ceiling['calls_per_s']:.0f} calls/s (rounds: {rounds})")


def start_ray() -> None:
    options = dict(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    # The raylet gives its agents 15 s to start by default, which a loaded 2-core machine exceeds.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "90000")
    try:
        ray.init(**options)
    except Exception as e:  # Ray waits 30 s (fixed) for its raylet: a loaded machine can take longer
        if "timed out during startup" not in str(e):
            raise
        ray.shutdown()
        ray.init(**options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="CPU-bound calls per round in (a)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per configuration in (a)")
    parser.add_argument("-n", "--iterations", type=int, default=200, help="calls per path in (b)")
    parser.add_argument("--trivial", type=int, default=500, help="trivial calls per round in (c)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_ray.json")
    args = parser.parse_args(argv)
    env = environment()
    env["ray"] = ray.__version__
    print(f"juliapool {env['juliapool']} at {env['commit'][:10]}, Julia {env['julia']}, Ray {ray.__version__}, "
          f"{env['cpus']} CPUs, load {env['loadavg_at_start'][0]:.2f}")
    start_ray()
    try:
        throughput = bench_throughput(args.calls, args.rounds)
        overhead = bench_overhead(args.iterations)
        ceiling = bench_ceiling(args.trivial, args.rounds)
    finally:
        ray.shutdown()
    report(throughput, overhead, ceiling)
    write_json(args.out, {"environment": env, "throughput": throughput, "overhead": overhead, "ceiling": ceiling})
    return 0


if __name__ == "__main__":
    sys.exit(main())
