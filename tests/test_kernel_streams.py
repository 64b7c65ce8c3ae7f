"""The kernel's StreamBatcher on its own: order across streams and batching. (The kernel tests check
the same end to end; these pin down the edge cases. The output limit is the pool's:
tests/test_limits.py.)

Text waits at most STREAM_FLUSH_INTERVAL before it goes out; on a loaded machine that timer could
fire between two writes of a test and cut a batch. So the tests that assert exact batches set the
interval out of reach, and one test checks the timer on its own.
"""

from __future__ import annotations

from typing import List, Tuple

import pytest

from conftest import wait_until
from juliapool.kernel import streams as streams_module
from juliapool.kernel.streams import StreamBatcher

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _no_timer_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only flush() and a change of stream send text: batches do not depend on timing."""
    monkeypatch.setattr(streams_module, "STREAM_FLUSH_INTERVAL", 3600.0)


def batcher() -> Tuple[StreamBatcher, List[Tuple[str, str]]]:
    sent: List[Tuple[str, str]] = []
    return StreamBatcher(lambda name, text: sent.append((name, text))), sent


def test_pieces_of_one_stream_go_out_together_and_streams_keep_their_order() -> None:
    out, sent = batcher()
    for piece in ("a", "b", "c"):
        out.write("stdout", piece)
    out.write("stderr", "E")
    out.write("stdout", "d")
    out.flush()
    assert sent == [("stdout", "abc"), ("stderr", "E"), ("stdout", "d")]


def test_large_text_goes_out_whole() -> None:
    out, sent = batcher()
    out.write("stdout", "x" * 5_000_000)
    out.flush()
    assert sent == [("stdout", "x" * 5_000_000)]


def test_text_goes_out_by_itself_after_the_flush_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams_module, "STREAM_FLUSH_INTERVAL", 0.05)
    out, sent = batcher()
    out.write("stdout", "a")
    out.write("stdout", "b")
    assert wait_until(lambda: sent, 10), "nothing was sent without a flush()"
    assert "".join(text for _, text in sent) == "ab" and all(name == "stdout" for name, _ in sent)
