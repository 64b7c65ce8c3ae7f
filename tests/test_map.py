"""pool.map: many snippets on all workers, results in input order, one failure never stops the rest."""

from __future__ import annotations

import pytest

from conftest import wait_for_workers

from juliapool import CodeExecResult, JuliaProcessPool
from juliapool.errors import PoolShutDownError


@pytest.fixture(scope="module")
def pool2():
    p = JuliaProcessPool(size=2, timeout=60, interrupt_grace=1.0)
    yield p
    p.shutdown()


@pytest.mark.timeout(180)
def test_map_returns_results_in_input_order(pool2):
    # Later snippets finish sooner, so completion order differs from input order.
    codes = [f"sleep({(20 - i) / 100}); println({i})" for i in range(20)]
    results = pool2.map(codes)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
    assert all(isinstance(r, CodeExecResult) and r.exit_code == 0 for r in results)


@pytest.mark.timeout(180)
def test_failing_snippets_do_not_stop_the_others(pool2):
    codes = ['println("a")', 'error("boom")', "sleep(30)", "exit(3)", "Base.length(x::Int) = 99",
             "println(length(5))", "x = )", 'println("z")']
    results = pool2.map(codes, timeout=1)
    assert results[0].stdout == "a\n"
    assert results[1].exit_code == 1 and "boom" in results[1].stderr
    assert results[2].timed_out and results[2].exit_code == -1
    assert results[3].exit_code == 3
    assert results[4].exit_code == 0
    assert results[5].stdout == "1\n"   # piracy of another snippet never reaches this one
    assert results[6].exit_code == 1 and "syntax" in results[6].stderr.lower()
    assert results[7].stdout == "z\n"
    assert pool2.map([]) == []


@pytest.mark.timeout(120)
def test_map_uses_every_worker(pool2):
    wait_for_workers(pool2)  # the piracy above retired one
    results = pool2.map(["sleep(0.3); println(getpid())"] * 6)
    assert len({r.stdout for r in results}) == 2


def test_map_on_a_closed_pool_raises():
    p = JuliaProcessPool(size=1, timeout=60)
    p.shutdown()
    with pytest.raises(PoolShutDownError):
        p.map(["println(1)"])
