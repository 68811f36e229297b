"""Property tests (hypothesis) for the request grammar and the decision's rewrite invariants.

Containers are drawn from realistic tokens (keywords in every case, indices, g:m, UUIDs live
and not, PCI ids, CDI names, blanks, empty items, duplicated variables, legacy markers,
CAP_SYS_ADMIN or not), policies from every setting.
"""

from __future__ import annotations

import contextlib
import dataclasses

from builders import ALL_UUIDS, device_mount, fake_inventory, make_spec, spec_from
from fakenvml import GPU0_BUS, GPU0_UUID, GPU1_BUS, GPU1_UUID, MIG_A_UUID, MIG_B_UUID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvhook.decision.decide import Outcome, decide
from nvhook.decision.policy import (
    AllRule,
    DeviceNodes,
    Indices,
    MigConfig,
    Mode,
    Policy,
    Trust,
)
from nvhook.decision.request import (
    ALL_DRIVER_CAPABILITIES,
    Kind,
    parse,
    split_ids,
    visible_devices,
)
from nvhook.errors import InventoryError
from nvhook.gpus.inventory import MigDevice, Unresolved

INV = fake_inventory()
LIVE = set(ALL_UUIDS)
NVD = "NVIDIA_VISIBLE_DEVICES"
SWARM = "DOCKER_RESOURCE_GPU"
DEAD_GPU = "GPU-00000000-0000-4000-8000-000000000000"
DEAD_MIG = "MIG-00000000-0000-4000-8000-000000000000"


def examples(n: int) -> settings:
    # No example database: the tests leave no .hypothesis/ directory behind.
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

DEVICE_TOKENS = [
    "0", "1", "2", "00", "1:0", "1:1", "1:2", "0:0", "+0", "-1",
    GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID, GPU0_UUID.lower(), MIG_B_UUID.lower(),
    DEAD_GPU, DEAD_MIG, GPU0_BUS, GPU1_BUS.upper(), "0:17:0.0", "00000000:17:00.1",
    f"MIG-{GPU1_UUID}/1/0", f"MIG-{GPU1_UUID}/2/0", "nvidia.com/gpu=0", "nvidia.com/gpu=1:1",
    "nvidia.com/gpu=all", "vendor.com/x=0", "ALL", "All", "Void", "NONE", "garbage",
]
KEYWORDS = ["all", "none", "void"]
BLANKS = ["", " ", "  "]
# Items of a comma list: tokens as written, some with blanks around them.
ITEMS = DEVICE_TOKENS + KEYWORDS + BLANKS + [
    " 0", "1 ", "\tall", "none ", " void ", f" {GPU0_UUID} ", f"{MIG_A_UUID}\t", " 1:1",
]

value = st.lists(st.sampled_from(ITEMS), max_size=5).map(",".join)
caps_value = st.lists(
    st.sampled_from([*ALL_DRIVER_CAPABILITIES, "all", "", " "]), max_size=4
).map(",".join)
CUDA_MARKERS = [
    [], [], ["CUDA_VERSION=12.4"], ["CUDA_VERSION=12.4", "NVIDIA_REQUIRE_CUDA=cuda>=12"],
    ["CUDA_VERSION="], ["CUDA_VERSION=12.4", "NVIDIA_REQUIRE_CUDA="],
]
CDI_NAMES = [
    "nvidia.com/gpu=0", "nvidia.com/gpu=1", "nvidia.com/gpu=1:0", "nvidia.com/gpu=9",
    f"nvidia.com/gpu={MIG_B_UUID}", "vendor.com/x=0", "nvidia.com/imex-channel=0",
    "nvidia.com/gpu=0,vendor.com/x=0", "nvidia.com/gpu=all",
]
EXTRA_ENV = [
    [], [], ["PATH=/bin"], ["NVIDIA_MIG_CONFIG_DEVICES=all"], ["NVIDIA_MIG_MONITOR_DEVICES=0"],
    ["X=a=b", "HOME=/root"],
]


@st.composite
def containers(draw):
    env: list[str] = [f"{NVD}={v}" for v in draw(st.lists(value, max_size=3))]
    env += draw(st.sampled_from(CUDA_MARKERS))
    if draw(st.booleans()):
        env.append(f"NVIDIA_DRIVER_CAPABILITIES={draw(caps_value)}")
    swarm = draw(st.sampled_from([(), (SWARM,)]))
    if draw(st.integers(0, 3)) == 0:
        env.append(f"{SWARM}={draw(value)}")
    env += draw(st.sampled_from(EXTRA_ENV))
    env = draw(st.permutations(env))
    mounts = [device_mount(i) for i in draw(st.lists(st.sampled_from(DEVICE_TOKENS), max_size=2))]
    if draw(st.integers(0, 5)) == 0:
        mounts.append(device_mount(draw(st.sampled_from(DEVICE_TOKENS)), source="/dev/zero"))
    annotations = {
        f"cdi.k8s.io/{i}": name for i, name in enumerate(draw(
            st.lists(st.sampled_from(CDI_NAMES), max_size=2)))
    }
    devices = draw(st.sampled_from([[], [], ["/dev/nvidia0"], ["/dev/nvidiactl"]]))
    caps = draw(st.sampled_from([(), ("CAP_SYS_ADMIN",), ("CAP_CHOWN",)]))
    spec = make_spec(env=env, caps=caps, mounts=mounts, annotations=annotations or None,
                     devices=devices)
    return spec, swarm


uuid_choice = st.sampled_from([*ALL_UUIDS, GPU1_UUID.lower(), DEAD_GPU])


@st.composite
def policies(draw):
    return Policy(
        mode=Mode.ENFORCE,
        all=draw(st.sampled_from(list(AllRule))),
        indices=draw(st.sampled_from(list(Indices))),
        unprivileged_env=draw(st.sampled_from(list(Trust))),
        volume_mounts=draw(st.sampled_from(list(Trust))),
        cdi_annotations=draw(st.sampled_from(list(Trust))),
        allow=tuple(draw(st.lists(uuid_choice, max_size=2))) if draw(st.booleans()) else (),
        deny=tuple(draw(st.lists(uuid_choice, max_size=2))) if draw(st.booleans()) else (),
        driver_capabilities=(
            tuple(draw(st.lists(st.sampled_from(ALL_DRIVER_CAPABILITIES), max_size=7,
                                unique=True)))
            if draw(st.booleans()) else ALL_DRIVER_CAPABILITIES
        ),
        mig_config=draw(st.sampled_from(list(MigConfig))),
        device_nodes=draw(st.sampled_from(list(DeviceNodes))),
    )


inventories = st.sampled_from([INV] * 9 + [InventoryError("NVML: timed out")])


def with_mode(policy: Policy, mode: Mode) -> Policy:
    return dataclasses.replace(policy, mode=mode)


def policy_allows(policy: Policy, uuid: str) -> bool:
    device = INV.by_uuid(uuid)
    assert device is not None
    own = uuid.lower()
    parent = device.parent.lower() if isinstance(device, MigDevice) else None
    deny = {u.lower() for u in policy.deny}
    allow = {u.lower() for u in policy.allow}
    if own in deny or parent in deny:
        return False
    return not allow or own in allow or parent in allow


def nvd_values(env) -> list[str]:
    return [e.partition("=")[2] for e in env if e.partition("=")[0] == NVD and "=" in e]


# -- (a) granted is live and allowed -----------------------------------------------------------

@examples(700)
@given(containers(), policies(), st.sampled_from(list(Mode)), inventories)
def test_granted_is_live_and_allowed(container, base, mode, inventory):
    spec, swarm = container
    policy = with_mode(base, mode)
    d = decide(parse(spec, swarm), inventory, policy, spec)
    assert set(d.granted) <= LIVE
    assert len(set(d.granted)) == len(d.granted)
    if isinstance(inventory, InventoryError) or d.outcome in (Outcome.DENY, Outcome.SKIP):
        assert d.granted == ()
    if mode is not Mode.AUDIT:
        assert all(policy_allows(policy, u) for u in d.granted)
    else:
        # Audit changes nothing: what it reports is what NVIDIA's stack will attach.
        assert d.doc is None and d.env == spec.env


# -- (b) enforce never lets through what rewrite would drop --------------------------------------

@examples(700)
@given(containers(), policies(), inventories)
def test_enforce_denies_whatever_rewrite_would_change_for_policy(container, base, inventory):
    spec, swarm = container
    request = parse(spec, swarm)
    rewritten = decide(request, inventory, with_mode(base, Mode.REWRITE), spec)
    enforced = decide(request, inventory, with_mode(base, Mode.ENFORCE), spec)
    if rewritten.violations:
        assert enforced.outcome is Outcome.DENY
        assert enforced.violations == rewritten.violations
    else:
        assert enforced.outcome is rewritten.outcome
        assert enforced.granted == rewritten.granted
        assert enforced.env == rewritten.env
    # A rewrite only denies what no edit can undo.
    if rewritten.outcome is Outcome.DENY:
        assert isinstance(inventory, InventoryError) or not all(
            v.fixable for v in rewritten.violations
        )


# -- (c) the rewrite is idempotent; (d) one canonical variable; (e) never deleted ----------------

@examples(1000)
@given(containers(), policies(), st.sampled_from([Mode.ENFORCE, Mode.REWRITE]))
def test_rewrite_is_idempotent_and_canonical(container, base, mode):
    spec, swarm = container
    policy = with_mode(base, mode)
    request = parse(spec, swarm)
    d = decide(request, INV, policy, spec)
    if d.outcome is not Outcome.REWRITE:
        return
    assert d.doc is not None

    # (d) exactly one NVIDIA_VISIBLE_DEVICES when the channel was present; UUIDs, none or void.
    values = nvd_values(d.env)
    if request.env.devices.kind is not Kind.UNSET:
        assert len(values) == 1
        (canonical,) = values
        if canonical not in ("none", "void"):
            ids = canonical.split(",")
            assert all(i in LIVE for i in ids), canonical
            assert len(set(ids)) == len(ids)
        if swarm:
            assert not any(e.partition("=")[0] == SWARM for e in d.env)
    else:
        assert values == nvd_values(spec.env)

    # (e) a legacy image, or a container that had the variable, keeps it.
    if request.legacy_image or nvd_values(spec.env):
        assert len(values) == 1

    # (c) deciding again on the rewritten spec changes nothing and grants the same.
    again_spec = spec_from(d.doc)
    again_request = parse(again_spec, swarm)
    again = decide(again_request, INV, policy, again_spec)
    assert again.violations == ()
    if again.outcome is Outcome.SKIP:
        assert d.granted == ()
    else:
        assert again.outcome is Outcome.ALLOW
        assert again.granted == d.granted
    assert again.env == tuple(d.env)
    assert not again_request.env.legacy_implicit_all


# -- (f) the grammar: canonical forms re-parse to the same thing ---------------------------------

def resolved_set(ids) -> set[str]:
    out = set()
    for i in ids:
        with contextlib.suppress(Unresolved):
            out.update(d.uuid for d in INV.resolve(i).devices)
    return out


@examples(1000)
@given(value, st.booleans())
def test_canonical_form_reparses_to_the_same_request(raw, legacy):
    vd = visible_devices(raw, legacy)
    ids = split_ids(raw)
    assert split_ids(",".join(ids)) == ids
    assert all(i == i.strip() and i for i in ids)
    assert len(set(ids)) == len(ids)
    if vd.kind is Kind.DEVICES:
        assert visible_devices(",".join(vd.ids), legacy) == vd
        # Pinning to UUIDs keeps the device set.
        uuids = resolved_set(vd.ids)
        if uuids:
            pinned = visible_devices(",".join(sorted(uuids)), legacy)
            assert pinned.kind is Kind.DEVICES
            assert resolved_set(pinned.ids) == uuids
    else:
        assert vd.kind in (Kind.ALL, Kind.NONE, Kind.VOID)
        assert visible_devices(vd.kind.value, legacy) == vd


@examples(500)
@given(value)
def test_void_and_keywords_follow_nvidia(raw):
    ids = split_ids(raw)
    kind = visible_devices(raw, False).kind
    if not ids or "void" in ids:
        assert kind is Kind.VOID
    else:
        first = next((i for i in ids if i in ("all", "none")), None)
        expected = {"all": Kind.ALL, "none": Kind.NONE, None: Kind.DEVICES}[first]
        assert kind is expected


@examples(500)
@given(st.lists(value, min_size=1, max_size=4), st.booleans())
def test_last_duplicate_wins(values, legacy):
    env = [f"{NVD}={v}" for v in values] + (["CUDA_VERSION=12"] if legacy else [])
    r = parse(make_spec(env=env))
    assert r.env.value == values[-1]
    assert r.env.devices == visible_devices(values[-1], False)
    assert r.env.conflicting_values == (tuple(values) if len(set(values)) > 1 else ())
