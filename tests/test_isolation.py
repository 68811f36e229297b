"""Nothing from the container reaches the host side.

- LD_PRELOAD, LD_LIBRARY_PATH, PYTHONPATH, PYTHONHOME, PATH and NVHOOK_* in the container's env
  (config.json ``process.env``) change nothing for nvhook or for NVIDIA's hook. The LD_PRELOAD
  is a real shared object whose constructor records every process that loads it.
- Variables in the hook's own env reach the delegate only through ``[delegate] env``.
- nvhook never opens a path inside the container rootfs (strace), even one full of symlinks
  to /etc/shadow and friends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import fakenvml
import pytest
from conftest import NVHOOK, Node, runc_state, write_bundle
from test_hook import write_delegate

PRELOAD_C = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {
    char cmd[512];
    int in = open("/proc/self/cmdline", O_RDONLY);
    ssize_t n = in >= 0 ? read(in, cmd, sizeof cmd - 1) : 0;
    if (in >= 0) close(in);
    if (n < 0) n = 0;
    for (ssize_t i = 0; i < n; i++) if (cmd[i] == 0) cmd[i] = ' ';
    cmd[n] = '\n';
    int fd = open(MARKER, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) { (void)!write(fd, cmd, n + 1); close(fd); }
}
"""
DELEGATE_ENV = ["PATH=/usr/bin:/bin", "NVHOOK_DELEGATE=1"]


@pytest.fixture(scope="module")
def preload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the .so, the marker file its constructor appends each loading process's argv to)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the LD_PRELOAD probe")
    d = tmp_path_factory.mktemp("preload")
    src, lib, marker = d / "mark.c", d / "libmark.so", d / "marker"
    src.write_text(PRELOAD_C)
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(lib), str(src)],
                   check=True, capture_output=True)
    # The probe works: a plain process that is handed it records itself.
    subprocess.run(["/bin/true"], env={"LD_PRELOAD": str(lib)}, check=True)
    assert "/bin/true" in marker.read_text()
    marker.unlink()
    return lib, marker


def hostile_container_env(tmp_path: Path, lib: Path, node: Node) -> list[str]:
    """Every way an image could try to reach into a host-side process."""
    pydir = tmp_path / "pyevil"
    pydir.mkdir()
    marker = tmp_path / "python-marker"
    for name in ("sitecustomize.py", "usercustomize.py", "json.py", "typer.py", "pynvml.py"):
        (pydir / name).write_text(f"open({str(marker)!r}, 'a').write({name!r})\n")
    libdir = tmp_path / "libevil"
    libdir.mkdir()
    shutil.copy(lib, libdir / "libnvidia-ml.so.1")
    bindir = tmp_path / "binevil"
    bindir.mkdir()
    for name in ("nvidia-container-runtime-hook", "nvidia-container-toolkit", "python3", "sh"):
        (bindir / name).write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
        (bindir / name).chmod(0o755)
    permissive = tmp_path / "permissive.toml"
    permissive.write_text('[policy]\nall = "always"\nmode = "audit"\n[delegate]\npath = ""\n')
    return [
        f"LD_PRELOAD={lib}", f"LD_LIBRARY_PATH={libdir}", f"PYTHONPATH={pydir}",
        "PYTHONHOME=/nonexistent", f"PATH={bindir}", f"NVHOOK_CONFIG={permissive}",
        "PYTHONSTARTUP=/etc/shadow", "PYTHONINSPECT=1", "PYTHONWARNINGS=error",
        f"PYTHONUSERBASE={pydir}", "LD_AUDIT=" + str(lib), "LD_DEBUG=all",
    ]


def test_container_env_has_no_effect(node: Node, tmp_path: Path,
                                     preload: tuple[Path, Path]) -> None:
    lib, marker = preload
    record = tmp_path / "record.json"
    delegate = write_delegate(tmp_path / "nvidia-hook", record)
    node.write_config(f'[delegate]\npath = "{delegate}"\nenv = {json.dumps(DELEGATE_ENV)}\n')
    hostile = hostile_container_env(tmp_path, lib, node)
    # Allowed: nvhook decides and execs the delegate.
    bundle = write_bundle(tmp_path / "allow", [*hostile,
                                               f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle, "a"))
    assert (proc.returncode, proc.stderr) == (0, b""), proc.stderr
    seen = json.loads(record.read_text())
    assert {k: v for k, v in seen["env"].items() if k != "LC_CTYPE"} == dict(
        e.split("=", 1) for e in DELEGATE_ENV)
    # Denied: the container's NVHOOK_CONFIG (all = "always") is not nvhook's config.
    bundle = write_bundle(tmp_path / "deny", [*hostile, "NVIDIA_VISIBLE_DEVICES=all"])
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle, "d"))
    assert proc.returncode == 3 and proc.stderr.startswith(b"nvhook: denied:"), proc.stderr
    assert not marker.exists(), marker.read_text()
    assert not (tmp_path / "python-marker").exists()


def test_hook_env_reaches_the_delegate_only_through_the_configured_list(
        node: Node, tmp_path: Path, preload: tuple[Path, Path]) -> None:
    lib, marker = preload
    record = tmp_path / "record.json"
    delegate = write_delegate(tmp_path / "nvidia-hook", record)
    node.write_config(f'[delegate]\npath = "{delegate}"\nenv = {json.dumps(DELEGATE_ENV)}\n')
    bundle = write_bundle(tmp_path / "b", [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
    extra = {"LD_PRELOAD": str(lib), "SECRET_TOKEN": "s3cr3t", "NVHOOK_DEBUG": "1",
             "PYTHONWARNINGS": "ignore", "HOME": "/root", "http_proxy": "http://proxy"}
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle),
                    extra=extra)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(record.read_text())
    assert {k: v for k, v in seen["env"].items() if k != "LC_CTYPE"} == dict(
        e.split("=", 1) for e in DELEGATE_ENV)
    # nvhook itself was handed the preload by its own (trusted) caller, so it ran there;
    # the delegate, exec'd with the configured env, never loaded it.
    loaded = marker.read_text().splitlines()
    marker.unlink()
    assert any("nvhook" in line for line in loaded), loaded
    assert not any(str(delegate) in line for line in loaded), loaded


OPEN = re.compile(r'\bopen(?:at2?)?\((?:[A-Z_]+|\d+), "((?:[^"\\]|\\.)*)"'
                  r'|\bopen\("((?:[^"\\]|\\.)*)"')


def make_trap_rootfs(rootfs: Path, lib: Path) -> None:
    """A rootfs whose every interesting path is a symlink into the host."""
    links = {
        "etc/shadow": "/etc/shadow", "etc/passwd": "/etc/passwd", "etc/ld.so.preload": str(lib),
        "etc/ld.so.cache": "/etc/ld.so.cache", "usr/lib64": "/usr/lib", "lib": "/lib",
        "bin/sh": "/bin/sh", "usr/bin/nvidia-container-cli": "/bin/false",
        "proc": "/proc", "root/.bashrc": "/etc/shadow", "config.json": "/etc/shadow",
        "etc/nvhook/config.toml": "/etc/shadow",
        "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1": str(lib),
    }
    for rel, target in links.items():
        path = rootfs / rel
        # Never create through a symlink made above: that would write on the host.
        assert not any(p.is_symlink() for p in path.parents), path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():
            path.symlink_to(target)


@pytest.mark.parametrize("root_path", ["absolute", "relative"])
@pytest.mark.parametrize("request_env", ["allow", "rewrite", "deny"])
def test_never_opens_a_path_in_the_rootfs(node: Node, tmp_path: Path,
                                          preload: tuple[Path, Path], root_path: str,
                                          request_env: str) -> None:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (scripts/ensure-system-deps.sh installs it)")
    lib, marker = preload
    record = tmp_path / "record.json"
    delegate = write_delegate(tmp_path / "nvidia-hook", record)
    mode = "rewrite" if request_env == "rewrite" else "enforce"
    node.write_config(f'[policy]\nmode = "{mode}"\n[delegate]\npath = "{delegate}"\n')
    env = {"allow": [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"],
           "rewrite": ["NVIDIA_VISIBLE_DEVICES=0,all", "NVIDIA_VISIBLE_DEVICES=1"],
           "deny": ["NVIDIA_VISIBLE_DEVICES=all", "CUDA_VERSION=12"]}[request_env]
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    write_bundle(bundle, [*env, f"LD_PRELOAD={lib}"])
    make_trap_rootfs(rootfs, lib)
    doc = json.loads((bundle / "config.json").read_text())
    doc["root"]["path"] = str(rootfs) if root_path == "absolute" else "rootfs"
    (bundle / "config.json").write_text(json.dumps(doc))
    trace = tmp_path / "strace.out"
    proc = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(trace),
         str(NVHOOK), "--config", str(node.config), "prestart"],
        input=runc_state(bundle), capture_output=True, env=node.env(), cwd=bundle,
        timeout=60, check=False)
    assert proc.returncode == (3 if request_env == "deny" else 0), proc.stderr
    opened = []
    for m in OPEN.finditer(trace.read_text()):
        path = m.group(1) or m.group(2)
        opened.append(os.path.normpath(os.path.join(bundle, path)))
    assert opened, "strace recorded no opens: the trace is not working"
    assert str(bundle / "config.json") in opened  # the spec itself is read
    inside = [p for p in opened if p == str(rootfs) or p.startswith(f"{rootfs}/")]
    assert inside == [], inside
    assert not marker.exists()
