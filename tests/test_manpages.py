"""The man pages and generated reference pages are what ``scripts/gen-docs`` writes now,
and they name every command, option, config key and exit status, and nothing stale.

If a committed page is out of date: run ``bash scripts/gen-docs`` and commit the result.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import typer.main

from nvhook import config_schema as schema
from nvhook.cli import app
from nvhook.errors import ExitStatus
from nvhook.ops import manpages

ROOT = Path(__file__).resolve().parent.parent
CLICK = typer.main.get_command(app)
PAGES = manpages.pages(CLICK)


@pytest.mark.parametrize("rel", sorted(PAGES), ids=str)
def test_committed_page_is_fresh(rel: str) -> None:
    committed = (ROOT / rel).read_text(encoding="utf-8")
    assert committed == PAGES[rel], f"{rel} is stale: run bash scripts/gen-docs"


def commands(group: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    out = []
    for name, cmd in getattr(group, "commands", {}).items():
        out.append(((*path, name), cmd))
        out += commands(cmd, (*path, name))
    return out


def roff_text(page: str) -> str:
    return page.replace("\\-", "-").replace("\\fB", "").replace("\\fI", "").replace("\\fR", "")


MAN8 = roff_text(PAGES["man/nvhook.8"])
MAN5 = roff_text(PAGES["man/nvhook.toml.5"])


@pytest.mark.parametrize(("path", "cmd"), commands(CLICK), ids=lambda v: " ".join(v)
                         if isinstance(v, tuple) else "")
def test_every_command_and_option_is_in_nvhook_8(path: tuple[str, ...], cmd: object) -> None:
    section = MAN8.split(f'.SS "nvhook {" ".join(path)}"\n', 1)
    assert len(section) == 2, f"nvhook {' '.join(path)} has no section in nvhook(8)"
    body = section[1].split(".SS ", 1)[0].split(".SH ", 1)[0]
    for param in cmd.params:  # type: ignore[attr-defined]
        for flag in [*param.opts, *getattr(param, "secondary_opts", [])]:
            if flag.startswith("-"):
                assert re.search(rf"(^|[ ,]){re.escape(flag)}\b", body, re.M), flag


def test_nvhook_8_names_nothing_stale() -> None:
    live = {" ".join(p) for p, _ in commands(CLICK)}
    documented = set(re.findall(r'^\.SS "nvhook (.+)"$', MAN8, re.M))
    assert documented == live
    # The options the page documents: each .TP entry's tag line (prose may name runc's).
    tags = re.findall(r"^\.TP\n(.*)$", MAN8.split(".SH EXIT STATUS")[0], re.M)
    flags = {f for tag in tags for f in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", tag)}
    known = {f for _, cmd in [((), CLICK), *commands(CLICK)] for p in cmd.params  # type: ignore[attr-defined]
             for f in [*p.opts, *getattr(p, "secondary_opts", [])]} | set(
        CLICK.context_settings["help_option_names"])
    assert flags <= known, sorted(flags - known)


def test_exit_statuses_are_in_nvhook_8() -> None:
    for status in ExitStatus:
        assert f".TP\n{int(status)}\n{status.name}: " in MAN8


def test_every_config_key_and_nothing_stale_is_in_nvhook_toml_5() -> None:
    for key in schema.KEYS:
        assert f"\n{key.name} ({key.type})\n" in MAN5, key.dotted
    documented = re.findall(r"^\.TP\n(\S+) \(", MAN5, re.M)
    assert sorted(documented) == sorted(k.name for k in schema.KEYS)


@pytest.mark.skipif(shutil.which("man") is None, reason="man(1) not installed")
@pytest.mark.parametrize("rel", ["man/nvhook.8", "man/nvhook.toml.5"])
def test_man_renders_the_page_without_warnings(rel: str) -> None:
    out = subprocess.run(["man", "--warnings", "-l", str(ROOT / rel)], capture_output=True,
                         text=True, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin",
                                         "MAN_KEEP_FORMATTING": "0"}, check=True)
    assert out.stderr == ""
    assert "nvhook" in out.stdout


def test_pages_are_installed_with_the_package() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"share/man/man8" = ["man/nvhook.8"]' in text
    assert '"share/man/man5" = ["man/nvhook.toml.5"]' in text
