"""The inventory from the configured source: NVML (pynvml, imported only here) or a file."""

from __future__ import annotations

from pathlib import Path

from nvhook.errors import InventoryError
from nvhook.gpus.inventory import Inventory, load_file


def load(source: str, file: Path | None, timeout: float) -> Inventory:
    """Raises ``InventoryError``."""
    if source == "file":
        if file is None:
            raise InventoryError("inventory.source is \"file\" but no inventory.file is set")
        return load_file(file)
    from nvhook.gpus import nvml

    return nvml.read(timeout)
