"""The lease table's file format, versioned so leases survive an nvhook upgrade.

One JSON document, ``<dir>/leases.json``::

    {"format": 2, "boot_id": "…", "leases": [
      {"device": "GPU-…", "container": "…", "bundle": "/…", "pid": 123, "pid_start": 4567,
       "mode": "exclusive", "time": "2026-…Z", "rule": null}]}

Format 1 (nvhook's first lease table) kept the records by device and had neither
``pid_start`` nor ``mode``::

    {"format": 1, "boot_id": "…", "devices": {"GPU-…": [
      {"container": "…", "bundle": "/…", "pid": 123, "time": "…", "rule": null}]}}

It is read as exclusive leases without a start time (the conservative reading);
the next write stores format 2. A format newer than this nvhook knows is refused,
never guessed at: the caller fails closed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nvhook.errors import WriteError

FORMAT = 2
READABLE_FORMATS = (1, 2)
EXCLUSIVE = "exclusive"
SHARED = "shared"


class LeaseTableError(WriteError):
    """The table cannot be read or written (exit 9, as for any file nvhook rewrites); a GPU
    request under a lease policy fails closed."""


@dataclass(frozen=True)
class Lease:
    """One record per (device UUID, container id)."""

    device: str  # GPU-/MIG- UUID as the inventory spells it
    container: str
    bundle: str | None
    pid: int | None  # the container's init pid from the OCI state; None: not known yet
    pid_start: int | None  # /proc/PID/stat field 22, to tell a reused pid; None: unknown
    mode: str  # EXCLUSIVE | SHARED
    time: str
    rule: str | None  # the [[policy.rules]] entry whose policy granted it

    @property
    def exclusive(self) -> bool:
        return self.mode == EXCLUSIVE

    def as_json(self) -> dict[str, Any]:
        return {"device": self.device, "container": self.container, "bundle": self.bundle,
                "pid": self.pid, "pid_start": self.pid_start, "mode": self.mode,
                "time": self.time, "rule": self.rule}


@dataclass(frozen=True)
class Table:
    """The lease table as read from its file (or an empty one), and the boot it is of."""

    boot_id: str | None  # None: an empty table that was never written
    leases: tuple[Lease, ...] = ()
    format: int = FORMAT  # the format it was read in

    def of_container(self, container: str) -> tuple[Lease, ...]:
        return tuple(lease for lease in self.leases if lease.container == container)

    def without_container(self, container: str) -> Table:
        return Table(self.boot_id, tuple(x for x in self.leases if x.container != container),
                     self.format)


def decode(data: bytes, where: str) -> Table:
    """Bytes -> Table. Raises ``LeaseTableError`` naming the field at fault."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise LeaseTableError(f"{where}: not a lease table (invalid JSON: {e})") from None
    if not isinstance(doc, dict):
        raise LeaseTableError(f"{where}: expected a JSON object")
    version = doc.get("format")
    if isinstance(version, bool) or not isinstance(version, int):
        raise LeaseTableError(f"{where}: format: expected an integer, got {version!r}")
    if version not in READABLE_FORMATS:
        raise LeaseTableError(f"{where}: format {version} is not one this nvhook reads "
                              f"({', '.join(map(str, READABLE_FORMATS))}); was it written by "
                              "a newer nvhook?")
    boot_id = doc.get("boot_id")
    if not isinstance(boot_id, str):
        raise LeaseTableError(f"{where}: boot_id: expected a string, got {boot_id!r}")
    reader = _Reader(where)
    leases = reader.v1(doc) if version == 1 else reader.v2(doc)
    return Table(boot_id, leases, version)


def encode(table: Table) -> bytes:
    """Always the current format; records in a stable order (device, then container)."""
    leases = sorted(table.leases, key=lambda x: (x.device.lower(), x.container))
    doc = {"format": FORMAT, "boot_id": table.boot_id,
           "leases": [lease.as_json() for lease in leases]}
    return (json.dumps(doc, indent=1) + "\n").encode()


class _Reader:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, at: str, problem: str) -> LeaseTableError:
        return LeaseTableError(f"{self.where}: {at}: {problem}")

    def v2(self, doc: dict[str, Any]) -> tuple[Lease, ...]:
        records = doc.get("leases")
        if not isinstance(records, list):
            raise self.fail("leases", "expected an array")
        out = []
        for i, rec in enumerate(records):
            at = f"leases[{i}]"
            if not isinstance(rec, dict):
                raise self.fail(at, "expected an object")
            mode = rec.get("mode")
            if mode not in (EXCLUSIVE, SHARED):
                raise self.fail(f"{at}.mode", f"expected {EXCLUSIVE!r} or {SHARED!r}, "
                                f"got {mode!r}")
            out.append(self.lease(rec, at, self.string(rec, "device", at), mode,
                                  self.optional_int(rec, "pid_start", at)))
        return tuple(out)

    def v1(self, doc: dict[str, Any]) -> tuple[Lease, ...]:
        devices = doc.get("devices")
        if not isinstance(devices, dict):
            raise self.fail("devices", "expected an object of device -> records")
        out = []
        for device, records in devices.items():
            if not isinstance(records, list):
                raise self.fail(f"devices.{device}", "expected an array")
            for i, rec in enumerate(records):
                at = f"devices.{device}[{i}]"
                if not isinstance(rec, dict):
                    raise self.fail(at, "expected an object")
                # Format 1 had no modes: reading its leases as exclusive never lets a
                # second holder in that the first one did not agree to.
                out.append(self.lease(rec, at, device, EXCLUSIVE, None))
        return tuple(out)

    def lease(self, rec: dict[str, Any], at: str, device: str, mode: str,
              pid_start: int | None) -> Lease:
        if device[:4].upper() not in ("GPU-", "MIG-"):
            raise self.fail(f"{at}.device", f"expected a GPU-/MIG- UUID, got {device!r}")
        bundle = rec.get("bundle")
        if bundle is not None and not isinstance(bundle, str):
            raise self.fail(f"{at}.bundle", f"expected a string or null, got {bundle!r}")
        rule = rec.get("rule")
        if rule is not None and not isinstance(rule, str):
            raise self.fail(f"{at}.rule", f"expected a string or null, got {rule!r}")
        return Lease(device, self.string(rec, "container", at), bundle,
                     self.optional_int(rec, "pid", at), pid_start, mode,
                     self.string(rec, "time", at), rule)

    def string(self, rec: dict[str, Any], key: str, at: str) -> str:
        value = rec.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{at}.{key}", f"expected a non-empty string, got {value!r}")
        return value

    def optional_int(self, rec: dict[str, Any], key: str, at: str) -> int | None:
        value = rec.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"{at}.{key}", f"expected a non-negative integer or null, "
                            f"got {value!r}")
        return value
