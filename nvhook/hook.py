"""The prestart hook: state on stdin -> decision -> deny, or rewrite and hand over.

Returns what to do; the CLI does it (prints, execs, exits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvhook import audit, delegate
from nvhook import spec as spec_mod
from nvhook import state as state_mod
from nvhook.config import Config
from nvhook.decide import Outcome
from nvhook.engine import Evaluation, evaluate
from nvhook.errors import DelegateError, DeniedError


@dataclass(frozen=True)
class Handover:
    """Exec NVIDIA's hook with these bytes on stdin; ``path`` None means exit 0."""

    path: Path | None
    state: bytes
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preloaded:
    """What the fast path already parsed, so nothing is read or parsed twice."""

    state_doc: dict[str, Any]
    spec_doc: dict[str, Any]


def prestart(raw: bytes, config: Config, preloaded: Preloaded | None = None) -> Handover:
    if preloaded is not None:
        state_mod.validate(preloaded.state_doc)
        state_doc = preloaded.state_doc
    else:
        state_doc = state_mod.decode(raw)
        state_mod.validate(state_doc)
    bundle = Path(state_mod.bundle_of(state_doc) or "")
    config_path = bundle / spec_mod.CONFIG_NAME
    if preloaded is not None:
        spec = spec_mod.from_document(config_path, preloaded.spec_doc)
    else:
        spec = spec_mod.load(bundle)
    evaluation = evaluate(spec, config)
    warnings = _audit(config, evaluation, state_doc)
    decision = evaluation.decision
    if decision.outcome is Outcome.SKIP:
        return Handover(None, raw, warnings)
    if decision.outcome is Outcome.DENY:
        raise DeniedError(decision.denial, notes=warnings)
    try:
        path = delegate.find(config.delegate)
    except DelegateError:
        if decision.granted:
            raise
        path = None  # nothing granted: NVIDIA's hook would have nothing to do
    if decision.outcome is Outcome.REWRITE:
        assert decision.doc is not None
        spec_mod.write_atomic(spec.path, decision.doc)
    return Handover(path, raw, warnings)


def _audit(config: Config, evaluation: Evaluation, state_doc: dict[str, Any]) -> tuple[str, ...]:
    """-> warnings. An audit failure is reported, never turned into a failed start."""
    if not config.audit_path or evaluation.decision.outcome is Outcome.SKIP:
        return ()
    annotations = {**evaluation.spec.annotations, **(state_doc.get("annotations") or {})}
    entry = audit.record(evaluation, str(state_doc.get("id")), "prestart", annotations)
    try:
        audit.append(config.audit_path, entry)
    except OSError as e:
        return (f"warning: audit log {config.audit_path}: {e.strerror or e}",)
    return ()
