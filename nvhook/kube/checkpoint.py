"""The kubelet device manager's checkpoint file, read-only.

``{"Data": {"PodDeviceEntries": [{"PodUID", "ContainerName", "ResourceName",
"DeviceIDs": {"<numa>": [ids]} | [ids], "AllocResp"}], ...}, "Checksum": N}``. Newer
kubelets key ``DeviceIDs`` by NUMA node, older ones wrote a plain list: both are read.
Internal and unversioned, but it carries the pod UID and classic init containers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nvhook import bounded
from nvhook.errors import AllocationError

# A node's checkpoint is a few KiB per pod; a file far past that is not the kubelet's.
MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One checkpoint entry: the device ids the kubelet gave a container for a resource."""

    pod_uid: str
    container: str
    resource: str
    device_ids: tuple[str, ...]


def read(path: Path) -> tuple[Entry, ...]:
    """Raises ``FileNotFoundError`` when absent, ``AllocationError`` when unreadable."""
    try:
        # Not followed: a link planted at the kubelet's name is refused, as before.
        data = bounded.read(path, MAX_BYTES, follow=False)
    except FileNotFoundError:
        raise
    except bounded.TooLarge:
        raise AllocationError(f"checkpoint {path}: larger than {MAX_BYTES} bytes") from None
    except OSError as e:
        raise AllocationError(f"checkpoint {path}: cannot open: {e.strerror}") from None
    return parse(data, str(path))


def parse(data: bytes, where: str = "checkpoint") -> tuple[Entry, ...]:
    """The entries, every field nvhook reads type-checked: a file that is not the kubelet's
    is an ``AllocationError``, never a guess. ``AllocResp``, ``RegisteredDevices`` and
    ``Checksum`` are not read (nvhook needs none of them), so they are not checked."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise AllocationError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise AllocationError(f"{where}: expected a JSON object")
    body = doc.get("Data")
    if not isinstance(body, dict):
        raise AllocationError(f"{where}: Data: expected an object")
    entries = body.get("PodDeviceEntries")
    if entries is None:  # Go writes a node without device pods as null
        return ()
    if not isinstance(entries, list):
        raise AllocationError(f"{where}: Data.PodDeviceEntries: expected a list")
    out = []
    for i, e in enumerate(entries):
        at = f"{where}: Data.PodDeviceEntries[{i}]"
        if not isinstance(e, dict):
            raise AllocationError(f"{at}: expected an object")
        fields = []
        for key in ("PodUID", "ContainerName", "ResourceName"):
            value = e.get(key)
            if not isinstance(value, str) or not value:
                raise AllocationError(f"{at}.{key}: expected a non-empty string")
            fields.append(value)
        out.append(Entry(fields[0], fields[1], fields[2], _device_ids(e.get("DeviceIDs"),
                                                                      f"{at}.DeviceIDs")))
    return tuple(out)


def _device_ids(value: object, at: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):  # kubelets before the NUMA-keyed form
        lists = [value]
    elif isinstance(value, dict):
        lists = [value[k] for k in sorted(value)]
    else:
        raise AllocationError(f"{at}: expected a list or a NUMA-node map of lists")
    ids: list[str] = []
    for ids_of in lists:
        if ids_of is None:  # a NUMA node Go wrote as a nil slice
            continue
        if not isinstance(ids_of, list) or not all(isinstance(i, str) and i for i in ids_of):
            raise AllocationError(f"{at}: expected lists of non-empty strings")
        ids.extend(ids_of)
    return tuple(dict.fromkeys(ids))
