"""The juliapool kernel through the Jupyter protocol: jupyter_kernel_test's checks, plus what a Julia
notebook user expects (state across cells, soft scope, rich output, errors, special cells, stdin).

One kernel for the whole class (as jupyter_kernel_test does), on real Julia workers.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any, Dict, List, Tuple

import jupyter_kernel_test as jkt
import pytest

from juliapool.discovery import find_julia

from kernel_env import KERNEL_NAME, julia_pids, jupyter_env, tagged_pids, wait_no_tagged_processes

pytestmark = pytest.mark.timeout(180)


def julia_version() -> str:
    out = subprocess.run([find_julia(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def julia_older_than(major: int, minor: int) -> bool:
    return tuple(int(p) for p in julia_version().split(".")[:2]) < (major, minor)


class JuliaKernelTests(jkt.KernelTests):
    kernel_name = KERNEL_NAME
    language_name = "julia"
    file_extension = ".jl"

    code_hello_world = 'println("hello, world")'
    code_stderr = 'println(stderr, "to stderr")'
    completion_samples = [
        {"text": "prin", "matches": {"print", "println", "printstyled"}},
        {"text": "Base.Math.sinp", "matches": {"sinpi"}},
    ]
    complete_code_samples = ["1", "x = 1", "for i in 1:3\n    println(i)\nend", "f(x) = x + 1", "", "# note"]
    incomplete_code_samples = ["for i in 1:3", "f(", "begin\n    x = 1", '"unterminated', "function g()"]
    invalid_code_samples = ["1 2", "x = )", "end"]
    code_generate_error = 'error("boom")'
    code_execute_result = [
        {"code": "1 + 2", "result": "3"},
        {"code": '"a" * "b"', "result": '"ab"'},
        {"code": "[1, 2]", "result": "2-element Array{Int64,1}:\n 1\n 2" if julia_older_than(1, 6)
         else "2-element Vector{Int64}:\n 1\n 2"},
        {"code": 'HTML("<b>bold</b>")', "mime": "text/html", "result": "<b>bold</b>"},
        {"code": "using Markdown\nMarkdown.parse(\"# Title\")", "mime": "text/markdown"},
        {"code": "using Markdown\nMarkdown.parse(\"\\$x^2\\$\")", "mime": "text/latex"},
    ]
    code_display_data = [
        {"code": "display([1, 2])", "mime": "text/plain"},
        {"code": 'display("text/html", HTML("<i>x</i>"))', "mime": "text/html"},
        {"code": "display(\"text/plain\", 5)", "mime": "text/plain"},
    ]
    code_inspect_sample = "sin"
    code_clear_output = "IJulia.clear_output()"
    supported_history_operations = ("tail", "range", "search")
    code_history_pattern = "1 + *"

    @classmethod
    def setUpClass(cls) -> None:
        jupyter_env()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        assert wait_no_tagged_processes() == [], "kernel or Julia worker processes were left behind"

    # ---- helpers -----------------------------------------------------------------------------

    def run_cell(self, code: str, **kwargs: Any) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
        """Execute and return (reply content, iopub messages of that request as (type, content))."""
        self.flush_channels()
        reply, msgs = self.execute_helper(code, **kwargs)
        return reply["content"], [(m["msg_type"], m["content"]) for m in msgs]

    def result_of(self, code: str) -> Dict[str, Any]:
        reply, msgs = self.run_cell(code)
        assert reply["status"] == "ok", reply
        results = [c["data"] for t, c in msgs if t == "execute_result"]
        assert len(results) == 1, msgs
        return results[0]

    def stdout_of(self, msgs: List[Tuple[str, Dict[str, Any]]]) -> str:
        return "".join(c["text"] for t, c in msgs if t == "stream" and c["name"] == "stdout")

    # ---- kernel_info --------------------------------------------------------------------------

    def test_language_info(self) -> None:
        reply = self.kc.kernel_info(reply=True, timeout=10)
        info = reply["content"]["language_info"]
        assert info == {"name": "julia", "version": julia_version(), "mimetype": "application/julia",
                        "file_extension": ".jl", "codemirror_mode": "julia", "pygments_lexer": "julia"}
        assert reply["content"]["implementation"] == "juliapool"

    # ---- cells ------------------------------------------------------------------------------

    def test_state_persists_with_soft_scope(self) -> None:
        self.run_cell("total = 10")
        # A top-level `for` updates the global, as in the REPL (soft scope), with no warning.
        reply, msgs = self.run_cell("for i in 1:3\n    total += i\nend")
        assert reply["status"] == "ok"
        assert not [c for t, c in msgs if t == "stream" and c["name"] == "stderr"], msgs
        assert self.result_of("total")["text/plain"] == "16"
        self.run_cell("struct Point\n    x::Int\nend")
        assert self.result_of("Point(3)")["text/plain"] == "Point(3)"

    def test_output_streams_while_the_cell_runs(self) -> None:
        reply, msgs = self.run_cell('for i in 1:3\n    println("line ", i)\n    sleep(0.5)\nend')
        # Sent as printed (a batch waits at most 50 ms), not all at the end of the cell.
        assert [c["text"] for t, c in msgs if t == "stream"] == ["line 1\n", "line 2\n", "line 3\n"]

    def test_trailing_semicolon_and_nothing_give_no_result(self) -> None:
        for code in ("y = 5;", "nothing", "y = 6; # comment", "println(1)"):
            reply, msgs = self.run_cell(code)
            assert reply["status"] == "ok"
            assert "execute_result" not in [t for t, _ in msgs], (code, msgs)

    def test_output_keeps_order_with_display(self) -> None:
        code = 'println("one"); display("text/html", HTML("<b>two</b>")); println("three"); 4'
        reply, msgs = self.run_cell(code)
        kinds = [(t, c.get("text") or c.get("data", {}).get("text/html")) for t, c in msgs]
        assert kinds == [("stream", "one\n"), ("display_data", "<b>two</b>"), ("stream", "three\n"),
                         ("execute_result", None)]

    def test_json_and_binary_mime_types(self) -> None:
        self.run_cell('struct AsJSON end\n'
                      'Base.show(io::IO, ::MIME"application/json", ::AsJSON) = print(io, "{\\"a\\": [1, 2]}")\n'
                      'struct AsPNG end\n'
                      'Base.show(io::IO, ::MIME"image/png", ::AsPNG) = write(io, UInt8[0x89, 0x50, 0x4e, 0x47])')
        assert self.result_of("AsJSON()")["application/json"] == {"a": [1, 2]}  # JSON, not text
        assert self.result_of("AsPNG()")["image/png"] == "iVBORw=="  # base64

    def test_is_complete_indent(self) -> None:
        self.flush_channels()
        self.kc.is_complete("for i in 1:3\n    if i > 1")
        reply = self.get_non_kernel_info_reply(timeout=30)["content"]
        assert reply == {"status": "incomplete", "indent": "        "}

    def test_execution_count(self) -> None:
        first, _ = self.run_cell("1")
        second, msgs = self.run_cell("2")
        assert second["execution_count"] == first["execution_count"] + 1
        assert [c["execution_count"] for t, c in msgs if t == "execute_result"] == [second["execution_count"]]
        self.run_cell("3", silent=True)
        third, _ = self.run_cell("4")
        assert third["execution_count"] == second["execution_count"] + 1

    def test_silent_sends_nothing(self) -> None:
        reply, msgs = self.run_cell('println("hidden"); 5', silent=True)
        assert reply["status"] == "ok"
        assert msgs == []

    def test_error_message(self) -> None:
        reply, msgs = self.run_cell("f_err(x) = error(\"bad \" * string(x))\nf_err(7)")
        assert reply["status"] == "error"
        errors = [c for t, c in msgs if t == "error"]
        assert len(errors) == 1 and len(msgs) == 1
        err = errors[0]
        assert (err["ename"], err["evalue"]) == ("ErrorException", "bad 7")
        text = "\n".join(err["traceback"])
        assert "bad 7" in err["traceback"][0]
        assert "f_err" in text and "In[" in text
        for internal in ("worker.jl", "juliapool", "include_string", "softscope"):
            assert internal not in text, text
        reply, msgs = self.run_cell("undefined_name + 1")
        assert reply["ename"] == "UndefVarError"

    def test_error_aborts_queued_cells(self) -> None:
        self.flush_channels()
        self.kc.execute('error("stop here")')
        after = self.kc.execute("1 + 1")
        replies = [self.get_non_kernel_info_reply(timeout=30) for _ in range(2)]
        assert [r["content"]["status"] for r in replies] == ["error", "aborted"]
        assert replies[1]["parent_header"]["msg_id"] == after

    def test_help_cell(self) -> None:
        data = self.result_of("?sin")
        assert "sine" in data["text/plain"] and "text/markdown" in data

    def test_shell_cell(self) -> None:
        reply, msgs = self.run_cell(";echo hello from sh | tr a-z A-Z")
        assert reply["status"] == "ok"
        assert self.stdout_of(msgs) == "HELLO FROM SH\n"

    def test_pkg_cell(self) -> None:
        reply, msgs = self.run_cell("]st")
        assert reply["status"] == "ok", reply
        text = "".join(c["text"] for t, c in msgs if t == "stream")
        assert "Status" in text

    # ---- stdin --------------------------------------------------------------------------------

    def test_readline_without_stdin_fails_at_once(self) -> None:
        self.flush_channels()
        start = time.monotonic()
        self.kc.execute("readline()", allow_stdin=False)  # as nbclient runs cells
        reply = self.get_non_kernel_info_reply(timeout=30)["content"]
        assert time.monotonic() - start < 10
        assert reply["status"] == "error"
        assert "allow_stdin=false" in reply["evalue"]

    def test_readline_asks_the_front_end(self) -> None:
        self.flush_channels()
        msg_id = self.kc.execute('name = readline(); "hello " * name', allow_stdin=True)
        request = self.kc.get_stdin_msg(timeout=30)
        assert request["msg_type"] == "input_request"
        assert request["parent_header"]["msg_id"] == msg_id
        self.kc.input("Ann")
        reply = self.get_non_kernel_info_reply(timeout=30)
        assert reply["content"]["status"] == "ok"
        assert self.result_of("name")["text/plain"] == '"Ann"'

    # ---- completion, inspection ---------------------------------------------------------------

    def test_complete_positions_count_characters(self) -> None:
        self.run_cell("αβγ_value = 1")
        code = "x = \"é\"; αβ"
        reply = self.kc.complete(code, len(code), reply=True, timeout=30)["content"]
        assert reply["matches"] == ["αβγ_value"]
        assert (reply["cursor_start"], reply["cursor_end"]) == (len(code) - 2, len(code))
        code = "prin + 1"
        reply = self.kc.complete(code, 4, reply=True, timeout=30)["content"]
        assert (reply["cursor_start"], reply["cursor_end"]) == (0, 4)
        assert "println" in reply["matches"]

    def test_inspect_user_and_unknown_names(self) -> None:
        self.run_cell('"My documented function."\nmy_documented(x) = x')
        reply = self.kc.inspect("my_documented(1)", 3, reply=True, timeout=30)["content"]
        assert reply["found"] and "My documented function." in reply["data"]["text/plain"]
        reply = self.kc.inspect("my_documented(1, ", 17, reply=True, timeout=30)["content"]
        assert reply["found"], "Shift+Tab inside a call shows the called function's documentation"
        reply = self.kc.inspect("no_such_name_here", 5, reply=True, timeout=30)["content"]
        assert not reply["found"] and reply["data"] == {}

    def test_workers_belong_to_the_kernel(self) -> None:
        # The kernel keeps its notebook's worker plus a warm spare.
        assert len(julia_pids(tagged_pids())) >= 1
