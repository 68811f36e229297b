"""The lease table on disk: ``<dir>/leases.json``, changed only under ``flock(<dir>/lock)``.

The lock is a separate file because the table itself is replaced atomically (a
new inode each write): a lock on it would not exclude the next writer. A
reader without the lock (``nvhook leases``, ``explain``, ``doctor``) still sees
a whole table, the old one or the new one. A writer killed at any point leaves
the old table or the new one, and the kernel drops its lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from nvhook import fileops
from nvhook.errors import WriteError
from nvhook.leases.table import LeaseTableError, Table, decode, encode

TABLE_NAME = "leases.json"
LOCK_NAME = "lock"
# Test-only: a unix socket path. At each named point of a locked change the writer
# sends "<point> <pid>\n" there and waits for one byte back, so a test can kill it
# at a known point without timing anything. Set only in a hook's own env list.
PARK_ENV = "NVHOOK_TEST_LEASE_PARK"


class Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.table_path = directory / TABLE_NAME
        self.lock_path = directory / LOCK_NAME

    def exists(self) -> bool:
        return self.table_path.exists()

    def read(self) -> Table:
        """The table as last written; an empty one when none was ever written."""
        try:
            data = fileops.read_optional(self.table_path)
        except WriteError as e:
            raise LeaseTableError(e.message) from None
        if data is None:
            return Table(None)
        return decode(data, str(self.table_path))

    def write(self, table: Table) -> None:
        """Call with the lock held (``locked``)."""
        # Under the lock no other writer is active: any temp file is a killed writer's.
        for leftover in self.directory.glob(f".{TABLE_NAME}.nvhook-*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
        try:
            fileops.write_atomic(self.table_path, encode(table), mode=0o600)
        except WriteError as e:
            raise LeaseTableError(e.message) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[Store]:
        """Hold the table's lock: read, reconcile, decide and write inside it."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise LeaseTableError(f"{self.lock_path}: cannot open the lease lock: "
                                  f"{e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            park("locked")
            yield self
            park("written")
        finally:
            os.close(fd)  # also drops the lock


def filesystem_type(directory: Path) -> str | None:
    """The filesystem type (``tmpfs``, ``ext4``...) the table lives on, from
    /proc/self/mountinfo: the mount whose point is the longest prefix of the directory
    (or, before the first lease, of its nearest existing parent). None: unknown."""
    path = directory
    while not path.exists() and path != path.parent:
        path = path.parent
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        if not sep or len(fields) < 5 or not tail.split():
            continue
        # Octal escapes (\040 for a space) in the mount point, as the kernel writes them.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), tail.split()[0])
    return best[1] if best else None


def park(point: str) -> None:
    """The test-only rendezvous of ``PARK_ENV``; a no-op unless it is set."""
    path = os.environ.get(PARK_ENV)
    if not path:
        return
    import socket  # ~3 ms of imports the hook never needs outside tests

    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(f"{point} {os.getpid()}\n".encode())
        s.recv(1)
