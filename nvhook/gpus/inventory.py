"""The GPUs that are live on this node, and how a device id names them.

``Inventory.resolve`` follows nvidia-container-cli's ``select_devices``: first a
GPU (``GPU-<uuid>`` exact and case-insensitive, then a PCI bus id, then a
decimal NVML index), then a MIG device (``MIG-<uuid>``, then ``<gpu>:<n>``, the
n-th MIG device of that GPU in enumeration order, empty slots skipped). ``all``
in any case selects everything. nvhook is stricter than the C parser where the
latter accepts junk (``sscanf`` ignores trailing text, ``strtoumax`` takes a
sign): such ids do not resolve, so they are refused instead of guessed at.
The legacy ``MIG-GPU-<uuid>/<gi>/<ci>`` form resolves too, so that a rewrite can
pin it to the MIG device's current UUID.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from nvhook.errors import InventoryError


@dataclass(frozen=True)
class Gpu:
    """One physical GPU of the live inventory."""

    index: int
    uuid: str
    pci_bus_id: str
    minor: int
    name: str
    mig_enabled: bool


@dataclass(frozen=True)
class MigDevice:
    """One MIG device of the live inventory (a GPU instance and compute instance)."""

    parent: str  # the parent GPU's UUID
    parent_index: int
    position: int  # n in "<gpu>:<n>": order among the parent's existing MIG devices
    uuid: str
    gi: int
    ci: int

    @property
    def index_id(self) -> str:
        return f"{self.parent_index}:{self.position}"


Device = Gpu | MigDevice


class IdForm(StrEnum):
    ALL = "all"
    GPU_UUID = "gpu-uuid"
    PCI = "pci-bus-id"
    INDEX = "index"
    MIG_UUID = "mig-uuid"
    LEGACY_MIG = "legacy-mig"
    MIG_INDEX = "mig-index"

    @property
    def is_positional(self) -> bool:
        """Forms that name a slot, not a device: what ``policy.indices`` governs."""
        return self in (IdForm.INDEX, IdForm.MIG_INDEX, IdForm.PCI)


@dataclass(frozen=True)
class Resolution:
    """A requested device id and the live devices it names."""

    id: str
    form: IdForm
    devices: tuple[Device, ...]


class Unresolved(Exception):
    """An id that names no live device; the message says why."""


_PCI = re.compile(r"^([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.0$")
_DECIMAL = re.compile(r"^[0-9]+$")
_MIG_INDEX = re.compile(r"^([0-9]+):([0-9]+)$")
_LEGACY_MIG = re.compile(r"^MIG-(GPU-[^/]+)/([0-9]+)/([0-9]+)$", re.IGNORECASE)
_UUID_BODY = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def normalize_bus_id(bus_id: str) -> str:
    """NVML's form: ``%08x:%02x:%02x.0`` lowercased (nvidia-container-cli's matches_pci_format)."""
    m = _PCI.match(bus_id.strip())
    if not m:
        return bus_id.lower()
    domain, bus, device = (int(g, 16) for g in m.groups())
    return f"{domain:08x}:{bus:02x}:{device:02x}.0"


def looks_like_uuid(device_id: str) -> bool:
    """A well-formed ``GPU-``/``MIG-`` UUID, live or not."""
    prefix, _, body = device_id.partition("-")
    return prefix.upper() in ("GPU", "MIG") and bool(_UUID_BODY.match(body))


@dataclass(frozen=True)
class Inventory:
    """The node's GPUs and MIG devices, from NVML or an inventory file."""

    gpus: tuple[Gpu, ...]
    migs: tuple[MigDevice, ...]
    driver_version: str | None = None
    source: str = "nvml"

    def devices(self) -> Iterator[Device]:
        """Every device, in the order nvidia-container-cli's ``all`` selects them."""
        yield from self.gpus
        yield from self.migs

    def migs_of(self, gpu: Gpu) -> tuple[MigDevice, ...]:
        return tuple(m for m in self.migs if m.parent == gpu.uuid)

    def by_uuid(self, uuid: str) -> Device | None:
        wanted = uuid.lower()
        for d in self.devices():
            if d.uuid.lower() == wanted:
                return d
        return None

    def parent_of(self, mig: MigDevice) -> Gpu:
        return self.gpus[mig.parent_index]

    def resolve(self, device_id: str) -> Resolution:
        """One id -> the devices it selects. Raises ``Unresolved``."""
        if device_id.lower() == "all":
            return Resolution(device_id, IdForm.ALL, tuple(self.devices()))
        found = self._resolve_gpu(device_id) or self._resolve_mig(device_id)
        if found is None:
            raise Unresolved(self._why_unresolved(device_id))
        return found

    def _resolve_gpu(self, device_id: str) -> Resolution | None:
        if device_id[:4].upper() == "GPU-" and len(device_id) > 4:
            for gpu in self.gpus:
                if gpu.uuid.lower() == device_id.lower():
                    return Resolution(device_id, IdForm.GPU_UUID, (gpu,))
        if _PCI.match(device_id):
            wanted = normalize_bus_id(device_id)
            for gpu in self.gpus:
                if normalize_bus_id(gpu.pci_bus_id) == wanted:
                    return Resolution(device_id, IdForm.PCI, (gpu,))
        if _DECIMAL.match(device_id):
            n = int(device_id)
            if n < len(self.gpus):
                return Resolution(device_id, IdForm.INDEX, (self.gpus[n],))
        return None

    def _resolve_mig(self, device_id: str) -> Resolution | None:
        legacy = _LEGACY_MIG.match(device_id)
        if legacy:
            parent, gi, ci = legacy[1].lower(), int(legacy[2]), int(legacy[3])
            for mig in self.migs:
                if mig.parent.lower() == parent and (mig.gi, mig.ci) == (gi, ci):
                    return Resolution(device_id, IdForm.LEGACY_MIG, (mig,))
            return None
        if device_id[:4].upper() == "MIG-" and len(device_id) > 4:
            for mig in self.migs:
                if mig.uuid.lower() == device_id.lower():
                    return Resolution(device_id, IdForm.MIG_UUID, (mig,))
        m = _MIG_INDEX.match(device_id)
        if m:
            g, n = int(m[1]), int(m[2])
            if g < len(self.gpus):
                children = self.migs_of(self.gpus[g])
                if n < len(children):
                    return Resolution(device_id, IdForm.MIG_INDEX, (children[n],))
        return None

    def _why_unresolved(self, device_id: str) -> str:
        if looks_like_uuid(device_id):
            return "no such device on this node"
        if _DECIMAL.match(device_id):
            return f"index out of range (this node has {len(self.gpus)} GPUs)"
        m = _MIG_INDEX.match(device_id)
        if m:
            g = int(m[1])
            if g >= len(self.gpus):
                return f"GPU index out of range (this node has {len(self.gpus)} GPUs)"
            return f"GPU {g} has {len(self.migs_of(self.gpus[g]))} MIG devices"
        if _PCI.match(device_id):
            return "no GPU at that PCI bus id"
        if _LEGACY_MIG.match(device_id):
            return "no such MIG device on this node"
        return "unknown device"

    def as_json(self) -> dict[str, Any]:
        return {
            "driver_version": self.driver_version,
            "gpus": [
                {
                    "index": g.index,
                    "uuid": g.uuid,
                    "pci_bus_id": g.pci_bus_id,
                    "minor": g.minor,
                    "name": g.name,
                    "mig_enabled": g.mig_enabled,
                    "mig_devices": [
                        {"uuid": m.uuid, "gi": m.gi, "ci": m.ci, "id": m.index_id}
                        for m in self.migs_of(g)
                    ],
                }
                for g in self.gpus
            ],
        }


def from_json(data: Mapping[str, Any], where: str = "inventory") -> Inventory:
    """Build an inventory from the dry-run file format (docs/commands.md: Inventory file)."""
    if not isinstance(data, Mapping):
        raise InventoryError(f"{where}: expected a JSON object")
    gpus_raw = data.get("gpus")
    if not isinstance(gpus_raw, list):
        raise InventoryError(f"{where}: gpus: expected an array")
    driver = data.get("driver_version")
    if driver is not None and not isinstance(driver, str):
        raise InventoryError(f"{where}: driver_version: expected a string")
    gpus: list[Gpu] = []
    migs: list[MigDevice] = []
    seen: set[str] = set()
    for i, g in enumerate(gpus_raw):
        at = f"{where}: gpus[{i}]"
        if not isinstance(g, Mapping):
            raise InventoryError(f"{at}: expected an object")
        uuid = _req(g, "uuid", str, at)
        if not uuid.startswith("GPU-"):
            raise InventoryError(f"{at}.uuid: expected a GPU-<uuid>, got {uuid!r}")
        _unique(uuid, seen, at)
        mig_raw = g.get("mig_devices", [])
        if not isinstance(mig_raw, list):
            raise InventoryError(f"{at}.mig_devices: expected an array")
        gpu = Gpu(
            index=i,
            uuid=uuid,
            pci_bus_id=normalize_bus_id(_req(g, "pci_bus_id", str, at)),
            minor=_opt(g, "minor", int, i, at),
            name=_opt(g, "name", str, "", at),
            mig_enabled=_opt(g, "mig_enabled", bool, bool(mig_raw), at),
        )
        gpus.append(gpu)
        for j, m in enumerate(mig_raw):
            mat = f"{at}.mig_devices[{j}]"
            if not isinstance(m, Mapping):
                raise InventoryError(f"{mat}: expected an object")
            muuid = _req(m, "uuid", str, mat)
            if not muuid.startswith("MIG-"):
                raise InventoryError(f"{mat}.uuid: expected a MIG-<uuid>, got {muuid!r}")
            _unique(muuid, seen, mat)
            migs.append(MigDevice(uuid.strip(), i, j, muuid, _req(m, "gi", int, mat),
                                  _req(m, "ci", int, mat)))
    return Inventory(tuple(gpus), tuple(migs), driver, source="file")


MAX_INVENTORY_BYTES = 4 << 20  # a node with 64 GPUs x 7 MIG devices is ~100 KiB


def load_file(path: Path) -> Inventory:
    from nvhook import fileops

    try:
        data = json.loads(fileops.read_bounded(path, MAX_INVENTORY_BYTES))
    except fileops.TooLarge as e:
        raise InventoryError(f"inventory file {e}") from None
    except FileNotFoundError:
        raise InventoryError(f"{path}: inventory file does not exist") from None
    except OSError as e:
        raise InventoryError(f"{path}: cannot read inventory file: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InventoryError(f"{path}: inventory file is not valid JSON: {e}") from None
    return from_json(data, str(path))


def _req(obj: Mapping[str, Any], key: str, kind: type, at: str) -> Any:
    if key not in obj:
        raise InventoryError(f"{at}.{key}: missing")
    return _opt(obj, key, kind, None, at)


def _opt(obj: Mapping[str, Any], key: str, kind: type, default: Any, at: str) -> Any:
    value = obj.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InventoryError(f"{at}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _unique(uuid: str, seen: set[str], at: str) -> None:
    if uuid.lower() in seen:
        raise InventoryError(f"{at}.uuid: {uuid} appears twice")
    seen.add(uuid.lower())
