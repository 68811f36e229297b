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
from kubelet import Ctr, TestKubelet, write_checkpoint

from nvhook.ops import install as install_mod

P = pytest.param
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


# -- the kubelet's allocation sources (a real gRPC test kubelet, real checkpoint files) ----

GPU_POD = ("nvidia.com/gpu", fakenvml.GPU0_UUID)
MIG_POD = ("nvidia.com/mig-1g.10gb", fakenvml.MIG_A_UUID)


@dataclass(frozen=True)
class Kube:
    """What a row sets up: the test kubelet's pods, the checkpoint, the [kubernetes] keys."""

    pod: tuple[str, str] | None = GPU_POD  # the one device of team-a/train's container
    checkpoint: bytes | str | None = "written"  # bytes: as given; "dir", "symlink"; None: absent
    socket: str = "served"  # "served", "absent", "stale" (a file nobody listens on), "garbage"
    keys: tuple[tuple[str, object], ...] = ()


def _kube_site(site: Site, tmp_path: Path, kubelet: TestKubelet, kube: Kube) -> None:
    pods = []
    if kube.pod is not None:
        resource, device = kube.pod
        pods.append(kubelet.add("team-a", "train", "0f3e4a52-7b1c-4d2e-9a8b-1c2d3e4f5a6b",
                                Ctr("main", {resource: [device]})))
    cp = tmp_path / "kubelet_internal_checkpoint"
    if kube.checkpoint == "written":
        write_checkpoint(cp, pods)
    elif kube.checkpoint == "dir":
        cp.mkdir()
    elif kube.checkpoint == "symlink":
        write_checkpoint(tmp_path / "elsewhere", pods)
        cp.symlink_to(tmp_path / "elsewhere")
    elif isinstance(kube.checkpoint, bytes):
        cp.write_bytes(kube.checkpoint)
    socket = {"served": kubelet.socket, "absent": tmp_path / "none.sock",
              "stale": tmp_path / "stale.sock", "garbage": kubelet.socket}[kube.socket]
    if kube.socket == "stale":
        socket.write_text("")
    if kube.socket == "garbage":
        kubelet.raw["List"] = b"garbage bytes!"
    keys = {"socket": str(socket), "checkpoint": str(cp), "timeout": 5.0, **dict(kube.keys)}
    site.config("[kubernetes]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()))


ON = (("allocation", "on"),)
KUBE_ROWS = [
    P(Kube(), 0, [r"ok  podresources: \S+kubelet.sock: List answered in \d+ ms, 1 pods",
                  r"ok  checkpoint: \S+: readable, 1 device entries",
                  r"ok  resources: allocation counts nvidia.com/gpu, nvidia.com/gpu.shared, "
                  r"nvidia.com/mig-\*"], id="socket answering, checkpoint readable"),
    P(Kube(socket="absent", checkpoint=None), 0,
      [r"ok  podresources: \S+none.sock absent \(auto: not a Kubernetes node",
       r"ok  checkpoint: \S+ absent \(auto"], id="both missing, allocation auto"),
    P(Kube(socket="absent", keys=ON), 10,
      [r"fail  podresources: \S+none.sock absent — fix: point kubernetes.socket"],
      id="socket missing, allocation on"),
    P(Kube(checkpoint=None, keys=ON), 10,
      [r"fail  checkpoint: \S+ absent — fix: point kubernetes.checkpoint"],
      id="checkpoint missing, allocation on"),
    P(Kube(socket="stale"), 10, [r"fail  podresources: \S+stale.sock: .*UNAVAILABLE.* — fix: "
                                 r"every GPU request of a pod is denied"],
      id="socket not answering"),
    P(Kube(socket="garbage"), 10, [r"fail  podresources: .*List answer is not a PodResources "
                                   r"message"], id="socket answers garbage"),
    P(Kube(checkpoint=b'{"Data": {"PodDeviceEntries": [{"PodUID": 3}]}}'), 10,
      [r"fail  checkpoint: .*PodUID: expected a non-empty string"], id="checkpoint malformed"),
    P(Kube(checkpoint=b'{"Data": {"PodDev'), 10, [r"fail  checkpoint: .*not valid JSON"],
      id="checkpoint truncated"),
    P(Kube(checkpoint="dir"), 10, [r"fail  checkpoint: \S+: .*is a directory, not a regular file"],
      id="checkpoint unreadable (a directory)"),
    P(Kube(checkpoint="symlink"), 10, [r"fail  checkpoint: .*cannot open"],
      id="checkpoint unreadable (a symlink, not followed)"),
    P(Kube(pod=None, keys=(("resources", ["example.com/fpga"]),)), 0,
      [r"warn  resources: allocation counts example.com/fpga — fix: add the device plugin's "
       r"resource names"],
      id="no NVIDIA resource name configured"),
    P(Kube(pod=MIG_POD, keys=(("resources", ["nvidia.com/gpu"]),)), 0,
      [r"warn  resources: the kubelet allocates nvidia.com/mig-1g.10gb, which "
       r"kubernetes.resources \(nvidia.com/gpu\) does not count.* — fix: add them"],
      id="the kubelet allocates a resource that is not configured"),
]


@pytest.mark.parametrize(("kube", "code", "expect"), KUBE_ROWS)
def test_doctor_checks_the_kubelet_sources(site: Site, tmp_path: Path, kube: Kube, code: int,
                                           expect: list[str]) -> None:
    with TestKubelet(tmp_path / "kubelet.sock") as kubelet:
        _kube_site(site, tmp_path, kubelet, kube)
        status, lines = site.doctor()
    assert status == code, "\n".join(lines)
    kube_lines = [line for line in lines
                  if line.split()[1].rstrip(":") in ("podresources", "checkpoint", "resources")]
    for pattern in expect:
        assert any(re.match(pattern, line) for line in kube_lines), (pattern, kube_lines)
