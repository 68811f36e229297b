"""The container's allocation, from the kubelet: sources tried in order, resource names
matched by pattern, device ids as NVIDIA's device plugin hands them out.

Ids come back as the plugin wrote them, less the ``::N`` replica suffix of time-slicing
and MPS (replicas are the same device, shared). Mapping them onto the live inventory
(UUIDs, MIG UUIDs, or indices under ``--device-id-strategy=index``) is the decision's job,
which has the inventory.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvhook.errors import AllocationError
from nvhook.kube.identity import Identity
from nvhook.kube.settings import CHECKPOINT as CHECKPOINT
from nvhook.kube.settings import PODRESOURCES as PODRESOURCES
from nvhook.kube.settings import SOURCES as SOURCES
from nvhook.kube.settings import Binding as Binding
from nvhook.kube.settings import KubeSettings as KubeSettings
from nvhook.kube.settings import Unallocated as Unallocated
from nvhook.oci.spec import DeviceNode

if TYPE_CHECKING:  # podresources imports grpc: the GPU path only
    from nvhook.gpus.devnodes import Reach
    from nvhook.kube.cdi import Resolved
    from nvhook.kube.podresources import Claim

@dataclass(frozen=True)
class DraDevice:
    """A CDI name of one of the container's DRA claims, resolved through the CDI specs."""

    claim: str  # namespace/name
    resolved: Resolved


@dataclass(frozen=True)
class Allocation:
    """What the kubelet allocated to one container, over the configured resource names."""

    source: str
    identity: Identity
    # (resource name, device id without its replica suffix), in the kubelet's order.
    devices: tuple[tuple[str, str], ...] = ()
    # DRA: the CDI names of the container's claims, with their char device numbers.
    dra: tuple[DraDevice, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)
    # The DRA nodes by number, classified with the host's numbering (evaluate sets it;
    # the decision maps them onto the inventory: they then count as allocated).
    dra_reaches: tuple[Reach, ...] = field(default=(), compare=False)

    def dra_nodes(self) -> tuple[DeviceNode, ...]:
        """The claims' char device nodes, as ``linux.devices`` entries would carry them."""
        numbers = [n for d in self.dra for n in d.resolved.nodes]
        return tuple(DeviceNode(i, path, "c", major, minor)
                     for i, (path, major, minor) in enumerate(numbers))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i for _, i in self.devices))

    @property
    def cdi_devices(self) -> tuple[str, ...]:
        return tuple(d.resolved.name for d in self.dra)

    def foreign_cdi(self, names: tuple[str, ...]) -> list[tuple[str, str]]:
        """Requested CDI names of a kind this container's claims use that are not its own:
        another claim's devices -> (name, why)."""
        kinds = {n.partition("=")[0] for n in self.cdi_devices}
        mine = set(self.cdi_devices)
        return [(n, f"CDI device {n} belongs to another DRA claim (this container's claims: "
                 f"{', '.join(sorted({d.claim for d in self.dra}))})")
                for n in names if n not in mine and n.partition("=")[0] in kinds]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "identity": self.identity.as_json(),
                               "devices": [{"resource": r, "id": i} for r, i in self.devices],
                               "cdi_devices": list(self.cdi_devices)}
        if self.dra:
            from nvhook.kube import cdi

            out["dra"] = [{"claim": d.claim, **cdi.as_json(d.resolved)} for d in self.dra]
        return out


def strip_replica(device_id: str) -> str:
    """``GPU-x::3`` -> ``GPU-x``: a time-slicing/MPS replica is the device itself, shared."""
    base, sep, n = device_id.rpartition("::")
    return base if sep and n.isdigit() and base else device_id


def matches(resource: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(resource, p) for p in patterns)


def applies(settings: KubeSettings, identity: Identity | None) -> bool:
    """Whether the container is bound to an allocation at all."""
    if settings.allocation is Binding.OFF or identity is None:
        return False
    if settings.allocation is Binding.ON:
        return True
    return any(_source_path(settings, s).exists() for s in settings.sources)


def lookup(settings: KubeSettings, identity: Identity) -> Allocation:
    """The allocation, from the first source that knows the container. Raises
    ``AllocationError`` when none could be read: the caller denies, never falls back
    to the static policy."""
    if identity.conflicts:
        raise AllocationError("containerd's and CRI-O's pod annotations disagree on "
                              + ", ".join(identity.conflicts))
    if not identity.complete:
        raise AllocationError("pod identity incomplete: no " + ", ".join(identity.missing))
    if identity.uid_mismatch:
        raise AllocationError(f"pod UID {identity.pod_uid} is not the UID in the cgroup path "
                              f"({identity.cgroup_uid})")
    errors: list[str] = []
    unlisted = 0
    for source in settings.sources:
        path = _source_path(settings, source)
        if not path.exists():
            errors.append(f"{source}: {path} does not exist")
            continue
        try:
            found = (_from_podresources if source == PODRESOURCES
                     else _from_checkpoint)(settings, identity)
        except AllocationError as e:
            errors.append(str(e))
            continue
        if found is not None:
            return found
        errors.append(f"{source}: container {identity.container!r} not listed")
        unlisted += 1
    if errors and unlisted == len(errors):
        # Every source answered, none lists the container: it was allocated nothing.
        return Allocation("+".join(settings.sources), identity, notes=tuple(errors))
    raise AllocationError("kubelet allocation unavailable: " + "; ".join(errors))


def _source_path(settings: KubeSettings, source: str) -> Path:
    return settings.socket if source == PODRESOURCES else settings.checkpoint


def _from_podresources(settings: KubeSettings, identity: Identity) -> Allocation | None:
    from nvhook.kube import podresources  # grpc and protobuf: the GPU path only

    assert identity.namespace and identity.pod
    try:
        pod = podresources.lookup(settings.socket, identity.namespace, identity.pod,
                                  settings.timeout)
    except podresources.NotFound:
        # A pod the kubelet does not list has no devices: say so, let a later source speak.
        return None
    for c in pod.containers:
        if c.name == identity.container:
            return Allocation(PODRESOURCES, identity, tuple(
                (d.resource, strip_replica(i)) for d in c.devices
                if matches(d.resource, settings.resources) for i in d.device_ids),
                dra_devices(settings, c.claims))
    # List leaves classic init containers out: the checkpoint has them.
    return None


def dra_devices(settings: KubeSettings, claims: tuple[Claim, ...]
                ) -> tuple[DraDevice, ...]:
    """The claims' CDI names resolved through the CDI specs. Raises ``AllocationError``
    for a name no readable spec defines: the container then fails closed."""
    if not claims:
        return ()
    from nvhook.kube import cdi

    registry = cdi.load(settings.cdi_spec_dirs)
    out = []
    for claim in claims:
        who = f"{claim.namespace}/{claim.name}"
        for name in claim.cdi_devices:
            try:
                out.append(DraDevice(who, registry.resolve(name)))
            except AllocationError as e:
                raise AllocationError(f"DRA claim {who}: {e}") from None
    return tuple(out)


def _from_checkpoint(settings: KubeSettings, identity: Identity) -> Allocation | None:
    if not identity.pod_uid:
        raise AllocationError(f"{CHECKPOINT}: no pod UID in the annotations to look it up by")
    try:
        from nvhook.kube import checkpoint

        entries = checkpoint.read(settings.checkpoint)
    except FileNotFoundError:
        raise AllocationError(f"{CHECKPOINT}: {settings.checkpoint} vanished") from None
    except OSError as e:  # opened but not readable: a directory, an I/O error
        raise AllocationError(f"{CHECKPOINT}: {settings.checkpoint}: cannot read: "
                              f"{e.strerror or e}") from None
    uid = identity.pod_uid.lower()
    mine = [e for e in entries if e.pod_uid.lower() == uid]
    if not mine:
        return None
    devices = tuple((e.resource, strip_replica(i)) for e in mine
                    if e.container == identity.container and matches(e.resource,
                                                                     settings.resources)
                    for i in e.device_ids)
    return Allocation(CHECKPOINT, identity, devices)
