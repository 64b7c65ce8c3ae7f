"""Chart benchmarks/results/bench_pool.json: per-call time, pool vs spawn (log scale), and
CPU-bound throughput by worker count -> results/pool_vs_spawn.png. If the kernel benchmark's
results are there too (bench_kernel.json, and bench_kernel_no_sysimage.json from a run with
JULIAPOOL_SYSIMAGE=off), also the kernel's start to first result against ipykernel's, each pair
measured in one run -> results/kernel_start.png.

    python -m pip install -e '.[bench]'   # matplotlib
    python benchmarks/plot.py [--json benchmarks/results/bench_pool.json] [--out ...png]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, Sequence

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SPAWN_COLOR, POOL_COLOR = "#b0b0b0", "#9558b2"  # grey, and Julia's purple


def _label(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} µs"


def plot_latency(ax: plt.Axes, seed: Dict[str, Any]) -> None:
    modes = [("spawn\n(julia per call)", seed["spawn"], SPAWN_COLOR),
             (f"pool\n({seed['pool_size']} warm workers)", seed["pool"], POOL_COLOR)]
    for x, (_, s, color) in enumerate(modes):
        err = [[s["median"] - s["p10"]], [s["p90"] - s["median"]]]
        ax.bar(x, s["median"], color=color, yerr=err, capsize=6, width=0.6)
        ax.annotate(_label(s["median"]), (x, s["median"]), xytext=(18, 4), textcoords="offset points",
                    fontsize=10, fontweight="bold")
    ax.axhline(0.5e-3, color="#389826", linestyle="--", linewidth=1, label="pool target: 0.5 ms")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.set_yscale("log")
    ax.set_ylim(min(seed["pool"]["p10"], 0.5e-3) / 3, seed["spawn"]["p90"] * 4)
    ax.set_xticks(range(len(modes)), [m[0] for m in modes])
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylabel("time per execution (s, log scale)")
    ax.set_title(f"println(i), {seed['iterations']} calls each: median, p10-p90\n"
                 f"pool is {seed['speedup_median']:.0f}x faster (medians, same run)", fontsize=10)


def plot_throughput(ax: plt.Axes, rows: Sequence[Dict[str, Any]]) -> None:
    xs = [str(r["workers"]) for r in rows]
    ys = [r["calls_per_s"] for r in rows]
    bars = ax.bar(xs, ys, color=POOL_COLOR, width=0.6)
    ax.bar_label(bars, [f"{y:.0f}/s" for y in ys], padding=2, fontsize=9)
    ax.set_xlabel("pool workers")
    ax.set_ylabel("calls per second")
    ax.set_ylim(0, max(ys) * 1.18)
    ax.set_title(f"CPU-bound calls (fib(25) per call), {rows[0]['threads']} client threads", fontsize=10)


KERNEL_RUNS = [("bench_kernel.json", "with the system image"),
               ("bench_kernel_no_sysimage.json", "JULIAPOOL_SYSIMAGE=off")]


def plot_kernel_start(out: Path) -> bool:
    """Grouped bars: per run, median start to first result of both kernels, min-max whiskers."""
    runs = [(json.loads((RESULTS / name).read_text()), label) for name, label in KERNEL_RUNS
            if (RESULTS / name).is_file()]
    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, (data, label) in enumerate(runs):
        for j, (kernel, color) in enumerate((("python3", SPAWN_COLOR), ("juliapool-bench", POOL_COLOR))):
            times = [r["first_result"] for r in data["raw"]["start"][kernel]]
            med = statistics.median(times)
            x = i + (j - 0.5) * 0.36
            ax.bar(x, med, width=0.34, color=color, yerr=[[med - min(times)], [max(times) - med]], capsize=5,
                   label=("ipykernel (Python)", "juliapool kernel (Julia)")[j] if i == 0 else None)
            ax.text(x, med / 2, f"{med * 1e3:.0f} ms", ha="center", fontsize=10, fontweight="bold", color="white")
    ax.set_xticks(range(len(runs)), [f"run {label}\n({len(d['raw']['start']['python3'])} starts each)"
                                     for d, label in runs])
    ax.set_ylabel("kernel start to first cell result (s)")
    ax.legend(loc="upper left", fontsize=9, frameon=False)
    env = runs[0][0]["environment"]
    ax.set_title(f"Start to the result of `1 + 1`, median and min-max; Julia {env['julia']}, {env['cpus']} CPUs",
                 fontsize=10)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_pool.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "pool_vs_spawn.png")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    env = data["environment"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6), gridspec_kw={"width_ratios": [1, 1.1]})
    plot_latency(left, data["seed"])
    plot_throughput(right, data["throughput"])
    fig.suptitle(f"juliapool {env['juliapool']} ({env['commit'][:7]}), Julia {env['julia']}, "
                 f"{env['cpus']} CPUs, load average {env['loadavg_at_start'][0]:.1f} at start", fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    plot_kernel_start(RESULTS / "kernel_start.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
