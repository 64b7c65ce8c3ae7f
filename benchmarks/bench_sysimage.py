"""Workers with and without the juliapool system image, measured in one run, taking turns.

    python benchmarks/bench_sysimage.py [--rounds 5] [--calls 200] [--out FILE.json]

Per round and per mode (`sysimage=None`, the built image, and `sysimage=False`, Julia's own):
- worker ready: `JuliaProcessPool(size=1, fast_start=True)` (the kernel's settings) until it returns;
- first cell: `1 + 1` in a session on that fresh worker, and `[1.0 2; 3 4]` after it;
- per call: median of --calls `println(i)` through a pool of 4 (plain calls, fresh module each).
Needs a built image (`juliapool sysimage`); medians over the rounds are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Union

from bench_pool import RESULTS, environment, write_json
from juliapool import JuliaProcessPool

MODES: Dict[str, Union[None, bool]] = {"image": None, "no image": False}


def timed(f: Any) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def one_worker(sysimage: Union[None, bool]) -> Dict[str, float]:
    box: Dict[str, JuliaProcessPool] = {}
    ready = timed(lambda: box.setdefault("p", JuliaProcessPool(size=1, fast_start=True, sysimage=sysimage)))
    pool = box["p"]
    try:
        with pool.session("bench") as s:
            quiet = dict(on_output=lambda *_: None, on_display=lambda *_: None)
            first = timed(lambda: s.run("1 + 1", **quiet))
            matrix = timed(lambda: s.run("[1.0 2; 3 4]", **quiet))
    finally:
        pool.shutdown()
    return {"ready": ready, "first_cell": first, "matrix_cell": matrix}


def per_call(sysimage: Union[None, bool], calls: int) -> float:
    with JuliaProcessPool(size=4, sysimage=sysimage) as pool:
        times = [timed(lambda i=i: pool.execute(f"println({i})")) for i in range(calls)]
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--out", type=Path, default=RESULTS / "bench_sysimage.json")
    opts = p.parse_args()
    env = environment()
    if not env["sysimage"]:
        raise SystemExit("no system image is built for this Julia: run `juliapool sysimage` first")
    raw: Dict[str, List[Dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(opts.rounds):
        for mode, sysimage in MODES.items():  # taking turns: both see the same machine load
            row = one_worker(sysimage)
            row["per_call"] = per_call(sysimage, opts.calls)
            raw[mode].append(row)
    print(f"juliapool at {env['commit'][:10]}, Julia {env['julia']}, {env['cpus']} CPUs, "
          f"load {env['loadavg_at_start'][0]:.2f}, {opts.rounds} rounds; image {env['sysimage']}")
    summary = {mode: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for mode, rows in raw.items()}
    print(f"{'':34}{'image':>12}{'no image':>12}")
    for key, label in (("ready", "one worker ready (fast_start)"), ("first_cell", "first cell `1 + 1`"),
                       ("matrix_cell", "next cell `[1.0 2; 3 4]`"), ("per_call", "println(i) per call, pool of 4")):
        a, b = summary["image"][key] * 1e3, summary["no image"][key] * 1e3
        print(f"{label:34}{a:10.2f} ms{b:10.2f} ms")
    write_json(opts.out, {"environment": env, "summary": summary, "raw": raw})


if __name__ == "__main__":
    main()
