"""The kernel's StreamBatcher on its own: order across streams, batching, and the output limit.
(The kernel tests check the same end to end; these pin down the edge cases.)"""

from __future__ import annotations

from typing import List, Tuple

import pytest

from juliapool.kernel.kernel import MAX_OUTPUT_ENV, StreamBatcher

pytestmark = pytest.mark.timeout(30)


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
