"""200 hooks at once, allows, rewrites and denies mixed, all appending to one audit log: every
decision has exactly one intact JSON line, and the container ids match 1:1."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import fakenvml
import pytest
from builders import INVENTORY_JSON
from conftest import NVHOOK, Node, runc_state, write_bundle

pytestmark = pytest.mark.slow

HOOKS = 200
# (env, expected decision, exit status)
KINDS = [
    ([f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"], "allow", 0),
    (["NVIDIA_VISIBLE_DEVICES=all"], "deny", 3),
    (["NVIDIA_VISIBLE_DEVICES=1:1", "NVIDIA_VISIBLE_DEVICES=0"], "rewrite", 0),
    ([f"NVIDIA_VISIBLE_DEVICES={fakenvml.MIG_A_UUID},GPU-{'0' * 8}-0000-4000-8000-{'0' * 12}"],
     "deny", 3),
]


def test_concurrent_hooks_each_log_one_intact_line(node: Node, tmp_path: Path) -> None:
    # A file inventory keeps each hook cheap (no NVML), so 200 really overlap on 2 cores.
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(INVENTORY_JSON))
    node.write_config(f'[inventory]\nsource = "file"\nfile = "{inventory}"\n')
    expected: dict[str, tuple[str, int]] = {}
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    env = node.env()
    for i in range(HOOKS):
        request, decision, status = KINDS[i % len(KINDS)]
        cid = f"load-{i:03d}-{decision}"
        bundle = write_bundle(tmp_path / "bundles" / cid, request)
        state_file = tmp_path / "bundles" / f"{cid}.state"
        state_file.write_bytes(runc_state(bundle, cid))
        expected[cid] = (decision, status)
        with open(state_file, "rb") as stdin:
            procs.append((cid, subprocess.Popen(
                [str(NVHOOK), "--config", str(node.config), "prestart"], stdin=stdin,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)))
    for cid, proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == expected[cid][1], (cid, err)
        assert "Traceback" not in err.decode()
    lines = node.audit.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline, no partial last line
    entries = [json.loads(line) for line in lines[:-1]]  # each line parses on its own
    assert len(entries) == HOOKS
    ids = Counter(e["container"] for e in entries)
    assert set(ids) == set(expected) and set(ids.values()) == {1}
    for e in entries:
        assert e["decision"] == expected[e["container"]][0], e
    assert Counter(e["decision"] for e in entries) == Counter(d for d, _ in expected.values())
