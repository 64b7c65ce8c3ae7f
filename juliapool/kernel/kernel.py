"""`JuliaKernel`: Jupyter's messages mapped onto one juliapool session.

    front end --ZMQ--> ipykernel (shell messages: main thread's asyncio loop; control: own thread)
      execute_request  -> do_execute -> executor thread: session.run(...) -> the notebook's worker
                            on_output / on_display (that thread) -> iopub (thread-safe socket):
                            stream, display_data, and for IJulia's calls clear_output and
                            update_display_data; then user_expressions, each one more run
                            on_input (that thread) -> stdin socket: input_request / input_reply
      complete / inspect / is_complete -> session.complete / inspect / is_complete
      interrupt: SIGINT to this process (kernelspec interrupt_mode "signal") or interrupt_request
                 ("message") -> a thread calls session.interrupt(): SIGINT to the worker, and the
                 pool kills and replaces it if the code does not stop within a grace period
      shutdown_request (also restart) -> pool.shutdown(): no Julia process is left behind

The kernel stays thin: Julia-side behaviour (rich output, `?`/`;`/`]` cells, stdin, completion)
lives in julia/kernel_support.jl; recovery from crashes lives in the pool, which keeps a warm spare.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import threading
import uuid
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

from ipykernel.kernelbase import Kernel, kernel_protocol_version
from jupyter_client.session import Session as WireSession

from juliapool import DisplayEvent, ExecReply, JuliaPoolError, JuliaProcessPool, Session, __version__

from . import start_pool
from .history import CellHistory
from .streams import StreamBatcher

log = logging.getLogger(__name__)

# What a cell reports when its worker died, from the facts on the ExecReply (state_lost, worker_restarted).
STATE_LOST = ("The notebook's Julia state (variables, functions, loaded packages) is lost: "
              "the next cell runs on a fresh Julia worker.")
FRESH_WORKER_NOTE = ("Note: the notebook's Julia worker had stopped; this cell ran on a fresh one, "
                     "so variables from earlier cells are gone.\n")

RED, RESET = "\x1b[0;31m", "\x1b[0m"
VERSION_WAIT = 2.0  # seconds kernel_info may wait for `julia --version` (it takes milliseconds)
INPUT_POLL_MS = 50
# A cell's printed output reaches the front end up to this many bytes (a browser tab chokes on
# megabytes of text; IJulia cuts output too): the pool's output limit. The cell itself runs on.
MAX_OUTPUT_ENV = "JULIAPOOL_MAX_CELL_OUTPUT"
DEFAULT_MAX_OUTPUT = 1_000_000
def _max_output() -> int:
    text = os.environ.get(MAX_OUTPUT_ENV, "").strip()
    try:
        return max(0, int(text)) if text else DEFAULT_MAX_OUTPUT
    except ValueError:
        log.warning("$%s=%r is not a number of bytes; using %d", MAX_OUTPUT_ENV, text, DEFAULT_MAX_OUTPUT)
        return DEFAULT_MAX_OUTPUT


class JuliaKernel(Kernel):
    """A Jupyter kernel whose cells run on a persistent Julia worker of a juliapool pool."""

    implementation = "juliapool"
    implementation_version = __version__
    language = "julia"
    help_links = [
        {"text": "Julia documentation", "url": "https://docs.julialang.org/"},
        {"text": "juliapool", "url": "https://pypi.org/project/juliapool/"},
    ]

    # Set by `juliapool.kernel.launch`, which starts the workers before ipykernel is imported.
    preset_pool: ClassVar[Optional[JuliaProcessPool]] = None
    preset_pool_error: ClassVar[Optional[JuliaPoolError]] = None
    preset_pool_note: ClassVar[str] = ""  # how the pool was chosen (the pool server, or why not), for the log

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._route_logs()
        self.pool, self.pool_error = self._make_pool()
        # One session per kernel process: every cell reaches the same worker and module.
        self.julia = self.pool.session(f"notebook-{uuid.uuid4().hex}") if self.pool else None
        self._julia_version: Optional[str] = None
        self._version_known = threading.Event()
        threading.Thread(target=self._probe_version, name="julia-version", daemon=True).start()
        prepare = getattr(self.julia, "prepare", None)    # a session on the pool server: lease its worker now
        if prepare is not None:
            threading.Thread(target=prepare, name="julia-lease", daemon=True).start()
        self._cell_running = threading.Event()
        self._input_cancel = threading.Event()
        self._loss_reported = False
        self.max_output = _max_output()
        self._history = CellHistory()
        # Workers live in their own process group: the SIGINT that jupyter_client sends to ours
        # never reaches them, so the kernel forwards it (and keeps it from raising in its loop).
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _route_logs(self) -> None:
        """juliapool's log records go where the kernel application's go (the server's log), never
        to this process's sys.stderr, which ipykernel would forward into the notebook."""
        lib = logging.getLogger("juliapool")
        for handler in getattr(self.log, "handlers", []):
            lib.addHandler(handler)
        lib.setLevel(logging.INFO)
        lib.propagate = False

    def _make_pool(self) -> Tuple[Optional[JuliaProcessPool], Optional[JuliaPoolError]]:
        if self.preset_pool_note:  # the pool server was asked for: say whether it serves us, or why not
            on_server = self.preset_pool is not None and not isinstance(self.preset_pool, JuliaProcessPool)
            log.log(logging.INFO if on_server else logging.WARNING, "%s", self.preset_pool_note)
        if self.preset_pool is not None or self.preset_pool_error is not None:
            return self.preset_pool, self.preset_pool_error
        return start_pool()  # not started by `launch` (an embedding application): the defaults

    @property
    def _wire(self) -> WireSession:
        """jupyter_client's Session (signs and sends messages): set by the kernel application
        before the first message arrives, None only in ipykernel's type hints."""
        assert self.session is not None
        return self.session

    def _session(self) -> Session:
        if self.julia is None:
            assert self.pool_error is not None
            raise self.pool_error
        return self.julia

    # ---- kernel_info ---------------------------------------------------------------------------

    def _probe_version(self) -> None:
        if self.pool is None:
            self._version_known.set()
            return
        try:
            self._julia_version = self.pool.julia_version
        except Exception as e:  # no Julia: cells will say so; kernel_info must still answer
            log.warning("could not learn the Julia version: %s", e)
        finally:
            self._version_known.set()

    @property
    def julia_version(self) -> str:
        self._version_known.wait(VERSION_WAIT)
        return self._julia_version or ""

    @property
    def language_info(self) -> Dict[str, Any]:  # type: ignore[override]
        return {
            "name": "julia",
            "version": self.julia_version,
            "mimetype": "application/julia",
            "file_extension": ".jl",
            "codemirror_mode": "julia",
            "pygments_lexer": "julia",
        }

    @property
    def kernel_info(self) -> Dict[str, Any]:
        # Not ipykernel's: it advertises its debugger and subshells, which this kernel offers
        # neither, and imports the debugger (debugpy) to find out: ~60 ms before the first reply.
        return {
            "protocol_version": kernel_protocol_version,
            "implementation": self.implementation,
            "implementation_version": self.implementation_version,
            "language_info": self.language_info,
            "banner": self.banner,
            "help_links": self.help_links,
            "supported_features": [],
        }

    @property
    def banner(self) -> str:  # type: ignore[override]
        return f"Julia {self.julia_version or '(version unknown)'} on juliapool {__version__}"

    # ---- execute -------------------------------------------------------------------------------

    async def do_execute(self, code: str, silent: bool, store_history: bool = True,
                         user_expressions: Optional[dict] = None, allow_stdin: bool = False,
                         *, cell_meta: Optional[dict] = None, cell_id: Optional[str] = None) -> dict:
        # Callbacks run on the pool's thread, where ipykernel's context variables are not set:
        # capture the request's parent header and identity here.
        parent = self.get_parent("shell")
        self._input_cancel.clear()
        out = StreamBatcher(functools.partial(self._send_stream, parent))
        stored = store_history and not silent
        run = functools.partial(
            self._run_on_session, code, filename=f"In[{self.execution_count}]", soft_scope=True,
            want_result=not silent, allow_input=allow_stdin, output_limit_bytes=self.max_output,
            history=self.execution_count if stored else 0,
            **self._callbacks(parent, out, silent))
        entry = self._history.add(self.execution_count, code) if stored else [None, None, None]
        self._cell_running.set()
        try:
            rep = await asyncio.get_running_loop().run_in_executor(None, run)
        except Exception as e:  # the pool itself failed: no Julia, failed start, shut down
            if isinstance(e, JuliaPoolError):
                log.warning("cell not run: %s", e)
            else:
                log.exception("cell failed in the pool")
            return self._error_reply(parent, silent, type(e).__name__, str(e), [str(e)])
        finally:
            self._cell_running.clear()
            out.flush()
        entry[2] = rep.result.get("text/plain") if rep.result else None
        reply = self._finish(parent, silent, rep)
        if user_expressions and reply["status"] == "ok":
            reply["user_expressions"] = await asyncio.get_running_loop().run_in_executor(
                None, self._user_expressions, user_expressions)
        return reply

    def _callbacks(self, parent: dict, out: StreamBatcher, silent: bool) -> Dict[str, Any]:
        """What the worker's output, displays and stdin reads of one cell turn into."""
        ident = self._parent_ident["shell"]

        def on_display(bundle: Dict[str, str]) -> None:
            out.flush()
            if isinstance(bundle, DisplayEvent):
                self._send_display_event(parent, bundle)
            else:
                self._send_display(parent, bundle)

        def on_input(prompt: str, password: bool) -> str:
            out.flush()
            return self._ask_front_end(prompt, password, ident, parent)

        return {"on_output": None if silent else out.write, "on_display": None if silent else on_display,
                "on_input": on_input}

    def _run_on_session(self, code: str, **kwargs: Any) -> ExecReply:
        return self._session().run(code, **kwargs)

    def _finish(self, parent: dict, silent: bool, rep: ExecReply) -> dict:
        """Turn the pool's ExecReply into Jupyter messages and the execute_reply."""
        if rep.worker_restarted and not self._loss_reported and not silent:
            self._send_stream(parent, "stderr", FRESH_WORKER_NOTE)
        self._loss_reported = rep.state_lost  # the cell that lost it said so: the next need not
        if rep.status != "ok":
            lines = traceback_lines(rep.traceback, rep.ename, rep.evalue)
            if rep.state_lost:
                lines.append(STATE_LOST)
            return self._error_reply(parent, silent, rep.ename or "Error", rep.evalue, lines)
        if rep.result and not silent:
            self._wire.send(self.iopub_socket, "execute_result",
                            {"execution_count": self.execution_count,
                             "data": jsonable_bundle(rep.result), "metadata": {}},
                            parent=parent, ident=self._topic("execute_result"))
        return {"status": "ok", "execution_count": self.execution_count,
                "payload": [], "user_expressions": {}}

    def _error_reply(self, parent: dict, silent: bool, ename: str, evalue: str,
                     lines: List[str]) -> dict:
        """Exactly one `error` message on iopub, and the matching reply content."""
        content = {"ename": ename, "evalue": evalue, "traceback": lines}
        if not silent:
            self._wire.send(self.iopub_socket, "error", content, parent=parent,
                            ident=self._topic("error"))
        return {"status": "error", "execution_count": self.execution_count, **content}

    def _send_stream(self, parent: dict, name: str, text: str) -> None:
        self._wire.send(self.iopub_socket, "stream", {"name": name, "text": text},
                        parent=parent, ident=self._topic("stream"))

    def _send_display(self, parent: dict, bundle: Dict[str, str]) -> None:
        self._wire.send(self.iopub_socket, "display_data",
                        {"data": jsonable_bundle(bundle), "metadata": {}, "transient": {}},
                        parent=parent, ident=self._topic("display_data"))

    def _send_display_event(self, parent: dict, event: DisplayEvent) -> None:
        """IJulia.clear_output and display updates (PROTOCOL.md `U` events) as Jupyter messages."""
        if event.kind == "clear":
            self._wire.send(self.iopub_socket, "clear_output", {"wait": event.wait},
                            parent=parent, ident=self._topic("clear_output"))
            return
        msg_type = "update_display_data" if event.kind == "update" else "display_data"
        self._wire.send(self.iopub_socket, msg_type,
                        {"data": jsonable_bundle(event), "metadata": {},
                         "transient": {"display_id": event.display_id}},
                        parent=parent, ident=self._topic(msg_type))

    def _user_expressions(self, expressions: Dict[str, str]) -> Dict[str, Any]:
        """execute_request's user_expressions: each evaluated after the cell, in the notebook's module,
        to a MIME bundle (`status` "ok") or an error (as IPython answers them). They print nothing,
        keep no history and read no stdin."""
        out: Dict[str, Any] = {}
        for name, code in expressions.items():
            try:
                rep = self._session().run(str(code), filename="user_expression", want_result=True,
                                          allow_input=False)
            except Exception as e:  # the pool itself failed
                out[name] = {"status": "error", "ename": type(e).__name__, "evalue": str(e), "traceback": [str(e)]}
                continue
            if rep.status == "ok":
                out[name] = {"status": "ok", "data": jsonable_bundle(rep.result or {"text/plain": "nothing"}),
                             "metadata": {}}
            else:
                out[name] = {"status": "error", "ename": rep.ename or "Error", "evalue": rep.evalue,
                             "traceback": traceback_lines(rep.traceback, rep.ename, rep.evalue)}
        return out

    # ---- history: this kernel process's cells (front ends' up-arrow); not kept across restarts ----

    async def do_history(self, hist_access_type: str, output: bool, raw: bool, session: Optional[int] = None,
                         start: Optional[int] = None, stop: Optional[int] = None, n: Optional[int] = None,
                         pattern: Optional[str] = None, unique: bool = False, **kwargs: Any) -> dict:
        rows = self._history.query(hist_access_type, output, session, start, stop, n, pattern, unique)
        return {"status": "ok", "history": rows}

    # ---- stdin ---------------------------------------------------------------------------------

    def _ask_front_end(self, prompt: str, password: bool, ident: Any, parent: dict) -> str:
        """One input_request / input_reply exchange. Unlike ipykernel's `_input_request`, it gives
        up when the cell is interrupted: the worker waits for this answer with SIGINT deferred, so
        it must get one before the interrupt can land. "\\x04" means end of file to the worker."""
        while self.stdin_socket.poll(0):  # a stale reply to an earlier request
            self._wire.recv(self.stdin_socket)
        self._wire.send(self.stdin_socket, "input_request",
                        {"prompt": prompt, "password": password}, parent, ident=ident)
        while not self._input_cancel.is_set():
            if not self.stdin_socket.poll(INPUT_POLL_MS):
                continue
            _, reply = self._wire.recv(self.stdin_socket)
            if reply and reply["header"]["msg_type"] == "input_reply":
                return str(reply["content"].get("value", ""))
        return "\x04"

    # ---- completion and inspection ---------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Off the event loop: the first request may wait for the worker to finish starting.
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def do_complete(self, code: str, cursor_pos: Optional[int]) -> dict:
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        try:
            matches, start, end = await self._call(self._session().complete, code, cursor_pos)
        except Exception as e:
            log.warning("completion failed: %s", e)
            matches, start, end = [], cursor_pos, cursor_pos
        return {"status": "ok", "matches": list(matches), "cursor_start": start,
                "cursor_end": end, "metadata": {}}

    async def do_inspect(self, code: str, cursor_pos: int, detail_level: int = 0,
                         omit_sections: Any = ()) -> dict:
        try:
            data = await self._call(self._session().inspect, code, cursor_pos, detail_level)
        except Exception as e:
            log.warning("inspection failed: %s", e)
            data = {}
        return {"status": "ok", "found": bool(data), "data": jsonable_bundle(data), "metadata": {}}

    async def do_is_complete(self, code: str) -> dict:
        try:
            status, indent = await self._call(self._session().is_complete, code)
        except Exception as e:
            log.warning("is_complete failed: %s", e)
            return {"status": "unknown"}
        return {"status": status, "indent": indent} if status == "incomplete" else {"status": status}

    # ---- interrupt and shutdown ----------------------------------------------------------------

    def pre_handler_hook(self) -> None:
        """ipykernel makes SIGINT raise KeyboardInterrupt during handlers; ours forwards it."""

    def post_handler_hook(self) -> None:
        """See pre_handler_hook."""

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupt()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # Leave the event loop; `launch` then shuts the pool down so no worker outlives us.
        raise SystemExit(128 + signum)

    async def interrupt_request(self, stream: Any, ident: Any, parent: dict) -> None:
        """interrupt_mode "message": interrupt the worker, not this process."""
        self._interrupt()
        self._wire.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    def _interrupt(self) -> None:
        if not self._cell_running.is_set():
            return  # between cells there is nothing to interrupt
        threading.Thread(target=self._interrupt_worker, name="interrupt", daemon=True).start()

    def _interrupt_worker(self) -> None:
        # Release a pending input request a moment after the SIGINT is on its way, so the worker
        # gets its answer and the deferred interrupt lands in the user's code.
        threading.Timer(0.05, self._input_cancel.set).start()
        try:
            self._session().interrupt()
        except Exception:
            log.exception("interrupt failed")

    async def do_shutdown(self, restart: bool) -> dict:
        self._input_cancel.set()
        if self.pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.pool.shutdown)
        return {"status": "ok", "restart": restart}


def traceback_lines(text: str, ename: str, evalue: str) -> List[str]:
    """Julia's error text as Jupyter traceback lines: the message first (in red), as IJulia shows it."""
    text = text.rstrip("\n")
    if text.startswith("ERROR: "):
        text = text[len("ERROR: "):]
    lines = text.split("\n") if text else []
    if not lines:
        lines = [f"{ename}: {evalue}" if evalue else ename]
    lines[0] = f"{RED}{lines[0]}{RESET}"
    return lines


def jsonable_bundle(bundle: Dict[str, str]) -> Dict[str, Any]:
    """Jupyter wants JSON MIME types as JSON values, not as text; drop one that does not parse."""
    out: Dict[str, Any] = {}
    for mime, data in bundle.items():
        if mime == "application/json" or mime.endswith("+json"):
            try:
                out[mime] = json.loads(data)
            except ValueError:
                log.warning("dropping %s output that is not valid JSON", mime)
            continue
        out[mime] = data
    return out
