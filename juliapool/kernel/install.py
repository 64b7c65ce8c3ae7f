"""Install the juliapool kernelspec, the way `python -m ipykernel install` does.

    juliapool-kernel-install [--user | --sys-prefix | --prefix DIR] [--name NAME]
                             [--display-name TEXT] [--julia PATH] [--threads N] [--project DIR]
                             [--julia-arg ARG ...] [--interrupt-mode signal|message] [--env K=V ...]
                             [--server]

The template (kernelspec/kernel.json and the logos) is copied to a temporary folder, filled in (this
Python, the Julia options), and handed to jupyter_client's KernelSpecManager, which puts it where
`jupyter kernelspec list` finds it.
"""

from __future__ import annotations

import argparse
import compileall
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from jupyter_client.kernelspec import KernelSpecManager

from .provisioner import NAME as PROVISIONER

DEFAULT_NAME = "juliapool"
DEFAULT_DISPLAY_NAME = "Julia (juliapool)"
TEMPLATE_FILES = ("kernel.json", "logo-32x32.png", "logo-64x64.png")


def template_dir() -> Path:
    """kernelspec/ of a source checkout, or its copy inside an installed wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_kernelspec", package.parent / "kernelspec"):
        if (candidate / "kernel.json").is_file():
            return candidate
    raise FileNotFoundError("the juliapool kernelspec template (kernel.json) is missing")


def kernel_json(display_name: str, julia: Optional[str], julia_args: Sequence[str],
                interrupt_mode: str, env: Dict[str, str], server: bool = False) -> dict:
    spec = json.loads((template_dir() / "kernel.json").read_text())
    # This interpreter, so the kernel runs where juliapool is installed.
    spec["argv"][0] = sys.executable
    if julia:
        spec["argv"].append(f"--julia={julia}")
    # `=` keeps a value that starts with `--` attached to its option.
    spec["argv"] += [f"--julia-arg={arg}" for arg in julia_args]
    if server:  # lease the notebook's worker from the user's pool server; its zygote forks the kernel
        spec["argv"][1:3] = ["-S", str(Path(__file__).resolve().parent / "launcher.py")]
        spec["argv"].append("--server")
    spec["display_name"] = display_name
    spec["interrupt_mode"] = interrupt_mode
    # jupyter_client's local provisioner, waiting until the kernel listens (see provisioner.py)
    spec.setdefault("metadata", {})["kernel_provisioner"] = {"provisioner_name": PROVISIONER}
    spec["env"] = {**spec.get("env", {}), **env}
    return spec


def install(*, user: bool = False, prefix: Optional[str] = None, name: str = DEFAULT_NAME,
            display_name: str = DEFAULT_DISPLAY_NAME, julia: Optional[str] = None,
            julia_args: Sequence[str] = (), interrupt_mode: str = "signal",
            env: Optional[Dict[str, str]] = None, server: bool = False) -> str:
    """Install the kernelspec and return the folder it went to."""
    spec = kernel_json(display_name, julia, julia_args, interrupt_mode, env or {}, server)
    with tempfile.TemporaryDirectory(prefix="juliapool-kernelspec-") as tmp:
        for fname in TEMPLATE_FILES[1:]:
            shutil.copy(template_dir() / fname, Path(tmp) / fname)
        (Path(tmp) / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        return KernelSpecManager().install_kernel_spec(tmp, kernel_name=name, user=user,
                                                       prefix=prefix)


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="juliapool-kernel-install",
                                description="Install the juliapool Julia kernel for Jupyter.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true",
                       help=f"install into this Python's prefix ({sys.prefix})")
    where.add_argument("--prefix", help="install into PREFIX/share/jupyter/kernels")
    p.add_argument("--name", default=DEFAULT_NAME, help="kernelspec name (default %(default)s)")
    p.add_argument("--display-name", default=None, help="name shown in Jupyter")
    p.add_argument("--julia", help="the Julia executable (default: found at kernel start)")
    p.add_argument("--threads", help="Julia threads, as julia --threads (e.g. 4 or auto)")
    p.add_argument("--project", help="Julia project folder, as julia --project")
    p.add_argument("--julia-arg", action="append", default=[], dest="julia_args",
                   help="another Julia command-line argument (repeatable)")
    p.add_argument("--interrupt-mode", choices=("signal", "message"), default="signal")
    p.add_argument("--server", action="store_true",
                   help="notebooks lease their Julia worker from the user's pool server (started on demand)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for the kernel (repeatable)")
    return p.parse_args(argv)


def _julia_args(opts: argparse.Namespace) -> List[str]:
    args = list(opts.julia_args)
    if opts.threads:
        args.append(f"--threads={opts.threads}")
    if opts.project:
        args.append(f"--project={opts.project}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = _parse(argv)
    env = dict(item.split("=", 1) for item in opts.env)
    display_name = opts.display_name
    if display_name is None:
        display_name = DEFAULT_DISPLAY_NAME if opts.name == DEFAULT_NAME else opts.name
    prefix = sys.prefix if opts.sys_prefix else opts.prefix
    dest = install(user=opts.user, prefix=prefix, name=opts.name, display_name=display_name,
                   julia=opts.julia, julia_args=_julia_args(opts),
                   interrupt_mode=opts.interrupt_mode, env=env, server=opts.server)
    print(f"Installed kernelspec {opts.name} in {dest}")
    byte_compile_package()
    return 0


def byte_compile_package() -> None:
    """Write juliapool's .pyc files now. pip does so for a regular install, but not for an editable
    one, and where PYTHONDONTWRITEBYTECODE is set (common in containers) Python never writes them:
    every kernel start would then compile juliapool's sources again (~25 ms, before Julia starts).
    A read-only install folder is left as it is."""
    package = Path(__file__).resolve().parent.parent
    try:
        compileall.compile_dir(str(package), quiet=2)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
