"""The pool server through real processes: a `juliapool serve` process, clients in other processes,
real Julia workers. Faults are injected on purpose: clients and servers killed with SIGKILL, another
uid, stale sockets, two servers racing."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest

import juliapool
from juliapool import ServerGoneError, ServerUnavailableError
from juliapool.result import CLIENT_GONE

from conftest import pid_alive, wait_until
from server_support import (Server, client_json, kill9, package_for_another_user, run_client, socket_path,
                            spawn_client, wait_dead, wait_stats)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def server():
    with Server(socket_path(), "--workers", "2", "--max-workers", "3", "--warmup", "const SERVED_WARM = 42") as srv:
        yield srv


def test_clients_in_other_processes_share_the_servers_workers(server):
    code = """
    for i in range(3):
        r = client.run("print(getpid())")
        print(json.dumps([int(r.stdout), r.status]))
    """
    first, second = client_json(server.path, code), client_json(server.path, code)
    workers = set(server.worker_pids())
    assert {pid for pid, _ in first + second} <= workers  # the server's own Julia processes
    assert all(status == "ok" for _, status in first + second)
    died = client_json(server.path, """print(json.dumps(client.execute('print(stderr, "e"); exit(3)').__dict__))""")
    assert died[0]["exit_code"] == 3 and died[0]["stderr"] == "e"  # the exit code comes from the server, its parent
    stats = wait_stats(server, lambda s: s["calls"] >= 7 and s["clients"] == 1)  # the one asking
    assert stats["restarts"] >= 1


def test_a_session_outlives_its_clients_connection(server):
    first = client_json(server.path, """
    s = client.session("nb-reattach")
    s.execute("x = 41")
    print(json.dumps([s.execute("print(getpid())").stdout, s.attached]))
    """)
    second = client_json(server.path, """
    s = client.session("nb-reattach")
    r = s.run("x + 1")
    print(json.dumps([s.execute("print(getpid())").stdout, s.attached, r.result["text/plain"], r.worker_restarted]))
    s.close()
    """)
    assert first[0] == [second[0][0], False]
    assert second[0][1:] == [True, "42", False]
    wait_stats(server, lambda s: s["sessions"] == 0 and s["clients"] == 1)


def test_a_session_can_lease_its_worker_before_its_first_call(server):
    got = client_json(server.path, """
    s = client.session("nb-ahead")
    s.prepare()                      # what a kernel does while Jupyter connects to it
    leased = client.get_stats()["sessions"]
    print(json.dumps([leased, s.execute("print(getpid())").stdout, s.attached]))
    s.close()
    """)
    leased, pid, attached = got[0]
    assert leased == 1 and int(pid) in server.worker_pids() and attached is False
    wait_stats(server, lambda s: s["sessions"] == 0 and s["clients"] == 1)


def test_a_client_killed_while_idle_gives_its_worker_back(server):
    client = spawn_client(server.path, """
    print(client.run("print(getpid())").stdout, flush=True)
    time.sleep(300)
    """)
    pid = int(client.first_line)
    restarts = server.stats()["restarts"]
    kill9(client)
    stats = wait_stats(server, lambda s: s["clients"] == 1 and any(
        w["pid"] == pid and w["state"] == "idle" for w in s["worker_list"]))
    assert stats["restarts"] == restarts and pid_alive(pid)  # clean: lent again, not replaced


def test_a_client_killed_mid_call_has_its_worker_killed_and_its_session_says_so(server):
    client = spawn_client(server.path, """
    s = client.session("nb-killed")
    s.execute("y = 1")
    print(s.execute("print(getpid())").stdout, flush=True)
    s.execute("sleep(300)")
    """)
    pid = int(client.first_line)
    wait_until(lambda: False, 0.5)  # let it send the sleep
    kill9(client)
    assert wait_dead(pid, 15), "the worker running a dead client's call was not killed"
    after = client_json(server.path, """
    s = client.session("nb-killed")
    r = s.run("isdefined(Main, :y)", kernel=False)
    print(json.dumps([r.worker_restarted, r.restarted_after.cause if r.restarted_after else None, s.attached]))
    s.close()
    """)
    assert after[0] == [True, CLIENT_GONE, False]
    assert server.stats()["killed_mid_call"] >= 1


def test_timeouts_interrupts_and_deaths_on_a_lent_worker(server):
    out = client_json(server.path, """
    r = client.run('println("a"); flush(stdout); sleep(60)', timeout=1)
    print(json.dumps([r.timed_out, r.stdout]))
    r = client.run("ccall(:abort, Cvoid, ())")
    print(json.dumps([r.worker_died, r.exit_code]))
    print(json.dumps([client.execute("println(2)").stdout]))
    """)
    assert out[0] == [True, "a\n"]
    assert out[1] == [True, -signal.SIGABRT]
    assert out[2] == ["2\n"]


def test_status_prints_workers_sessions_and_clients(server):
    holder = spawn_client(server.path, """
    s = client.session("nb-status"); print(s.execute("print(1)").stdout, flush=True); time.sleep(300)
    """)
    try:
        out = subprocess.run([sys.executable, "-m", "juliapool.cli", "status", "--socket", str(server.path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "nb-status: worker pid" in out.stdout and f"attached to pid {holder.pid}" in out.stdout
        assert f"pid {holder.pid}: 1 lease(s)" in out.stdout
    finally:
        kill9(holder)


def test_max_workers_is_a_ceiling_and_idle_borrows_are_given_back():
    with Server(socket_path(), "--workers", "1", "--max-workers", "2") as srv:
        holder = spawn_client(srv.path, """
        client.execute("1")                       # a plain borrow, kept idle by this client
        s = client.session("hold"); s.execute("1")  # and a session: both workers are out
        print("holding", flush=True)
        time.sleep(300)
        """)
        try:
            # a third caller: no worker may start, so the server asks the holder for its idle borrow
            out = client_json(srv.path, "print(json.dumps(client.execute('println(7)').stdout))")
            assert out == ["7\n"]
            busy = run_client(srv.path, """
            s = client.session("hold")          # out on the holder's lease: waits, then gives up
            client.checkout_timeout = 1
            try:
                s.execute("1")
            except juliapool.PoolBusyError as e:
                print("busy:", e)
            """)
            assert "busy:" in busy.stdout
            assert len([w for w in srv.stats()["worker_list"]]) <= 2
        finally:
            kill9(holder)


def test_another_user_is_refused():
    with Server(socket_path(), "--workers", "1") as srv, package_for_another_user() as env:
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        code = "print('connected')"
        denied = run_client(srv.path, code, check=False, preexec=as_nobody, env=env)
        assert denied.returncode != 0 and "ServerUnavailableError" in denied.stderr
        assert "not open to this user (Permission denied)" in denied.stderr  # the 0700 folder keeps it out
        assert stat.S_IMODE(os.stat(srv.path.parent).st_mode) == 0o700
        # Even with the folder and socket opened up by mistake, the server checks the peer's uid.
        for folder in (srv.path.parent.parent, srv.path.parent):
            os.chmod(folder, 0o755)
        os.chmod(srv.path, 0o777)
        mistaken = run_client(srv.path, code, check=False, preexec=as_nobody, env=env)
        assert "is served by uid 0, not by this user" in mistaken.stderr  # the client checks the server too
        raw = ("import socket, sys\n"
               "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1])\n"
               "print(s.recv(65536).decode())\n"
               "try:\n    print(s.recv(65536) == b'')\nexcept OSError as e:\n    print(e.errno is not None)\n")
        refused = subprocess.run([*as_nobody, sys.executable, "-c", raw, str(srv.path)], capture_output=True,
                                 text=True, timeout=60)
        assert '"error":"refused"' in refused.stdout and "serves uid 0 only, not uid 65534" in refused.stdout
        assert refused.stdout.splitlines()[-1] == "True"  # and it hung up
        kernels = srv.path.with_name("kernels.sock")  # the kernel zygote checks its peers too
        os.chmod(kernels, 0o777)
        zygote = subprocess.run([*as_nobody, sys.executable, "-c", raw.replace("print(s.recv(65536).decode())\n", ""),
                                 str(kernels)], capture_output=True, text=True, timeout=60)
        assert zygote.stdout.strip() == "True", zygote.stderr  # hung up without a word
        assert "refused a connection" in srv.log_text()
        with juliapool.connect(srv.path) as mine:
            assert mine.execute("println(1)").stdout == "1\n"


def test_a_stale_socket_is_replaced_and_a_race_has_one_winner():
    path = socket_path()
    first = Server(path, "--workers", "1")
    first.stop(signal.SIGKILL)
    assert path.exists()  # left behind by the killed server
    with pytest.raises(ServerUnavailableError):
        juliapool.connect(path)
    racers = [Server(path, "--workers", "1", wait=False) for _ in range(2)]
    try:
        assert wait_until(lambda: any(r.proc.poll() is not None for r in racers), 60)
        loser = next(r for r in racers if r.proc.poll() is not None)
        winner = next(r for r in racers if r is not loser)
        assert loser.proc.returncode == 1 and "already runs" in loser.log_text()
        assert wait_until(winner.ready, 60)
        with juliapool.connect(path) as client:
            assert client.server_pid == winner.proc.pid
            assert client.execute("println(5)").stdout == "5\n"
    finally:
        for r in racers:
            r.stop()


def test_clients_of_a_killed_server_get_server_gone_and_no_worker_is_left():
    with Server(socket_path(), "--workers", "1") as srv:
        client = juliapool.connect(srv.path)
        pid = int(client.execute("print(getpid())").stdout)  # kept by this client between calls
        session = client.session("held")
        held = int(session.execute("print(getpid())").stdout)  # leased for the session's life
        srv.stop(signal.SIGKILL)
        assert wait_dead(pid, 15) and wait_dead(held, 15), "a worker outlived its killed server"
        with pytest.raises(ServerGoneError, match="went away"):
            client.execute("1")
        with pytest.raises(ServerGoneError):
            session.execute("1")
        client.close()


def test_no_server_is_a_clear_error():
    with pytest.raises(ServerUnavailableError, match="juliapool serve"):
        juliapool.connect(socket_path())


def test_threads_and_asyncio_share_one_client(server):
    out = client_json(server.path, """
    import asyncio, threading
    results = []
    def call(i):
        results.append(client.execute(f"sleep(0.3); print({i})").stdout)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]  # more callers than workers
    [t.start() for t in threads]; [t.join() for t in threads]
    async def many():
        return [r.stdout for r in await asyncio.gather(*(client.execute_async(f"print({i})") for i in range(3)))]
    print(json.dumps([sorted(results), asyncio.run(many())]))
    """)
    assert out[0] == [["0", "1", "2", "3"], ["0", "1", "2"]]


def test_workers_are_warmed_up_as_told(server):
    with juliapool.connect(server.path) as client:
        assert client.execute("println(Main.SERVED_WARM)").stdout == "42\n"


def test_an_idle_server_stops_by_itself_and_removes_its_socket():
    srv = Server(socket_path(), "--workers", "1", "--idle-timeout", "2", "--session-ttl", "3")
    try:
        with juliapool.connect(srv.path) as client:
            assert client.execute("println(1)").stdout == "1\n"  # a client: the clock waits
            client.session("left-behind").execute("x = 1")  # a session outlives the client...
        assert srv.stats()["sessions"] == 1
        # ... until its TTL; then nothing holds the server, and it stops after its idle timeout
        assert wait_until(lambda: srv.proc.poll() is not None, 60), "the idle server did not stop"
        assert srv.proc.returncode == 0 and not srv.path.exists()
    finally:
        srv.stop()


def test_the_launcher_finds_the_same_folder_as_the_library(monkeypatch, tmp_path):
    from juliapool.kernel import launcher
    from juliapool.wire import default_socket_path

    for env in ({"JULIAPOOL_SOCKET": str(tmp_path / "x" / "s.sock")}, {"XDG_RUNTIME_DIR": str(tmp_path)}, {}):
        for name in ("JULIAPOOL_SOCKET", "XDG_RUNTIME_DIR"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert launcher.socket_folder() == str(default_socket_path().parent)
