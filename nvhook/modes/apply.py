"""What the pre-create modes (runtime shim, Podman precreate) share: the cheap
pre-check, the decided document with the env edits only they can make, and the
audit line."""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from nvhook import audit
from nvhook import config as config_mod
from nvhook.config import Config
from nvhook.decision.decide import Outcome, rewrite_entries
from nvhook.decision.evaluate import Evaluation
from nvhook.decision.policy import Mode
from nvhook.errors import DeniedError
from nvhook.gpus.inventory import Gpu, Inventory, MigDevice
from nvhook.hookargs import swarm_names
from nvhook.oci import spec as spec_mod
from nvhook.safetext import one_line

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


def reindex_cuda(env: Sequence[str], granted: Sequence[str],
                 inventory: Inventory | None) -> tuple[str, ...]:
    """Point ``CUDA_VISIBLE_DEVICES`` at the granted devices as the container sees them.

    Only when the variable is present and something was granted. The container
    enumerates its GPUs in host NVML index order, so a GPU gets its rank among the
    granted GPUs (host 3,1,5 -> "1,0,2", as Sarus does); a MIG device gets its UUID,
    which CUDA accepts and which needs no enumeration rule. A UUID the inventory does
    not know is passed as the UUID itself.
    """
    if not granted or not any(e.partition("=")[0] == CUDA_VISIBLE_DEVICES and "=" in e
                              for e in env):
        return tuple(env)
    devices = [inventory.by_uuid(u) if inventory is not None else None for u in granted]
    gpu_order = sorted((d.index, d.uuid) for d in devices if isinstance(d, Gpu))
    rank = {uuid: n for n, (_, uuid) in enumerate(gpu_order)}
    items = []
    for uuid, device in zip(granted, devices, strict=True):
        if isinstance(device, Gpu):
            items.append(str(rank[device.uuid]))
        elif isinstance(device, MigDevice):
            items.append(device.uuid)
        else:
            items.append(uuid)
    value = ",".join(dict.fromkeys(items))
    return rewrite_entries(env, {CUDA_VISIBLE_DEVICES: f"{CUDA_VISIBLE_DEVICES}={value}"})


def decided_document(evaluation: Evaluation) -> dict[str, Any]:
    """The spec document after the decision, with the env edits only a pre-create
    stage can make: ``CUDA_VISIBLE_DEVICES`` re-indexed. Raises ``DeniedError``.

    Audit mode changes nothing, so it gets the document as it came.
    """
    decision = evaluation.decision
    if decision.outcome is Outcome.DENY:
        raise DeniedError(decision.denial)
    spec = evaluation.spec
    doc = decision.doc if decision.doc is not None else spec.doc
    doc = copy.deepcopy(doc)
    if decision.outcome is Outcome.SKIP or decision.policy.mode is Mode.AUDIT:
        return doc
    inventory = evaluation.inventory if isinstance(evaluation.inventory, Inventory) else None
    env = list(decision.env) if decision.doc is not None else list(spec.env)
    new_env = reindex_cuda(env, decision.granted, inventory)
    if new_env != tuple(env):
        doc.setdefault("process", {})["env"] = list(new_env)
    return doc


def may_request_gpu(doc: dict[str, Any], config_option: str | None) -> bool:
    """The hook's cheap pre-check: False only when no channel can name a GPU."""
    swarm = swarm_names(str(config_mod.config_path(config_option)[0]))
    return swarm is None or spec_mod.may_request_gpu(doc, swarm)


def record(config: Config, evaluation: Evaluation, container_id: str, stage: str,
           leases: Mapping[str, Any] | None = None) -> None:
    """Audit every judged request (log and syslog); a failure is a warning, never a failed
    start."""
    for warning in audit.publish(config, evaluation, container_id, stage,
                                 evaluation.spec.annotations, leases):
        print(f"nvhook: {one_line(warning)}", file=sys.stderr)
