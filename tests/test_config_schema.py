"""``config_schema.KEYS`` is the one table of config keys: it must match what the reader
accepts, key for key, and its defaults must be the built-in ones.

If this fails after you added a key to ``config.py``: add a ``Key(...)`` for it in
``nvhook/config_schema.py`` and run ``bash scripts/gen-docs``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nvhook import config as config_mod
from nvhook import config_schema as schema
from nvhook.errors import EXIT_MEANINGS, ConfigError, ExitStatus
from nvhook.ops import config_edit

RULES = "policy.rules[]"


def accepted_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Table -> the key names the reader's ``only`` check lets through, recorded while
    it reads a document made of each top-level table in turn (empty)."""
    seen: dict[str, set[str]] = {}
    real = config_mod._Reader.only

    def record(self: Any, doc: dict[str, Any], where: str, allowed: set[str]) -> None:
        if where.startswith("policy.rules["):
            where = RULES
        seen.setdefault(where, set()).update(allowed)
        real(self, doc, where, allowed)

    monkeypatch.setattr(config_mod._Reader, "only", record)
    config_mod.parse(b"", Path("probe.toml"))
    config_mod.parse(b'[[policy.rules]]\nmatch.annotations = { a = "b" }\n', Path("probe.toml"))
    for name in sorted(seen[""]):
        for text in (f"[{name}]\n", f"[[{name}]]\n"):
            try:
                config_mod.parse(text.encode(), Path("probe.toml"))
            except ConfigError:
                continue  # e.g. a table that requires a key: its only() ran already
    return seen


def schema_keys() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for key in schema.KEYS:
        out.setdefault(key.table, set()).add(key.name)
    # Top-level tables are keys of the top level; a nested [a.b] is a key of [a].
    for table in schema.tables():
        if table and table != RULES:
            parent, _, name = table.rpartition(".")
            out.setdefault(parent, set()).add(name)
    return out


def test_every_key_the_reader_accepts_is_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = accepted_keys(monkeypatch)
    want = schema_keys()
    # [policy]'s own check runs after "rules" is taken out; per-rule tables take the
    # [policy] keys (minus rules) as overrides, plus their own name and match.
    seen.setdefault("policy", set()).add("rules")
    rule_own = {k.name for k in schema.KEYS if k.table == RULES}
    for table in sorted(set(seen) | set(want)):
        expected = want.get(table, set())
        if table == RULES:
            # name and match are taken out before the overrides are checked.
            expected = want["policy"] - {"rules"}
            got = seen.get(table, set())
            assert got == expected, f"[[policy.rules]] overrides: {sorted(got ^ expected)}"
            # leases is taken out too: its own table (mode, max-per-gpu), not a [policy] key.
            assert rule_own == {"name", "match.annotations", "match.namespace", "match.pod",
                                "match.container", "leases"}
            continue
        got = seen.get(table, set())
        missing = sorted(got - expected)
        stale = sorted(expected - got)
        assert not missing, (f"[{table}]: the reader accepts {missing} but config_schema.KEYS "
                             "lacks them: add a Key and run bash scripts/gen-docs")
        assert not stale, f"[{table}]: config_schema.KEYS lists {stale}, the reader refuses them"


def test_commented_defaults_parse_to_the_built_in_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert config_mod.parse(config_edit.default_text().encode(), path) == config_mod.Config(
        path=path)


def toml(value: Any) -> str:
    return json.dumps(value)  # the JSON spelling of str/list/int/float is valid TOML


@pytest.mark.parametrize("key", [k for k in schema.KEYS if k.table != RULES and
                                 k.type != "array of tables"], ids=lambda k: k.dotted)
def test_each_key_is_read_with_its_default_or_example(key: schema.Key, tmp_path: Path) -> None:
    value = key.example if key.default is None else toml(key.default)
    line = f"{key.name} = {value}\n"
    text = line if not key.table else f"[{key.table}]\n{line}"
    config_mod.parse(text.encode(), tmp_path / "c.toml")


@pytest.mark.parametrize("key", [k for k in schema.KEYS if k.allowed and k.type == "string"],
                         ids=lambda k: k.dotted)
def test_allowed_values_are_exactly_what_the_reader_takes(key: schema.Key,
                                                          tmp_path: Path) -> None:
    def parse(value: str) -> None:
        config_mod.parse(f"[{key.table}]\n{key.name} = {toml(value)}\n".encode(),
                         tmp_path / "c.toml")

    for value in key.allowed:
        if key.dotted == "inventory.source" and value == "file":
            continue  # needs inventory.file; covered by test_config
        parse(value)
    with pytest.raises(ConfigError, match=key.dotted):
        parse("not-a-" + key.name)


def test_per_rule_keys_are_read(tmp_path: Path) -> None:
    rule = {k.name: k.example for k in schema.KEYS if k.table == RULES}
    text = "[[policy.rules]]\n" + "".join(f"{n} = {v}\n" for n, v in rule.items())
    config = config_mod.parse(text.encode(), tmp_path / "c.toml")
    assert [r.name for r in config.rules] == ["batch"]


def test_every_exit_status_has_a_meaning() -> None:
    assert set(EXIT_MEANINGS) == set(ExitStatus)
