"""GPU leases with real runc and Podman: exclusive containers, a killed runc, and the
runtime shim's poststop hook. A container says "up" and runs until the test writes a line
to its stdin, so every step is paced by what the containers and hooks have done."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fakenvml
import pytest

from .harness import (
    HOOK_ENV,
    PODMAN_BASE_ARGS,
    BundleFactory,
    Podman,
    copy_rootfs,
    find_binary,
    new_container_id,
    run_runc,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NVHOOK = Path(sys.executable).with_name("nvhook")
GPU0 = fakenvml.GPU0_UUID
HOLD = ["/bin/sh", "-c", "echo up; read x; echo done"]
PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Node:
    config: Path
    leases: Path
    hook: dict

    def holders(self) -> dict[str, list[str]]:
        path = self.leases / "leases.json"
        if not path.exists():
            return {}
        out: dict[str, list[str]] = {}
        for rec in json.loads(path.read_text())["leases"]:
            out.setdefault(rec["device"], []).append(rec["container"])
        return out

    def table(self) -> list[dict]:
        path = self.leases / "leases.json"
        return json.loads(path.read_text())["leases"] if path.exists() else []


@pytest.fixture
def node(tmp_path: Path, fake_nvml: Path) -> Node:
    leases = tmp_path / "leases"
    config = tmp_path / "nvhook.toml"
    config.write_text(f'[policy]\n[leases]\nmode = "exclusive"\ndir = "{leases}"\n'
                      '[delegate]\npath = ""\n'
                      f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    hook = json.loads((REPO / "hooks.d" / "nvrw-hook.json").read_text())["hook"]
    hook["path"] = str(NVHOOK)
    hook["args"] = ["nvhook", "--config", str(config), "prestart"]
    hook["env"] = [*HOOK_ENV, f"LD_LIBRARY_PATH={fake_nvml}"]
    return Node(config, leases, hook)


def hooks_for(node: Node) -> dict:
    """What a hooks.d file with stages prestart and poststop puts into config.json."""
    return {"prestart": [node.hook], "poststop": [node.hook]}


class Held:
    """`runc run` of a container that holds on until `release`: stdin and stdout are pipes."""

    def __init__(self, bundle: Path, cid: str, root: Path, detach: bool = False) -> None:
        runc = find_binary("runc")
        assert runc is not None
        self.runc, self.cid, self.root = runc, cid, root
        detached = ["-d"] if detach else []
        self.proc = subprocess.Popen(
            [runc, "--root", str(root), "run", *detached, "--bundle", str(bundle), cid],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)

    def wait_up(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line != b"up\n":
            assert self.proc.stderr is not None
            pytest.fail(f"container {self.cid} did not start: {self.proc.stderr.read()!r}")

    def release(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n")
        self.proc.stdin.close()
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        subprocess.run([self.runc, "--root", str(self.root), "delete", "--force", self.cid],
                       capture_output=True, timeout=30, check=False)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@contextlib.contextmanager
def held(bundle: Path, cid: str, root: Path, detach: bool = False) -> Iterator[Held]:
    h = Held(bundle, cid, root, detach)
    try:
        yield h
    finally:
        h.close()


def test_runc_second_exclusive_container_runs_after_the_first_exits(
        node: Node, bundle_factory: BundleFactory, tmp_path: Path) -> None:
    env = ["PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={GPU0}"]
    first_id = new_container_id()
    with held(bundle_factory(args=HOLD, env=env, hooks=hooks_for(node)), first_id,
              tmp_path / "runc") as first:
        first.wait_up()
        [lease] = node.table()
        assert (lease["device"], lease["container"]) == (GPU0, first_id)
        assert lease["pid"] > 0 and lease["pid_start"] is not None
        second = bundle_factory(args=["/bin/echo", "second-ran"], env=env, hooks=hooks_for(node))
        denied = run_runc(second, new_container_id())
        assert denied.returncode != 0 and "second-ran" not in denied.stdout
        assert (f"nvhook: denied: NVIDIA_VISIBLE_DEVICES={GPU0}: {GPU0} is leased exclusively "
                f"by container {first_id} (policy.leases)") in denied.stderr
        assert first.release() == 0  # runc run deletes the container: poststop releases
        assert node.holders() == {}
        ran = run_runc(second, new_container_id())
        assert ran.returncode == 0, ran.stderr
        assert "second-ran" in ran.stdout
    assert node.holders() == {}


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """Orphans (a container whose runc was killed) become our children, to be reaped here:
    PID 1 on these machines does not reap them."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.mark.parametrize("detach", [
    pytest.param(False, id="kill -9 of runc run: its container dies with it, unreaped"),
    pytest.param(True, id="runc run -d: lease kept while the container lives, then kill -9"),
])
def test_runc_killed_no_lost_or_phantom_lease(node: Node, bundle_factory: BundleFactory,
                                              tmp_path: Path, detach: bool) -> None:
    env = ["PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={GPU0}"]
    first_id = new_container_id()
    second = bundle_factory(args=["/bin/echo", "second-ran"], env=env, hooks=hooks_for(node))
    with subreaper(), held(bundle_factory(args=HOLD, env=env, hooks=hooks_for(node)),
                           first_id, tmp_path / "runc", detach) as first:
        first.wait_up()
        [lease] = node.table()
        init = lease["pid"]
        if detach:
            assert first.proc.wait(timeout=60) == 0  # runc is gone, the container runs on
            denied = run_runc(second, new_container_id())
            assert f"is leased exclusively by container {first_id}" in denied.stderr
            os.kill(init, signal.SIGKILL)
        else:
            first.proc.kill()  # runc's death takes its container along; no poststop runs
            first.proc.wait()
        # The container is dead but unreaped (a zombie of ours, as under a PID 1 that does
        # not reap): still in the table, but stale.
        os.waitid(os.P_PID, init, os.WEXITED | os.WNOWAIT)
        assert node.holders() == {GPU0: [first_id]}
        listing = json.loads(subprocess.run(
            [str(NVHOOK), "--config", str(node.config), "leases", "--json"],
            capture_output=True, timeout=60, check=True).stdout)
        assert listing["leases"][0]["stale"] == f"pid {init} has exited (state Z)"
        ran = run_runc(second, new_container_id())
        assert ran.returncode == 0, ran.stderr
        assert "second-ran" in ran.stdout
        os.waitpid(init, 0)
    assert node.holders() == {}


# -- Podman with the repo's hooks.d file -------------------------------------------------------


def podman_hold(podman: Podman, hooks_dir: Path, env: list[str], rootfs_dir: Path,
                cidfile: Path) -> subprocess.Popen[bytes]:
    podman_bin = find_binary("podman")
    assert podman_bin is not None
    private = copy_rootfs(podman.rootfs, rootfs_dir)
    cmd = [podman_bin, *PODMAN_BASE_ARGS, *podman.store.global_args(), "--hooks-dir",
           str(hooks_dir), "run", "--rm", "-i", "--network", "none", "--ulimit",
           "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--cidfile", str(cidfile)]
    for item in env:
        cmd += ["--env", item]
    return subprocess.Popen([*cmd, "--rootfs", str(private), *HOLD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=podman.store.env(), start_new_session=True)


def test_podman_second_exclusive_container_runs_after_the_first_exits(
        node: Node, podman: Podman, tmp_path: Path) -> None:
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir()
    doc = json.loads((REPO / "hooks.d" / "nvrw-hook.json").read_text())
    assert doc["stages"] == ["prestart", "poststop"]
    doc["hook"] = node.hook
    (hooks_dir / "nvrw-hook.json").write_text(json.dumps(doc))
    env = [f"NVIDIA_VISIBLE_DEVICES={GPU0}"]
    with tempfile.TemporaryDirectory(prefix="nvhook-lease-") as tmp:
        cidfile = Path(tmp) / "cid"
        first = podman_hold(podman, hooks_dir, env, Path(tmp) / "rootfs", cidfile)
        try:
            assert first.stdout is not None and first.stdin is not None
            line = first.stdout.readline()
            assert line == b"up\n", first.stderr.read() if first.stderr else b""
            first_id = cidfile.read_text().strip()
            assert node.holders() == {GPU0: [first_id]}
            denied = podman.run(hooks_dir, ["/bin/echo", "second-ran"], env=env)
            assert denied.returncode == 126
            assert f"{GPU0} is leased exclusively by container {first_id} (policy.leases)" \
                in denied.stderr
            first.stdin.write(b"\n")
            first.stdin.close()
            assert first.wait(timeout=120) == 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            for pipe in (first.stdout, first.stderr):
                if pipe is not None:
                    pipe.close()
            podman.store.podman("rm", "--force", "--time", "0", "--ignore",
                                "--cidfile", str(cidfile))
        assert node.holders() == {}  # Podman ran the poststop stage
        ran = podman.run(hooks_dir, ["/bin/echo", "second-ran"], env=env)
        assert ran.returncode == 0, ran.stderr
        assert "second-ran" in ran.stdout
    assert node.holders() == {}


# -- the runtime shim inserts the poststop hook ---------------------------------------------


def test_shim_leases_at_create_binds_the_pid_and_releases_at_delete(
        node: Node, bundle_factory: BundleFactory, tmp_path: Path) -> None:
    runc = find_binary("runc")
    assert runc is not None
    # The prestart hook the shim inserts gets only PATH, so it cannot load the fake NVML.
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"gpus": [{"uuid": GPU0, "pci_bus_id": "0:17:0.0"}]}))
    with node.config.open("a") as f:
        f.write(f'[runtime]\npath = "{runc}"\n[inventory]\nsource = "file"\n'
                f'file = "{inventory}"\n')
    root = tmp_path / "runc-root"
    env = {"PATH": os.environ.get("PATH", ""), "NVHOOK_CONFIG": str(node.config)}

    def create(cid: str, bundle: Path) -> tuple[int, str]:
        # The container's stdio goes to files: the container's init holds it open.
        with open(tmp_path / f"{cid}.out", "wb") as out, \
                open(tmp_path / f"{cid}.err", "wb") as err:
            rc = subprocess.run(
                [str(NVHOOK), "runtime", "--root", str(root), "create", "--bundle", str(bundle),
                 "--pid-file", str(tmp_path / f"{cid}.pid"), cid],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, timeout=60,
                check=False).returncode
        return rc, (tmp_path / f"{cid}.err").read_text()

    def runc_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([runc, "--root", str(root), *args], capture_output=True,
                              text=True, timeout=30, check=False)

    gpu_env = ["PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={GPU0}"]
    first, second = new_container_id("nvhook-shim"), new_container_id("nvhook-shim")
    try:
        bundle = bundle_factory(args=["/bin/true"], env=gpu_env)
        rc, err = create(first, bundle)
        assert rc == 0, err
        hooks = json.loads((bundle / "config.json").read_text())["hooks"]
        assert [h["args"][-1] for h in hooks["poststop"]] == ["poststop"]
        [lease] = node.table()
        # nvhook's prestart hook, inserted by the shim, bound the lease to the init pid.
        assert lease["container"] == first
        assert lease["pid"] == int((tmp_path / f"{first}.pid").read_text())
        rc, err = create(second, bundle_factory(args=["/bin/true"], env=gpu_env))
        assert rc == 3
        assert f"is leased exclusively by container {first}" in err
        assert runc_cmd("start", first).returncode == 0
        # delete waits for the exit and runs the poststop hook the shim inserted.
        deleted = runc_cmd("delete", "--force", first)
        assert deleted.returncode == 0, deleted.stderr
        assert node.holders() == {}
        assert create(second, bundle_factory(args=["/bin/true"], env=gpu_env))[0] == 0
        assert node.holders() == {GPU0: [second]}
    finally:
        runc_cmd("delete", "--force", first)
        runc_cmd("delete", "--force", second)
    assert node.holders() == {}


# -- Docker: the shim in dockerd's containerd ------------------------------------------------


def test_docker_second_exclusive_container_runs_after_the_first_is_removed(
        rootfs: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nvhook.cli import app

    from .daemons import docker_available, short_tempdir, start_docker, start_or_skip
    from .engine_setup import GPUS, make_node
    from .harness import Recorder, write_recording_delegate

    base = short_tempdir("nvh-lse-")
    docker = None
    try:
        recorder = Recorder(path=write_recording_delegate(
            base / "delegate" / "nvidia-container-runtime-hook", base / "record"),
            record_dir=base / "record")
        eng = make_node(base / "node", recorder, mode="enforce")
        leases = base / "leases"
        with eng.config.open("a") as f:
            f.write(f'[leases]\nmode = "exclusive"\ndir = "{leases}"\n')
        prefix = base / "prefix"
        result = CliRunner().invoke(app, ["--config", str(eng.config), "install", "--engine",
                                          "docker", "--prefix", str(prefix), "--nvhook-path",
                                          str(eng.nvhook)])
        assert result.exit_code == 0, result.output
        docker = start_or_skip("dockerd", docker_available(),
                               lambda: start_docker(prefix / "etc/docker/daemon.json", base))
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True,
                             check=True, timeout=120)
        imported = subprocess.run([docker.docker_binary, "--host", docker.host, "import", "-",
                                   "nvhook-lease/busybox:1"], input=tar.stdout,
                                  capture_output=True, timeout=300, check=False)
        assert imported.returncode == 0, imported.stderr.decode()
        run = ("run", "--network", "none", "--runtime=nvhook", "-e",
               f"NVIDIA_VISIBLE_DEVICES={GPUS[0]}")
        # The container's own command holds it alive until `docker rm -f`.
        first = docker.docker(*run, "-d", "nvhook-lease/busybox:1", "/bin/sleep", "100000")
        assert first.returncode == 0, first.stderr
        first_id = first.stdout.strip()
        table = json.loads((leases / "leases.json").read_text())["leases"]
        assert [(x["device"], x["container"]) for x in table] == [(GPUS[0], first_id)]
        assert table[0]["pid"] is not None  # nvhook's inserted prestart hook bound the pid
        denied = docker.docker(*run, "--rm", "nvhook-lease/busybox:1", "/bin/echo", "ran")
        assert denied.returncode != 0
        assert f"{GPUS[0]} is leased exclusively by container {first_id} (policy.leases)" \
            in denied.stderr, denied.stderr
        removed = docker.docker("rm", "-f", first_id)
        assert removed.returncode == 0, removed.stderr
        # containerd's `runc delete` ran the poststop hook the shim inserted.
        assert json.loads((leases / "leases.json").read_text())["leases"] == []
        ran = docker.docker(*run, "--rm", "nvhook-lease/busybox:1", "/bin/echo", "ran")
        assert ran.returncode == 0, ran.stderr
        assert "ran" in ran.stdout.splitlines()
        assert json.loads((leases / "leases.json").read_text())["leases"] == []
    finally:
        if docker is not None:
            docker.stop()
        shutil.rmtree(base, ignore_errors=True)
