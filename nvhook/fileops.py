"""Bytes-level file changes for files users own: atomic replace, timestamped backups.

``spec.write_atomic`` serialises a JSON document for the hot path; install and
``config set`` write arbitrary text (TOML, JSON, a shell wrapper) and create
files that do not exist yet, so they share this small writer instead.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path

from nvhook import bounded
from nvhook.bounded import NotRegular as NotRegular
from nvhook.bounded import TooLarge as TooLarge
from nvhook.errors import WriteError


def utc_stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def backup(path: Path, stamp: str) -> Path:
    """Copy ``path`` to ``<path>.nvhook-bak.<stamp>`` (never over an existing backup).

    The copy is created with O_CREAT|O_EXCL|O_NOFOLLOW, so an entry planted under the
    backup's name (a link to a file root trusts) is skipped, never written through; mode
    and times are set on that descriptor, as ``shutil.copy2`` would set them on the path.
    """
    try:
        data = path.read_bytes()
        st = os.stat(path)
    except OSError as e:
        raise WriteError(f"{path}: cannot back up: {e.strerror}") from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    target = path.with_name(f"{path.name}.nvhook-bak.{stamp}")
    n = 0
    while True:
        try:
            fd = os.open(target, flags, 0o600)
            break
        except FileExistsError:  # two changes of one file within a second, or planted
            n += 1
            target = path.with_name(f"{path.name}.nvhook-bak.{stamp}.{n}")
        except OSError as e:
            raise WriteError(f"{path}: cannot back up to {target}: {e.strerror}") from None
    try:
        try:
            os.fchmod(fd, st.st_mode & 0o7777)
            write_all(fd, data)
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise WriteError(f"{path}: cannot back up to {target}: {e.strerror}") from None
    return target


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace (or create) ``path`` so that a reader sees the old or the new bytes, never a mix.

    An existing file keeps its mode and owner; a new one gets ``mode``. Missing parent
    directories are created 0755, as package managers do for /etc subtrees.
    """
    directory = path.parent
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"{directory}: cannot create directory: {e.strerror}") from None
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise WriteError(f"{path}: cannot stat before writing: {e.strerror}") from None
    # The name spec.sweep_temp_files recognises (the pid), plus 64 random bits: the
    # directory may be writable by others, so the name must not be guessable, and
    # O_EXCL|O_NOFOLLOW refuses a file or link planted under it anyway.
    tmp = directory / f".{path.name}.nvhook-{os.getpid()}-{os.urandom(8).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as e:
        raise WriteError(f"{tmp}: cannot create temp file: {e.strerror}") from None
    try:
        try:
            # Owner and mode are set on the descriptor created above, never on a path
            # that could have been swapped since.
            if st is not None:
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, (st.st_mode & 0o7777) if st is not None else mode)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise WriteError(f"{path}: write failed, file left as it was: {e.strerror}") from None
    fsync_dir(directory)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # os.write may write less than asked
        view = view[os.write(fd, view) :]


def rename(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as e:
        raise WriteError(f"{src}: cannot move to {dst}: {e.strerror}") from None
    fsync_dir(src.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The engine and node files install, uninstall and config set edit (daemon.json, containerd's
# and nvhook's config, hooks.d files): real ones are a few KiB.
MAX_EDITED_BYTES = 4 << 20


def read_bounded(path: Path, limit: int) -> bytes:
    """The file's bytes, or ``TooLarge`` past ``limit`` bytes (``bounded.read``: /dev/zero,
    a sparse file or a FIFO can neither exhaust memory nor hang). OSErrors (missing,
    unreadable) pass through for the caller to word in its own error class."""
    return bounded.read(path, limit)


def read_optional(path: Path, limit: int = MAX_EDITED_BYTES) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        return bounded.read(path, limit)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise WriteError(f"{path}: cannot read: {e.strerror}") from None
