"""nvhook through a real containerd 1.6 (Debian's `containerd`): its CRI plugin loads on the
config before and after every install variant, and `ctr run` with nvhook's wrapper as the
runc binary of `io.containerd.runc.v2` is judged: the shim runs inside containerd's flow,
its inserted prestart hook is run by runc and hands over to a recording stand-in for NVIDIA's
hook, and a refusal reaches ctr's error through the runtime's JSON log."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nvhook.cli import app

from .daemons import Containerd, containerd_available, start_containerd, start_or_skip
from .engine_setup import GPUS, Node, make_node
from .harness import Recorder, copy_rootfs, new_container_id

pytestmark = pytest.mark.e2e

CRI = "io.containerd.grpc.v1.cri"
NVIDIA = (
    "version = 2\n\n"
    f'[plugins."{CRI}".containerd]\n  default_runtime_name = "nvidia"\n\n'
    f'  [plugins."{CRI}".containerd.runtimes.nvidia]\n'
    '    runtime_type = "io.containerd.runc.v2"\n'
    f'    [plugins."{CRI}".containerd.runtimes.nvidia.options]\n'
    '      BinaryName = "/usr/bin/nvidia-container-runtime"\n'
)
EXPLICIT_RUNC = (f'version = 2\n[plugins."{CRI}".containerd.runtimes.runc]\n'
                 '  runtime_type = "io.containerd.runc.v2"\n')


def _start(config: Path | None) -> Containerd:
    return start_or_skip("containerd", containerd_available(), lambda: start_containerd(config))


@pytest.mark.parametrize(
    ("original", "flags"),
    [
        pytest.param(None, (), id="no config"),
        pytest.param("version = 2\n", (), id="bare v2 (implied runc)"),
        pytest.param(f'version = 2\n[plugins."{CRI}".containerd]\n  snapshotter = "native"\n',
                     (), id="containerd table, no runtimes"),
        pytest.param(EXPLICIT_RUNC, (), id="explicit runc"),
        pytest.param(NVIDIA, (), id="nvidia default"),
        pytest.param(None, ("--default",), id="--default, no config"),
        pytest.param("version = 2\n", ("--default",), id="--default, bare v2"),
        pytest.param(NVIDIA, ("--default",), id="--default, nvidia default"),
    ],
)
def test_cri_plugin_loads_before_and_after_install(
    tmp_path: Path, original: str | None, flags: tuple[str, ...]
) -> None:
    prefix = tmp_path / "root"
    config = prefix / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    if original is not None:
        config.write_text(original)
        ctd = _start(config)
        try:
            assert ctd.cri_status() == "ok", ctd.daemon.tail()
        finally:
            ctd.stop()
    result = CliRunner().invoke(app, ["install", "--engine", "containerd", "--prefix",
                                      str(prefix), "--nvhook-path", "/usr/local/bin/nvhook",
                                      *flags])
    assert result.exit_code == 0, result.output
    ctd = _start(config)
    try:
        assert ctd.cri_status() == "ok", ctd.daemon.tail()
    finally:
        ctd.stop()


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    ctd = _start(None)
    try:
        yield ctd
    finally:
        ctd.stop()


@pytest.fixture
def node(tmp_path: Path, recorder: Recorder) -> Node:
    return make_node(tmp_path / "node", recorder, mode="enforce")




def ctr_run(ctd: Containerd, node: Node, rootfs: Path, tmp_path: Path, env: list[str],
            *extra: str) -> subprocess.CompletedProcess[str]:
    """`ctr run --rm` of /bin/env on a private copy of the rootfs, through nvhook's wrapper."""
    cid = new_container_id("nvh-ctr")
    own = copy_rootfs(rootfs, tmp_path / f"rootfs-{cid}")
    # --rootfs is a switch: the image argument is then the rootfs directory.
    args = ["run", "--rm", "--rootfs", "--runtime", "io.containerd.runc.v2", "--runc-binary",
            str(node.wrapper)]
    for e in env:
        args += ["--env", e]
    return ctd.ctr(*args, *extra, str(own), cid, "/bin/env")


def env_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("NVIDIA_VISIBLE_DEVICES=")]


def test_no_gpu_runs_untouched(containerd: Containerd, node: Node, rootfs: Path,
                               tmp_path: Path) -> None:
    res = ctr_run(containerd, node, rootfs, tmp_path, ["PATH=/bin", "HELLO=1"])
    assert res.returncode == 0, res.stderr
    assert "HELLO=1" in res.stdout.splitlines()
    assert env_lines(res.stdout) == []
    assert node.audit_lines() == []
    assert node.recorder.read() is None


def test_all_unprivileged_is_refused_with_nvhooks_line(containerd: Containerd, node: Node,
                                                       rootfs: Path, tmp_path: Path) -> None:
    res = ctr_run(containerd, node, rootfs, tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"])
    assert res.returncode != 0
    assert "nvhook: denied: NVIDIA_VISIBLE_DEVICES=all" in res.stderr, res.stderr
    assert node.recorder.read() is None
    assert [a["decision"] for a in node.audit_lines()] == ["deny"]


@pytest.mark.parametrize(
    ("mode", "asked", "want"),
    [
        pytest.param("enforce", GPUS[1], GPUS[1], id="live UUID"),
        pytest.param("rewrite", "1", GPUS[1], id="index in rewrite mode: pinned to the UUID"),
    ],
)
def test_gpu_is_pinned_and_handed_to_nvidias_hook(
    containerd: Containerd, recorder: Recorder, rootfs: Path, tmp_path: Path, mode: str,
    asked: str, want: str
) -> None:
    node = make_node(tmp_path / "node", recorder, mode=mode)
    res = ctr_run(containerd, node, rootfs, tmp_path, [f"NVIDIA_VISIBLE_DEVICES={asked}"])
    assert res.returncode == 0, res.stderr
    assert env_lines(res.stdout) == [f"NVIDIA_VISIBLE_DEVICES={want}"]
    record = node.recorder.read()
    assert record is not None, "runc did not run the inserted prestart hook"
    assert record.config_env_map["NVIDIA_VISIBLE_DEVICES"] == want
    assert [a["stage"] for a in node.audit_lines()] == ["runtime-create", "prestart"]


def test_privileged_all_is_as_the_policy_says(containerd: Containerd, node: Node, rootfs: Path,
                                             tmp_path: Path) -> None:
    """all = "privileged": CAP_SYS_ADMIN in bounding gets every GPU."""
    res = ctr_run(containerd, node, rootfs, tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"],
                  "--cap-add", "CAP_SYS_ADMIN")
    assert res.returncode == 0, res.stderr
    # `all` is pinned to the live UUIDs, so nothing can change before NVIDIA's hook reads it.
    assert env_lines(res.stdout) == [f"NVIDIA_VISIBLE_DEVICES={GPUS[0]},{GPUS[1]}"]
    record = node.recorder.read()
    assert record is not None
    assert [a["stage"] for a in node.audit_lines()] == ["runtime-create", "prestart"]


def test_doctor_asks_the_running_containerd(containerd: Containerd, tmp_path: Path) -> None:
    from nvhook.ops import doctor

    prefix = tmp_path / "root"
    result = CliRunner().invoke(app, ["install", "--engine", "containerd", "--prefix",
                                      str(prefix), "--nvhook-path", "/usr/local/bin/nvhook"])
    assert result.exit_code == 0, result.output
    opts = doctor.Options(prefix=prefix, containerd_socket=containerd.address)
    lines = [c.line() for c in doctor._containerd(opts)]
    assert lines[-1] == "ok  containerd: the running containerd's CRI plugin: ok", lines


IMAGE = "docker.io/nvhook-e2e/busybox:1"


@pytest.fixture(scope="module")
def image(containerd: Containerd, rootfs: Path) -> str:
    """The busybox rootfs as a local image (`ctr images import`, native snapshotter)."""
    from .daemons import oci_archive

    archive = containerd.base / "busybox.tar"
    archive.write_bytes(oci_archive(rootfs, IMAGE))
    res = containerd.ctr("images", "import", "--snapshotter", "native", str(archive))
    assert res.returncode == 0, res.stderr
    assert IMAGE in containerd.ctr("images", "ls", "-q").stdout.split()
    return IMAGE


@pytest.mark.parametrize(
    ("env", "ok", "want"),
    [
        pytest.param([], True, [], id="no GPU"),
        pytest.param([f"NVIDIA_VISIBLE_DEVICES={GPUS[0]}"], True,
                     [f"NVIDIA_VISIBLE_DEVICES={GPUS[0]}"], id="live UUID"),
        pytest.param(["NVIDIA_VISIBLE_DEVICES=all"], False, [], id="all unprivileged"),
    ],
)
def test_imported_image(containerd: Containerd, image: str, node: Node, env: list[str],
                        ok: bool, want: list[str]) -> None:
    args = ["run", "--rm", "--snapshotter", "native", "--runtime", "io.containerd.runc.v2",
            "--runc-binary", str(node.wrapper)]
    for e in env:
        args += ["--env", e]
    res = containerd.ctr(*args, image, new_container_id("nvh-img"), "/bin/env")
    if not ok:
        assert res.returncode != 0
        assert "nvhook: denied: NVIDIA_VISIBLE_DEVICES=all" in res.stderr, res.stderr
        return
    assert res.returncode == 0, res.stderr
    assert env_lines(res.stdout) == want
    assert (node.recorder.read() is not None) is bool(want)
