"""Allocation-bound grants, judged through a real PodResources v1 gRPC server (the test
kubelet) on a unix socket and real checkpoint files, with the fake node's inventory."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from builders import INVENTORY_JSON, env_values
from fakenvml import GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID
from kubelet import Ctr, TestKubelet, containerd_annotations, crio_annotations, write_checkpoint

from nvhook import config as config_mod
from nvhook.decision.decide import Outcome
from nvhook.decision.evaluate import Evaluation, evaluate
from nvhook.errors import AllocationError, ConfigError
from nvhook.kube import checkpoint, identity
from nvhook.kube.allocation import KubeSettings, lookup, strip_replica
from nvhook.oci.spec import from_document

UID_A = "0f3e4a52-7b1c-4d2e-9a8b-1c2d3e4f5a6b"
UID_B = "7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
VISIBLE = "NVIDIA_VISIBLE_DEVICES"
NVHOOK = Path(sys.executable).with_name("nvhook")


@dataclass
class KubeNode:
    root: Path
    kubelet: TestKubelet

    @property
    def socket(self) -> Path:
        return self.kubelet.socket

    @property
    def checkpoint(self) -> Path:
        return self.root / "kubelet_internal_checkpoint"

    @property
    def inventory(self) -> Path:
        path = self.root / "inventory.json"
        if not path.exists():
            path.write_text(json.dumps(INVENTORY_JSON))
        return path

    def config(self, text: str = "", **kube: Any) -> config_mod.Config:
        settings = {"socket": str(self.socket), "checkpoint": str(self.checkpoint), **kube}
        table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
        return config_mod.parse(f"{text}\n[kubernetes]\n{table}\n".encode(),
                                self.root / "config.toml")

    def judge(self, env: list[str], annotations: dict[str, str], text: str = "",
              cgroups: str | None = None, **kube: Any) -> Evaluation:
        doc: dict[str, Any] = {"ociVersion": "1.0.2", "process": {"env": env},
                               "annotations": annotations}
        if cgroups is not None:
            doc["linux"] = {"cgroupsPath": cgroups}
        spec = from_document(self.root / "config.json", doc)
        return evaluate(spec, self.config(text, **kube), self.inventory)


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeNode]:
    with TestKubelet(tmp_path / "kubelet.sock") as kubelet:
        node = KubeNode(tmp_path, kubelet)
        kubelet.add("team-a", "train", UID_A, Ctr("main", {"nvidia.com/gpu": [GPU0_UUID]}))
        kubelet.add("team-b", "infer", UID_B, Ctr("main", {"nvidia.com/gpu": [GPU1_UUID]}))
        kubelet.add("team-a", "cpu-job", "11111111-2222-4333-8444-555555555555", Ctr("main"))
        yield node


def cd(pod: str = "train", ns: str = "team-a", uid: str = UID_A, ctr: str = "main",
       **kw: Any) -> dict[str, str]:
    return containerd_annotations(ns, pod, uid, ctr, **kw)


def crio(pod: str = "train", ns: str = "team-a", uid: str = UID_A, ctr: str = "main",
         **kw: Any) -> dict[str, str]:
    return crio_annotations(ns, pod, uid, ctr, **kw)


MGMT_RULE = """
[[policy.rules]]
name = "gpu-management"
match.namespace = "gpu-operator|nvidia-device-plugin|dcgm-exporter"
all = "always"
allocation = "exempt"
"""

P = pytest.param
CASES = [
    P([f"{VISIBLE}={GPU0_UUID}"], cd(), "", {}, Outcome.ALLOW, [GPU0_UUID], None,
      id="allocated pod gets exactly its GPU (containerd)"),
    P([f"{VISIBLE}={GPU0_UUID}"], crio(), "", {}, Outcome.ALLOW, [GPU0_UUID], None,
      id="allocated pod gets exactly its GPU (CRI-O)"),
    P([f"{VISIBLE}=all"], cd("cpu-job", uid="11111111-2222-4333-8444-555555555555"), "", {},
      Outcome.REWRITE, [], "void", id="CPU pod on a CUDA image runs with void"),
    P([f"{VISIBLE}={GPU1_UUID}"], cd(), "", {}, Outcome.DENY, [], "is not allocated",
      id="naming another pod's GPU is denied"),
    P([f"{VISIBLE}={GPU0_UUID},{GPU1_UUID}"], cd(), '[policy]\nmode = "rewrite"', {},
      Outcome.REWRITE, [GPU0_UUID], GPU0_UUID, id="rewrite shrinks to the intersection"),
    P([f"{VISIBLE}=all"], cd(), "", {}, Outcome.DENY, [], "every GPU",
      id="all in an allocated unprivileged pod is denied"),
    P([f"{VISIBLE}=all"], cd("cpu-job", uid="11111111-2222-4333-8444-555555555555"), "",
      {"unallocated": "deny"}, Outcome.DENY, [], "allocated no GPU",
      id="unallocated = deny"),
    P([f"{VISIBLE}=all"], cd("agent", ns="gpu-operator", uid=UID_B), MGMT_RULE, {},
      Outcome.REWRITE, [GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID],
      f"{GPU0_UUID},{GPU1_UUID},{MIG_A_UUID},{MIG_B_UUID}",
      id="management-namespace rule admits all (pinned to UUIDs)"),
    P([f"{VISIBLE}=all"], cd(sandbox=True), "", {}, Outcome.REWRITE, [], "void",
      id="sandbox container is skipped, its request voided"),
    P([f"{VISIBLE}={GPU0_UUID}"], cd(), "", {"allocation": "off"}, Outcome.ALLOW,
      [GPU0_UUID], None, id="allocation off: static policy only"),
    P([f"{VISIBLE}={GPU1_UUID}"], {}, "", {}, Outcome.ALLOW, [GPU1_UUID], None,
      id="no CRI identity: not bound"),
    P([f"{VISIBLE}={GPU0_UUID}"], {**cd(), "io.kubernetes.pod.name": "infer"}, "", {},
      Outcome.DENY, [], "disagree on pod", id="containerd and CRI-O keys disagree"),
    P([f"{VISIBLE}={GPU0_UUID}"], {k: v for k, v in cd().items()
                                   if not k.endswith("container-name")}, "", {},
      Outcome.DENY, [], "identity incomplete", id="identity without container name"),
    P([f"{VISIBLE}={GPU0_UUID}"], cd(), "", {"sources": ["checkpoint"], "allocation": "on"},
      Outcome.DENY, [], "does not exist", id="checkpoint source missing fails closed"),
]


@pytest.mark.parametrize(("env", "annotations", "text", "kube_keys", "outcome", "granted",
                          "expect"), CASES)
def test_allocation_decisions(kube: KubeNode, env: list[str], annotations: dict[str, str],
                              text: str, kube_keys: dict[str, Any], outcome: Outcome,
                              granted: list[str], expect: str | None) -> None:
    e = kube.judge(env, annotations, text, **kube_keys)
    d = e.decision
    assert d.outcome is outcome, d.reasons
    assert list(d.granted) == granted
    if outcome is Outcome.DENY:
        assert expect in d.denial
    elif expect is not None:
        assert env_values(d.env, VISIBLE) == [expect]


@pytest.mark.parametrize(("resource", "ids", "env", "granted"), [
    P("nvidia.com/gpu", ["0"], f"{VISIBLE}={GPU0_UUID}", [GPU0_UUID], id="index strategy"),
    P("nvidia.com/gpu", ["1"], f"{VISIBLE}=1", [GPU1_UUID], id="index strategy, index env"),
    P("nvidia.com/gpu.shared", [f"{GPU0_UUID}::1", f"{GPU0_UUID}::3"],
      f"{VISIBLE}={GPU0_UUID}", [GPU0_UUID], id="time-slicing replicas"),
    P("nvidia.com/mig-1g.10gb", [MIG_A_UUID], f"{VISIBLE}={MIG_A_UUID}", [MIG_A_UUID],
      id="MIG resource"),
    P("nvidia.com/gpu", [GPU1_UUID], f"{VISIBLE}={MIG_B_UUID}", [MIG_B_UUID],
      id="MIG device of an allocated GPU"),
])
def test_device_id_shapes(kube: KubeNode, resource: str, ids: list[str], env: str,
                          granted: list[str]) -> None:
    kube.kubelet.add("ml", "shaped", UID_B, Ctr("c", {resource: ids}))
    d = kube.judge([env], cd("shaped", ns="ml", uid=UID_B, ctr="c")).decision
    # An index is pinned to its UUID (a rewrite); a UUID passes as it is.
    assert d.outcome in (Outcome.ALLOW, Outcome.REWRITE), d.reasons
    assert list(d.granted) == granted


@pytest.mark.parametrize(("resource", "ids", "env", "problem"), [
    P("nvidia.com/mig-1g.10gb", [MIG_A_UUID], f"{VISIBLE}={GPU1_UUID}", "not allocated",
      id="MIG allocation is not its parent GPU"),
    P("nvidia.com/gpu", ["GPU-00000000-0000-4000-8000-000000000000"], f"{VISIBLE}={GPU0_UUID}",
      "not a live device", id="allocated id not live"),
    P("example.com/fpga", ["fpga0"], f"{VISIBLE}={GPU0_UUID}", "void",
      id="other resource names do not count"),
])
def test_allocation_refusals(kube: KubeNode, resource: str, ids: list[str], env: str,
                             problem: str) -> None:
    kube.kubelet.add("ml", "shaped", UID_B, Ctr("c", {resource: ids}))
    d = kube.judge([env], cd("shaped", ns="ml", uid=UID_B, ctr="c")).decision
    if problem == "void":
        assert (d.outcome, env_values(d.env, VISIBLE)) == (Outcome.REWRITE, ["void"])
    else:
        assert d.outcome is Outcome.DENY
        assert problem in d.denial


@pytest.mark.parametrize(("env", "outcome"), [
    P(f"{VISIBLE}={GPU1_UUID}", Outcome.DENY, id="privileged pod naming an unallocated GPU"),
    P(f"{VISIBLE}=all", Outcome.DENY, id="privileged pod asking for all"),
    P(f"{VISIBLE}={GPU0_UUID}", Outcome.ALLOW, id="privileged pod, its own GPU"),
])
def test_privileged_pods_are_bound_too(kube: KubeNode, env: str, outcome: Outcome) -> None:
    doc = {"ociVersion": "1.0.2", "process": {"env": [env], "capabilities": {
        "bounding": ["CAP_SYS_ADMIN"]}}, "annotations": cd()}
    spec = from_document(kube.root / "config.json", doc)
    d = evaluate(spec, kube.config(), kube.inventory).decision
    assert d.outcome is outcome, d.reasons
    if outcome is Outcome.DENY:
        assert "not allocated" in d.denial


def test_get_unimplemented_falls_back_to_list(kube: KubeNode) -> None:
    kube.kubelet.get_served = False
    e = kube.judge([f"{VISIBLE}={GPU0_UUID}"], cd())
    assert e.decision.outcome is Outcome.ALLOW
    assert (kube.kubelet.calls["Get"], kube.kubelet.calls["List"]) == (1, 1)
    assert e.allocation_json()["allocated"] == [GPU0_UUID]  # type: ignore[index]


def test_get_is_used_where_served(kube: KubeNode) -> None:
    kube.judge([f"{VISIBLE}={GPU0_UUID}"], cd())
    assert (kube.kubelet.calls["Get"], kube.kubelet.calls["List"]) == (1, 0)


def test_unknown_pod_falls_to_checkpoint_then_void(kube: KubeNode) -> None:
    write_checkpoint(kube.checkpoint, [])
    d = kube.judge([f"{VISIBLE}={GPU0_UUID}"], cd("ghost", uid=UID_B)).decision
    assert (d.outcome, env_values(d.env, VISIBLE)) == (Outcome.REWRITE, ["void"])


@pytest.mark.parametrize("numa_map", [P(True, id="DeviceIDs by NUMA node"),
                                      P(False, id="DeviceIDs plain list")])
def test_checkpoint_source(kube: KubeNode, numa_map: bool) -> None:
    write_checkpoint(kube.checkpoint, kube.kubelet.pods, numa_map)
    ok = kube.judge([f"{VISIBLE}={GPU0_UUID}"], crio(), sources=["checkpoint"])
    assert ok.decision.outcome is Outcome.ALLOW
    assert ok.allocation.source == "checkpoint"  # type: ignore[union-attr]
    other = kube.judge([f"{VISIBLE}={GPU1_UUID}"], crio(), sources=["checkpoint"])
    assert other.decision.outcome is Outcome.DENY


def test_unreachable_kubelet_fails_closed(kube: KubeNode, tmp_path: Path) -> None:
    stale = tmp_path / "dead.sock"
    stale.touch()  # a socket path nobody listens on
    d = kube.judge([f"{VISIBLE}={GPU0_UUID}"], cd(), timeout=0.5, socket=str(stale)).decision
    assert d.outcome is Outcome.DENY
    assert "kubelet" in d.denial


def test_socket_missing_under_on_fails_closed(kube: KubeNode, tmp_path: Path) -> None:
    none = str(tmp_path / "none.sock")
    d = kube.judge([f"{VISIBLE}={GPU0_UUID}"], cd(), allocation="on", socket=none).decision
    assert d.outcome is Outcome.DENY
    auto = kube.judge([f"{VISIBLE}={GPU0_UUID}"], cd(), socket=none).decision
    assert auto.outcome is Outcome.ALLOW  # auto: no kubelet on this node, not bound


@pytest.mark.parametrize(("cgroups", "outcome"), [
    P(f"/kubepods/besteffort/pod{UID_A}/abc", Outcome.ALLOW, id="cgroupfs UID matches"),
    P(f"kubepods-besteffort-pod{UID_A.replace('-', '_')}.slice:cri-containerd:abc",
      Outcome.ALLOW, id="systemd UID matches"),
    P(f"/kubepods/besteffort/pod{UID_B}/abc", Outcome.DENY, id="cgroupfs UID mismatch"),
    P(f"kubepods-pod{UID_B.replace('-', '_')}.slice:crio:abc", Outcome.DENY,
      id="systemd UID mismatch"),
])
def test_cgroup_uid_cross_check(kube: KubeNode, cgroups: str, outcome: Outcome) -> None:
    d = kube.judge([f"{VISIBLE}={GPU0_UUID}"], cd(), cgroups=cgroups).decision
    assert d.outcome is outcome, d.reasons


def test_rate_limited_burst_all_decided(kube: KubeNode) -> None:
    """50 containers at once against burst 10 / 100 QPS: every one decided correctly."""
    kube.kubelet.rate_limit = (10, 100.0)
    for n in range(50):
        kube.kubelet.add("burst", f"p{n}", UID_B,
                         Ctr("c", {"nvidia.com/gpu": [GPU0_UUID if n % 2 else GPU1_UUID]}))
    results: dict[int, Outcome] = {}

    def one(n: int) -> None:
        e = kube.judge([f"{VISIBLE}={GPU0_UUID}"], cd(f"p{n}", ns="burst", uid=UID_B,
                                                       ctr="c"), timeout=10)
        results[n] = e.decision.outcome

    threads = [threading.Thread(target=one, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: Outcome.ALLOW if n % 2 else Outcome.DENY for n in range(50)}
    assert kube.kubelet.calls["rejected"] > 0  # the limit was really hit, and retried past


def test_rate_limit_past_timeout_fails_closed(kube: KubeNode) -> None:
    kube.kubelet.rate_limit = (0, 0.0)  # never a token: every call rejected
    d = kube.judge([f"{VISIBLE}={GPU0_UUID}"], cd(), timeout=0.2).decision
    assert d.outcome is Outcome.DENY
    assert "rate limited" in d.denial


@pytest.mark.parametrize(("text", "key"), [
    P('allocation = "maybe"', "kubernetes.allocation", id="allocation"),
    P('socket = "relative.sock"', "kubernetes.socket", id="socket"),
    P('checkpoint = 3', "kubernetes.checkpoint", id="checkpoint"),
    P('sources = ["etcd"]', "kubernetes.sources", id="sources"),
    P('resources = []', "kubernetes.resources", id="resources"),
    P('timeout = 0', "kubernetes.timeout", id="timeout"),
    P('unallocated = "maybe"', "kubernetes.unallocated", id="unallocated"),
    P('colour = 1', "kubernetes.colour", id="unknown key"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_mod.parse(f"[kubernetes]\n{text}\n".encode(), tmp_path / "c.toml")
    assert f": {key}: " in str(exc.value)


@pytest.mark.parametrize(("annotations", "field", "value"), [
    P(containerd_annotations("ns", "p", UID_A, "c"), "runtime", "containerd", id="containerd"),
    P(crio_annotations("ns", "p", UID_A, "c"), "runtime", "cri-o", id="CRI-O"),
    P(containerd_annotations("ns", "p", UID_A, "c", sandbox=True), "sandbox", True,
      id="containerd sandbox"),
    P(crio_annotations("ns", "p", UID_A, "c", sandbox=True), "sandbox", True, id="CRI-O sandbox"),
    P({"io.kubernetes.pod.namespace": "ns"}, "container", None, id="partial"),
])
def test_identity_normalized(annotations: dict[str, str], field: str, value: object) -> None:
    ident = identity.from_annotations(annotations)
    assert ident is not None
    assert getattr(ident, field) == value


@pytest.mark.parametrize(("rule_key", "annotations"), [
    P("io.kubernetes.pod.namespace", containerd_annotations("batch", "p", UID_A, "c"),
      id="CRI-O key matches a containerd pod"),
    P("io.kubernetes.cri.sandbox-namespace", crio_annotations("batch", "p", UID_A, "c"),
      id="containerd key matches a CRI-O pod"),
    P("namespace", crio_annotations("batch", "p", UID_A, "c"), id="identity field"),
])
def test_rule_keyed_on_identity_matches_either_runtime(tmp_path: Path, rule_key: str,
                                                       annotations: dict[str, str]) -> None:
    match = ('match.namespace = "batch"' if rule_key == "namespace"
             else f'match.annotations = {{ "{rule_key}" = "batch" }}')
    config = config_mod.parse(f'[[policy.rules]]\nname = "b"\n{match}\nmode = "audit"\n'.encode(),
                              tmp_path / "c.toml")
    ident = identity.from_annotations(annotations)
    assert config.policy_for(annotations, ident).rule == "b"
    assert config.policy_for({}, None).rule is None


@pytest.mark.parametrize(("data", "problem"), [
    P(b"{", "not valid JSON", id="not JSON"),
    P(b'{"Data": {"PodDeviceEntries": {}}}', "expected a list", id="entries not a list"),
    P(b'{"Data": {"PodDeviceEntries": [{"PodUID": "u", "ContainerName": "c"}]}}',
      "ResourceName", id="entry without resource"),
    P(b'{"Data": {"PodDeviceEntries": [{"PodUID": "u", "ContainerName": "c", '
      b'"ResourceName": "r", "DeviceIDs": 3}]}}', "DeviceIDs", id="DeviceIDs a number"),
])
def test_malformed_checkpoint(data: bytes, problem: str) -> None:
    with pytest.raises(AllocationError) as exc:
        checkpoint.parse(data)
    assert problem in str(exc.value)


def test_oversized_checkpoint_refused(tmp_path: Path) -> None:
    big = tmp_path / "cp"
    with open(big, "wb") as f:
        f.truncate(checkpoint.MAX_BYTES + 1)
    with pytest.raises(AllocationError, match="larger than"):
        checkpoint.read(big)


@pytest.mark.parametrize(("raw", "stripped"), [
    P(f"{GPU0_UUID}::0", GPU0_UUID, id="replica 0"),
    P(f"{GPU0_UUID}::12", GPU0_UUID, id="replica 12"),
    P(GPU0_UUID, GPU0_UUID, id="no suffix"),
    P("3", "3", id="index"),
    P("::3", "::3", id="suffix only is kept as is"),
])
def test_strip_replica(raw: str, stripped: str) -> None:
    assert strip_replica(raw) == stripped


def test_lookup_needs_complete_identity() -> None:
    ident = identity.from_annotations({"io.kubernetes.pod.name": "p"})
    assert ident is not None
    with pytest.raises(AllocationError, match="incomplete"):
        lookup(KubeSettings(), ident)


def _cli(kube: KubeNode, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = kube.root / "cli.toml"
    cfg.write_text(f'[kubernetes]\nsocket = "{kube.socket}"\n'
                   f'checkpoint = "{kube.checkpoint}"\n[audit]\npath = ""\n')
    return subprocess.run([str(NVHOOK), "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_explain_pod_shows_allocation_and_outcome(kube: KubeNode) -> None:
    r = _cli(kube, "explain", "--pod", "team-a/train", "--inventory", str(kube.inventory),
             "--json")
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    (c,) = view["containers"]
    assert (c["container"], c["decision"], c["granted"]) == ("main", "allow", [GPU0_UUID])
    cpu = json.loads(_cli(kube, "explain", "--pod", "team-a/cpu-job", "--container", "main",
                          "--inventory", str(kube.inventory), "--json").stdout)
    assert cpu["containers"][0]["decision"] == "rewrite"  # void
    missing = _cli(kube, "explain", "--pod", "team-a/nope")
    assert missing.returncode == 3 and missing.stderr.startswith("nvhook: ")
    assert "Traceback" not in missing.stderr


def test_explain_json_has_allocation_object(kube: KubeNode) -> None:
    bundle = kube.root / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(
        {"ociVersion": "1.0.2", "process": {"env": [f"{VISIBLE}={GPU1_UUID}"]},
         "annotations": cd()}))
    r = _cli(kube, "explain", "--bundle", str(bundle), "--inventory", str(kube.inventory),
             "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 3
    assert doc["allocation"]["source"] == "podresources"
    assert doc["allocation"]["allocated"] == [GPU0_UUID]
    assert doc["allocation"]["identity"]["pod"] == "train"


@pytest.mark.parametrize(("setup", "level"), [
    P("served", "ok", id="socket answering"),
    P("stale", "fail", id="socket not answering"),
])
def test_doctor_checks_the_kubelet(kube: KubeNode, tmp_path: Path, setup: str,
                                   level: str) -> None:
    from nvhook.ops import doctor

    socket = kube.socket
    if setup == "stale":
        socket = tmp_path / "stale.sock"
        socket.touch()
    config = kube.config(socket=str(socket), timeout=0.5)
    checks = {c.name: c for c in doctor.kubernetes_checks(config)}
    assert checks["podresources"].level.value == level
    assert checks["resources"].level.value == "ok"
