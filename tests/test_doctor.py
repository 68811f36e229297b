"""`nvhook doctor` as a real process on a simulated node (fake NVML, stand-in delegate)."""

from __future__ import annotations

import ctypes.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakenvml
import pytest
from conftest import Node

from nvhook.ops import install as install_mod

ROW = re.compile(r"^(ok|warn|fail) +([\w.-]+) +(\S.*)$")
LINE = re.compile(r"^(ok|warn|fail)  ([\w.-]+): .+$")
HOOKS_D = "usr/share/containers/oci/hooks.d"
NVIDIA_CONFIG = "etc/nvidia-container-runtime/config.toml"


@dataclass(frozen=True)
class Site:
    """A --prefix root laid out as a healthy Podman node."""

    node: Node
    prefix: Path
    delegate: Path

    def config(self, extra: str = "", delegate: str | None = None) -> None:
        path = self.prefix / "etc/nvhook/config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        hook = self.delegate if delegate is None else delegate
        path.write_text(
            f"version = 1\n{extra}\n[delegate]\npath = \"{hook}\"\n"
            f"[audit]\npath = \"{self.node.audit}\"\n"
        )

    def hook(self, path: str) -> None:
        doc = install_mod.hook_document(Path(path))
        (self.prefix / HOOKS_D / "nvrw-hook.json").write_text(json.dumps(doc))

    def nvidia(self, text: str) -> None:
        (self.prefix / NVIDIA_CONFIG).write_text(text)

    def doctor(self, *args: str, **env_kw: Any) -> tuple[int, list[str]]:
        """(status, rows as ``LEVEL  NAME: DETAIL``), after checking the real output's
        columns line up and that every failing row says how to fix it."""
        proc = self.node.run(["doctor", "--prefix", str(self.prefix), *args], **env_kw)
        assert proc.stderr == b"", proc.stderr
        rows = proc.stdout.decode().splitlines()
        cells = [ROW.match(row) for row in rows]
        assert all(cells), rows
        assert len({c.start(3) for c in cells if c}) == 1, "detail column not aligned"
        for row in rows:
            assert not row.startswith("fail") or " — fix: " in row, f"no fix: hint: {row}"
        return proc.returncode, [f"{c[1]}  {c[2]}: {c[3]}" for c in cells if c]


@pytest.fixture
def site(node: Node, tmp_path: Path) -> Site:
    prefix = tmp_path / "root"
    (prefix / HOOKS_D).mkdir(parents=True)
    (prefix / NVIDIA_CONFIG).parent.mkdir(parents=True)
    delegate = tmp_path / "nvidia-container-runtime-hook"
    delegate.write_text('#!/bin/sh\necho "NVIDIA Container Runtime Hook version 1.17.8"\n')
    delegate.chmod(0o755)
    s = Site(node, prefix, delegate)
    s.config()
    s.hook(str(install_mod.nvhook_executable()))
    s.nvidia('[nvidia-container-runtime]\nmode = "legacy"\n')
    return s


def by_check(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        m = LINE.match(line)
        assert m, f"malformed line: {line!r}"
        out.setdefault(m.group(2), []).append(line)
    return out


def test_healthy_node(site: Site) -> None:
    code, lines = site.doctor()
    checks = by_check(lines)
    assert code == 0, "\n".join(lines)
    assert not [line for line in lines if line.startswith("fail")]
    assert set(checks) >= {"nvml", "driver", "gpus", "delegate", "nvidia-mode", "hooks.d",
                           "policy", "audit", "install"}
    assert checks["driver"] == [f"ok  driver: {fakenvml.DRIVER_VERSION}"]
    gpus = checks["gpus"][0]
    assert gpus.startswith("ok  gpus: 2 GPU(s)") and "2 MIG device(s)" in gpus
    for uuid in (fakenvml.GPU0_UUID, fakenvml.GPU1_UUID, fakenvml.MIG_A_UUID,
                 fakenvml.MIG_B_UUID):
        assert uuid in gpus
    assert re.match(r"ok  nvml: init \+ enumeration in \d+ ms", checks["nvml"][0])
    assert checks["delegate"] == [f"ok  delegate: {site.delegate}: NVIDIA Container Runtime "
                                  "Hook version 1.17.8"]
    assert not site.node.audit.exists()  # the audit probe leaves nothing behind


def test_policy_only_and_skip_mode_detection(site: Site) -> None:
    site.config(delegate="")
    site.nvidia('[nvidia-container-runtime]\nmode = "cdi"\n'
                '[nvidia-container-runtime-hook]\nskip-mode-detection = true\n')
    code, lines = site.doctor()
    checks = by_check(lines)
    assert code == 0, "\n".join(lines)
    assert checks["delegate"][0].startswith("ok  delegate: policy only")
    assert "skip-mode-detection = true" in checks["nvidia-mode"][0]


def test_nvidia_hook_still_present_warns(site: Site) -> None:
    (site.prefix / HOOKS_D / "oci-nvidia-hook.json").write_text('{"version": "1.0.0"}')
    code, lines = site.doctor()
    assert code == 0
    assert any(line.startswith("warn  hooks.d: NVIDIA's") for line in lines), lines


def test_missing_nvidia_config_warns(site: Site) -> None:
    (site.prefix / NVIDIA_CONFIG).unlink()
    code, lines = site.doctor()
    assert code == 0
    assert by_check(lines)["nvidia-mode"][0].startswith("warn  nvidia-mode:")


def _no_nvml(site: Site) -> dict[str, object]:
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("a real libnvidia-ml is installed")
    return {"nvml": False}


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        pytest.param(_no_nvml, r"fail  nvml: NVML unavailable", id="no NVML library"),
        pytest.param(lambda s: {"fail": "driver_not_loaded"},
                     r"fail  nvml: .*driver is not loaded", id="driver not loaded"),
        pytest.param(lambda s: (s.config("[inventory]\ntimeout = 0.5\n"), {"fail": "hang"})[1],
                     r"fail  nvml: NVML did not answer within 0.5s", id="NVML hangs"),
        pytest.param(lambda s: s.config(delegate="/nonexistent/nvidia-container-runtime-hook"),
                     r"fail  delegate: .*/nonexistent/nvidia-container-runtime-hook",
                     id="delegate missing"),
        pytest.param(lambda s: s.nvidia('[nvidia-container-runtime]\nmode = "cdi"\n'),
                     r"fail  nvidia-mode: .*mode = 'cdi' .* — fix: nvhook install",
                     id="NVIDIA mode cdi"),
        pytest.param(lambda s: s.nvidia("[nvidia-container-runtime]\n"),
                     r"fail  nvidia-mode: .*mode = 'auto'", id="NVIDIA mode auto by default"),
        pytest.param(lambda s: s.hook("/nonexistent/nvhook"),
                     r"fail  hooks.d: .*/nonexistent/nvhook does not exist.*fail-open",
                     id="hook path missing"),
        pytest.param(lambda s: s.config('[policy]\nmode = "lenient"\n'),
                     r"fail  policy: .*policy\.mode", id="policy does not parse"),
    ],
)
def test_broken_node(site: Site, breakage: Callable[[Site], dict[str, object] | None],
                     expected: str) -> None:
    env_kw = breakage(site) or {}
    code, lines = site.doctor(**env_kw)
    assert code == 10, "\n".join(lines)
    by_check(lines)  # every line well-formed
    assert any(re.match(expected, line) for line in lines), "\n".join(lines)


def test_duplicate_registration_fails(site: Site) -> None:
    (site.prefix / HOOKS_D / "zz-nvhook-again.json").write_text(
        (site.prefix / HOOKS_D / "nvrw-hook.json").read_text()
    )
    code, lines = site.doctor()
    assert code == 10
    assert any(line.startswith("fail  hooks.d: nvhook is registered more than once")
               for line in lines), lines


def test_unwritable_audit_dir_fails(site: Site, tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    site.config()
    text = (site.prefix / "etc/nvhook/config.toml").read_text()
    text = text.replace(str(site.node.audit), str(blocker / "audit.jsonl"))
    (site.prefix / "etc/nvhook/config.toml").write_text(text)
    code, lines = site.doctor()
    assert code == 10
    assert any(line.startswith("fail  audit:") for line in lines), lines


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        pytest.param("missing", "does not exist", id="missing"),
        pytest.param("a-file", "is not a directory", id="a file"),
    ],
)
def test_hooks_dir_that_is_not_a_directory_fails_clearly(site: Site, name: str,
                                                         needle: str) -> None:
    (site.prefix / "a-file").write_text("x")
    code, lines = site.doctor("--hooks-dir", f"/{name}")
    assert code == 10
    want = f"fail  hooks.d: {site.prefix}/{name}: --hooks-dir {needle}"
    assert any(line.startswith(want) for line in lines), lines


@pytest.mark.parametrize(
    ("nvidia", "extra", "expect"),
    [
        pytest.param('[nvidia-container-runtime]\nmode = "legacy"\n', "",
                     [r"ok  nvidia-config:? +.*env when unprivileged accepted, volume mounts not "
                      r"accepted, swarm-resource -"], id="defaults reported"),
        pytest.param('mode = "x"\nswarm-resource = "A"\n', '[request]\nswarm-resource = ["B"]\n',
                     [r"warn  nvidia-config:? +nvhook's request.swarm-resource B differs from "
                      r"NVIDIA's A"], id="swarm disagreement"),
        pytest.param("accept-nvidia-visible-devices-envvar-when-unprivileged = false\n",
                     '[policy]\nunprivileged-env = "deny"\n',
                     [r'warn  nvidia-config:? +policy.unprivileged-env = "deny" has no effect'],
                     id="unprivileged env: nvhook's key moot"),
        pytest.param("a = = b\n", "", [r"fail  nvidia-config:? +.*invalid TOML.*every GPU request "
                                       r"is denied"], id="broken NVIDIA config fails"),
    ],
)
def test_doctor_reports_nvidia_settings(site: Site, nvidia: str, extra: str,
                                        expect: list[str]) -> None:
    site.config(extra)
    site.nvidia(nvidia)
    _, lines = site.doctor()
    got = by_check(lines)["nvidia-config"]
    for pattern in expect:
        assert any(re.search(pattern, line) for line in got), got
