"""Every file nvhook reads is bounded (issue 13 §3): /dev/zero, a huge sparse file and a FIFO
(with no writer, and with a writer that never writes) are one line and a documented exit
status, never a hang and never all of memory. Each reader is run as the real command; an
address-space limit makes an unbounded read fail at once instead of swapping the machine,
and a hang is the subprocess timeout."""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import fakenvml
import pytest
from conftest import NVHOOK, Node, runc_state, write_bundle
from kubelet import crio_annotations

from nvhook import bounded, config, fileops
from nvhook.gpus import inventory
from nvhook.kube import checkpoint
from nvhook.nvidia import paths
from nvhook.oci import scan

GPU_ENV = [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"]
AS_LIMIT = 2 << 30  # the interpreter, typer and NVML take a few hundred MiB of it


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


@dataclass(frozen=True)
class Reader:
    """How to make one command read ``target`` through one of its readers."""

    status: int
    limit: int
    setup: Callable[[Node, Path, str], tuple[list[str], bytes]]  # -> nvhook's args, stdin


def gpu_bundle(node: Node, **kw: object) -> Path:
    return write_bundle(node.root / "b", GPU_ENV, **kw)  # type: ignore[arg-type]


def hook(config_path: str, bundle: Path) -> tuple[list[str], bytes]:
    return ["--config", config_path, "prestart"], runc_state(bundle)


def own_config(node: Node, tmp: Path, target: str) -> tuple[list[str], bytes]:
    return hook(target, gpu_bundle(node))


def inventory_file(node: Node, tmp: Path, target: str) -> tuple[list[str], bytes]:
    return ["--config", str(node.config), "explain", "--inventory", target,
            "--bundle", str(gpu_bundle(node))], b""


def nvidia_config(node: Node, tmp: Path, target: str) -> tuple[list[str], bytes]:
    node.write_config(f'[delegate]\npath = ""\nargs = ["-config={target}", "prestart"]\n')
    return hook(str(node.config), gpu_bundle(node))


def kubelet_checkpoint(node: Node, tmp: Path, target: str) -> tuple[list[str], bytes]:
    node.write_config(f'[kubernetes]\nallocation = "on"\nsources = ["checkpoint"]\n'
                      f'checkpoint = "{target}"\n')
    return hook(str(node.config),
                gpu_bundle(node, annotations=crio_annotations("ns", "p", "u-1", "main")))


def docker_config_doctor(node: Node, tmp: Path, target: str) -> tuple[list[str], bytes]:
    return ["--config", str(node.config), "doctor", "--prefix", str(tmp)], b""


def docker_config_install(node: Node, tmp: Path, target: str) -> tuple[list[str], bytes]:
    return ["--config", str(node.config), "install", "--engine", "docker", "--prefix",
            str(tmp), "--dry-run"], b""


DAEMON_JSON = "etc/docker/daemon.json"
READERS = {
    "nvhook's config": Reader(4, config.MAX_CONFIG_BYTES, own_config),
    "inventory file": Reader(7, inventory.MAX_INVENTORY_BYTES, inventory_file),
    "NVIDIA's config.toml": Reader(4, paths.MAX_CONFIG_BYTES, nvidia_config),
    "kubelet checkpoint": Reader(3, checkpoint.MAX_BYTES, kubelet_checkpoint),
    "daemon.json (doctor)": Reader(10, fileops.MAX_EDITED_BYTES, docker_config_doctor),
    "daemon.json (install)": Reader(9, fileops.MAX_EDITED_BYTES, docker_config_install),
}
AT_PREFIX = {"daemon.json (doctor)", "daemon.json (install)"}  # read at a fixed path


@pytest.fixture
def silent_writer() -> Iterator[Callable[[Path], None]]:
    """Hold a FIFO open for writing and never write: a plain open-and-read would wait."""
    fds: list[int] = []

    def hold(fifo: Path) -> None:
        fds.append(os.open(fifo, os.O_RDWR | os.O_CLOEXEC))

    yield hold
    for fd in fds:
        os.close(fd)


INPUTS = ["/dev/zero", "sparse 64 GiB", "FIFO, no writer", "FIFO, a silent writer"]


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("reader", READERS)
def test_reader_is_bounded(node: Node, tmp_path: Path, silent_writer: Callable[[Path], None],
                           reader: str, kind: str) -> None:
    r = READERS[reader]
    target = tmp_path / (DAEMON_JSON if reader in AT_PREFIX else "target")
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "/dev/zero":
        if reader in AT_PREFIX:
            target.symlink_to("/dev/zero")
        else:
            target = Path("/dev/zero")
    elif kind.startswith("sparse"):
        with open(target, "wb") as f:
            f.truncate(64 << 30)  # a hole: no disk, and never read
    else:
        os.mkfifo(target)
        if "silent" in kind:
            silent_writer(target)
    args, stdin = r.setup(node, tmp_path, str(target))
    proc = subprocess.run([str(NVHOOK), *args], input=stdin, capture_output=True, timeout=120,
                          check=False, env=node.env(), preexec_fn=limited)
    err = proc.stderr.decode()
    assert proc.returncode == r.status, err
    if kind.startswith("FIFO"):
        needle = "is a FIFO, not a regular file"
    else:
        needle = f"larger than {r.limit} bytes"
    text = err if reader != "daemon.json (doctor)" else proc.stdout.decode()
    [line] = [x for x in text.splitlines() if needle in x] or [text]
    assert needle in line, text
    if reader != "daemon.json (doctor)":
        assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("kind", ["sparse 64 GiB", "grew past the limit"])
def test_bundle_config_is_bounded(node: Node, tmp_path: Path, kind: str) -> None:
    """config.json must be a regular file (FIFOs and links: test_bad_input); its size is
    checked after fstat, on the fast path too."""
    bundle = tmp_path / "b"
    bundle.mkdir()
    with open(bundle / "config.json", "wb") as f:
        if kind.startswith("sparse"):
            f.truncate(64 << 30)
        else:
            f.write(b" " * (scan.MAX_SPEC_BYTES + 1))
    state = f'{{"ociVersion":"1.0.2","id":"c","status":"creating","bundle":"{bundle}"}}'
    proc = subprocess.run([str(NVHOOK), "--config", str(node.config), "prestart"],
                          input=state.encode(), capture_output=True, timeout=120, check=False,
                          env=node.env(), preexec_fn=limited)
    assert proc.returncode == 6, proc.stderr
    [line] = proc.stderr.decode().splitlines()
    assert f"larger than {scan.MAX_SPEC_BYTES} bytes" in line, line


def test_precreate_stdin_is_bounded(node: Node) -> None:
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run([str(NVHOOK), "--config", str(node.config), "precreate"],
                              stdin=zero, capture_output=True, timeout=120, check=False,
                              env=node.env(), preexec_fn=limited)
    assert (proc.returncode, proc.stdout) == (6, b"")
    [line] = proc.stderr.decode().splitlines()
    assert line == f"nvhook: <stdin>: larger than {scan.MAX_SPEC_BYTES} bytes, not an OCI config"


@pytest.mark.parametrize("stage", ["prestart", "createRuntime"])
def test_hook_stdin_is_bounded(node: Node, stage: str) -> None:
    """The hook's own stdin (the state): /dev/zero there is refused as the oversized state
    it is, within the address-space limit, through the fast path's own read."""
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run([str(NVHOOK), "--config", str(node.config), stage],
                              stdin=zero, capture_output=True, timeout=120, check=False,
                              env=node.env(), preexec_fn=limited)
    assert proc.returncode == 5, proc.stderr
    [line] = proc.stderr.decode().splitlines()
    assert line.startswith("nvhook: ") and "larger than" in line, line


@pytest.mark.parametrize(("make", "expected"), [
    pytest.param(lambda p: p.write_bytes(b"x" * 10), b"x" * 10, id="a regular file"),
    pytest.param(lambda p: p.write_bytes(b"x" * 11), bounded.TooLarge, id="one byte too many"),
    pytest.param(lambda p: p.symlink_to("/dev/null"), b"", id="/dev/null: empty"),
    pytest.param(lambda p: p.mkdir(), bounded.NotRegular, id="a directory"),
])
def test_read_table(tmp_path: Path, make: Callable[[Path], object],
                    expected: bytes | type[Exception]) -> None:
    path = tmp_path / "f"
    make(path)
    if isinstance(expected, bytes):
        assert bounded.read(path, 10) == expected
    else:
        with pytest.raises(expected) as info:
            bounded.read(path, 10)
        assert isinstance(info.value, OSError) and str(info.value).startswith(f"{path}: ")
