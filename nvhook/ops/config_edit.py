"""Edit nvhook's own TOML config with tomlkit, keeping the user's comments and order.

``config set`` validates the whole edited document with ``config.parse`` before it
writes, so a bad value never reaches the file the hook reads for every container.
The commented default file that ``nvhook install`` writes is built here too: its
values come from the dataclass defaults, so the two cannot drift apart.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvhook import config as config_mod
from nvhook import fileops
from nvhook.errors import ConfigError, UsageError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Edit:
    path: Path
    key: str
    old: Any  # None when the key was unset
    new: Any
    changed: bool
    created: bool  # the file did not exist and was started from the default


def parse_value(text: str) -> Any:
    """A TOML value if ``text`` is one (``true``, ``5``, ``["GPU-…"]``), else the string."""
    import tomlkit

    try:
        tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return tomlkit.string(text)
    return tomlkit.parse(f"v = {text}")["v"]


def set_value(path: Path, key: str, value_text: str) -> Edit:
    import tomlkit
    from tomlkit.exceptions import ParseError

    parts = key.split(".")
    if not all(_BARE_KEY.fullmatch(p) for p in parts):
        raise UsageError(f"config set: {key!r} is not a dotted key like policy.mode")
    data = fileops.read_optional(path)
    created = data is None
    text = default_text() if data is None else _utf8(path, data)
    try:
        doc = tomlkit.parse(text)
    except ParseError as e:
        raise ConfigError(f"{path}:{e.line}:{e.col}: invalid TOML, not edited") from None
    table: Any = doc
    for i, part in enumerate(parts[:-1]):
        if part not in table:
            table[part] = tomlkit.table()
        table = table[part]
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {'.'.join(parts[: i + 1])}: not a table, cannot set {key}")
    last = parts[-1]
    old = table.get(last)
    old_plain = old.unwrap() if hasattr(old, "unwrap") else old
    value = parse_value(value_text)
    new_plain = value.unwrap() if hasattr(value, "unwrap") else value
    if old is not None and old_plain == new_plain and not created:
        return Edit(path, key, old_plain, new_plain, changed=False, created=False)
    if old is None:
        _add_key(table, last, value)
    else:
        table[last] = value
    out = tomlkit.dumps(doc).encode("utf-8")
    try:
        config_mod.parse(out, path)
    except ConfigError as e:
        raise ConfigError(
            f"config set {key} = {value_text}: rejected, file unchanged: {e}"
        ) from None
    fileops.write_atomic(path, out, 0o644)
    return Edit(path, key, old_plain, new_plain, changed=True, created=created)


def _add_key(table: Any, key: str, value: Any) -> None:
    """Add ``key`` right after the table's last key, not after the blank lines and
    comments that end it: those separate it from the next table (and a comment there
    usually belongs to the next table)."""
    container = getattr(table, "value", table)
    body = getattr(container, "body", None)
    insert_at = getattr(container, "_insert_at", None)  # tomlkit has no public insert
    if body and insert_at is not None:
        keys = [i for i, (k, _) in enumerate(body) if k is not None]
        if keys and keys[-1] < len(body) - 1:
            insert_at(keys[-1] + 1, key, value)
            return
    table[key] = value


def _utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 at byte {e.start}, not edited") from None


def default_text() -> str:
    """nvhook's config with every key at its default, each commented with what it does.

    Generated from ``config_schema.KEYS``, the same table the docs and man page come from.
    """
    import textwrap

    import tomlkit

    from nvhook import config_schema as schema

    doc = tomlkit.document()
    doc.add(tomlkit.comment("nvhook's config (nvhook.toml(5), docs/configuration.md). Every"))
    doc.add(tomlkit.comment("value here is the built-in default; edit with"))
    doc.add(tomlkit.comment("`nvhook config set KEY VALUE`."))
    for key in schema.KEYS:
        if key.table == "":
            doc.add(key.name, tomlkit.item(key.default))
    doc.add(tomlkit.nl())
    names = [t for t in schema.tables() if t and not t.endswith("[]")]
    for n, name in enumerate(names):
        table = tomlkit.table()
        table.add(tomlkit.comment(schema.TABLES.get(name, name)))
        for key in schema.KEYS:
            if key.table != name:
                continue
            text = key.meaning
            if key.allowed:
                text += ". One of: " + " | ".join(f'"{a}"' for a in key.allowed)
            for line in textwrap.wrap(text, 84):
                table.add(tomlkit.comment(line))
            if key.type == "array of tables":
                for line in _rules_example(schema):
                    table.add(tomlkit.comment(line))
            elif key.default is None:
                table.add(tomlkit.comment(f"unset: {key.unset}"))
                table.add(tomlkit.comment(f"{key.name} = {key.example}"))
            else:
                table.add(key.name, tomlkit.item(key.default))
        if n < len(names) - 1:
            table.add(tomlkit.nl())
        doc.add(name, table)
    return tomlkit.dumps(doc)


def _rules_example(schema: Any) -> list[str]:
    examples = {k.name: k.example for k in schema.KEYS if k.table == "policy.rules[]"}
    return [
        "[[policy.rules]]",
        *(f"{name} = {example}" for name, example in examples.items()),
        'mode = "rewrite"',
        'allow = ["GPU-5a6e2b1c-8d3f-4e7a-9b0c-1d2e3f4a5b6c"]',
    ]
