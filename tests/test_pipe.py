"""A reader that closes stdout early (`nvhook ... | head -1`) ends nvhook quietly: no
BrokenPipeError line or traceback, the documented status 141 (128 + SIGPIPE)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import NVHOOK, Node, runc_state, write_bundle

from nvhook.errors import ExitStatus


def big_log(path: Path) -> Path:
    line = json.dumps({"time": "2024-05-01T10:00:00.000+00:00", "container": "c",
                       "decision": "deny", "reasons": ["x" * 200]}) + "\n"
    path.write_text(line * 5000)  # ~1.2 MB: far more than a pipe holds
    return path


@pytest.mark.parametrize("args", [
    pytest.param(["--help"], id="--help"),
    pytest.param(["help", "doctor"], id="help doctor"),
    pytest.param(["log", "--file", "{log}"], id="log, a big one"),
    pytest.param(["log", "--file", "{log}", "--json"], id="log --json"),
    pytest.param(["devices"], id="devices"),
])
def test_a_closed_pipe_is_a_quiet_exit(node: Node, tmp_path: Path, args: list[str]) -> None:
    log = big_log(tmp_path / "audit.jsonl")
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before nvhook writes a byte: every write is EPIPE
    try:
        proc = subprocess.run([str(NVHOOK), "--config", str(node.config),
                               *[a.format(log=log) for a in args]],
                              stdout=write_end, stderr=subprocess.PIPE, env=node.env(),
                              timeout=60, check=False)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr.decode()) == (ExitStatus.PIPE, "")


def test_head_reads_one_line_and_nothing_is_said(node: Node, tmp_path: Path) -> None:
    """The real pipeline: head may exit before or after nvhook's last write, so the status
    is 0 or 141; stderr is empty either way."""
    log = big_log(tmp_path / "audit.jsonl")
    proc = subprocess.run(["bash", "-c", 'set -o pipefail; "$0" --config "$1" log --file "$2" '
                           "| head -1", str(NVHOOK), str(node.config), str(log)],
                          capture_output=True, env=node.env(), timeout=60, check=False)
    assert proc.returncode in (0, ExitStatus.PIPE)
    assert proc.stdout.decode().split() == ["TIME", "DECISION", "CONTAINER", "POD", "REASON"]
    assert proc.stderr == b""


@pytest.mark.parametrize("env, status", [
    pytest.param(["NVIDIA_VISIBLE_DEVICES=GPU-00000000-0000-0000-0000-00000000dead"],
                 ExitStatus.DENIED, id="a denial still exits DENIED"),
    pytest.param(["PATH=/bin"], ExitStatus.OK, id="no GPU asked: still 0"),
])
def test_a_closed_stderr_keeps_the_status(node: Node, tmp_path: Path, env: list[str],
                                          status: ExitStatus) -> None:
    """The runtime that reads the hook's stderr went away: the denial line cannot be
    written, but the exit status must still say "denied", not "internal error"."""
    bundle = write_bundle(tmp_path / "bundle", env)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([str(NVHOOK), "--config", str(node.config), "prestart"],
                              input=runc_state(bundle), stdout=subprocess.PIPE,
                              stderr=write_end, env=node.env(), timeout=60, check=False)
    finally:
        os.close(write_end)
    assert proc.returncode == status
