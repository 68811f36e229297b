"""``decide(request, inventory, policy, spec) -> Decision``: pure, and a truth table.

Each channel is judged on its own and, on a rewrite, shrunk in place to what it
may keep: the env to one canonical ``NVIDIA_VISIBLE_DEVICES`` (UUIDs in request
order, or ``none``, or ``void``), device mounts to pinned UUID destinations, CDI
annotations to their granted names. A channel is never moved to another one,
so NVIDIA's own channel settings keep meaning what the operator set them to.
Denying writes ``void``; deleting the variable would re-enable the legacy ``all``.
IMEX channels are judged by ``policy.imex``/``imex-channels`` on whichever channel
NVIDIA reads them from, and a refused one is dropped the same way (``void`` in
``NVIDIA_IMEX_CHANNELS``); a channel reached by device node or cgroup rule is judged
alike and removed like any refused node. An env entry without ``=`` denies a GPU request outright.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from nvhook.decision.policy import (
    AllocationRule,
    AllRule,
    DeviceNodes,
    Imex,
    Indices,
    MigConfig,
    Mode,
    Policy,
    Trust,
)
from nvhook.decision.request import (
    CDI_ANNOTATION_PREFIX,
    DRIVER_CAPABILITIES,
    IMEX_CDI_KIND,
    IMEX_CHANNELS,
    IMEX_MOUNT_PREFIX,
    MAX_IMEX_CHANNEL,
    MIG_CONFIG_DEVICES,
    MIG_MONITOR_DEVICES,
    VISIBLE_DEVICES,
    ImexChannel,
    ImexVia,
    Kind,
    Request,
    cdi_device_name,
    device_mount_id,
    split_ids,
)
from nvhook.errors import AllocationError, InventoryError
from nvhook.gpus import devnodes
from nvhook.gpus.devnodes import Reach, Reached
from nvhook.gpus.inventory import Device, Gpu, IdForm, Inventory, MigDevice, Resolution, Unresolved
from nvhook.kube.settings import Unallocated
from nvhook.oci.spec import DEVICE_MOUNT_ROOT, Spec
from nvhook.safetext import one_line

if TYPE_CHECKING:  # kube.allocation: imported by evaluate for a CRI container only
    from nvhook.kube.allocation import Allocation

GPU_CDI_KIND = "nvidia.com/gpu"
# CDI kinds of NVIDIA's that attach no GPU: not judged as GPUs (IMEX has its own rules).
_NON_GPU_CDI_KINDS = (IMEX_CDI_KIND,)


class Outcome(StrEnum):
    SKIP = "skip"  # nothing asked for: get out of the way
    ALLOW = "allow"  # hand over unchanged
    REWRITE = "rewrite"  # hand over the edited spec
    DENY = "deny"


@dataclass(frozen=True)
class Violation:
    """One thing a policy refuses in the request, as the denial line names it."""

    label: str  # the variable (or mount, annotation) and its value
    problem: str
    rule: str
    # False when no edit of the spec can undo it, so rewrite mode must deny too.
    fixable: bool = field(default=True, compare=False)

    def __str__(self) -> str:
        return f"{self.label}: {self.problem} ({self.rule})"


@dataclass(frozen=True)
class Decision:
    """The verdict on one request: what is granted, what is refused, the env after it."""

    outcome: Outcome
    policy: Policy
    # Every device the container gets: what NVIDIA's hook attaches and what its device
    # nodes and cgroup rules expose.
    granted: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()
    # The whole edited document, only for REWRITE.
    doc: dict[str, Any] | None = field(default=None, compare=False)
    env: tuple[str, ...] = ()  # process.env after the decision
    # What was dropped without being a violation (a channel set to "ignore"): the
    # decision still says so, or an ignored request would look like a silent rewrite.
    notes: tuple[str, ...] = ()
    imex: tuple[str, ...] = ()  # the IMEX channel ids NVIDIA's stack attaches after it
    # The part of ``granted`` that NVIDIA's hook attaches (env, mounts, CDI annotations):
    # without it there is nothing to hand NVIDIA's hook.
    attached: tuple[str, ...] = ()

    @property
    def reasons(self) -> list[str]:
        return [str(v) for v in self.violations] + list(self.notes)

    @property
    def denial(self) -> str:
        """The one line a runtime shows when the container is refused."""
        first = str(self.violations[0]) if self.violations else "denied"
        more = len(self.violations) - 1
        return f"{first} (and {more} more)" if more > 0 else first


def needs_inventory(request: Request) -> bool:
    """Only device ids need NVML; ``none``, ``void`` and unset never touch it."""
    return (
        (request.env_read and request.env.devices.kind in (Kind.ALL, Kind.DEVICES))
        or (request.mounts_read and bool(request.mounts))
        or any(_is_gpu_cdi(c.name) for c in request.nvidia_cdi)
        or any(r.kind in _NEEDS_INVENTORY for r in request.device_nodes)
    )


_NEEDS_INVENTORY = (Reached.GPU, Reached.MIG, Reached.ALL)


def decide(request: Request, inventory: Inventory | InventoryError, policy: Policy,
           spec: Spec, held: Mapping[str, str] | None = None,
           allocation: Allocation | AllocationError | None = None,
           unallocated: Unallocated = Unallocated.VOID,
           before_create: bool = False) -> Decision:
    """``held``: lower-cased UUID -> why that device cannot be leased to this container
    (``leases`` computes it under the table's lock); such a device is a violation of
    ``policy.leases``, so rewrite mode keeps the leasable rest.
    ``allocation``: the kubelet's, when the container is bound to one (None: not).
    ``before_create``: the runtime has not created the container yet (runtime shim,
    Podman precreate), so a refused device node and its cgroup rules can still be removed;
    at prestart the nodes exist already and a refused one can only be denied."""
    if not request.asks_for_devices:
        return Decision(Outcome.SKIP, policy, env=spec.env)
    if request.malformed_env:
        # NVIDIA's hook fails on such an entry with its own error, and runc refuses it
        # ("invalid environment variable"), so the container cannot start in any policy
        # mode; dropping the entry would start a container runc itself would refuse.
        bad = request.malformed_env[0]
        failed = Violation(f'process.env[{bad.index}] "{one_line(bad.entry)}"',
                           'an env entry without "=" (NVIDIA\'s hook and runc refuse it)',
                           "OCI env syntax", fixable=False)
        return Decision(Outcome.DENY, policy, violations=(failed,), env=spec.env)
    if isinstance(inventory, InventoryError):
        if needs_inventory(request) or (allocation is not None and not isinstance(
                allocation, AllocationError) and allocation.ids):
            failed = Violation(_first_label(request), f"GPU inventory unavailable: {inventory}",
                               "fail closed")
            return Decision(Outcome.DENY, policy, violations=(failed,), env=spec.env)
        inventory = Inventory((), (), None, source="none")
    judge = _Judge(request, inventory, policy, spec, held or {}, before_create)
    if allocation is not None and policy.allocation is AllocationRule.BOUND and \
            request.bindable:
        failed = judge.bind(allocation, unallocated)
        if failed is not None:
            return Decision(Outcome.DENY, policy, violations=(failed,), env=spec.env)
    return judge.decide()


# -- the allocation stage (Kubernetes) ------------------------------------------


def allocated_devices(allocation: Allocation, inventory: Inventory
                      ) -> tuple[tuple[Device, ...], tuple[str, ...]]:
    """The allocation's ids mapped onto the live inventory -> (devices, ids that are not live).

    Ids are UUIDs, MIG UUIDs or (``--device-id-strategy=index``) indices, resolved as the
    env channel resolves them; ``all`` or a PCI id is not something the plugin hands out.
    DRA claims add the devices their CDI device nodes are, by major:minor.
    """
    devices: dict[str, Device] = {}
    dead = []
    for device_id in allocation.ids:
        try:
            res = inventory.resolve(device_id)
        except Unresolved:
            dead.append(device_id)
            continue
        if res.form in (IdForm.ALL, IdForm.PCI):
            dead.append(device_id)
            continue
        devices.update((d.uuid, d) for d in res.devices)
    # DRA: the claims' CDI device nodes, by number (nvidiactl and the like attach no GPU).
    for item in devnodes.resolve(allocation.dra_reaches, inventory).items:
        if item.kind in (Reached.NOT_LIVE, Reached.UNKNOWN):
            dead.append(f"DRA node {item.reach.label.partition('] ')[2]}"
                        + (f" ({item.reach.why})" if item.reach.why else ""))
        devices.update((d.uuid, d) for d in item.devices)
    return tuple(devices.values()), tuple(dead)


class _Judge:
    def __init__(self, request: Request, inventory: Inventory, policy: Policy, spec: Spec,
                 held: Mapping[str, str], before_create: bool = False):
        self.held = held
        self.before_create = before_create
        # Device nodes and cgroup rules a rewrite removes (by index), and wildcard rules it
        # replaces by rules for the minors kept (by index: the rules written instead).
        self.drop_nodes: set[int] = set()
        self.drop_rules: set[int] = set()
        self.narrow_rules: dict[int, list[dict[str, object]]] = {}
        self.request = request
        self.inventory = inventory
        self.policy = policy
        self.spec = spec
        self.violations: list[Violation] = []
        self.notes: list[str] = []
        # What NVIDIA's stack would attach if nothing were changed (for audit).
        self.requested: dict[str, None] = {}
        # The kubelet's allocation as lower-cased UUIDs (None: not bound); with
        # ``voided``, nothing was allocated and every GPU request is replaced by void.
        self.allocated: frozenset[str] | None = None
        self.allocation_text = ""
        self.voided = False

    def bind(self, allocation: Allocation | AllocationError,
             unallocated: Unallocated) -> Violation | None:
        """Bind every grant to the kubelet's allocation; -> a fail-closed denial, or None."""
        label = _first_label(self.request)
        if isinstance(allocation, AllocationError):
            return Violation(label, str(allocation), "kubernetes allocation, fail closed",
                             fixable=False)
        devices, dead = allocated_devices(allocation, self.inventory)
        who = allocation.identity.name
        if dead:
            return Violation(label, f"kubelet allocated {', '.join(dead)} to {who}, which is "
                             "not a live device (node state inconsistent)",
                             "kubernetes allocation, fail closed", fixable=False)
        self.allocated = frozenset(d.uuid.lower() for d in devices)
        self.allocation_text = ",".join(d.uuid for d in devices) or "none"
        # DRA: a CDI name of the kind the container's claims use, but not one of its own.
        # Not fixable: the runtime applied CDI names before any hook, so only a denial helps.
        for c in self.request.cdi:
            for name, why in allocation.foreign_cdi((c.name,)):
                self.violate(f"annotation {c.annotation}={name}", why,
                             "kubernetes allocation (DRA)", fixable=False)
        if not devices:
            if unallocated is Unallocated.DENY:
                return Violation(label, f"the kubelet allocated no GPU to {who}",
                                 'kubernetes.unallocated = "deny"', fixable=False)
            self.voided = True
        return None

    def violate(self, label: str, problem: str, rule: str, fixable: bool = True) -> None:
        self.violations.append(Violation(label, problem, rule, fixable))

    def rule(self, key: str, value: object = None) -> str:
        text = f"policy.{key}" if value is None else f'policy.{key} = "{value}"'
        return f"{text}, rule {self.policy.rule!r}" if self.policy.rule else text

    def decide(self) -> Decision:
        # Only the channel NVIDIA's hook reads is judged (request.nvidia says which).
        env_kept, env_none = self.judge_env() if self.request.env_read else ([], False)
        mounts_kept = self.judge_mounts() if self.request.mounts_read else []
        cdi_kept = self.judge_cdi()
        caps = self.judge_capabilities()
        drop_mig = self.judge_mig()
        imex_kept = self.judge_imex()
        nodes_kept = self.judge_device_nodes()

        attached = _uuids(
            [d for _, devs in env_kept for d in devs]
            + [d for _, devs in mounts_kept for d in devs]
            + [d for _, devs in cdi_kept for d in devs]
        )
        granted = tuple(dict.fromkeys([*attached, *(d.uuid for d in nodes_kept)]))
        notes = tuple(self.notes)
        imex = self.request.imex
        if self.policy.mode is Mode.AUDIT:
            return Decision(Outcome.ALLOW, self.policy, tuple(self.requested),
                            tuple(self.violations), env=self.spec.env, notes=notes,
                            imex=_ids(imex.channels))
        if self.violations and (
            self.policy.mode is Mode.ENFORCE or not all(v.fixable for v in self.violations)
        ):
            return Decision(Outcome.DENY, self.policy, (), tuple(self.violations),
                            env=self.spec.env, notes=notes)

        refused = [c for c in imex.channels if c not in imex_kept]
        env = self.rewrite_env(env_kept, env_none, caps, drop_mig,
                               void_fallback=self.request.env_shadowed and not mounts_kept,
                               imex_env=self.imex_env(imex_kept, refused))
        doc = copy.deepcopy(self.spec.doc)
        if env != self.spec.env:
            doc.setdefault("process", {})["env"] = list(env)
        gpu_mounts = bool(self.request.mounts) and self.request.mounts_read
        drop_imex = {c.id for c in refused if c.via is ImexVia.MOUNT}
        if gpu_mounts or drop_imex:
            doc["mounts"] = self.rewrite_mounts(mounts_kept, gpu_mounts, drop_imex)
        if self.request.cdi:
            doc["annotations"] = self.rewrite_annotations(
                cdi_kept, {c.id for c in refused if c.via is ImexVia.ANNOTATION})
        if self.drop_nodes or self.drop_rules or self.narrow_rules:
            self.rewrite_devices(doc)
        if doc == self.spec.doc:
            return Decision(Outcome.ALLOW, self.policy, granted, tuple(self.violations),
                            env=self.spec.env, notes=notes, imex=_ids(imex_kept),
                            attached=attached)
        if not attached and not env_none:
            # Every GPU request was voided or dropped: NVIDIA attaches the env's and mounts'
            # IMEX channels only alongside one, so only kept CDI names and nodes still reach
            # the container.
            imex_kept = [c for c in imex_kept if c.via in (ImexVia.ANNOTATION, ImexVia.NODE)]
        return Decision(Outcome.REWRITE, self.policy, granted, tuple(self.violations), doc,
                        env=env, notes=notes, imex=_ids(imex_kept), attached=attached)

    # -- channels -----------------------------------------------------------

    def trusted(self, trust: Trust, key: str, label: str, what: str) -> bool:
        if trust is Trust.DENY:
            self.violate(label, f"{what} is not accepted", self.rule(key, trust.value))
        elif trust is Trust.IGNORE:
            self.notes.append(f"{label}: {what} is ignored, nothing granted through it "
                              f"({self.rule(key, trust.value)})")
        return trust is Trust.ACCEPT

    def judge_env(self) -> tuple[list[tuple[str, list[Device]]], bool]:
        """-> (kept ids with their devices, whether ``none`` is kept)."""
        env = self.request.env
        kind = env.devices.kind
        if kind in (Kind.UNSET, Kind.VOID):
            return [], False
        if not self.request.privileged and not self.trusted(
            self.policy.unprivileged_env, "unprivileged-env", env.label,
            "a GPU request in the env of an unprivileged container",
        ):
            if self.policy.unprivileged_env is Trust.IGNORE:
                self.note_requested(env.label, env.devices.ids, kind)
            return [], False
        if kind is Kind.NONE:
            return [], True
        ids = ("all",) if kind is Kind.ALL else env.devices.ids
        return self.judge_ids(env.label, ids), False

    def note_requested(self, label: str, ids: Sequence[str], kind: Kind) -> None:
        """An ignored channel still counts as what NVIDIA would have given (audit view)."""
        for device_id in ("all",) if kind is Kind.ALL else ids:
            try:
                for d in self.resolve(device_id).devices:
                    self.requested[d.uuid] = None
            except Unresolved:
                pass

    def judge_mounts(self) -> list[tuple[str, list[Device]]]:
        kept = []
        for m in self.request.mounts:
            label = f"mount {m.mount.source} -> {m.mount.destination}"
            if self.trusted(self.policy.volume_mounts, "volume-mounts", label,
                            "a GPU request through a volume mount"):
                device_id = m.id.removeprefix("cdi/")
                kept.extend(self.judge_ids(label, (device_id,), keep_key=m.id))
        return kept

    def judge_cdi(self) -> list[tuple[str, list[Device]]]:
        kept = []
        for c in self.request.nvidia_cdi:
            if not _judged_cdi(c.name):
                continue
            label = f"annotation {c.annotation}={c.name}"
            if self.trusted(self.policy.cdi_annotations, "cdi-annotations", label,
                            "a GPU request through a CDI annotation"):
                # A CDI name is handed on verbatim, so it is kept only if every device
                # it selects is allowed ("nvidia.com/gpu=all" minus a denied GPU is refused).
                kept.extend(self.judge_ids(label, (c.name,), whole=True))
        return kept

    def judge_ids(self, label: str, ids: Iterable[str], keep_key: str | None = None,
                  whole: bool = False) -> list[tuple[str, list[Device]]]:
        kept = []
        for device_id in ids:
            devices = self.judge_id(label, device_id, whole)
            if devices:
                kept.append((keep_key or device_id, devices))
        return kept

    def resolve(self, device_id: str) -> Resolution:
        cdi = cdi_device_name(device_id)
        if cdi is None:
            return self.inventory.resolve(device_id)
        kind, name = cdi
        if kind != GPU_CDI_KIND:
            raise Unresolved(f"CDI kind {kind!r} is not an NVIDIA GPU")
        return self.inventory.resolve(name)

    def judge_id(self, label: str, device_id: str, whole: bool = False) -> list[Device]:
        """The devices ``device_id`` may keep; with ``whole``, none unless all of them."""
        if self.voided:
            # Nothing allocated: the request becomes void (audited), not a violation, so a
            # CPU pod on a CUDA image (NVIDIA_VISIBLE_DEVICES=all baked in) just runs.
            return []
        try:
            res = self.resolve(device_id)
        except Unresolved as e:
            self.violate(label, f"device {device_id!r}: {e}", "live inventory")
            return []
        for d in res.devices:
            self.requested[d.uuid] = None
        if res.form is IdForm.ALL:
            if not self.all_allowed(label, fixable=True):
                return []
        elif res.form.is_positional and self.policy.indices is Indices.DENY:
            self.violate(label, f"device {device_id!r} is a {res.form.value} form, not a UUID",
                         self.rule("indices", "deny"))
            return []
        allowed = [d for d in res.devices if self.device_allowed(label, d)]
        return [] if whole and len(allowed) != len(res.devices) else allowed

    def device_allowed(self, label: str, device: Device, fixable: bool = True) -> bool:
        before = len(self.violations)
        allowed = self._device_allowed(label, device)
        if not fixable:
            self.violations[before:] = [dataclasses.replace(v, fixable=False)
                                        for v in self.violations[before:]]
        return allowed

    def _device_allowed(self, label: str, device: Device) -> bool:
        deny = {u.lower() for u in self.policy.deny}
        allow = {u.lower() for u in self.policy.allow}
        uuid = device.uuid.lower()
        parent = device.parent.lower() if isinstance(device, MigDevice) else None
        if uuid in deny:
            self.violate(label, f"{device.uuid} is on the deny list", self.rule("deny"))
            return False
        if parent in deny:
            self.violate(label, f"{device.uuid}: its parent GPU {device.parent} is on the deny "
                         "list", self.rule("deny"))
            return False
        if allow and uuid not in allow and parent not in allow:
            self.violate(label, f"{device.uuid} is not on the allow list", self.rule("allow"))
            return False
        if self.allocated is not None and uuid not in self.allocated and (
            parent is None or parent not in self.allocated
        ):
            # A MIG device of an allocated GPU is part of it; a MIG allocation is not its GPU.
            self.violate(label, f"{device.uuid} is not allocated to this container (kubelet "
                         f"allocation: {self.allocation_text})", "kubernetes allocation")
            return False
        if uuid in self.held:
            self.violate(label, self.held[uuid], self.rule("leases"))
            return False
        return True

    def judge_capabilities(self) -> tuple[str, ...] | None:
        """-> the capability set to write, or None to leave the variable alone."""
        wanted = self.request.driver_capability_set()
        allowed = self.policy.driver_capabilities
        raw = self.request.driver_capabilities
        if raw:
            label = f"{DRIVER_CAPABILITIES}={raw}"
        elif raw is None and self.request.legacy_image:
            label = f"{DRIVER_CAPABILITIES} (unset; legacy image: all)"
        else:
            label = f"{DRIVER_CAPABILITIES} (unset, default {','.join(wanted)})"
        bad = [c for c in wanted if c not in allowed]
        if not bad:
            return None
        kept = tuple(c for c in wanted if c in allowed)
        kept = kept or (("utility",) if "utility" in allowed else allowed[:1])
        # An empty value reads as NVIDIA's default: with nothing allowed, no edit can help.
        self.violate(label, f"capabilities not allowed: {', '.join(bad)}",
                     self.rule("driver-capabilities"), fixable=bool(kept))
        return kept

    def judge_mig(self) -> bool:
        """-> True when the NVIDIA_MIG_* variables must be cleared."""
        drop = False
        for name, value in ((MIG_CONFIG_DEVICES, self.request.mig_config),
                            (MIG_MONITOR_DEVICES, self.request.mig_monitor)):
            if value is None:
                continue
            if self.policy.mig_config is MigConfig.NEVER:
                self.violate(f"{name}={value}", "MIG management is not allowed",
                             self.rule("mig-config", "never"))
                drop = True
            elif not self.request.privileged:
                self.violate(f"{name}={value}", "MIG management needs a privileged container",
                             self.rule("mig-config", "privileged"))
                drop = True
        return drop

    def judge_imex(self) -> list[ImexChannel]:
        """-> the IMEX channels that may be kept, each refused one a violation.

        A channel reached by node or rule is refused as any node is: removed by a rewrite
        before creation, a denial at prestart (the node exists) or for a rule no edit
        narrows. A refused wildcard channel rule is replaced by rules for the channel
        nodes kept, so that those still open.
        """
        kept = []
        wild: list[Reach] = []
        for channel in self.request.imex.channels:
            refusal = self.imex_refusal(channel)
            if refusal is None:
                kept.append(channel)
                continue
            reach = channel.reach
            fixable = reach is None or (self.before_create and reach.narrowable)
            self.violate(channel.label, f"IMEX channel {channel.id}: {refusal[0]}", refusal[1],
                         fixable)
            if reach is not None:
                if channel.every and reach.narrowable:
                    wild.append(reach)
                else:
                    self.refuse(reach)
        minors = sorted({c.number for c in kept if c.via is ImexVia.NODE
                         and c.reach is not None and c.reach.source == "node"
                         and c.number is not None})
        for reach in wild:
            rule = self.spec.device_rules[reach.index]
            if minors and rule.major is not None:
                # The kernel compares a rule's major as 32 bits: the major it really names.
                self.narrow_rules[reach.index] = devnodes.kept_rules(
                    rule, minors, rule.major & 0xFFFFFFFF, control=())
            else:
                self.refuse(reach)
        return kept

    def imex_refusal(self, channel: ImexChannel) -> tuple[str, str] | None:
        """-> (problem, rule) when ``channel`` may not be attached, else None.

        The seam for an allocation-bound IMEX grant ("as the allocation says"): a check
        against the kubelet's allocated channels belongs here, after the policy's own.
        """
        rule = self.policy.imex
        if channel.number is None and not channel.every:
            return (f"not a channel number below {MAX_IMEX_CHANNEL} (libnvidia-container "
                    "refuses it)", "IMEX channel ids")
        if rule is Imex.NEVER:
            return "no container may have IMEX channels", self.rule("imex", rule.value)
        if rule is Imex.PRIVILEGED and not self.request.privileged:
            return ("an unprivileged container may not have IMEX channels",
                    self.rule("imex", rule.value))
        allowed = self.policy.imex_channels
        if allowed and channel.every:
            return "every channel, not only the allow list's", self.rule("imex-channels")
        if allowed and channel.number not in allowed:
            return "not on the allow list", self.rule("imex-channels")
        return None

    def imex_env(self, kept: Sequence[ImexChannel], refused: Sequence[ImexChannel]
                 ) -> str | None:
        """-> the NVIDIA_IMEX_CHANNELS entry a rewrite writes, or None to leave it alone.

        ``void`` makes every toolkit read no channel (cuda_image.go imexChannelsFromEnvVar);
        it is also written when refused imex/ mounts all go, since NVIDIA would then fall
        back to the env, which nobody judged.
        """
        imex = self.request.imex
        if imex.env_value is None or not refused:
            return None
        if imex.env_read and any(c.via is ImexVia.ENV for c in refused):
            ids = _ids(c for c in kept if c.via is ImexVia.ENV)
            return f"{IMEX_CHANNELS}={','.join(ids) or 'void'}"
        mounts_left = any(c.via is ImexVia.MOUNT for c in kept)
        if imex.mounts_read and not imex.env_read and not mounts_left:
            return f"{IMEX_CHANNELS}=void"
        return None

    def judge_device_nodes(self) -> list[Device]:
        """Judge what the device nodes and cgroup rules expose, by number, with the same
        policy as every other channel. -> the devices the kept ones expose.

        A refused node or rule is removed by a rewrite when the container is not created
        yet and the edit can express it; otherwise (prestart: the node exists already; a
        rule like ``a *:* rwm`` that no edit narrows) the violation can only deny.
        """
        exposure = devnodes.resolve(self.request.device_nodes, self.inventory)
        kept: list[Device] = []
        for item in exposure.items:
            r = item.reach
            if item.kind in (Reached.CONTROL, Reached.IMEX):
                continue  # IMEX channels: judged with the other channels (judge_imex)
            if item.kind is Reached.PRIVILEGED:
                self.judge_privileged_reach(r)
                continue
            fixable = self.before_create and r.narrowable
            if self.policy.device_nodes is DeviceNodes.DENY:
                self.violate(r.label, "GPU device nodes may not be passed in",
                             self.rule("device-nodes", "deny"), fixable)
                self.refuse(r)
                continue
            if item.kind is Reached.UNKNOWN:
                self.violate(r.label, f"cannot tell which device this is: {r.why}",
                             "fail closed", fixable)
                self.refuse(r)
                continue
            if item.kind is Reached.NOT_LIVE:
                why = r.why or (f"GPU minor {r.gpu_minor}" if r.gpu_minor is not None
                                and r.kind is Reached.GPU else r.kind.value)
                self.violate(r.label, f"{why}: no such live device on this node",
                             "live inventory, fail closed", fixable)
                self.refuse(r)
                continue
            if item.kind is Reached.MIG_MANAGEMENT:
                if not self.mig_management_allowed(r.label, fixable):
                    self.refuse(r)
                continue
            devices = list(item.devices)
            for d in devices:
                self.requested[d.uuid] = None
            if item.kind is Reached.ALL and not self.all_allowed(r.label, fixable):
                self.refuse(r)
                continue
            allowed = [d for d in devices if self.device_allowed(r.label, d, fixable)]
            if len(allowed) == len(devices):
                kept.extend(allowed)
            elif item.kind is Reached.ALL and r.source == "rule":
                # A wildcard over major 195 becomes one rule per GPU minor kept.
                gpus = [d for d in allowed if isinstance(d, Gpu)]
                self.narrow_rules[r.index] = devnodes.kept_rules(
                    self.spec.device_rules[r.index], [g.minor for g in gpus])
                kept.extend(gpus)
            else:
                self.refuse(r)
        return kept

    def refuse(self, r: Reach) -> None:
        (self.drop_nodes if r.source == "node" else self.drop_rules).add(r.index)

    def all_allowed(self, label: str, fixable: bool) -> bool:
        rule = self.policy.all
        if rule is AllRule.NEVER or (rule is AllRule.PRIVILEGED and not self.request.privileged):
            who = "no container" if rule is AllRule.NEVER else "an unprivileged container"
            verb = "may have" if rule is AllRule.NEVER else "may not have"
            self.violate(label, f"{who} {verb} every GPU", self.rule("all", rule.value),
                         fixable)
            return False
        return True

    def judge_privileged_reach(self, r: Reach) -> None:
        """A privileged container whose rules open every char device: it may mknod any
        node, so no spec edit confines it and no allocation binds it; only ``policy.all``
        decides, as for any privileged request of every GPU."""
        self.notes.append(f"{r.label}: {r.why}; judged by {self.rule('all', self.policy.all.value)}"
                          " only")
        if self.policy.all is AllRule.NEVER:
            self.violate(r.label, f"{r.why}, and no container may have every GPU",
                         self.rule("all", "never"), fixable=False)
        # Its IMEX channels likewise: only who may have any (policy.imex) decides.
        if r.imex_channels and self.policy.imex is Imex.NEVER:
            self.violate(r.label, f"{r.why}, every IMEX channel too, and no container may "
                         "have IMEX channels", self.rule("imex", "never"), fixable=False)

    def mig_management_allowed(self, label: str, fixable: bool) -> bool:
        """NVIDIA's MIG config/monitor capabilities: judged like NVIDIA_MIG_CONFIG_DEVICES."""
        if self.policy.mig_config is MigConfig.NEVER:
            self.violate(label, "MIG management is not allowed",
                         self.rule("mig-config", "never"), fixable)
            return False
        if not self.request.privileged:
            self.violate(label, "MIG management needs a privileged container",
                         self.rule("mig-config", "privileged"), fixable)
            return False
        return True

    # -- rewrites -----------------------------------------------------------

    def rewrite_env(self, kept: list[tuple[str, list[Device]]], keep_none: bool,
                    caps: tuple[str, ...] | None, drop_mig: bool,
                    void_fallback: bool = False, imex_env: str | None = None
                    ) -> tuple[str, ...]:
        env = self.request.env
        replace: dict[str, str | None] = {}
        if void_fallback:
            # NVIDIA reads the mounts, but the rewrite leaves none: it would fall back to
            # the env, which nobody judged. Make that fallback find nothing.
            replace[VISIBLE_DEVICES] = f"{VISIBLE_DEVICES}=void"
            for name in env.variables:
                replace.setdefault(name, None)
        elif env.devices.kind is not Kind.UNSET and self.request.env_read:
            uuids = _uuids(d for _, devs in kept for d in devs)
            value = ",".join(uuids) if uuids else ("none" if keep_none else "void")
            replace[VISIBLE_DEVICES] = f"{VISIBLE_DEVICES}={value}"
            for name in env.variables:
                # NVIDIA reads swarm-resource variables instead, when present.
                replace.setdefault(name, None)
        if caps is not None:
            replace[DRIVER_CAPABILITIES] = f"{DRIVER_CAPABILITIES}={','.join(caps)}"
        if drop_mig:
            replace[MIG_CONFIG_DEVICES] = None
            replace[MIG_MONITOR_DEVICES] = None
        if imex_env is not None:
            replace[IMEX_CHANNELS] = imex_env
        return rewrite_entries(self.spec.env, replace)

    def rewrite_devices(self, doc: dict[str, Any]) -> None:
        """Drop refused nodes and cgroup rules, and narrow wildcard rules to the minors
        kept; every other entry stays as it was, byte for byte."""
        linux = doc.get("linux") or {}
        if self.drop_nodes:
            linux["devices"] = [d for i, d in enumerate(linux.get("devices") or [])
                                if i not in self.drop_nodes]
        resources = linux.get("resources") or {}
        if self.drop_rules or self.narrow_rules:
            rules: list[Any] = []
            for i, raw in enumerate(resources.get("devices") or []):
                if i in self.narrow_rules:
                    rules.extend(self.narrow_rules[i])
                elif i not in self.drop_rules:
                    rules.append(raw)
            resources["devices"] = rules

    def rewrite_mounts(self, kept: list[tuple[str, list[Device]]], gpu: bool = True,
                       drop_imex: set[str] | frozenset[str] = frozenset()) -> list[Any]:
        """Drop refused device mounts; pin kept ones to one UUID mount per device; with
        ``gpu`` False, GPU device mounts (which NVIDIA does not read) stay as they are.

        Every ``/dev/null`` mount NVIDIA could read as a device request is matched
        by its cleaned destination, so a duplicate cannot smuggle a refused id back;
        an imex/ mount goes when its channel is in ``drop_imex``, under every spelling.
        """
        by_id = dict(kept)
        out: list[Any] = []
        pinned_at: set[str] = set()
        for raw, parsed in zip(self.spec.doc.get("mounts") or [], self.spec.mounts, strict=True):
            device_id = device_mount_id(parsed)
            if device_id is not None and device_id.startswith(IMEX_MOUNT_PREFIX):
                if device_id.removeprefix(IMEX_MOUNT_PREFIX) not in drop_imex:
                    out.append(raw)
                continue
            if device_id is None or not gpu:
                out.append(raw)
                continue
            for device in by_id.get(device_id, []):
                destination = f"{DEVICE_MOUNT_ROOT}/{device.uuid}"
                if destination not in pinned_at:
                    pinned_at.add(destination)
                    out.append(dict(raw, destination=destination))
        return out

    def rewrite_annotations(self, kept: list[tuple[str, list[Device]]],
                            drop_imex: set[str] | frozenset[str] = frozenset()
                            ) -> dict[str, str]:
        keep = {name for name, _ in kept}
        drop = {f"{IMEX_CDI_KIND}={c}" for c in drop_imex}
        out: dict[str, str] = {}
        for key, value in self.spec.doc.get("annotations", {}).items():
            if not key.startswith(CDI_ANNOTATION_PREFIX):
                out[key] = value
                continue
            # Read the value itself: request.cdi lists a name once even when several
            # annotations repeat it, and a repeat must not bring a refused name back.
            names = split_ids(value)
            # Non-GPU names (another vendor, allowed IMEX channels) are not ours to drop.
            left = [n for n in names if n in keep or (not _judged_cdi(n) and n not in drop)]
            if left:
                out[key] = value if left == names else ",".join(left)
        return out


def rewrite_entries(env: Sequence[str], replace: dict[str, str | None]) -> tuple[str, ...]:
    """Give each name in ``replace`` one entry at its first position (or the end);
    ``None`` removes the name. Every other entry keeps its place."""
    out: list[str] = []
    placed: set[str] = set()
    for entry in env:
        name = entry.partition("=")[0]
        if name not in replace or "=" not in entry:
            out.append(entry)
            continue
        new = replace[name]
        target = new.partition("=")[0] if new is not None else name
        if new is not None and target not in placed:
            out.append(new)
        placed.add(target)
    for name, new in replace.items():
        if new is not None and name not in placed:
            out.append(new)
            placed.add(name)
    return tuple(out)


def _is_gpu_cdi(name: str) -> bool:
    parsed = cdi_device_name(name)
    return parsed is not None and parsed[0].startswith("nvidia.com/") and not name.startswith(
        _NON_GPU_CDI_KINDS
    )


def _judged_cdi(name: str) -> bool:
    """The CDI names ``judge_cdi`` rules on: NVIDIA's, less the kinds that attach no GPU."""
    return name.startswith("nvidia.com/") and not name.startswith(_NON_GPU_CDI_KINDS)


def _ids(channels: Iterable[ImexChannel]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.id for c in channels))


def _uuids(devices: Iterable[Device]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(d.uuid for d in devices))


def _first_label(request: Request) -> str:
    if request.env_read and request.env.devices.kind in (Kind.ALL, Kind.DEVICES):
        return request.env.label
    if request.mounts_read and request.mounts:
        m = request.mounts[0].mount
        return f"mount {m.source} -> {m.destination}"
    if request.nvidia_cdi:
        c = request.nvidia_cdi[0]
        return f"annotation {c.annotation}={c.name}"
    asking = [r for r in request.device_nodes if r.kind.asks]
    if asking:
        return asking[0].label
    return "GPU request"


__all__ = ["Decision", "Gpu", "Outcome", "Violation", "decide", "needs_inventory"]
