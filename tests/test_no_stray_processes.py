"""The hook leaves no process behind holding runc's stdout/stderr pipes (runc waits for them to
close). Run as runc runs it: stdout and stderr pipes, its own session; then both pipes reach EOF
and nothing is left in its process group or session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import fakenvml
import pytest
from conftest import NVHOOK, Node, runc_state, write_bundle
from test_hook import write_delegate

GPU0 = f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"


def left_in(pgid: int) -> list[str]:
    """Processes whose process group or session is ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[2]) == pgid or int(fields[3]) == pgid:  # pgrp, session
            found.append(stat[:80])
    return found


@pytest.mark.parametrize(
    ("case", "env", "fail", "status"),
    [
        ("deny", ["NVIDIA_VISIBLE_DEVICES=all"], None, 3),
        ("allow-with-delegate", [GPU0], None, 0),
        ("rewrite-with-delegate", ["NVIDIA_VISIBLE_DEVICES=0"], None, 0),
        ("skip", ["PATH=/bin"], None, 0),
        ("nvml-init-hung", [GPU0], "hang", 3),
        ("nvml-enumeration-hung", [GPU0], "enum_hang", 3),
        ("bad-state", None, None, 5),
    ],
)
def test_pipes_close_and_nothing_stays(node: Node, tmp_path: Path, case: str,
                                       env: list[str] | None, fail: str | None,
                                       status: int) -> None:
    record = tmp_path / "record.json"
    delegate = write_delegate(tmp_path / "nvidia-hook", record)
    node.write_config(f'[inventory]\ntimeout = 0.5\n[delegate]\npath = "{delegate}"\n')
    stdin = b"{" if env is None else runc_state(write_bundle(tmp_path / "b", env))
    proc = subprocess.Popen(
        [str(NVHOOK), "--config", str(node.config), "prestart"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=node.env(fail=fail),
        start_new_session=True)
    try:
        # EOF on both pipes: communicate returns only once every holder has closed them.
        _, err = proc.communicate(stdin, timeout=30)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == status, err
    assert "Traceback" not in err.decode()
    assert left_in(proc.pid) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    if case.endswith("with-delegate"):
        assert record.exists()  # the delegate really ran (same pid: exec, not fork)
