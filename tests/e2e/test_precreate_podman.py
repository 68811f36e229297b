"""`nvhook precreate` under real Podman: the edited config is what the container runs with.

Seen with Podman 4.3.1 (Debian 12): the precreate stage works; on a failing precreate hook
Podman exits 126 with `Error: setting up OCI Hooks: executing [...]: exit status 3` and does
not show the hook's stderr (containers/common discards it unless `run.oci.hooks.stderr`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from syslogd import Syslog

from .harness import Podman, precreate_hooks

pytestmark = pytest.mark.e2e

GPUS = [f"GPU-{i:08x}-0000-4000-8000-{i:012x}" for i in range(4)]


@pytest.fixture
def hooks(tmp_path: Path) -> tuple[Path, Path]:
    """(hooks dir with nvhook's precreate entry, nvhook config)."""
    return precreate_hooks(tmp_path, {"gpus": [
        {"uuid": u, "pci_bus_id": f"00000000:{0x10 + i:02x}:00.0"} for i, u in enumerate(GPUS)
    ]})


def test_container_env_is_the_decided_one(podman: Podman, hooks: tuple[Path, Path]) -> None:
    hooks_dir, _ = hooks
    res = podman.run(hooks_dir, ["/bin/env"],
                     env=["NVIDIA_VISIBLE_DEVICES=3,1", "CUDA_VISIBLE_DEVICES=3,1"])
    assert res.returncode == 0, res.stderr
    env = res.stdout.splitlines()
    assert f"NVIDIA_VISIBLE_DEVICES={GPUS[3]},{GPUS[1]}" in env
    assert "CUDA_VISIBLE_DEVICES=1,0" in env


def test_denial_stops_the_container(podman: Podman, hooks: tuple[Path, Path]) -> None:
    hooks_dir, config = hooks
    config.write_text(config.read_text() + '[policy]\nall = "never"\n')
    syslog = Syslog(config.parent / "syslog.sock")
    try:
        res = podman.run(hooks_dir, ["/bin/echo", "ran"], env=["NVIDIA_VISIBLE_DEVICES=all"])
        # Podman shows only "exit status 3"; the journal line says which rule refused it.
        [line] = syslog.lines()
    finally:
        syslog.close()
    assert res.returncode == 126
    assert "ran" not in res.stdout
    assert "precreate" in res.stderr and "exit status 3" in res.stderr
    assert line.severity == 4 and line.text.startswith("deny container=")
    assert "stage=precreate" in line.text and "(policy.all = \"never\")" in line.text
