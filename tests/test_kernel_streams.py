"""The kernel's StreamBatcher on its own: order across streams, batching, and the output limit.
(The kernel tests check the same end to end; these pin down the edge cases.)

Text waits at most STREAM_FLUSH_INTERVAL before it goes out; on a loaded machine that timer could
fire between two writes of a test and cut a batch. So the tests that assert exact batches set the
interval out of reach, and one test checks the timer on its own.
"""

from __future__ import annotations

from typing import List, Tuple

import pytest

from conftest import wait_until
from juliapool.kernel import kernel as kernel_module
from juliapool.kernel.kernel import MAX_OUTPUT_ENV, StreamBatcher

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _no_timer_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only flush() and a change of stream send text: batches do not depend on timing."""
    monkeypatch.setattr(kernel_module, "STREAM_FLUSH_INTERVAL", 3600.0)


def batcher(limit: int = 0) -> Tuple[StreamBatcher, List[Tuple[str, str]]]:
    sent: List[Tuple[str, str]] = []
    return StreamBatcher(lambda name, text: sent.append((name, text)), limit), sent


def test_pieces_of_one_stream_go_out_together_and_streams_keep_their_order() -> None:
    out, sent = batcher()
    for piece in ("a", "b", "c"):
        out.write("stdout", piece)
    out.write("stderr", "E")
    out.write("stdout", "d")
    out.flush()
    assert sent == [("stdout", "abc"), ("stderr", "E"), ("stdout", "d")]


def test_the_limit_cuts_inside_a_piece_and_notes_it_once() -> None:
    out, sent = batcher(limit=10)
    out.write("stdout", "12345678")
    out.write("stderr", "abcdef")  # crosses the limit: "ab" kept
    out.write("stdout", "never shown")
    out.write("stderr", "nor this")
    out.flush()
    assert sent[0] == ("stdout", "12345678")
    name, text = sent[1]
    assert name == "stderr" and text.startswith("ab\n[juliapool: output truncated")
    assert "more than 10 characters" in text and MAX_OUTPUT_ENV in text
    assert len(sent) == 2


def test_exactly_the_limit_is_not_truncated() -> None:
    out, sent = batcher(limit=6)
    out.write("stdout", "123")
    out.write("stdout", "456")
    out.flush()
    assert sent == [("stdout", "123456")]
    out.write("stdout", "7")  # one more: only the note
    out.write("stdout", "8")
    out.flush()
    assert len(sent) == 2 and sent[1][1].startswith("\n[juliapool: output truncated")


def test_no_limit() -> None:
    out, sent = batcher(limit=0)
    out.write("stdout", "x" * 5_000_000)
    out.flush()
    assert sent == [("stdout", "x" * 5_000_000)]


def test_text_goes_out_by_itself_after_the_flush_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_module, "STREAM_FLUSH_INTERVAL", 0.05)
    out, sent = batcher()
    out.write("stdout", "a")
    out.write("stdout", "b")
    assert wait_until(lambda: sent, 10), "nothing was sent without a flush()"
    assert "".join(text for _, text in sent) == "ab" and all(name == "stdout" for name, _ in sent)
