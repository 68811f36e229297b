"""Whether a lease's holder still exists: the node's boot, the holder's pid, its bundle.

A lease is stale when the node rebooted since it was written (the boot id
differs), when its pid is gone, a zombie (PID 1 on some nodes never reaps: a
killed container stays ``Z``), or a different process now (its start time
differs: the pid was reused), or when its bundle directory is gone. Anything
else is a live holder, and a live holder's lease is never freed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nvhook.leases.table import Lease

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PROC = Path("/proc")


def boot_id() -> str:
    """This boot's id; a node without one (no procfs) gets a fixed id, so leases then
    rely on pids and bundles alone."""
    try:
        return BOOT_ID.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@dataclass(frozen=True)
class Process:
    """What ``/proc/PID/stat`` says of a lease holder: its state and start time."""

    state: str  # /proc/PID/stat field 3: R, S, D, Z, X, ...
    start: int  # field 22: start time in clock ticks after boot

    @property
    def dead(self) -> bool:
        return self.state in ("Z", "X", "x")


def process(pid: int) -> Process | None:
    """/proc/PID/stat, or None when there is no such process."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # Field 2 is the command name in parentheses and may itself hold ") ": split at the last.
    _, sep, rest = raw.rpartition(b")")
    fields = rest.split()
    if not sep or len(fields) < 20:
        return None
    try:
        # rest starts at field 3 (state); field 22 is rest[19].
        return Process(fields[0].decode("ascii", "replace"), int(fields[19]))
    except ValueError:
        return None


def start_time(pid: int | None) -> int | None:
    """The start time to record for a new lease (None: no pid, or it is already dead)."""
    if pid is None or pid <= 0:
        return None
    proc = process(pid)
    return None if proc is None or proc.dead else proc.start


def stale_reason(lease: Lease) -> str | None:
    """Why this lease's holder is gone, or None while it may be alive."""
    if lease.pid is not None and lease.pid > 0:
        proc = process(lease.pid)
        if proc is None:
            return f"pid {lease.pid} is gone"
        if proc.dead:
            return f"pid {lease.pid} has exited (state {proc.state})"
        if lease.pid_start is not None and proc.start != lease.pid_start:
            return f"pid {lease.pid} is another process now (started at {proc.start}, " \
                   f"not {lease.pid_start})"
    if lease.bundle and not os.path.isdir(lease.bundle):
        return f"bundle {lease.bundle} is gone"
    return None
