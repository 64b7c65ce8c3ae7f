"""Hard limits for untrusted code (output, memory) and asyncio calls, with real Julia workers; the
output limit's cutting rules also on `Execution` alone, fed by hand."""

from __future__ import annotations

import asyncio
import threading
from typing import List, Tuple

import pytest

from conftest import wait_for_workers
from juliapool import JuliaProcessPool
from juliapool.execution import Execution

NONCE = "0123456789abcdef" * 2
END = (NONCE + "ffffffff").encode()


def fed(limit: int, pieces: List[Tuple[str, bytes]]) -> Tuple[List[Tuple[str, str]], Execution]:
    sent: List[Tuple[str, str]] = []
    run = Execution(1, NONCE, on_output=lambda name, text: sent.append((name, text)), output_limit=limit)
    for name, data in pieces:
        run.on_stream(name, data)
    return sent, run


@pytest.mark.timeout(10)
def test_the_limit_cuts_inside_a_piece_and_notes_it_once() -> None:
    sent, run = fed(10, [("stdout", b"12345678"), ("stderr", b"abcdef"), ("stdout", b"never shown"),
                         ("stderr", b"nor this" + END), ("stdout", END)])
    assert sent[:2] == [("stdout", "12345678"), ("stderr", "ab")]
    assert len(sent) == 3 and sent[2][0] == "stderr" and sent[2][1].startswith("\n[juliapool: output truncated")
    assert "more than 10 bytes" in sent[2][1]
    assert run.ended == {"stdout": True, "stderr": True}, "markers are still found in dropped output"
    assert run.reply(None).output_truncated


@pytest.mark.timeout(10)
def test_exactly_the_limit_is_not_truncated_one_byte_more_is() -> None:
    sent, run = fed(6, [("stdout", b"123"), ("stdout", b"456")])
    assert sent == [("stdout", "123"), ("stdout", "456")] and not run.output_truncated
    run.on_stream("stdout", b"7")
    assert len(sent) == 3 and sent[2][1].startswith("\n[juliapool: output truncated")


@pytest.mark.timeout(120)
def test_an_output_flood_is_cut_and_python_stays_small() -> None:
    with JuliaProcessPool(size=1, output_limit_bytes=100_000) as pool:
        r = pool.execute('while true; print("y"^9999); end', timeout=3)
        assert r.timed_out and r.exit_code == -1, r.stderr[-300:]
        assert r.stdout.startswith("y" * 1000) and len(r.stdout) < 101_000
        assert "output truncated" in r.stdout
        assert pool.execute('println("next")').stdout == "next\n", "the worker serves the next call"
        # the per-call argument overrides the pool's
        assert len(pool.execute('print("z"^50_000)', output_limit_bytes=1000).stdout) < 1200


@pytest.mark.timeout(180)
def test_a_memory_hog_is_stopped_and_the_pool_goes_on() -> None:
    # 300 MB limit, 2 GB asked for: if the limit failed, the machine (24 GB) would still be fine.
    with JuliaProcessPool(size=1, memory_limit_mb=600) as pool:
        small = pool.execute("x = ones(UInt8, 50 * 2^20); println(sum(x) > 0)")
        assert (small.exit_code, small.stdout) == (0, "true\n"), small
        pid = pool.worker_pids()[0]
        r = pool.execute("x = ones(UInt8, 2 * 10^9); println(sum(x))", timeout=60)
        assert r.exit_code == -9 and not r.timed_out, r
        assert "memory limit of 600 MB" in r.stderr, r.stderr
        assert pid not in wait_for_workers(pool)
        assert pool.execute("println(1)").stdout == "1\n"
        ok = pool.execute("x = ones(UInt8, 2 * 10^9); println(length(x))", memory_limit_mb=4000, timeout=60)
        assert ok.stdout == "2000000000\n", ok


@pytest.mark.timeout(180)
def test_300_awaits_on_two_workers_need_no_thread_each() -> None:
    async def main(pool: JuliaProcessPool) -> Tuple[List[str], int]:
        threads_before = threading.active_count()
        peak = [threads_before]

        async def one(i: int) -> str:
            r = await pool.execute_async(f"println({i})")
            peak[0] = max(peak[0], threading.active_count())
            return r.stdout

        outs = await asyncio.gather(*(one(i) for i in range(300)))
        return outs, peak[0] - threads_before

    with JuliaProcessPool(size=2) as pool:
        outs, extra_threads = asyncio.run(main(pool))
        assert outs == [f"{i}\n" for i in range(300)]
        assert extra_threads <= 2, f"{extra_threads} threads were started for 300 awaits"


@pytest.mark.timeout(120)
def test_async_errors_timeouts_and_sessions() -> None:
    async def main(pool: JuliaProcessPool) -> None:
        r = await pool.execute_async('error("boom")')
        assert r.exit_code == 1 and "boom" in r.stderr
        r = await pool.execute_async('println("a"); sleep(10)', timeout=1)
        assert r.timed_out and r.stdout == "a\n"
        s = pool.session("async")
        await s.execute_async("x = 41")
        assert (await s.execute_async("println(x + 1)")).stdout == "42\n"
        s.close()

    with JuliaProcessPool(size=2) as pool:
        asyncio.run(main(pool))
