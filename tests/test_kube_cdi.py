"""DRA: a container's claims come from the kubelet as CDI names, resolved through real CDI
spec files (JSON and YAML, in temp dirs) to device nodes; what cannot be resolved fails
closed. The kubelet is the real gRPC test kubelet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakenvml import GPU0_UUID, GPU1_UUID
from kubelet import Ctr, TestKubelet, containerd_annotations
from test_kube import KubeNode

from nvhook.decision.decide import Outcome
from nvhook.decision.evaluate import evaluate
from nvhook.errors import AllocationError
from nvhook.kube import cdi
from nvhook.kube.allocation import Allocation
from nvhook.oci.spec import from_document

P = pytest.param
UID = "3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b9a"
KIND = "k8s.gpu.nvidia.com/claim"
VISIBLE = "NVIDIA_VISIBLE_DEVICES"


def claim_spec(uid: str, *minors: int, **extra: Any) -> dict[str, Any]:
    """A per-claim spec as NVIDIA's DRA driver writes it: one device per GPU, nvidiactl
    as a spec-level edit."""
    return {"cdiVersion": "0.6.0", "kind": KIND,
            "devices": [{"name": f"{uid}-gpu-{m}", "containerEdits": {
                "env": [f"GPU_DEVICE_{m}_RESOURCE_CLAIM={uid}"],
                "deviceNodes": [{"path": f"/dev/nvidia{m}", "type": "c", "major": 195,
                                 "minor": m}]}} for m in minors],
            "containerEdits": {"deviceNodes": [{"path": "/dev/nvidiactl", "type": "c",
                                                "major": 195, "minor": 255}]},
            **extra}


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    etc, run = tmp_path / "etc-cdi", tmp_path / "run-cdi"
    etc.mkdir()
    run.mkdir()
    return etc, run


def write(path: Path, doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc) if path.suffix == ".yaml" else json.dumps(doc))
    return path


# -- the spec reader -----------------------------------------------------------------------

GOOD = claim_spec("c1", 0)
BAD_SPECS = [
    P([], "expected an object", id="not an object"),
    P({**GOOD, "cdiVersion": 6}, "cdiVersion: expected a string", id="cdiVersion a number"),
    P({**GOOD, "kind": "nvidia.com"}, "kind: expected vendor/class", id="kind without class"),
    P({**GOOD, "kind": 3}, "kind: expected vendor/class", id="kind a number"),
    P({**GOOD, "devices": []}, "devices: expected a non-empty list", id="no devices"),
    P({**GOOD, "devices": {}}, "devices: expected a non-empty list", id="devices an object"),
    P({**GOOD, "devices": ["gpu0"]}, "devices[0]: expected an object", id="device a string"),
    P({**GOOD, "devices": [{"name": 0}]}, "devices[0].name", id="device name a number"),
    P({**GOOD, "devices": [{"name": "a=b"}]}, "devices[0].name", id="device name with ="),
    P({**GOOD, "devices": [{"name": "g"}, {"name": "g"}]}, "defined twice",
      id="device defined twice"),
    P({**GOOD, "containerEdits": []}, "containerEdits: expected an object",
      id="containerEdits a list"),
    P({**GOOD, "containerEdits": {"deviceNodes": {}}}, "deviceNodes: expected a list",
      id="deviceNodes an object"),
    P({**GOOD, "containerEdits": {"deviceNodes": [{"type": "c"}]}}, "path: expected a path",
      id="node without path"),
    P({**GOOD, "containerEdits": {"deviceNodes": [{"path": "/dev/x", "type": "x"}]}},
      "type: expected c, b, u or p", id="node type unknown"),
    P({**GOOD, "containerEdits": {"deviceNodes": [{"path": "/dev/x", "major": "195"}]}},
      "major: expected a number", id="major a string"),
    P({**GOOD, "containerEdits": {"deviceNodes": [{"path": "/dev/x", "minor": -1}]}},
      "minor: expected a number", id="minor negative"),
    P({**GOOD, "containerEdits": {"deviceNodes": [{"path": "/dev/x", "minor": True}]}},
      "minor: expected a number", id="minor a boolean"),
    P({**GOOD, "containerEdits": {"deviceNodes": [{"path": "/dev/x", "hostPath": 1}]}},
      "hostPath: expected a path", id="hostPath a number"),
    P({**GOOD, "containerEdits": {"deviceNodes": [{"path": "/dev/x", "Major": 195}]}},
      'Go\'s JSON reads it as "major"', id="a field in another case: Go reads it, Python not"),
    P({**GOOD, "containerEdits": {"DeviceNodes": [{"path": "/dev/x"}]}},
      'Go\'s JSON reads it as "deviceNodes"', id="deviceNodes folded"),
    P({**GOOD, "containerEdits": {"deviceNodes": [{"path": "/dev/x", "minor": 0,
                                                    "MINOR": 1}]}},
      "MINOR", id="two keys Go folds together"),  # named either way, by key order
]


@pytest.mark.parametrize("suffix", [P(".json", id="JSON"), P(".yaml", id="YAML")])
@pytest.mark.parametrize(("doc", "problem"), BAD_SPECS)
def test_malformed_spec_is_one_line(tmp_path: Path, doc: object, problem: str,
                                    suffix: str) -> None:
    path = write(tmp_path / f"spec{suffix}", doc)
    with pytest.raises(AllocationError) as exc:
        cdi.parse(path.read_bytes(), path)
    assert problem in str(exc.value) and "\n" not in str(exc.value)
    assert str(exc.value).startswith(f"CDI spec {path}: ")


@pytest.mark.parametrize(("name", "data"), [
    P("s.json", b'{"cdiVersion": "0.6.0", "kind": "a/b", "dev', id="truncated JSON"),
    P("s.yaml", b"cdiVersion: [0.6.0\nkind: a/b\n", id="broken YAML"),
    P("s.yaml", b"!!python/object:os.system {}\n", id="YAML that would run code"),
])
def test_undecodable_spec(tmp_path: Path, name: str, data: bytes) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(AllocationError, match=r"not valid (JSON|YAML)") as exc:
        cdi.parse(data, tmp_path / name)
    assert "\n" not in str(exc.value)


def test_a_device_has_its_own_and_the_spec_level_nodes(dirs: tuple[Path, Path]) -> None:
    write(dirs[1] / "claim.yaml", claim_spec("c1", 0, 1))
    got = cdi.load(dirs).resolve(f"{KIND}=c1-gpu-1")
    assert got.nodes == (("/dev/nvidia1", 195, 1), ("/dev/nvidiactl", 195, 255))
    assert got.spec == dirs[1] / "claim.yaml"


def test_numbers_left_out_are_the_host_nodes(dirs: tuple[Path, Path]) -> None:
    # /dev/null is a real char node (1:3): CDI fills missing numbers from the host path.
    write(dirs[0] / "s.json", {"cdiVersion": "0.6.0", "kind": "example.com/dev", "devices": [
        {"name": "n", "containerEdits": {"deviceNodes": [{"path": "/dev/x",
                                                          "hostPath": "/dev/null"}]}},
        {"name": "gone", "containerEdits": {"deviceNodes": [{"path": "/dev/nope-nvhook"}]}}]})
    reg = cdi.load(dirs)
    assert reg.resolve("example.com/dev=n").nodes == (("/dev/x", 1, 3),)
    with pytest.raises(AllocationError, match="cannot be read"):
        reg.resolve("example.com/dev=gone")


def test_later_directory_wins_and_one_directory_conflicts(dirs: tuple[Path, Path]) -> None:
    etc, run = dirs
    write(etc / "a.json", claim_spec("c1", 0))
    write(run / "b.json", claim_spec("c1", 1) | {"devices": [
        {"name": "c1-gpu-0", "containerEdits": {"deviceNodes": [
            {"path": "/dev/nvidia1", "type": "c", "major": 195, "minor": 1}]}}]})
    assert cdi.load(dirs).resolve(f"{KIND}=c1-gpu-0").nodes[0] == ("/dev/nvidia1", 195, 1)
    write(run / "c.json", claim_spec("c1", 0))
    with pytest.raises(AllocationError, match="defined in both"):
        cdi.load(dirs).resolve(f"{KIND}=c1-gpu-0")


@pytest.mark.parametrize(("setup", "problem"), [
    P(lambda d: None, "is in no readable CDI spec", id="name in no spec"),
    P(lambda d: (d / "x.json").mkdir(), "unreadable: ", id="a spec that is a directory"),
    P(lambda d: (d / "x.json").write_text("{"), "not valid JSON", id="a spec not JSON"),
    P(lambda d: (d / "x.json").write_bytes(b" " * (cdi.MAX_SPEC_BYTES + 1)), "larger than",
      id="a spec too large"),
])
def test_unresolvable_names_name_why(dirs: tuple[Path, Path], setup: Any,
                                     problem: str) -> None:
    setup(dirs[1])
    with pytest.raises(AllocationError) as exc:
        cdi.load(dirs).resolve(f"{KIND}=c9-gpu-0")
    assert problem in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("name", [P("nvidia.com/gpu", id="no ="), P("gpu=0", id="no class"),
                                  P("a/b/c=0", id="two slashes"), P("a/b=", id="no device")])
def test_unqualified_name_refused(name: str) -> None:
    with pytest.raises(AllocationError, match="not a qualified"):
        cdi.Registry((), ()).resolve(name)


# -- through the kubelet --------------------------------------------------------------------


@pytest.fixture
def kube(tmp_path: Path, dirs: tuple[Path, Path]) -> Iterator[KubeNode]:
    with TestKubelet(tmp_path / "kubelet.sock") as kubelet:
        kubelet.add("ml", "dra", UID, Ctr("main", claims={"gpu-claim": [f"{KIND}=c1-gpu-0"]}),
                    Ctr("side", claims={"other": [f"{KIND}=c2-gpu-1"]}))
        yield KubeNode(tmp_path, kubelet)


def judge(kube: KubeNode, dirs: tuple[Path, Path], env: str = f"{VISIBLE}=none",
          annotations: dict[str, str] | None = None, ctr: str = "main") -> Any:
    return kube.judge([env], {**containerd_annotations("ml", "dra", UID, ctr),
                              **(annotations or {})},
                      **{"cdi-spec-dirs": [str(d) for d in dirs]})


def test_claims_resolve_to_device_nodes(kube: KubeNode, dirs: tuple[Path, Path]) -> None:
    write(dirs[1] / "k8s.gpu.nvidia.com-claim_c1.yaml", claim_spec("c1", 0))
    e = judge(kube, dirs)
    assert isinstance(e.allocation, Allocation), e.allocation
    (dra,) = e.allocation.dra
    assert (dra.claim, dra.resolved.name) == ("ml/gpu-claim", f"{KIND}=c1-gpu-0")
    assert dra.resolved.nodes == (("/dev/nvidia0", 195, 0), ("/dev/nvidiactl", 195, 255))
    shown = e.allocation_json()["dra"]
    assert shown[0]["claim"] == "ml/gpu-claim" and shown[0]["nodes"][0]["minor"] == 0


@pytest.mark.parametrize(("setup", "problem"), [
    P(lambda d: None, "is in no readable CDI spec", id="the claim's name in no spec"),
    P(lambda d: (d / "k8s.gpu.nvidia.com-claim_c1.yaml").write_text("devices: [\n"),
      "not valid YAML", id="the claim's spec unreadable"),
])
def test_unresolvable_claim_fails_closed(kube: KubeNode, dirs: tuple[Path, Path],
                                         setup: Any, problem: str) -> None:
    setup(dirs[1])
    d = judge(kube, dirs, env=f"{VISIBLE}={GPU0_UUID}").decision
    assert d.outcome is Outcome.DENY and list(d.granted) == []
    assert "DRA claim ml/gpu-claim" in d.denial and problem in d.denial, d.denial
    assert "\n" not in d.denial


@pytest.mark.parametrize(("annotation", "outcome"), [
    P(f"{KIND}=c1-gpu-0", Outcome.ALLOW, id="its own claim's CDI name"),
    P(f"{KIND}=c2-gpu-1", Outcome.DENY, id="another claim's CDI name"),
])
def test_another_claims_cdi_name_is_a_violation(kube: KubeNode, dirs: tuple[Path, Path],
                                                annotation: str, outcome: Outcome) -> None:
    write(dirs[1] / "c1.json", claim_spec("c1", 0))
    write(dirs[1] / "c2.json", claim_spec("c2", 1))
    d = judge(kube, dirs, annotations={"cdi.k8s.io/dra": annotation}).decision
    assert d.outcome is outcome, d.reasons
    if outcome is Outcome.DENY:
        assert "belongs to another DRA claim" in d.denial and "ml/gpu-claim" in d.denial


def test_explain_pod_shows_the_claims(kube: KubeNode, dirs: tuple[Path, Path]) -> None:
    from nvhook.ops import explain

    write(dirs[1] / "c1.json", claim_spec("c1", 0))
    write(dirs[1] / "c2.json", claim_spec("c2", 1))
    config = kube.config(**{"cdi-spec-dirs": [str(d) for d in dirs]})
    view = explain.pod_view(config, "ml", "dra", None, kube.inventory)
    assert [c["cdi_devices"] for c in view["containers"]] == [[f"{KIND}=c1-gpu-0"],
                                                               [f"{KIND}=c2-gpu-1"]]
    assert "CDI devices (DRA): " + f"{KIND}=c1-gpu-0" in explain.pod_text(view)


def judge_nodes(kube: KubeNode, dirs: tuple[Path, Path], *minors: int) -> Any:
    """The container as containerd hands it to runc after applying its claim's CDI names:
    the claim's device nodes in linux.devices (and no GPU in the env)."""
    doc = {"ociVersion": "1.0.2", "process": {"env": [f"{VISIBLE}=void"]},
           "annotations": containerd_annotations("ml", "dra", UID, "main"),
           "linux": {"devices": [{"path": f"/dev/nvidia{m}", "type": "c", "major": 195,
                                  "minor": m} for m in minors]}}
    spec = from_document(kube.root / "config.json", doc)
    return evaluate(spec, kube.config(**{"cdi-spec-dirs": [str(d) for d in dirs]}),
                    kube.inventory)


@pytest.mark.parametrize(("claim_minor", "node_minors", "outcome", "granted", "problem"), [
    P(0, [0], Outcome.ALLOW, [GPU0_UUID], None, id="the claim's GPU node: allowed"),
    P(1, [1], Outcome.ALLOW, [GPU1_UUID], None, id="another GPU by its minor: allowed"),
    P(0, [1], Outcome.DENY, [], "is not allocated", id="a GPU node outside the claim"),
    P(0, [0, 1], Outcome.DENY, [], "is not allocated", id="the claim's node and one more"),
    P(7, [0], Outcome.DENY, [], "not a live device", id="a claim node no live GPU has"),
])
def test_dra_gpus_count_as_allocated(kube: KubeNode, dirs: tuple[Path, Path],
                                     claim_minor: int, node_minors: list[int],
                                     outcome: Outcome, granted: list[str],
                                     problem: str | None) -> None:
    write(dirs[1] / "c1.json", claim_spec("c1", claim_minor) | {"devices": [
        {"name": "c1-gpu-0", "containerEdits": {"deviceNodes": [
            {"path": "/dev/nvidia-claim", "type": "c", "major": 195, "minor": claim_minor}]}}]})
    e = judge_nodes(kube, dirs, *node_minors)
    d = e.decision
    assert d.outcome is outcome, d.reasons
    assert list(d.granted) == granted
    if problem is not None:
        assert problem in d.denial and "\n" not in d.denial, d.denial
    else:
        assert e.allocation_json()["allocated"] == granted
