"""CDI-injected device nodes, judged by major:minor, end to end.

Real runc creates the nodes (mknod 195:N in the container's tmpfs /dev: no driver is needed
to create one, only to open it), so each container lists its /dev to show which nodes it got.
- runc with nvhook as the prestart hook: a hand-written CDI-shaped spec
  (NVIDIA_VISIBLE_DEVICES=void, linux.devices 195:1, a cgroup allow rule) is admitted or denied;
  so is one with IMEX channel 0's node alone (no GPU, no NVIDIA variable), by policy.imex;
- the runtime shim in rewrite mode removes a refused node and its cgroup rule before runc reads
  the spec;
- the kubelet's allocation (a test kubelet) binds CDI nodes; a privileged kube-proxy-like pod
  with every device keeps running;
- real Podman applies a CDI spec (``--device nvidia.com/gpu=1``) from /etc/cdi itself; nvhook's
  prestart (and precreate) hook judges what Podman injected.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakenvml
import pytest
from builders import INVENTORY_JSON
from kubelet import Ctr, TestKubelet, containerd_annotations

from .harness import (
    BundleFactory,
    Podman,
    Recorder,
    find_binary,
    new_container_id,
    precreate_hooks,
    run_runc,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NVHOOK = Path(sys.executable).with_name("nvhook")
MARKER = "container-ran"
GPU0, GPU1 = fakenvml.GPU0_UUID, fakenvml.GPU1_UUID
VOID = "NVIDIA_VISIBLE_DEVICES=void"
UID = "0f3e4a52-7b1c-4d2e-9a8b-1c2d3e4f5a6b"
# The container shows the NVIDIA nodes it got ("crw... 195, 1 ... nvidia1"), then the marker.
SHOW = ["/bin/sh", "-c", f"ls -l /dev | grep ' 195, ' ; echo {MARKER}"]
P = pytest.param


def cdi_linux(*minors: int, privileged_rule: bool = False) -> dict[str, Any]:
    """linux.devices and cgroup rules as a CDI injection writes them (plus nvidiactl)."""
    nodes = [{"path": f"/dev/nvidia{m}", "type": "c", "major": 195, "minor": m, "fileMode": 0o666}
             for m in minors]
    nodes.append({"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255})
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    rules += [{"allow": True, "type": "c", "major": 195, "minor": m, "access": "rwm"}
              for m in (*minors, 255)]
    if privileged_rule:
        rules = [{"allow": True, "access": "rwm"}]
    return {"devices": nodes, "resources": {"devices": rules}}


def with_linux(bundle: Path, linux: dict[str, Any]) -> Path:
    doc = json.loads((bundle / "config.json").read_text())
    doc.setdefault("linux", {}).update(linux)
    (bundle / "config.json").write_text(json.dumps(doc))
    return bundle


def node_config(tmp_path: Path, recorder: Recorder, text: str = "") -> Path:
    path = tmp_path / "nvhook.toml"
    path.write_text(f"version = 1\n{text}\n"
                    f'[delegate]\npath = "{recorder.path}"\nargs = ["prestart"]\n'
                    f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    return path


def prestart_hook(config: Path, fake_nvml: Path) -> dict[str, Any]:
    hook = json.loads((REPO / "hooks.d" / "nvrw-hook.json").read_text())["hook"]
    hook["path"] = str(NVHOOK)
    hook["args"] = ["nvhook", "--config", str(config), "prestart"]
    hook["env"] = [*hook["env"], f"LD_LIBRARY_PATH={fake_nvml}"]
    return hook


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def nodes_shown(output: str) -> list[str]:
    """The 195 nodes the container listed, as "major:minor name"."""
    out = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[4] == "195,":
            out.append(f"195:{parts[5]} {parts[-1]}")
    return out


# -- runc, prestart --------------------------------------------------------------------------

RUNC = [
    P("", True, ["195:1 nvidia1", "195:255 nvidiactl"], [GPU1],
      id="CDI GPU 1 with void env: runs, audited as granted GPU 1"),
    P(f'[policy]\ndeny = ["{GPU1}"]', False, [], [],
      id="GPU 1 deny-listed: denied, the container never starts"),
    P(f'[policy]\nmode = "rewrite"\ndeny = ["{GPU1}"]', False, [], [],
      id="rewrite mode at prestart: the node exists already, denied"),
    P('[policy]\ndevice-nodes = "deny"', False, [], [], id="device-nodes = deny"),
]


@pytest.mark.parametrize(("policy", "runs", "nodes", "granted"), RUNC)
def test_runc_prestart(policy: str, runs: bool, nodes: list[str], granted: list[str],
                       bundle_factory: BundleFactory, recorder: Recorder, fake_nvml: Path,
                       tmp_path: Path) -> None:
    config = node_config(tmp_path, recorder, policy)
    bundle = with_linux(bundle_factory(args=SHOW, env=["PATH=/bin", VOID],
                                       hooks={"prestart": [prestart_hook(config, fake_nvml)]}),
                        cdi_linux(1))
    result = run_runc(bundle, new_container_id())
    output = result.stdout + result.stderr
    if runs:
        assert result.returncode == 0, output
        assert nodes_shown(output) == nodes
    else:
        assert result.returncode != 0 and MARKER not in output
        assert "nvhook: denied: linux." in output, output
    (line,) = audit(tmp_path)
    assert line["granted"] == granted
    assert recorder.read() is None or runs  # NVIDIA's hook is handed nothing it would refuse


# -- runc, prestart: an IMEX channel node (CDI's nvidia.com/imex-channel=0) -----------------
# The channel's major is the host's (nvidia-caps-imex-channels in /proc/devices): a test-owned
# copy declares it, as nvhook's [inventory] proc-devices lets an operator point elsewhere.
IMEX_MAJOR = 241
CHANNEL0 = {"path": "/dev/nvidia-caps-imex-channels/channel0", "type": "c",
            "major": IMEX_MAJOR, "minor": 0, "fileMode": 0o666}
SHOW_CHANNELS = ["/bin/sh", "-c", f"ls -l /dev/nvidia-caps-imex-channels 2>&1; echo {MARKER}"]


@pytest.mark.parametrize(("caps", "runs", "imex"), [
    P(None, False, [], id="unprivileged with channel 0's node: refused by the default policy.imex"),
    P(["CAP_KILL", "CAP_SYS_ADMIN"], True, ["0"],
      id="privileged with channel 0's node: runs, channel 0"),
])
def test_runc_prestart_imex_channel_node(caps: list[str] | None, runs: bool, imex: list[str],
                                         bundle_factory: BundleFactory, recorder: Recorder,
                                         fake_nvml: Path, tmp_path: Path) -> None:
    from builders import HOST_PROC_DEVICES

    proc_devices = tmp_path / "devices"
    proc_devices.write_text(HOST_PROC_DEVICES)
    assert f"{IMEX_MAJOR} nvidia-caps-imex-channels" in HOST_PROC_DEVICES
    config = node_config(tmp_path, recorder, f'[inventory]\nproc-devices = "{proc_devices}"')
    bundle = bundle_factory(args=SHOW_CHANNELS, env=["PATH=/bin"], caps_bounding=caps,
                            hooks={"prestart": [prestart_hook(config, fake_nvml)]})
    with_linux(bundle, {"devices": [CHANNEL0], "resources": {"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": IMEX_MAJOR, "minor": 0, "access": "rw"}]}})
    result = run_runc(bundle, new_container_id())
    output = result.stdout + result.stderr
    if runs:
        assert result.returncode == 0, output
        assert f"{IMEX_MAJOR},   0" in output or f"{IMEX_MAJOR}, 0" in output, output
    else:
        assert result.returncode != 0 and MARKER not in output
        assert ("nvhook: denied: linux.devices[0] /dev/nvidia-caps-imex-channels/channel0 "
                f"(c {IMEX_MAJOR}:0): IMEX channel 0: an unprivileged container may not have "
                "IMEX channels") in output, output
    (line,) = audit(tmp_path)
    assert line["imex_granted"] == imex
    assert [c["via"] for c in line["request"]["imex"]["channels"]] == ["node", "node"]
    # Denied: NVIDIA's hook never runs; admitted: it is handed the spec as it came (no GPU
    # variable in it, so it attaches nothing), as for CDI GPU nodes.
    assert recorder.read() is None or runs


# -- the runtime shim, before creation -------------------------------------------------------


def shim_create(bundle: Path, config: Path, tmp_path: Path) -> tuple[int, str, str]:
    """`nvhook runtime ... create` then `runc start`, as Docker drives it; -> (create rc,
    create stderr, container stdout)."""
    runc = find_binary("runc")
    assert runc is not None
    root, cid = tmp_path / "runc-root", new_container_id("nvhook-dn")
    env = {"PATH": os.environ.get("PATH", ""), "NVHOOK_CONFIG": str(config)}
    err_path = tmp_path / f"{cid}.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([str(NVHOOK), "runtime", "--root", str(root), "create",
                                 "--bundle", str(bundle), cid], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, env=env)
    try:
        rc = proc.wait(timeout=60)
        if rc != 0:
            return rc, err_path.read_text(), ""
        start = subprocess.run([runc, "--root", str(root), "start", cid], capture_output=True,
                               text=True, timeout=30, check=False)
        assert start.returncode == 0, start.stderr
        assert proc.stdout is not None
        return rc, err_path.read_text(), proc.stdout.read().decode()
    finally:
        subprocess.run([runc, "--root", str(root), "delete", "--force", cid],
                       capture_output=True, timeout=30, check=False)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def shim_config(tmp_path: Path, policy: str, kube: str = "", inventory_extra: str = "") -> Path:
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(INVENTORY_JSON))
    config = tmp_path / "nvhook.toml"
    config.write_text(f'version = 1\n{policy}\n[inventory]\nsource = "file"\nfile = "{inventory}"\n'
                      f"{inventory_extra}\n"
                      f'[delegate]\npath = ""\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
                      f'[runtime]\npath = "{find_binary("runc")}"\n{kube}')
    return config


SHIM = [
    P('[policy]\nmode = "rewrite"', ["195:1 nvidia1", "195:255 nvidiactl"], [GPU1],
      id="allowed: the spec runc gets keeps the node"),
    P(f'[policy]\nmode = "rewrite"\ndeny = ["{GPU1}"]', ["195:255 nvidiactl"], [],
      id="deny-listed in rewrite mode: node and rule removed, the container runs without"),
]


@pytest.mark.parametrize(("policy", "nodes", "granted"), SHIM)
def test_shim_rewrite_removes_refused_nodes(policy: str, nodes: list[str], granted: list[str],
                                            bundle_factory: BundleFactory,
                                            tmp_path: Path) -> None:
    config = shim_config(tmp_path, policy)
    bundle = with_linux(bundle_factory(args=SHOW, env=["PATH=/bin", VOID]), cdi_linux(1))
    rc, err, out = shim_create(bundle, config, tmp_path)
    assert (rc, err) == (0, ""), err
    assert nodes_shown(out) == nodes
    spec = json.loads((bundle / "config.json").read_text())
    minors = [d["minor"] for d in spec["linux"]["devices"]]
    rules = [r.get("minor") for r in spec["linux"]["resources"]["devices"]]
    assert (1 in minors, 1 in rules) == (bool(granted), bool(granted))
    assert audit(tmp_path)[0]["granted"] == granted


def test_shim_enforce_denies_and_never_creates(bundle_factory: BundleFactory,
                                               tmp_path: Path) -> None:
    config = shim_config(tmp_path, f'[policy]\ndeny = ["{GPU1}"]')
    bundle = with_linux(bundle_factory(args=SHOW, env=["PATH=/bin", VOID]), cdi_linux(1))
    before = (bundle / "config.json").read_bytes()
    rc, err, _ = shim_create(bundle, config, tmp_path)
    assert rc == 3 and err.startswith("nvhook: denied: linux.devices[0] /dev/nvidia1 (c 195:1)")
    assert (bundle / "config.json").read_bytes() == before


def test_shim_rewrite_removes_a_refused_imex_channel_node(bundle_factory: BundleFactory,
                                                          tmp_path: Path) -> None:
    """Before creation, rewrite mode removes an unprivileged container's channel 0 node and its
    rule; runc then creates the container without it."""
    from builders import HOST_PROC_DEVICES

    (tmp_path / "devices").write_text(HOST_PROC_DEVICES)
    config = shim_config(tmp_path, '[policy]\nmode = "rewrite"',
                         inventory_extra=f'proc-devices = "{tmp_path / "devices"}"')
    bundle = with_linux(bundle_factory(args=SHOW_CHANNELS, env=["PATH=/bin"]), {
        "devices": [CHANNEL0], "resources": {"devices": [
            {"allow": True, "type": "c", "major": IMEX_MAJOR, "minor": 0, "access": "rw"}]}})
    rc, err, out = shim_create(bundle, config, tmp_path)
    assert (rc, err) == (0, ""), err
    assert MARKER in out and f"{IMEX_MAJOR}," not in out, out
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["linux"]["devices"] == [] and spec["linux"]["resources"]["devices"] == []
    (line,) = audit(tmp_path)
    assert (line["decision"], line["imex_granted"]) == ("rewrite", []), line


# -- the kubelet's allocation (#10) ----------------------------------------------------------


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[TestKubelet]:
    with TestKubelet(tmp_path / "kubelet.sock") as k:
        k.add("team-a", "gpu0-pod", UID, Ctr("main", {"nvidia.com/gpu": [GPU0]}))
        k.add("team-a", "gpu1-pod", UID, Ctr("main", {"nvidia.com/gpu": [GPU1]}))
        k.add("kube-system", "kube-proxy", UID, Ctr("main"))
        yield k


def kube_table(tmp_path: Path, kubelet: TestKubelet) -> str:
    return (f'[kubernetes]\nsocket = "{kubelet.socket}"\ncheckpoint = "{tmp_path / "none"}"\n'
            'unallocated = "void"\n')


KUBE = [
    P("gpu0-pod", cdi_linux(1), (), False, [], id="allocated GPU 0, node 195:1: denied"),
    P("gpu1-pod", cdi_linux(1), (), True, [GPU1], id="allocated GPU 1, CDI node 195:1: runs"),
    P("kube-proxy", cdi_linux(0, 1, privileged_rule=True), ("CAP_SYS_ADMIN",), True, [],
      id="kube-proxy: privileged with every device, nothing allocated: runs"),
]


@pytest.mark.parametrize(("pod", "linux", "caps", "runs", "granted"), KUBE)
def test_allocation_binds_device_nodes_at_prestart(
        pod: str, linux: dict[str, Any], caps: tuple[str, ...], runs: bool, granted: list[str],
        kubelet: TestKubelet, bundle_factory: BundleFactory, recorder: Recorder,
        fake_nvml: Path, tmp_path: Path) -> None:
    config = node_config(tmp_path, recorder, kube_table(tmp_path, kubelet))
    bundle = bundle_factory(args=SHOW, env=["PATH=/bin", VOID],
                            hooks={"prestart": [prestart_hook(config, fake_nvml)]},
                            annotations=containerd_annotations("team-a" if pod != "kube-proxy"
                                                               else "kube-system", pod, UID,
                                                               "main"),
                            caps_bounding=[*caps, "CAP_KILL"] if caps else None)
    result = run_runc(with_linux(bundle, linux), new_container_id())
    output = result.stdout + result.stderr
    assert (result.returncode == 0) is runs, output
    assert (MARKER in output) is runs
    if not runs:
        assert "is not allocated to this container" in output
    (line,) = audit(tmp_path)
    assert line["granted"] == granted
    if pod == "kube-proxy":
        assert any("privileged: every device node reachable" in r for r in line["reasons"])


def test_allocation_shim_rewrite_removes_the_unallocated_node(
        kubelet: TestKubelet, bundle_factory: BundleFactory, tmp_path: Path) -> None:
    config = shim_config(tmp_path, '[policy]\nmode = "rewrite"', kube_table(tmp_path, kubelet))
    bundle = bundle_factory(args=SHOW, env=["PATH=/bin", VOID],
                            annotations=containerd_annotations("team-a", "gpu0-pod", UID, "main"))
    rc, err, out = shim_create(with_linux(bundle, cdi_linux(1)), config, tmp_path)
    assert (rc, err) == (0, "")
    assert nodes_shown(out) == ["195:255 nvidiactl"]
    assert audit(tmp_path)[0]["granted"] == []


# -- Podman applies the CDI spec itself -------------------------------------------------------


@contextlib.contextmanager
def cdi_spec_installed() -> Iterator[str]:
    """A CDI spec for the fake GPUs, under a unique name in /etc/cdi (created if absent),
    removed afterwards with the directory if this test created it: nothing is left."""
    spec = {"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
            "devices": [{"name": str(m), "containerEdits": {"deviceNodes": [
                {"path": f"/dev/nvidia{m}", "type": "c", "major": 195, "minor": m}]}}
                for m in (0, 1)],
            "containerEdits": {"env": [VOID], "deviceNodes": [
                {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255}]}}
    directory = Path("/etc/cdi")
    created = not directory.exists()
    directory.mkdir(exist_ok=True)
    path = directory / f"nvhook-e2e-{uuid.uuid4().hex[:12]}.json"
    try:
        path.write_text(json.dumps(spec))
        yield str(path)
    finally:
        path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()


PODMAN = [
    P("", True, ["195:1 nvidia1", "195:255 nvidiactl"], [GPU1], id="GPU 1 allowed: runs"),
    P(f'[policy]\ndeny = ["{GPU1}"]', False, [], [], id="GPU 1 deny-listed: denied"),
]


@pytest.mark.parametrize(("policy", "runs", "nodes", "granted"), PODMAN)
def test_podman_cdi_device(policy: str, runs: bool, nodes: list[str], granted: list[str],
                           podman: Podman, recorder: Recorder, fake_nvml: Path,
                           tmp_path: Path) -> None:
    config = node_config(tmp_path, recorder, policy)
    doc = json.loads((REPO / "hooks.d" / "nvrw-hook.json").read_text())
    doc["hook"] = prestart_hook(config, fake_nvml)
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir()
    (hooks_dir / "nvrw-hook.json").write_text(json.dumps(doc))
    with cdi_spec_installed():
        result = podman.run(hooks_dir, SHOW, extra=["--device", "nvidia.com/gpu=1"])
    output = result.stdout + result.stderr
    assert not list(Path("/etc/cdi").glob("nvhook-e2e-*")) if Path("/etc/cdi").exists() else True
    if runs:
        assert result.returncode == 0, output
        assert nodes_shown(output) == nodes
    else:
        assert result.returncode == 126 and MARKER not in output
        assert "nvhook: denied: linux.devices" in output, output
    (line,) = audit(tmp_path)
    assert line["granted"] == granted



def test_podman_precreate_rewrite_removes_the_cdi_node(podman: Podman, tmp_path: Path) -> None:
    hooks_dir, _ = precreate_hooks(tmp_path, INVENTORY_JSON,
                                   f'[policy]\nmode = "rewrite"\ndeny = ["{GPU1}"]')
    with cdi_spec_installed():
        result = podman.run(hooks_dir, SHOW, extra=["--device", "nvidia.com/gpu=1"])
    assert result.returncode == 0, result.stderr
    assert nodes_shown(result.stdout) == ["195:255 nvidiactl"]
    assert audit(tmp_path)[0]["granted"] == []


@pytest.mark.parametrize(("pod", "nodes", "granted"), [
    P("gpu1-pod", ["195:1 nvidia1", "195:255 nvidiactl"], [GPU1],
      id="allocated GPU 1, --device nvidia.com/gpu=1: kept"),
    P("gpu0-pod", ["195:255 nvidiactl"], [],
      id="allocated GPU 0, --device nvidia.com/gpu=1: the node is removed before creation"),
])
def test_podman_precreate_binds_the_cdi_node_to_the_allocation(
        pod: str, nodes: list[str], granted: list[str], podman: Podman, kubelet: TestKubelet,
        tmp_path: Path) -> None:
    """Podman applies the CDI device, then precreate judges the spec it is about to create,
    with the pod's kubelet allocation (its CRI identity set by --annotation)."""
    hooks_dir, _ = precreate_hooks(tmp_path, INVENTORY_JSON,
                                   f'[policy]\nmode = "rewrite"\n{kube_table(tmp_path, kubelet)}')
    with cdi_spec_installed():
        result = podman.run(hooks_dir, SHOW, extra=["--device", "nvidia.com/gpu=1"],
                            annotations=containerd_annotations("team-a", pod, UID, "main"))
    assert result.returncode == 0, result.stderr
    assert nodes_shown(result.stdout) == nodes
    (line,) = audit(tmp_path)
    assert (line["granted"], line["pod"]) == (granted, pod)
