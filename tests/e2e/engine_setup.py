"""What the Docker and containerd end-to-end tests share: a simulated GPU node for nvhook
(an inventory file, a recording stand-in for NVIDIA's hook, an audit log) and the wrapper
an engine runs as its runtime."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .harness import Recorder, find_binary

NVHOOK = Path(sys.executable).with_name("nvhook")
GPUS = [f"GPU-{i:08x}-0000-4000-8000-{i:012x}" for i in range(2)]
INVENTORY = {
    "driver_version": "550.54.15",
    "gpus": [{"uuid": u, "pci_bus_id": f"00000000:{0x10 + i:02x}:00.0", "name": "H100"}
             for i, u in enumerate(GPUS)],
}


@dataclass(frozen=True)
class Node:
    config: Path
    audit: Path
    wrapper: Path  # `nvhook --config CONFIG runtime "$@"`: containerd's BinaryName
    nvhook: Path  # `nvhook --config CONFIG "$@"`: Docker's runtime path (runtimeArgs: runtime)
    recorder: Recorder

    def audit_lines(self) -> list[dict]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


def make_node(tmp: Path, recorder: Recorder, mode: str = "rewrite") -> Node:
    runc = find_binary("runc")
    assert runc is not None
    tmp.mkdir(parents=True, exist_ok=True)
    inventory = tmp / "inventory.json"
    inventory.write_text(json.dumps(INVENTORY))
    config = tmp / "nvhook.toml"
    audit = tmp / "audit.jsonl"
    config.write_text(
        f'[policy]\nmode = "{mode}"\nall = "privileged"\n'
        f'[inventory]\nsource = "file"\nfile = "{inventory}"\n'
        f'[delegate]\npath = "{recorder.path}"\n'
        f'[audit]\npath = "{audit}"\n'
        f'[runtime]\npath = "{runc}"\n'
    )
    nvhook = tmp / "nvhook-with-config"
    nvhook.write_text(f'#!/bin/sh\nexec {shlex.quote(str(NVHOOK))} --config '
                      f'{shlex.quote(str(config))} "$@"\n')
    nvhook.chmod(0o755)
    wrapper = tmp / "nvhook-runc"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(str(nvhook))} runtime "$@"\n')
    wrapper.chmod(0o755)
    return Node(config, audit, wrapper, nvhook, recorder)
