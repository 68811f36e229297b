"""Shared fixtures: the fake NVML library and a way to run nvhook as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakenvml
import pytest

NVHOOK = Path(sys.executable).with_name("nvhook")


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the fake libnvidia-ml.so.1, built with gcc for this session."""
    return fakenvml.build(tmp_path_factory.mktemp("fakenvml"))


@dataclass(frozen=True)
class Node:
    """A simulated GPU node: the fake NVML plus a config file and an audit log."""

    libdir: Path
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def syslog_socket(self) -> Path:
        """Where this node's syslog lines go; nothing is bound there unless a test binds it
        (then ``tests/syslog.py`` reads them), so no test writes to the machine's /dev/log."""
        return self.root / "syslog.sock"

    def write_config(self, text: str = "") -> Path:
        """nvhook's config; [audit] and [delegate] default to this node's files."""
        if "[audit]" not in text:
            text += f'\n[audit]\npath = "{self.audit}"\n'
        if "syslog" not in text:
            text = text.replace("[audit]\n", f'[audit]\nsyslog-socket = "{self.syslog_socket}"\n',
                                1)
        if "[delegate]" not in text:
            text += '\n[delegate]\npath = ""\n'
        self.config.write_text(text)
        return self.config

    def env(self, *, fail: str | None = None, topology: Path | None = None,
            calls_log: Path | None = None, extra: Mapping[str, str] | None = None,
            nvml: bool = True) -> dict[str, str]:
        env = fakenvml.env_for(self.libdir if nvml else None, fail=fail, topology=topology,
                               calls_log=calls_log)
        env.pop("NVHOOK_CONFIG", None)
        env.update(extra or {})
        return env

    def run(self, args: Sequence[str], *, stdin: bytes = b"", timeout: float = 60,
            **env_kw: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(NVHOOK), *args], input=stdin, capture_output=True, timeout=timeout,
            env=self.env(**env_kw), check=False,
        )

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


@pytest.fixture
def node(fake_nvml: Path, tmp_path: Path) -> Node:
    root = tmp_path / "node"
    root.mkdir()
    n = Node(fake_nvml, root)
    n.write_config()
    return n


def write_bundle(bundle: Path, env: Sequence[str], *, caps: Sequence[str] = (),
                 mounts: Sequence[dict[str, Any]] = (),
                 annotations: Mapping[str, str] | None = None, mode: int = 0o644,
                 extra: Mapping[str, Any] | None = None) -> Path:
    """A bundle directory whose config.json carries the given request."""
    bundle.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "args": ["/bin/true"],
            "env": list(env),
            "capabilities": {"bounding": list(caps), "effective": list(caps)},
        },
        "root": {"path": "rootfs", "readonly": True},
        "mounts": list(mounts),
        "annotations": dict(annotations or {}),
        **(extra or {}),
    }
    path = bundle / "config.json"
    path.write_text(json.dumps(doc, indent=1))
    os.chmod(path, mode)
    return bundle


def runc_state(bundle: Path, container_id: str = "ctr-1", **extra: Any) -> bytes:
    """The state runc 1.1 sends to a prestart hook."""
    state = {"ociVersion": "1.0.2-dev", "id": container_id, "status": "creating", "pid": 4242,
             "bundle": str(bundle), **extra}
    return json.dumps(state).encode()


BundleWriter = Callable[..., Path]
