"""`nvhook uninstall`: undo exactly what `nvhook install` recorded, and nothing else.

Install keeps, per engine, the bytes of each file before and after it and every key
it set (``install.record_state``). For each file:
- unchanged since install: its old bytes come back exactly (a file install created
  is removed), so install then uninstall is byte-identical except for backups;
- edited since: only the keys install set, and that still hold what it wrote, are put
  back (removed, or their old value restored); the user's later edits stay;
- a whole file nvhook owns (hook JSON, wrapper) that was edited since is left, with a note.
Renamed NVIDIA hooks.d files are renamed back. A second run finds no record: a no-op.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from nvhook import fileops
from nvhook.errors import ConfigError, WriteError
from nvhook.ops.install import (
    Action,
    Applied,
    Change,
    Engine,
    Format,
    KeyEdit,
    Plan,
    apply_changes,
    docker_ambiguity,
    read_state,
    state_path,
)


def plan(engine: Engine, prefix: Path | None = None) -> Plan:
    record = state_path(engine, prefix)
    state = read_state(record)
    if state is None:
        return Plan(engine, (), (f"no install record at {record}",), prefix=prefix)
    changes: list[Change] = []
    notes: list[str] = []
    for entry in reversed(state["files"]):
        change, note = _undo_file(entry)
        if change is not None:
            changes.append(change)
        if note:
            notes.append(note)
    for move in reversed(state["moves"]):
        src, dest = Path(move["src"]), Path(move["dest"])
        if dest.exists() and not src.exists():
            changes.append(Change(Action.MOVE, dest, None, None, dest=src,
                                  why="NVIDIA's hook file, as it was before install"))
    return Plan(engine, tuple(changes), tuple(notes), prefix=prefix)


def apply(p: Plan, stamp: str | None = None) -> tuple[Applied, ...]:
    """Apply the undo, then drop the install record (so a re-run is a no-op)."""
    done = apply_changes(p.changes, stamp)
    record = state_path(p.engine, p.prefix)
    try:
        record.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise WriteError(f"{record}: cannot remove the install record: {e.strerror}") from None
    return done


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _undo_file(entry: dict[str, Any]) -> tuple[Change | None, str | None]:
    path = Path(entry["path"])
    before, after = _bytes(entry.get("before")), _bytes(entry.get("after"))
    current = fileops.read_optional(path)
    if current is None or current == before:
        return None, None  # already gone, or already as it was
    why = "as it was before nvhook install"
    if current == after:
        if before is None:
            return Change(Action.DELETE, path, current, None, why="created by nvhook install"), None
        return Change(Action.WRITE, path, current, before, why=why), None
    fmt = Format(entry.get("fmt", Format.OPAQUE.value))
    edits = [KeyEdit.from_json(e) for e in entry.get("edits", [])]
    if fmt is Format.OPAQUE or not edits:
        return None, f"{path}: changed since nvhook install; left in place (remove it by hand)"
    undone = _undo_keys(path, current, fmt, edits)
    if undone == current:
        return None, None
    return Change(Action.WRITE, path, current, undone,
                  why="nvhook's keys removed, later edits kept"), None


_MISSING = object()


def _undo_keys(path: Path, current: bytes, fmt: Format, edits: list[KeyEdit]) -> bytes:
    if fmt is Format.JSON:
        try:
            doc: Any = json.loads(current.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: invalid JSON ({e}); left unchanged") from None
        why = docker_ambiguity(current.decode("utf-8"))  # JSON here is daemon.json
        if why is not None:
            raise ConfigError(f"{path}: {why}; dockerd (Go) could read the file otherwise "
                              "than nvhook: left unchanged")
    else:
        from nvhook.ops.install import parse_toml

        doc = parse_toml(path, current)
    for e in reversed(edits):
        parent = _table(doc, e.keys[:-1])
        if parent is None or e.keys[-1] not in parent:
            continue
        value = parent[e.keys[-1]]
        plain = value.unwrap() if hasattr(value, "unwrap") else value
        if e.table:
            if isinstance(plain, dict) and not plain:
                del parent[e.keys[-1]]
        elif e.needed_by_siblings and len(parent) > 1:
            continue
        elif plain == e.new:
            if e.existed:
                parent[e.keys[-1]] = e.old
            else:
                del parent[e.keys[-1]]
    if fmt is Format.JSON:
        return (json.dumps(doc, indent=4) + "\n").encode("utf-8")
    import tomlkit

    return tomlkit.dumps(doc).encode("utf-8")


def _table(doc: Any, keys: tuple[str, ...]) -> Any:
    table = doc
    for key in keys:
        if not isinstance(table, dict) or key not in table:
            return None
        table = table[key]
    return table if isinstance(table, dict) else None
