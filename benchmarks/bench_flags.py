"""Which Julia flags make each mode fastest, end to end as a caller sees it.

    python benchmarks/bench_flags.py [--spawn-repeats 10] [--pool-calls 200] [--cpu-calls 20]

Spawn mode (`julia <flags> -e CODE` per call, with juliapool's base flags): flag sets "", "-O0", "-O1",
"--compile=min", "--compile=min -O0", each on a trivial snippet (`println(1)`), a CPU-bound one
(define fib and print fib(27)) and a floating-point loop (define `sumsqrt`, print sumsqrt(300_000)).
Flag sets take turns within each repetition, so drift in the machine's load falls on all alike.

Pool mode (`JuliaProcessPool(size=1, julia_args=FLAGS, optimization_flags=False)`): "", "-O1", "-O0",
"--compile=min", on the trivial snippet, on the CPU-bound snippet in a fresh module per call (what a
plain `execute` does: compile fib, then run it), and, in a session where the functions were defined
once (run time only), on `fib(27)` and on a floating-point loop (`sumsqrt(300_000)`), where LLVM's
optimisation matters most. Worker start-up time is recorded too.

The best set per mode is the lowest sum of medians over its snippets; the lead over the runner-up
is printed, since a lead of a few percent is within a shared machine's noise. Results go to
benchmarks/results/bench_flags.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from bench_pool import RESULTS, environment, fmt, summarize, write_json
from juliapool import JuliaProcessPool
from juliapool.discovery import find_julia
from juliapool.pool import BASE_FLAGS

SPAWN_FLAG_SETS = ["", "-O0", "-O1", "--compile=min", "--compile=min -O0"]
SPAWN_SNIPPETS = ["trivial", "cpu", "loop"]
POOL_FLAG_SETS = ["", "-O1", "-O0", "--compile=min"]
POOL_SNIPPETS = ["trivial", "cpu", "cpu_warm", "loop_warm"]
TRIVIAL = "println(1)"
FIB_DEF = "fib(n) = n < 2 ? n : fib(n - 1) + fib(n - 2)"
CPU = f"{FIB_DEF}\nprintln(fib(27))"
LOOP_DEF = "function sumsqrt(n)\n    t = 0.0\n    for i in 1:n\n        t += sqrt(i)\n    end\n    t\nend"
LOOP = "println(sumsqrt(300_000))"
FIB27 = "196418\n"


def spawn_once(julia: str, flags: str, code: str) -> float:
    start = time.perf_counter()
    out = subprocess.run([julia, *BASE_FLAGS, *flags.split(), "-e", code], capture_output=True,
                         stdin=subprocess.DEVNULL, timeout=300)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"julia {flags} failed: {out.stderr.decode(errors='replace')[:300]}")
    return elapsed


def bench_spawn(repeats: int) -> Dict[str, Dict[str, Any]]:
    julia = find_julia()
    snippets = {"trivial": TRIVIAL, "cpu": CPU, "loop": f"{LOOP_DEF}\n{LOOP}"}
    times: Dict[str, Dict[str, List[float]]] = {f: {s: [] for s in snippets} for f in SPAWN_FLAG_SETS}
    for r in range(repeats):
        print(f"spawn: repetition {r + 1}/{repeats} ...", flush=True)
        for flags in SPAWN_FLAG_SETS:
            for name, code in snippets.items():
                times[flags][name].append(spawn_once(julia, flags, code))
    return {flags: {name: summarize(t) for name, t in per.items()} for flags, per in times.items()}


def start_pools() -> Tuple[Dict[str, JuliaProcessPool], Dict[str, float]]:
    """One single-worker pool per flag set, started one after another (start-up time is measured)."""
    pools: Dict[str, JuliaProcessPool] = {}
    started: Dict[str, float] = {}
    try:
        for flags in POOL_FLAG_SETS:
            print(f"pool: starting a worker with julia_args={flags.split()!r} ...", flush=True)
            start = time.perf_counter()
            pools[flags] = JuliaProcessPool(size=1, julia_args=flags.split(), optimization_flags=False, timeout=600)
            started[flags] = time.perf_counter() - start
            check = pools[flags].execute(CPU)
            if check.stdout != FIB27:
                raise RuntimeError(f"fib(27) with {flags!r} gave {check.stdout!r}: {check.stderr[:300]}")
    except BaseException:
        for pool in pools.values():
            pool.shutdown()
        raise
    return pools, started


def bench_pool(calls: int, cpu_calls: int) -> Dict[str, Dict[str, Any]]:
    """The pools take turns call by call, so drift in the machine's load falls on all alike."""
    pools, started = start_pools()
    try:
        sessions = {f: pool.session() for f, pool in pools.items()}
        for session in sessions.values():
            session.execute(f"{FIB_DEF}\n{LOOP_DEF}\nprintln(fib(27)); println(sumsqrt(10))")  # compile printing too
        jobs: Dict[str, Tuple[int, Callable[[str, int], object]]] = {
            "trivial": (calls, lambda f, i: pools[f].execute(f"println({i})")),
            "cpu": (cpu_calls, lambda f, i: pools[f].execute(CPU)),
            "cpu_warm": (cpu_calls, lambda f, i: sessions[f].execute("println(fib(27))")),
            "loop_warm": (cpu_calls, lambda f, i: sessions[f].execute(LOOP)),
        }
        times: Dict[str, Dict[str, List[float]]] = {f: {name: [] for name in jobs} for f in POOL_FLAG_SETS}
        for name, (n, call) in jobs.items():
            print(f"pool: {name}, {n} calls per flag set ...", flush=True)
            for i in range(n):
                for flags in POOL_FLAG_SETS:
                    t0 = time.perf_counter()
                    call(flags, i)
                    times[flags][name].append(time.perf_counter() - t0)
    finally:
        for pool in pools.values():
            pool.shutdown()
    return {f: {"start_s": started[f], **{name: summarize(t) for name, t in times[f].items()}}
            for f in POOL_FLAG_SETS}


def best(results: Dict[str, Dict[str, Any]], snippets: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Per snippet, and overall (sum of medians): the fastest flag set, the runner-up, and by how
    much the winner leads (a lead of a few percent is within this machine's noise)."""
    def cost(flags: str, which: Sequence[str]) -> float:
        return sum(results[flags][s]["median"] for s in which)

    out = {}
    for name, which in [*((s, [s]) for s in snippets), ("overall", list(snippets))]:
        ranked = sorted(results, key=lambda f: cost(f, which))
        lead = cost(ranked[1], which) / cost(ranked[0], which) - 1 if len(ranked) > 1 else 0.0
        out[name] = {"flags": ranked[0], "runner_up": ranked[1] if len(ranked) > 1 else None, "lead": lead}
    return out


def print_table(title: str, results: Dict[str, Dict[str, Any]], snippets: Sequence[str]) -> None:
    print(f"\n{title}")
    print(f"  {'flags':<20}" + "".join(f"{s + ' median':>17}{'p90':>9}" for s in snippets))
    for flags, per in results.items():
        cells = "".join(f"{fmt(per[s]['median']):>17}{fmt(per[s]['p90']):>9}" for s in snippets)
        print(f"  {flags!r:<20}{cells}")
    for name, w in best(results, snippets).items():
        print(f"  best {name + ':':<9} {w['flags']!r:<20} {w['lead']:.0%} ahead of {w['runner_up']!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spawn-repeats", type=int, default=10, help="spawns per flag set and snippet")
    parser.add_argument("--pool-calls", type=int, default=200, help="trivial calls per pool flag set")
    parser.add_argument("--cpu-calls", type=int, default=20, help="CPU-bound calls per pool flag set")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_flags.json")
    args = parser.parse_args(argv)
    env = environment()
    print(f"juliapool at {env['commit'][:10]}, Julia {env['julia']}, load {env['loadavg_at_start'][0]:.2f}")
    spawn = bench_spawn(args.spawn_repeats)
    pool = bench_pool(args.pool_calls, args.cpu_calls)
    print_table("spawn mode (julia <flags> -e CODE per call; cpu = fib(27), loop = sumsqrt(300_000))",
                spawn, SPAWN_SNIPPETS)
    print_table("pool mode (one worker; cpu = define fib + fib(27) in a fresh module per call; "
                "*_warm = fib(27), sumsqrt(300_000) in a session)", pool, POOL_SNIPPETS)
    print("  worker start-up: " + ", ".join(f"{f!r} {p['start_s']:.1f} s" for f, p in pool.items()))
    write_json(args.out, {"environment": env, "spawn": spawn, "pool": pool,
                          "best": {"spawn": best(spawn, SPAWN_SNIPPETS),
                                   "pool": best(pool, POOL_SNIPPETS)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
