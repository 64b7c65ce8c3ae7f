"""Real programs give what `julia FILE` gave, in every mode: a sample of the corpus (../shared/corpus,
read where it lies) through spawn mode, the pool and a session, compared with the recorded stdout
bytes and exit code; failing programs exit with 1 and print Julia's error in stderr. Output that is not
valid UTF-8 reaches a caller who asks for bytes unharmed (`ExecReply.stdout_bytes`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from juliapool import JuliaExecutor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import corpus  # noqa: E402  (benchmarks/corpus.py: the corpus and what matching means)

if not (corpus.DEFAULT_DIR / "manifest.jsonl").is_file():
    pytest.skip(f"the corpus of real programs is not at {corpus.DEFAULT_DIR}", allow_module_level=True)

SAMPLE_RUNS = 6  # programs that run, spread over the corpus, quick ones without flags
SAMPLE_FAILING = 3


def _sample() -> List[corpus.Program]:
    programs = corpus.load(corpus.DEFAULT_DIR)
    quick = [p for p in programs if not p.failing and not corpus.known_reason(p, "pool")
             and len(p.expected_stdout) < 20_000 and p.code.count("\n") < 120]
    failing = [p for p in programs if p.failing and not p.syntax_error and not corpus.known_reason(p, "pool")]
    syntax = [p for p in programs if p.failing and p.syntax_error]
    return corpus.spread(quick, SAMPLE_RUNS) + corpus.spread(failing, SAMPLE_FAILING - 1) + syntax[:1]


SAMPLE = _sample()
MODES = ("spawn", "pool", "session")


def _spawn(pool, code: str) -> corpus.Outcome:
    res = JuliaExecutor(timeout=60).run(code)
    return corpus.Outcome(res.stdout.encode(), res.stderr, res.exit_code, 0.0, res.timed_out, lossy=True)


def _pool(pool, code: str) -> corpus.Outcome:
    reply = pool.run(code, timeout=60)
    return corpus.Outcome(reply.stdout_bytes, reply.stderr, reply.exit_code, 0.0, reply.timed_out)


def _session(pool, code: str) -> corpus.Outcome:
    with pool.session() as session:
        reply = session.run(code, kernel=False, timeout=60)
    return corpus.Outcome(reply.stdout_bytes, reply.stderr, reply.exit_code, 0.0, reply.timed_out)


RUNNERS: Dict[str, Callable] = {"spawn": _spawn, "pool": _pool, "session": _session}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("program", SAMPLE, ids=[p.id for p in SAMPLE])
def test_program_matches_julia_file(shared_pool, tmp_path, monkeypatch, program, mode):
    monkeypatch.chdir(tmp_path)  # spawned julia starts here (pooled workers keep their own directory)
    known = corpus.known_reason(program, mode)
    outcome = RUNNERS[mode](shared_pool, program.code)
    why = corpus.mismatch(program, outcome, mode)
    if known:
        # Only the syntax-error program is sampled with a known difference: spawn mode (`julia -e`)
        # prints nothing before the error, where the file printed its earlier statements' output.
        assert outcome.exit_code == 1 and outcome.stdout == b"", (known, why)
        return
    assert why == "", f"{program.path.name} in {mode} mode: {why}\nstderr: {outcome.stderr[:2000]}"


@pytest.mark.timeout(60)
def test_pool_reply_carries_raw_bytes(shared_pool):
    code = 'write(stdout, UInt8[0x41, 0xff, 0xfe, 0x42]); write(stderr, UInt8[0xc3, 0x28])'
    reply = shared_pool.run(code)
    assert reply.stdout_bytes == b"A\xff\xfeB" and reply.stderr_bytes == b"\xc3("
    assert reply.stdout == "A\ufffd\ufffdB"  # the text keeps its replacement characters
    result = shared_pool.execute(code)
    assert isinstance(result.stdout, str) and result.stdout == reply.stdout


@pytest.mark.timeout(60)
def test_session_reply_carries_raw_bytes(shared_pool):
    with shared_pool.session() as session:
        session.run("bad = UInt8[0x80, 0x0a]", kernel=False)
        reply = session.run("write(stdout, bad); print(stderr, \"é\")", kernel=False)
    assert reply.stdout_bytes == b"\x80\n" and reply.stderr_bytes == "é".encode()
