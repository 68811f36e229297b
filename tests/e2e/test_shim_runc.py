"""`nvhook runtime` in front of real runc, driven the way Docker drives its runtime:
`<shim> --root R --log L --log-format json create --bundle B --pid-file P ID`, then
`runc --root R start ID`. The container prints its own env, so these tests see what the
process really got (a prestart hook cannot change that; the shim can)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import BundleFactory, Recorder, find_binary, new_container_id

pytestmark = pytest.mark.e2e

NVHOOK = Path(sys.executable).with_name("nvhook")
GPUS = [f"GPU-{i:08x}-0000-4000-8000-{i:012x}" for i in range(4)]
MIG = "MIG-00000003-0000-5000-8000-000000000030"
INVENTORY = {
    "driver_version": "550.54.15",
    "gpus": [
        {"uuid": u, "pci_bus_id": f"00000000:{0x10 + i:02x}:00.0", "name": "H100",
         "mig_devices": [{"uuid": MIG, "gi": 1, "ci": 0}] if i == 3 else []}
        for i, u in enumerate(GPUS)
    ],
}


@dataclass(frozen=True)
class Runc:
    runc: str
    root: Path
    config: Path
    audit: Path
    tmp: Path

    def create(self, bundle: Path, cid: str) -> subprocess.Popen[bytes]:
        """The shim's create, as Docker calls it; stdout becomes the container's stdout.
        stderr goes to ``<tmp>/<cid>.err``: the container's init holds it (and stdout) open
        until its process exits, so a pipe could not be read to EOF before `start`."""
        cmd = [str(NVHOOK), "runtime", "--root", str(self.root), "--log",
               str(self.tmp / f"{cid}.log"), "--log-format", "json", "create", "--bundle",
               str(bundle), "--pid-file", str(self.tmp / f"{cid}.pid"), cid]
        env = {"PATH": os.environ.get("PATH", ""), "NVHOOK_CONFIG": str(self.config)}
        with open(self.tmp / f"{cid}.err", "wb") as err:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err, env=env)

    def create_stderr(self, cid: str) -> str:
        return (self.tmp / f"{cid}.err").read_text()

    def runc_cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.runc, "--root", str(self.root), *args], capture_output=True,
                              text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture
def runc(tmp_path: Path, recorder: Recorder) -> Iterator[Runc]:
    binary = find_binary("runc")
    assert binary is not None
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(INVENTORY))
    config = tmp_path / "config.toml"
    audit = tmp_path / "audit.jsonl"
    config.write_text(
        f'[inventory]\nsource = "file"\nfile = "{inventory}"\n'
        f'[delegate]\npath = "{recorder.path}"\n'
        f'[audit]\npath = "{audit}"\n'
        f'[runtime]\npath = "{binary}"\n'
    )
    yield Runc(binary, tmp_path / "runc-root", config, audit, tmp_path)


def run_container(runc: Runc, bundle: Path) -> tuple[int, str, str, str]:
    """create through the shim, start with runc; -> (create rc, create stderr, container
    stdout, start stderr). The container is always deleted."""
    cid = new_container_id("nvhook-shim")
    proc = runc.create(bundle, cid)
    try:
        # create returns while the container's init still holds our stdout pipe.
        rc = proc.wait(timeout=60)
        assert proc.stdout is not None
        err = runc.create_stderr(cid)
        if rc != 0:
            return rc, err, "", ""
        start = runc.runc_cmd("start", cid)
        if start.returncode != 0:
            return rc, err, "", start.stderr
        # EOF once the container's process exited; a stuck container is deleted after 30 s,
        # which closes the pipe, so the read cannot block the test run.
        watchdog = threading.Timer(30, runc.runc_cmd, ("delete", "--force", cid))
        watchdog.start()
        try:
            out = proc.stdout.read().decode()
        finally:
            watchdog.cancel()
        return rc, err, out, start.stderr
    finally:
        runc.runc_cmd("delete", "--force", cid)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_container_sees_canonical_uuids_and_reindexed_cuda(
    runc: Runc, bundle_factory: BundleFactory, recorder: Recorder
) -> None:
    bundle = bundle_factory(args=["/bin/env"], env=[
        "PATH=/bin", "NVIDIA_VISIBLE_DEVICES=3,1,2", "CUDA_VISIBLE_DEVICES=3,1,2",
    ])
    rc, err, out, start_err = run_container(runc, bundle)
    assert (rc, err, start_err) == (0, "", "")
    env = out.splitlines()
    assert f"NVIDIA_VISIBLE_DEVICES={GPUS[3]},{GPUS[1]},{GPUS[2]}" in env
    assert "CUDA_VISIBLE_DEVICES=2,0,1" in env
    assert sum(e.startswith("NVIDIA_VISIBLE_DEVICES=") for e in env) == 1
    # The inserted prestart hook re-checked and handed over to "NVIDIA's hook".
    record = recorder.read()
    assert record is not None
    assert record.config_env_map["NVIDIA_VISIBLE_DEVICES"] == f"{GPUS[3]},{GPUS[1]},{GPUS[2]}"
    stages = [json.loads(line)["stage"] for line in runc.audit.read_text().splitlines()]
    assert stages == ["runtime-create", "prestart"]


def test_mig_device_gets_its_uuid_in_cuda_visible_devices(
    runc: Runc, bundle_factory: BundleFactory
) -> None:
    bundle = bundle_factory(args=["/bin/env"], env=[
        "PATH=/bin", "NVIDIA_VISIBLE_DEVICES=3:0", "CUDA_VISIBLE_DEVICES=0",
    ])
    rc, err, out, _ = run_container(runc, bundle)
    assert (rc, err) == (0, "")
    env = out.splitlines()
    assert f"NVIDIA_VISIBLE_DEVICES={MIG}" in env
    assert f"CUDA_VISIBLE_DEVICES={MIG}" in env


def test_denied_create_never_creates_the_container(
    runc: Runc, bundle_factory: BundleFactory, recorder: Recorder
) -> None:
    bundle = bundle_factory(args=["/bin/env"], env=["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"])
    before = (bundle / "config.json").read_bytes()
    cid = new_container_id("nvhook-shim")
    proc = runc.create(bundle, cid)
    try:
        proc.communicate(timeout=60)
        assert proc.returncode == 3
        err = runc.create_stderr(cid)
        assert len(err.splitlines()) == 1
        assert err.startswith("nvhook: denied: NVIDIA_VISIBLE_DEVICES=all")
        state = runc.runc_cmd("state", cid)
        assert state.returncode != 0
        assert "does not exist" in state.stderr
    finally:
        runc.runc_cmd("delete", "--force", cid)
    assert (bundle / "config.json").read_bytes() == before
    assert recorder.read() is None


def test_non_gpu_container_passes_untouched(runc: Runc, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory(args=["/bin/env"], env=["PATH=/bin", "CUDA_VISIBLE_DEVICES=3"])
    before = (bundle / "config.json").read_bytes()
    rc, err, out, _ = run_container(runc, bundle)
    assert (rc, err) == (0, "")
    assert "CUDA_VISIBLE_DEVICES=3" in out.splitlines()
    assert (bundle / "config.json").read_bytes() == before
    assert not runc.audit.exists()


def test_other_subcommands_pass_through(runc: Runc) -> None:
    proc = subprocess.run([str(NVHOOK), "runtime", "--version"], capture_output=True, text=True,
                          timeout=30, check=False, env={"NVHOOK_CONFIG": str(runc.config),
                                                        "PATH": os.environ.get("PATH", "")})
    direct = subprocess.run([runc.runc, "--version"], capture_output=True, text=True, timeout=30,
                            check=False)
    assert (proc.returncode, proc.stdout) == (0, direct.stdout)
    state = subprocess.run([str(NVHOOK), "runtime", "--root", str(runc.root), "state", "nope"],
                           capture_output=True, text=True, timeout=30, check=False,
                           env={"NVHOOK_CONFIG": str(runc.config)})
    assert state.returncode != 0 and "does not exist" in state.stderr
