"""nvhook through a real Docker 20.10 (Debian's `docker.io`): `docker run --runtime=nvhook`,
and a plain `docker run` once `nvhook install --engine docker --default` made nvhook the
default runtime in the daemon.json dockerd is started on. Each dockerd has a private socket,
data root, exec root and pidfile, no iptables and no bridge (`--network none` containers), vfs
storage, and a local image imported from the busybox rootfs (`docker import`). The shim runs
inside dockerd's containerd; its inserted prestart hook is run by runc and hands over to a
recording stand-in for NVIDIA's hook; a refusal reaches Docker's error through the runtime's
JSON log."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nvhook.cli import app

from .daemons import Docker, docker_available, short_tempdir, start_docker, start_or_skip
from .engine_setup import GPUS, Node, make_node
from .harness import Recorder, write_recording_delegate

pytestmark = pytest.mark.e2e

IMAGE = "nvhook-e2e/busybox:1"


@dataclass
class Engine:
    docker: Docker
    node: Node
    default: bool  # nvhook is dockerd's default runtime

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        runtime = () if self.default else ("--runtime=nvhook",)
        return self.docker.docker("run", "--rm", "--network", "none", *runtime, *args, IMAGE,
                                  "/bin/env")


def _import_image(docker: Docker, rootfs: Path) -> None:
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True,
                         check=True, timeout=120)
    res = subprocess.run([docker.docker_binary, "--host", docker.host, "import", "-", IMAGE],
                         input=tar.stdout, capture_output=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr.decode()


def _node_in(base: Path) -> Node:
    """nvhook's simulated node (enforce mode) and a recording NVIDIA hook under ``base``:
    module-scoped, so not the per-test `recorder` fixture."""
    recorder = Recorder(path=write_recording_delegate(
        base / "delegate" / "nvidia-container-runtime-hook", base / "record"),
        record_dir=base / "record")
    return make_node(base / "node", recorder, mode="enforce")


def _start(base: Path, daemon_json: Path) -> Docker:
    return start_or_skip("dockerd", docker_available(), lambda: start_docker(daemon_json, base))


@pytest.fixture(scope="module", params=[False, True], ids=["--runtime=nvhook", "default"])
def engine(request: pytest.FixtureRequest, rootfs: Path) -> Iterator[Engine]:
    """One dockerd per variant. The nvhook node (config, audit, recorder) lives in the same
    temp dir; each test resets the record and the audit log."""
    base = short_tempdir("nvh-dkr-")
    docker = None
    try:
        node = _node_in(base)
        prefix = base / "prefix"
        args = ["--config", str(node.config), "install", "--engine", "docker", "--prefix",
                str(prefix), "--nvhook-path", str(node.nvhook)]
        result = CliRunner().invoke(app, [*args, "--default"] if request.param else args)
        assert result.exit_code == 0, result.output
        docker = _start(base, prefix / "etc/docker/daemon.json")
        _import_image(docker, rootfs)
        yield Engine(docker, node, request.param)
    finally:
        if docker is not None:
            docker.stop()  # also removes base
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def eng(engine: Engine) -> Engine:
    shutil.rmtree(engine.node.recorder.record_dir, ignore_errors=True)
    engine.node.audit.unlink(missing_ok=True)
    engine.node.config.write_text(engine.node.config.read_text().replace(
        'mode = "rewrite"', 'mode = "enforce"'))
    return engine


def env_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("NVIDIA_VISIBLE_DEVICES=")]


def test_daemon_json_is_what_install_wrote(eng: Engine) -> None:
    info = json.loads(eng.docker.docker("info", "--format", "{{json .}}").stdout)
    assert "nvhook" in info["Runtimes"]
    assert info["DefaultRuntime"] == ("nvhook" if eng.default else "runc")


def test_no_gpu_runs(eng: Engine) -> None:
    res = eng.run("-e", "HELLO=1")
    assert res.returncode == 0, res.stderr
    assert "HELLO=1" in res.stdout.splitlines()
    assert env_lines(res.stdout) == []
    assert eng.node.audit_lines() == []


def test_all_unprivileged_is_refused_and_docker_shows_why(eng: Engine) -> None:
    res = eng.run("-e", "NVIDIA_VISIBLE_DEVICES=all")
    assert res.returncode != 0
    assert "nvhook: denied: NVIDIA_VISIBLE_DEVICES=all" in res.stderr, res.stderr
    assert "unable to retrieve OCI runtime error" not in res.stderr
    assert eng.node.recorder.read() is None


@pytest.mark.parametrize(
    ("mode", "asked", "want"),
    [
        pytest.param("enforce", GPUS[1], GPUS[1], id="live UUID"),
        pytest.param("rewrite", "1", GPUS[1], id="index in rewrite mode: pinned to the UUID"),
    ],
)
def test_gpu_is_pinned_and_handed_to_nvidias_hook(eng: Engine, mode: str, asked: str,
                                                  want: str) -> None:
    eng.node.config.write_text(eng.node.config.read_text().replace(
        'mode = "enforce"', f'mode = "{mode}"'))
    res = eng.run("-e", f"NVIDIA_VISIBLE_DEVICES={asked}")
    assert res.returncode == 0, res.stderr
    assert env_lines(res.stdout) == [f"NVIDIA_VISIBLE_DEVICES={want}"]
    record = eng.node.recorder.read()
    assert record is not None, "runc did not run the inserted prestart hook"
    assert record.config_env_map["NVIDIA_VISIBLE_DEVICES"] == want
    assert [a["stage"] for a in eng.node.audit_lines()] == ["runtime-create", "prestart"]


def test_cap_sys_admin_with_all_is_as_the_policy_says(eng: Engine) -> None:
    """all = "privileged" (--privileged fails on these VMs; --cap-add SYS_ADMIN puts
    CAP_SYS_ADMIN in bounding, which is what NVIDIA and nvhook call privileged)."""
    res = eng.run("--cap-add", "SYS_ADMIN", "-e", "NVIDIA_VISIBLE_DEVICES=all")
    assert res.returncode == 0, res.stderr
    assert env_lines(res.stdout) == [f"NVIDIA_VISIBLE_DEVICES={GPUS[0]},{GPUS[1]}"]
    assert eng.node.recorder.read() is not None
    assert [a["stage"] for a in eng.node.audit_lines()] == ["runtime-create", "prestart"]


def test_doctor_asks_the_running_dockerd(eng: Engine) -> None:
    from nvhook.ops import doctor

    opts = doctor.Options(prefix=eng.docker.base / "prefix",
                          docker_socket=eng.docker.base / "d.sock")
    lines = [c.line() for c in doctor._docker(opts)]
    want = "ok" if eng.default else "warn"
    assert lines[-1] == (f"{want}  docker: the running dockerd has runtime nvhook; its default "
                         f"is {'nvhook' if eng.default else 'runc'!r}"), lines


STANDIN = """#!/bin/sh
# A recording stand-in for nvidia-container-runtime: note the argv, then be runc.
printf '%s\\n' "$*" >> {record}
exec {runc} "$@"
"""


@pytest.fixture(scope="module")
def chained(rootfs: Path) -> Iterator[tuple[Engine, Path]]:
    """A node whose Docker default was NVIDIA's runtime (here a recording stand-in), then
    `nvhook install --engine docker --default`: plain `docker run` goes nvhook -> stand-in."""
    from .harness import find_binary

    base = short_tempdir("nvh-dkc-")
    docker = None
    try:
        node = _node_in(base)
        standin = base / "bin" / "nvidia-container-runtime"
        standin.parent.mkdir()
        standin.write_text(STANDIN.format(record=base / "standin.log", runc=find_binary("runc")))
        standin.chmod(0o755)
        daemon_json = base / "prefix/etc/docker/daemon.json"
        daemon_json.parent.mkdir(parents=True)
        daemon_json.write_text(json.dumps({"default-runtime": "nvidia",
                                           "runtimes": {"nvidia": {"path": str(standin)}}}))
        result = CliRunner().invoke(app, [
            "--config", str(node.config), "install", "--engine", "docker", "--default",
            "--prefix", str(base / "prefix"), "--nvhook-path", str(node.nvhook)])
        assert result.exit_code == 0, result.output
        docker = _start(base, daemon_json)
        _import_image(docker, rootfs)
        yield Engine(docker, node, default=True), base / "standin.log"
    finally:
        if docker is not None:
            docker.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_default_install_chains_to_the_runtime_it_replaced(
    chained: tuple[Engine, Path]
) -> None:
    eng, standin_log = chained
    eng.node.audit.unlink(missing_ok=True)
    assert f'path = "{standin_log.parent / "bin" / "nvidia-container-runtime"}"' in (
        eng.node.config.read_text())
    res = eng.run("-e", f"NVIDIA_VISIBLE_DEVICES={GPUS[1]}")
    assert res.returncode == 0, res.stderr
    assert env_lines(res.stdout) == [f"NVIDIA_VISIBLE_DEVICES={GPUS[1]}"]
    calls = standin_log.read_text().splitlines()
    creates = [c for c in calls if " create " in f" {c} "]
    assert len(creates) == 1 and "--bundle" in creates[0], calls
    # NVIDIA's runtime adds NVIDIA's hook itself: nvhook inserted none.
    assert eng.node.recorder.read() is None
    assert [a["stage"] for a in eng.node.audit_lines()] == ["runtime-create"]


def test_chained_refusal_never_reaches_the_next_runtime(chained: tuple[Engine, Path]) -> None:
    eng, standin_log = chained
    before = standin_log.read_text() if standin_log.exists() else ""
    res = eng.run("-e", "NVIDIA_VISIBLE_DEVICES=all")
    assert res.returncode != 0
    assert "nvhook: denied: NVIDIA_VISIBLE_DEVICES=all" in res.stderr, res.stderr
    after = standin_log.read_text() if standin_log.exists() else ""
    new = after[len(before):].splitlines()
    assert not [c for c in new if " create " in f" {c} "], new
