"""The one flow every mode shares: spec -> request -> inventory -> policy -> decision."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nvhook.config import Config
from nvhook.decision.decide import Decision, allocated_devices, decide, needs_inventory
from nvhook.decision.policy import Policy
from nvhook.decision.request import NO_HOST, Request, parse
from nvhook.errors import AllocationError, InventoryError
from nvhook.gpus import devnodes, source
from nvhook.gpus import inventory as inventory_mod
from nvhook.gpus.inventory import Inventory
from nvhook.kube import identity as identity_mod
from nvhook.kube.identity import Identity
from nvhook.kube.settings import Binding, Unallocated
from nvhook.nvidia import config as nvidia_config
from nvhook.nvidia.config import NvidiaConfig, NvidiaConfigError
from nvhook.oci.spec import Spec

if TYPE_CHECKING:  # kube.allocation: imported for a CRI container only (bind_allocation)
    from nvhook.kube.allocation import Allocation


@dataclass(frozen=True)
class Evaluation:
    """Everything one judgement saw and decided, for the hook, ``explain`` and the audit line."""

    spec: Spec
    request: Request
    policy: Policy
    inventory: Inventory | InventoryError | None  # None: not needed, not read
    decision: Decision
    seconds: float
    identity: Identity | None = None  # the CRI pod identity, when the spec carries one
    # The kubelet's allocation (or why it could not be read); None: not bound to one.
    allocation: Allocation | AllocationError | None = None
    unallocated: Unallocated = Unallocated.VOID  # what an empty allocation turns into
    before_create: bool = False  # judged before the runtime created the container

    def allocation_json(self) -> dict[str, object] | None:
        """The ``allocation`` object of ``explain --json`` and of the audit line."""
        a = self.allocation
        if a is None:
            return None
        if isinstance(a, AllocationError):
            return {"error": str(a),
                    "identity": self.identity.as_json() if self.identity else None}
        out: dict[str, object] = a.as_json()
        out["exempt"] = self.policy.allocation.value == "exempt"
        # What the kubelet's ids mapped onto: the UUIDs a grant may come from.
        if isinstance(self.inventory, Inventory):
            devices, dead = allocated_devices(a, self.inventory)
            out["allocated"] = [d.uuid for d in devices]
            if dead:
                out["not_live"] = list(dead)
        if not a.ids and self.request.asks_for_devices:
            out["outcome"] = config_void_or_deny(self)
        return out


def config_void_or_deny(e: Evaluation) -> str:
    return ("void: no GPU allocated by the kubelet, the request was replaced by void"
            if e.decision.outcome.value != "deny" else "deny: no GPU allocated by the kubelet")


def evaluate(spec: Spec, config: Config, inventory_file: Path | None = None,
             nvidia: NvidiaConfig | None = None, before_create: bool = False) -> Evaluation:
    """Raises ``NvidiaConfigError`` when NVIDIA's config.toml cannot be read and the
    container asks for a GPU on any channel: without it nothing can be judged.
    ``before_create``: called by a mode that runs before the runtime creates the container
    (runtime shim, Podman precreate), which can still remove device nodes."""
    started = time.monotonic()
    host = read_host(config, spec)
    request = parse(spec, config.swarm_resource, nvidia or read_nvidia_config(config, spec, host),
                    host)
    identity = identity_mod.of_spec(spec.doc, spec.annotations)
    policy = config.policy_for(spec.annotations, identity)
    allocation: Allocation | AllocationError | None = None
    unallocated = config.kubernetes.unallocated
    if request.bindable and identity is not None:
        allocation, unallocated = bind_allocation(config, identity, host, unallocated)
    inventory: Inventory | InventoryError | None = None
    if request.asks_for_devices and (
        needs_inventory(request) or (allocation is not None
                                     and not isinstance(allocation, AllocationError)
                                     and bool(allocation.ids or allocation.dra_reaches))
    ):
        inventory = read_inventory(config, inventory_file)
    decision = decide(
        request,
        inventory if inventory is not None else Inventory((), (), None, source="none"),
        policy,
        spec,
        allocation=allocation,
        unallocated=unallocated,
        before_create=before_create,
    )
    return Evaluation(spec, request, policy, inventory, decision, time.monotonic() - started,
                      identity, allocation, unallocated, before_create)


def bind_allocation(config: Config, identity: Identity, host: devnodes.Host,
                    unallocated: Unallocated
                    ) -> tuple[Allocation | AllocationError | None, Unallocated]:
    """The kubelet's allocation of a CRI container's GPU request (None: not bound to one),
    and what an empty one turns into. kube.allocation is imported here: a container without
    a CRI identity never defines its types."""
    from nvhook.kube import allocation as allocation_mod

    if identity.sandbox and config.kubernetes.allocation is not Binding.OFF:
        # The pod sandbox (pause) runs no workload and has no allocation to look up: it is
        # skipped, and a GPU request it carries anyway is replaced by void.
        return allocation_mod.Allocation("sandbox", identity), Unallocated.VOID
    if not allocation_mod.applies(config.kubernetes, identity):
        return None, unallocated
    # Read even for an exempt pod, so explain and the audit line show the allocation.
    try:
        allocation = allocation_mod.lookup(config.kubernetes, identity)
    except AllocationError as e:
        return e, unallocated
    if allocation.dra:
        # DRA devices are CDI device nodes: what they are is their number on this host.
        dra_host = host if host is not NO_HOST else devnodes.load_host(
            config.inventory.proc_devices, config.inventory.mig_minors)
        allocation = dataclasses.replace(allocation, dra_reaches=devnodes.classify(
            allocation.dra_nodes(), (), dra_host))
    return allocation, unallocated


def read_nvidia_config(config: Config, spec: Spec,
                       host: devnodes.Host = NO_HOST) -> NvidiaConfig | None:
    """NVIDIA's settings for the delegate's argv. An unreadable file fails closed, but
    only for a container that asks for a GPU through a channel NVIDIA's hook reads (the
    union view); device nodes alone are runc's, judged without NVIDIA's settings."""
    try:
        return nvidia_config.load(config.delegate.args)
    except NvidiaConfigError:
        if dataclasses.replace(parse(spec, config.swarm_resource, host=host),
                               device_nodes=()).asks_for_devices:
            raise
        return None


def read_host(config: Config, spec: Spec) -> devnodes.Host:
    """The host's device numbering, read only for a spec with device nodes or rules."""
    if not spec.device_nodes and not spec.device_rules:
        return NO_HOST
    return devnodes.load_host(config.inventory.proc_devices, config.inventory.mig_minors)


def read_inventory(
    config: Config, inventory_file: Path | None = None
) -> Inventory | InventoryError:
    """Failure is a value here: ``decide`` turns it into a fail-closed denial."""
    settings = config.inventory
    try:
        if inventory_file is not None:
            return inventory_mod.load_file(inventory_file)
        return source.load(settings.source.value, settings.file, settings.timeout)
    except InventoryError as e:
        return e
