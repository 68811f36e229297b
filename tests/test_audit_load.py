"""Many hooks appending to one audit log: every decision has exactly one intact JSON line.

Each line is longer than a page (a long container id), so ``O_APPEND`` alone would not keep
two writers' lines apart once a write is split; only the ``flock`` does. The paced test proves
that on a machine of any speed: hook A stops (at a point it signals) halfway through its line,
then hook B runs. With the real lock B reports that it is blocked; with the lock removed (the
mutant) B's line lands inside A's, and the same checker must catch it.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import fakenvml
import killpoints
import pytest
from builders import INVENTORY_JSON
from conftest import NVHOOK, Node, runc_state, write_bundle

pytestmark = pytest.mark.slow

HOOKS = 200
PAGE = 4096
LONG = "x" * (2 * PAGE)  # every audit line is longer than a page
# (env, expected decision, exit status)
KINDS = [
    ([f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"], "allow", 0),
    (["NVIDIA_VISIBLE_DEVICES=all"], "deny", 3),
    (["NVIDIA_VISIBLE_DEVICES=1:1", "NVIDIA_VISIBLE_DEVICES=0"], "rewrite", 0),
    ([f"NVIDIA_VISIBLE_DEVICES={fakenvml.MIG_A_UUID},GPU-{'0' * 8}-0000-4000-8000-{'0' * 12}"],
     "deny", 3),
]


def file_inventory(node: Node, tmp_path: Path) -> None:
    # A file inventory keeps each hook cheap (no NVML), so many really overlap on 2 cores.
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(INVENTORY_JSON))
    node.write_config(f'[inventory]\nsource = "file"\nfile = "{inventory}"\n')


def log_problems(log: Path, expected: dict[str, str]) -> list[str]:
    """Why the log is not one intact line per expected container id with its decision."""
    data = log.read_bytes()
    if not data.endswith(b"\n"):
        return ["the log does not end with a newline"]
    problems = []
    entries = []
    for n, line in enumerate(data.split(b"\n")[:-1], 1):
        try:
            entries.append(json.loads(line))
        except ValueError:
            problems.append(f"line {n} is not one JSON document ({len(line)} bytes)")
    ids = Counter(e.get("container") for e in entries)
    if ids != Counter(expected.keys()):
        problems.append(f"{len(entries)} entries for {len(expected)} containers")
    problems += [f"{e['container'][:20]}: {e['decision']}" for e in entries
                 if e.get("decision") != expected.get(e.get("container"))]
    return problems


def test_concurrent_hooks_each_log_one_intact_line(node: Node, tmp_path: Path) -> None:
    file_inventory(node, tmp_path)
    expected: dict[str, tuple[str, int]] = {}
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    env = node.env()
    for i in range(HOOKS):
        request, decision, status = KINDS[i % len(KINDS)]
        cid = f"load-{i:03d}-{decision}-{LONG}"
        bundle = write_bundle(tmp_path / "bundles" / f"b{i}", request)
        state_file = tmp_path / "bundles" / f"{i}.state"
        state_file.write_bytes(runc_state(bundle, cid))
        expected[cid] = (decision, status)
        with open(state_file, "rb") as stdin:
            procs.append((cid, subprocess.Popen(
                [str(NVHOOK), "--config", str(node.config), "prestart"], stdin=stdin,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)))
    for cid, proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == expected[cid][1], (cid[:20], err)
        assert "Traceback" not in err.decode()
    assert log_problems(node.audit, {c: d for c, (d, _) in expected.items()}) == []
    assert len(node.audit.read_bytes().split(b"\n")[0]) > 2 * PAGE


def paced_pair(node: Node, tmp_path: Path, *, noflock: bool) -> tuple[str | None, list[str]]:
    """Hook A stops after the first page of its line; B runs until it is blocked or done.
    -> the point B stopped at (None: it finished), and the log's problems."""
    file_inventory(node, tmp_path)
    expected = {}
    hooks = []
    for name, (request, decision, _) in zip("AB", KINDS[:2], strict=True):
        cid = f"paced-{name}-{LONG}"
        bundle = write_bundle(tmp_path / name, request)
        state = tmp_path / f"{name}.state"
        state.write_bytes(runc_state(bundle, cid))
        expected[cid] = decision
        hooks.append(killpoints.spawn_hook(["--config", str(node.config), "prestart"],
                                           node.env(), state, ["nvhook.audit"], PAGE,
                                           noflock=noflock))
    a, b = hooks
    writes = 0

    def second_write(_i: int, label: str) -> bool:
        nonlocal writes
        writes += label == "write"
        return writes == 2

    assert a.run_until(second_write) == "write"  # A holds the lock, one page written
    stopped = b.run_until(lambda _i, label: label == "lock-busy")
    if stopped:
        b.go()  # B now blocks in flock until A is done
    a.finish()
    b.finish()
    return stopped, log_problems(node.audit, expected)


def test_lock_keeps_long_lines_apart(node: Node, tmp_path: Path) -> None:
    stopped, problems = paced_pair(node, tmp_path, noflock=False)
    assert stopped == "lock-busy"  # B really tried to write while A was halfway through
    assert problems == []


def test_the_load_check_catches_an_append_without_a_lock(node: Node, tmp_path: Path) -> None:
    stopped, problems = paced_pair(node, tmp_path, noflock=True)
    assert stopped is None  # nothing held B back: it wrote inside A's line
    assert problems, "the audit check missed interleaved lines"
