"""Per-call latency of two commits of juliapool, measured in one run, rounds taking turns.

    python benchmarks/bench_commits.py OLD [NEW] [--rounds 5] [--calls 300]

Each commit is checked out into a temporary git worktree; each round starts one Python process per
commit (PYTHONPATH set to its worktree) that starts a pool of one worker without a system image
(images are built per source tree, so neither side gets one), warms it, and times `--calls` plain
calls of `println(i)` and of a small real snippet. Rounds alternate old/new so that a machine's
changing load falls on both. Prints the median of each side's per-round medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = {"println": "println({i})", "small": "v = [k^2 for k in 1:{i}]; println(sum(v))"}

PROBE = r"""
import json, statistics, sys, time
from juliapool import JuliaProcessPool
calls, snippets = int(sys.argv[1]), json.loads(sys.argv[2])
out = {}
with JuliaProcessPool(size=1, sysimage=False) as pool:
    for name, template in snippets.items():
        for i in range(20):
            pool.execute(template.format(i=i))
        times = []
        for i in range(calls):
            start = time.perf_counter()
            pool.execute(template.format(i=i % 50 + 1))
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
print(json.dumps(out))
"""


def worktree(rev: str, parent: Path) -> Path:
    path = parent / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    return path


def one_round(tree: Path, calls: int) -> Dict[str, float]:
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(Path.home())}
    out = subprocess.run([sys.executable, "-c", PROBE, str(calls), json.dumps(SNIPPETS)], capture_output=True,
                         text=True, env=env, cwd=tree, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"the probe failed in {tree}:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default="HEAD")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="juliapool-commits-") as tmp:
        trees = {rev: worktree(rev, Path(tmp)) for rev in (args.old, args.new)}
        try:
            medians: Dict[str, Dict[str, List[float]]] = {rev: {n: [] for n in SNIPPETS} for rev in trees}
            for r in range(args.rounds):
                for rev, tree in (trees.items() if r % 2 == 0 else reversed(list(trees.items()))):
                    for name, value in one_round(tree, args.calls).items():
                        medians[rev][name].append(value)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    for name in SNIPPETS:
        old, new = (statistics.median(medians[rev][name]) for rev in (args.old, args.new))
        print(f"{name:8s} {args.old}: {old * 1e3:.3f} ms   {args.new}: {new * 1e3:.3f} ms   new/old = {new / old:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
