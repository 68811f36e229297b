"""``nvhook devices``: the live inventory as a table, MIG devices under their GPU."""

from __future__ import annotations

from collections.abc import Sequence

from nvhook.gpus.inventory import Inventory

HEADER = ("INDEX", "UUID", "PCI BUS ID", "NAME", "MIG")


def as_text(inventory: Inventory) -> str:
    rows: list[Sequence[str]] = [HEADER]
    for gpu in inventory.gpus:
        mig = "enabled" if gpu.mig_enabled else "disabled"
        rows.append((str(gpu.index), gpu.uuid, gpu.pci_bus_id, gpu.name or "-", mig))
        for m in inventory.migs_of(gpu):
            # "g:m" is the id NVIDIA_VISIBLE_DEVICES accepts; GI/CI name the instance.
            rows.append((f"  {m.index_id}", m.uuid, "", "", f"GI {m.gi} CI {m.ci}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    source = inventory.source + (f", driver {inventory.driver_version}"
                                 if inventory.driver_version else "")
    if not inventory.gpus:
        lines.append("(no GPUs)")
    lines.append(f"{len(inventory.gpus)} GPUs, {len(inventory.migs)} MIG devices ({source})")
    return "\n".join(lines)
