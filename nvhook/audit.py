"""One JSON line per decision, appended under ``flock`` so concurrent hooks never interleave."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nvhook import __version__, journal
from nvhook.config import Config
from nvhook.decision.decide import Outcome
from nvhook.decision.evaluate import Evaluation
from nvhook.decision.request import to_json
from nvhook.kube import identity as identity_mod
from nvhook.safetext import one_line


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
        "imex_granted": list(d.imex),
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


class UnsafeLog(OSError):
    """The log or its directory could be written by someone other than root."""


def escaped(value: Any) -> Any:
    """Every string in ``value`` (keys too) through ``one_line``: a container-chosen string
    must never land as a second line, or hide one, in a file root trusts."""
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, Mapping):
        return {one_line(str(k)): escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escaped(v) for v in value]
    return value


def unsafe_reason(st: os.stat_result, what: str) -> str | None:
    """Why a log file or directory with this stat cannot be trusted, or None."""
    if st.st_uid not in (0, os.geteuid()):
        return f"{what} is owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return f"{what} is group- or world-writable (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def check_path(path: str) -> str | None:
    """Why ``path`` cannot be used as the audit log (``doctor`` reports it), or None."""
    target = Path(path)
    try:
        reason = unsafe_reason(os.stat(target.parent), f"directory {target.parent}")
        if reason:
            return reason
        st = os.lstat(target)
    except OSError:
        return None  # missing or unreadable: doctor's writability check words that
    if stat.S_ISLNK(st.st_mode):
        return f"{target} is a symlink"
    if not stat.S_ISREG(st.st_mode):
        return f"{target} is not a regular file"
    return unsafe_reason(st, str(target))


def append(path: str, entry: Mapping[str, Any]) -> None:
    """Append one line. Raises OSError (``UnsafeLog`` for a log others could write); the
    caller reports it without failing the container."""
    line = (json.dumps(escaped(entry), ensure_ascii=False, separators=(",", ":"))
            + "\n").encode("utf-8", "backslashreplace")
    target = Path(path)
    target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    reason = unsafe_reason(os.stat(target.parent), f"directory {target.parent}")
    if reason:
        raise UnsafeLog(f"refused: {reason}")
    # O_NOFOLLOW: a symlink planted at the log's name is refused (ELOOP), not followed.
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                 | os.O_NONBLOCK, 0o640)
    try:
        st = os.fstat(fd)
        reason = (unsafe_reason(st, str(target)) if stat.S_ISREG(st.st_mode)
                  else f"{target} is not a regular file")
        if reason:
            raise UnsafeLog(f"refused: {reason}")
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)  # also drops the lock


def publish(config: Config, evaluation: Evaluation, container_id: str, stage: str,
            annotations: Mapping[str, str],
            leases: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """Record one judged request in the audit log and in syslog (the no-GPU skip is not
    recorded). -> warnings: neither ever fails the container, whatever goes wrong."""
    if evaluation.decision.outcome is Outcome.SKIP or not (config.audit_path or config.syslog):
        return ()
    warnings = []
    entry: dict[str, Any] | None = None
    try:
        entry = record(evaluation, container_id, stage, annotations, leases)
        if config.audit_path:
            append(config.audit_path, entry)
    except Exception as e:  # of any type: the audit never fails the container
        warnings.append(f"warning: audit log {config.audit_path}: {error_text(e)}")
    if entry is None:
        return tuple(warnings)
    if config.syslog:
        problem = journal.send(config.syslog_socket, entry)
        if problem:
            warnings.append(f"warning: {problem}")
    return tuple(warnings)


def error_text(e: BaseException) -> str:
    """The warning text for a failed append, whatever the error's type."""
    if isinstance(e, OSError) and not isinstance(e, UnsafeLog):
        return e.strerror or str(e)
    return str(e) or type(e).__name__
