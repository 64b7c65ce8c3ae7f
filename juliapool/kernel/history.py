"""The kernel's cell history for `history_request` (a front end's up-arrow, %history): this kernel
process's cells only, not kept across restarts."""

from __future__ import annotations

import fnmatch
from typing import Any, List, Optional, Tuple

SESSION = 1  # the history "session" number of the kernel's one session


class CellHistory:
    """(execution_count, code, text/plain of the result) for each stored cell."""

    def __init__(self) -> None:
        self._entries: List[List[Any]] = []

    def add(self, count: int, code: str) -> List[Any]:
        """Store a cell; the returned entry's last item is set once its result is known."""
        entry = [count, code, None]
        self._entries.append(entry)
        return entry

    def query(self, kind: str, output: bool, session: Optional[int] = None, start: Optional[int] = None,
              stop: Optional[int] = None, n: Optional[int] = None, pattern: Optional[str] = None,
              unique: bool = False) -> List[Tuple[int, int, Any]]:
        """The rows of a history_reply for a request of `kind` "tail", "range" or "search"."""
        picked = self._entries
        if kind == "tail":
            picked = picked[-n:] if n else list(picked)
        elif kind == "range":
            # Session 0 is "the current one" in the protocol; SESSION is what we report.
            picked = [] if session not in (None, 0, SESSION) else picked
            picked = [e for e in picked if (start or 0) <= e[0] and (stop is None or e[0] < stop)]
        elif kind == "search":
            picked = _search(picked, pattern, unique, n)
        else:
            picked = []
        return [(SESSION, line, (code, text) if output else code) for line, code, text in picked]


def _search(entries: List[List[Any]], pattern: Optional[str], unique: bool, n: Optional[int]) -> List[List[Any]]:
    picked = [e for e in entries if fnmatch.fnmatchcase(e[1], pattern or "*")]
    if unique:  # the latest of each distinct input, in order
        latest = {e[1]: e for e in picked}
        picked = [e for e in picked if latest[e[1]] is e]
    return picked[-n:] if n else picked
