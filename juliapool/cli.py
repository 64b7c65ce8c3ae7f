"""The `juliapool` command: `demo` (spawn vs pool, measured in one run), `run` (one snippet), `version`,
`sysimage` (build the system image that makes workers start ready), `serve` (the user's pool server)
and `status` (what that server holds).

Exit codes: `run` exits with the snippet's own code (0, 1 for an uncaught error, n for `exit(n)`),
124 when it timed out (as `timeout(1)` does) and 128+N when Julia was killed by signal N.
Every command exits 127 when no Julia can be found, 1 on other juliapool errors, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import __version__
from .discovery import JULIA_ENV, find_julia, julia_version
from .errors import JuliaNotFoundError, JuliaPoolError
from .executor import JuliaExecutor
from .pool import JuliaProcessPool
from .result import TIMEOUT_EXIT_CODE, CodeExecResult, trailing_notes
from .paths import SYSIMAGE_ENV, find_sysimage

log = logging.getLogger("juliapool.cli")

EXIT_ERROR = 1
EXIT_TIMEOUT = 124
EXIT_NO_JULIA = 127
EXIT_INTERRUPTED = 130
INSTALL_HINT = "hint: run `juliapool-install-julia` to install a private Julia, or set $JULIAPOOL_JULIA"


# ---- demo ------------------------------------------------------------------------------------

def _stats(seconds: Sequence[float]) -> Dict[str, float]:
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p90": p90, "mean": statistics.fmean(ordered),
            "total": sum(ordered)}


def format_duration(seconds: float) -> str:
    """A duration with three significant digits, in the unit that suits it."""
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def _time_calls(run: Callable[[str], CodeExecResult], n: int) -> Tuple[List[float], List[str]]:
    """Run `println(i)` for i in 1..n, one at a time, as the seed's benchmark does."""
    times, outputs = [], []
    for i in range(1, n + 1):
        start = time.perf_counter()
        result = run(f"println({i})")
        times.append(time.perf_counter() - start)
        outputs.append(result.stdout)
    return times, outputs


def _print_timings(rows: Dict[str, List[float]]) -> None:
    print(f"{'mode':<6} {'median':>10} {'p90':>10} {'mean':>10} {'total':>10}")
    for mode, times in rows.items():
        s = _stats(times)
        print(f"{mode:<6} {format_duration(s['median']):>10} {format_duration(s['p90']):>10} {format_duration(s['mean']):>10} {format_duration(s['total']):>10}")


def _show_results(executor: JuliaExecutor) -> None:
    """A few calls through the pool that show what a result carries."""
    ok = executor.run('println("Hello from Julia ", VERSION)')
    print(f"  stdout            {ok.stdout!r}  exit_code={ok.exit_code}")
    err = executor.run('error("boom")')
    first = err.stderr.splitlines()[0] if err.stderr else ""
    print(f"  error             stderr starts {first!r}  exit_code={err.exit_code}")
    slow = JuliaExecutor(use_process_pool=True, timeout=1)
    late = slow.run('println("partial output"); flush(stdout); sleep(30); println("never")')
    print(f"  timeout (1 s)     stdout {late.stdout!r} kept  exit_code={late.exit_code}  timed_out={late.timed_out}")


def cmd_demo(args: argparse.Namespace) -> int:
    n, size = args.iterations, args.size
    julia = find_julia()
    print(f"juliapool demo: {n} executions of println(i), Julia {julia_version(julia)} ({julia})\n")
    print(f"spawn mode: JuliaExecutor() starts julia for every call (~{n * 0.3:.0f} s) ...", flush=True)
    spawn_times, spawn_out = _time_calls(JuliaExecutor().run, n)

    print(f"pool mode: JuliaExecutor.enable_process_pool(size={size}) ...", flush=True)
    start = time.perf_counter()
    if not JuliaExecutor.enable_process_pool(size=size):
        print("juliapool: error: the process pool could not start (see the warning above; -v for more)",
              file=sys.stderr)
        return EXIT_ERROR
    print(f"  {size} workers ready in {time.perf_counter() - start:.1f} s (once, before the first call)\n")
    try:
        pooled = JuliaExecutor(use_process_pool=True)
        pool_times, pool_out = _time_calls(pooled.run, n)
        _print_timings({"spawn": spawn_times, "pool": pool_times})
        spawn_s, pool_s = _stats(spawn_times), _stats(pool_times)
        print(f"\nspeedup in this run: {spawn_s['median'] / pool_s['median']:.0f}x per execution (medians), "
              f"{spawn_s['total'] / pool_s['total']:.0f}x in total")
        same = sum(a == b for a, b in zip(spawn_out, pool_out))  # same length: n each
        print(f"identical stdout in both modes: {same}/{n}\n")
        print("What a pooled call returns:")
        _show_results(pooled)
    finally:
        JuliaExecutor.shutdown_pool()
    return 0


# ---- run -------------------------------------------------------------------------------------

def _exit_status(result: CodeExecResult) -> int:
    if result.timed_out or result.exit_code == TIMEOUT_EXIT_CODE:
        return EXIT_TIMEOUT
    if result.exit_code < 0:
        return 128 - result.exit_code
    return result.exit_code & 0xFF


def _echo(stream: str, text: str) -> None:
    """Write output as it streams in."""
    out = sys.stdout if stream == "stdout" else sys.stderr
    out.write(text)
    out.flush()


def _read_code(code: str) -> str:
    return sys.stdin.read() if code == "-" else code


def cmd_run(args: argparse.Namespace) -> int:
    code = _read_code(args.code)
    if args.spawn:
        result = JuliaExecutor(timeout=args.timeout or 0).run(code)
        _echo("stdout", result.stdout)
        _echo("stderr", result.stderr)
    else:
        with JuliaProcessPool(size=1, timeout=args.timeout or 0) as pool:
            reply = pool.run(code, on_output=_echo)
        notes = trailing_notes(reply)  # what happened to the worker, after what the code printed
        if notes:
            _echo("stderr", ("" if reply.stderr.endswith("\n") or not reply.stderr else "\n") + "\n".join(notes) + "\n")
        result = reply.to_result()
    log.debug("exit_code=%d timed_out=%s", result.exit_code, result.timed_out)
    return _exit_status(result)


# ---- version ---------------------------------------------------------------------------------

def cmd_version(args: argparse.Namespace) -> int:
    print(f"juliapool {__version__} (Python {sys.version.split()[0]})")
    try:
        julia = find_julia()
    except JuliaNotFoundError as e:
        print(f"julia: not found: {e}")
        print(INSTALL_HINT)
        return EXIT_NO_JULIA
    print(f"julia {julia_version(julia)} at {julia}")
    print(f"system image: {find_sysimage(julia) or 'none (build one with `juliapool sysimage`)'}")
    return 0


# ---- sysimage --------------------------------------------------------------------------------

def cmd_sysimage(args: argparse.Namespace) -> int:
    julia = find_julia()
    if args.check:
        image = find_sysimage(julia)
        why = f" (${SYSIMAGE_ENV}={os.environ[SYSIMAGE_ENV]})" if os.environ.get(SYSIMAGE_ENV) else ""
        print(image or f"no system image for {julia}{why}")
        return 0 if image else EXIT_ERROR
    from .runtime.sysimage import build_sysimage  # the build tool, only when asked for

    build_sysimage(julia, say=lambda line: print(f"juliapool sysimage: {line}", flush=True), force=args.force)
    return 0


# ---- serve and status (the pool server) -----------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from .server import AlreadyRunning, PoolServer
    from .stock import server_recipe
    from .wire import default_socket_path

    path = Path(args.socket).absolute() if args.socket else default_socket_path()
    if not args.verbose:
        logging.getLogger("juliapool").setLevel(logging.INFO)
    recipe = server_recipe(args.julia_args, args.preload, args.warmup)
    most = args.max_workers or max(4, args.workers)
    server = PoolServer(path, recipe, spares=min(args.workers, most), max_workers=most,
                        idle_timeout=args.idle_timeout or None, session_ttl=args.session_ttl or None,
                        kernels=not args.no_kernels)
    try:
        server.bind()
    except AlreadyRunning as e:
        print(f"juliapool serve: {e}", file=sys.stderr)
        return EXIT_ERROR
    server.install_signal_handlers()
    print(f"juliapool server {os.getpid()} listening on {path}", flush=True)
    server.serve_forever()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .client import connect
    from .serverstats import format_status

    with connect(args.socket) as client:
        stats = client.get_stats()
    print(json.dumps(stats, indent=2) if args.json else format_status(stats))
    return 0


# ---- entry point -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="juliapool", description="Run Julia code on warm, persistent Julia workers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    parser.add_argument("--julia", metavar="PATH", help=f"the Julia executable (default: ${JULIA_ENV}, PATH, ...)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="time println(i) in spawn mode and through the pool, in one run")
    demo.add_argument("-n", "--iterations", type=_positive_int, default=100, help="executions per mode (100)")
    demo.add_argument("--size", type=_positive_int, default=4, help="pool workers (4)")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run a snippet and exit with its exit code")
    run.add_argument("code", metavar="CODE", help="Julia code, or - to read it from stdin")
    run.add_argument("--spawn", action="store_true", help="start julia for this call instead of a pool worker")
    run.add_argument("-t", "--timeout", type=float, default=None, metavar="SECONDS", help="time limit (none)")
    run.set_defaults(func=cmd_run)

    version = sub.add_parser("version", help="juliapool's version, and which Julia it runs")
    version.set_defaults(func=cmd_version)

    image = sub.add_parser("sysimage", help="build a Julia system image with the worker compiled in (2-4 min)")
    image.add_argument("--check", action="store_true", help="only say which image workers would use")
    image.add_argument("--force", action="store_true", help="build again even if a valid image exists")
    image.set_defaults(func=cmd_sysimage)

    serve = sub.add_parser("serve", help="run the pool server: warm workers shared by this user's processes")
    serve.add_argument("--socket", metavar="PATH", help="the server's socket (default: $JULIAPOOL_SOCKET, else "
                       "$XDG_RUNTIME_DIR/juliapool/pool.sock, else /tmp/juliapool-UID/pool.sock)")
    serve.add_argument("--workers", type=_positive_int, default=2, metavar="N", help="warm idle workers to keep (2)")
    serve.add_argument("--max-workers", type=_positive_int, default=None, metavar="M",
                       help="Julia processes at most, lent ones included (default: max(4, N))")
    serve.add_argument("--preload", action="append", default=[], metavar="PKG", help="a package every worker loads")
    serve.add_argument("--warmup", metavar="CODE", help="Julia code every worker runs once before it is lent")
    serve.add_argument("--julia-arg", action="append", default=[], dest="julia_args", metavar="ARG",
                       help="an extra Julia argument, such as --threads=2 (repeatable)")
    serve.add_argument("--idle-timeout", type=float, default=0, metavar="S",
                       help="stop after S seconds with no clients and no sessions (0: never)")
    serve.add_argument("--session-ttl", type=float, default=3600, metavar="S",
                       help="forget a session nobody used for S seconds (3600; 0: never)")
    serve.add_argument("--no-kernels", action="store_true",
                       help="no kernel zygote: --server kernels then start as ordinary kernels")
    serve.set_defaults(func=cmd_serve)

    status = sub.add_parser("status", help="the pool server's workers, sessions, clients and counters")
    status.add_argument("--socket", metavar="PATH", help="the server's socket (default as for serve)")
    status.add_argument("--json", action="store_true", help="print the raw statistics as JSON")
    status.set_defaults(func=cmd_status)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.julia:
        os.environ[JULIA_ENV] = args.julia  # seen by every pool and executor this process starts
    try:
        return args.func(args)
    except JuliaNotFoundError as e:
        print(f"juliapool: error: {e}\n{INSTALL_HINT}", file=sys.stderr)
        return EXIT_NO_JULIA
    except JuliaPoolError as e:
        print(f"juliapool: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("juliapool: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
