"""The corpus of real Julia programs (../shared/corpus, see its README): what each program is, what
`julia FILE` printed for it, and whether a run's outcome matches that. Used by bench_programs.py and
by tests/test_corpus_parity.py. The corpus is read where it lies; nothing of it is copied.

A program that runs must give the recorded stdout bytes and exit code 0. A failing one must exit
with 1 and print Julia's error as `julia -e` prints it (the first line of `FNNN.exec.err`, which
lacks the `LoadError: ` a file adds), and the stdout `julia FILE` printed before the error.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"

# Why a flagged program may not match, as the corpus manifest names the flags.
FLAG_REASONS = {
    "exit": "calls exit(): a pooled worker ends with it (the pool replaces it)",
    "args": "reads ARGS, which a code string does not have",
    "names": "lists names(Main); pooled code runs in a module of its own",
    "writes": "writes a file into the working directory",
    "random": "prints random numbers: the recorded run drew other ones",
    "time": "prints times or sleeps: its output or duration varies",
}


@dataclass
class Program:
    id: str
    path: Path
    flags: List[str]
    expected_stdout: bytes
    expected_exit: int
    expected_error: str = ""  # first line of Julia's error under -e (failing programs)
    file_error: str = ""  # the same as `julia FILE` printed it, without the `LoadError: ` it adds
    error_kind: str = ""
    _code: Optional[str] = field(default=None, repr=False)

    @property
    def failing(self) -> bool:
        return self.expected_exit != 0

    @property
    def code(self) -> str:
        if self._code is None:
            self._code = self.path.read_text(encoding="utf-8")
        return self._code

    @property
    def syntax_error(self) -> bool:
        return self.error_kind.startswith("syntax")


@dataclass
class Outcome:
    stdout: bytes
    stderr: str
    exit_code: int
    seconds: float
    timed_out: bool = False
    lossy: bool = False  # stdout came as text: bytes that are not UTF-8 are U+FFFD in it


def load(directory: Path = DEFAULT_DIR, limit: Optional[int] = None, only: Sequence[str] = ()) -> List[Program]:
    """The corpus's programs (runs first, then failing ones), optionally only the ids in `only` or the
    first `limit` of each kind in proportion (a sample spread over the whole corpus)."""
    directory = Path(directory)
    runs = [_program(directory, row) for row in _rows(directory / "manifest.jsonl")]
    fails = [_program(directory, row) for row in _rows(directory / "manifest_failing.jsonl")]
    programs = runs + fails
    if only:
        programs = [p for p in programs if p.id in only]
    elif limit is not None and limit < len(programs):
        n_fails = min(len(fails), max(1, round(limit * len(fails) / len(programs))))
        programs = spread(runs, limit - n_fails) + spread(fails, n_fails)
    return programs


def spread(items: list, n: int) -> list:
    """n items evenly spaced over the list (the corpus is sorted by task name, not by size)."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def _rows(path: Path) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _program(directory: Path, row: dict) -> Program:
    path = directory / row["file"]
    out = path.with_name(row["id"] + ".out").read_bytes()
    if row["spawn_exit"] == 0:
        return Program(row["id"], path, row.get("flags", []), out, 0)
    exec_err, file_err = (_first_line(path.with_name(row["id"] + ext)) for ext in (".exec.err", ".err"))
    return Program(row["id"], path, row.get("flags", []), out, row["spawn_exit"], exec_err,
                   file_err.replace("ERROR: LoadError: ", "ERROR: ", 1), row.get("error_kind", ""))


def _first_line(path: Path) -> str:
    return next(iter(path.read_text(encoding="utf-8", errors="replace").splitlines()), "")


def mismatch(program: Program, outcome: Outcome, mode: str) -> str:
    """'' if the outcome matches `julia FILE`, else what differs, in a few words. A failing program's
    error is compared with the one `julia -e` prints in spawn mode (it parses the whole code before it
    runs any), with the one `julia FILE` prints in the others (they run statement by statement)."""
    if outcome.timed_out:
        return "timed out"
    if outcome.exit_code != program.expected_exit:
        return f"exit code {outcome.exit_code}, expected {program.expected_exit}"
    if program.failing:
        first = next((line for line in outcome.stderr.splitlines() if line.startswith("ERROR")), "")
        want = program.expected_error if mode.startswith("spawn") else program.file_error
        if first != want:
            return f"error {first[:80]!r}, expected {want[:80]!r}"
    want = program.expected_stdout
    if outcome.lossy:
        want = want.decode("utf-8", errors="replace").encode()
    if outcome.stdout != want:
        return "stdout differs " + _first_difference(want, outcome.stdout)
    return ""


def _first_difference(want: bytes, got: bytes) -> str:
    a, b = want.splitlines(), got.splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"at line {i + 1}: {y[:60]!r}, expected {x[:60]!r}"
    return f"({len(b)} lines, expected {len(a)})"


def known_reason(program: Program, mode: str) -> str:
    """Why a program is known not to match in a mode ('' if it should)."""
    if program.syntax_error and mode.startswith("spawn"):
        return ("syntax error: `julia -e` parses the whole code first and prints nothing, "
                "`julia FILE` runs the statements before the error")
    flags = list(program.flags)
    if "names(Main)" in program.code and "names" not in flags:
        flags.append("names")  # the manifest flags only some of them
    return "; ".join(FLAG_REASONS.get(f, f) for f in flags)


def clear_directory(path: Path) -> List[str]:
    """Empty the working directory between programs; returns the names a program left there."""
    left = sorted(os.listdir(path))
    for name in left:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    return left
