"""Files root touches in directories others may write: the atomic rewrite's temp file.

The temp file is created with O_CREAT|O_EXCL|O_NOFOLLOW under an unpredictable name in the
target's directory, and its owner and mode are set on that descriptor only. A link planted
where the temp file will be must never make root write through it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from nvhook import fileops
from nvhook.errors import WriteError
from nvhook.oci import spec

TEMP_NAME = re.compile(r"\.config\.json\.nvhook-(\d+)-[0-9a-f]{16}\.tmp")


@pytest.fixture
def target(tmp_path: Path) -> tuple[Path, Path]:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    path = bundle / "config.json"
    path.write_text('{"process":{"env":["A=1"]}}')
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    return path, victim


def test_link_at_the_old_predictable_name_is_not_written_through(
        target: tuple[Path, Path]) -> None:
    path, victim = target
    (path.parent / f".config.json.nvhook-{os.getpid()}.tmp").symlink_to(victim)
    fileops.write_atomic(path, b'{"process":{"env":["B=2"]}}')
    assert victim.read_text() == "root's file\n"
    assert json.loads(path.read_bytes()) == {"process": {"env": ["B=2"]}}
    assert not path.is_symlink()


@pytest.mark.parametrize("planted", ["symlink", "file"])
def test_a_planted_temp_name_is_refused_not_followed(
        target: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, planted: str) -> None:
    # Pin the random part so a planted entry sits exactly where the temp file would go.
    path, victim = target
    monkeypatch.setattr(os, "urandom", lambda n: b"\x01" * n)
    tmp = path.parent / f".config.json.nvhook-{os.getpid()}-{'01' * 8}.tmp"
    if planted == "symlink":
        tmp.symlink_to(victim)
    else:
        tmp.write_text("planted")
    before = path.read_bytes()
    with pytest.raises(WriteError, match="cannot create temp file"):
        fileops.write_atomic(path, b"new")
    assert victim.read_text() == "root's file\n"
    assert path.read_bytes() == before
    assert tmp.is_symlink() if planted == "symlink" else tmp.read_text() == "planted"


def test_temp_names_are_unpredictable_and_swept_by_pid(target: tuple[Path, Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = target
    names: list[str] = []
    real_replace = os.replace

    def recording_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        names.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    for n in range(3):
        spec.write_atomic(path, {"n": n})
    assert len(set(names)) == 3, names
    assert all(TEMP_NAME.fullmatch(n) and TEMP_NAME.fullmatch(n)[1] == str(os.getpid())
               for n in names), names
    # A leftover of a writer that is gone (pid 2**22 + 1 > the kernel's PID_MAX_LIMIT) is swept.
    leftover = path.parent / f".config.json.nvhook-{2**22 + 1}-{'ab' * 8}.tmp"
    leftover.write_text("torn")
    spec.write_atomic(path, {"n": 3})
    assert not leftover.exists()


@pytest.mark.parametrize("link_to", ["victim", "nowhere"])
def test_backup_skips_a_planted_link_at_its_name(target: tuple[Path, Path], link_to: str) -> None:
    # A dangling link is the dangerous one: "does the backup exist?" says no, and a plain
    # copy then creates the link's target wherever it points.
    path, victim = target
    path.chmod(0o640)
    pointed = victim if link_to == "victim" else victim.with_name("created-by-root")
    planted = path.with_name("config.json.nvhook-bak.20260101T000000Z")
    planted.symlink_to(pointed)
    saved = fileops.backup(path, "20260101T000000Z")
    assert victim.read_text() == "root's file\n"
    assert link_to == "victim" or not pointed.exists()
    assert saved.name == "config.json.nvhook-bak.20260101T000000Z.1"
    assert saved.read_bytes() == path.read_bytes()
    assert (saved.stat().st_mode & 0o777, saved.stat().st_mtime_ns) == (
        0o640, path.stat().st_mtime_ns)
