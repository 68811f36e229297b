"""SIGKILL during the config.json rewrite: the file is always exactly the old or exactly the new
document, keeps its mode, and a later run sweeps the temp files of killed writers.

Part one forks writers that call ``nvhook.oci.spec.write_atomic`` in a loop (alternating the old and
the new document) and kills each after a random delay from a seeded RNG: 500 kills, most of them
inside a write. Part two kills the real ``nvhook prestart`` at random moments.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import fakenvml
import pytest
from conftest import NVHOOK, Node, runc_state, write_bundle

from nvhook.oci.spec import write_atomic

pytestmark = pytest.mark.slow

WRITER_KILLS = 500
HOOK_KILLS = 12
MODE = 0o640
ENV = ["A=1", "NVIDIA_VISIBLE_DEVICES=1", "B=2", "NVIDIA_VISIBLE_DEVICES=0,1:1", "C=3"]
# Big enough that a write takes a while: more kills land inside one.
PADDING = [f"PAD_{i}={'p' * 200}" for i in range(2000)]


def temp_files(bundle: Path) -> list[str]:
    return sorted(n for n in os.listdir(bundle) if n.startswith(".config.json.nvhook-"))


def check_file(path: Path, *allowed: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(path.read_bytes())  # parses: never a torn or empty file
    assert any(doc == a for a in allowed), "config.json is neither the old nor the new document"
    assert stat.S_IMODE(path.stat().st_mode) == MODE
    return doc


def test_sigkill_during_write_atomic(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", [*PADDING, *ENV], mode=MODE)
    path = bundle / "config.json"
    old = json.loads(path.read_bytes())
    new = json.loads(path.read_bytes())
    new["process"]["env"] = [*PADDING, "A=1", f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU1_UUID}",
                             "B=2", "C=3"]
    rng = random.Random(20240611)
    seen = {"old": 0, "new": 0}
    left_behind = 0
    for _ in range(WRITER_KILLS):
        pid = os.fork()
        if pid == 0:  # the writer: never returns into pytest
            try:
                i = 0
                while True:
                    write_atomic(path, new if i % 2 == 0 else old)
                    i += 1
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0, 0.004))  # a random moment, not a race fix
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        doc = check_file(path, old, new)
        seen["old" if doc == old else "new"] += 1
        left_behind += bool(temp_files(bundle))
    # Both states were observed, and many kills landed inside a write (a temp file was left).
    assert seen["old"] and seen["new"], seen
    assert left_behind > 0
    # A later normal write sweeps what the killed writers left.
    write_atomic(path, new)
    assert temp_files(bundle) == []
    assert check_file(path, new) == new


def test_sigkill_of_the_real_hook(node: Node, tmp_path: Path) -> None:
    node.write_config('[policy]\nmode = "rewrite"\n')
    bundle = write_bundle(tmp_path / "b", [*PADDING, *ENV], mode=MODE)
    path = bundle / "config.json"
    original = path.read_bytes()
    old = json.loads(original)
    # The finished rewrite, from one uninterrupted run.
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == 0, proc.stderr
    new = check_file(path, json.loads(path.read_bytes()))
    assert new != old
    rng = random.Random(7)
    env = node.env()
    for _ in range(HOOK_KILLS):
        path.write_bytes(original)  # back to the old document; the mode is kept
        child = subprocess.Popen([str(NVHOOK), "--config", str(node.config), "prestart"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env)
        assert child.stdin is not None
        child.stdin.write(runc_state(bundle))
        child.stdin.close()
        time.sleep(rng.uniform(0.0, 0.35))  # a random moment in the hook's life
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        check_file(path, old, new)
    # A later normal run leaves the new document and no temp files behind.
    path.write_bytes(original)
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == 0, proc.stderr
    assert check_file(path, new) == new
    assert temp_files(bundle) == []
