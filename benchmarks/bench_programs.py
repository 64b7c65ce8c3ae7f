"""Real programs through every mode: parity with `julia FILE` and time per program.

    python benchmarks/bench_programs.py [DIR] [-n N] [--only 0215,F001] [--modes spawn,pool,session]
                                        [--rounds 1] [--versus pool:compiled] [--timeout 60]
                                        [--out FILE.json] [--no-plot]

DIR is a corpus folder (default ../shared/corpus, see its README): programs/*.jl that run and
failing/*.jl that fail on purpose, with what `julia FILE` printed. Each program's code is given as a
string, the way callers use juliapool, one program at a time, the modes taking turns (the first mode
rotates from program to program). Every program starts in an empty working directory: the benchmark
runs in a temporary folder (workers and spawned julia inherit it) and empties it after each program.

Modes:
    spawn           JuliaExecutor(): a new `julia -e CODE` per program (spawn:FLAGS: with those
                    Julia flags instead of SPAWN_OPT_FLAGS, e.g. "spawn:-O0" or "spawn:-O2")
    pool            JuliaProcessPool(size=2).run(code): a fresh module per program
    session         a new Session per program on a pool of its own, `kernel=False` (`julia -e` semantics)
    pool:POLICY, session:POLICY   the same on a pool made with compile_policy=POLICY
    seed            the seed's pool, OpenEnv's julia_env JuliaProcessPool(size=2), from the checkout
                    named by $OPENENV_REPO (benchmarks/seed_pool.py): the issue's yardstick, in the same run

Prints per mode: programs matching the recorded output (mismatches listed, with the reason when the
corpus flags the program), total / median / p90 seconds per program, and the slowest programs; then
ratios to the first spawn mode, and the programs more than 1.5x slower than in the `--versus` mode.
Writes results/bench_programs.json and results/programs.png.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import corpus
from bench_pool import RESULTS, environment, fmt, summarize, write_json
from corpus import Outcome, Program
from juliapool import JuliaExecutor, JuliaProcessPool
from juliapool.discovery import find_julia
from juliapool.result import ExecReply

Runner = Callable[[str], Outcome]
POOL_SIZE = 2


class SpawnWith(JuliaExecutor):
    """Spawn mode with other Julia flags than SPAWN_OPT_FLAGS."""

    def __init__(self, flags: List[str], **kw) -> None:
        super().__init__(**kw)
        self.flags = flags

    def spawn_command(self, code_arg: List[str]) -> List[str]:
        base = super().spawn_command(code_arg)
        return base[:-len(code_arg)] + self.flags + code_arg if not self.use_optimization_flags else base


def _from_text(run: Callable[[str], Any], code: str, timed_out: Callable[[Any], bool]) -> Outcome:
    """A run whose result is a CodeExecResult (spawn mode's, the seed's): text, so bytes that are not
    UTF-8 are U+FFFD there (compared as such)."""
    start = time.perf_counter()
    res = run(code)
    seconds = time.perf_counter() - start
    return Outcome(res.stdout.encode(), res.stderr, res.exit_code, seconds, timed_out(res), lossy=True)


def _from_reply(reply: ExecReply, seconds: float) -> Outcome:
    return Outcome(reply.stdout_bytes, reply.stderr, reply.exit_code, seconds, reply.timed_out)


class Modes:
    """Makes each mode's runner, and the pools behind them (one per compile policy)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.pools: Dict[str, JuliaProcessPool] = {}
        self.seed: Optional[Any] = None

    def pool(self, mode: str, policy: str) -> JuliaProcessPool:
        """Each mode has its own pool, so that the workers of every mode have run the same programs
        before (what a worker ran before changes its times: compiled code kept, heap grown)."""
        if mode not in self.pools:
            kw = {"compile_policy": policy} if policy else {}
            if kw and "compile_policy" not in inspect.signature(JuliaProcessPool).parameters:
                raise SystemExit("this juliapool has no compile_policy argument")
            self.pools[mode] = JuliaProcessPool(size=POOL_SIZE, timeout=self.timeout, **kw)
        return self.pools[mode]

    def runner(self, mode: str) -> Runner:
        kind, _, arg = mode.partition(":")
        if kind == "spawn":
            executor = (SpawnWith(arg.split(), timeout=self.timeout, use_optimization_flags=False) if arg
                        else JuliaExecutor(timeout=self.timeout))
            return lambda code: self._spawn(executor, code)
        if kind in ("pool", "session"):
            pool = self.pool(mode, arg)
            return (lambda code: self._plain(pool, code)) if kind == "pool" else (lambda code: self._session(pool, code))
        if kind == "seed":
            from seed_pool import seed_pool

            self.seed = self.seed or seed_pool(POOL_SIZE, find_julia(), self.timeout)
            return lambda code: self._seed(self.seed, code)
        raise SystemExit(f"unknown mode {mode!r}: use spawn, pool, session, seed, spawn:FLAGS, pool:POLICY or session:POLICY")

    @staticmethod
    def _spawn(executor: JuliaExecutor, code: str) -> Outcome:
        return _from_text(executor.run, code, lambda res: res.timed_out)

    @staticmethod
    def _seed(pool: Any, code: str) -> Outcome:
        return _from_text(pool.execute, code, lambda res: res.exit_code == -1 and "timed out" in res.stderr)

    @staticmethod
    def _plain(pool: JuliaProcessPool, code: str) -> Outcome:
        start = time.perf_counter()
        reply = pool.run(code)
        return _from_reply(reply, time.perf_counter() - start)

    @staticmethod
    def _session(pool: JuliaProcessPool, code: str) -> Outcome:
        with pool.session() as session:
            start = time.perf_counter()
            reply = session.run(code, kernel=False)
            return _from_reply(reply, time.perf_counter() - start)

    def close(self) -> None:
        for pool in [*self.pools.values(), self.seed]:
            if pool is not None:
                pool.shutdown()


def run_rounds(programs: Sequence[Program], modes: Sequence[str], timeout: float, rounds: int) -> Dict[str, List[dict]]:
    """`rounds` runs of `run_all`, each on new pools; a program's seconds in a mode are the median of
    its rounds (one program's time varies by 2x from run to run with what its worker ran before)."""
    runs = [run_all(programs, modes, timeout) for _ in range(rounds)]
    if rounds == 1:
        return runs[0]
    merged: Dict[str, List[dict]] = {}
    for mode in modes:
        merged[mode] = []
        for same in zip(*(run[mode] for run in runs)):
            row = dict(next((r for r in same if not r["match"]), same[0]))  # a mismatch in any round shows
            row["round_seconds"] = [r["seconds"] for r in same]
            row["seconds"] = statistics.median(row["round_seconds"])
            merged[mode].append(row)
    return merged


def run_all(programs: Sequence[Program], modes: Sequence[str], timeout: float) -> Dict[str, List[dict]]:
    """Every program through every mode, modes taking turns; rows per mode, in program order."""
    rows: Dict[str, List[dict]] = {m: [] for m in modes}
    maker = Modes(timeout)
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bench-programs-") as work:
        os.chdir(work)  # before any worker starts: they inherit it
        try:
            runners = {m: maker.runner(m) for m in modes}
            for i, program in enumerate(programs):
                order = list(modes[i % len(modes):]) + list(modes[:i % len(modes)])
                for mode in order:
                    rows[mode].append(_run_one(program, mode, runners[mode], Path(work)))
                print(f"\r  {i + 1}/{len(programs)} {program.id}   ", end="", file=sys.stderr, flush=True)
        finally:
            print(file=sys.stderr)
            maker.close()
            os.chdir(home)
    return rows


def _run_one(program: Program, mode: str, runner: Runner, work: Path) -> dict:
    outcome = runner(program.code)
    left = corpus.clear_directory(work)
    why = corpus.mismatch(program, outcome, mode)
    return {"id": program.id, "seconds": outcome.seconds, "exit_code": outcome.exit_code, "match": not why,
            "mismatch": why, "known_reason": corpus.known_reason(program, mode) if why else "",
            "files_left": left, "timed_out": outcome.timed_out}


def summary(rows: Dict[str, List[dict]]) -> Dict[str, dict]:
    out = {}
    for mode, rs in rows.items():
        s = summarize([r["seconds"] for r in rs])
        out[mode] = {"programs": len(rs), "match": sum(r["match"] for r in rs), "total": s["total"],
                     "median": s["median"], "p90": s["p90"], "max": max(r["seconds"] for r in rs)}
    return out


def slower_than(rows: Dict[str, List[dict]], mode: str, versus: str) -> str:
    """The programs that take more than 1.5x as long in `mode` as in `versus` (the issue's rule), and
    those of them that also lose more than 20 ms."""
    base = {r["id"]: r["seconds"] for r in rows[versus]}
    over = [(r["id"], r["seconds"], base[r["id"]]) for r in rows[mode] if r["seconds"] > 1.5 * base[r["id"]]]
    far = [f"{i} ({fmt(a)} vs {fmt(b)})" for i, a, b in over if a - b > 0.020]
    return (f"  {mode} more than 1.5x {versus}: {len(over)} programs ({', '.join(i for i, _, _ in over) or 'none'});"
            f" of them more than 20 ms slower: {len(far)} ({', '.join(far) or 'none'})")


def report(rows: Dict[str, List[dict]], stats: Dict[str, dict], slowest: int, versus: str = "") -> None:
    modes = list(rows)
    print(f"\n{'mode':<22} {'match':>9} {'total':>9} {'median':>9} {'p90':>9} {'max':>9}")
    for mode, s in stats.items():
        print(f"{mode:<22} {s['match']:>4}/{s['programs']:<4} {s['total']:>8.1f}s {fmt(s['median']):>9} "
              f"{fmt(s['p90']):>9} {fmt(s['max']):>9}")
    base = next((m for m in modes if m.startswith("spawn")), None)
    if base:
        for mode in modes:
            if mode != base:
                b, s = stats[base], stats[mode]
                print(f"  {mode} / {base}: total {s['total'] / b['total']:.2f}x, median {s['median'] / b['median']:.2f}x, "
                      f"p90 {s['p90'] / b['p90']:.2f}x")
    if versus in rows:
        for mode in modes:
            if mode != versus and not mode.startswith(("spawn", "seed")):
                print(slower_than(rows, mode, versus))
    print("\nmismatches:")
    for mode in modes:
        for r in rows[mode]:
            if not r["match"]:
                known = f"  [known: {r['known_reason']}]" if r["known_reason"] else ""
                print(f"  {mode:<18} {r['id']}: {r['mismatch']}{known}")
    print("\nslowest programs (by their slowest mode), seconds:")
    print("  " + f"{'id':<6}" + "".join(f"{m:>16}" for m in modes))
    by_id = {m: {r["id"]: r for r in rows[m]} for m in modes}
    ids = sorted(by_id[modes[0]], key=lambda i: -max(by_id[m][i]["seconds"] for m in modes))
    for i in ids[:slowest]:
        print("  " + f"{i:<6}" + "".join(f"{by_id[m][i]['seconds']:>16.3f}" for m in modes))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", type=Path, default=corpus.DEFAULT_DIR)
    parser.add_argument("-n", "--limit", type=int, help="only N programs, spread over the corpus")
    parser.add_argument("--only", default="", help="comma-separated program ids, e.g. 0215,F001")
    parser.add_argument("--modes", default="spawn,pool,session", help="comma-separated modes (see above)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per program and mode")
    parser.add_argument("--slowest", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1, help="run the corpus N times, on new pools each "
                        "time; a program's time in a mode is the median of its rounds")
    parser.add_argument("--versus", default="pool:compiled", help="list the programs more than 1.5x "
                        "slower in each other pool or session mode than in this one (if it is run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_programs.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "programs.png")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if not (args.dir / "manifest.jsonl").is_file():
        raise SystemExit(f"{args.dir} is not a corpus folder (no manifest.jsonl): give its path as DIR")
    programs = corpus.load(args.dir.resolve(), args.limit, [s for s in args.only.split(",") if s])
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    env = environment()
    print(f"juliapool at {env['commit'][:10]}, Julia {env['julia']}, {env['cpus']} CPUs, "
          f"load {env['loadavg_at_start'][0]:.2f}; {len(programs)} programs, modes {', '.join(modes)}"
          + (f", {args.rounds} rounds" if args.rounds > 1 else ""))
    rows = run_rounds(programs, modes, args.timeout, args.rounds)
    stats = summary(rows)
    report(rows, stats, args.slowest, args.versus)
    write_json(args.out, {"environment": env, "corpus": str(args.dir), "modes": modes, "rounds": args.rounds,
                          "summary": stats, "rows": rows})
    if not args.no_plot:
        from plot_programs import plot  # matplotlib only here

        plot(args.out, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
