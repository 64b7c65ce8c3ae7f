"""Every notebook in notebooks/ executed by nbclient on the juliapool kernel, as a batch run would.

The saved outputs must be what the kernel really produces: each code cell must give the same kinds
of output (stream, display_data, execute_result, error), the same MIME types and the same error
names as the saved copy. Also: errors with and without `allow_errors`, and an interrupt on timeout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Tuple

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

from kernel_env import KERNEL_NAME, jupyter_env, wait_no_tagged_processes

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
from make_notebooks import cell_timeout, execute  # noqa: E402  (the rule the saved copies ran under)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _private_jupyter_and_no_leaks() -> Any:
    jupyter_env()
    yield
    assert wait_no_tagged_processes() == [], "kernel or Julia worker processes were left behind"


def shape(cell: Any) -> List[Tuple[str, ...]]:
    """What a cell showed, without the text that varies from run to run (timings, paths).

    Consecutive stream outputs are one: how printed text is cut into messages depends on timing."""
    out: List[Tuple[str, ...]] = []
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            item: Tuple[str, ...] = ("stream", o.name)
            if out and out[-1] == item:
                continue
        elif o.output_type == "error":
            item = ("error", o.ename)
        else:
            item = (o.output_type, *sorted(o.data))
        out.append(item)
    return out


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_runs_as_saved(path: Path) -> None:
    saved = nbformat.read(str(path), as_version=4)
    assert saved.metadata["kernelspec"]["language"] == "julia"
    fresh = execute(nbformat.read(str(path), as_version=4), KERNEL_NAME)
    code_cells = [(a, b) for a, b in zip(saved.cells, fresh.cells) if a.cell_type == "code"]
    assert code_cells
    for old, new in code_cells:
        assert shape(new) == shape(old), new.source
    assert fresh.metadata["language_info"]["name"] == "julia"


def test_quick_start_outputs() -> None:
    nb = execute(nbformat.read(str(NOTEBOOKS / "01-quick-start.ipynb"), as_version=4), KERNEL_NAME)
    by_source = {c.source.splitlines()[0]: c for c in nb.cells if c.cell_type == "code"}
    assert by_source["total = 0"].outputs[0].data["text/plain"] == "5050"
    assert "<svg" in by_source["# A plot, as SVG: any type can say how it shows itself for a MIME type"].outputs[0].data["image/svg+xml"]
    assert by_source["hidden = 42;"].outputs == []
    error = by_source["sqrt(-1.0)"].outputs[0]
    assert error.ename == "DomainError" and "sqrt" in error.evalue


def notebook(*sources: str) -> Any:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Julia", "language": "julia"}
    return nb


def test_error_stops_the_run_without_allow_errors() -> None:
    nb = notebook("x = 1", 'error("stop")', "y = 2")
    with pytest.raises(CellExecutionError) as info:
        execute(nb, KERNEL_NAME)
    assert "stop" in str(info.value)
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None


def test_errors_allowed_run_every_cell() -> None:
    nb = execute(notebook("x = 1", 'error("go on")', "x + 1"), KERNEL_NAME, allow_errors=True)
    assert nb.cells[1].outputs[0].output_type == "error"
    assert nb.cells[1].outputs[0].ename == "ErrorException"
    assert nb.cells[2].outputs[0].data["text/plain"] == "2"


def test_interrupt_on_timeout_keeps_the_state() -> None:
    nb = notebook("x = 41", "sleep(60)", "x + 1")
    nb.cells[1].metadata["juliapool"] = {"interrupt_after": 3}
    nb.cells[1].metadata["tags"] = ["raises-exception"]
    assert cell_timeout(nb.cells[1]) == 3
    execute(nb, KERNEL_NAME)
    assert [o.ename for o in nb.cells[1].outputs if o.output_type == "error"] == ["InterruptException"]
    assert nb.cells[2].outputs[0].data["text/plain"] == "42"
