"""Chart a bench_programs.py result: time per program in each mode, log scale.

    python benchmarks/plot_programs.py [--json benchmarks/results/bench_programs.json] [--out ...png]

Left: every program's time, programs sorted by their spawn-mode time (one line per mode). Right: pool
against spawn, one dot per program, with the line where they are equal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

from plot import POOL_COLOR, RESULTS, SPAWN_COLOR  # noqa: E402

OTHER_COLORS = ["#389826", "#cb3c33", "#4063d8", "#e69f00"]  # Julia's green, red, blue; orange


def _color(mode: str, i: int) -> str:
    if mode == "spawn":
        return SPAWN_COLOR
    if mode == "pool":
        return POOL_COLOR
    return OTHER_COLORS[i % len(OTHER_COLORS)]


def plot(json_path: Path, out: Path) -> None:
    data = json.loads(Path(json_path).read_text())
    rows, stats, env = data["rows"], data["summary"], data["environment"]
    modes = list(rows)
    base = next((m for m in modes if m.startswith("spawn")), modes[0])
    pool = next((m for m in modes if m.startswith("pool")), None)
    secs = {m: {r["id"]: r["seconds"] for r in rows[m]} for m in modes}
    ids = sorted(secs[base], key=lambda i: secs[base][i])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.5, 1]})
    for i, mode in enumerate(modes):
        s = stats[mode]
        left.plot(range(len(ids)), [secs[mode][k] for k in ids], ".", markersize=4 if mode != base else 6,
                  color=_color(mode, i), label=f"{mode}: median {s['median'] * 1e3:.0f} ms, p90 {s['p90'] * 1e3:.0f} ms, "
                                               f"total {s['total']:.0f} s")
    left.set_yscale("log")
    left.set_xlabel(f"program, sorted by {base} time")
    left.set_ylabel("seconds per program (log scale)")
    left.legend(fontsize=8, frameon=False, loc="upper left")
    if pool:
        xs, ys = [secs[base][k] for k in ids], [secs[pool][k] for k in ids]
        right.scatter(xs, ys, s=10, color=POOL_COLOR)
        lo, hi = min(xs + ys) / 1.5, max(xs + ys) * 1.5
        right.plot([lo, hi], [lo, hi], color=SPAWN_COLOR, linewidth=1, label="equal time")
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_xlabel(f"{base} (s)")
        right.set_ylabel(f"{pool} (s)")
        right.legend(fontsize=8, frameon=False, loc="upper left")
        right.set_title(f"{pool} against {base}, one dot per program", fontsize=10)
    fig.suptitle(f"{len(ids)} real programs ({Path(data['corpus']).name}), juliapool {env['commit'][:7]}, "
                 f"Julia {env['julia']}, {env['cpus']} CPUs, load average {env['loadavg_at_start'][0]:.1f} at start",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_programs.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "programs.png")
    args = parser.parse_args(argv)
    plot(args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
