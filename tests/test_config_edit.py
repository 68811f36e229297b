"""`nvhook config set KEY VALUE`: typed values, comments kept, invalid edits refused."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nvhook import config as config_mod
from nvhook.cli import app

GPU = "GPU-5a6e2b1c-8d3f-4e7a-9b0c-1d2e3f4a5b6c"
ORIGINAL = (
    "# site policy\nversion = 1\n\n"
    "[policy]\n# be strict\nmode = \"enforce\"  # reviewed 2024\n\n"
    "[audit]\npath = \"/var/log/nvhook/audit.jsonl\"\n"
)


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config_mod.CONFIG_ENV, raising=False)


def config_set(path: Path, key: str, value: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--config", str(path), "config", "set", key, value])
    return result.exit_code, result.output


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(ORIGINAL)
    return path


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        pytest.param("policy.mode", "rewrite", "rewrite", id="bare word -> string"),
        pytest.param("policy.mode", '"audit"', "audit", id="quoted TOML string"),
        pytest.param("policy.allow", f'["{GPU}"]', [GPU], id="TOML array"),
        pytest.param("delegate.path", "/usr/bin/nvidia-container-runtime-hook",
                     "/usr/bin/nvidia-container-runtime-hook", id="new table and key"),
        pytest.param("delegate.path", '""', "", id="empty string (policy only)"),
        pytest.param("inventory.timeout", "2", 2, id="integer"),
        pytest.param("inventory.timeout", "2.5", 2.5, id="float"),
        pytest.param("audit.path", "", "", id="empty argument -> empty string"),
    ],
)
def test_set_value(conf: Path, key: str, value: str, expected: Any) -> None:
    code, out = config_set(conf, key, value)
    assert code == 0, out
    text = conf.read_text()
    table, name = key.split(".")
    assert tomllib.loads(text)[table][name] == expected
    for comment in ("# site policy", "# be strict"):
        assert comment in text
    config_mod.parse(text.encode(), conf)  # still a valid config


def test_inline_comment_survives_a_replaced_value(conf: Path) -> None:
    config_set(conf, "policy.mode", "rewrite")
    assert 'mode = "rewrite"  # reviewed 2024' in conf.read_text()


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        pytest.param("policy.mode", "lenient", "policy.mode", id="bad enum"),
        pytest.param("policy.allow", '["GPU-0", 3]', "policy.allow", id="bad array"),
        pytest.param("policy.frobnicate", "true", "policy.frobnicate", id="unknown key"),
        pytest.param("inventory.timeout", "0", "inventory.timeout", id="out of range"),
        pytest.param("delegate.path", "bin/hook", "delegate.path", id="relative path"),
        pytest.param("policy.mode.x", "1", "policy.mode", id="not a table"),
    ],
)
def test_invalid_edit_leaves_file_unchanged(conf: Path, key: str, value: str, needle: str) -> None:
    code, out = config_set(conf, key, value)
    assert code == 4, out
    assert conf.read_text() == ORIGINAL
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nvhook: ")
    assert needle in lines[0]


def test_same_value_is_a_noop(conf: Path) -> None:
    before = conf.stat().st_mtime_ns
    code, out = config_set(conf, "policy.mode", "enforce")
    assert code == 0 and "nothing to do" in out
    assert conf.stat().st_mtime_ns == before


def test_missing_file_starts_from_the_commented_defaults(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    code, out = config_set(path, "policy.mode", "audit")
    assert code == 0, out
    parsed = config_mod.parse(path.read_bytes(), path)
    assert parsed.policy.mode.value == "audit"
    assert "# seconds for NVML init" in path.read_text()


def test_broken_toml_is_not_edited(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("version = 1\n[policy\n")
    code, out = config_set(path, "policy.mode", "audit")
    assert code == 4
    assert out.startswith(f"nvhook: {path}:2:")
    assert path.read_text() == "version = 1\n[policy\n"


def test_bad_key_syntax_is_a_usage_error(conf: Path) -> None:
    code, _ = config_set(conf, "policy..mode", "audit")
    assert code == 2
    assert conf.read_text() == ORIGINAL


def test_keeps_file_mode(conf: Path) -> None:
    conf.chmod(0o600)
    config_set(conf, "policy.mode", "audit")
    assert conf.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("before", "key", "after"),
    [
        pytest.param('[policy]\nmode = "enforce"\n\n# the log\n[audit]\npath = "a"\n',
                     "policy.all",
                     '[policy]\nmode = "enforce"\nall = "never"\n\n# the log\n[audit]\n'
                     'path = "a"\n', id="new key before the blank line and next comment"),
        pytest.param('[policy]\nmode = "enforce"\n\n\n[audit]\npath = "a"\n', "policy.all",
                     '[policy]\nmode = "enforce"\nall = "never"\n\n\n[audit]\npath = "a"\n',
                     id="two blank lines kept"),
        pytest.param('[policy]\nall = "always"\n\n[audit]\npath = "a"\n', "policy.all",
                     '[policy]\nall = "never"\n\n[audit]\npath = "a"\n', id="replaced value"),
    ],
)
def test_blank_lines_between_tables_are_kept(tmp_path: Path, before: str, key: str,
                                             after: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(before)
    code, out = config_set(path, key, "never")
    assert code == 0, out
    assert path.read_text() == after
