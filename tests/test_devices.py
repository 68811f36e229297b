"""`nvhook devices`: the inventory as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import fakenvml
from conftest import Node

from nvhook.gpus.inventory import Gpu, Inventory, MigDevice
from nvhook.ops import devices


def test_table_nests_mig_devices_under_their_gpu() -> None:
    g0 = Gpu(0, "GPU-a", "00000000:17:00.0", 0, "H100", False)
    g1 = Gpu(1, "GPU-b", "00000000:65:00.0", 1, "H100", True)
    mig = MigDevice("GPU-b", 1, 0, "MIG-c", 3, 0)
    lines = devices.as_text(Inventory((g0, g1), (mig,), "550", source="nvml")).splitlines()
    assert lines[0].split() == ["INDEX", "UUID", "PCI", "BUS", "ID", "NAME", "MIG"]
    assert lines[1].split() == ["0", "GPU-a", "00000000:17:00.0", "H100", "disabled"]
    assert lines[2].split() == ["1", "GPU-b", "00000000:65:00.0", "H100", "enabled"]
    assert lines[3].split() == ["1:0", "MIG-c", "GI", "3", "CI", "0"]
    assert lines[3].startswith("  ")
    assert lines[-1] == "2 GPUs, 1 MIG devices (nvml, driver 550)"


def test_empty_inventory() -> None:
    assert devices.as_text(Inventory((), (), None, source="file")).splitlines()[-2:] == [
        "(no GPUs)", "0 GPUs, 0 MIG devices (file)"]


def test_devices_from_fake_nvml(node: Node) -> None:
    proc = node.run(["--config", str(node.config), "devices"])
    out = proc.stdout.decode()
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert fakenvml.GPU0_UUID in out and fakenvml.MIG_B_UUID in out
    assert "  1:1  " + fakenvml.MIG_B_UUID in out


def test_devices_json(node: Node) -> None:
    proc = node.run(["--config", str(node.config), "devices", "--json"])
    doc = json.loads(proc.stdout)
    assert [g["uuid"] for g in doc["gpus"]] == [fakenvml.GPU0_UUID, fakenvml.GPU1_UUID]
    assert [m["id"] for m in doc["gpus"][1]["mig_devices"]] == ["1:0", "1:1"]


def test_devices_inventory_file(node: Node, tmp_path: Path) -> None:
    inv = tmp_path / "inv.json"
    inv.write_text(json.dumps({"gpus": [{"uuid": "GPU-x", "pci_bus_id": "0:1:0.0"}]}))
    proc = node.run(["devices", "--inventory", str(inv), "--json"], nvml=False)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["gpus"][0]["pci_bus_id"] == "00000000:01:00.0"


def test_inventory_failure_is_exit_7_one_line(node: Node, tmp_path: Path) -> None:
    proc = node.run(["--config", str(node.config), "devices"], nvml=False)
    assert proc.returncode == 7
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(b"nvhook: ")
    proc = node.run(["devices", "--inventory", str(tmp_path / "missing.json")])
    assert proc.returncode == 7
    err = proc.stderr.decode()
    assert err.startswith(f"nvhook: {tmp_path / 'missing.json'}: ") and err.count("\n") == 1
