"""The CLI an operator expects, through the real console script: one-line usage errors
(exit 2), --version, -h, help for the runtime shim, word metavars, shell completion,
bounded reads, exit 7 for a missing inventory, and what explain says on a denial."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import fakenvml
import pytest
import typer.main
from conftest import NVHOOK, Node, runc_state, write_bundle

from nvhook import __version__, config, hookargs
from nvhook.cli import app

GPU_ENV = [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"]


def one_line(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "╭" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nvhook: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["bogus"], "no such command 'bogus'", id="unknown command"),
        pytest.param(["explain", "--frob"], "explain: no such option: --frob",
                     id="unknown option"),
        pytest.param(["explain"], "explain: missing option '--bundle'", id="missing --bundle"),
        pytest.param(["explain", "--bundle"], "explain: option '--bundle' requires an argument",
                     id="missing option value"),
        pytest.param(["config", "set", "policy.mode"], "config set: missing argument 'VALUE'",
                     id="missing argument"),
        pytest.param(["prestart", "--bogus"], "prestart: no such option: --bogus",
                     id="prestart refuses unknown options"),
        pytest.param(["help", "nope"], "help: no such command 'nope'", id="help of nothing"),
    ],
)
def test_usage_errors_are_one_line_exit_2(node: Node, args: list[str], needle: str) -> None:
    line = one_line(node.run(args), 2)
    assert needle in line and "--help)" in line, line


def test_version(node: Node) -> None:
    proc = node.run(["--version"])
    assert proc.returncode == 0 and proc.stdout.decode() == f"nvhook {__version__}\n"


COMMANDS = [p for p in [[], *[[n] for n in typer.main.get_command(app).commands],
                        ["config", "set"]] if p != ["runtime"]]


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "nvhook")
def test_help_with_words_for_metavars(node: Node, path: list[str], flag: str) -> None:
    # stdin is a GPU request a hook would act on: --help must not be taken as a hook call.
    bundle = write_bundle(node.root / "b", GPU_ENV)
    proc = node.run([*path, flag], stdin=runc_state(bundle))
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert out.startswith(f"Usage: nvhook {' '.join(path)}".rstrip()), out
    assert not re.search(r"<\w+(\[\w+\])?>|\{\w+\}", out), out  # no <str>, <path>, {key}
    assert not node.audit.exists()


@pytest.mark.parametrize(
    ("path", "words"),
    [
        pytest.param(["explain"], ["--bundle DIR", "--inventory FILE"], id="explain"),
        pytest.param(["config", "set"], ["config set [OPTIONS] KEY VALUE"], id="config set"),
        pytest.param([], ["--config FILE"], id="root"),
        pytest.param(["install"], ["--engine ENGINE", "--prefix DIR", "--nvhook-path PATH"],
                     id="install"),
    ],
)
def test_metavars_read_as_words(node: Node, path: list[str], words: list[str]) -> None:
    out = node.run([*path, "--help"]).stdout.decode()
    for word in words:
        assert word in out, out


def test_help_runtime_explains_the_shim_without_runc(node: Node) -> None:
    # PATH without runc: had --help gone on to runc, this could not print anything.
    proc = node.run(["help", "runtime"], extra={"PATH": "/nonexistent"})
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert out.startswith("Usage: nvhook runtime RUNC-ARGS...")
    assert "judge the bundle" in out and "--log" in out


def test_shell_completion(node: Node) -> None:
    script = node.run(["--show-completion", "bash"])
    assert script.returncode == 0 and b"_NVHOOK_COMPLETE=complete_bash" in script.stdout
    proc = node.run([], extra={"_NVHOOK_COMPLETE": "complete_bash", "COMP_WORDS": "nvhook ex",
                               "COMP_CWORD": "1"})
    assert proc.stdout.decode().split() == ["explain"], proc


def test_completion_through_bash(node: Node, tmp_path: Path) -> None:
    """The script typer prints, sourced by a real bash, completes a command name."""
    script = tmp_path / "nvhook-completion.bash"
    script.write_bytes(node.run(["--show-completion", "bash"]).stdout)
    env = node.env()
    env["PATH"] = f"{NVHOOK.parent}:{env.get('PATH', '/usr/bin:/bin')}"
    proc = subprocess.run(
        ["bash", "--norc", "-c", f'source {script}; COMP_WORDS=(nvhook doc); COMP_CWORD=1; '
         '_nvhook_completion nvhook; printf "%s\\n" "${COMPREPLY[@]}"'],
        capture_output=True, env=env, check=False, timeout=60)
    assert proc.stdout.decode().split() == ["doctor"], proc


# -- §3: exit codes and bounded reads ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        pytest.param(["explain", "--inventory", "{root}/missing.json"], 7,
                     "inventory file does not exist", id="missing inventory -> 7"),
        pytest.param(["explain", "--inventory", "/dev/zero"], 7, "larger than 4194304 bytes",
                     id="inventory /dev/zero -> bounded, 7"),
        pytest.param(["devices", "--inventory", "/dev/zero"], 7, "larger than",
                     id="devices --inventory /dev/zero"),
        pytest.param(["--config", "/dev/zero", "explain"], 4, "larger than 1048576 bytes",
                     id="config /dev/zero -> bounded, 4"),
    ],
)
def test_bad_files_are_their_own_exit_code(node: Node, args: list[str], code: int,
                                           needle: str) -> None:
    bundle = write_bundle(node.root / "b", [])  # asks for nothing: still checked
    args = [a.format(root=node.root) for a in args]
    if "--config" not in args:
        args = ["--config", str(node.config), *args]
    line = one_line(node.run([*args, "--bundle", str(bundle)] if "explain" in args else args),
                    code)
    assert needle in line, line


def test_hook_refuses_a_huge_config(node: Node) -> None:
    node.config.write_bytes(b"# " + b"x" * (config.MAX_CONFIG_BYTES + 10) + b"\n")
    bundle = write_bundle(node.root / "b", GPU_ENV)
    line = one_line(node.run(["--config", str(node.config), "prestart"],
                             stdin=runc_state(bundle)), 4)
    assert "larger than" in line


def test_fast_path_limit_matches_the_reader() -> None:
    assert hookargs.MAX_CONFIG_BYTES == config.MAX_CONFIG_BYTES


def test_explain_denial_shows_the_container_gets_nothing(node: Node) -> None:
    node.write_config('[policy]\nall = "never"\n')
    bundle = write_bundle(node.root / "b", ["NVIDIA_VISIBLE_DEVICES=all"])
    base = ["--config", str(node.config), "explain", "--bundle", str(bundle)]
    text = node.run(base)
    assert text.returncode == 3
    out = text.stdout.decode()
    assert re.search(r"^container +gets nothing: the runtime aborts it, it never starts$", out,
                     re.M), out
    assert "env after" not in out
    doc = json.loads(node.run([*base, "--json"]).stdout)
    assert doc["decision"] == "deny" and doc["starts"] is False


def test_ignored_channel_says_so_in_reasons_and_audit(node: Node) -> None:
    node.write_config('[policy]\nunprivileged-env = "ignore"\n')
    bundle = write_bundle(node.root / "b", GPU_ENV)
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == 0, proc.stderr
    (entry,) = node.audit_lines()
    assert entry["decision"] == "rewrite"
    assert len(entry["reasons"]) == 1, entry
    assert "ignored" in entry["reasons"][0] and 'policy.unprivileged-env = "ignore"' in \
        entry["reasons"][0]
    assert f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}" in entry["reasons"][0]
    env = json.loads((bundle / "config.json").read_text())["process"]["env"]
    assert "NVIDIA_VISIBLE_DEVICES=void" in env


def test_plain_hook_call_is_still_the_fast_path(node: Node) -> None:
    """``prestart`` and ``--config PATH`` alone stay a hook call (reads stdin)."""
    bundle = write_bundle(node.root / "b", [])
    for args in (["prestart"], ["--config", str(node.config), "prestart"],
                 ["prestart", "--config", str(node.config)], [f"--config={node.config}",
                                                              "prestart"]):
        proc = node.run(args, stdin=runc_state(bundle))
        assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b"", (args, proc)
