"""A regular (non-editable) install of this checkout in a throwaway venv: what an operator's
``pip install .`` gives, for tests/test_installed_command.py and bench/run.py.

The repo's .venv is an editable install, whose import hook runs at every interpreter start;
timing or inspecting the installed command there says nothing about a real node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from (pyproject.toml's packages, script-files and data-files).
SOURCES = ("pyproject.toml", "README.md", "nvhook", "bin", "man")


class Kind(StrEnum):
    REGULAR = "regular"
    EDITABLE = "editable"


class Deps(StrEnum):
    INDEX = "index"  # pip resolves them, from its configured index (as setup-venv.sh does)
    RUNNING = "running"  # a .pth naming this interpreter's site-packages: no index needed


@dataclass(frozen=True)
class Install:
    prefix: Path
    kind: Kind
    python_version: str

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def nvhook(self) -> Path:
        return self.prefix / "bin" / "nvhook"

    def describe(self) -> dict[str, str]:
        return {"kind": str(self.kind), "prefix": str(self.prefix),
                "python": self.python_version}


def pip(*args: str | Path, python: Path | None = None,
        env: dict[str, str] | None = None) -> None:
    """This interpreter's pip, installing into ``python``'s environment when given."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    if python is not None:
        cmd += ["--python", str(python)]
    proc = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True,
                          timeout=600, check=False, stdin=subprocess.DEVNULL, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if "is ignored" not in ln]
        raise RuntimeError(f"pip {' '.join(map(str, args))} failed:\n" + "\n".join(lines[-20:]))


def build_wheel(work: Path) -> Path:
    """The checkout's wheel, built from a copy: pip builds in-tree (build/, *.egg-info)."""
    src = work / "src"
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / name)
    pip("wheel", "--no-deps", "-w", work / "wheel", src)
    (wheel,) = (work / "wheel").glob("nvhook-*.whl")
    return wheel


def install(prefix: Path, *, deps: Deps = Deps.INDEX, with_pip: bool = True,
            wheel: Path | None = None) -> Install:
    """Install the checkout's wheel (built here unless given), not editable, into a new venv
    at ``prefix``. ``with_pip``: a venv as ``python -m venv`` makes it (an operator's), else
    a bare one."""
    wheel = wheel or build_wheel(prefix.with_name(prefix.name + "-build"))
    base = getattr(sys, "_base_executable", sys.executable)
    venv = [base, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(prefix)]
    subprocess.run(venv, check=True, capture_output=True, timeout=300)
    python = prefix / "bin" / "python"
    if deps is Deps.RUNNING:
        site = Path(subprocess.run(
            [python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True).stdout.strip())
        # Appended after the venv's own site-packages: the installed nvhook comes first.
        (site / "nvhook-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        pip("install", "--no-deps", wheel, python=python)
    else:
        pip("install", wheel, python=python)
    return describe(prefix)


def describe(prefix: Path) -> Install:
    """The nvhook install in the environment at ``prefix``: its kind (from PEP 610's
    direct_url.json) and its interpreter's version."""
    python = prefix / "bin" / "python"
    probe = ("import importlib.metadata as m, json, sys; d = m.distribution('nvhook'); "
             "print(json.dumps([sys.version.split()[0], d.read_text('direct_url.json')]))")
    proc = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True,
                          check=False, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{prefix}: no nvhook installed there ({proc.stderr.strip()})")
    version, direct_url = json.loads(proc.stdout)
    editable = bool(direct_url) and json.loads(direct_url).get("dir_info", {}).get("editable")
    return Install(prefix, Kind.EDITABLE if editable else Kind.REGULAR, version)
