"""A Julia system image with the worker compiled in, so that a worker is ready as soon as Julia is.

    juliapool [--julia PATH] sysimage [--check]    (juliapool-install-julia builds one for its Julia)

Without one, a worker loads and compiles its own code after Julia has started, and the first
notebook cell compiles display and error paths on top: it is ready about three times later
(benchmarks/bench_sysimage.py). The build, 2-4 minutes:

    1. trace    a worker started with --trace-compile runs WORKLOAD (pool calls, notebook cells,
                completion, help)             -> trace.jl: one precompile(...) per compiled method
    2. compile  julia -J <Julia's own image> --output-o juliapool.o julia/sysimage.jl
                loads the worker module, runs those statements -> an object file with native code
    3. link     cc -shared juliapool.o libjulia  -> juliapool.so, checked by starting a worker on it

Images live in <juliapool home>/sysimages/<key>/, the key naming the Julia executable and the
worker's sources. `find_sysimage` (called at every pool start, so it only reads a small JSON file
and stats one file) returns nothing when the sources changed or Julia's own image was replaced
(an upgrade): the worker then boots the usual way. A pool that fails to start a worker on an image
drops the image and starts without it. A new image replaces the older ones built for the same Julia.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..errors import JuliaPoolError, SysimageError
from ..paths import IMAGE_NAME, META_NAME, built_image, file_stamp, image_dir, julia_source_dir

log = logging.getLogger(__name__)

# Julia prints what it needs to know about itself; libjulia is found among the loaded libraries
# because Debian ships only libjulia.so.1 (no libjulia.so a linker could find by name).
PROBE = r"""
using Libdl
libs = Libdl.dllist()
lib(name) = (i = findfirst(p -> startswith(basename(p), name * ".so"), libs); i === nothing ? "" : libs[i])
println(unsafe_string(Base.JLOptions().image_file))
println(Sys.STDLIB)
println(VERSION)
println(lib("libjulia"))
println(lib("libjulia-internal"))
"""

# What a notebook and a pool do first; every method this compiles goes into the image.
WORKLOAD_CELLS = [
    "1 + 1",
    "x = 1; for i in 1:3; x += i; end; println(x); x",
    'println("hello"); print(stderr, "warn\\n"); 2.5',
    "[1, 2, 3]",
    "[1.0 2.0; 3.0 4.0]",
    'Dict("a" => 1, "b" => 2)',
    '(1, "two", 3.0)',
    "1:10",
    '"a string"',
    ":symbol",
    "nothing",
    "1 // 3",
    "[x^2 for x in 1:5];",
    "struct WarmPoint; x::Int; end; WarmPoint(1)",
    "display([1, 2]); display(\"text\"); 3",
    'error("boom")',
    "undefined_name_here",
    "sqrt(-1)",
    "[1, 2][5]",
    "f(x::Int) = x; f(1.5)",
    "?sin",
    ";echo shell",
    "using LinearAlgebra; norm([3.0, 4.0])",
    "using Statistics; mean([1, 2, 3])",
    "using Printf; @printf(\"%.2f\\n\", pi)",
    "sum(rand(100))",
]
# The shapes real programs take, for the compile policy's guesses (work_guess.jl): each path of
# them it has not met costs 5 to 75 ms once in every worker.
POLICY_WORKLOAD = """
using Printf
const N = 10
mutable struct Node; v::Int; next::Union{Node,Nothing}; end
"How many nodes follow `n`."
function walk(n)
    c = 0
    while n.next !== nothing
        n = n.next
        c += 1
    end
    c
end
function search(xs::Vector{T}, x::T) where T
    lo, hi = 1, length(xs)
    while lo <= hi
        mid = (lo + hi) ÷ 2
        xs[mid] == x && return mid
        xs[mid] < x ? (lo = mid + 1) : (hi = mid - 1)
    end
    0
end
function digits_of(n::Integer, base = 10)
    out = Int[]
    while n > 0
        push!(out, n % base)
        n = div(n, base)
    end
    reverse(out)
end
function steps(k)
    i = 0
    while i < k && isodd(k)
        i = i + 1
    end
    x = 1.0
    while 1.0 + x != 1.0
        x /= 2
    end
    s = 0
    while true
        s += 1
        s >= 3 && break
    end
    (i, x, s)
end
fact(n) = n < 2 ? big(1) : n * fact(n - 1)
function drain(q)
    s = 0
    while !isempty(q)
        s += popfirst!(q)
    end
    s
end
evens(v) = [x for x in v if iseven(x)]
function back(v, s)     # sized by its call below: a literal vector and string, arithmetic in the guess
    t = 0
    for k in length(v)-1:-1:1, c in s[1:1+1]
        t += v[k]
    end
    t + (2^3 - 1) * 4 ÷ 2
end
@show back([1, 2, 3], "ab")
total(v) = sum(x -> x^2, v)
let words = ["a", "bb", "ccc"], t = 0
    for (i, w) in enumerate(words), c in w
        t += i
    end
    @printf("%d %s\n", t, join(words, ","))
end
for i in 1:3, j in i:N
    i == j && print(i)
end
println(walk(Node(1, Node(2, nothing))), search([1, 3, 5], 3), digits_of(1234), steps(3), fact(5), drain([1, 2]))
println(evens(1:N), total(1:N), [k => v for (k, v) in Dict("x" => 1)], map(x -> 2x, (1, 2)))
x = 0
while x < 100
    global x += 7
end
try
    error("caught")
catch e
    println(sprint(showerror, e))
end
"""

WORKLOAD_PLAIN = ['println("plain")', 'print(stderr, "e")', 'error("plain")', "1 + 1",
                  # a MethodError's "Closest candidates" (sorted, their signatures shown)
                  "reduce(+, 0, (1, 2))", 'h(a, b, x...) = a; h(1)',
                  # the fresh-state checks after a call that defines methods, or changes ENV and cd
                  'g(x) = x; println(g(1))', 'ENV["JULIAPOOL_WARM"] = "1"; cd(tempdir())',
                  "struct WarmShow; x::Int; end; Base.show(io::IO, w::WarmShow) = print(io, w.x); println(WarmShow(1))",
                  POLICY_WORKLOAD]


# ---- building ----------------------------------------------------------------------------------

def _probe(julia: str) -> Dict[str, str]:
    out = subprocess.run([julia, "--startup-file=no", "-e", PROBE], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=120)
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) < 5:
        raise SysimageError(f"could not ask {julia} about itself:\n{out.stderr.strip()}")
    info = dict(zip(["base_image", "stdlib", "version", "libjulia", "libjulia_internal"], lines))
    if not info["libjulia"]:
        raise SysimageError(f"{julia} did not show where its libjulia is; cannot link an image for it")
    return info


def _trace(julia: str, trace_file: Path) -> None:
    """Run the workload on a worker that logs every method it compiles."""
    from ..pool import JuliaProcessPool  # late: pool imports this module

    pool = JuliaProcessPool(size=1, timeout=120, julia_path=julia, julia_args=[f"--trace-compile={trace_file}"],
                            warm_kernel=True, sysimage=False)
    try:
        for code in WORKLOAD_PLAIN:
            pool.execute(code)
        with pool.session("sysimage-workload") as session:
            for code in WORKLOAD_CELLS:
                session.run(code, on_output=lambda *_: None, on_display=lambda *_: None)
            session.complete("prin", 4)
            session.complete("using Lin", 9)
            session.inspect("println", 3)
            session.is_complete("for i in 1:2")
            session.is_complete("x = 1")
    finally:
        pool.shutdown()


def _compile(julia: str, info: Dict[str, str], trace_file: Path, obj: Path, say: Callable[[str], None]) -> None:
    script = julia_source_dir() / "sysimage.jl"
    cmd = [julia, "--startup-file=no", "--history-file=no", "-J", info["base_image"], "--sysimage-native-code=yes",
           f"--output-o={obj}", str(script), info["stdlib"], str(trace_file)]
    out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    for line in out.stdout.splitlines():
        say(line)
    if out.returncode != 0 or not obj.is_file():
        raise SysimageError(f"Julia could not compile the image (exit {out.returncode}):\n{out.stderr.strip()[-3000:]}")


def _link(info: Dict[str, str], obj: Path, image: Path) -> None:
    if not sys.platform.startswith("linux"):
        raise SysimageError("building a system image is supported on Linux only")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise SysimageError("linking the image needs a C compiler: install one (Debian: apt install gcc) or set $CC")
    libs = [info["libjulia"]] + ([info["libjulia_internal"]] if info["libjulia_internal"] else [])
    cmd = [cc, "-shared", "-o", str(image), "-Wl,--whole-archive", str(obj), "-Wl,--no-whole-archive", *libs]
    out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise SysimageError(f"{cc} could not link the image:\n{out.stderr.strip()[-3000:]}")
    # On disk before a worker maps it: pages of a file not yet written back count as every
    # mapping's private dirty memory (each worker seemed 45 MB bigger until the kernel flushed them).
    with open(image, "rb") as f:
        os.fsync(f.fileno())


def _check(julia: str, image: Path) -> None:
    from ..pool import JuliaProcessPool

    pool = JuliaProcessPool(size=1, julia_path=julia, sysimage=str(image))
    try:
        result = pool.execute("print(1 + 1)")
    finally:
        pool.shutdown()
    if pool.sysimage is None:  # the pool fell back to Julia's own image
        raise SysimageError(f"a worker could not start on the new image {image}; see the warning above")
    if result.stdout != "2":
        raise SysimageError(f"a worker on the new image answered {result!r}")


def build_sysimage(julia: str, say: Callable[[str], None] = print, force: bool = False,
                   home: Optional[Path] = None) -> Path:
    """Build the image for `julia` (unless a valid one exists and not `force`) under juliapool's
    home (`home`, else $JULIAPOOL_HOME...); returns its path. Raises SysimageError."""
    folder = image_dir(julia, home)
    built = built_image(folder)
    if built and not force:
        say(f"a system image for {julia} is already built: {built}")
        return Path(built)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=folder.parent))
    try:
        _build(julia, work, say)
        (work / "trace.jl").unlink()
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(work, folder)  # at once: a pool starting meanwhile sees the old image or the new one
        remove_older_images(julia, keep=folder)
    except SysimageError:
        raise
    except (OSError, JuliaPoolError) as e:  # a worker of the build failed, a disk filled up, ...
        raise SysimageError(f"building the image in {work} failed: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder / IMAGE_NAME


def remove_older_images(julia: str, keep: Path) -> List[Path]:
    """Delete the images built for `julia` from other worker sources (~150 MB each, never used
    again once juliapool is upgraded) and builds that died over a day ago. Returns what went."""
    gone = []
    for folder in keep.parent.iterdir():
        if folder == keep or not folder.is_dir():
            continue
        try:
            if folder.name.startswith("build-"):
                stale = time.time() - folder.stat().st_mtime > 86400
            else:
                stale = json.loads((folder / META_NAME).read_text()).get("julia") == os.path.realpath(julia)
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    return gone


def _build(julia: str, work: Path, say: Callable[[str], None]) -> None:
    from .. import __version__

    started = time.monotonic()
    info = _probe(julia)
    say(f"building a juliapool system image for Julia {info['version']} ({julia}): 2-4 minutes")
    say("1/3 running the workload with --trace-compile")
    _trace(julia, work / "trace.jl")
    say("2/3 compiling the worker into an image")
    _compile(julia, info, work / "trace.jl", work / "juliapool.o", say)
    say("3/3 linking and checking it")
    _link(info, work / "juliapool.o", work / IMAGE_NAME)
    _check(julia, work / IMAGE_NAME)
    (work / "juliapool.o").unlink()
    meta = dict(info, julia=os.path.realpath(julia), base_stamp=file_stamp(info["base_image"]),
                juliapool=__version__, built=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    (work / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    say(f"system image built in {time.monotonic() - started:.0f} s")
