"""Notebooks as IJulia users know them (issue 10), through the Jupyter protocol on real kernels.

`IJuliaSampleTests` is a jupyter_kernel_test suite with the samples of IJulia's own kernel test
(JuliaLang/IJulia.jl, test/kernel_test.py), started with `start_new_kernel` against our kernelspec.
Two of IJulia's samples need files and packages of IJulia's test folder: the SVG sample reads an
SVG file written here, and the PNG sample (FileIO + ImageShow, not installable here) is replaced by
`display(MIME("image/png"), bytes)` of a PNG file written here, which IJulia supports too.

The same kernel then checks the rest of IJulia's habits (one-line `using` + macro, `ans`, `In`,
`Out`, display updates, user_expressions, hooks) and that requests whose handling fails in the
worker's own code (a completer that throws, a `show` that throws, a docstring whose rendering
throws) are answered without losing the worker or its state.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Tuple

import jupyter_kernel_test as jkt
import pytest

from kernel_env import KERNEL_NAME, jupyter_env, wait_no_tagged_processes

pytestmark = pytest.mark.timeout(180)

FILES = Path(tempfile.mkdtemp(prefix="juliapool-ijulia-samples-"))
SVG = FILES / "cross.svg"
PNG = FILES / "pixel.png"


def write_sample_files() -> None:
    SVG.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                   '<path d="M5 0v10M0 5h10" stroke="black"/></svg>')

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit greyscale
    PNG.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
                    + chunk(b"IEND", b""))


def jl(path: Path) -> str:
    return repr(str(path)).replace("'", '"')


class IJuliaSampleTests(jkt.KernelTests):
    kernel_name = KERNEL_NAME
    language_name = "julia"
    file_extension = ".jl"

    # ---- IJulia's samples ---------------------------------------------------------------------
    code_hello_world = 'println("hello, world")'
    code_stderr = 'println(stderr, "foo")'
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", 'print("hello, world")', "f(x) = x*2"]
    incomplete_code_samples = ['print("hello', "f(x) = x*"]
    invalid_code_samples = ["import = 7q"]
    code_generate_error = "error(42)"
    code_execute_result = [{"code": "6*7", "result": "42"}]
    code_display_data = [
        {"code": f"display(MIME(\"image/png\"), read({jl(PNG)}))", "mime": "image/png"},
        {"code": f"display(MIME(\"image/svg+xml\"), read({jl(SVG)}, String))", "mime": "image/svg+xml"},
        {"code": 'display(MIME("text/latex"), "\\\\frac{1}{2}")', "mime": "text/latex"},
        {"code": 'display(MIME("text/markdown"), "# header")', "mime": "text/markdown"},
        {"code": 'display(MIME("text/html"), "<b>foo</b>")', "mime": "text/html"},
        {"code": 'display("foo")', "mime": "text/plain"},
    ]
    code_inspect_sample = "zip"
    code_clear_output = "IJulia.clear_output()"

    @classmethod
    def setUpClass(cls) -> None:
        jupyter_env()
        write_sample_files()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        shutil.rmtree(FILES, ignore_errors=True)
        assert wait_no_tagged_processes() == [], "kernel or Julia worker processes were left behind"

    # ---- helpers -----------------------------------------------------------------------------

    def run_cell(self, code: str, **kwargs: Any) -> Tuple[Dict[str, Any], List[Tuple[str, Dict[str, Any]]]]:
        self.flush_channels()
        reply, msgs = self.execute_helper(code, **kwargs)
        return reply["content"], [(m["msg_type"], m["content"]) for m in msgs]

    def value(self, code: str) -> str:
        reply, msgs = self.run_cell(code)
        assert reply["status"] == "ok", reply
        results = [c["data"]["text/plain"] for t, c in msgs if t == "execute_result"]
        assert len(results) == 1, msgs
        return results[0]

    # ---- more of IJulia's habits ----------------------------------------------------------------

    def test_the_raw_string_is_the_data(self) -> None:
        reply, msgs = self.run_cell('display("text/html", "<i>x</i>")')
        assert reply["status"] == "ok", reply
        assert [c["data"] for t, c in msgs if t == "display_data"] == [{"text/html": "<i>x</i>", "text/plain": "<i>x</i>"}]

    def test_a_line_may_load_a_macro_and_use_it(self) -> None:
        data = self.value('using Markdown; md"**hi**"')
        assert data.strip() == "hi"
        assert self.value('using Printf; @sprintf("%5.2f", pi)') == '" 3.14"'
        reply, msgs = self.run_cell('using Printf; @printf("%d\\n", 7)')
        assert reply["status"] == "ok" and "7\n" in "".join(c["text"] for t, c in msgs if t == "stream")
        # An error in the second statement still points at the cell's line.
        reply, msgs = self.run_cell('x_one = 1\nusing Printf; error("line two")')
        assert reply["status"] == "error" and any("In[" in line and ":2" in line for line in reply["traceback"]), reply

    def test_ans_in_and_out(self) -> None:
        first, _ = self.run_cell("40 + 2")
        n = first["execution_count"]
        assert self.value("ans") == "42"
        assert self.value(f"Out[{n}]") == "42"
        assert self.value(f"In[{n}]") == '"40 + 2"'
        hidden, _ = self.run_cell("43;")
        assert self.value("ans") == "43"  # a trailing `;` hides the value, not ans
        assert self.value(f"haskey(Out, {hidden['execution_count']})") == "false"
        itself, _ = self.run_cell("Out")
        assert self.value(f"haskey(Out, {itself['execution_count']})") == "false"  # not stored in itself
        self.run_cell("44", silent=True)
        assert self.value("ans") == "44"
        self.run_cell("IJulia.clear_history()")
        assert self.value("isempty(Out)") == "true"

    def test_clear_output_wait_and_display_updates(self) -> None:
        reply, msgs = self.run_cell('println("a"); IJulia.clear_output(wait=true); println("b"); IJulia.clear_output(true)')
        assert reply["status"] == "ok", reply
        assert [(t, c.get("text", c.get("wait"))) for t, c in msgs] == [
            ("stream", "a\n"), ("clear_output", True), ("stream", "b\n"), ("clear_output", True)]
        reply, msgs = self.run_cell('h = IJulia.display(HTML("<b>1</b>"); display_id=true)\n'
                                    'IJulia.update_display(h, HTML("<b>2</b>"))\n'
                                    'IJulia.update_display(3; display_id=h.display_id); nothing')
        assert reply["status"] == "ok", reply
        kinds = [(t, c["data"].get("text/html", c["data"].get("text/plain")), c["transient"]["display_id"]) for t, c in msgs]
        ids = {k[2] for k in kinds}
        assert [k[:2] for k in kinds] == [("display_data", "<b>1</b>"), ("update_display_data", "<b>2</b>"),
                                          ("update_display_data", "3")] and len(ids) == 1 and "" not in ids

    def test_user_expressions(self) -> None:
        self.run_cell("ue_x = 6")
        self.flush_channels()
        msg_id = self.kc.execute("ue_y = 7", user_expressions={"product": "ue_x * ue_y", "bad": "no_such_ue",
                                                              "none": "nothing"})
        reply = self.get_non_kernel_info_reply(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        ue = reply["content"]["user_expressions"]
        assert ue["product"] == {"status": "ok", "data": {"text/plain": "42"}, "metadata": {}}
        assert ue["none"]["data"] == {"text/plain": "nothing"}
        assert ue["bad"]["status"] == "error" and ue["bad"]["ename"] == "UndefVarError"
        assert self.value("ans") == "7"  # user expressions keep no history

    def test_main_ijulia_and_hooks(self) -> None:
        assert self.value("isdefined(Main, :IJulia) && Main.IJulia.inited") == "true"
        self.run_cell("hook_calls = Int[]; hook = () -> push!(hook_calls, 1); IJulia.push_postexecute_hook(hook)")
        self.run_cell("1")
        self.run_cell("IJulia.pop_postexecute_hook(hook)")
        assert self.value("length(hook_calls)") == "2"  # after `1` and after the pop cell itself

    def test_help_leaves_a_users_docs_alone(self) -> None:
        self.run_cell("const docs = 3")
        assert "sine" in self.value("?sin")
        reply = self.kc.inspect("sin", 3, reply=True, timeout=30)["content"]
        assert reply["found"]
        assert self.value("docs") == "3"

    def test_getpass_as_julia_112_calls_it(self) -> None:
        self.flush_channels()
        self.kc.execute('s = Base.getpass(stdin, stdout, "Token> "; with_suffix=false); read(s, String)', allow_stdin=True)
        request = self.kc.get_stdin_msg(timeout=30)
        assert request["content"] == {"prompt": "Token> ", "password": True}
        self.kc.input("xyz")
        reply = self.get_non_kernel_info_reply(timeout=30)
        assert reply["content"]["status"] == "ok"
        assert self.value("ans") == '"xyz"'

    def test_readprompt(self) -> None:
        self.flush_channels()
        self.kc.execute('IJulia.readprompt("Secret? "; password=true)', allow_stdin=True)
        request = self.kc.get_stdin_msg(timeout=30)
        assert request["content"] == {"prompt": "Secret? ", "password": True}
        self.kc.input("42")
        assert self.get_non_kernel_info_reply(timeout=30)["content"]["status"] == "ok"
        assert self.value("ans") == '"42"'

    # ---- the worker's own failures never cost the notebook its worker ------------------------------

    def test_failing_handlers_keep_the_worker_and_its_state(self) -> None:
        pid = self.value("getpid()")
        self.run_cell("struct BadDict <: AbstractDict{String,Int} end\n"
                      "Base.keys(::BadDict) = error(\"keys boom\")\nBase.length(::BadDict) = 1\nbd = BadDict()\n"
                      "struct BadShow end\nBase.show(io::IO, ::BadShow) = error(\"show boom\")\n"
                      "using Markdown\nstruct Boom end\nMarkdown.plain(io::IO, ::Boom) = error(\"render boom\")\n"
                      "Markdown.html(io::IO, ::Boom) = error(\"render boom\")\n"
                      "Markdown.term(io::IO, ::Boom, cols) = error(\"render boom\")\n"
                      "@doc Markdown.MD(Any[Boom()]) boom_doc(x) = x\nkept = 99")
        # The completer itself throws on this (REPLCompletions calls keys(bd)).
        reply = self.kc.complete('bd["', 4, reply=True, timeout=30)["content"]
        assert reply["status"] == "ok" and reply["matches"] == []
        text = self.value("BadShow()")
        assert "show boom" in text  # the value's own text/plain fails: the error is shown instead
        reply = self.kc.inspect("boom_doc", 4, reply=True, timeout=30)["content"]
        assert reply["status"] == "ok"
        reply, _ = self.run_cell("?boom_doc")
        assert reply["status"] == "ok", reply
        assert self.value("getpid()") == pid and self.value("kept") == "99"
