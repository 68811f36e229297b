"""The lease step of the flow: after the policy has decided, before anything is handed over.

``acquire`` runs read -> reconcile -> decide -> write under the table's lock, so
two containers can never both take an exclusive lease, however many start at
once. It decides again with the devices others hold as ``policy.leases``
violations: enforce mode denies (naming the holder), rewrite mode keeps the
leasable subset, or ``void``. ``release`` (poststop) drops a container's leases
and is idempotent. ``preview`` is the same reading without the lock or a write,
for ``explain``, ``nvhook leases`` and ``doctor``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nvhook.config import Config
from nvhook.decision.decide import Decision, Outcome, Violation, decide
from nvhook.decision.evaluate import Evaluation
from nvhook.decision.policy import Mode
from nvhook.gpus.inventory import Inventory
from nvhook.leases import liveness, rules
from nvhook.leases.rules import Holder
from nvhook.leases.store import Store
from nvhook.leases.table import Lease, LeaseTableError, Table


@dataclass(frozen=True)
class Stale:
    """A lease to reclaim (its holder is gone, or the node rebooted), and why."""

    lease: Lease
    why: str


@dataclass(frozen=True)
class LeaseStep:
    """What the lease step did (or, for a preview, would do)."""

    held: tuple[Lease, ...]  # the container's leases afterwards
    released: tuple[Lease, ...] = ()  # its earlier leases it no longer holds
    collisions: tuple[str, ...] = ()  # why requested devices could not be leased
    reclaimed: tuple[Stale, ...] = ()  # stale leases of others, dropped on the way

    def as_json(self) -> dict[str, Any]:
        return {
            "held": [x.device for x in self.held],
            "mode": self.held[0].mode if self.held else None,
            "released": [x.device for x in self.released],
            "collisions": list(self.collisions),
            "reclaimed": [{"device": s.lease.device, "container": s.lease.container,
                           "why": s.why} for s in self.reclaimed],
        }


def reconcile(table: Table, boot: str) -> tuple[Table, tuple[Stale, ...]]:
    """Split the table into live leases and stale ones (never a live holder's)."""
    if table.boot_id is not None and table.boot_id != boot:
        why = f"the node rebooted (boot id {table.boot_id} -> {boot})"
        return Table(boot), tuple(Stale(x, why) for x in table.leases)
    live: list[Lease] = []
    stale: list[Stale] = []
    for lease in table.leases:
        why = liveness.stale_reason(lease)
        if why is None:
            live.append(lease)
        else:
            stale.append(Stale(lease, why))
    return Table(boot, tuple(live), table.format), tuple(stale)


def applies(evaluation: Evaluation) -> bool:
    d = evaluation.decision
    return (d.policy.leases.active and d.outcome in (Outcome.ALLOW, Outcome.REWRITE)
            and bool(d.granted) and isinstance(evaluation.inventory, Inventory))


def acquire(evaluation: Evaluation, config: Config,
            holder: Holder) -> tuple[Evaluation, LeaseStep | None]:
    """-> the evaluation decided again with the leases, and what was leased.
    None: no lease policy applies to this container. Fails closed: a table that
    cannot be read or written denies the container."""
    if not applies(evaluation):
        return evaluation, None
    store = Store(config.leases_dir)
    try:
        with store.locked():
            table = store.read()
            live, reclaimed = reconcile(table, liveness.boot_id())
            evaluation, step = _decide(evaluation, live, holder, reclaimed)
            others = live.without_container(holder.container)
            new = Table(live.boot_id, others.leases + step.held)
            if new.leases != table.leases or table.boot_id != new.boot_id \
                    or table.format != new.format:
                store.write(new)
    except LeaseTableError as e:
        return _fail_closed(evaluation, e), None
    return evaluation, step


def preview(evaluation: Evaluation, config: Config,
            container: str = "") -> tuple[Evaluation, LeaseStep | None]:
    """``acquire`` without the lock and without writing: what it would do now."""
    if not applies(evaluation):
        return evaluation, None
    try:
        live, reclaimed = reconcile(Store(config.leases_dir).read(), liveness.boot_id())
    except LeaseTableError as e:
        return _fail_closed(evaluation, e), None
    return _decide(evaluation, live, Holder(container, None, None, None), reclaimed)


def release(config: Config, container: str) -> tuple[Lease, ...]:
    """Drop every lease of ``container``; -> the leases dropped. Idempotent. A node that
    never leased anything has no table, and none is created here."""
    store = Store(config.leases_dir)
    if not store.exists():
        return ()
    with store.locked():
        table = store.read()
        mine = table.of_container(container)
        if mine:
            store.write(table.without_container(container))
    return mine


def listing(config: Config) -> tuple[Table, dict[tuple[str, str], str]]:
    """The table and, per (device, container), why that lease is stale."""
    table = Store(config.leases_dir).read()
    _, stale = reconcile(table, liveness.boot_id())
    return table, {(s.lease.device, s.lease.container): s.why for s in stale}


def _decide(evaluation: Evaluation, live: Table, holder: Holder,
            reclaimed: tuple[Stale, ...]) -> tuple[Evaluation, LeaseStep]:
    before = evaluation.decision
    policy = before.policy
    assert isinstance(evaluation.inventory, Inventory)
    held = rules.held(live.leases, holder.container, policy.leases, evaluation.inventory)
    # The re-decision keeps the kubelet's allocation binding of the first one.
    decision = decide(evaluation.request, evaluation.inventory, policy, evaluation.spec, held,
                      allocation=evaluation.allocation, unallocated=evaluation.unallocated,
                      before_create=evaluation.before_create)
    granted: Iterable[str] = ()
    if decision.outcome in (Outcome.ALLOW, Outcome.REWRITE):
        # Audit mode lets a collision through but never records a second holder.
        granted = [u for u in decision.granted if u.lower() not in held] \
            if policy.mode is Mode.AUDIT else decision.granted
    previous = live.of_container(holder.container)
    mine = rules.records(granted, holder, policy.leases, policy.rule)
    # A re-check (the shim's create, then its prestart hook) keeps the first lease time.
    since = {x.device.lower(): x.time for x in previous}
    mine = tuple(dataclasses.replace(x, time=since.get(x.device.lower(), x.time)) for x in mine)
    kept = {x.device.lower() for x in mine}
    collisions = tuple(dict.fromkeys(
        held[u.lower()] for u in before.granted if u.lower() in held))
    step = LeaseStep(mine, tuple(x for x in previous if x.device.lower() not in kept),
                     collisions, reclaimed)
    return dataclasses.replace(evaluation, decision=decision), step


def _fail_closed(evaluation: Evaluation, error: LeaseTableError) -> Evaluation:
    d = evaluation.decision
    failed = Violation("leases", f"lease table unusable: {error.message}", "fail closed")
    decision = Decision(Outcome.DENY, d.policy, violations=(failed,),
                        env=evaluation.spec.env)
    return dataclasses.replace(evaluation, decision=decision)
