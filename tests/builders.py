"""Shared builders for the unit tests: OCI specs, the fake NVML inventory, policies."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fakenvml import GPU0_BUS, GPU0_UUID, GPU1_BUS, GPU1_UUID, MIG_A_UUID, MIG_B_UUID

from nvhook.decision.policy import Policy
from nvhook.gpus import inventory as inventory_mod
from nvhook.gpus.inventory import Inventory
from nvhook.oci.spec import DEVICE_MOUNT_ROOT, Spec, from_document

CONFIG_PATH = Path("/b/config.json")
ADMIN = ("CAP_SYS_ADMIN",)

# The fake NVML default topology (tests/fakenvml/fake_nvml.c) in the dry-run JSON format.
# GPU 1 has an empty MIG slot 1 in NVML, so MIG_B_UUID (slot 2) is its second existing MIG
# device: "1:1".
INVENTORY_JSON: dict[str, Any] = {
    "driver_version": "550.54.15",
    "gpus": [
        {
            "uuid": GPU0_UUID,
            "pci_bus_id": GPU0_BUS,
            "minor": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "mig_enabled": False,
            "mig_devices": [],
        },
        {
            "uuid": GPU1_UUID,
            "pci_bus_id": GPU1_BUS,
            "minor": 1,
            "name": "NVIDIA H100 80GB HBM3",
            "mig_enabled": True,
            "mig_devices": [
                {"uuid": MIG_A_UUID, "gi": 1, "ci": 0},
                {"uuid": MIG_B_UUID, "gi": 2, "ci": 0},
            ],
        },
    ],
}

# Every live UUID, in the order nvidia-container-cli's "all" selects them.
ALL_UUIDS = (GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID)


def inventory_json() -> dict[str, Any]:
    """A fresh copy of INVENTORY_JSON, safe to mutate."""
    return copy.deepcopy(INVENTORY_JSON)


def fake_inventory() -> Inventory:
    return inventory_mod.from_json(INVENTORY_JSON)


def device_mount(device_id: str, source: str = "/dev/null",
                 root: str = DEVICE_MOUNT_ROOT) -> dict[str, Any]:
    """A bind mount as the device plugin writes it for the volume-mount channel."""
    return {
        "destination": f"{root}/{device_id}",
        "source": source,
        "type": "bind",
        "options": ["ro", "nosuid", "nodev", "bind"],
    }


def mount(source: str, destination: str) -> dict[str, Any]:
    return {"destination": destination, "source": source, "type": "bind", "options": ["bind"]}


# The numbers the host gives NVIDIA's nodes (195 is fixed; uvm and caps majors are the
# host's, these are the ones HOST_PROC_DEVICES below declares).
UVM_MAJOR = 510
CAPS_MAJOR = 234
IMEX_MAJOR = 241  # nvidia-caps-imex-channels: the minor is the channel number
NODE_NUMBERS: dict[str, tuple[int, int]] = {
    "/dev/nvidiactl": (195, 255), "/dev/nvidia-modeset": (195, 254),
    "/dev/nvidia-uvm": (UVM_MAJOR, 0), "/dev/nvidia-uvm-tools": (UVM_MAJOR, 1),
    "/dev/null": (1, 3), "/dev/fuse": (10, 229),
    "/dev/nvidia-caps-imex-channels/channel0": (IMEX_MAJOR, 0),
}
HOST_PROC_DEVICES = f"""Character devices:
  1 mem
  5 /dev/tty
 10 misc
195 nvidia-frontend
{CAPS_MAJOR} nvidia-caps
{UVM_MAJOR} nvidia-uvm
{IMEX_MAJOR} nvidia-caps-imex-channels

Block devices:
  7 loop
195 notnvidia
"""
# mig-minors for the fake topology: GPU 1 (minor 1) has GIs 1 and 2, each with CI 0.
HOST_MIG_MINORS = """config 1
monitor 2
gpu0/gi0/access 3
gpu1/gi1/access 12
gpu1/gi1/ci0/access 13
gpu1/gi2/access 21
gpu1/gi2/ci0/access 22
"""


def node(path: str, major: int | None = None, minor: int | None = None,
         kind: str = "c") -> dict[str, Any]:
    """A linux.devices entry; the numbers default to what ``path`` names on a real host."""
    if major is None:
        m = re.fullmatch(r"/dev/nvidia(\d+)", path)
        major, minor = (195, int(m[1])) if m else NODE_NUMBERS.get(path, (1, 3))
    return {"path": path, "type": kind, "major": major, "minor": minor or 0}


def rule(allow: bool = True, kind: str | None = "c", major: int | None = 195,
         minor: int | None = None, access: str = "rwm") -> dict[str, Any]:
    """A linux.resources.devices cgroup rule; None leaves a field out (a wildcard)."""
    out: dict[str, Any] = {"allow": allow, "access": access}
    if kind is not None:
        out["type"] = kind
    if major is not None:
        out["major"] = major
    if minor is not None:
        out["minor"] = minor
    return out


def host() -> Any:
    """The host numbering above, as ``devnodes.Host``."""
    from nvhook.gpus import devnodes

    return devnodes.Host(devnodes.parse_proc_devices(HOST_PROC_DEVICES),
                         devnodes.parse_mig_minors(HOST_MIG_MINORS))


def document(
    env: Sequence[str] = (),
    caps: Iterable[str] = (),
    mounts: Sequence[Mapping[str, Any]] = (),
    annotations: Mapping[str, str] | None = None,
    devices: Sequence[str | Mapping[str, Any]] = (),
    effective: Iterable[str] | None = None,
    rules: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A minimal OCI config.json with the given channels. ``caps`` go into ``bounding``."""
    caps = list(caps)
    doc: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "args": ["sh"],
            "cwd": "/",
            "env": list(env),
            "capabilities": {
                "bounding": caps,
                "effective": list(caps if effective is None else effective),
                "permitted": caps,
            },
        },
        "root": {"path": "rootfs"},
        "hostname": "test",
        "mounts": [mount("proc", "/proc")] + [dict(m) for m in mounts],
    }
    if annotations is not None:
        doc["annotations"] = dict(annotations)
    if devices:
        doc["linux"] = {"devices": [node(d) if isinstance(d, str) else dict(d) for d in devices]}
    if rules:
        doc.setdefault("linux", {})["resources"] = {"devices": [dict(r) for r in rules]}
    return doc


def make_spec(
    env: Sequence[str] = (),
    caps: Iterable[str] = (),
    mounts: Sequence[Mapping[str, Any]] = (),
    annotations: Mapping[str, str] | None = None,
    devices: Sequence[str | Mapping[str, Any]] = (),
    effective: Iterable[str] | None = None,
) -> Spec:
    return from_document(
        CONFIG_PATH, document(env, caps, mounts, annotations, devices, effective)
    )


def spec_from(doc: dict[str, Any]) -> Spec:
    return from_document(CONFIG_PATH, copy.deepcopy(doc))


def policy(**overrides: Any) -> Policy:
    """A Policy with field overrides; string values are coerced by the field's enum."""
    base = Policy()
    types = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(Policy)}
    fields: dict[str, Any] = {}
    for key, value in overrides.items():
        kind = types[key]
        if isinstance(value, str) and kind is not str and issubclass(kind, str):
            value = kind(value)
        fields[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(base, **fields)


def env_values(env: Sequence[str], name: str) -> list[str]:
    """Every value ``name`` has in an env list, in order."""
    return [e.partition("=")[2] for e in env if e.partition("=")[0] == name and "=" in e]


# A stand-in for the low-level runtime behind the shim: records its argv (and the spec it
# was handed, when $BUNDLE names the bundle) next to itself, then exits 0.
FAKE_RUNTIME = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/argv"
cp "$BUNDLE/config.json" "$(dirname "$0")/seen.json" 2>/dev/null
exit 0
"""


def fake_runtime(tmp_path: Path) -> Path:
    exe = tmp_path / "rt" / "fakerunc"
    exe.parent.mkdir()
    exe.write_text(FAKE_RUNTIME)
    exe.chmod(0o755)
    return exe
