"""What the fresh process state costs a plain call: this tree against another (e.g. main), one run.

    python3 benchmarks/bench_fresh_state.py --against /work/main [--rounds 3] [--calls 200]

Each round runs the same snippets, first-call compilation excluded, on a one-worker pool of each
tree in turn (a subprocess per tree and round, PYTHONPATH pointing at the tree) and prints the
median per-call time for each snippet, and the ratio this tree / the other, from medians over all
rounds. Workers start without a system image on both sides (an image is built for one tree's
worker sources only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SNIPPETS = {
    "println": "println(1)",
    "function": "f(x) = x + 1; println(f(1))",
    "own type show": "struct P; x::Int; end; Base.show(io::IO, p::P) = print(io, p.x); println(P(1))",
    "ENV and cd": 'ENV["JULIAPOOL_BENCH"] = "1"; cd(tempdir()); println(1)',
    "using Test": "using Test\n@test 1 + 1 == 2",
}

CHILD = """
import json, statistics, sys, time
from juliapool import JuliaProcessPool
snippets, calls = json.loads(sys.argv[1]), int(sys.argv[2])
out = {}
with JuliaProcessPool(size=1, sysimage=False) as pool:
    for name, code in snippets.items():
        for _ in range(5):
            pool.execute(code)
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            pool.execute(code)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
print(json.dumps(out))
"""


def measure(tree: Path, calls: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(SNIPPETS), str(calls)], env=env,
                          cwd="/", capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def commit(tree: Path) -> str:
    proc = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or "(not a git tree)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, type=Path, help="the other tree (a juliapool checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    print(f"this tree {here} ({commit(here)}), other {args.against} ({commit(args.against)}); "
          f"load average at start {os.getloadavg()[0]:.1f}")
    runs = {"this": [], "other": []}
    for _ in range(args.rounds):
        runs["this"].append(measure(here, args.calls))
        runs["other"].append(measure(args.against.resolve(), args.calls))
    print(f"{'snippet':16} {'this tree':>10} {'other':>10} {'ratio':>6}   (median ms per call, {args.rounds} rounds)")
    for name in SNIPPETS:
        this = statistics.median(r[name] for r in runs["this"]) * 1000
        other = statistics.median(r[name] for r in runs["other"]) * 1000
        print(f"{name:16} {this:10.3f} {other:10.3f} {this / other:6.2f}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
