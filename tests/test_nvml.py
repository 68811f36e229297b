"""The NVML inventory source: unmodified pynvml against the fake libnvidia-ml.so.1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fakenvml
import pytest

# Runs in a fresh interpreter: pynvml finds the library through LD_LIBRARY_PATH,
# which is only read at process start.
READ = """
import json, sys
from nvhook.gpus import nvml
from nvhook.errors import InventoryError
try:
    inv = nvml.read(float(sys.argv[1]))
except InventoryError as e:
    print(json.dumps({"error": str(e), "status": int(e.status)}))
else:
    print(json.dumps(inv.as_json()))
"""


def read_inventory(libdir: Path | None, timeout: float = 5.0, **kw: object) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", READ, str(timeout)], capture_output=True, text=True,
        env=fakenvml.env_for(libdir, **kw), timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_default_topology_is_read_through_pynvml(fake_nvml: Path) -> None:
    inv = read_inventory(fake_nvml)
    assert inv["driver_version"] == fakenvml.DRIVER_VERSION
    assert [g["uuid"] for g in inv["gpus"]] == [fakenvml.GPU0_UUID, fakenvml.GPU1_UUID]
    assert [g["pci_bus_id"] for g in inv["gpus"]] == [fakenvml.GPU0_BUS.lower(),
                                                      fakenvml.GPU1_BUS.lower()]
    assert [g["minor"] for g in inv["gpus"]] == [0, 1]
    assert [g["mig_enabled"] for g in inv["gpus"]] == [False, True]
    assert inv["gpus"][0]["mig_devices"] == []
    # Slot 1 of GPU 1 is empty: positions count existing devices only.
    assert inv["gpus"][1]["mig_devices"] == [
        {"uuid": fakenvml.MIG_A_UUID, "gi": 1, "ci": 0, "id": "1:0"},
        {"uuid": fakenvml.MIG_B_UUID, "gi": 2, "ci": 0, "id": "1:1"},
    ]


def test_big_topology(fake_nvml: Path, tmp_path: Path) -> None:
    gpus = fakenvml.big_topology(8, 7)
    topo = fakenvml.write_topology(tmp_path / "topo", gpus)
    inv = read_inventory(fake_nvml, topology=topo)
    assert [g["uuid"] for g in inv["gpus"]] == [g["uuid"] for g in gpus]
    assert sum(len(g["mig_devices"]) for g in inv["gpus"]) == 56


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        pytest.param({"libdir": None}, "cannot load libnvidia-ml.so.1", id="no library"),
        pytest.param({"fail": "driver_not_loaded"}, "driver is not loaded",
                     id="driver not loaded"),
        pytest.param({"fail": "no_permission"}, "NVML error", id="no permission"),
    ],
)
def test_nvml_failures_are_one_typed_error(fake_nvml: Path, kw: dict, expected: str) -> None:
    libdir = kw.pop("libdir", fake_nvml)
    out = read_inventory(libdir, **kw)
    assert expected in out["error"]
    assert out["status"] == 7  # ExitStatus.INVENTORY


@pytest.mark.parametrize("fail", ["hang", "enum_hang"], ids=["init hangs", "enumeration hangs"])
def test_hung_driver_is_bounded_by_the_timeout(fake_nvml: Path, fail: str) -> None:
    # The child returns an error instead of hanging; the subprocess timeout of
    # read_inventory (60 s) is only a safety net and is never what ends it.
    out = read_inventory(fake_nvml, timeout=0.5, fail=fail)
    assert out["error"] == "NVML did not answer within 0.5s (driver hung?)"
