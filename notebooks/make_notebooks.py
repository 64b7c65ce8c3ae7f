"""Build the example notebooks and save them with real outputs, executed by nbclient on this kernel.

    python notebooks/make_notebooks.py

The cell sources live here; the .ipynb files are written next to this script after a full run on the
juliapool kernel (installed into a temporary Jupyter folder for the run, never the real home). A cell
whose metadata has {"juliapool": {"interrupt_after": N}} is interrupted after N seconds in batch runs,
as a user would press the interrupt button (tests/test_notebooks.py uses the same rule).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, List, Optional

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "juliapool", "display_name": "Julia (juliapool)", "language": "julia"}


def code(source: str, *, raises: bool = False, interrupt_after: Optional[int] = None) -> Any:
    cell = new_code_cell(source.strip("\n"))
    if raises:
        cell.metadata["tags"] = ["raises-exception"]
    if interrupt_after is not None:
        cell.metadata["juliapool"] = {"interrupt_after": interrupt_after}
    return cell


def md(source: str) -> Any:
    return new_markdown_cell(source.strip("\n"))


def cell_timeout(cell: Any) -> Optional[int]:
    """nbclient's timeout_func: interrupt the cells that ask for it, let the others run."""
    return cell.metadata.get("juliapool", {}).get("interrupt_after", 300)


QUICK_START: List[Any] = [
    md(r"""
# Julia on juliapool: a quick start

This notebook runs on the **juliapool** kernel. Every cell runs on a warm, persistent Julia worker
process, so the kernel starts in a moment, and a worker that crashes is replaced by a warm spare.
Cells behave as in IJulia and the Julia REPL.
"""),
    code(r"""
greeting = "Hello from Julia $(VERSION)"
println(greeting)
"""),
    md(r"""
## State persists across cells

Variables, functions and types defined in one cell are there in the next. At top level, a `for` loop
updates a global variable, as in the REPL (soft scope).
"""),
    code(r"""
total = 0
for i in 1:100
    total += i
end
total
"""),
    code(r"""
struct Point
    x::Float64
    y::Float64
end

norm2(p::Point) = sqrt(p.x^2 + p.y^2)
points = [Point(3, 4), Point(1, 1), Point(0, 2)]
norm2.(points)
"""),
    md(r"""
## Rich output

The value of a cell's last expression is shown in the richest form it has: HTML, Markdown, LaTeX,
SVG, PNG or JSON, and always as plain text. A trailing `;` hides it.
"""),
    code(r'''
using Markdown
md"""
**Markdown** with *emphasis*, a list

- one
- two

and a formula: $\sum_{i=1}^{n} i = \frac{n(n+1)}{2}$
"""
'''),
    code(r"""
# A table, as HTML
function html_table(rows; header)
    io = IOBuffer()
    print(io, "<table><thead><tr>", join("<th>$h</th>" for h in header), "</tr></thead><tbody>")
    for row in rows
        print(io, "<tr>", join("<td>$v</td>" for v in row), "</tr>")
    end
    print(io, "</tbody></table>")
    return HTML(String(take!(io)))
end

html_table([(p.x, p.y, round(norm2(p), digits=3)) for p in points]; header=["x", "y", "norm"])
"""),
    code(r'''
# A plot, as SVG: any type can say how it shows itself for a MIME type
struct LinePlot
    xs::Vector{Float64}
    ys::Vector{Float64}
    title::String
end

function Base.show(io::IO, ::MIME"image/svg+xml", p::LinePlot)
    w, h, m = 420, 240, 30
    lo, hi = extrema(p.ys)
    sx(x) = m + (x - first(p.xs)) / (last(p.xs) - first(p.xs)) * (w - 2m)
    sy(y) = h - m - (y - lo) / (hi - lo) * (h - 2m)
    pts = join(("$(round(sx(x), digits=1)),$(round(sy(y), digits=1))" for (x, y) in zip(p.xs, p.ys)), " ")
    print(io, """<svg xmlns="http://www.w3.org/2000/svg" width="$w" height="$h">""",
          """<rect width="$w" height="$h" fill="white" stroke="#ccc"/>""",
          """<polyline fill="none" stroke="#9558B2" stroke-width="2" points="$pts"/>""",
          """<text x="$(w ÷ 2)" y="20" text-anchor="middle" font-family="sans-serif" font-size="14">$(p.title)</text>""",
          """</svg>""")
end

# The plain-text form, for front ends that cannot show SVG (or do not trust this notebook yet)
Base.show(io::IO, p::LinePlot) = print(io, "LinePlot(\"", p.title, "\", ", length(p.xs), " points)")

xs = range(0, 2π, length=100)
LinePlot(collect(xs), sin.(xs), "sin(x) on [0, 2π]")
'''),
    code(r"""
# display() shows a value at once, in the middle of a cell, in order with printed text
for k in 1:3
    println("computing step ", k)
    display(md"Step **$k** of 3 done")
end
"""),
    code(r"""
hidden = 42;
"""),
    md(r"""
## Help, shell and package cells

`?name` shows the documentation, `;command` runs a shell command, `]command` runs a Pkg command,
as in the Julia REPL.
"""),
    code(r"""
?sum
"""),
    code(r"""
;echo "shell mode runs sh -c: $(echo pipes | tr a-z A-Z) work"
"""),
    code(r"""
]status
"""),
    md(r"""
## Errors

An error shows its type, message and stack trace, without the kernel's own frames. In a batch run
(nbclient, `jupyter nbconvert --execute`) an error stops the notebook, unless errors are allowed or
the cell is tagged `raises-exception`, as this one is.
"""),
    code(r"""
sqrt(-1.0)
""", raises=True),
    code(r"""
println("still here: total = ", total)
"""),
]

RECOVERY: List[Any] = [
    md(r"""
# Interrupts and crash recovery

A notebook on juliapool survives what ends an IJulia session: an interrupt keeps your variables, and a
crashed Julia worker is replaced at once by a warm spare (its variables are gone, and the kernel says
so).
"""),
    code(r"""
data = collect(1:10)
sum(data)
"""),
    md(r"""
## Interrupting a long cell

Press the stop button (Kernel → Interrupt Kernel). The cell below would run for a minute; in this
saved copy it was interrupted after 3 seconds. Julia raises `InterruptException` in the cell, and
the notebook's variables are kept.
"""),
    code(r"""
for i in 1:60
    println("working... ", i)
    sleep(1)
end
""", raises=True, interrupt_after=3),
    code(r"""
sum(data)  # still here
"""),
    md(r"""
## A loop that never looks up

`while true end` never reaches a point where Julia can take an interrupt. After a grace period of
2 seconds the kernel kills that Julia worker and says that the state is lost; the next cell runs on
the warm spare worker right away.
"""),
    code(r"""
while true end
""", raises=True, interrupt_after=3),
    code(r"""
data  # gone with the worker
""", raises=True),
    md(r"""
## A crashing worker

`exit()`, a segfault in C code or the out-of-memory killer end the Julia worker, never the kernel.
The cell says what happened; the next cell runs on a fresh worker within a second.
"""),
    code(r"""
data = collect(1:10);
"""),
    code(r"""
exit(1)
""", raises=True),
    code(r"""
data = collect(1:10)  # a fresh worker, ready at once
sum(data)
"""),
]

NOTEBOOKS = {"01-quick-start.ipynb": QUICK_START, "02-interrupt-and-recovery.ipynb": RECOVERY}


def build(cells: List[Any]) -> Any:
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i:02d}"  # stable ids: rebuilding changes only what the outputs change
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "julia", "file_extension": ".jl", "mimetype": "application/julia"}
    return nb


def execute(nb: Any, kernel_name: str, **kwargs: Any) -> Any:
    kwargs.setdefault("record_timing", False)  # saved copies differ only where outputs do
    client = NotebookClient(nb, kernel_name=kernel_name, timeout_func=cell_timeout,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(HERE)}},
                            **kwargs)
    client.execute()
    return nb


def main() -> int:
    from juliapool.kernel.install import install

    with tempfile.TemporaryDirectory(prefix="juliapool-notebooks-") as root:
        os.environ.update({"JUPYTER_PATH": os.path.join(root, "share", "jupyter"),
                           "JUPYTER_DATA_DIR": os.path.join(root, "data"),
                           "JUPYTER_RUNTIME_DIR": os.path.join(root, "runtime"),
                           "IPYTHONDIR": os.path.join(root, "ipython")})
        install(prefix=root, name=KERNELSPEC["name"], display_name=KERNELSPEC["display_name"])
        for name, cells in NOTEBOOKS.items():
            nb = execute(build(cells), KERNELSPEC["name"])
            nb.metadata["kernelspec"] = dict(KERNELSPEC)  # as a user's notebook would name it
            nbformat.write(nb, str(HERE / name))
            print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
