"""The one flow every mode shares: spec -> request -> inventory -> policy -> decision."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from nvhook.config import Config
from nvhook.decision.decide import Decision, decide, needs_inventory
from nvhook.decision.policy import Policy
from nvhook.decision.request import Request, parse
from nvhook.errors import InventoryError
from nvhook.gpus import inventory as inventory_mod
from nvhook.gpus import source
from nvhook.gpus.inventory import Inventory
from nvhook.oci.spec import Spec


@dataclass(frozen=True)
class Evaluation:
    spec: Spec
    request: Request
    policy: Policy
    inventory: Inventory | InventoryError | None  # None: not needed, not read
    decision: Decision
    seconds: float


def evaluate(spec: Spec, config: Config, inventory_file: Path | None = None) -> Evaluation:
    started = time.monotonic()
    request = parse(spec, config.swarm_resource)
    policy = config.policy_for(spec.annotations)
    inventory: Inventory | InventoryError | None = None
    if request.asks_for_devices and needs_inventory(request):
        inventory = read_inventory(config, inventory_file)
    decision = decide(
        request,
        inventory if inventory is not None else Inventory((), (), None, source="none"),
        policy,
        spec,
    )
    return Evaluation(spec, request, policy, inventory, decision, time.monotonic() - started)


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
