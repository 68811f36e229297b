"""`nvhook node install|uninstall` from the FROM-scratch image, run by real Podman against a
temp dir laid out as a node's root (what the DaemonSet mounts at /host). Then the hook it
installed into that tree runs in real runc containers: the deny and allow cases."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fakenvml
import pytest

from nvhook.errors import ExitStatus

from .artifact import Artifact, build_image, restamped
from .harness import (
    BundleFactory,
    PodmanStore,
    Recorder,
    new_container_id,
    podman_available,
    run_runc,
)

pytestmark = pytest.mark.e2e

MARKER = "container-ran"
NVIDIA_HOOK = "oci-nvidia-hook.json"
CONTAINERD_CONFIG = (
    'version = 2\n\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "pause:3.9"\n'
)
DAEMON_JSON = '{\n    "log-level": "warn"\n}\n'


@dataclass(frozen=True)
class Image:
    store: PodmanStore
    tag: str
    artifact: Artifact

    def run(self, host: Path, policy_dir: Path | None, *args: str):
        vols = ["-v", f"{host}:/host"]
        if policy_dir is not None:
            vols += ["-v", f"{policy_dir}:/etc/nvhook-policy:ro"]
        return self.store.podman(
            "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
            "--ulimit", "nproc=1024:1024", *vols, self.tag, *args, timeout=300)


@pytest.fixture(scope="session")
def image(podman_store: PodmanStore, node_artifact: Artifact) -> Image:
    if not podman_available():
        pytest.skip("podman unavailable (scripts/ensure-system-deps.sh)")
    return Image(podman_store, build_image(podman_store, node_artifact), node_artifact)


@pytest.fixture(scope="session")
def image2(podman_store: PodmanStore, node_artifact: Artifact, image: Image,
           tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The same artifact stamped as a second release, in its own image."""
    art = restamped(node_artifact, tmp_path_factory.mktemp("release2"), "0.1.0+next")
    return Image(podman_store, build_image(podman_store, art), art)


def make_host(root: Path) -> Path:
    """A node's / as the issue lays it out, with engine files holding settings of their own."""
    for d in ("etc/containers/oci/hooks.d", "usr/share/containers/oci/hooks.d", "etc/containerd",
              "etc/docker"):
        (root / d).mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(CONTAINERD_CONFIG)
    (root / "etc/docker/daemon.json").write_text(DAEMON_JSON)
    (root / "usr/share/containers/oci/hooks.d" / NVIDIA_HOOK).write_text(
        '{"version":"1.0.0","hook":{"path":"/usr/bin/nvidia-container-toolkit",'
        '"args":["nvidia-container-toolkit","prestart"]},"when":{"always":true},'
        '"stages":["prestart"]}\n')
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root: its type, mode and bytes (or link target)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif rel.startswith("opt/nvhook/"):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size)  # the artifact
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


def write_policy(d: Path, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.toml").write_text(text)
    return d


POLICY = 'version = 1\n[policy]\nmode = "enforce"\nall = "never"\n'


@dataclass(frozen=True)
class EngineCase:
    engine: str
    expect: str  # the engine
    registration: str  # the file under the host root that registers nvhook
    moves_nvidia: bool


ENGINES = [
    pytest.param(EngineCase("auto", "containerd", "etc/containerd/config.toml", False),
                 id="auto finds containerd"),
    pytest.param(EngineCase("containerd", "containerd", "etc/containerd/config.toml", False),
                 id="containerd"),
    pytest.param(EngineCase("crio", "crio", "usr/share/containers/oci/hooks.d/nvrw-hook.json",
                            True), id="crio"),
    pytest.param(EngineCase("podman", "podman", "usr/share/containers/oci/hooks.d/nvrw-hook.json",
                            True), id="podman"),
    pytest.param(EngineCase("docker", "docker", "etc/docker/daemon.json", False), id="docker"),
]


@pytest.mark.parametrize("case", ENGINES)
def test_install_twice_then_uninstall(case: EngineCase, image: Image, tmp_path: Path) -> None:
    host = make_host(tmp_path / "host")
    before = snapshot(host)
    policy = write_policy(tmp_path / "policy", POLICY)
    version = image.artifact.version

    first = image.run(host, policy, "node", "install", "--host-root", "/host",
                      "--engine", case.engine)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].startswith(f"engine {case.expect}")
    assert os.readlink(host / "opt/nvhook/current") == version
    assert (host / "opt/nvhook" / version / "VERSION").read_text().strip() == version
    assert os.access(host / "opt/nvhook/current/nvhook", os.X_OK)
    assert (host / "etc/nvhook/config.toml").read_text() == POLICY
    assert "/opt/nvhook/current/nvhook" in (host / case.registration).read_text() or \
        "/usr/local/bin/nvhook-runc" in (host / case.registration).read_text()
    nvidia = host / "usr/share/containers/oci/hooks.d" / NVIDIA_HOOK
    assert nvidia.exists() is not case.moves_nvidia
    if case.expect == "containerd":
        text = (host / "etc/containerd/config.toml").read_text()
        assert 'sandbox_image = "pause:3.9"' in text  # the host's own setting survives
        wrapper = (host / "usr/local/bin/nvhook-runc").read_text()
        assert "/opt/nvhook/current/nvhook runtime" in wrapper
    if case.expect == "docker":
        doc = json.loads((host / "etc/docker/daemon.json").read_text())
        assert doc["log-level"] == "warn"
        assert doc["runtimes"]["nvhook"]["path"] == "/opt/nvhook/current/nvhook"

    installed = snapshot(host)
    second = image.run(host, policy, "node", "install", "--host-root", "/host",
                       "--engine", case.engine)
    assert second.returncode == 0, second.stderr
    assert snapshot(host) == installed, "a second install changed the host"
    assert not [line for line in second.stdout.splitlines()[1:-1]
                if not line.startswith("unchanged")], second.stdout

    gone = image.run(host, None, "node", "uninstall", "--host-root", "/host")
    assert gone.returncode == 0, gone.stderr
    assert snapshot(host) == before, "uninstall did not restore the host"


def test_invalid_policy_keeps_the_old_file(image: Image, tmp_path: Path) -> None:
    host = make_host(tmp_path / "host")
    good = write_policy(tmp_path / "good", POLICY)
    assert image.run(host, good, "node", "install", "--host-root", "/host").returncode == 0
    installed = snapshot(host)
    bad = write_policy(tmp_path / "bad", 'version = 1\n[policy]\nmode = "lenient"\n')
    res = image.run(host, bad, "node", "install", "--host-root", "/host")
    assert res.returncode == ExitStatus.CONFIG
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nvhook: ") and "policy.mode" in lines[0], \
        res.stderr
    assert "Traceback" not in res.stderr
    assert snapshot(host) == installed


def test_second_version_swaps_current_atomically(image: Image, image2: Image,
                                                 tmp_path: Path) -> None:
    host = make_host(tmp_path / "host")
    before = snapshot(host)
    policy = write_policy(tmp_path / "policy", POLICY)
    args = ("node", "install", "--host-root", "/host", "--engine", "crio")
    assert image.run(host, policy, *args).returncode == 0
    hook_file = host / "usr/share/containers/oci/hooks.d/nvrw-hook.json"
    registered = hook_file.read_bytes()

    # A reader that resolves the hook path for as long as the upgrade runs: with a swap by
    # rename it never finds the path missing.
    done = threading.Event()
    misses: list[str] = []
    reads = [0]

    def watch() -> None:
        exe = host / "opt/nvhook/current/nvhook"
        while not done.is_set():
            try:
                os.stat(exe)
            except OSError as e:
                misses.append(str(e))
            reads[0] += 1

    t = threading.Thread(target=watch)
    t.start()
    try:
        res = image2.run(host, policy, *args)
    finally:
        done.set()
        t.join()
    assert res.returncode == 0, res.stderr
    assert reads[0] > 0 and misses == []
    assert os.readlink(host / "opt/nvhook/current") == image2.artifact.version
    assert (host / "opt/nvhook/current/VERSION").read_text().strip() == image2.artifact.version
    assert (host / "opt/nvhook" / image.artifact.version).is_dir(), "the old release is kept"
    assert hook_file.read_bytes() == registered, "an upgrade must not touch the engine files"
    assert not [p for p in (host / "opt/nvhook").iterdir() if p.name.startswith(".")]

    assert image2.run(host, None, "node", "uninstall", "--host-root", "/host").returncode == 0
    assert snapshot(host) == before


@dataclass(frozen=True)
class HookCase:
    env: tuple[str, ...]
    runs: bool
    delegate_sees: str | None = None


HOOK_CASES = [
    pytest.param(HookCase(("PATH=/bin",), True), id="no GPU asked: runs"),
    pytest.param(HookCase((f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}",), True,
                          fakenvml.GPU0_UUID), id="allocated UUID: allowed, delegated"),
    pytest.param(HookCase(("NVIDIA_VISIBLE_DEVICES=all",), False), id="all: denied"),
    pytest.param(HookCase(("NVIDIA_VISIBLE_DEVICES=0",), False), id="index: denied by preset"),
]


@pytest.fixture
def installed_host(image: Image, tmp_path: Path, recorder: Recorder) -> Iterator[Path]:
    host = make_host(tmp_path / "host")
    policy = write_policy(tmp_path / "policy", (
        'version = 1\n[policy]\nmode = "enforce"\nall = "never"\nindices = "deny"\n'
        f'[delegate]\npath = "{recorder.path}"\nargs = ["prestart"]\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'))
    res = image.run(host, policy, "node", "install", "--host-root", "/host", "--engine", "podman")
    assert res.returncode == 0, res.stderr
    yield host


@pytest.mark.parametrize("case", HOOK_CASES)
def test_installed_hook_in_runc(case: HookCase, installed_host: Path,
                                bundle_factory: BundleFactory, recorder: Recorder,
                                fake_nvml: Path) -> None:
    """The hooks.d entry node install wrote, with its paths taken under the host root."""
    host = installed_host
    doc = json.loads((host / "usr/share/containers/oci/hooks.d/nvrw-hook.json").read_text())
    hook = doc["hook"]
    assert hook["path"] == "/opt/nvhook/current/nvhook"
    hook["path"] = str(host / hook["path"].lstrip("/"))
    # The installed policy is read from the tree (the real host's /etc is not this tree).
    hook["args"] = [hook["args"][0], "--config", str(host / "etc/nvhook/config.toml"),
                    *hook["args"][1:]]
    hook["env"] = [*hook["env"], f"LD_LIBRARY_PATH={fake_nvml}"]
    bundle = bundle_factory(args=["/bin/echo", MARKER], env=list(case.env),
                            hooks={"prestart": [hook]})
    result = run_runc(bundle, new_container_id())
    output = result.stdout + result.stderr
    record = recorder.read()
    if not case.runs:
        assert result.returncode != 0 and MARKER not in output
        assert "nvhook: denied: " in output
        assert record is None
        return
    assert result.returncode == 0, output
    assert MARKER in output
    if case.delegate_sees is None:
        assert record is None
    else:
        assert record is not None
        assert record.config_env_map["NVIDIA_VISIBLE_DEVICES"] == case.delegate_sees
