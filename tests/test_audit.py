"""The audit log is a file root trusts: a log others could write, or a symlink planted at its
name, is refused with a warning that never fails the container, and no container-chosen string
can land as a line of its own."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import fakenvml
import pytest
from conftest import Node, runc_state, write_bundle

from nvhook import audit

GPU_ENV = [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"]


def symlink_to_victim(log: Path) -> Path:
    victim = log.parent / "victim"
    victim.write_text("root's file\n")
    log.symlink_to(victim)
    return victim


def group_writable_log(log: Path) -> Path:
    log.write_text("")
    log.chmod(0o664)
    return log


def world_writable_dir(log: Path) -> Path:
    log.parent.chmod(0o777)
    return log


def fifo_log(log: Path) -> Path:
    os.mkfifo(log)
    return log


def chowned_log(log: Path) -> Path:
    log.write_text("")
    os.chown(log, 65534, 65534)
    return log


UNSAFE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "symlink at the log's name": (symlink_to_victim, "audit log"),
    "group-writable log": (group_writable_log, "group- or world-writable"),
    "world-writable directory": (world_writable_dir, "group- or world-writable"),
    # O_NONBLOCK: with no reader the open fails at once (ENXIO) instead of hanging the hook.
    "fifo at the log's name": (fifo_log, "No such device"),
    "log owned by nobody": (chowned_log, "not root"),
}


@pytest.mark.parametrize("case", UNSAFE, ids=list(UNSAFE))
def test_unsafe_log_is_refused_with_a_warning(node: Node, tmp_path: Path, case: str) -> None:
    if case == "log owned by nobody" and os.geteuid() != 0:
        pytest.skip("needs root to chown")
    make, needle = UNSAFE[case]
    logdir = tmp_path / "logdir"
    logdir.mkdir(mode=0o750)
    log = logdir / "audit.jsonl"
    node.write_config(f'[audit]\npath = "{log}"\n')
    made = make(log)
    before = made.read_bytes() if made.is_file() and not made.is_symlink() else None
    bundle = write_bundle(tmp_path / "b", GPU_ENV)
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    err = proc.stderr.decode()
    assert proc.returncode == 0, err  # allowed: the warning never fails the container
    [line] = err.splitlines()
    assert line.startswith(f"nvhook: warning: audit log {log}: ") and needle in line, line
    if before is not None:
        assert made.read_bytes() == before  # nothing was written through or into it
    assert audit.check_path(str(log)) is not None  # doctor sees it too


def test_safe_log_has_no_complaint(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    assert audit.check_path(str(log)) is None
    audit.append(str(log), {"container": "c"})
    assert audit.check_path(str(log)) is None
    assert oct(log.stat().st_mode & 0o777) == "0o640"


HOSTILE_IDS = {
    "newline and a fake line": 'c1\n{"container":"c2","decision":"allow"}',
    "carriage return": "c1\rallowed",
    "line separator U+2028": "c1\u2028{}",
    "paragraph separator U+2029": "c1\u2029{}",
    "C1 NEL": "c1\x85next",
    "ESC sequence": "c1\x1b[2K\x1b[1Aallow",
    "lone surrogate": "c1\udcff",
}


@pytest.mark.parametrize("cid", HOSTILE_IDS.values(), ids=list(HOSTILE_IDS))
def test_container_text_stays_on_one_line(tmp_path: Path, cid: str) -> None:
    log = tmp_path / "audit.jsonl"
    audit.append(str(log), {"container": cid, "reasons": [cid], cid: cid})
    data = log.read_bytes()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    text = data.decode("utf-8")  # valid UTF-8, no lone surrogates
    assert not any(ch in text[:-1] for ch in "\r\n\x85\u2028\u2029\x1b")
    entry = json.loads(text)
    assert entry["container"].startswith("c1\\")


class Unserialisable:
    pass


def test_an_error_of_any_type_never_fails_the_container(node: Node, tmp_path: Path) -> None:
    # A config whose audit path is a directory makes open() fail; a bad value type in the
    # entry makes json fail: neither reaches the container's exit status.
    node.write_config(f'[audit]\npath = "{tmp_path}"\n')
    bundle = write_bundle(tmp_path / "b", GPU_ENV)
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == 0 and proc.stderr.decode().startswith("nvhook: warning: audit")
    with pytest.raises(TypeError):
        audit.append(str(tmp_path / "x.jsonl"), {"bad": Unserialisable()})
    assert audit.error_text(TypeError("not serialisable")) == "not serialisable"
    assert audit.error_text(ValueError()) == "ValueError"


def test_doctor_fails_on_an_unsafe_log(node: Node, tmp_path: Path) -> None:
    logdir = tmp_path / "logdir"
    logdir.mkdir(mode=0o777)
    logdir.chmod(0o777)
    node.write_config(f'[audit]\npath = "{logdir / "audit.jsonl"}"\n')
    proc = node.run(["--config", str(node.config), "doctor"])
    out = proc.stdout.decode()
    [row] = [line for line in out.splitlines() if "audit" in line and "refused" in line]
    assert "group- or world-writable" in row and proc.returncode != 0, out
