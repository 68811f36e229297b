"""Shared pieces of the hostile-input tests: the fake node's inventory, the policies and the
safety invariants every decision must keep, whatever the container asked for."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from builders import INVENTORY_JSON
from fakenvml import GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID

from nvhook.decision.decide import Decision, Outcome, decide
from nvhook.decision.policy import AllRule, Indices, Mode, Policy
from nvhook.decision.request import VISIBLE_DEVICES, Kind, cdi_device_name, parse
from nvhook.gpus.inventory import IdForm, Inventory, MigDevice, Unresolved, from_json
from nvhook.oci.spec import Spec, from_document

INVENTORY: Inventory = from_json(INVENTORY_JSON)
LIVE = frozenset({GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID})
# Well-formed UUIDs of another node: they must never resolve here.
OTHER_GPU0 = "GPU-11111111-2222-4333-8444-555555555555"
OTHER_GPU1 = "GPU-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
OTHER_MIG = "MIG-99999999-8888-5777-8666-555555555555"

DEFAULT = Policy()
REWRITE = Policy(mode=Mode.REWRITE)
RESTRICT = Policy(mode=Mode.REWRITE, allow=(GPU0_UUID,), indices=Indices.DENY, all=AllRule.NEVER)
RESTRICT_ENFORCE = dataclasses.replace(RESTRICT, mode=Mode.ENFORCE)
CONFIG = Path("/bundle/config.json")
_CANONICAL = re.compile(r"^(void|none|(GPU|MIG)-[0-9a-f-]{36}(,(GPU|MIG)-[0-9a-f-]{36})*)$")


def policy_allowed(policy: Policy) -> frozenset[str]:
    """The live devices the policy's allow/deny lists let through."""
    allow = {u.lower() for u in policy.allow}
    deny = {u.lower() for u in policy.deny}
    out = set()
    for d in INVENTORY.devices():
        ids = {d.uuid.lower()} | ({d.parent.lower()} if isinstance(d, MigDevice) else set())
        if ids & deny:
            continue
        if allow and not ids & allow:
            continue
        out.add(d.uuid)
    return frozenset(out)


def attached(spec: Spec) -> tuple[frozenset[str], list[str]]:
    """What NVIDIA's stack would attach for this spec: (UUIDs, ids it cannot resolve)."""
    request = parse(spec)
    ids: list[str] = []
    kind = request.env.devices.kind
    if kind is Kind.ALL:
        ids.append("all")
    elif kind is Kind.DEVICES:
        ids.extend(request.env.devices.ids)
    ids.extend(m.id for m in request.mounts)
    ids.extend(c.name for c in request.nvidia_cdi if not c.name.startswith(
        "nvidia.com/imex-channel"))
    found: set[str] = set()
    bad: list[str] = []
    for device_id in ids:
        cdi = cdi_device_name(device_id)
        name = cdi[1] if cdi and cdi[0] == "nvidia.com/gpu" else device_id
        try:
            found.update(d.uuid for d in INVENTORY.resolve(name).devices)
        except Unresolved:
            bad.append(device_id)
    return frozenset(found), bad


def named_one_by_one(spec: Spec) -> frozenset[str]:
    """The devices a spec names by an id other than `all`, on any channel."""
    request = parse(spec)
    ids = list(request.env.devices.ids) if request.env.devices.kind is Kind.DEVICES else []
    ids += [m.id for m in request.mounts] + [c.name for c in request.nvidia_cdi]
    found: set[str] = set()
    for device_id in ids:
        cdi = cdi_device_name(device_id)
        name = cdi[1] if cdi and cdi[0] == "nvidia.com/gpu" else device_id
        try:
            resolution = INVENTORY.resolve(name)
        except Unresolved:
            continue
        if resolution.form is not IdForm.ALL:
            found.update(d.uuid for d in resolution.devices)
    return frozenset(found)


def run(doc: dict[str, Any], policy: Policy) -> tuple[Spec, Decision]:
    spec = from_document(CONFIG, doc)
    return spec, decide(parse(spec), INVENTORY, policy, spec)


def check_invariants(doc: dict[str, Any], policy: Policy) -> Decision:
    """The safety invariants; returns the decision for the caller's own checks."""
    spec, decision = run(doc, policy)
    privileged = "CAP_SYS_ADMIN" in spec.bounding_caps
    granted = set(decision.granted)
    assert granted <= policy_allowed(policy) & LIVE, decision
    if policy.all is not AllRule.ALWAYS and not privileged:
        # Nothing reaches an unprivileged container through `all` (any case, any channel,
        # the legacy implicit one included): only what it named one by one.
        assert granted <= named_one_by_one(spec), f"`all` granted: {decision}"
    if decision.outcome is Outcome.DENY:
        assert decision.doc is None and not granted
        return decision
    # What NVIDIA's hook will be handed: the rewritten spec, or the spec unchanged.
    after = from_document(CONFIG, decision.doc) if decision.outcome is Outcome.REWRITE else spec
    got, bad = attached(after)
    assert not bad, f"the spec handed on names unresolvable ids {bad}: {decision}"
    assert got == granted, f"NVIDIA would attach {sorted(got)}, granted {sorted(granted)}"
    if decision.outcome is Outcome.REWRITE:
        assert list(decision.env) == decision.doc["process"]["env"]
        had = any(e.startswith(f"{VISIBLE_DEVICES}=") for e in spec.env) or parse(
            spec).env.legacy_implicit_all
        values = [e.partition("=")[2] for e in decision.env
                  if e.startswith(f"{VISIBLE_DEVICES}=")]
        assert len(values) == (1 if had else len(values)) and len(values) <= 1, values
        for value in values:
            assert _CANONICAL.match(value), value
            assert set(value.split(",")) - {"void", "none"} <= granted
        # Idempotent: deciding the rewritten spec again changes nothing.
        again = run(decision.doc, policy)[1]
        assert again.outcome in (Outcome.ALLOW, Outcome.SKIP), again
        assert again.doc is None
        assert set(again.granted) == granted
    if policy.mode is not Mode.ENFORCE and decision.outcome is not Outcome.SKIP:
        # Rewrite output (or an already-canonical input) holds one canonical variable.
        values = [e.partition("=")[2] for e in decision.env
                  if e.startswith(f"{VISIBLE_DEVICES}=")]
        if parse(after).env.devices.kind is not Kind.UNSET:
            assert len(values) == 1 and _CANONICAL.match(values[0]), values
    return decision
