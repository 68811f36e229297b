"""nvhook.decision.decide: the decision truth table, and the rewrites it produces.

Each row of DECISIONS: the container (env, caps, mounts, annotations, devices), the policy
overrides, then the expected outcome, granted UUIDs, NVIDIA_VISIBLE_DEVICES afterwards
(None: absent; a string: exactly one entry; a list: these entries in order) and a substring
of the first reason (None: no violation).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import (
    ADMIN,
    ALL_UUIDS,
    IMEX_MAJOR,
    device_mount,
    document,
    env_values,
    fake_inventory,
    host,
    make_spec,
    mount,
    node,
    policy,
    rule,
    spec_from,
)
from fakenvml import GPU0_BUS, GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID

from nvhook import config
from nvhook.decision.decide import Outcome, Violation, decide, needs_inventory, rewrite_entries
from nvhook.decision.policy import Policy
from nvhook.decision.request import parse, to_json
from nvhook.errors import InventoryError
from nvhook.nvidia.config import NvidiaConfig

P = pytest.param
INV = fake_inventory()
G0, G1, MA, MB = GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID
ALL4 = ",".join(ALL_UUIDS)
NVD = "NVIDIA_VISIBLE_DEVICES"
ROOT = "/var/run/nvidia-container-devices"
DOWN = InventoryError("NVML: driver not loaded")
ALLOW, DENY, REWRITE, SKIP = Outcome.ALLOW, Outcome.DENY, Outcome.REWRITE, Outcome.SKIP
UNPRIV_ALL = 'NVIDIA_VISIBLE_DEVICES=all: an unprivileged container may not have every GPU ' \
    '(policy.all = "privileged")'


def nvd(value: str) -> str:
    return f"{NVD}={value}"


def run(container: dict, overrides: dict):
    kw = dict(container)
    swarm = kw.pop("swarm", ())
    inventory = kw.pop("inventory", INV)
    spec = make_spec(**kw)
    return decide(parse(spec, swarm), inventory, policy(**overrides), spec), spec


DECISIONS = [
    # -- nothing asked ---------------------------------------------------------------------
    P({"env": ["PATH=/bin"]}, {}, SKIP, (), None, None, id="no GPU variable: skip"),
    P({"env": [nvd("void")]}, {}, SKIP, (), "void", None, id="void: skip"),
    P({"env": [nvd("")]}, {}, SKIP, (), "", None, id="empty value: skip"),
    P({"env": [nvd("all"), nvd("void")]}, {}, SKIP, (), ["all", "void"], None,
      id="duplicates ending in void: skip, env untouched"),
    P({"env": ["CUDA_VERSION=12", "NVIDIA_REQUIRE_CUDA=cuda>=12"]}, {}, SKIP, (), None, None,
      id="CUDA image that is not legacy: skip"),
    P({"annotations": {"cdi.k8s.io/x": "vendor.com/fpga=0"}}, {}, SKIP, (), None, None,
      id="only another vendor's CDI device: skip"),
    P({"mounts": [device_mount("0", source="/dev/zero")]}, {}, SKIP, (), None, None,
      id="only a forged device mount (not /dev/null): skip"),
    # -- all -----------------------------------------------------------------------------------
    P({"env": [nvd("all")]}, {}, DENY, (), "all", UNPRIV_ALL,
      id="all, unprivileged, defaults: deny naming variable, value and rule"),
    P({"env": [nvd("all")], "caps": ADMIN}, {}, REWRITE, ALL_UUIDS, ALL4, None,
      id="all, privileged: rewrite pinned to every UUID, GPUs then MIG devices"),
    P({"env": [nvd("all")], "caps": ADMIN}, {"all": "never"}, DENY, (), "all",
      'no container may have every GPU (policy.all = "never")',
      id="all = never refuses even a privileged container"),
    P({"env": [nvd("all")]}, {"all": "always"}, REWRITE, ALL_UUIDS, ALL4, None,
      id="all = always: an unprivileged container gets every UUID"),
    P({"env": [nvd("all")]}, {"mode": "rewrite"}, REWRITE, (), "void", UNPRIV_ALL,
      id="all, unprivileged, rewrite mode: void"),
    P({"env": [nvd("all")]}, {"mode": "audit"}, ALLOW, ALL_UUIDS, "all", UNPRIV_ALL,
      id="all, unprivileged, audit: allowed unchanged, violation recorded"),
    P({"env": [nvd("0,all")]}, {}, DENY, (), "0,all", "NVIDIA_VISIBLE_DEVICES=0,all: an "
      "unprivileged container may not have every GPU", id="'0,all' is all: deny"),
    P({"env": [nvd("ALL")]}, {}, DENY, (), "ALL", "NVIDIA_VISIBLE_DEVICES=ALL: an unprivileged",
      id="'ALL' (a device id nvidia-container-cli reads as all): deny"),
    P({"env": [nvd("ALL")], "caps": ADMIN}, {}, REWRITE, ALL_UUIDS, ALL4, None,
      id="'ALL', privileged: pinned to every UUID"),
    P({"env": [nvd("all")], "caps": ADMIN}, {"mode": "rewrite", "allow": [G0]}, REWRITE,
      (G0,), G0, f"{G1} is not on the allow list", id="privileged all narrowed by the allow list"),
    # -- legacy images ---------------------------------------------------------------------------
    P({"env": ["CUDA_VERSION=12.4"]}, {}, DENY, (), None,
      "NVIDIA_VISIBLE_DEVICES (unset; legacy image: CUDA_VERSION set, NVIDIA_REQUIRE_CUDA "
      'empty): an unprivileged container may not have every GPU (policy.all = "privileged")',
      id="legacy image, unprivileged: deny, reason explains the implicit all"),
    P({"env": ["CUDA_VERSION=12.4"]}, {"mode": "rewrite"}, REWRITE, (), "void", "legacy image",
      id="legacy image, rewrite: the variable is ADDED as void, never deleted"),
    P({"env": ["CUDA_VERSION=12.4"], "caps": ADMIN}, {}, REWRITE, ALL_UUIDS, ALL4, None,
      id="legacy image, privileged: the implicit all is pinned to UUIDs"),
    P({"env": ["CUDA_VERSION=12.4"]}, {"mode": "audit"}, ALLOW, ALL_UUIDS, None, "legacy image",
      id="legacy image, audit: unchanged, granted is what NVIDIA attaches"),
    P({"env": ["CUDA_VERSION=12.4"]}, {"unprivileged_env": "ignore"}, REWRITE, (), "void", None,
      id="legacy image, unprivileged-env ignore: void added"),
    # -- device ids ------------------------------------------------------------------------------
    P({"env": [nvd(G0)]}, {}, ALLOW, (G0,), G0, None, id="exact canonical UUID: allow, no rewrite"),
    P({"env": [nvd(f"{G0},{MA}")]}, {}, ALLOW, (G0, MA), f"{G0},{MA}", None,
      id="canonical GPU and MIG UUIDs: allow"),
    P({"env": [nvd(G0.lower())]}, {}, REWRITE, (G0,), G0, None,
      id="lowercase UUID: rewritten to NVML's spelling"),
    P({"env": [nvd("0")]}, {}, REWRITE, (G0,), G0, None, id="index: pinned to its UUID"),
    P({"env": [nvd("1,0")]}, {}, REWRITE, (G1, G0), f"{G1},{G0}", None,
      id="indices: UUIDs in request order"),
    P({"env": [nvd("1:1")]}, {}, REWRITE, (MB,), MB, None,
      id="g:m: the n-th existing MIG device (empty slot skipped)"),
    P({"env": [nvd(GPU0_BUS)]}, {}, REWRITE, (G0,), G0, None, id="PCI bus id: pinned"),
    P({"env": [nvd(f"MIG-{G1}/2/0")]}, {}, REWRITE, (MB,), MB, None,
      id="legacy MIG-GPU-<uuid>/gi/ci: pinned to the MIG UUID"),
    P({"env": [nvd(f" {G0} ,")]}, {}, REWRITE, (G0,), G0, None,
      id="blanks and empty items: canonical value"),
    P({"env": [nvd(f"0,{G0}")]}, {}, REWRITE, (G0,), G0, None,
      id="two spellings of one GPU: one UUID"),
    P({"env": [nvd("0")]}, {"indices": "deny"}, DENY, (), "0",
      'not a UUID (policy.indices = "deny")',
      id="indices = deny: an index is refused"),
    P({"env": [nvd(f"0,{G1}")]}, {"indices": "deny", "mode": "rewrite"}, REWRITE, (G1,), G1,
      "not a UUID", id="indices = deny, rewrite: the index is dropped, the UUID kept"),
    P({"env": [nvd(GPU0_BUS)]}, {"indices": "deny"}, DENY, (), GPU0_BUS, "pci-bus-id",
      id="indices = deny: a PCI bus id is positional too"),
    P({"env": [nvd("1:0")]}, {"indices": "deny"}, DENY, (), "1:0", "mig-index",
      id="indices = deny: g:m is refused"),
    P({"env": [nvd(MA)]}, {"indices": "deny"}, ALLOW, (MA,), MA, None,
      id="indices = deny: a UUID is fine"),
    P({"env": [nvd("GPU-00000000-0000-4000-8000-000000000000")]}, {}, DENY, (),
      "GPU-00000000-0000-4000-8000-000000000000", "no such device on this node (live inventory)",
      id="well-formed UUID that is not live: deny"),
    P({"env": [nvd("7")]}, {}, DENY, (), "7", "index out of range", id="index out of range"),
    P({"env": [nvd("Void")]}, {}, DENY, (), "Void", "device 'Void': unknown device",
      id="'Void' is an unknown device id, not void"),
    P({"env": [nvd(f"{G0},GPU-00000000-0000-4000-8000-000000000000")]}, {"mode": "rewrite"},
      REWRITE, (G0,), G0, "live inventory", id="rewrite: unknown dropped, live kept"),
    P({"env": [nvd("9,8")]}, {"mode": "rewrite"}, REWRITE, (), "void", "index out of range",
      id="rewrite with nothing left: void"),
    # -- duplicates --------------------------------------------------------------------------
    P({"env": [nvd(G0), nvd("all")]}, {}, DENY, (), [G0, "all"], UNPRIV_ALL,
      id="duplicates [live uuid, all]: the last wins, deny"),
    P({"env": [nvd("all"), nvd(G0)]}, {}, REWRITE, (G0,), G0, None,
      id="duplicates [all, uuid]: collapsed to the one that NVIDIA reads"),
    P({"env": [nvd(G0), nvd(G0)]}, {}, REWRITE, (G0,), G0, None,
      id="identical duplicates collapse to one entry"),
    P({"env": [nvd("void"), nvd("0")]}, {}, REWRITE, (G0,), G0, None,
      id="duplicates [void, 0]: NVIDIA reads 0 (glibc sees void); one pinned entry"),
    # -- none --------------------------------------------------------------------------------
    P({"env": [nvd("none")]}, {}, ALLOW, (), "none", None, id="none: allow, stays none"),
    P({"env": [nvd("none")]}, {"mode": "rewrite", "allow": [G0]}, ALLOW, (), "none", None,
      id="none under an allow list: still none"),
    P({"env": [nvd("none,all")]}, {}, REWRITE, (), "none", None,
      id="'none,all' is none: canonical none"),
    # -- unprivileged-env ----------------------------------------------------------------------
    P({"env": [nvd("0")]}, {"unprivileged_env": "accept"}, REWRITE, (G0,), G0, None,
      id="unprivileged-env accept: the env is judged"),
    P({"env": [nvd(G0)]}, {"unprivileged_env": "ignore"}, REWRITE, (), "void", None,
      id="unprivileged-env ignore: void, no violation"),
    P({"env": [nvd("none")]}, {"unprivileged_env": "ignore"}, REWRITE, (), "void", None,
      id="unprivileged-env ignore: none becomes void too"),
    P({"env": [nvd(G0)]}, {"unprivileged_env": "ignore", "mode": "audit"}, ALLOW, (G0,), G0,
      None, id="unprivileged-env ignore, audit: unchanged, granted what NVIDIA would attach"),
    P({"env": [nvd(G0)]}, {"unprivileged_env": "deny"}, DENY, (), G0,
      f"NVIDIA_VISIBLE_DEVICES={G0}: a GPU request in the env of an unprivileged container is "
      'not accepted (policy.unprivileged-env = "deny")', id="unprivileged-env deny"),
    P({"env": [nvd(G0)]}, {"unprivileged_env": "deny", "mode": "rewrite"}, REWRITE, (), "void",
      "unprivileged-env", id="unprivileged-env deny, rewrite: void"),
    P({"env": [nvd(G0)], "caps": ADMIN}, {"unprivileged_env": "deny"}, ALLOW, (G0,), G0, None,
      id="privileged container bypasses unprivileged-env deny"),
    P({"env": [nvd("0")], "caps": ADMIN}, {"unprivileged_env": "ignore"}, REWRITE, (G0,), G0,
      None, id="privileged container bypasses unprivileged-env ignore"),
    P({"env": [nvd(G0)], "effective": ADMIN}, {"unprivileged_env": "deny"}, DENY, (), G0,
      "unprivileged", id="CAP_SYS_ADMIN only in effective is not privileged"),
    # -- volume mounts --------------------------------------------------------------------------
    P({"mounts": [device_mount("0")]}, {}, REWRITE, (G0,), None, None,
      id="mount accept: destination pinned to the UUID"),
    P({"mounts": [device_mount(MA)]}, {}, ALLOW, (MA,), None, None,
      id="mount with a canonical UUID: allow"),
    P({"mounts": [device_mount("0")]}, {"volume_mounts": "ignore"}, REWRITE, (), None, None,
      id="mount ignore: the mount is removed, no violation"),
    P({"mounts": [device_mount(G0)]}, {"volume_mounts": "deny"}, DENY, (), None,
      f"mount /dev/null -> {ROOT}/{G0}: a GPU request through a volume mount is not accepted "
      '(policy.volume-mounts = "deny")', id="mount deny"),
    P({"mounts": [device_mount(G0)]}, {"volume_mounts": "deny", "mode": "rewrite"}, REWRITE, (),
      None, "volume-mounts", id="mount deny, rewrite: removed"),
    P({"mounts": [mount("/dev/null", f"{ROOT}X/0")]}, {}, DENY, (), None,
      "device 'X/0': unknown device", id="prefix-quirk mount 'X/0' is refused, not ignored"),
    P({"mounts": [device_mount("all")]}, {}, DENY, (), None, "may not have every GPU",
      id="mount 'all', unprivileged: all rule applies"),
    P({"env": [nvd("void")], "mounts": [device_mount(MA)]}, {}, ALLOW, (MA,), "void", None,
      id="void env plus a device mount: the mount is judged"),
    P({"mounts": [device_mount("1"), device_mount("1", source="//dev/null")]},
      {"deny": [G1], "mode": "rewrite"}, REWRITE, (), None, "deny list",
      id="refused id repeated with another spelling: every copy dropped"),
    P({"mounts": [device_mount("cdi/nvidia.com/gpu=0")]}, {}, REWRITE, (G0,), None, None,
      id="cdi/ device mount resolves its CDI name"),
    # -- CDI -------------------------------------------------------------------------------------
    P({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=0"}}, {}, ALLOW, (G0,), None, None,
      id="CDI annotation accept: allow"),
    P({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=1:1"}}, {}, ALLOW, (MB,), None, None,
      id="CDI annotation naming a MIG device by g:m"),
    P({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=all"}}, {}, DENY, (), None,
      "annotation cdi.k8s.io/gpu=nvidia.com/gpu=all: an unprivileged container may not have "
      "every GPU", id="CDI gpu=all, unprivileged: deny"),
    P({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=0"}}, {"cdi_annotations": "ignore"},
      REWRITE, (), None, None, id="CDI ignore: annotation removed"),
    P({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=0"}}, {"cdi_annotations": "deny"},
      DENY, (), None, 'CDI annotation is not accepted (policy.cdi-annotations = "deny")',
      id="CDI deny"),
    P({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=9"}}, {}, DENY, (), None,
      "device 'nvidia.com/gpu=9': index out of range", id="CDI name that does not resolve"),
    P({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/imex-channel=0"}, "caps": ADMIN}, {}, ALLOW,
      (), None, None, id="CDI IMEX channel attaches no GPU, and IMEX is allowed when privileged"),
    P({"annotations": {"cdi.k8s.io/x": "vendor.com/fpga=0,nvidia.com/gpu=1"}},
      {"deny": [G1], "mode": "rewrite"}, REWRITE, (), None, "deny list",
      id="CDI rewrite drops the refused nvidia name, keeps the other vendor's"),
    P({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=all"}, "caps": ADMIN}, {}, ALLOW,
      ALL_UUIDS, None, None, id="CDI gpu=all, privileged: allowed as written"),
    P({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=all"}, "caps": ADMIN},
      {"deny": [G0], "mode": "rewrite"}, REWRITE, (), None, f"{G0} is on the deny list",
      id="CDI gpu=all minus a denied GPU: the whole name is dropped (it is passed verbatim)"),
    P({"annotations": {"cdi.k8s.io/gpu": "nvidia.com/gpu=all"}, "caps": ADMIN},
      {"deny": [G0]}, DENY, (), None, "deny list", id="CDI gpu=all minus a denied GPU: deny"),
    P({"env": [nvd("nvidia.com/gpu=0")]}, {}, REWRITE, (G0,), G0, None,
      id="CDI name in the env: resolves, pinned to the UUID"),
    P({"env": [nvd("vendor.com/x=0")]}, {}, DENY, (), "vendor.com/x=0",
      "CDI kind 'vendor.com/x' is not an NVIDIA GPU", id="another vendor's CDI name in the env"),
    P({"env": [nvd("nvidia.com/gpu=all")]}, {}, DENY, (), "nvidia.com/gpu=all",
      "may not have every GPU", id="CDI gpu=all in the env, unprivileged: deny"),
    # -- allow / deny lists -----------------------------------------------------------------------
    P({"env": [nvd(G1)]}, {"allow": [G0]}, DENY, (), G1,
      f"{G1} is not on the allow list (policy.allow)", id="not on the allow list: deny"),
    P({"env": [nvd("0,1")]}, {"allow": [G0], "mode": "rewrite"}, REWRITE, (G0,), G0,
      "not on the allow list", id="allow list, rewrite: only the allowed GPU kept"),
    P({"env": [nvd(G0)]}, {"allow": [G0.lower()]}, ALLOW, (G0,), G0, None,
      id="allow list compares UUIDs case-insensitively"),
    P({"env": [nvd(G0)]}, {"deny": [G0]}, DENY, (), G0,
      f"{G0} is on the deny list (policy.deny)", id="on the deny list: deny"),
    P({"env": [nvd(MA)]}, {"allow": [MA]}, ALLOW, (MA,), MA, None,
      id="MIG device on the allow list: granted (its parent comes with it)"),
    P({"env": [nvd(G1)]}, {"allow": [MA]}, DENY, (), G1, "not on the allow list",
      id="MIG on the allow list: its parent asked for directly is still refused"),
    P({"env": [nvd("1:0")]}, {"allow": [G1]}, REWRITE, (MA,), MA, None,
      id="GPU on the allow list: its MIG devices may be granted"),
    P({"env": [nvd(MB)]}, {"deny": [G1]}, DENY, (), MB,
      f"{MB}: its parent GPU {G1} is on the deny list", id="denying a GPU denies its MIG devices"),
    P({"env": [nvd("all")], "caps": ADMIN}, {"deny": [G1], "mode": "rewrite"}, REWRITE, (G0,),
      G0, "deny list", id="privileged all minus a denied GPU and its MIG devices"),
    # -- driver capabilities ----------------------------------------------------------------------
    P({"env": [nvd(G0), "NVIDIA_DRIVER_CAPABILITIES=all"]},
      {"driver_capabilities": ("compute", "utility")}, DENY, (), G0,
      "NVIDIA_DRIVER_CAPABILITIES=all: capabilities not allowed: compat32, graphics, video, "
      "display, ngx (policy.driver-capabilities)", id="capabilities outside the set: deny"),
    P({"env": [nvd(G0), "NVIDIA_DRIVER_CAPABILITIES=all"]},
      {"driver_capabilities": ("compute", "utility"), "mode": "rewrite"}, REWRITE, (G0,), G0,
      "capabilities not allowed", id="capabilities, rewrite: narrowed"),
    P({"env": [nvd(G0)]}, {"driver_capabilities": ("compute",)}, DENY, (), G0,
      "NVIDIA_DRIVER_CAPABILITIES (unset, default utility,compute): capabilities not allowed: "
      "utility", id="the default capabilities are judged too"),
    P({"env": [nvd(G0)]}, {"driver_capabilities": (), "mode": "rewrite"}, DENY, (), G0,
      "capabilities not allowed: utility, compute",
      id="no capability allowed: rewrite cannot help (empty reads as the default)"),
    P({"env": ["CUDA_VERSION=12.4"], "caps": ADMIN},
      {"driver_capabilities": ("compute", "utility")}, DENY, (), None,
      "NVIDIA_DRIVER_CAPABILITIES (unset; legacy image: all): capabilities not allowed: "
      "compat32, graphics, video, display, ngx",
      id="legacy image with capabilities unset gets all of them: judged as such"),
    P({"env": ["CUDA_VERSION=12.4", nvd(G0)]},
      {"driver_capabilities": ("compute", "utility"), "mode": "rewrite"}, REWRITE, (G0,), G0,
      "legacy image: all", id="legacy image, capabilities unset, rewrite: narrowed explicitly"),
    P({"env": [nvd(G0), "NVIDIA_DRIVER_CAPABILITIES=graphics,video"]}, {}, ALLOW, (G0,), G0,
      None, id="default policy allows all seven capabilities"),
    # -- MIG management ----------------------------------------------------------------------------
    P({"env": [nvd("none"), "NVIDIA_MIG_CONFIG_DEVICES=all"]}, {}, DENY, (), "none",
      'NVIDIA_MIG_CONFIG_DEVICES=all: MIG management needs a privileged container '
      '(policy.mig-config = "privileged")', id="MIG config, unprivileged: deny"),
    P({"env": [nvd("none"), "NVIDIA_MIG_MONITOR_DEVICES=all"], "caps": ADMIN}, {}, ALLOW, (),
      "none", None, id="MIG monitor, privileged: allow"),
    P({"env": [nvd("none"), "NVIDIA_MIG_CONFIG_DEVICES=all"], "caps": ADMIN},
      {"mig_config": "never"}, DENY, (), "none",
      'MIG management is not allowed (policy.mig-config = "never")',
      id="MIG config never: even privileged is refused"),
    P({"env": [nvd("none"), "NVIDIA_MIG_CONFIG_DEVICES=all"]}, {"mode": "rewrite"}, REWRITE, (),
      "none", "MIG management", id="MIG config, rewrite: the variables are removed"),
    # -- device nodes ------------------------------------------------------------------------------
    P({"env": [nvd("none")], "devices": ["/dev/nvidia0"]}, {"device_nodes": "deny"}, DENY, (),
      "none", 'linux.devices[0] /dev/nvidia0 (c 195:0): GPU device nodes may not be passed in '
      '(policy.device-nodes = "deny")', id="device-nodes deny"),
    P({"devices": ["/dev/nvidia1"]}, {"device_nodes": "deny", "mode": "rewrite"}, DENY, (), None,
      "GPU device nodes", id="device-nodes deny cannot be rewritten away"),
    P({"devices": ["/dev/nvidia1"]}, {}, ALLOW, (G1,), None, None,
      id="device-nodes judge: a GPU node alone is allowed and granted"),
    P({"env": [nvd("none")], "devices": ["/dev/nvidiactl"]}, {"device_nodes": "deny"}, ALLOW, (),
      "none", None, id="device-nodes deny: control nodes are fine"),
    # -- audit -------------------------------------------------------------------------------------
    P({"env": [nvd("0,GPU-00000000-0000-4000-8000-000000000000")]}, {"mode": "audit"}, ALLOW,
      (G0,), "0,GPU-00000000-0000-4000-8000-000000000000", "live inventory",
      id="audit: unknown id recorded, env untouched"),
    P({"env": [nvd("0")]}, {"mode": "audit", "indices": "deny"}, ALLOW, (G0,), "0", "not a UUID",
      id="audit: index recorded as a violation, not pinned"),
    P({"env": [nvd(G0)], "devices": ["/dev/nvidia0"]}, {"mode": "audit", "device_nodes": "deny"},
      ALLOW, (G0,), G0, "GPU device nodes", id="audit: even unfixable violations are allowed"),
    # -- inventory unavailable --------------------------------------------------------------
    P({"env": [nvd(G0)], "inventory": DOWN}, {}, DENY, (), G0,
      f"NVIDIA_VISIBLE_DEVICES={G0}: GPU inventory unavailable: NVML: driver not loaded "
      "(fail closed)", id="inventory down, enforce: fail closed"),
    P({"env": [nvd(G0)], "inventory": DOWN}, {"mode": "rewrite"}, DENY, (), G0, "fail closed",
      id="inventory down, rewrite: fail closed"),
    P({"env": [nvd(G0)], "inventory": DOWN}, {"mode": "audit"}, DENY, (), G0, "fail closed",
      id="inventory down, audit: fail closed"),
    P({"env": [nvd("all")], "caps": ADMIN, "inventory": DOWN}, {"all": "always"}, DENY, (), "all",
      "fail closed", id="inventory down, privileged all: fail closed"),
    P({"env": ["CUDA_VERSION=12"], "inventory": DOWN}, {"mode": "audit"}, DENY, (), None,
      "legacy image", id="inventory down, legacy image: fail closed"),
    P({"mounts": [device_mount("0")], "inventory": DOWN}, {}, DENY, (), None,
      f"mount /dev/null -> {ROOT}/0: GPU inventory unavailable", id="inventory down, mount"),
    P({"annotations": {"cdi.k8s.io/a": "nvidia.com/gpu=0"}, "inventory": DOWN}, {}, DENY, (),
      None, "annotation cdi.k8s.io/a=nvidia.com/gpu=0: GPU inventory unavailable",
      id="inventory down, CDI annotation"),
    P({"env": [nvd("none")], "inventory": DOWN}, {}, ALLOW, (), "none", None,
      id="inventory down: a none-only request needs no inventory"),
    P({"env": [nvd("void")], "inventory": DOWN}, {}, SKIP, (), "void", None,
      id="inventory down: void is still a skip"),
    # -- swarm resource ---------------------------------------------------------------------
    P({"env": ["DOCKER_RESOURCE_GPU=0", nvd("all")], "swarm": ("DOCKER_RESOURCE_GPU",)}, {},
      REWRITE, (G0,), G0, None,
      id="swarm variable wins over NVIDIA_VISIBLE_DEVICES=all, pinned into the variable"),
    P({"env": ["DOCKER_RESOURCE_GPU=all"], "swarm": ("DOCKER_RESOURCE_GPU",)}, {}, DENY, (), None,
      "DOCKER_RESOURCE_GPU=all: an unprivileged container may not have every GPU",
      id="swarm variable all: the reason names the swarm variable"),
]


@pytest.mark.parametrize(("container", "overrides", "outcome", "granted", "after", "reason"),
                         DECISIONS)
def test_decision_table(container, overrides, outcome, granted, after, reason):
    d, spec = run(container, overrides)
    assert d.outcome is outcome
    assert d.granted == granted
    values = env_values(d.env, NVD)
    if after is None:
        assert values == []
    elif isinstance(after, str):
        assert values == [after]
    else:
        assert values == after
    if reason is None:
        assert d.violations == ()
    else:
        assert d.violations, "expected a violation"
        assert reason in d.reasons[0]
    # Only a rewrite carries an edited document; nothing else touches the env.
    if outcome is REWRITE:
        assert d.doc is not None and d.doc != spec.doc
        assert d.doc["process"]["env"] == list(d.env)
    else:
        assert d.doc is None
        assert d.env == spec.env
    if outcome is DENY:
        assert d.granted == ()


# -- the rewrites in detail ---------------------------------------------------------------------

def test_rewrite_keeps_other_entries_in_order_and_places_the_variable_first_seen():
    d, _ = run({"env": ["A=1", nvd("1"), "B=2", nvd("0"), "C=3", nvd("0")]}, {})
    assert d.outcome is REWRITE
    assert d.env == ("A=1", nvd(G0), "B=2", "C=3")


# -- an env entry without "=": NVIDIA's hook fails on it, runc refuses it -------------------

MALFORMED = [
    P(["X", nvd("0")], {}, DENY, 'process.env[0] "X": an env entry without "="',
      id="enforce: denied, the entry and its index named"),
    P([nvd("0"), "X"], {"mode": "rewrite"}, DENY, 'process.env[1] "X"',
      id="rewrite: denied too (dropping it would start what runc refuses)"),
    P([nvd("0"), "X"], {"mode": "audit"}, DENY, 'process.env[1] "X"',
      id="audit: denied too (the container cannot start anyway)"),
    P(["A\x1bB\u2028", nvd("0")], {}, DENY, 'process.env[0] "A\\x1bB\\u2028"',
      id="control characters in the entry are escaped"),
    P([nvd("0"), NVD], {}, DENY, 'process.env[1] "NVIDIA_VISIBLE_DEVICES"',
      id="the GPU variable itself without a value"),
    P(["X", "PATH=/bin"], {}, SKIP, None, id="no GPU asked: not affected"),
    P([NVD], {}, SKIP, None, id="only a bare NVIDIA_VISIBLE_DEVICES: asks for nothing"),
]


@pytest.mark.parametrize(("env", "overrides", "outcome", "reason"), MALFORMED)
def test_env_entry_without_equals(env, overrides, outcome, reason):
    d, spec = run({"env": env}, overrides)
    assert d.outcome is outcome
    if reason is None:
        assert d.violations == ()
    else:
        assert d.denial.startswith(reason), d.denial
        assert "\n" not in d.denial and "\u2028" not in d.denial and "\x1b" not in d.denial
        assert d.granted == () and d.doc is None and d.env == spec.env


def test_legacy_void_is_appended_never_deleted():
    d, _ = run({"env": ["PATH=/bin", "CUDA_VERSION=12.4"]}, {"mode": "rewrite"})
    assert d.env == ("PATH=/bin", "CUDA_VERSION=12.4", nvd("void"))


def test_rewrite_leaves_the_rest_of_the_document_alone():
    d, spec = run({"env": [nvd("0")], "annotations": {"a": "b"}}, {})
    before = spec.doc
    assert d.doc is not before
    after = dict(d.doc)
    after["process"] = dict(after["process"], env=before["process"]["env"])
    assert after == before
    assert before["process"]["env"] == [nvd("0")]  # the spec's own doc is not mutated


def test_swarm_variables_are_removed_and_the_variable_is_canonical():
    d, _ = run({"env": ["A=1", "X=x", "B=0", nvd("all")], "swarm": ("A", "B")}, {})
    assert d.outcome is REWRITE
    assert d.env == ("X=x", nvd(f"{G1},{G0}"))
    assert d.granted == (G1, G0)


def test_swarm_variable_without_nvidia_visible_devices_appends_it():
    d, _ = run({"env": ["A=0", "X=x"], "swarm": ("A",)}, {})
    assert d.env == ("X=x", nvd(G0))


def test_capabilities_rewrite_narrows_in_place():
    d, _ = run({"env": ["NVIDIA_DRIVER_CAPABILITIES=graphics,compute,video", nvd(G0)]},
               {"mode": "rewrite", "driver_capabilities": ("compute", "utility", "video")})
    assert d.outcome is REWRITE
    assert d.env == ("NVIDIA_DRIVER_CAPABILITIES=compute,video", nvd(G0))


@pytest.mark.parametrize(
    ("allowed", "written"),
    [
        P(("utility", "video"), "utility", id="nothing wanted is allowed: utility when allowed"),
        P(("video", "ngx"), "video", id="nothing wanted is allowed: the first allowed one"),
    ],
)
def test_capabilities_rewrite_fallback(allowed, written):
    d, _ = run({"env": [nvd(G0), "NVIDIA_DRIVER_CAPABILITIES=graphics"]},
               {"mode": "rewrite", "driver_capabilities": allowed})
    assert env_values(d.env, "NVIDIA_DRIVER_CAPABILITIES") == [written]


def test_legacy_capabilities_rewrite_writes_the_narrowed_set():
    d, _ = run({"env": ["CUDA_VERSION=12.4", nvd(G0)]},
               {"mode": "rewrite", "driver_capabilities": ("compute", "utility", "graphics")})
    assert d.env == ("CUDA_VERSION=12.4", nvd(G0),
                     "NVIDIA_DRIVER_CAPABILITIES=compute,graphics,utility")


def test_mig_rewrite_removes_both_variables():
    d, _ = run({"env": ["NVIDIA_MIG_CONFIG_DEVICES=all", nvd("none"),
                        "NVIDIA_MIG_MONITOR_DEVICES=all", "Z=1"]}, {"mode": "rewrite"})
    assert d.env == (nvd("none"), "Z=1")


def test_mount_rewrite_pins_destinations_and_keeps_other_mounts():
    d, _ = run({"mounts": [device_mount("0"), mount("/data", "/data"), device_mount("1:1"),
                           device_mount("imex/0")], "caps": ADMIN}, {})
    assert d.outcome is REWRITE
    assert [(m["source"], m["destination"]) for m in d.doc["mounts"]] == [
        ("proc", "/proc"),
        ("/dev/null", f"{ROOT}/{G0}"),
        ("/data", "/data"),
        ("/dev/null", f"{ROOT}/{MB}"),
        ("/dev/null", f"{ROOT}/imex/0"),
    ]
    assert d.doc["mounts"][1]["options"] == ["ro", "nosuid", "nodev", "bind"]


def test_mount_rewrite_collapses_two_spellings_of_one_device():
    d, _ = run({"mounts": [device_mount("0"), mount("/dev/null", f"{ROOT}/./0/"),
                           device_mount(G0)]}, {})
    pinned = [m for m in d.doc["mounts"] if m["destination"].startswith(ROOT)]
    assert [m["destination"] for m in pinned] == [f"{ROOT}/{G0}"]


def test_duplicate_device_mount_cannot_smuggle_a_refused_id():
    mounts = [device_mount(G0), device_mount("1"), mount("//dev/null", f"{ROOT}//1"),
              mount("/dev/../dev/null", "/var/run/x/../nvidia-container-devices/1")]
    d, _ = run({"mounts": mounts}, {"mode": "rewrite", "allow": [G0]})
    assert d.outcome is REWRITE
    assert [m["destination"] for m in d.doc["mounts"]] == ["/proc", f"{ROOT}/{G0}"]
    again = parse(spec_from(d.doc))
    assert [m.id for m in again.mounts] == [G0]


def test_mount_ignore_keeps_forged_and_unrelated_mounts():
    mounts = [device_mount("0"), device_mount("1", source="/dev/zero"), mount("/x", "/y")]
    d, _ = run({"mounts": mounts}, {"volume_mounts": "ignore"})
    assert [(m["source"], m["destination"]) for m in d.doc["mounts"]] == [
        ("proc", "/proc"), ("/dev/zero", f"{ROOT}/1"), ("/x", "/y"),
    ]


def test_cdi_rewrite_keeps_other_vendors_and_other_annotations():
    ann = {
        "cdi.k8s.io/a": "vendor.com/fpga=0,nvidia.com/gpu=1,nvidia.com/gpu=0",
        "cdi.k8s.io/b": "nvidia.com/gpu=1",
        "cdi.k8s.io/c": "nvidia.com/imex-channel=0",
        "io.kubernetes.pod.namespace": "team-a",
    }
    d, _ = run({"annotations": ann}, {"mode": "rewrite", "deny": [G1], "imex": "always"})
    assert d.outcome is REWRITE
    assert d.granted == (G0,)
    assert d.doc["annotations"] == {
        "cdi.k8s.io/a": "vendor.com/fpga=0,nvidia.com/gpu=0",
        "cdi.k8s.io/c": "nvidia.com/imex-channel=0",
        "io.kubernetes.pod.namespace": "team-a",
    }
    assert d.imex == ("0",)


def test_cdi_name_repeated_in_a_second_annotation_cannot_smuggle_a_refused_gpu():
    ann = {"cdi.k8s.io/a": "nvidia.com/gpu=1", "cdi.k8s.io/b": "nvidia.com/gpu=1"}
    d, _ = run({"annotations": ann}, {"mode": "rewrite", "deny": [G1]})
    assert d.outcome is REWRITE
    assert d.doc["annotations"] == {}
    again = parse(spec_from(d.doc))
    assert again.nvidia_cdi == ()


def test_cdi_repeated_allowed_name_is_kept_verbatim():
    ann = {"cdi.k8s.io/a": "nvidia.com/gpu=0", "cdi.k8s.io/b": "nvidia.com/gpu=0"}
    d, _ = run({"annotations": ann}, {"mode": "rewrite"})
    assert d.outcome is ALLOW
    assert d.granted == (G0,)


def test_malformed_nvidia_cdi_name_is_dropped_on_rewrite():
    d, _ = run({"annotations": {"cdi.k8s.io/a": "nvidia.com/gpu,nvidia.com/gpu=0"}},
               {"mode": "rewrite"})
    assert d.outcome is REWRITE
    assert d.reasons == ["annotation cdi.k8s.io/a=nvidia.com/gpu: device 'nvidia.com/gpu': "
                         "unknown device (live inventory)"]
    assert d.doc["annotations"] == {"cdi.k8s.io/a": "nvidia.com/gpu=0"}


def test_every_channel_is_judged_and_every_violation_listed():
    d, _ = run({"env": [nvd("all")], "mounts": [device_mount("7")],
                "annotations": {"cdi.k8s.io/a": "nvidia.com/gpu=9"}}, {})
    assert d.outcome is DENY
    assert len(d.violations) == 3
    assert d.denial == f"{UNPRIV_ALL} (and 2 more)"
    assert d.violations[1].label == f"mount /dev/null -> {ROOT}/7"
    assert d.violations[2].label == "annotation cdi.k8s.io/a=nvidia.com/gpu=9"


def test_denial_of_one_violation_is_its_text():
    d, _ = run({"env": [nvd("all")]}, {})
    assert d.denial == UNPRIV_ALL
    assert str(d.violations[0]) == UNPRIV_ALL
    assert d.violations[0] == Violation(
        "NVIDIA_VISIBLE_DEVICES=all", "an unprivileged container may not have every GPU",
        'policy.all = "privileged"')


# -- policy rules picked by annotations -------------------------------------------------------

RULES = f"""
[policy]
mode = "enforce"

[[policy.rules]]
name = "trusted-ns"
match.annotations = {{ "io.kubernetes.pod.namespace" = "kube-system|gpu-operator" }}
all = "always"

[[policy.rules]]
name = "tenant-b"
match.annotations = {{ "io.kubernetes.pod.namespace" = "tenant-b" }}
allow = ["{G0}"]
mode = "rewrite"
"""


@pytest.mark.parametrize(
    ("namespace", "env", "outcome", "granted", "reason"),
    [
        P("default", [nvd("all")], DENY, (), 'policy.all = "privileged")',
          id="no rule: base policy denies all"),
        P("gpu-operator", [nvd("all")], REWRITE, ALL_UUIDS, None,
          id="trusted namespace rule: all = always"),
        P("tenant-b", [nvd("all")], REWRITE, (), "rule 'tenant-b'",
          id="tenant rule: rewrite mode, reason names the rule"),
        P("tenant-b", [nvd("0,1")], REWRITE, (G0,),
          f"{G1} is not on the allow list (policy.allow, rule 'tenant-b')",
          id="tenant rule: allow list narrows, rule named"),
        P("tenant-b-dev", [nvd("1")], REWRITE, (G1,), None,
          id="rule patterns are anchored: tenant-b-dev is not tenant-b"),
    ],
)
def test_rules_change_the_outcome(namespace, env, outcome, granted, reason):
    cfg = config.parse(RULES.encode(), Path("/etc/nvhook/config.toml"))
    spec = make_spec(env=env, annotations={"io.kubernetes.pod.namespace": namespace})
    pol = cfg.policy_for(spec.annotations)
    d = decide(parse(spec), INV, pol, spec)
    assert d.outcome is outcome
    assert d.granted == granted
    if reason is None:
        assert d.violations == ()
    else:
        assert reason in d.reasons[0]


def test_rule_name_in_an_all_denial():
    cfg = config.parse(b'[[policy.rules]]\nname = "strict"\nmatch.annotations = { t = "x" }\n'
                       b'all = "never"\n', Path("/c.toml"))
    spec = make_spec(env=[nvd("all")], caps=ADMIN, annotations={"t": "x"})
    d = decide(parse(spec), INV, cfg.policy_for(spec.annotations), spec)
    assert d.denial == ("NVIDIA_VISIBLE_DEVICES=all: no container may have every GPU "
                        "(policy.all = \"never\", rule 'strict')")


# -- helpers ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("container", "needed"),
    [
        P({"env": [nvd("none")]}, False, id="none needs no inventory"),
        P({"env": [nvd("void")]}, False, id="void needs none"),
        P({"env": []}, False, id="unset needs none"),
        P({"env": [nvd("all")]}, True, id="all needs it"),
        P({"env": [nvd(G0)]}, True, id="a UUID needs it (is it live?)"),
        P({"env": ["CUDA_VERSION=1"]}, True, id="legacy implicit all needs it"),
        P({"mounts": [device_mount("0")]}, True, id="a device mount needs it"),
        P({"annotations": {"cdi.k8s.io/a": "nvidia.com/gpu=0"}}, True, id="nvidia CDI needs it"),
        P({"annotations": {"cdi.k8s.io/a": "nvidia.com/imex-channel=0"}}, False,
          id="CDI IMEX channel does not"),
        P({"devices": ["/dev/nvidia0"]}, True, id="a GPU device node needs it (minor live?)"),
        P({"devices": ["/dev/nvidiactl"]}, False, id="a control node does not"),
    ],
)
def test_needs_inventory(container, needed):
    assert needs_inventory(parse(make_spec(**container))) is needed


@pytest.mark.parametrize(
    ("env", "replace", "expected"),
    [
        P(("A=1", "B=2"), {"A": "A=9"}, ("A=9", "B=2"), id="replace in place"),
        P(("A=1", "B=2", "A=3"), {"A": "A=9"}, ("A=9", "B=2"), id="duplicates collapse at first"),
        P(("B=2",), {"A": "A=9"}, ("B=2", "A=9"), id="absent: appended"),
        P(("A=1", "B=2"), {"A": None}, ("B=2",), id="None removes"),
        P(("S=1", "B=2", "N=0"), {"N": "N=x", "S": None}, ("B=2", "N=x"),
          id="removed swarm name, variable kept at its place"),
        P(("A", "A=1"), {"A": "A=2"}, ("A", "A=2"), id="entries without '=' are left alone"),
        P((), {"A": None}, (), id="removing an absent name"),
    ],
)
def test_rewrite_entries(env, replace, expected):
    assert rewrite_entries(env, replace) == expected


def test_default_policy_is_enforce_privileged_all():
    p = Policy()
    assert (p.mode.value, p.all.value, p.unprivileged_env.value) == (
        "enforce", "privileged", "accept",
    )


# -- IMEX channels -----------------------------------------------------------------------------
# (container, policy overrides, NVIDIA's config (None: the union view), outcome, the IMEX channels
# NVIDIA's stack attaches afterwards, NVIDIA_IMEX_CHANNELS afterwards (None: as it came), the
# start of the denial line or first reason (None: no violation)).
IMEX = "NVIDIA_IMEX_CHANNELS"
GPU = [nvd(G0)]
NV_DEFAULT = NvidiaConfig()
NV_MOUNTS = NvidiaConfig(path="t", accept_volume_mounts=True)
NV_ENV_OFF = NvidiaConfig(path="t", accept_env_unprivileged=False)
NV_IGNORE = NvidiaConfig(path="t", ignore_imex_requests=True)
UNPRIV_IMEX = ("an unprivileged container may not have IMEX channels "
               '(policy.imex = "privileged")')


def imex(value: str) -> str:
    return f"{IMEX}={value}"


IMEX_DECISIONS = [
    P({"env": [*GPU, imex("0")]}, {}, None, DENY, (), None,
      f"{IMEX}=0: IMEX channel 0: {UNPRIV_IMEX}", id="unprivileged, default policy: denied"),
    P({"env": [*GPU, imex("0")], "caps": ADMIN}, {}, None, ALLOW, ("0",), None, None,
      id="privileged, default policy: admitted"),
    P({"env": [*GPU, imex("0")]}, {"imex": "always"}, None, ALLOW, ("0",), None, None,
      id="imex = always: an unprivileged container admitted"),
    P({"env": [*GPU, imex("0")], "caps": ADMIN}, {"imex": "never"}, None, DENY, (), None,
      f'{IMEX}=0: IMEX channel 0: no container may have IMEX channels (policy.imex = "never")',
      id="imex = never: a privileged container denied"),
    P({"env": [*GPU, imex("0")]}, {"mode": "rewrite"}, None, REWRITE, (), "void", UNPRIV_IMEX,
      id="rewrite: the refused channel becomes void, the GPU kept"),
    P({"env": [*GPU, imex("0,1")], "caps": ADMIN}, {"mode": "rewrite", "imex_channels": [1]},
      None, REWRITE, ("1",), "1", "IMEX channel 0: not on the allow list (policy.imex-channels)",
      id="rewrite: only the allowed channel is kept"),
    P({"env": [*GPU, imex("0,1")], "caps": ADMIN}, {"imex_channels": [1]}, None, DENY, (), None,
      f"{IMEX}=0,1: IMEX channel 0: not on the allow list (policy.imex-channels)",
      id="enforce: a channel off the allow list denies"),
    P({"env": [*GPU, imex("00")], "caps": ADMIN}, {"imex_channels": [0]}, None, ALLOW, ("00",),
      None, None, id="00 is channel 0, as libnvidia-container parses it"),
    P({"env": [*GPU, imex("ALL")], "caps": ADMIN}, {}, None, DENY, (), None,
      f"{IMEX}=ALL: IMEX channel ALL: not a channel number", id="ALL is no channel number"),
    P({"env": [*GPU, imex("all")]}, {}, None, ALLOW, (), None, None,
      id="all: NVIDIA attaches no channel, nothing to judge"),
    P({"env": [*GPU, imex("void")]}, {"mode": "rewrite"}, None, ALLOW, (), None, None,
      id="void: nothing to judge, nothing rewritten"),
    P({"env": [imex("0")]}, {}, None, SKIP, (), None, None,
      id="IMEX without a GPU request: NVIDIA attaches nothing, skipped"),
    P({"env": [*GPU, imex("0")]}, {"mode": "audit"}, None, ALLOW, ("0",), None, UNPRIV_IMEX,
      id="audit: admitted as asked, the violation recorded"),
    P({"env": [*GPU, imex("0")]}, {}, NV_DEFAULT, DENY, (), None, UNPRIV_IMEX,
      id="NVIDIA's defaults read an unprivileged env: denied"),
    P({"env": [imex("0")], "annotations": {"cdi.k8s.io/g": "nvidia.com/gpu=0"}}, {}, NV_ENV_OFF,
      ALLOW, (), None, None, id="unprivileged env not accepted by NVIDIA: not read, not judged"),
    P({"env": [*GPU, imex("0")]}, {}, NV_IGNORE, ALLOW, (), None, None,
      id="ignore-imex-channel-requests: NVIDIA reads no channel"),
    P({"env": [*GPU, imex("0")], "mounts": [device_mount("imex/1")]}, {"mode": "rewrite"},
      NV_MOUNTS, REWRITE, (), "void", f"mount /dev/null -> {ROOT}/imex/1: IMEX channel 1",
      id="mounts read: the refused mount goes and the env fallback is voided"),
    P({"env": [*GPU, imex("0")], "mounts": [device_mount("imex/1")]}, {}, NV_DEFAULT, DENY, (),
      None, f"{IMEX}=0: IMEX channel 0",
      id="mounts not accepted: the env is what is judged"),
    P({"annotations": {"cdi.k8s.io/i": "nvidia.com/imex-channel=3"}}, {}, None, DENY, (), None,
      f"annotation cdi.k8s.io/i=nvidia.com/imex-channel=3: IMEX channel 3: {UNPRIV_IMEX}",
      id="CDI imex-channel name, unprivileged: denied"),
    P({"annotations": {"cdi.k8s.io/i": "nvidia.com/imex-channel=3"}}, {"imex": "always"},
      NV_IGNORE, ALLOW, ("3",), None, None,
      id="CDI imex-channel name counts even under ignore-imex-channel-requests"),
    P({"annotations": {"cdi.k8s.io/i": "nvidia.com/imex-channel=3,nvidia.com/gpu=0"}},
      {"mode": "rewrite"}, None, REWRITE, (), None, UNPRIV_IMEX,
      id="rewrite: the refused CDI name is dropped, the GPU name kept"),
]


@pytest.mark.parametrize(("container", "overrides", "nvidia", "outcome", "channels", "after",
                          "reason"), IMEX_DECISIONS)
def test_imex_decision(container, overrides, nvidia, outcome, channels, after, reason):
    spec = make_spec(**container)
    d = decide(parse(spec, nvidia=nvidia), INV, policy(**overrides), spec)
    assert d.outcome is outcome, d.reasons
    assert d.imex == channels
    values = env_values(d.env, IMEX)
    assert values == ([after] if after is not None else env_values(spec.env, IMEX))
    if reason is None:
        assert d.violations == ()
    else:
        assert d.reasons and reason in d.reasons[0], d.reasons
    if outcome is REWRITE:
        # What NVIDIA's stack reads from the rewritten spec is exactly what was kept.
        again = parse(spec_from(d.doc), nvidia=nvidia)
        assert tuple(c.id for c in again.imex.channels) == channels
        assert decide(again, INV, policy(**overrides), spec_from(d.doc)).violations == ()


def test_imex_rewrite_drops_every_spelling_of_a_refused_mount():
    mounts = [device_mount("imex/1"), mount("/dev/null", f"{ROOT}/./imex//1/"),
              mount("/data", "/data"), device_mount(G0)]
    spec = make_spec(mounts=mounts, caps=ADMIN)
    d = decide(parse(spec, nvidia=NV_MOUNTS), INV, policy(mode="rewrite", imex_channels=[2]), spec)
    assert d.outcome is REWRITE
    assert [m["destination"] for m in d.doc["mounts"]] == ["/proc", "/data", f"{ROOT}/{G0}"]


def test_imex_rewrite_leaves_every_other_mount_alone():
    mounts = [device_mount("7", source="/dev/zero"), device_mount("imex/1"), mount("/x", "/y")]
    spec = make_spec(env=GPU, mounts=mounts)
    d = decide(parse(spec, nvidia=NV_MOUNTS), INV, policy(mode="rewrite"), spec)
    assert d.outcome is REWRITE
    assert d.doc["mounts"] == [spec.doc["mounts"][i] for i in (0, 1, 3)]
    assert d.imex == ()


# -- IMEX channels reached by device node or cgroup rule (CDI's nvidia.com/imex-channel=N) ------
# A node /dev/nvidia-caps-imex-channels/channelN (the nvidia-caps-imex-channels major, minor N)
# reaches channel N through runc, whatever the env says and with no GPU request: judged by the
# same policy.imex / imex-channels. (container, policy overrides, before creation, outcome,
# IMEX channels granted, linux.devices paths afterwards, cgroup rules afterwards as
# (major, minor), the start of the first reason (None: no violation)).
CH0 = node("/dev/nvidia-caps-imex-channels/channel0")
CH1 = node("/dev/nvidia-caps-imex-channels/channel1", IMEX_MAJOR, 1)
CH_RULES = [rule(False, None, None, None, "rwm"), rule(True, "c", IMEX_MAJOR, 0, "rw"),
            rule(True, "c", IMEX_MAJOR, 1, "rw")]
CDI_CH = document([nvd("void")], devices=[CH0, CH1], rules=CH_RULES)
CDI_CH_ADMIN = document([nvd("void")], ADMIN, devices=[CH0, CH1], rules=CH_RULES)
ONLY_CH0 = document([], devices=[CH0])
CH_WILD = document([], ADMIN, devices=[CH0, CH1], rules=[rule(True, "c", IMEX_MAJOR, None, "rw")])
NODE_LABEL = "linux.devices[0] /dev/nvidia-caps-imex-channels/channel0 (c 241:0)"
P0, P1 = CH0["path"], CH1["path"]
ALL_RULES = [(None, None), (IMEX_MAJOR, 0), (IMEX_MAJOR, 1)]

IMEX_NODE_DECISIONS = [
    P(ONLY_CH0, {}, False, DENY, (), [P0], [], f"{NODE_LABEL}: IMEX channel 0: {UNPRIV_IMEX}",
      id="unprivileged, only a channel node, default policy: denied (not skipped)"),
    P(ONLY_CH0, {"mode": "rewrite"}, False, DENY, (), [P0], [], UNPRIV_IMEX,
      id="prestart, rewrite: the node exists, so denied"),
    P(ONLY_CH0, {"mode": "rewrite"}, True, REWRITE, (), [], [], UNPRIV_IMEX,
      id="before creation, rewrite: the node is removed"),
    P(ONLY_CH0, {}, True, DENY, (), [P0], [], UNPRIV_IMEX,
      id="before creation, enforce: denied"),
    P(ONLY_CH0, {"mode": "audit"}, False, ALLOW, ("0",), [P0], [], UNPRIV_IMEX,
      id="audit: admitted as asked, the violation recorded"),
    P(ONLY_CH0, {"imex": "always"}, False, ALLOW, ("0",), [P0], [], None,
      id="imex = always: unprivileged admitted"),
    P(ONLY_CH0, {"imex": "never"}, True, DENY, (), [P0], [],
      'IMEX channel 0: no container may have IMEX channels (policy.imex = "never")',
      id="imex = never, unprivileged: denied"),
    P(document([], ADMIN, devices=[CH0]), {}, False, ALLOW, ("0",), [P0], [], None,
      id="privileged, default policy: admitted"),
    P(document([], ADMIN, devices=[CH0]), {"imex": "never", "mode": "rewrite"}, True, REWRITE,
      (), [], [], "no container may have IMEX channels",
      id="imex = never, privileged, before creation: removed"),
    P(document([], ADMIN, devices=[CH0]), {"imex": "never", "mode": "rewrite"}, False, DENY,
      (), [P0], [], "no container may have IMEX channels",
      id="imex = never, privileged, prestart: denied"),
    P(CDI_CH_ADMIN, {"imex_channels": [1]}, False, DENY, (), [P0, P1], ALL_RULES,
      "IMEX channel 0: not on the allow list (policy.imex-channels)",
      id="privileged, allow list [1], enforce: channel 0 denies"),
    P(CDI_CH_ADMIN, {"imex_channels": [1], "mode": "rewrite"}, True, REWRITE, ("1",), [P1],
      [(None, None), (IMEX_MAJOR, 1)], "IMEX channel 0: not on the allow list",
      id="allow list [1], before creation: channel 0's node and rule go, 1's stay"),
    P(CDI_CH, {"imex": "always", "imex_channels": [0, 1]}, False, ALLOW, ("0", "1"), [P0, P1],
      ALL_RULES, None, id="unprivileged, always, both on the allow list: admitted"),
    P(CH_WILD, {}, False, ALLOW, ("0", "1", "all"), [P0, P1], [(IMEX_MAJOR, None)], None,
      id="privileged wildcard channel rule, no allow list: every channel admitted"),
    P(CH_WILD, {"imex_channels": [0], "mode": "rewrite"}, True, REWRITE, ("0",), [P0],
      [(IMEX_MAJOR, 0)], "IMEX channel 1: not on the allow list",
      id="wildcard channel rule, allow list [0]: narrowed to the node kept"),
    P(CH_WILD, {"imex_channels": [0], "mode": "rewrite"}, False, DENY, (), [P0, P1],
      [(IMEX_MAJOR, None)], "IMEX channel 1", id="the same at prestart: denied"),
    P(document([], rules=[rule(True, "c", IMEX_MAJOR, 5, "rw")]), {}, False, DENY, (), [],
      [(IMEX_MAJOR, 5)],
      "IMEX channel 5: an unprivileged", id="a rule alone reaches channel 5 (CAP_MKNOD)"),
    P(document([], rules=[rule(True, None, None, None, "rwm")]),
      {"all": "always", "mode": "rewrite"}, True, DENY, (), [], [(None, None)],
      "IMEX channel all: an unprivileged container may not have IMEX channels",
      id="unprivileged a *:* rwm under all = always: every channel, not narrowable"),
    P(document([], ADMIN, devices=[CH0], rules=[rule(True, None, None, None, "rwm")]),
      {"imex": "never"}, False, DENY, (), [P0], [(None, None)],
      "every IMEX channel too, and no container may have IMEX channels",
      id="privileged every device under imex = never: denied"),
    P(document([], ADMIN, devices=[CH0], rules=[rule(True, None, None, None, "rwm")]),
      {"imex_channels": [3]}, False, ALLOW, (), [P0], [(None, None)], None,
      id="privileged every device: judged by policy.imex only, as policy.all judges GPUs"),
    P(document([nvd(G0), "NVIDIA_IMEX_CHANNELS=void"], devices=[CH0]), {"mode": "rewrite"},
      True, REWRITE, (), [], [], UNPRIV_IMEX,
      id="the env says void, the node still reaches channel 0: removed, the GPU kept"),
]


@pytest.mark.parametrize(("doc", "overrides", "before", "outcome", "channels", "nodes",
                          "rules", "reason"), IMEX_NODE_DECISIONS)
def test_imex_node_decision(doc, overrides, before, outcome, channels, nodes, rules, reason):
    spec = spec_from(doc)
    request = parse(spec, host=host())
    assert request.asks_for_devices
    d = decide(request, INV, policy(**overrides), spec, before_create=before)
    assert d.outcome is outcome, d.reasons
    assert d.imex == channels
    after = spec_from(d.doc) if d.doc is not None else spec
    assert [n.path for n in after.device_nodes] == nodes
    assert [(r.major, r.minor) for r in after.device_rules] == rules
    if reason is None:
        assert d.violations == ()
    else:
        assert d.reasons and reason in d.reasons[0], d.reasons
    if outcome is REWRITE:
        again = decide(parse(after, host=host()), INV, policy(**overrides), after,
                       before_create=before)
        # Nothing left that asks for anything is skipped the second time.
        assert again.outcome is (ALLOW if channels or d.attached else SKIP), again.reasons
        assert (again.violations, again.imex) == ((), channels)


def test_imex_node_shows_in_the_request_as_node():
    request = parse(spec_from(ONLY_CH0), host=host())
    assert to_json(request)["imex"]["channels"] == [
        {"id": "0", "via": "node", "what": NODE_LABEL}]
    assert [n["reaches"] for n in to_json(request)["device_nodes"]] == ["imex"]
    assert not request.bindable  # no kubelet allocation binds an IMEX channel yet
