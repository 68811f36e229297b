"""Shared pieces of the hostile-input tests: the fake node's inventory, the policies and the
safety invariants every decision must keep, whatever the container asked for."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from builders import CAPS_MAJOR, IMEX_MAJOR, INVENTORY_JSON, host
from fakenvml import GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID

from nvhook.decision.decide import Decision, Outcome, decide
from nvhook.decision.policy import AllRule, Imex, Indices, Mode, Policy
from nvhook.decision.request import (
    VISIBLE_DEVICES,
    Kind,
    cdi_device_name,
    clean_path,
    env_map,
    parse,
    split_ids,
)
from nvhook.gpus.inventory import IdForm, Inventory, MigDevice, Unresolved, from_json
from nvhook.oci.spec import Spec, from_document

INVENTORY: Inventory = from_json(INVENTORY_JSON)
HOST = host()
LIVE = frozenset({GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID})
# Well-formed UUIDs of another node: they must never resolve here.
OTHER_GPU0 = "GPU-11111111-2222-4333-8444-555555555555"
OTHER_GPU1 = "GPU-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
OTHER_MIG = "MIG-99999999-8888-5777-8666-555555555555"

DEFAULT = Policy()
REWRITE = Policy(mode=Mode.REWRITE)
RESTRICT = Policy(mode=Mode.REWRITE, allow=(GPU0_UUID,), indices=Indices.DENY, all=AllRule.NEVER,
                  imex=Imex.ALWAYS, imex_channels=(0,))
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


IMEX_ROOT = "/var/run/nvidia-container-devices"


def imex_attached(spec: Spec) -> frozenset[str]:
    """The IMEX channels NVIDIA's stack would attach, read straight from the spec with every
    channel counted: NVIDIA_IMEX_CHANNELS (last duplicate; any all/none/void item means
    none), /dev/null binds under .../imex/, and nvidia.com/imex-channel CDI names. Only for a
    container that asks for a GPU (the CDI names count on their own): NVIDIA attaches the env's
    and mounts' IMEX channels only alongside one. Plus what runc exposes by number
    (``imex_exposed``), which needs no GPU request."""
    if not parse(spec).asks_for_gpu:
        return frozenset(_imex_cdi(spec)) | imex_exposed(spec)
    ids = split_ids(env_map(spec.env).get("NVIDIA_IMEX_CHANNELS", ""))
    found = set() if {"all", "none", "void"} & set(ids) else set(ids)
    for m in spec.mounts:
        destination = clean_path(m.destination)
        if clean_path(m.source) != "/dev/null" or not destination.startswith(IMEX_ROOT):
            continue
        rest = destination[len(IMEX_ROOT):].strip("/")  # NVIDIA's plain prefix test
        if rest.startswith("imex/"):
            found.add(rest.removeprefix("imex/"))
    return frozenset(found | _imex_cdi(spec)) | imex_exposed(spec)


def _effective(spec: Spec) -> list[Any]:
    """The allow rules with r or w on char devices that no later deny of every device takes
    back (cgroup v1 removes only an exact exception; only a full reset narrows)."""
    rules = spec.device_rules
    out = []
    for i, r in enumerate(rules):
        opens = {c for c in (r.access or "rw") if c in "rw"}
        if not r.allow or not opens or r.type == "b":
            continue
        if any(not later.allow and later.type in ("", "a") and later.major in (None, -1)
               and later.minor in (None, -1) and opens <= set(later.access)
               for later in rules[i + 1:]):
            continue
        out.append(r)
    return out


def imex_exposed(spec: Spec) -> frozenset[str]:
    """The IMEX channels runc exposes, by a model apart from nvhook's: a char node on the
    nvidia-caps-imex-channels major (12 bits kept) is channel <minor> (20 bits kept); an
    allow rule on that major (32 bits) or on every major opens its minor, or "all" for a
    wildcard minor. A privileged container whose rules open every device is judged whole
    (no channel listed)."""
    def wild(n: int | None) -> bool:
        return n is None or n < 0

    rules = _effective(spec)
    if "CAP_SYS_ADMIN" in spec.bounding_caps and any(wild(r.major) and wild(r.minor)
                                                      for r in rules):
        return frozenset()
    found = {str(n.minor & 0xFFFFF) for n in spec.device_nodes
             if n.type not in ("b", "p") and n.major & 0xFFF == IMEX_MAJOR}
    for r in rules:
        if wild(r.major) or r.major & 0xFFFFFFFF == IMEX_MAJOR:  # type: ignore[operator]
            found.add("all" if wild(r.minor) else str(r.minor & 0xFFFFFFFF))  # type: ignore[operator]
    return frozenset(found)


def _imex_cdi(spec: Spec) -> set[str]:
    return {n.partition("=")[2] for key, value in spec.annotations.items()
            if key.startswith("cdi.k8s.io/") for n in split_ids(value)
            if n.startswith("nvidia.com/imex-channel=")}
def runc_exposed(spec: Spec) -> frozenset[str] | None:
    """What runc can open in the container through its device nodes and cgroup rules, by a
    model written apart from nvhook's: the kernel keeps 12 bits of a node's major and 20 of
    its minor; an allow rule with r or w opens what it covers unless a later deny of every
    device (a *:*) takes that access back; a MIG-mode GPU's node next to caps of that GPU
    is part of its MIG devices. None: a privileged container whose rules open every char
    device (it may mknod anything)."""
    by_minor = {g.minor: g for g in INVENTORY.gpus}
    caps = HOST.caps
    gpus: set[str] = set()  # by number
    migs: set[str] = set()  # through caps
    cap_parents: set[int] = set()
    wild: set[str] = set()

    def number(major: int, minor: int) -> None:
        if major == 195 and minor in by_minor:
            gpus.add(by_minor[minor].uuid)
        elif major == CAPS_MAJOR and minor in caps and caps[minor].gpu_minor is not None:
            cap = caps[minor]
            cap_parents.add(cap.gpu_minor)  # type: ignore[arg-type]
            gpu = by_minor.get(cap.gpu_minor)  # type: ignore[arg-type]
            migs.update(m.uuid for m in INVENTORY.migs if gpu is not None
                        and m.parent == gpu.uuid and m.gi == cap.gi and cap.ci in (None, m.ci))

    for n in spec.device_nodes:
        if n.type not in ("b", "p"):
            number(n.major & 0xFFF, n.minor & 0xFFFFF)
    for r in _effective(spec):
        wild_major = r.major is None or r.major < 0
        wild_minor = r.minor is None or r.minor < 0
        if wild_major and wild_minor and "CAP_SYS_ADMIN" in spec.bounding_caps:
            return None
        majors = [195, CAPS_MAJOR] if wild_major else [r.major & 0xFFFFFFFF]  # type: ignore[operator]
        for major in majors:
            if wild_minor and major == 195:
                wild.update(d.uuid for d in INVENTORY.devices())
            elif wild_minor and major == CAPS_MAJOR:
                wild.update(m.uuid for m in INVENTORY.migs)
            elif not wild_minor:
                number(major, r.minor & 0xFFFFFFFF)  # type: ignore[operator]
    parented = {g.uuid for g in INVENTORY.gpus if g.mig_enabled and g.minor in cap_parents}
    return frozenset((gpus - parented) | migs | wild)


def named_one_by_one(spec: Spec) -> frozenset[str]:
    """The devices a spec names by an id other than `all`, on any channel (a device node
    by its number counts as naming that device)."""
    request = parse(spec, host=HOST)
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
    one_by_one = tuple(r for r in spec.device_rules if not r.allow or (
        r.major is not None and r.major >= 0 and r.minor is not None and r.minor >= 0))
    found.update(runc_exposed(dataclasses.replace(spec, device_rules=one_by_one)) or ())
    return frozenset(found)


def run(doc: dict[str, Any], policy: Policy,
        before_create: bool = False) -> tuple[Spec, Decision]:
    spec = from_document(CONFIG, doc)
    return spec, decide(parse(spec, host=HOST), INVENTORY, policy, spec,
                        before_create=before_create)


def check_invariants(doc: dict[str, Any], policy: Policy,
                     before_create: bool = False) -> Decision:
    """The safety invariants; returns the decision for the caller's own checks.
    ``before_create``: judged as the runtime shim and Podman precreate judge (device
    nodes may still be removed); else as prestart."""
    spec, decision = run(doc, policy, before_create)
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
    assert got == set(decision.attached), f"NVIDIA would attach {sorted(got)}, {decision}"
    imex = imex_attached(after)
    assert imex == set(decision.imex), f"NVIDIA would attach IMEX {sorted(imex)}: {decision}"
    if policy.imex is not Imex.ALWAYS and not privileged and policy.mode is not Mode.AUDIT:
        assert not imex, f"IMEX reached an unprivileged container: {decision}"
    if policy.imex_channels and policy.mode is not Mode.AUDIT:
        assert all(c.isdigit() and int(c) in policy.imex_channels for c in imex), decision
    # The granted set never misses a device runc exposes through nodes and cgroup rules.
    exposed = runc_exposed(after)
    if exposed is None:
        assert any("privileged: every device node reachable" in n for n in decision.notes)
        assert got <= granted
    else:
        assert got | exposed == granted, f"runc exposes {sorted(exposed)}: {decision}"
    if not before_create and (after.device_nodes != spec.device_nodes
                              or after.device_rules != spec.device_rules):
        raise AssertionError(f"a prestart decision edited device nodes: {decision}")
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
        again = run(decision.doc, policy, before_create)[1]
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


# -- Go's JSON: documents Python's json and Go's encoding/json read differently ----------------
# Each is raw config.json text (a dict cannot hold a repeated key). ``shown`` is the offending
# key as nvhook's line quotes it. Python's reading is harmless in every row; Go's (runc's,
# NVIDIA's hook's) asks for every GPU, privilege or a device node.
@dataclasses.dataclass(frozen=True)
class GoKeyCase:
    id: str
    text: str
    shown: str


_ALL = '"NVIDIA_VISIBLE_DEVICES=all"'
_BASE = '"ociVersion":"1.0.2","root":{"path":"rootfs"}'
_GPU_MOUNT = '{"destination":"/var/run/nvidia-container-devices/all","source":"/dev/null"}'
_NODE = '{"path":"/dev/nvidia0","type":"c","major":195,"minor":0}'


def _go(id: str, body: str, shown: str) -> GoKeyCase:
    return GoKeyCase(id, "{" + _BASE + "," + body + "}", shown)


GO_KEY_CASES = [
    _go("Process-capitalised", f'"Process":{{"env":[{_ALL}]}}', '"Process"'),
    _go("PROCESS-upper", f'"PROCESS":{{"env":[{_ALL}]}}', '"PROCESS"'),
    _go("process-then-Process", f'"process":{{"env":["PATH=/bin"]}},"Process":{{"env":[{_ALL}]}}',
        '"Process"'),
    _go("process-twice-env-survives",
        f'"process":{{"env":[{_ALL}]}},"process":{{"args":["sh"]}}', '"process"'),
    _go("env-then-Env", f'"process":{{"env":["NVIDIA_VISIBLE_DEVICES=void"],"Env":[{_ALL}]}}',
        '"Env"'),
    _go("ENV-then-env-readers-agree",
        f'"process":{{"ENV":[{_ALL}],"env":["NVIDIA_VISIBLE_DEVICES=void"]}}', '"ENV"'),
    _go("env-twice", f'"process":{{"env":["A=1"],"env":[{_ALL}]}}', '"env"'),
    _go("long-s-escaped", f'"proce\\u017fs":{{"env":[{_ALL}]}}', '"proce\\u017fs"'),
    _go("long-s-raw", f'"proce\u017fs":{{"env":[{_ALL}]}}', '"proce\\u017fs"'),
    _go("capital-P-escaped", f'"\\u0050rocess":{{"env":[{_ALL}]}}', '"Process"'),
    _go("dotless-i-in-capabilities",
        f'"process":{{"env":[{_ALL}],"capab\u0131l\u0131t\u0131es":{{"bounding":["CAP_SYS_ADMIN"]}}}}',
        '"capab\\u0131l\\u0131t\\u0131es"'),
    _go("bounding-folded-twin",
        f'"process":{{"env":[{_ALL}],"capabilities":{{"bounding":["CAP_SYS_ADMIN"],'
        '"BOUNDING":[]}}', '"BOUNDING"'),
    _go("bounding-dotless-i", '"process":{"env":["NVIDIA_VISIBLE_DEVICES=all"],"capabilities":'
        '{"bound\\u0131ng":["CAP_SYS_ADMIN"]}}', '"bound\\u0131ng"'),
    _go("mounts-twin", f'"mounts":[],"Mounts":[{_GPU_MOUNT}]', '"Mounts"'),
    _go("mount-destination-folded",
        '"mounts":[{"Destination":"/var/run/nvidia-container-devices/all","source":"/dev/null"}]',
        '"Destination"'),
    _go("kelvin-in-hooks", '"hoo\\u212as":{"prestart":[{"path":"/bin/true"}]}',
        '"hoo\\u212as"'),
    _go("device-path-folded",
        '"linux":{"devices":[{"Path":"/dev/nvidia0","type":"c","major":195,"minor":0}]}',
        '"Path"'),
    _go("devices-twice", f'"linux":{{"devices":[],"devices":[{_NODE}]}}', '"devices"'),
    _go("cgroup-allow-twin", '"linux":{"resources":{"devices":[{"allow":false,"Allow":true,'
        '"type":"c","major":195,"access":"rwm"}]}}', '"Allow"'),
    _go("Linux-capitalised", f'"Linux":{{"devices":[{_NODE}]}}', '"Linux"'),
    _go("annotations-repeated-exactly", '"annotations":{"cdi.k8s.io/x":"nvidia.com/gpu=0",'
        '"cdi.k8s.io/x":"nvidia.com/gpu=all"}', '"cdi.k8s.io/x"'),
    _go("Annotations-capitalised", '"Annotations":{"cdi.k8s.io/x":"nvidia.com/gpu=all"}',
        '"Annotations"'),
    _go("root-path-twin", '"hostname":"h","Root":{"path":"/"}', '"Root"'),
    _go("unknown-keys-fold-together", f'"process":{{"env":[{_ALL}]}},"x-tool":1,"X-TOOL":2',
        '"X-TOOL"'),
]

# Documents both readers read alike: nvhook must not refuse them.
GO_KEY_ACCEPTED = [
    GoKeyCase("annotation-keys-differ-in-case",
              "{" + _BASE + ',"annotations":{"Foo":"1","foo":"2","Process":"3"}}', ""),
    GoKeyCase("sysctl-keys-differ-in-case",
              "{" + _BASE + ',"linux":{"sysctl":{"net.A":"1","net.a":"2"}}}', ""),
    GoKeyCase("exact-key-escaped", "{" + _BASE + ',"\\u0070rocess":{"env":["A=1"]}}', ""),
    GoKeyCase("unknown-non-ascii-key", "{" + _BASE + ',"ünknown":1}', ""),
    GoKeyCase("rdma-map-then-struct",
              "{" + _BASE + ',"linux":{"resources":{"rdma":{"mlx5_0":{"hcaHandles":3},'
              '"MLX5_0":{"hcaObjects":4}}}}}', ""),
    GoKeyCase("surrogate-pair-escaped", "{" + _BASE + ',"process":{"env":["E=\\ud83d\\ude00"]}}',
              ""),
]
