"""Agent-style load: many short model-written snippets (define a function, test it with @test, print)
through `await pool.execute_async` at a concurrency of 64, next to spawn mode in the same run.

    python benchmarks/bench_agent.py [--snippets 400] [--concurrency 64] [--workers 2]
                                     [--spawn-snippets 40] [--out FILE.json]

Reports throughput (snippets/s), p50 and p99 latency per snippet (from submission to result, so it
includes waiting for a free worker), and how many results were right. Spawn mode runs
`JuliaExecutor().run` from as many threads as there are cores (more only queue for the CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from juliapool import CodeExecResult, JuliaExecutor, JuliaProcessPool, __version__

RESULTS = Path(__file__).resolve().parent / "results"

TEMPLATES = [
    ("using Test\nfunction f(x)\n    return x^2 + {k}\nend\n@test f(3) == {a}\nprintln(f({k}))", "{b}"),
    ("using Test\nsafe_div(a, b) = b == 0 ? nothing : a / b\n@test safe_div({k}, 2) == {k} / 2\n"
     "@test safe_div(1, 0) === nothing\nprintln(\"ok \", {k})", "ok {k}"),
    ("using Test\nfunction count_vowels(s)\n    count(c -> c in \"aeiou\", s)\nend\n"
     "@test count_vowels(\"education\") == 5\nprintln(count_vowels(repeat(\"ab\", {k})))", "{k}"),
    ("using Test\nfib(n) = n < 2 ? n : fib(n - 1) + fib(n - 2)\n@test fib(10) == 55\nprintln(fib({m}))", "{fib}"),
]


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def snippets(n: int) -> List[Tuple[str, str]]:
    out = []
    for i in range(n):
        code, want = TEMPLATES[i % len(TEMPLATES)]
        k, m = i % 17 + 1, i % 15 + 5
        values = {"k": k, "a": 9 + k, "b": k * k + k, "m": m, "fib": fib(m)}
        out.append((code.format(**values), want.format(**values) + "\n"))
    return out


def summary(latencies: Sequence[float], wall: float, right: int) -> Dict[str, float]:
    s = sorted(latencies)
    return {"n": len(s), "right": right, "wall_s": wall, "per_s": len(s) / wall,
            "p50_ms": 1e3 * statistics.median(s), "p99_ms": 1e3 * s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]}


async def run_pool(pool: JuliaProcessPool, work: List[Tuple[str, str]], concurrency: int) -> Dict[str, float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: List[float] = []

    async def one(code: str, want: str) -> bool:
        async with gate:
            start = time.perf_counter()
            r = await pool.execute_async(code, timeout=60)
            latencies.append(time.perf_counter() - start)
            return r.exit_code == 0 and r.stdout == want

    start = time.perf_counter()
    right = sum(await asyncio.gather(*(one(c, w) for c, w in work)))
    return summary(latencies, time.perf_counter() - start, right)


def run_spawn(work: List[Tuple[str, str]], threads: int) -> Dict[str, float]:
    executor = JuliaExecutor(timeout=120)

    def one(item: Tuple[str, str]) -> Tuple[float, bool]:
        start = time.perf_counter()
        r: CodeExecResult = executor.run(item[0])
        return time.perf_counter() - start, r.exit_code == 0 and r.stdout == item[1]

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        done = list(ex.map(one, work))
    return summary([t for t, _ in done], time.perf_counter() - start, sum(ok for _, ok in done))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snippets", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--spawn-snippets", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_agent.json")
    args = parser.parse_args()
    with JuliaProcessPool(size=args.workers) as pool:
        asyncio.run(run_pool(pool, snippets(8), 8))  # every worker past its first compilations
        pooled = asyncio.run(run_pool(pool, snippets(args.snippets), args.concurrency))
    spawned = run_spawn(snippets(args.spawn_snippets), os.cpu_count() or 2)
    rows = {"pool (execute_async)": pooled, "spawn (JuliaExecutor)": spawned}
    print(f"{'mode':24s} {'snippets':>8s} {'right':>6s} {'per s':>8s} {'p50':>9s} {'p99':>9s}")
    for name, r in rows.items():
        print(f"{name:24s} {r['n']:8d} {r['right']:6d} {r['per_s']:8.1f} {r['p50_ms']:7.1f}ms {r['p99_ms']:7.1f}ms")
    print(f"throughput: pool / spawn = {pooled['per_s'] / spawned['per_s']:.1f}x "
          f"({args.workers} workers, concurrency {args.concurrency}; spawn with {os.cpu_count()} threads)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"juliapool": __version__, "load": os.getloadavg(), **rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
