"""deploy/kubernetes: every manifest validates offline against the Kubernetes API schemas
(kubernetes-validate ships them) for each version we claim, and says what nvhook expects.

The kustomize base is rendered two ways: by this file's small renderer (resources, the
namespace, the configMapGenerator, the image override: all the base uses), and, when kubectl
is installed, by `kubectl kustomize` itself."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
kv = pytest.importorskip("kubernetes_validate.utils")

from nvhook import cli  # noqa: E402
from nvhook import config as config_mod  # noqa: E402
from nvhook.kube.identity import from_annotations  # noqa: E402
from nvhook.ops import install as install_mod  # noqa: E402
from nvhook.ops import node  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0",
                       "1.36.0", "1.37.0"]
KUSTOMIZATIONS = [pytest.param(BASE, id="base"), pytest.param(BASE / "uninstall", id="uninstall")]


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize` makes of the features our kustomizations use."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(k) <= {"apiVersion", "kind", "namespace", "resources", "configMapGenerator",
                      "images"}, f"the renderer does not know {set(k)}"
    docs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        docs += [d for d in yaml.safe_load_all((directory / res).read_text()) if d]
    for gen in k.get("configMapGenerator", []):
        data = {}
        for spec in gen["files"]:
            key, _, path = spec.partition("=")
            data[key] = (directory / path).read_text()
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": gen["name"]}, "data": data})
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in k.get("images", [])}
    for d in docs:
        if d["kind"] not in ("Namespace", "RuntimeClass"):
            d["metadata"]["namespace"] = k["namespace"]
        pod = pod_spec(d)
        if pod is not None:
            for c in pod.get("initContainers", []) + pod["containers"]:
                c["image"] = images.get(c["image"], c["image"])
    return docs


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def kubectl_render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the built-in renderer covers the base")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                         text=True, check=True, timeout=120, stdin=subprocess.DEVNULL).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


RENDERERS = [pytest.param(render, id="renderer"), pytest.param(kubectl_render, id="kubectl")]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
@pytest.mark.parametrize("renderer", RENDERERS)
def test_manifests_validate_strictly(renderer: Any, directory: Path, version: str) -> None:
    docs = renderer(directory)
    assert docs
    for doc in docs:
        kv.validate(doc, version, strict=True)


BROKEN = [
    pytest.param(("spec", "template", "spec", "hostPID"), "yes", id="hostPID: a string"),
    pytest.param(("spec", "template", "spec", "priorityClass"), "x", id="misspelt field"),
    pytest.param(("spec", "template", "spec", "containers"), "node", id="containers: a string"),
]


@pytest.mark.parametrize(("where", "value"), BROKEN)
def test_validation_catches_a_broken_daemonset(where: tuple[str, ...], value: Any) -> None:
    """The validator really checks (offline): a broken copy of our DaemonSet fails."""
    ds = copy.deepcopy(by_kind(render(BASE), "DaemonSet"))
    target = ds
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(kv.ValidationError):
        kv.validate(ds, KUBERNETES_VERSIONS[-1], strict=True)


def test_policy_preset_is_valid_and_kubernetes_shaped() -> None:
    cm = by_kind(render(BASE), "ConfigMap")
    text = cm["data"]["config.toml"]
    cfg = config_mod.parse(text.encode(), Path("configmap:config.toml"))
    assert cfg.policy.mode.value == "enforce"
    assert cfg.policy.all.value == "never"
    assert cfg.kubernetes.allocation.value == "on", "the preset must be allocation-bound"
    for key, ns in (("io.kubernetes.cri.sandbox-namespace", "kube-system"),
                    ("io.kubernetes.pod.namespace", "gpu-operator")):
        policy = cfg.policy_for({key: ns}, from_annotations({key: ns}))
        assert policy.rule == "gpu-management", f"{ns} via {key} is not exempt"
        assert policy.allocation.value == "exempt" and policy.all.value == "always"
    for key, ns in (("io.kubernetes.cri.sandbox-namespace", "team-a"),
                    ("io.kubernetes.pod.namespace", "kube-system-evil")):
        policy = cfg.policy_for({key: ns}, from_annotations({key: ns}))
        assert policy.rule is None and policy.allocation.value == "bound", ns


def _parses(args: list[str]) -> None:
    """The CLI accepts ``args``: click parses them all (an unknown option or command is exit 2)
    before the eager ``--help`` stops it, so nothing runs."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, [*args, "--help"])
    assert result.exit_code == 0, f"nvhook {' '.join(args)}: {result.output}"


def test_daemonset_shape_matches_what_nvhook_expects() -> None:
    docs = render(BASE)
    ds = by_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"name": "host", "hostPath": {"path": "/", "type": "Directory"}} in pod["volumes"]
    cm_name = by_kind(docs, "ConfigMap")["metadata"]["name"]
    assert {"name": "policy", "configMap": {"name": cm_name}} in pod["volumes"]
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    for c in (init, main):
        assert c["securityContext"]["privileged"] is True
        assert {"name": "host", "mountPath": "/host"}.items() <= c["volumeMounts"][0].items()
        assert c["image"] == "localhost/nvhook:0.1.0"
    assert init["args"][:2] == ["node", "install"]
    assert "--host-root=/host" in init["args"]
    assert f"--policy={node.POLICY_MOUNT}" in init["args"]
    assert {"name": "policy", "mountPath": str(node.POLICY_MOUNT.parent),
            "readOnly": True} in init["volumeMounts"]
    probe = main["readinessProbe"]["exec"]["command"]
    assert probe[0] == "/nvhook/nvhook" and probe[1:] == ["doctor", "--host-root", "/host"]
    for args in (init["args"], main["args"], probe[1:]):
        _parses(args)


def test_runtimeclass_names_the_containerd_handler_install_writes() -> None:
    rc = by_kind(render(BASE), "RuntimeClass")
    assert rc["handler"] == install_mod.RUNTIME_NAME


def test_uninstall_job_runs_node_uninstall_once_per_node() -> None:
    job = by_kind(render(BASE / "uninstall"), "Job")
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][:2] == ["node", "uninstall"]
    _parses(c["args"])
    term = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["topologyKey"] == "kubernetes.io/hostname"
    assert term[0]["labelSelector"]["matchLabels"].items() <= \
        job["spec"]["template"]["metadata"]["labels"].items()


def test_the_base_does_not_include_the_uninstall_job() -> None:
    assert all(d["kind"] != "Job" for d in render(BASE))
