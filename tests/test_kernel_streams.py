"""The kernel's StreamBatcher on its own: order across streams and batching (the output limit is the
pool's: tests/test_limits.py).
(The kernel tests check the same end to end; these pin down the edge cases.)"""

from __future__ import annotations

from typing import List, Tuple

import pytest

from juliapool.kernel.streams import StreamBatcher

pytestmark = pytest.mark.timeout(30)


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
