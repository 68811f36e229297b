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


# What pynvml's import leaves behind, in a fresh interpreter (pytest has ctypes.util loaded).
IMPORT_PROBE = """
import json, sys
{before}
from nvhook.gpus import nvml
inventory = nvml.read(5.0)
pynvml = sys.modules["pynvml"]
loaded_after_read = "ctypes.util" in sys.modules
import ctypes.util
print(json.dumps({{
    "gpus": len(inventory.gpus),
    "loaded_after_read": loaded_after_read,
    "real_module": ctypes.util.__file__.endswith("util.py"),
    "same_answer": pynvml.find_library("c") == ctypes.util.find_library("c"),
}}))
"""
# A pynvml that takes more from ctypes.util than find_library, or calls it at import.
GREEDY_PYNVML = "from ctypes.util import find_library, test\nfrom pynvml_real import *\n"
CALLING_PYNVML = ("from ctypes.util import find_library\nfind_library('c')\n"
                  "from pynvml_real import *\n")


@pytest.mark.parametrize(("before", "fake_pynvml", "loaded_after_read"), [
    pytest.param("", None, False, id="ctypes.util not loaded: pynvml imported without it"),
    pytest.param("import ctypes.util", None, True, id="ctypes.util already loaded: plain import"),
    pytest.param("", GREEDY_PYNVML, True, id="a pynvml wanting more of ctypes.util: plain import"),
    pytest.param("", CALLING_PYNVML, True,
                 id="a pynvml calling find_library at import: plain import"),
])
def test_pynvml_imported_without_ctypes_util_leaves_no_stand_in(
        fake_nvml: Path, tmp_path: Path, before: str, fake_pynvml: str | None,
        loaded_after_read: bool) -> None:
    env = fakenvml.env_for(fake_nvml)
    if fake_pynvml is not None:
        import pynvml

        (tmp_path / "pynvml.py").write_text(fake_pynvml)
        (tmp_path / "pynvml_real.py").write_text(Path(pynvml.__file__).read_text())
        env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(before=before)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"gpus": 2, "loaded_after_read": loaded_after_read,
                                       "real_module": True, "same_answer": True}
