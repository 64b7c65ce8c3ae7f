"""The kernelspec command of `juliapool-kernel-install --server`: a tiny program that asks the pool
server's kernel zygote (juliapool/kernel/zygote.py) to fork this notebook's kernel, then stays as
the process Jupyter manages.

    python -S .../juliapool/kernel/launcher.py -f CONNECTION_FILE [kernel options]

It is run by its path and imports only the standard library, so it starts in a few milliseconds.
It hands the zygote its kernel options, environment, working folder, stdin, stdout and stderr; then
passes SIGINT, SIGTERM and SIGHUP on to the kernel and exits with the kernel's exit status. If it is
killed (even by SIGKILL), the zygote sees its connection end and ends the kernel. When no zygote
answers (no server runs yet, or it cannot fork kernels), it becomes the ordinary kernel
(`python -m juliapool.kernel --server ...`), which starts the server for the notebooks after it.
"""

import json
import os
import select
import signal
import socket
import sys

KERNELS_SOCKET = "kernels.sock"  # juliapool.kernel.zygote.KERNELS_SOCKET


def socket_folder() -> str:
    """The pool server's folder, as juliapool.wire.default_socket_path() finds it (tested to agree)."""
    chosen = os.environ.get("JULIAPOOL_SOCKET", "").strip()
    if chosen:
        return os.path.dirname(os.path.abspath(os.path.expanduser(chosen)))
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime) and os.path.isdir(runtime):
        return os.path.join(runtime, "juliapool")
    return f"/tmp/juliapool-{os.getuid()}"


def ask_zygote(args: list) -> "tuple":
    """Connect and send the launch request; (socket, kernel pid), or None if no zygote serves us."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(os.path.join(socket_folder(), KERNELS_SOCKET))
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        if int.from_bytes(creds[4:8], sys.byteorder) != os.getuid():
            raise OSError("the kernel zygote belongs to another user")
        request = {"op": "launch", "argv": args, "env": dict(os.environ), "cwd": os.getcwd()}
        socket.send_fds(sock, [json.dumps(request).encode()], [0, 1, 2])
        answer = json.loads(sock.recv(65536) or b"{}")
        if answer.get("op") != "started":
            raise OSError(f"the kernel zygote did not start a kernel: {answer}")
        return sock, int(answer["pid"])
    except (OSError, ValueError) as e:
        sock.close()
        sys.stderr.write(f"juliapool launcher: no kernel zygote ({e}); starting the kernel itself\n")
        return None


def wait_for_kernel(sock: socket.socket, pid: int) -> int:
    """Pass signals on to the kernel until the zygote says it exited; its exit status."""
    def forward(signum: int, frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    jupyter = _pidfd(os.environ.get("JPY_PARENT_PID", ""))  # the front end's server, as ipykernel watches it
    while True:
        ready, _, _ = select.select([sock] + ([jupyter] if jupyter >= 0 else []), [], [])
        if jupyter in ready:  # Jupyter is gone: so is the notebook
            forward(signal.SIGTERM, None)
            jupyter = -1
        if sock not in ready:
            continue
        data = sock.recv(65536)
        if not data:  # the zygote ended (its server did): the kernel goes on; wait for it alone
            return wait_alone(pid)
        message = json.loads(data)
        if message.get("op") == "exited":
            code = int(message.get("code", 1))
            return code if code >= 0 else 128 - code


def _pidfd(pid: str) -> int:
    try:
        return os.pidfd_open(int(pid)) if pid and int(pid) > 1 else -1
    except (OSError, ValueError):
        return -1


def wait_alone(pid: int) -> int:
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return 1
    while True:
        try:
            select.select([pidfd], [], [])
            return 0
        except InterruptedError:
            continue


def main() -> int:
    args = sys.argv[1:]
    started = ask_zygote(args)
    if started is None:
        os.execv(sys.executable, [sys.executable, "-m", "juliapool.kernel", *args])
    return wait_for_kernel(*started)


if __name__ == "__main__":
    sys.exit(main())
