"""Hypothesis: random env lists, mounts, annotations, capabilities and policies.

For every input and policy: granted ⊆ (policy-allowed ∩ live), and the spec handed on attaches
exactly what was granted, GPUs and IMEX channels (``hostile.check_invariants``). And enforce
never lets through what rewrite would drop: if rewrite mode records any violation, enforce
denies; if enforce allows or rewrites, rewrite grants the same set.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from builders import CAPS_MAJOR, IMEX_MAJOR, UVM_MAJOR, device_mount, document, node, rule
from fakenvml import GPU0_BUS, GPU0_UUID, GPU1_BUS, GPU1_UUID, MIG_A_UUID, MIG_B_UUID
from hostile import OTHER_GPU0, OTHER_MIG, check_invariants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvhook.decision.decide import Outcome
from nvhook.decision.policy import (
    AllRule,
    DeviceNodes,
    Imex,
    Indices,
    MigConfig,
    Mode,
    Policy,
    Trust,
)
from nvhook.decision.request import ALL_DRIVER_CAPABILITIES

EXAMPLES = 800
FAST = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

UUIDS = [GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID, OTHER_GPU0, OTHER_MIG]
ID_TOKENS = [
    *UUIDS, GPU0_UUID.upper(), "gpu-" + GPU1_UUID[4:], f"MIG-{GPU1_UUID}/1/0",
    f"MIG-{GPU1_UUID}/2/0", f"MIG-{GPU1_UUID}/3/0", "0", "1", "2", "-1", "+0", "00",
    "99999999999999999999", "1:0", "1:1", "1:2", "0:0", GPU0_BUS, GPU1_BUS, "0:17:0.0",
    "00000000:17:00.1", "all", "ALL", "All", "none", "NONE", "void", "VOID", "", " ",
    "nvidia.com/gpu=0", "nvidia.com/gpu=all", f"nvidia.com/gpu={GPU1_UUID}", "amd.com/gpu=0",
    "nvidia.com/gpu", "GPU-", "{x}", "nvidia.com/imex-channel=0", "nvidia.com/imex-channel=1",
    "nvidia.com/imex-channel=all", "imex/0", "imex/1", "imex/", "imex/00",
]
items = st.sampled_from(ID_TOKENS)
values = st.builds(lambda xs, sep, pad: sep.join(f"{pad}{x}{pad}" for x in xs),
                   st.lists(items, max_size=4), st.sampled_from([",", ", ", ",,"]),
                   st.sampled_from(["", " "]))
NAMES = ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_VERSION",
         "NVIDIA_REQUIRE_CUDA", "NVIDIA_MIG_CONFIG_DEVICES", "NVIDIA_MIG_MONITOR_DEVICES",
         "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_IMEX_CHANNELS", "NVIDIA_IMEX_CHANNELS", "PATH",
         "LD_PRELOAD"]
env_entry = st.one_of(
    st.builds(lambda n, v: f"{n}={v}", st.sampled_from(NAMES), values),
    st.builds(lambda n, v: f"{n}={v}", st.sampled_from(NAMES[2:4]), st.sampled_from(["", "12"])),
    st.builds(lambda v: f"NVIDIA_DRIVER_CAPABILITIES={v}",
              st.sampled_from(["", "all", "compute", "utility,graphics", "video,display"])),
    st.just("NVIDIA_VISIBLE_DEVICES"),
)
ROOT = "/var/run/nvidia-container-devices"
mount = st.one_of(
    st.builds(device_mount, items.filter(bool)),
    st.builds(lambda i, s: device_mount(i, s), items.filter(bool),
              st.sampled_from(["/dev/zero", "//dev/null", "/dev/../dev/null", "/dev/null "])),
    st.builds(lambda i, d: {"source": "/dev/null", "destination": d.format(i)},
              items.filter(bool),
              st.sampled_from([ROOT + "X/{}", ROOT + "//{}", ROOT + "/x/../{}", "/run/x/{}"])),
)
annotation = st.tuples(st.sampled_from(["cdi.k8s.io/a", "cdi.k8s.io/b", "other/x"]), values)
caps = st.sampled_from([(), ("CAP_SYS_ADMIN",), ("CAP_CHOWN",), ("cap_sys_admin",)])
# Device nodes and cgroup rules by number: the path is noise, the number is the device.
MAJORS = [195, 195, 195, 195 + 4096, CAPS_MAJOR, UVM_MAJOR, IMEX_MAJOR, 1, 240, -1]
MINORS = [0, 1, 2, 7, 12, 13, 21, 22, 1, 254, 255, 300, (1 << 20) + 1, -1]
node_entry = st.one_of(
    st.sampled_from(["/dev/nvidia0", "/dev/nvidiactl", "/dev/null"]),
    st.builds(node, st.sampled_from(["/dev/nvidia0", "/dev/./nvidia1", "//dev/x", "/dev/gpu0"]),
              st.sampled_from(MAJORS), st.sampled_from(MINORS),
              st.sampled_from(["c", "c", "u", "b", "p"])),
)
devices = st.lists(node_entry, max_size=3)
cgroup_rule = st.builds(
    rule, st.sampled_from([True, True, False]), st.sampled_from(["c", "a", "b", None]),
    st.sampled_from([195, 195, None, CAPS_MAJOR, IMEX_MAJOR, -1, (1 << 32) + 195, 10]),
    st.sampled_from([None, 0, 1, 12, 255, -1]), st.sampled_from(["rwm", "rw", "r", "m", ""]))
rules = st.lists(cgroup_rule, max_size=3)


@st.composite
def docs(draw: Any) -> dict[str, Any]:
    bounding = draw(caps)
    return document(
        env=draw(st.lists(env_entry, max_size=6)),
        caps=bounding,
        mounts=draw(st.lists(mount, max_size=3)),
        annotations=dict(draw(st.lists(annotation, max_size=2))) or None,
        devices=draw(devices),
        effective=draw(st.sampled_from([None, ("CAP_SYS_ADMIN",)])),
        rules=draw(rules),
    )


@st.composite
def policies(draw: Any) -> Policy:
    trust = st.sampled_from(list(Trust))
    return Policy(
        mode=draw(st.sampled_from([Mode.ENFORCE, Mode.REWRITE])),
        all=draw(st.sampled_from(list(AllRule))),
        indices=draw(st.sampled_from(list(Indices))),
        unprivileged_env=draw(trust),
        volume_mounts=draw(trust),
        cdi_annotations=draw(trust),
        allow=tuple(draw(st.lists(st.sampled_from(UUIDS), max_size=2, unique=True))),
        deny=tuple(draw(st.lists(st.sampled_from(UUIDS), max_size=1))),
        driver_capabilities=tuple(draw(st.lists(st.sampled_from(ALL_DRIVER_CAPABILITIES),
                                                min_size=0, max_size=7, unique=True)))
        or ALL_DRIVER_CAPABILITIES,
        mig_config=draw(st.sampled_from(list(MigConfig))),
        device_nodes=draw(st.sampled_from(list(DeviceNodes))),
        imex=draw(st.sampled_from(list(Imex))),
        imex_channels=tuple(draw(st.lists(st.sampled_from([0, 1]), max_size=2, unique=True))),
    )


@FAST
@given(docs(), policies(), st.booleans())
def test_granted_is_within_policy_and_live(doc: dict[str, Any], policy: Policy,
                                           before_create: bool) -> None:
    # check_invariants also asserts that the granted set never misses a device runc
    # exposes through the spec's device nodes and cgroup rules.
    check_invariants(doc, policy, before_create)


@FAST
@given(docs(), policies(), st.booleans())
def test_enforce_never_allows_what_rewrite_drops(doc: dict[str, Any], policy: Policy,
                                                 before_create: bool) -> None:
    enforce = check_invariants(doc, dataclasses.replace(policy, mode=Mode.ENFORCE), before_create)
    rewrite = check_invariants(doc, dataclasses.replace(policy, mode=Mode.REWRITE), before_create)
    if rewrite.violations:
        assert enforce.outcome is Outcome.DENY, (enforce, rewrite)
    if enforce.outcome in (Outcome.ALLOW, Outcome.REWRITE):
        assert set(rewrite.granted) == set(enforce.granted)
        assert set(rewrite.imex) == set(enforce.imex)
        assert rewrite.outcome is enforce.outcome
        assert rewrite.doc == enforce.doc
    if enforce.outcome is Outcome.SKIP:
        assert rewrite.outcome is Outcome.SKIP


@FAST
@given(docs())
def test_defaults_never_give_all_to_an_unprivileged_container(doc: dict[str, Any]) -> None:
    # check_invariants asserts it for every policy whose `all` is not "always".
    for mode in (Mode.ENFORCE, Mode.REWRITE):
        for before_create in (False, True):
            check_invariants(doc, Policy(mode=mode), before_create)
