"""`Execution` on its own, without Julia: the order in which one call's output, displays and end are
passed on, whatever order the three pipes deliver them in (PROTOCOL.md, "Output markers"), its clock
(timeout, interrupt, kill), and the facts of its result. Also the words those facts are put in
(`juliapool.result`), which are pure functions of an `ExecReply`.

The worker writes `nonce + seq` to both streams before each display `seq` and `nonce + ffffffff` at the
end; the tests write the same bytes, cut wherever a read could cut them.
"""

from __future__ import annotations

import random
import time
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from juliapool.execution import INTERRUPT, KILL, Execution
from juliapool.protocol import Frame, Reply, decode_body, encode_frame
from juliapool.result import (DIED_IDLE, EXITED, NOT_INTERRUPTIBLE, STDIO_CLOSED, STOPPED, TIMEOUT_EXIT_CODE,
                              ExecReply, WorkerEnd, describe_end, leading_notes, stderr_with_notes,
                              trailing_notes)

pytestmark = pytest.mark.timeout(30)

RID = 7
NONCE = "0123456789abcdef" * 2  # 32 hex digits, as protocol.new_nonce() makes
END = (NONCE + "ffffffff").encode()


def marker(seq: int) -> bytes:
    return f"{NONCE}{seq:08x}".encode()


def frame(kind: Reply, fields: Sequence[str], rid: int = RID) -> Frame:
    """A frame as the reader gets it off the wire."""
    return decode_body(encode_frame(kind, rid, fields)[4:])


def done(status: str = "ok", ename: str = "", evalue: str = "", traceback: str = "", retire: str = "",
         result: Sequence[str] = (), rid: int = RID) -> Frame:
    return frame(Reply.DONE, [status, ename, evalue, traceback, retire, *result], rid)


def display(seq: int, data: str, rid: int = RID) -> Frame:
    return frame(Reply.DISPLAY, [f"{seq:08x}", "text/plain", data], rid)


class Record:
    """on_output and on_display in one list of events, in the order they were passed on."""

    def __init__(self) -> None:
        self.events: List[Tuple[str, str]] = []  # ("stdout" | "stderr", text) or ("display", data)

    def on_output(self, name: str, text: str) -> None:
        self.events.append((name, text))

    def on_display(self, bundle: Dict[str, str]) -> None:
        self.events.append(("display", bundle["text/plain"]))

    def text(self, name: str) -> str:
        return "".join(t for n, t in self.events if n == name)

    def merged(self) -> List[Tuple[str, str]]:
        """Events with consecutive pieces of one stream joined (reads cut text anywhere)."""
        out: List[Tuple[str, str]] = []
        for name, text in self.events:
            if out and name != "display" and out[-1][0] == name:
                out[-1] = (name, out[-1][1] + text)
            else:
                out.append((name, text))
        return out


def new(record: Optional[Record] = None, **kwargs) -> Execution:
    record = record or Record()
    return Execution(RID, NONCE, record.on_output, record.on_display, **kwargs)


def end_both(ex: Execution) -> None:
    ex.on_stream("stdout", END)
    ex.on_stream("stderr", END)


# ---- output and the end markers ------------------------------------------------------------------

def test_output_is_passed_on_and_the_call_completes_with_done_and_both_end_markers():
    rec = Record()
    ex = new(rec)
    ex.on_stream("stdout", b"out\n")
    ex.on_stream("stderr", b"err\n")
    assert rec.events == [("stdout", "out\n"), ("stderr", "err\n")], "output goes on as it comes"
    ex.on_stream("stdout", END)
    ex.on_frame(done(result=["text/plain", "3"]))
    assert not ex.complete, "stderr's end marker has not come"
    ex.on_stream("stderr", END)
    assert ex.complete
    rep = ex.reply(None)
    assert (rep.stdout, rep.stderr, rep.status, rep.exit_code, rep.result) == ("out\n", "err\n", "ok", 0,
                                                                                {"text/plain": "3"})
    assert rep.worker_end is None and not rep.worker_died and not rep.timed_out and not ex.late_output


def test_done_before_the_end_markers_waits_for_them_and_keeps_the_output_between():
    rec = Record()
    ex = new(rec)
    ex.on_frame(done("error", "ErrorException", "boom", "ERROR: boom\n"))
    assert not ex.complete
    ex.on_stream("stderr", b"ERROR: boom\n" + END)
    ex.on_stream("stdout", b"last words\n")
    assert not ex.complete
    ex.on_stream("stdout", END)
    assert ex.complete
    rep = ex.reply(None)
    assert (rep.stdout, rep.stderr, rep.status, rep.exit_code, rep.ename, rep.evalue) == (
        "last words\n", "ERROR: boom\n", "error", 1, "ErrorException", "boom")


def test_end_marker_cut_into_single_bytes_is_found_and_never_shown():
    rec = Record()
    ex = new(rec)
    for byte in b"hi" + END:
        ex.on_stream("stdout", bytes([byte]))
    assert rec.text("stdout") == "hi"
    assert ex.ended["stdout"] and not ex.ended["stderr"]


def test_what_only_looks_like_the_start_of_a_marker_is_held_then_shown_verbatim():
    rec = Record()
    ex = new(rec)
    almost = b"x" + NONCE[:31].encode() + b"!"  # the nonce but its last digit
    for byte in almost:
        ex.on_stream("stdout", bytes([byte]))
    assert rec.text("stdout") == almost.decode()
    other = ("f" * 32 + "ffffffff").encode()  # somebody else's end marker: user output
    ex.on_stream("stdout", other)
    assert rec.text("stdout") == almost.decode() + other.decode() and not ex.ended["stdout"]


def test_a_character_cut_between_reads_arrives_whole():
    rec = Record()
    ex = new(rec)
    ex.on_stream("stdout", "é世".encode()[:1])
    ex.on_stream("stdout", "é世".encode()[1:4])
    ex.on_stream("stdout", "é世".encode()[4:] + END)
    assert rec.text("stdout") == "é世" and "\ufffd" not in rec.text("stdout")


def test_output_after_the_end_marker_is_nobodys_and_marks_late_output():
    rec = Record()
    ex = new(rec)
    ex.on_stream("stdout", b"mine" + END + b"a task's")  # in the same read
    ex.on_stream("stderr", END)
    ex.on_stream("stderr", b"a task's too")  # in a later read
    ex.on_frame(done())
    assert ex.complete and ex.late_output
    rep = ex.reply(None)
    assert (rep.stdout, rep.stderr, rep.retire_reason) == ("mine", "", "task")
    assert rec.events == [("stdout", "mine")]


@pytest.mark.parametrize("reason", ["task", "piracy", "main"])
def test_the_workers_retire_reason_reaches_the_reply(reason):
    ex = new()
    end_both(ex)
    ex.on_frame(done(retire=reason))
    assert ex.reply(None).retire_reason == reason


def test_frames_of_another_request_are_ignored():
    rec = Record()
    ex = new(rec)
    end_both(ex)
    ex.on_frame(display(1, "stranger's", rid=RID + 1))
    ex.on_frame(done(rid=RID + 1))
    assert not ex.complete and rec.events == []
    ex.on_frame(done())
    assert ex.complete


# ---- displays between the markers ----------------------------------------------------------------

def test_output_after_a_display_marker_waits_for_the_display():
    rec = Record()
    ex = new(rec)
    ex.on_stream("stdout", b"o1" + marker(1) + b"o2")
    ex.on_stream("stderr", b"e1" + marker(1) + b"e2")
    assert rec.events == [("stdout", "o1"), ("stderr", "e1")]
    ex.on_frame(display(1, "D1"))
    assert rec.events == [("stdout", "o1"), ("stderr", "e1"), ("display", "D1"), ("stdout", "o2"), ("stderr", "e2")]


def test_a_display_waits_until_both_streams_reach_its_marker():
    rec = Record()
    ex = new(rec)
    ex.on_frame(display(1, "D1"))
    ex.on_stream("stdout", b"o1" + marker(1) + b"o2")
    assert rec.events == [("stdout", "o1")], "stderr may still hold output from before the display"
    ex.on_stream("stderr", b"e1")
    assert rec.events == [("stdout", "o1"), ("stderr", "e1")]
    ex.on_stream("stderr", marker(1))
    assert rec.merged() == [("stdout", "o1"), ("stderr", "e1"), ("display", "D1"), ("stdout", "o2")]


def test_consecutive_displays_keep_their_order_when_frames_come_before_markers():
    rec = Record()
    ex = new(rec)
    ex.on_frame(display(1, "D1"))
    ex.on_frame(display(2, "D2"))
    ex.on_stream("stderr", marker(1) + marker(2) + END)
    ex.on_stream("stdout", b"a" + marker(1) + b"b" + marker(2) + b"c" + END)
    ex.on_frame(done())
    assert ex.complete
    assert rec.events == [("stdout", "a"), ("display", "D1"), ("stdout", "b"), ("display", "D2"), ("stdout", "c")]


STDOUT_BYTES = b"o1" + marker(1) + b"o2" + marker(2) + b"o3" + END
STDERR_BYTES = b"e1" + marker(1) + b"e2" + marker(2) + b"e3" + END


def _schedule(rng: random.Random) -> List[Tuple[str, object]]:
    """Both streams cut at random places (inside markers too), interleaved at random with the frames."""
    def cuts(data: bytes) -> List[bytes]:
        points = sorted(rng.sample(range(1, len(data)), rng.randint(0, 6)))
        return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]
    streams: Dict[str, List[Tuple[str, object]]] = {
        "stdout": [("stdout", piece) for piece in cuts(STDOUT_BYTES)],
        "stderr": [("stderr", piece) for piece in cuts(STDERR_BYTES)],
               "frames": [("frame", display(1, "D1")), ("frame", display(2, "D2")), ("frame", done())]}
    order: List[Tuple[str, object]] = []
    while any(streams.values()):  # each source keeps its own order, as a pipe does
        source = rng.choice([k for k, v in streams.items() if v])
        order.append(streams[source].pop(0))
    return order


@pytest.mark.parametrize("seed", range(100))
def test_any_interleaving_of_the_three_pipes_gives_the_order_julia_made(seed):
    rec = Record()
    ex = new(rec)
    for what, item in _schedule(random.Random(seed)):
        if what == "frame":
            ex.on_frame(item)  # type: ignore[arg-type]
        else:
            ex.on_stream(what, item)  # type: ignore[arg-type]
    assert ex.complete and not ex.late_output
    seen = {"stdout": "", "stderr": ""}
    displays = []
    for name, text in rec.events:
        if name == "display":
            # a display goes out after all output before its marker, and before any after it
            expect = {"D1": ("o1", "e1"), "D2": ("o1o2", "e1e2")}[text]
            assert (seen["stdout"], seen["stderr"]) == expect, rec.events
            displays.append(text)
        else:
            seen[name] += text
    assert (seen, displays) == ({"stdout": "o1o2o3", "stderr": "e1e2e3"}, ["D1", "D2"])


# ---- deaths --------------------------------------------------------------------------------------

def test_death_passes_on_held_bytes_and_waiting_displays_then_reports_the_end():
    rec = Record()
    ex = new(rec)
    ex.on_frame(display(1, "D1"))
    ex.on_stream("stdout", b"a" + marker(1) + b"b" + NONCE[:10].encode())  # waits at marker 1; a marker's start held
    ex.on_stream("stderr", b"x")  # never reaches marker 1
    assert rec.events == [("stdout", "a"), ("stderr", "x")]
    ex.on_death()
    assert ex.complete and ex.died
    assert rec.merged() == [("stdout", "a"), ("stderr", "x"), ("stdout", "b" + NONCE[:10]), ("display", "D1")]
    rep = ex.reply(-9)
    assert rep.worker_end == WorkerEnd(-9, EXITED)
    assert (rep.status, rep.exit_code, rep.ename) == ("error", -9, "WorkerDied")
    assert rep.evalue == describe_end(rep.worker_end) == "the Julia worker was killed by signal 9 (SIGKILL)"
    assert (rep.stdout, rep.stderr) == ("ab" + NONCE[:10], "x")


def test_death_does_not_pass_on_output_after_an_end_marker():
    rec = Record()
    ex = new(rec)
    ex.on_stream("stdout", b"mine" + END)
    ex.on_stream("stdout", b"late")
    ex.on_stream("stderr", b"half")
    ex.on_death()
    assert rec.events == [("stdout", "mine"), ("stderr", "half")]


def test_exit_by_the_code_is_a_worker_end_with_its_code():
    ex = new()
    ex.on_stream("stdout", b"bye\n")
    ex.on_death()
    rep = ex.reply(3)
    assert rep.worker_end == WorkerEnd(3, EXITED) and rep.worker_end.by_the_code
    assert (rep.exit_code, rep.stdout) == (3, "bye\n")


def test_unknown_exit_status_and_a_kill_cause_are_reported():
    ex = new()
    ex.on_death()
    rep = ex.reply(None, kill_cause=STOPPED)
    assert rep.worker_end == WorkerEnd(None, STOPPED) and rep.exit_code == -9
    assert not rep.worker_end.by_the_code


def test_death_after_the_call_completed_is_not_the_calls_death():
    ex = new()
    end_both(ex)
    ex.on_frame(done())
    ex.on_death()
    assert not ex.died
    rep = ex.reply(-9)
    assert (rep.status, rep.worker_end) == ("ok", None)


# ---- a stream closed before its end marker -------------------------------------------------------

def test_stream_closed_before_its_end_marker_ends_it_and_retires_the_worker():
    ex = new()
    ex.on_stream("stdout", b"o")
    ex.on_stream("stdout", b"")  # the code closed stdout: no end marker can come on it
    assert ex.deadline() is None, "nothing to wait for but the reply: no kill"
    ex.on_stream("stderr", END)
    assert not ex.complete
    ex.on_frame(done())
    assert ex.complete
    rep = ex.reply(None)
    assert (rep.status, rep.stdout, rep.worker_end, rep.retire_reason) == ("ok", "o", None, "stdio")


def test_stream_closed_after_its_end_marker_needs_nothing():
    ex = new()
    ex.on_stream("stderr", END)
    ex.on_stream("stderr", b"")
    assert ex.deadline() is None
    assert ex.action(time.monotonic() + 3600) == ""


# ---- the clock: timeout, interrupt, kill ---------------------------------------------------------

def test_timeout_asks_for_one_interrupt_then_a_kill_after_the_grace():
    rec = Record()
    ex = new(rec, timeout=1.0, grace=2.0)
    t0 = ex.deadline()
    assert t0 is not None
    assert ex.action(t0 - 0.01) == ""
    assert ex.action(t0) == INTERRUPT and ex.timed_out
    assert ex.action(t0 + 0.5) == "" and ex.deadline() is None, "the interrupt is asked for once"
    ex.interrupted_at = t0  # what Worker.interrupt() records when it sends SIGINT
    assert ex.deadline() == t0 + 2.0
    assert ex.action(t0 + 1.99) == ""
    assert ex.action(t0 + 2.0) == KILL and ex.killed and ex.cause == NOT_INTERRUPTIBLE
    ex.on_stream("stderr", b"working")
    ex.on_death()
    rep = ex.reply(-9)
    assert rep.timed_out and rep.worker_end == WorkerEnd(-9, NOT_INTERRUPTIBLE)
    assert (rep.status, rep.exit_code, rep.ename) == ("error", TIMEOUT_EXIT_CODE, "TimeoutError")
    assert rep.evalue == "Execution timed out after 1 seconds"
    assert rep.stderr == "working\nExecution timed out after 1 seconds\n"
    assert rec.events[-1] == ("stderr", "\nExecution timed out after 1 seconds\n"), "the note is streamed too"
    assert stderr_with_notes(rep) == rep.stderr, "a kill after an interrupt needs no further note"


def test_timeout_whose_interrupt_stops_the_code_keeps_the_worker():
    ex = new(timeout=0.5)
    t0 = ex.deadline()
    assert ex.action(t0) == INTERRUPT
    ex.interrupted_at = t0
    ex.on_stream("stderr", b"partial line\n")
    end_both(ex)
    ex.on_frame(done("error", "InterruptException", "", "ERROR: InterruptException:\n"))
    assert ex.complete and ex.saw_interrupt()
    rep = ex.reply(None)
    assert rep.timed_out and rep.worker_end is None
    assert (rep.exit_code, rep.ename, rep.stderr) == (TIMEOUT_EXIT_CODE, "TimeoutError",
                                                      "partial line\nExecution timed out after 0.5 seconds\n")


def test_interrupt_that_stops_the_code_prints_julias_trace_in_julia_e_style():
    trace = "ERROR: InterruptException:\nStacktrace:\n [1] sleep at ./asyncevent.jl:213\n"
    for print_errors, stderr in ((True, trace), (False, "")):
        ex = new(print_errors=print_errors)
        ex.interrupted_at = time.monotonic()
        end_both(ex)
        ex.on_frame(done("error", "InterruptException", "", trace))
        rep = ex.reply(None)
        assert (rep.stderr, rep.exit_code, rep.ename, rep.timed_out) == (stderr, 1, "InterruptException", False)


def test_interrupt_the_code_ignores_ends_in_a_kill_reported_as_an_interrupt():
    ex = new(grace=1.0)
    t = time.monotonic()
    ex.interrupted_at = t
    assert ex.deadline() == t + 1.0
    assert ex.action(t + 1.0) == KILL
    ex.on_death()
    rep = ex.reply(-9)
    assert (rep.ename, rep.status, rep.exit_code, rep.timed_out) == ("InterruptException", "error", -9, False)
    assert rep.worker_end == WorkerEnd(-9, NOT_INTERRUPTIBLE)


# ---- input and the caller's callbacks ------------------------------------------------------------

def test_input_requests_get_the_callers_answer():
    asked = []
    ex = Execution(RID, NONCE, on_input=lambda prompt, password: asked.append((prompt, password)) or "42")
    assert ex.on_frame(frame(Reply.INPUT, ["n? ", "0"])) == "42"
    assert ex.on_frame(frame(Reply.INPUT, ["secret: ", "1"])) == "42"
    assert asked == [("n? ", False), ("secret: ", True)]
    assert Execution(RID, NONCE).on_frame(frame(Reply.INPUT, ["n? ", "0"])) == "", "no callback: empty input"
    assert Execution(RID, NONCE, on_input=lambda p, pw: None).on_frame(frame(Reply.INPUT, ["n? ", "0"])) == ""


def test_a_raising_callback_is_kept_not_raised_and_the_call_runs_to_its_end():
    calls: List[str] = []
    error = ValueError("callback broke")

    def on_output(name: str, text: str) -> None:
        calls.append(text)
        raise error

    displays: List[dict] = []
    ex = Execution(RID, NONCE, on_output, displays.append, lambda p, pw: "answer")
    ex.on_stream("stdout", b"first" + marker(1))
    ex.on_stream("stderr", marker(1) + b"second")
    ex.on_frame(display(1, "D1"))
    assert ex.on_frame(frame(Reply.INPUT, ["? ", "0"])) == "", "no callback runs after the first error"
    end_both(ex)
    ex.on_frame(done())
    assert ex.complete and ex.callback_error is error
    assert calls == ["first"] and displays == []
    rep = ex.reply(None)
    assert (rep.stdout, rep.stderr, rep.status) == ("first", "second", "ok"), "the result has everything"


# ---- the words, from the facts -------------------------------------------------------------------

def test_no_facts_no_notes():
    rep = ExecReply(stderr="err")
    assert (leading_notes(rep), trailing_notes(rep), stderr_with_notes(rep)) == ([], [], "err")


def test_a_call_on_a_fresh_worker_says_so_before_its_own_stderr():
    rep = ExecReply(stderr="own\n", worker_restarted=True, restarted_after=WorkerEnd(-9, DIED_IDLE))
    note = ("juliapool: the session's worker died while idle (the Julia worker was killed by signal 9 (SIGKILL)); "
            "this call ran on a new worker, earlier state is gone")
    assert leading_notes(rep) == [note]
    assert stderr_with_notes(rep) == note + "\nown\n"
    assert rep.to_result().stderr == note + "\nown\n" and rep.to_result().worker_restarted
    unknown = ExecReply(worker_restarted=True)
    assert leading_notes(unknown) == ["juliapool: the session's worker had ended; this call ran on a new "
                                      "worker, earlier state is gone"]


def test_a_death_is_noted_after_the_stderr_on_a_line_of_its_own():
    rep = ExecReply(stderr="no newline", worker_end=WorkerEnd(-11, EXITED))
    assert trailing_notes(rep) == ["juliapool: the Julia worker was killed by signal 11 (SIGSEGV)"]
    assert stderr_with_notes(rep) == "no newline\njuliapool: the Julia worker was killed by signal 11 (SIGSEGV)\n"
    rep.stderr = "newline\n"
    assert stderr_with_notes(rep) == "newline\njuliapool: the Julia worker was killed by signal 11 (SIGSEGV)\n"


def test_lost_session_state_is_said_with_the_cause():
    rep = ExecReply(worker_end=WorkerEnd(-9, NOT_INTERRUPTIBLE), state_lost=True)
    assert trailing_notes(rep) == [
        "juliapool: the code did not stop after an interrupt, so its worker was killed; the session's state "
        "(variables, functions) is lost; the next call runs on a new worker"]


@pytest.mark.parametrize("end", [WorkerEnd(0, EXITED), WorkerEnd(3, EXITED), WorkerEnd(-9, NOT_INTERRUPTIBLE)],
                         ids=["exit-0", "exit-3", "not-interruptible"])
def test_ends_the_result_already_explains_get_no_note(end):
    # exit(n) is the code's own end, as under `julia -e`; an interrupt's kill is the timeout's or
    # Julia's InterruptException already
    assert trailing_notes(ExecReply(stderr="e\n", worker_end=end)) == []


def test_every_cause_has_its_words():
    assert describe_end(WorkerEnd(None)) == "the Julia worker stopped answering"
    assert describe_end(WorkerEnd(2)) == "the Julia worker exited with code 2"
    assert describe_end(WorkerEnd(-9, STOPPED)) == "the worker was stopped during this call"
    assert describe_end(WorkerEnd(None, STDIO_CLOSED)) == "the session's code closed the worker's stdout or stderr"
