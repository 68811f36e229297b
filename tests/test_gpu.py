"""Against the real NVML of a GPU node. Skipped cleanly where no NVIDIA driver is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NVHOOK, write_bundle

pytestmark = pytest.mark.gpu

READ = """
import json
from nvhook.gpus import nvml
from nvhook.errors import InventoryError
try:
    print(json.dumps(nvml.read(30.0).as_json()))
except InventoryError as e:
    print(json.dumps({"error": str(e)}))
"""


def real_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_NVML")}
    env.pop("LD_LIBRARY_PATH", None)
    return env


@pytest.fixture(scope="module")
def live() -> dict:
    proc = subprocess.run([sys.executable, "-c", READ], capture_output=True, text=True,
                          env=real_env(), timeout=120, check=True)
    inv = json.loads(proc.stdout)
    if "error" in inv:
        pytest.skip(f"no usable NVIDIA driver here: {inv['error']}")
    if not inv["gpus"]:
        pytest.skip("NVML reports no GPU")
    return inv


def test_real_inventory_is_well_formed(live: dict) -> None:
    for i, gpu in enumerate(live["gpus"]):
        assert gpu["index"] == i
        assert gpu["uuid"].startswith("GPU-")
        assert gpu["pci_bus_id"] == gpu["pci_bus_id"].lower() and gpu["pci_bus_id"].endswith(".0")
        for n, mig in enumerate(gpu["mig_devices"]):
            assert mig["uuid"].startswith("MIG-") and mig["id"] == f"{i}:{n}"
    assert live["driver_version"]


@pytest.mark.parametrize("form", ["index", "pci", "uuid-lower"])
def test_real_ids_pin_to_the_uuid(live: dict, form: str, tmp_path: Path) -> None:
    gpu = live["gpus"][0]
    device_id = {"index": "0", "pci": gpu["pci_bus_id"], "uuid-lower": gpu["uuid"].lower()}[form]
    bundle = write_bundle(tmp_path / "b", [f"NVIDIA_VISIBLE_DEVICES={device_id}"])
    config = tmp_path / "c.toml"
    config.write_text('[policy]\nmode = "rewrite"\n[audit]\npath = ""\n')
    proc = subprocess.run([str(NVHOOK), "--config", str(config), "explain", "--bundle",
                           str(bundle), "--json"], capture_output=True, text=True,
                          env=real_env(), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["decision"] == "rewrite"
    assert out["granted"] == [gpu["uuid"]]
    assert out["env"]["NVIDIA_VISIBLE_DEVICES"] == gpu["uuid"]
