"""One JSON line per decision, appended under ``flock`` so concurrent hooks never interleave."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nvhook import __version__
from nvhook.decision.evaluate import Evaluation
from nvhook.decision.request import to_json
from nvhook.kube import identity as identity_mod


def record(evaluation: Evaluation, container_id: str, stage: str,
           annotations: Mapping[str, str],
           leases: Mapping[str, Any] | None = None) -> dict[str, Any]:
    d = evaluation.decision
    # The pod identity the CRI runtime set, normalized over containerd's and CRI-O's keys.
    identity = evaluation.identity or identity_mod.from_annotations(annotations)
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "container": container_id,
        "namespace": identity.namespace if identity else None,
        "pod": identity.pod if identity else None,
        "pod_container": identity.container if identity else None,
        "allocation": evaluation.allocation_json(),
        "stage": stage,
        "request": to_json(evaluation.request),
        "decision": d.outcome.value,
        "granted": list(d.granted),
        "reasons": d.reasons,
        "mode": d.policy.mode.value,
        "rule": d.policy.rule,
        "version": __version__,
        "duration_ms": round(evaluation.seconds * 1000, 3),
    }
    if leases is not None:
        entry["leases"] = dict(leases)  # what the lease step acquired, released, reclaimed
    return entry


def release_record(container_id: str, stage: str, released: list[str]) -> dict[str, Any]:
    """The line for leases given back (poststop): no request was judged."""
    return {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "container": container_id,
        "stage": stage,
        "decision": "release",
        "leases": {"released": released},
        "version": __version__,
    }


def append(path: str, entry: Mapping[str, Any]) -> None:
    """Append one line. Raises OSError; the caller reports it without failing the container."""
    line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    target = Path(path)
    target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)  # also drops the lock

