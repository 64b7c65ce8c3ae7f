"""Julia-version points of the worker (julia/compat.jl) that Julia 1.5 can run: the fallbacks forced
through $JULIAPOOL_COMPAT_FALLBACK, and the feature probes' answers on the Julia installed here."""

from __future__ import annotations

import os

import pytest

from juliapool import JuliaProcessPool

pytestmark = pytest.mark.timeout(120)

WORKER = "Main.JuliaPoolWorker"


def test_const_declarations_instead_of_jl_set_const() -> None:
    """The path Julia 1.12 takes (binding partitions): module names made by a `const` declaration."""
    env = dict(os.environ, JULIAPOOL_COMPAT_FALLBACK="set_const")
    with JuliaProcessPool(size=1, env=env) as pool:
        r = pool.execute(f'println({WORKER}.compat_forced("set_const")); eval(:(z = 41)); println(z + 1); '
                         'println(isconst(@__MODULE__, :eval), isconst(@__MODULE__, :include))')
        assert (r.stdout, r.exit_code) == ("true\n42\ntruetrue\n", 0), r
        nb = pool.session("nb")
        assert nb.run("40 + 2", history=1).status == "ok"
        rep = nb.run("(Out[1], ans, isconst(@__MODULE__, :IJulia), IJulia.inited)")
        assert rep.result["text/plain"] == "(42, 42, true, true)", rep


def test_probes_on_this_julia(shared_pool: JuliaProcessPool) -> None:
    """What the feature probes find, against what reading Julia's source says of each version:
    binding partitions from 1.12; user types print as in Main on every version (by one hook or the
    other)."""
    r = shared_pool.execute(f'println({WORKER}.BINDING_PARTITIONS == (VERSION >= v"1.12-"), '
                            f'{WORKER}.compat_forced("set_const"), {WORKER}.shows_as_main())')
    assert r.stdout == "truefalsetrue\n", r
