"""Read the live inventory from NVML through pynvml, bounded by a timeout.

pynvml is imported here and only here, so the hook's fast path never pays for
it. NVML init has been seen to hang on real drivers; a blocked C call cannot be
interrupted from Python, so the query runs in a daemon thread and the caller
stops waiting after ``timeout`` seconds. The thread is left behind: the hook
exits or execs right after, which ends it.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

from nvhook.errors import InventoryError
from nvhook.gpus.inventory import Gpu, Inventory, MigDevice, normalize_bus_id


def read(timeout: float) -> Inventory:
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["inventory"] = _query()
        except BaseException as e:  # handed to the caller, which types it
            box["error"] = e

    thread = threading.Thread(target=work, name="nvml-query", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise InventoryError(f"NVML did not answer within {timeout:g}s (driver hung?)")
    if "error" in box:
        raise _as_inventory_error(box["error"])
    return box["inventory"]


def import_pynvml() -> types.ModuleType:
    """pynvml, imported without loading ``ctypes.util`` when that module is not loaded yet.

    pynvml runs ``from ctypes.util import find_library`` at import time and never calls it
    (it loads libnvidia-ml.so.1 by name), and ctypes.util imports subprocess, tempfile,
    shutil and random: about a third of pynvml's import on the GPU path. While pynvml is
    imported, a stand-in module offers a ``find_library`` that calls the real one; right
    after, the stand-in leaves sys.modules, so anything importing ctypes.util later gets
    the real module. A pynvml that takes more from ctypes.util is imported plainly.
    """
    if "pynvml" in sys.modules or "ctypes.util" in sys.modules:
        import pynvml

        return pynvml
    stand_in = types.ModuleType("ctypes.util", "nvhook's stand-in while pynvml is imported")
    stand_in.find_library = find_library  # type: ignore[attr-defined]
    sys.modules["ctypes.util"] = stand_in
    try:
        import pynvml
    except ImportError:
        sys.modules.pop("pynvml", None)  # half-imported: import it again below, plainly
    else:
        return pynvml
    finally:
        if sys.modules.get("ctypes.util") is stand_in:
            del sys.modules["ctypes.util"]
    import pynvml

    return pynvml


def find_library(name: str) -> str | None:
    """ctypes.util.find_library, loaded on the first call (see ``import_pynvml``)."""
    from ctypes.util import find_library as real

    if real is find_library:  # called during pynvml's import: import_pynvml retries plainly
        raise ImportError("ctypes.util is nvhook's stand-in while pynvml is imported")
    return real(name)


def _as_inventory_error(e: BaseException) -> InventoryError:
    if isinstance(e, InventoryError):
        return e
    pynvml = import_pynvml()

    if isinstance(e, pynvml.NVMLError_LibraryNotFound):
        return InventoryError("NVML unavailable: cannot load libnvidia-ml.so.1 (no NVIDIA driver?)")
    if isinstance(e, pynvml.NVMLError_DriverNotLoaded):
        return InventoryError("NVML unavailable: the NVIDIA driver is not loaded")
    if isinstance(e, pynvml.NVMLError):
        return InventoryError(f"NVML error: {e}")
    return InventoryError(f"NVML query failed: {type(e).__name__}: {e}")


def _query() -> Inventory:
    pynvml = import_pynvml()

    pynvml.nvmlInit()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus: list[Gpu] = []
        migs: list[MigDevice] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpu = Gpu(
                index=index,
                uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                pci_bus_id=normalize_bus_id(_text(pynvml.nvmlDeviceGetPciInfo(handle).busId)),
                minor=pynvml.nvmlDeviceGetMinorNumber(handle),
                name=_text(pynvml.nvmlDeviceGetName(handle)),
                mig_enabled=_mig_enabled(pynvml, handle),
            )
            gpus.append(gpu)
            if gpu.mig_enabled:
                migs.extend(_migs(pynvml, handle, gpu))
        return Inventory(tuple(gpus), tuple(migs), driver, source="nvml")
    finally:
        pynvml.nvmlShutdown()


def _mig_enabled(pynvml: Any, handle: Any) -> bool:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError_NotSupported:
        return False
    return current == pynvml.NVML_DEVICE_MIG_ENABLE


def _migs(pynvml: Any, handle: Any, gpu: Gpu) -> list[MigDevice]:
    out: list[MigDevice] = []
    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except pynvml.NVMLError_NotFound:
            continue  # an empty slot; positions count existing devices only
        out.append(
            MigDevice(
                parent=gpu.uuid,
                parent_index=gpu.index,
                position=len(out),
                uuid=_text(pynvml.nvmlDeviceGetUUID(mig)),
                gi=pynvml.nvmlDeviceGetGpuInstanceId(mig),
                ci=pynvml.nvmlDeviceGetComputeInstanceId(mig),
            )
        )
    return out



def _text(value: str | bytes) -> str:
    # nvidia-ml-py returns str since 11.515; older releases returned bytes.
    return value.decode() if isinstance(value, bytes) else value
