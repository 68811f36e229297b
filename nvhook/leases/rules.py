"""Which devices a container may lease, given the leases other containers hold. Pure.

- exclusive: a device must have no other holder. A whole GPU is also busy while
  any of its MIG devices is leased by someone else.
- shared (max-per-gpu = N): no exclusive holder, and fewer than N other holders.
- a MIG device is leased on its own, but never while another container holds its
  parent GPU exclusively.
The container's own leases never count against it, so a re-check of the same
container (the shim's create, then its prestart hook) is not a collision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from nvhook.decision.policy import LeaseMode, LeasePolicy
from nvhook.gpus.inventory import Gpu, Inventory, MigDevice
from nvhook.leases.table import EXCLUSIVE, SHARED, Lease
from nvhook.safetext import one_line


@dataclass(frozen=True)
class Holder:
    """Who asks for leases: the container as its OCI state (or the shim's argv) names it."""

    container: str
    bundle: str | None
    pid: int | None
    pid_start: int | None


def held(leases: Iterable[Lease], me: str, policy: LeasePolicy,
         inventory: Inventory) -> dict[str, str]:
    """Lower-cased UUID -> why ``me`` cannot lease that device now."""
    by_device: dict[str, list[Lease]] = {}
    for lease in sorted(leases, key=lambda x: (x.time, x.container)):
        if lease.container != me:
            by_device.setdefault(lease.device.lower(), []).append(lease)
    out: dict[str, str] = {}
    for device in inventory.devices():
        problem = _problem(device, by_device, policy, inventory)
        if problem is not None:
            out[device.uuid.lower()] = problem
    return out


def _problem(device: Gpu | MigDevice, by_device: dict[str, list[Lease]],
             policy: LeasePolicy, inventory: Inventory) -> str | None:
    others = by_device.get(device.uuid.lower(), [])
    exclusive = [x for x in others if x.exclusive]
    if exclusive:
        return f"{device.uuid} is leased exclusively by container {_who(exclusive)}"
    if isinstance(device, MigDevice):
        parent = [x for x in by_device.get(device.parent.lower(), []) if x.exclusive]
        if parent:
            return (f"{device.uuid}: its parent GPU {device.parent} is leased exclusively by "
                    f"container {_who(parent)}")
    if policy.mode is LeaseMode.EXCLUSIVE:
        if others:
            return (f"{device.uuid} is leased (shared) by container {_who(others)}, so it "
                    "cannot be leased exclusively")
        if isinstance(device, Gpu):
            for mig in inventory.migs_of(device):
                children = by_device.get(mig.uuid.lower(), [])
                if children:
                    return (f"{device.uuid} is busy: its MIG device {mig.uuid} is leased by "
                            f"container {_who(children)}")
        return None
    if len(others) >= policy.max_per_gpu:
        return (f"{device.uuid} is shared by {len(others)} container(s) already "
                f"(max-per-gpu = {policy.max_per_gpu}): {_who(others)}")
    return None


def _who(leases: list[Lease]) -> str:
    """The earliest holder, and how many more there are."""
    first = one_line(leases[0].container)
    more = len({x.container for x in leases}) - 1
    return f"{first} (and {more} more)" if more > 0 else first


def records(granted: Iterable[str], holder: Holder, policy: LeasePolicy,
            rule: str | None, now: datetime | None = None) -> tuple[Lease, ...]:
    """The leases a container holds after being granted ``granted``."""
    stamp = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
    mode = EXCLUSIVE if policy.mode is LeaseMode.EXCLUSIVE else SHARED
    return tuple(Lease(uuid, holder.container, holder.bundle, holder.pid, holder.pid_start,
                       mode, stamp, rule) for uuid in dict.fromkeys(granted))
