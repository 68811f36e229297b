"""The prestart hook: state on stdin -> decision -> deny, or rewrite and hand over.

``prestart`` returns what to do; ``run`` does it (prints, execs, exits). ``entry``
calls ``run`` for every container that may ask for a GPU, so this module imports
only what that path needs: the typer app (``cli``) costs ~30 ms of imports and is
never loaded here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from nvhook import audit
from nvhook import config as config_mod
from nvhook.config import Config
from nvhook.decision.decide import Outcome
from nvhook.decision.evaluate import Evaluation, evaluate
from nvhook.errors import DelegateError, DeniedError, NvhookError
from nvhook.exits import guard
from nvhook.hookargs import config_option, stage_word
from nvhook.nvidia import delegate
from nvhook.oci import spec as spec_mod
from nvhook.oci import state as state_mod
from nvhook.oci.state import Preloaded
from nvhook.safetext import one_line

TYPE_CHECKING = False  # not typing's, as in entry.py
if TYPE_CHECKING:
    from nvhook.leases.step import LeaseStep


@dataclass(frozen=True)
class Handover:
    """Exec NVIDIA's hook with these bytes on stdin; ``path`` None means exit 0."""

    path: Path | None
    state: bytes
    warnings: tuple[str, ...] = ()


def prestart(raw: bytes, config: Config, preloaded: Preloaded | None = None,
             stage: str | None = "prestart") -> Handover:
    if preloaded is not None:
        state_mod.check(preloaded.state_doc)
        state_mod.validate(preloaded.state_doc)
        state_doc = preloaded.state_doc
    else:
        state_doc = state_mod.decode(raw)
        state_mod.validate(state_doc)
    bundle = Path(state_mod.bundle_of(state_doc) or "")
    if stage == "poststop" or stopped(state_doc):
        return Handover(None, raw, poststop(config, state_doc))
    config_path = bundle / spec_mod.CONFIG_NAME
    if preloaded is not None:
        spec = spec_mod.from_preloaded(config_path, preloaded.spec_doc)
    else:
        spec = spec_mod.load(bundle)
    evaluation = evaluate(spec, config)
    leased = None
    if evaluation.decision.policy.leases.active:
        # Imported only here: a node without a lease policy never pays for them.
        from nvhook.leases import liveness
        from nvhook.leases import step as lease_step
        from nvhook.leases.rules import Holder

        pid = state_doc.get("pid") if isinstance(state_doc.get("pid"), int) else None
        holder = Holder(str(state_doc.get("id")), str(bundle), pid, liveness.start_time(pid))
        evaluation, leased = lease_step.acquire(evaluation, config, holder)
    warnings = _audit(config, evaluation, state_doc, leased)
    decision = evaluation.decision
    if decision.outcome is Outcome.SKIP:
        return Handover(None, raw, warnings)
    if decision.outcome is Outcome.DENY:
        raise DeniedError(decision.denial, notes=warnings)
    try:
        path = delegate.find(config.delegate)
    except DelegateError:
        if decision.attached:
            raise
        path = None  # nothing granted: NVIDIA's hook would have nothing to do
    if decision.outcome is Outcome.REWRITE:
        assert decision.doc is not None
        spec_mod.write_atomic(spec.path, decision.doc)
    return Handover(path, raw, warnings)


def stopped(state_doc: dict[str, Any]) -> bool:
    """The poststop stage: a hooks.d file lists one hook for several stages with the same
    args, so the state's status, not argv, tells which stage this is."""
    return state_doc.get("status") == "stopped"


def poststop(config: Config, state_doc: dict[str, Any]) -> tuple[str, ...]:
    """Release the container's leases. -> warnings: a failed release is reported and
    left to the next acquire's reconciliation, never turned into a failure."""
    from nvhook.leases import step as lease_step

    container = str(state_doc.get("id"))
    try:
        released = lease_step.release(config, container)
    except NvhookError as e:
        return (f"warning: leases not released: {e.message}",)
    if not released or not config.audit_path:
        return ()
    try:
        audit.append(config.audit_path, audit.release_record(container, "poststop",
                                                             [x.device for x in released]))
    except Exception as e:  # of any type: the audit never fails the container
        return (f"warning: audit log {config.audit_path}: {audit.error_text(e)}",)
    return ()


def _audit(config: Config, evaluation: Evaluation, state_doc: dict[str, Any],
           leased: LeaseStep | None = None) -> tuple[str, ...]:
    """-> warnings. An audit (log or syslog) failure is reported, never a failed start."""
    annotations = {**evaluation.spec.annotations, **(state_doc.get("annotations") or {})}
    return audit.publish(config, evaluation, str(state_doc.get("id")), "prestart", annotations,
                         leased.as_json() if leased is not None else None)


def run(argv: list[str], raw: bytes, preloaded: Preloaded | None) -> NoReturn:
    """The prestart path, entered from ``entry`` with stdin already read."""

    def go() -> NoReturn:
        config = config_mod.load(config_option(argv))
        handover = prestart(raw, config, preloaded, stage_word(argv))
        for warning in handover.warnings:
            print(f"nvhook: {one_line(warning)}", file=sys.stderr)
        if handover.path is None:
            sys.exit(0)
        delegate.exec_delegate(handover.path, config.delegate, handover.state)

    guard(go)
    sys.exit(0)
