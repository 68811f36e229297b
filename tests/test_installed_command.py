"""The `nvhook` command a regular `pip install .` puts on the node: nvhook's own lean script
(bin/nvhook), not pip's generated wrapper, run as `python -I` would run it, and every
subcommand still reachable through it. Built from this checkout into a throwaway venv."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import regular_install
from conftest import Node, runc_state, write_bundle

# Beyond what `python -I -c pass` loads, the no-GPU hook may import nvhook's own fast-path
# modules, built-in ones (errno) and these alone: no json, re, typing, dataclasses, enum,
# typer (each costs milliseconds on every container start; docs/performance.md).
FAST_PATH_STDLIB = frozenset({"_json", "__future__"})
HEAVY = ("re", "json", "typing", "dataclasses", "enum", "typer", "click", "pynvml", "grpc")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return regular_install.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> regular_install.Install:
    prefix = tmp_path_factory.mktemp("regular") / "venv"
    # Dependencies from this interpreter's site-packages: the test needs no index.
    return regular_install.install(prefix, deps=regular_install.Deps.RUNNING, with_pip=False,
                                   wheel=wheel)


def clean_env(node: Node, **extra: str) -> dict[str, str]:
    """The hook's env as an engine sets it: no PYTHON* variable (this shell may have some)."""
    env = {k: v for k, v in node.env().items() if not k.startswith("PYTHON")}
    return {**env, **extra}


def imported(stderr: bytes) -> set[str]:
    """Module names from `-X importtime` lines."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.decode().splitlines()
            if line.startswith("import time:") and "imported package" not in line}


def test_the_installed_script_is_nvhooks_own(installed: regular_install.Install) -> None:
    first, _, rest = installed.nvhook.read_text().partition("\n")
    # pip rewrote "#!python" to the venv's interpreter: an absolute path, no flags kept.
    assert first == f"#!{installed.python}"
    assert rest == (regular_install.REPO / "bin" / "nvhook").read_text().partition("\n")[2]
    assert os.access(installed.nvhook, os.X_OK)
    assert installed.kind is regular_install.Kind.REGULAR


@pytest.mark.parametrize("extra", [
    pytest.param({}, id="engine's clean env: runs in place"),
    pytest.param({"PYTHONDONTWRITEBYTECODE": "1"}, id="a PYTHON* variable: restarts with -I"),
])
def test_no_gpu_hook_imports_only_the_fast_path(
        installed: regular_install.Install, node: Node, tmp_path: Path,
        extra: dict[str, str]) -> None:
    bundle = write_bundle(tmp_path / "b", ["PATH=/bin", "HOME=/root"])
    env = clean_env(node, **extra)
    bare = subprocess.run([installed.python, "-X", "importtime", "-I", "-c", "pass"],
                          capture_output=True, env=env, timeout=60, check=True)
    # -X importtime goes through the script's restart too (it re-uses sys.orig_argv).
    hook = subprocess.run([installed.python, "-X", "importtime", installed.nvhook,
                           "--config", str(node.config), "prestart"],
                          input=runc_state(bundle), capture_output=True, env=env, timeout=60,
                          check=False)
    assert hook.returncode == 0, hook.stderr.decode()[-2000:]
    extras = imported(hook.stderr) - imported(bare.stderr)
    assert "nvhook.entry" in extras
    assert not extras & set(HEAVY)
    # Modules compiled into the interpreter (errno) cost next to nothing.
    stdlib = {m for m in extras if m.partition(".")[0] != "nvhook"}
    assert stdlib - set(sys.builtin_module_names) <= FAST_PATH_STDLIB
    assert node.audit_lines() == []


FAKE_NVHOOK = "import sys\nsys.stderr.write('a foreign nvhook was imported\\n')\nsys.exit(99)\n"


def python_dir() -> str:
    """lib/pythonX.Y: the throwaway installs use this interpreter's version."""
    return f"python{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.mark.parametrize("where", [
    pytest.param("PYTHONPATH", id="PYTHONPATH names a directory with another nvhook"),
    pytest.param("beside", id="an nvhook.py beside the script (sys.path[0])"),
    pytest.param("user-site", id="a user site-packages with another nvhook"),
])
def test_runs_as_python_minus_I(installed: regular_install.Install, node: Node,
                                tmp_path: Path, where: str) -> None:
    env = clean_env(node)
    script = installed.nvhook
    if where == "PYTHONPATH":
        (tmp_path / "path" / "nvhook").mkdir(parents=True)
        (tmp_path / "path" / "nvhook" / "__init__.py").write_text(FAKE_NVHOOK)
        env["PYTHONPATH"] = str(tmp_path / "path")
    elif where == "beside":
        (tmp_path / "bin").mkdir()
        script = tmp_path / "bin" / "nvhook"
        script.write_bytes(installed.nvhook.read_bytes())
        script.chmod(0o755)
        (tmp_path / "bin" / "nvhook.py").write_text(FAKE_NVHOOK)
    else:
        # A user site is only read outside a venv or in one with system site-packages.
        venv = tmp_path / "sysvenv"
        subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv",
                        "--without-pip", "--system-site-packages", str(venv)], check=True)
        installed_site = installed.prefix / "lib" / python_dir() / "site-packages"
        # The installed nvhook, then its dependencies (regular_install's .pth line).
        (venv / "lib" / python_dir() / "site-packages" / "nvhook.pth").write_text(
            f"{installed_site}\n" + (installed_site / "nvhook-test-deps.pth").read_text())
        script = venv / "bin" / "nvhook"
        script.write_text(f"#!{venv / 'bin' / 'python'}\n"
                          + installed.nvhook.read_text().partition("\n")[2])
        script.chmod(0o755)
        home = tmp_path / "home"
        user_site = home / ".local" / "lib" / python_dir() / "site-packages"
        user_site.mkdir(parents=True)
        (tmp_path / "foreign" / "nvhook").mkdir(parents=True)
        (tmp_path / "foreign" / "nvhook" / "__init__.py").write_text(FAKE_NVHOOK)
        # The user site comes after the venv's own, so it reorders sys.path from a .pth.
        (user_site / "foreign.pth").write_text(
            f"import sys; sys.path.insert(0, {str(tmp_path / 'foreign')!r})\n")
        env["HOME"] = str(home)
        # The trap is armed: without the script's isolation the foreign nvhook wins.
        probe = subprocess.run([venv / "bin" / "python", "-P", "-c", "import nvhook"],
                               capture_output=True, env=env, timeout=60, check=False)
        assert probe.returncode == 99
    proc = subprocess.run([script, "--version"], capture_output=True, env=env, timeout=60,
                          check=False)
    assert (proc.returncode, proc.stdout.decode().strip(), proc.stderr) == (0, "nvhook 0.1.0",
                                                                            b"")


@pytest.mark.parametrize("extra", [
    pytest.param({}, id="engine's clean env: runs in place"),
    pytest.param({"PYTHONDONTWRITEBYTECODE": "1"}, id="a PYTHON* variable: restarts with -E -P"),
])
def test_a_user_install_still_finds_itself(node: Node, tmp_path: Path, wheel: Path,
                                           extra: dict[str, str]) -> None:
    """`pip install --user` puts nvhook in the user site, which `-I` would hide."""
    home = tmp_path / "home"
    env = clean_env(node, HOME=str(home), **extra)
    base = Path(getattr(sys, "_base_executable", sys.executable))
    # The user site of a throwaway HOME: nothing of the system's is touched, so a distro's
    # "externally managed" marker (PEP 668) does not apply.
    managed = (Path(sysconfig.get_paths()["stdlib"]) / "EXTERNALLY-MANAGED").exists()
    regular_install.pip("install", "--user", "--no-deps", wheel,
                        *(["--break-system-packages"] if managed else []), python=base, env=env)
    user_site = home / ".local" / "lib" / python_dir() / "site-packages"
    (user_site / "nvhook-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = home / ".local" / "bin" / "nvhook"
    assert script.read_text().startswith("#!")
    proc = subprocess.run([script, "--version"], capture_output=True, env=env, timeout=60,
                          check=False)
    assert (proc.returncode, proc.stdout.decode().strip(), proc.stderr) == (0, "nvhook 0.1.0",
                                                                            b"")


@pytest.mark.parametrize(("args", "start"), [
    pytest.param(["--version"], "nvhook 0.1.0", id="--version"),
    pytest.param(["-h"], "Usage: nvhook", id="-h"),
    pytest.param(["doctor", "--help"], "Usage: nvhook doctor", id="doctor --help"),
    pytest.param(["prestart", "--help"], "Usage: nvhook prestart", id="prestart --help"),
    pytest.param(["explain", "--help"], "Usage: nvhook explain", id="explain --help"),
    pytest.param(["config", "--help"], "Usage: nvhook config", id="config --help"),
])
def test_every_subcommand_works_from_the_script(installed: regular_install.Install,
                                                 node: Node, args: list[str],
                                                 start: str) -> None:
    proc = subprocess.run([installed.nvhook, *args], capture_output=True, env=clean_env(node),
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().startswith(start)


@pytest.mark.parametrize("command", [
    pytest.param("script", id="the installed nvhook"),
    pytest.param("-m", id="python -I -m nvhook"),
])
def test_the_gpu_path_runs_from_the_install(installed: regular_install.Install, node: Node,
                                            tmp_path: Path, command: str) -> None:
    bundle = write_bundle(tmp_path / "b", ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"])
    argv = [installed.nvhook] if command == "script" else [installed.python, "-I", "-m",
                                                            "nvhook"]
    proc = subprocess.run([*argv, "--config", str(node.config), "prestart"],
                          input=runc_state(bundle), capture_output=True, env=clean_env(node),
                          timeout=60, check=False)
    assert proc.returncode == 3
    assert proc.stderr.decode().startswith("nvhook: denied")
    assert [e["decision"] for e in node.audit_lines()] == ["deny"]
