"""Allocation-bound grants end to end: real runc and Podman containers whose prestart hook is
nvhook, a test kubelet (a real gRPC PodResources v1 server on a unix socket), the fake NVML,
and bundles carrying containerd's or CRI-O's pod annotations (Podman: ``--annotation``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fakenvml
import pytest
from kubelet import Ctr, TestKubelet, containerd_annotations, crio_annotations

from .harness import BundleFactory, Podman, Recorder, new_container_id, run_runc

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NVHOOK = Path(sys.executable).with_name("nvhook")
MARKER = "container-ran"
UID_A = "0f3e4a52-7b1c-4d2e-9a8b-1c2d3e4f5a6b"
UID_B = "7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
UID_C = "11111111-2222-4333-8444-555555555555"
GPU0, GPU1, MIG_A = fakenvml.GPU0_UUID, fakenvml.GPU1_UUID, fakenvml.MIG_A_UUID
VISIBLE = "NVIDIA_VISIBLE_DEVICES"
MGMT_RULE = """
[[policy.rules]]
name = "gpu-management"
match.namespace = "gpu-operator|nvidia-device-plugin|dcgm-exporter"
all = "always"
allocation = "exempt"
"""


DRA_KIND = "k8s.gpu.nvidia.com/claim"
DRA_OWN, DRA_OTHER = f"{DRA_KIND}=c1-gpu-0", f"{DRA_KIND}=c2-gpu-1"


def dra_spec(claim: str, minor: int) -> dict[str, object]:
    """A per-claim CDI spec as NVIDIA's DRA driver writes it to /var/run/cdi."""
    return {"cdiVersion": "0.6.0", "kind": DRA_KIND, "devices": [{
        "name": f"{claim}-gpu-{minor}", "containerEdits": {"deviceNodes": [
            {"path": f"/dev/nvidia{minor}", "type": "c", "major": 195, "minor": minor}]}}]}


@dataclass(frozen=True)
class Case:
    env: str
    annotations: dict[str, str]
    runs: bool
    delegate_sees: str | None = None  # NVIDIA_VISIBLE_DEVICES as the delegate read it
    denial: str = ""
    policy: str = ""
    kube: dict[str, object] = field(default_factory=dict)
    cgroup_uid: str | None = None
    # GPU minors of linux.devices, as containerd writes them after applying a claim's CDI names
    node_minors: tuple[int, ...] = ()


def cd(pod: str, ns: str, uid: str, ctr: str = "main", **kw: bool) -> dict[str, str]:
    return containerd_annotations(ns, pod, uid, ctr, **kw)


def crio(pod: str, ns: str, uid: str, ctr: str = "main", **kw: bool) -> dict[str, str]:
    return crio_annotations(ns, pod, uid, ctr, **kw)


P = pytest.param
CASES = [
    P(Case(f"{VISIBLE}={GPU0}", cd("train", "team-a", UID_A), True, GPU0),
      id="containerd: allocated pod gets exactly its GPU"),
    P(Case(f"{VISIBLE}={GPU0}", crio("train", "team-a", UID_A), True, GPU0),
      id="CRI-O: allocated pod gets exactly its GPU"),
    P(Case(f"{VISIBLE}=all", crio("cpu-job", "team-a", UID_C), True, "void"),
      id="CPU pod on a CUDA image runs with void"),
    P(Case(f"{VISIBLE}={GPU1}", cd("train", "team-a", UID_A), False,
           denial="is not allocated to this container"),
      id="naming another pod's GPU is denied"),
    P(Case(f"{VISIBLE}={GPU1}", cd("indexed", "team-b", UID_B), True, GPU1),
      id="index id strategy"),
    P(Case(f"{VISIBLE}={GPU0}", cd("shared", "team-b", UID_B), True, GPU0),
      id="time-slicing replicas"),
    P(Case(f"{VISIBLE}={MIG_A}", crio("mig", "team-b", UID_B), True, MIG_A),
      id="MIG resource"),
    P(Case(f"{VISIBLE}=all", cd("train", "team-a", UID_A, sandbox=True), True, "void"),
      id="sandbox container is skipped (void)"),
    P(Case(f"{VISIBLE}={GPU0}", cd("train", "team-a", UID_A), False, denial="kubelet",
           kube={"socket": "/nonexistent/kubelet.sock", "allocation": "on"}),
      id="unreachable kubelet fails closed"),
    P(Case(f"{VISIBLE}={GPU0}", cd("train", "team-a", UID_A), False,
           denial="not the UID in the cgroup path", cgroup_uid=UID_B),
      id="cgroup-path UID mismatch is denied"),
    P(Case(f"{VISIBLE}=all", cd("validator", "gpu-operator", UID_B), True,
           f"{GPU0},{GPU1},{MIG_A},{fakenvml.MIG_B_UUID}", policy=MGMT_RULE),
      id="management-namespace rule admits all"),
    P(Case(f"{VISIBLE}=none", {**cd("dra", "ml", UID_B), "cdi.k8s.io/claim": DRA_OWN}, True,
           "none"), id="DRA: its own claim's CDI name"),
    P(Case(f"{VISIBLE}=none", {**cd("dra", "ml", UID_B), "cdi.k8s.io/claim": DRA_OTHER},
           False, denial="belongs to another DRA claim"), id="DRA: another claim's CDI name"),
    P(Case(f"{VISIBLE}=none", cd("dra", "ml", UID_B), True, "none", node_minors=(0,)),
      id="DRA: the claim's GPU node runs"),
    P(Case(f"{VISIBLE}=none", cd("dra", "ml", UID_B), False, node_minors=(1,),
           denial="is not allocated to this container"),
      id="DRA: a GPU node outside the claim is denied"),
    P(Case(f"{VISIBLE}={GPU0}", cd("dra-gone", "ml", UID_B), False,
           denial="is in no readable CDI spec"), id="DRA: a claim without its CDI spec"),
]


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[TestKubelet]:
    with TestKubelet(tmp_path / "kubelet.sock") as k:
        k.add("team-a", "train", UID_A, Ctr("main", {"nvidia.com/gpu": [GPU0]}))
        k.add("team-a", "cpu-job", UID_C, Ctr("main"))
        k.add("team-b", "indexed", UID_B, Ctr("main", {"nvidia.com/gpu": ["1"]}))
        k.add("team-b", "shared", UID_B,
              Ctr("main", {"nvidia.com/gpu.shared": [f"{GPU0}::0", f"{GPU0}::2"]}))
        k.add("team-b", "mig", UID_B, Ctr("main", {"nvidia.com/mig-1g.10gb": [MIG_A]}))
        k.add("gpu-operator", "validator", UID_B, Ctr("main"))
        k.add("ml", "dra", UID_B, Ctr("main", claims={"gpu": [DRA_OWN]}))
        k.add("ml", "dra-gone", UID_B, Ctr("main", claims={"gpu": [f"{DRA_KIND}=c9-gpu-0"]}))
        yield k


def node_config(tmp_path: Path, recorder: Recorder, kubelet: TestKubelet, case: Case) -> Path:
    cdi = tmp_path / "run-cdi"  # the DRA driver's transient per-claim specs
    cdi.mkdir()
    for claim, minor in (("c1", 0), ("c2", 1)):
        (cdi / f"k8s.gpu.nvidia.com-claim_{claim}.json").write_text(
            json.dumps(dra_spec(claim, minor)))
    kube = {"socket": str(kubelet.socket), "checkpoint": str(tmp_path / "no-checkpoint"),
            "cdi-spec-dirs": [str(cdi)], **case.kube}
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in kube.items())
    path = tmp_path / "nvhook.toml"
    path.write_text(
        f"version = 1\n{case.policy}\n"
        f'[delegate]\npath = "{recorder.path}"\nargs = ["prestart"]\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
        f"[kubernetes]\n{table}\n"
    )
    return path


def hook_entry(config: Path, fake_nvml: Path) -> dict:
    hook = json.loads((REPO / "hooks.d" / "nvrw-hook.json").read_text())["hook"]
    hook["path"] = str(NVHOOK)
    hook["args"] = ["nvhook", "--config", str(config), "prestart"]
    hook["env"] = [*hook["env"], f"LD_LIBRARY_PATH={fake_nvml}"]
    return hook


def check(case: Case, returncode: int, output: str, recorder: Recorder) -> None:
    record = recorder.read()
    if not case.runs:
        assert returncode != 0
        assert MARKER not in output
        assert "nvhook: denied: " in output and case.denial in output, output
        assert record is None
        return
    assert returncode == 0, output
    assert MARKER in output
    assert record is not None, "the delegate was not called"
    assert record.config_env_map[VISIBLE] == case.delegate_sees


def _rmdir_cgroups(name: str) -> None:
    """runc leaves the parents of a container's cgroupfs path behind: remove ours."""
    for controller in Path("/sys/fs/cgroup").iterdir():
        top = controller / name
        if top.is_dir() and not top.is_symlink():
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                os.rmdir(d)
            os.rmdir(top)


@pytest.mark.parametrize("case", CASES)
def test_runc(case: Case, kubelet: TestKubelet, bundle_factory: BundleFactory,
              recorder: Recorder, fake_nvml: Path, tmp_path: Path) -> None:
    config = node_config(tmp_path, recorder, kubelet, case)
    bundle = bundle_factory(args=["/bin/echo", MARKER], env=[case.env],
                            hooks={"prestart": [hook_entry(config, fake_nvml)]},
                            annotations=case.annotations)
    cid = new_container_id()
    top = f"nvhook-e2e-{cid}"
    if case.node_minors:
        doc = json.loads((bundle / "config.json").read_text())
        doc.setdefault("linux", {})["devices"] = [
            {"path": f"/dev/nvidia{m}", "type": "c", "major": 195, "minor": m,
             "fileMode": 0o666, "uid": 0, "gid": 0} for m in case.node_minors]
        (bundle / "config.json").write_text(json.dumps(doc))
    if case.cgroup_uid is not None:
        doc = json.loads((bundle / "config.json").read_text())
        # The kubelet's cgroupfs layout, under a test-owned top so it can be removed.
        doc.setdefault("linux", {})["cgroupsPath"] = f"/{top}/pod{case.cgroup_uid}/{cid}"
        (bundle / "config.json").write_text(json.dumps(doc))
    try:
        result = run_runc(bundle, cid)
    finally:
        _rmdir_cgroups(top)
    check(case, result.returncode, result.stdout + result.stderr, recorder)
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["namespace"] == (case.annotations.get("io.kubernetes.cri.sandbox-namespace")
                                      or case.annotations.get("io.kubernetes.pod.namespace"))
    if "socket" not in case.kube:
        assert audit[-1]["allocation"] is not None


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0].cgroup_uid is None][:4])
def test_podman(case: Case, kubelet: TestKubelet, podman: Podman, recorder: Recorder,
                fake_nvml: Path, tmp_path: Path) -> None:
    config = node_config(tmp_path, recorder, kubelet, case)
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir()
    doc = json.loads((REPO / "hooks.d" / "nvrw-hook.json").read_text())
    doc["hook"] = hook_entry(config, fake_nvml)
    (hooks_dir / "nvrw-hook.json").write_text(json.dumps(doc))
    result = podman.run(hooks_dir, ["/bin/echo", MARKER], env=[case.env],
                        annotations=case.annotations)
    check(case, result.returncode, result.stdout + result.stderr, recorder)
