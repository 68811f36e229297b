"""`nvhook leases [--json]`: the lease table as people and programs read it.

Reads without the lock (the table is replaced atomically, so a reader sees a
whole one) and changes nothing: stale leases are shown with the reason the next
acquire will reclaim them for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nvhook.config import Config
from nvhook.leases import liveness
from nvhook.leases import step as lease_step
from nvhook.leases.store import Store
from nvhook.leases.table import Table
from nvhook.safetext import one_line


@dataclass(frozen=True)
class View:
    directory: str
    table: Table
    stale: dict[tuple[str, str], str]
    boot_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "dir": self.directory,
            "boot_id": self.table.boot_id,
            "current_boot_id": self.boot_id,
            "format": self.table.format,
            "leases": [
                {**lease.as_json(), "stale": self.stale.get((lease.device, lease.container))}
                for lease in self.table.leases
            ],
        }

    def as_text(self) -> str:
        if not self.table.leases:
            return f"no leases ({self.directory})"
        rows = [("DEVICE", "CONTAINER", "MODE", "PID", "SINCE", "RULE", "STATE")]
        for lease in sorted(self.table.leases, key=lambda x: (x.device.lower(), x.time)):
            why = self.stale.get((lease.device, lease.container))
            rows.append((lease.device, one_line(lease.container), lease.mode,
                         str(lease.pid) if lease.pid is not None else "-", lease.time,
                         one_line(lease.rule) if lease.rule else "-",
                         f"stale: {why}" if why else "live"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)),
                                    r[-1]]) for r in rows)


def view(config: Config) -> View:
    table, stale = lease_step.listing(config)
    return View(str(Store(config.leases_dir).directory), table, stale, liveness.boot_id())
