"""SIGKILL during the config.json rewrite: the file is always exactly the old or exactly the new
document, keeps its mode, and a later run sweeps the temp files of killed writers.

Kills are paced by the writer itself (``killpoints``): before every file syscall of the
rewrite it names the call and waits, and the test kills it at each such point in turn, so the
kills provably land before, during and after the replace on a machine of any speed. The
same test is run against deliberately broken writers, which it must catch.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakenvml
import killpoints
import pytest
from conftest import Node, runc_state, write_bundle

from nvhook import fileops
from nvhook.oci.spec import write_atomic

pytestmark = pytest.mark.slow

MODE = 0o640
CHUNK = 64 * 1024  # short writes: several kill points inside the document's bytes
ENV = ["A=1", "NVIDIA_VISIBLE_DEVICES=1", "B=2", "NVIDIA_VISIBLE_DEVICES=0,1:1", "C=3"]
PADDING = [f"PAD_{i}={'p' * 200}" for i in range(2000)]  # ~400 KiB: 7 chunks
NEW_ENV = [*PADDING, "A=1", f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU1_UUID}", "B=2", "C=3"]

Writer = Callable[[Path, bytes, int], None]


def temp_files(bundle: Path) -> list[str]:
    """Whatever a writer left beside config.json (the bundle holds nothing else)."""
    return sorted(n for n in os.listdir(bundle) if n != "config.json")


def outcome(path: Path, old: dict[str, Any], new: dict[str, Any]) -> str:
    """'old', 'new', or what is wrong with the file."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        return f"torn: {type(e).__name__}"
    if stat.S_IMODE(path.stat().st_mode) != MODE:
        return f"mode {oct(stat.S_IMODE(path.stat().st_mode))}"
    return "old" if doc == old else "new" if doc == new else "another document"


# -- deliberately broken writers, in fileops.write_atomic's shape --------------------------


def truncate_then_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    fos = fileops.os  # the stepper in the child: these calls are kill points too
    fd = fos.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[fos.write(fd, view):]
        fos.fsync(fd)
    finally:
        fos.close(fd)


def rename_then_rewrite(path: Path, data: bytes, mode: int = 0o644) -> None:
    REAL_WRITE_ATOMIC(path, data, mode)
    truncate_then_write(path, data, mode)  # "make sure it landed": in place, not atomic


REAL_WRITE_ATOMIC: Writer = fileops.write_atomic


def crash_every_point(tmp_path: Path, writer: Writer) -> list[tuple[str, str, bool]]:
    """Kill ``spec.write_atomic`` (with ``writer`` as its byte writer) at each point it
    signals -> (point, outcome, temp files left) per kill, in order."""
    bundle = write_bundle(tmp_path / "b", [*PADDING, *ENV], mode=MODE)
    path = bundle / "config.json"
    original = path.read_bytes()
    old = json.loads(original)
    new = {**old, "process": {**old["process"], "env": NEW_ENV}}

    def target() -> None:
        fileops.write_atomic = writer  # type: ignore[assignment]  # child only
        write_atomic(path, new)

    # One uninterrupted run names every point.
    full = killpoints.kill_at(killpoints.fork_writer(target, ["nvhook.fileops"], CHUNK), -1)
    assert full.killed_at is None and full.points[-1] == killpoints.DONE, full
    results = []
    for index in range(len(full.points)):
        path.write_bytes(original)  # back to the old document; the mode is kept
        run = killpoints.kill_at(killpoints.fork_writer(target, ["nvhook.fileops"], CHUNK),
                                 index)
        assert run.killed_at == full.points[index], (run, full.points)
        assert os.WIFSIGNALED(run.status), run
        results.append((run.killed_at, outcome(path, old, new), bool(temp_files(bundle))))
    # A later normal write sweeps what the killed writers left.
    write_atomic(path, new)
    assert temp_files(bundle) == []
    assert outcome(path, old, new) == "new"
    return results


def test_sigkill_at_every_point_of_write_atomic(tmp_path: Path) -> None:
    results = crash_every_point(tmp_path, fileops.write_atomic)
    assert {o for _, o, _ in results} <= {"old", "new"}, results
    labels = [p for p, _, _ in results]
    replace = labels.index("replace")
    # Kills landed before the replace (old, some with a temp file half written) ...
    assert all(o == "old" for _, o, _ in results[: replace + 1]), results
    assert sum(left for _, _, left in results[: replace + 1]) >= 3, results
    assert labels[: replace].count("write") >= 3  # several inside the document's bytes
    # ... and after it, up to the writer's return (the directory fsync included): new.
    assert all(o == "new" for _, o, _ in results[replace + 1:]), results
    assert labels[-1] == killpoints.DONE and labels.index("fsync") < replace < len(labels) - 2


@pytest.mark.parametrize("writer", [truncate_then_write, rename_then_rewrite],
                         ids=["mutant: truncate then write", "mutant: rename then rewrite"])
def test_the_crash_test_catches_a_broken_writer(tmp_path: Path, writer: Writer) -> None:
    results = crash_every_point(tmp_path, writer)
    broken = [(p, o) for p, o, _ in results if o not in ("old", "new")]
    assert broken, f"the crash test missed a non-atomic writer: {results}"


def test_sigkill_of_the_real_hook_at_every_point(node: Node, tmp_path: Path) -> None:
    """The real ``nvhook prestart`` in rewrite mode, killed at every point of its rewrite."""
    node.write_config('[policy]\nmode = "rewrite"\n')
    bundle = write_bundle(tmp_path / "b", [*PADDING, *ENV], mode=MODE)
    path = bundle / "config.json"
    original = path.read_bytes()
    old = json.loads(original)
    state = tmp_path / "state.json"
    state.write_bytes(runc_state(bundle))
    args = ["--config", str(node.config), "prestart"]

    def hook() -> killpoints.Paced:
        return killpoints.spawn_hook(args, node.env(), state, ["nvhook.fileops"], CHUNK)

    full = hook()
    assert full.finish() == 0
    new = json.loads(path.read_bytes())
    assert new != old and outcome(path, old, new) == "new"
    points = full.points
    assert points[0] == "start" and "replace" in points and points[-1] == killpoints.DONE
    seen = []
    for index in range(len(points)):
        path.write_bytes(original)
        run = killpoints.kill_at(hook(), index)
        assert run.killed_at == points[index]
        seen.append(outcome(path, old, new))
    replace = points.index("replace")
    assert seen == ["old"] * (replace + 1) + ["new"] * (len(points) - replace - 1), seen
    # A later normal run leaves the new document and no temp files behind.
    path.write_bytes(original)
    assert hook().finish() == 0
    assert outcome(path, old, new) == "new"
    assert temp_files(bundle) == []
