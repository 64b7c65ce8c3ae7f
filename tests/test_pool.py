"""JuliaProcessPool on real Julia workers: the seed API, isolation between calls, output capture,
protocol safety against hostile output, concurrency, lifecycle, recycling and start-up errors.

Crashes, timeouts and interrupts are in test_faults.py; sessions in test_sessions.py.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from typing import List

import pytest

from conftest import Lines, julia_workers_with, pid_alive, run_in_thread, tagged_env, wait_gone, wait_until
from juliapool import (CodeExecResult, JuliaNotFoundError, JuliaProcessPool, PoolBusyError, PoolShutDownError,
                       protocol)


def jl_str(text: str) -> str:
    """A Julia string literal for `text`."""
    return json.dumps(text).replace("$", "\\$")


POOL_TAG = "JULIAPOOL_TEST_POOL"  # set to a value of its own in one pool's env: finds that pool's processes


def stats(pool: JuliaProcessPool, *keys: str) -> tuple:
    """Some of pool.get_stats(), in the order asked."""
    got = pool.get_stats()
    return tuple(got[k] for k in keys)


def no_worker_frames(stderr: str) -> None:
    assert "worker.jl" not in stderr and "include_string" not in stderr and "JuliaPoolWorker" not in stderr, stderr


@pytest.fixture(scope="module")
def pool1():
    """A pool of one worker: tests that need consecutive calls on the same worker."""
    pool = JuliaProcessPool(size=1, timeout=60)
    yield pool
    pool.shutdown()


# ---- the seed API ----------------------------------------------------------------------------------

def test_pool_signature_keeps_the_seed_names_and_defaults():
    params = list(inspect.signature(JuliaProcessPool).parameters.values())
    assert [(p.name, p.default) for p in params[:5]] == [
        ("size", 4), ("timeout", 60), ("julia_path", None), ("optimization_flags", True), ("auto_recover", True)]
    execute = inspect.signature(JuliaProcessPool.execute).parameters
    assert list(execute)[:3] == ["self", "code", "timeout"] and execute["timeout"].default is None


def test_code_exec_result_has_the_seed_fields_first_and_only_optional_ones_after():
    fields = [(f.name, f.default) for f in dataclasses.fields(CodeExecResult)]
    assert fields[:3] == [("stdout", dataclasses.MISSING), ("stderr", dataclasses.MISSING),
                          ("exit_code", dataclasses.MISSING)]
    assert all(default is not dataclasses.MISSING for _, default in fields[3:]), fields


def test_execute_returns_stdout_and_exit_code_0(shared_pool):
    r = shared_pool.execute('println("hello from julia")')
    assert isinstance(r, CodeExecResult)
    assert (r.stdout, r.stderr, r.exit_code) == ("hello from julia\n", "", 0)


def test_uncaught_error_gives_exit_code_1_and_the_julia_error(shared_pool):
    r = shared_pool.execute('println("before"); error("Test error")')
    assert r.exit_code == 1
    assert r.stdout == "before\n"
    assert r.stderr.splitlines()[0] == "ERROR: Test error"
    assert "top-level scope at none:1" in r.stderr
    no_worker_frames(r.stderr)


def test_error_inside_user_function_keeps_user_frames_only(shared_pool):
    r = shared_pool.execute('g() = throw(ArgumentError("bad argument"))\nh() = g()\nh()')
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0] == "ERROR: ArgumentError: bad argument"
    assert re.search(r"\] g\(\) at (\./)?none:1\n", r.stderr) and re.search(r"\] h\(\) at (\./)?none:2\n", r.stderr), r.stderr
    no_worker_frames(r.stderr)


def test_syntax_error_is_an_uncaught_error(shared_pool):
    r = shared_pool.execute("x = )")
    assert r.exit_code == 1 and r.stderr.startswith("ERROR: syntax:"), r.stderr
    no_worker_frames(r.stderr)


def test_struct_prints_without_module_prefix(shared_pool):
    r = shared_pool.execute("struct P; x; end; println(P(1)); println([P(2)])")
    assert r.stdout == "P(1)\nP[P(2)]\n"


def test_execute_accepts_a_timeout(shared_pool):
    r = shared_pool.execute('println("quick")', timeout=30)
    assert (r.stdout, r.exit_code, r.timed_out) == ("quick\n", 0, False)


# ---- no state leaks between plain calls ------------------------------------------------------------

def test_globals_do_not_leak_between_calls(shared_pool):
    # More rounds than workers, so consecutive calls meet on the same worker.
    for i in range(3 * shared_pool.size):
        r = shared_pool.execute(
            f"println(isdefined(@__MODULE__, :leaky)); println(isdefined(Main, :leaky)); leaky = {i}; const C{i} = 1")
        assert (r.stdout, r.exit_code) == ("false\nfalse\n", 0), r


def test_functions_and_methods_do_not_leak_between_calls(shared_pool):
    for i in range(2 * shared_pool.size):
        r = shared_pool.execute(f"println(isdefined(@__MODULE__, :f)); f(x) = x + {i}; println(f(1)); "
                                "println(length(methods(f)))")
        assert r.stdout == f"false\n{1 + i}\n1\n", r


def test_struct_can_be_defined_differently_in_two_calls(pool1):
    # pool1 has one worker, so the two definitions meet in the same Julia process.
    defs = [("struct Foo; a::Int; end; println(Foo(1)); println(fieldnames(Foo))", "Foo(1)\n(:a,)\n"),
            ('struct Foo; b::String; c::Float64; end; println(Foo("x", 2.0)); println(fieldnames(Foo))',
             'Foo("x", 2.0)\n(:b, :c)\n')]
    for code, want in defs + defs[:1]:
        r = pool1.execute(code)
        assert (r.stdout, r.stderr, r.exit_code) == (want, "", 0), r


# ---- output capture --------------------------------------------------------------------------------

def test_stdout_and_stderr_are_kept_apart(shared_pool):
    r = shared_pool.execute('println("to out"); println(stderr, "to err"); print("more out"); print(stderr, "more err")')
    assert (r.stdout, r.stderr, r.exit_code) == ("to out\nmore out", "to err\nmore err", 0)


def test_c_level_output_is_captured(shared_pool):
    r = shared_pool.execute('ccall(:puts, Cint, (Cstring,), "from C puts"); '
                            'ccall(:printf, Cint, (Cstring,), "printf without newline")')
    assert r.exit_code == 0
    assert "from C puts\n" in r.stdout and "printf without newline" in r.stdout


def test_subprocess_output_is_captured_on_its_stream(shared_pool):
    r = shared_pool.execute('run(`echo from echo`); run(`sh -c "echo from sh to stderr >&2"`)')
    assert (r.stdout, r.stderr, r.exit_code) == ("from echo\n", "from sh to stderr\n", 0)


def test_unicode_output(shared_pool):
    r = shared_pool.execute('println("héllo, 世界 🎉"); println(stderr, "ошибка")')
    assert (r.stdout, r.stderr) == ("héllo, 世界 🎉\n", "ошибка\n")


@pytest.mark.timeout(180)
def test_100_megabytes_from_one_call_arrive_complete(shared_pool):
    mib = 2 ** 20
    # 100 blocks of 1 MiB, block i filled with letter i % 26: checks length, order and the tail.
    code = f"for i in 0:99; write(stdout, fill(UInt8(65 + i % 26), {mib})); end; println(stderr, \"done\"); print(\"TAIL\")"
    r = shared_pool.execute(code, timeout=150)
    assert (r.exit_code, r.timed_out, r.stderr) == (0, False, "done\n")
    assert len(r.stdout) == 100 * mib + 4
    assert r.stdout.endswith("V" * 1000 + "TAIL")  # block 99 is "V" (99 % 26 == 21)
    for i in range(100):
        block = r.stdout[i * mib : (i + 1) * mib]
        letter = chr(65 + i % 26)
        assert block[0] == letter and block[-1] == letter and block.count(letter) == mib, f"block {i}"
    assert shared_pool.execute('println("after")').stdout == "after\n"


def test_on_output_streams_while_the_code_runs(shared_pool):
    lines = Lines()
    r = shared_pool.execute('println("first"); sleep(0.5); println("second")', on_output=lines)
    returned_at = time.monotonic()
    assert r.stdout == "first\nsecond\n"
    first_at, stream, text = lines.chunks[0]
    assert stream == "stdout" and "first" in text and "second" not in text
    assert first_at < returned_at - 0.3, "the first chunk must arrive before the sleep ends"
    assert "".join(t for _, s, t in lines.chunks if s == "stdout") == "first\nsecond\n"


def test_on_output_delivers_output_before_the_code_can_finish(shared_pool, tmp_path):
    # The code waits until the callback has seen its first line: without streaming it would time out.
    flag = tmp_path / "seen"

    def on_output(stream: str, text: str) -> None:
        if "waiting" in text:
            flag.touch()

    code = f'println("waiting"); while !isfile({jl_str(str(flag))}); sleep(0.01); end; println("released")'
    r = shared_pool.execute(code, timeout=30, on_output=on_output)
    assert (r.stdout, r.exit_code, r.timed_out) == ("waiting\nreleased\n", 0, False)


def test_on_output_separates_streams(shared_pool):
    seen = []
    r = shared_pool.execute('println("o"); println(stderr, "e")', on_output=lambda s, t: seen.append((s, t)))
    assert r.exit_code == 0
    assert "".join(t for s, t in seen if s == "stdout") == "o\n"
    assert "".join(t for s, t in seen if s == "stderr") == "e\n"


def test_invalid_utf8_output_does_not_break_anything(shared_pool):
    seen = []
    r = shared_pool.execute('write(stdout, UInt8[0xff, 0xfe, 0x41]); write(stderr, UInt8[0xc3]); println()',
                            on_output=lambda s, t: seen.append(t))
    assert r.exit_code == 0
    assert r.stdout == "\ufffd\ufffdA\n"
    assert r.stderr == "\ufffd"
    for _ in range(shared_pool.size + 1):
        assert shared_pool.execute('println("fine")').stdout == "fine\n"


# ---- protocol safety -------------------------------------------------------------------------------

def test_code_reading_stdin_gets_end_of_file_at_once(shared_pool):
    start = time.monotonic()
    r = shared_pool.execute('println(repr(readline())); println(repr(read(stdin, String))); println(eof(stdin))',
                            timeout=20)
    assert (r.stdout, r.exit_code, r.timed_out) == ('""\n""\ntrue\n', 0, False), r
    assert time.monotonic() - start < 10


def _hostile_outputs() -> List[bytes]:
    rnd = os.urandom(200_000)
    fake_frame = protocol.encode_frame("O", 1, ["ok", "", "", ""]) + protocol.encode_frame("H", 0, ["1.5.3", "1"])
    fake_frames = b"".join(protocol.encode_frame("O", i, ["error", "X", "y", "z"]) for i in range(1, 200))
    fake_marker = b"0123456789abcdef" * 2 + b"ffffffff"
    return [rnd, fake_frame + fake_frames, fake_marker, b"<<<END_EXECUTION>>>\n", fake_marker + b"00000001"]


@pytest.mark.parametrize("which", ["random bytes", "fake frames", "fake marker", "seed end marker", "fake display"])
def test_output_imitating_protocol_bytes_is_plain_output(shared_pool, which):
    data = _hostile_outputs()[["random bytes", "fake frames", "fake marker", "seed end marker",
                               "fake display"].index(which)]
    code = (f'data = hex2bytes("{data.hex()}"); write(stdout, data); write(stderr, data); '
            'println(); println("tail"); println(stderr, "tail")')
    r = shared_pool.execute(code, timeout=60)
    assert r.exit_code == 0 and not r.timed_out
    assert r.stdout == (data + b"\ntail\n").decode("utf-8", errors="replace")
    assert r.stderr == (data + b"tail\n").decode("utf-8", errors="replace")
    for _ in range(shared_pool.size + 1):
        after = shared_pool.execute('println("clean"); println(stderr, "clean")')
        assert (after.stdout, after.stderr, after.exit_code) == ("clean\n", "clean\n", 0)


def test_background_output_while_idle_is_not_given_to_the_next_call(pool1):
    r1 = pool1.execute('@async (sleep(0.2); println("late"); println(stderr, "late"))')
    assert (r1.stdout, r1.exit_code) == ("", 0)
    time.sleep(0.8)
    r2 = pool1.execute('println("mine")')
    assert (r2.stdout, r2.stderr) == ("mine\n", "")


def test_background_output_during_the_next_call_is_not_in_its_result(pool1):
    r1 = pool1.execute('@async (sleep(0.2); println("late"); println(stderr, "late"))')
    assert (r1.stdout, r1.exit_code) == ("", 0)
    r2 = pool1.execute('sleep(0.8); println("mine")')  # same worker: the pool has one
    assert "late" not in r2.stdout and "late" not in r2.stderr, r2
    assert (r2.stdout, r2.stderr) == ("mine\n", "")


def test_raising_output_callback_does_not_leak_into_the_next_call(pool1):
    def on_output(stream: str, text: str) -> None:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        pool1.execute('println("a"); sleep(1); println("LEAKED"); println(stderr, "LEAKED")', on_output=on_output)
    for _ in range(2):
        r = pool1.execute('println("next")', timeout=20)
        assert (r.stdout, r.stderr, r.exit_code) == ("next\n", "", 0), r


# ---- concurrency -----------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_eight_threads_fifty_calls_each_get_their_own_answers(shared_pool):
    errors: List[str] = []

    def caller(t: int) -> None:
        for i in range(50):
            r = shared_pool.execute(f'x = {t} * 1000 + {i}; println("T{t} I{i} ", x * 2); print(stderr, "E{t}-{i}")')
            want = (f"T{t} I{i} {(t * 1000 + i) * 2}\n", f"E{t}-{i}", 0)
            if (r.stdout, r.stderr, r.exit_code) != want:
                errors.append(f"thread {t} call {i}: {r!r} != {want!r}")

    threads = [threading.Thread(target=caller, args=(t,), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(200)
    assert not any(t.is_alive() for t in threads), "calls hung"
    assert not errors, "\n".join(errors[:10])


def test_a_caller_waits_for_a_free_worker(pool1):
    lines = Lines()
    first, box1 = run_in_thread(pool1.execute, 'println("started"); sleep(1.5); println("a")', on_output=lines)
    assert lines.wait_for("started\n")
    second = pool1.execute('println("b")')  # the only worker is busy: this waits for it
    second_ended = time.monotonic()
    first.join(30)
    assert box1["result"].stdout == "started\na\n"
    assert second.stdout == "b\n"
    seen, a_arrived = "", None
    for at, _, text in lines.chunks:  # when the first call's last line had arrived
        seen += text
        if a_arrived is None and "started\na" in seen:
            a_arrived = at
    assert a_arrived is not None, lines.chunks
    assert a_arrived < second_ended, "the second call ran only after the first had finished"


def test_checkout_timeout_raises_pool_busy_error():
    with JuliaProcessPool(size=1, checkout_timeout=0.5) as pool:
        lines = Lines()
        holder, box = run_in_thread(pool.execute, 'println("holding"); sleep(3)', on_output=lines)
        assert lines.wait_for("holding\n")
        with pytest.raises(PoolBusyError) as info:
            pool.execute('println("never")')
        assert isinstance(info.value, TimeoutError)
        holder.join(30)
        assert box["result"].exit_code == 0
        assert pool.execute('println("free again")').stdout == "free again\n"


# ---- lifecycle -------------------------------------------------------------------------------------

def test_shutdown_is_idempotent_and_a_closed_pool_refuses_work():
    with JuliaProcessPool(size=1) as pool:
        assert pool.execute('println("up")').stdout == "up\n"
        session = pool.session("kept")
        assert session.execute("x = 1").exit_code == 0
        # a process left running by a call: it must end when its (idle) worker is stopped
        child = int(pool.execute("println(getpid(run(`sleep 1000`, wait=false)))").stdout)
        assert pid_alive(child)
        pids = pool.worker_pids()
    assert pool.closed
    closed = pool.get_stats()
    assert stats(pool, "closed", "workers", "idle", "busy", "starting", "sessions", "calls") == (
        True, 0, 0, 0, 0, 0, 3), closed
    pool.shutdown()
    pool.shutdown()
    assert pool.get_stats() == closed, "shutting down again changes nothing"
    with pytest.raises(PoolShutDownError) as info:
        pool.execute("1")
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(PoolShutDownError):
        pool.session("new")
    with pytest.raises(PoolShutDownError):
        session.execute("println(x)")
    assert not wait_gone(lambda: [p for p in pids + [child] if pid_alive(p)], 10)


@pytest.mark.timeout(120)
def test_shutdown_while_calls_run_ends_them_promptly():
    pool = JuliaProcessPool(size=1)
    try:
        lines = Lines()
        code = 'p = run(`sleep 1000`, wait=false); println("child ", getpid(p)); sleep(60)'
        running, box_running = run_in_thread(pool.run, code, on_output=lines)
        assert lines.wait_for("\n")
        child = int(re.search(r"child (\d+)", lines.text["stdout"]).group(1))
        waiting, box_waiting = run_in_thread(pool.execute, 'println("never runs")')
        time.sleep(0.3)  # the second caller is now waiting for the only worker
        worker_pids = pool.worker_pids()
        start = time.monotonic()
        pool.shutdown()
        assert time.monotonic() - start < 15, "shutdown hung"
    finally:
        pool.shutdown()
    running.join(15)
    waiting.join(15)
    assert not running.is_alive() and not waiting.is_alive(), "a call did not return after shutdown"
    if "result" in box_running:
        reply = box_running["result"]
        assert reply.worker_died and reply.exit_code != 0, reply
    else:
        assert isinstance(box_running["error"], RuntimeError), box_running
    assert isinstance(box_waiting.get("error"), PoolShutDownError), box_waiting
    assert not wait_gone(lambda: [p for p in worker_pids + [child] if pid_alive(p)], 10), \
        "the worker and the process its code started must be gone"


@pytest.mark.timeout(180)
def test_workers_are_stopped_when_the_interpreter_exits():
    script = textwrap.dedent("""
        import threading
        from juliapool import JuliaProcessPool
        pool = JuliaProcessPool(size=2)
        assert pool.execute('println("alive")').stdout == "alive\\n"
        busy = threading.Thread(target=pool.execute, args=('sleep(100)',), daemon=True)
        busy.start()
        import time; time.sleep(0.5)
        print(" ".join(map(str, pool.worker_pids())), flush=True)
        # no shutdown(): the interpreter exits with one worker idle and one busy
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=150,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    assert not wait_gone(lambda: [p for p in pids if pid_alive(p)], 15), "workers outlived their interpreter"


# ---- long life: recycling --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recycling_pool():
    pool = JuliaProcessPool(size=1, max_calls=5)
    yield pool
    pool.shutdown()


def _pid_runs(pids: List[int]) -> List[int]:
    """Lengths of the runs of equal consecutive pids."""
    runs: List[int] = []
    for i, pid in enumerate(pids):
        if i and pid == pids[i - 1]:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


@pytest.mark.timeout(180)
def test_worker_without_session_is_recycled_after_max_calls(recycling_pool):
    pids = [int(recycling_pool.execute("println(getpid())").stdout) for _ in range(12)]
    runs = _pid_runs(pids)
    assert len(runs) >= 2 and max(runs) <= 5, f"pids per call: {pids}"
    assert len(set(pids)) == len(runs), "a recycled worker never comes back"
    assert not wait_gone(lambda: [p for p in set(pids[:-1]) - {pids[-1]} if pid_alive(p)], 15), \
        "recycled workers are stopped"


@pytest.mark.timeout(180)
def test_worker_holding_a_session_is_not_recycled(recycling_pool):
    session = recycling_pool.session("pinned")
    pid = int(session.execute("counter = 0; println(getpid())").stdout)
    for i in range(8):
        s = session.execute("counter += 1; println(getpid(), \" \", counter)")
        p = recycling_pool.execute("println(getpid())")  # plain calls share the only worker
        assert s.stdout == f"{pid} {i + 1}\n", s
        assert p.stdout == f"{pid}\n", p
        assert not s.worker_restarted
    session.close()
    later = [int(recycling_pool.execute("println(getpid())").stdout) for _ in range(3)]
    assert any(p != pid for p in later), "without its session the worn worker is recycled"


# ---- start-up --------------------------------------------------------------------------------------

def test_wait_false_starts_one_worker_and_the_others_after_the_first_call(monkeypatch):
    import juliapool.workers as pool_module  # the start policy lives there

    monkeypatch.setattr(pool_module, "SPARES_AFTER", 3600.0)  # only the first call may start them
    env = tagged_env(POOL_TAG)
    pool = JuliaProcessPool(size=3, wait=False, env=env)
    try:
        assert stats(pool, "workers", "starting") == (0, 3)  # returned at once, all three to come
        assert wait_until(lambda: stats(pool, "workers") == (1,), 60)
        assert stats(pool, "workers", "idle", "starting") == (1, 1, 2)
        assert len(julia_workers_with(POOL_TAG, env[POOL_TAG])) == 1, "the other two are held back"
        assert pool.execute("print(1)").stdout == "1"
        assert wait_until(lambda: stats(pool, "workers", "starting") == (3, 0), 60)
        assert len(julia_workers_with(POOL_TAG, env[POOL_TAG])) == 3
    finally:
        pool.shutdown()


def test_wait_false_starts_the_others_when_a_second_caller_needs_one(monkeypatch, tmp_path):
    import juliapool.workers as pool_module  # the start policy lives there

    monkeypatch.setattr(pool_module, "SPARES_AFTER", 3600.0)
    go = tmp_path / "go"
    env = tagged_env(POOL_TAG)
    pool = JuliaProcessPool(size=2, wait=False, env=env)
    try:
        # The first call holds the only worker until the test creates `go`.
        first, first_box = run_in_thread(pool.execute, f"while !isfile({jl_str(str(go))}) sleep(0.05) end; print(getpid())")
        assert wait_until(lambda: stats(pool, "workers", "busy") == (1, 1), 60)
        assert stats(pool, "starting") == (1,) and len(julia_workers_with(POOL_TAG, env[POOL_TAG])) == 1, \
            "the second worker is still held back"
        second = pool.execute("print(getpid())")  # served by a worker started for it
        go.touch()
        first.join(60)
        assert first_box["result"].stdout != second.stdout
    finally:
        pool.shutdown()


def test_wait_false_starts_the_others_soon_after_the_first_is_ready(monkeypatch):
    import juliapool.workers as pool_module  # the start policy lives there

    monkeypatch.setattr(pool_module, "SPARES_AFTER", 0.1)
    pool = JuliaProcessPool(size=2, wait=False)
    try:
        assert wait_until(lambda: stats(pool, "workers", "starting") == (2, 0), 60)  # without any call
    finally:
        pool.shutdown()


def test_bad_julia_path_raises_julia_not_found():
    with pytest.raises(JuliaNotFoundError) as info:
        JuliaProcessPool(size=1, julia_path="/nonexistent/bin/julia")
    assert isinstance(info.value, FileNotFoundError)
    assert "/nonexistent/bin/julia" in str(info.value)


def test_julia_path_that_is_a_directory_raises_julia_not_found(tmp_path):
    with pytest.raises(JuliaNotFoundError):
        JuliaProcessPool(size=1, julia_path=str(tmp_path))


def test_worker_that_cannot_start_raises_with_julias_stderr():
    with pytest.raises(RuntimeError) as info:
        JuliaProcessPool(size=1, julia_args=["--no-such-flag"])
    text = str(info.value)
    assert text.startswith("Failed to create worker: "), text
    assert "--no-such-flag" in text and "ERROR" in text, text


@pytest.mark.timeout(150)
def test_failed_preload_raises_with_julias_error():
    with pytest.raises(RuntimeError) as info:
        JuliaProcessPool(size=1, preload=["NoSuchPackage"])
    text = str(info.value)
    assert text.startswith("Failed to create worker: "), text
    assert "ArgumentError: Package NoSuchPackage not found" in text, text


@pytest.mark.timeout(150)
def test_preload_and_warmup_run_before_the_worker_takes_work():
    with JuliaProcessPool(size=1, preload=["LinearAlgebra"],
                          warmup="global WARMED = 42; global WARM_PID = getpid()") as pool:
        r = pool.execute("println(isdefined(Main, :LinearAlgebra)); println(Main.WARMED); "
                         "println(Main.WARM_PID == getpid()); using LinearAlgebra; println(norm([3.0, 4.0]))")
        assert (r.stdout, r.exit_code) == ("true\n42\ntrue\n5.0\n", 0), r
