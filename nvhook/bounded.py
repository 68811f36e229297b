"""Reading a file nvhook did not write, bounded: never more than a limit in memory, never
a wait on a FIFO. Stdlib only and cheap: the hook's fast path reads with it too.

A path can name anything: ``/dev/zero`` (endless), a sparse file of terabytes, a FIFO
(a plain ``open`` waits for a writer, forever), a directory. Every limit is documented in
docs/reliability.md. The errors are ``OSError``s with a ``strerror`` that says what is
wrong, so each reader's existing "cannot read PATH: why" wording covers them, and a
reader that wants its own words catches ``TooLarge`` or ``NotRegular``.
"""

from __future__ import annotations

import errno
import os
import stat

CHUNK = 1 << 20


class Refused(OSError):
    """A file a bounded read does not read; ``str()`` is ``PATH: why``."""

    def __init__(self, path: object, code: int, problem: str) -> None:
        super().__init__(code, problem, str(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


class TooLarge(Refused):
    def __init__(self, path: object, limit: int) -> None:
        super().__init__(path, errno.EFBIG, f"larger than {limit} bytes, refusing to read it")
        self.limit = limit


class NotRegular(Refused):
    """Not a regular file (nor, where allowed, a character device); ``kind`` is its
    ``S_IFMT`` bits."""

    def __init__(self, path: object, kind: int) -> None:
        super().__init__(path, errno.EINVAL, f"is {what(kind)}, not a regular file")
        self.kind = kind

    @property
    def what(self) -> str:
        return what(self.kind)


def what(kind: int) -> str:
    return {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO",
            stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
            stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}.get(
                kind, "not a regular file")


def read(path: str | os.PathLike[str], limit: int, *, follow: bool = True) -> bytes:
    """The bytes of ``path``, at most ``limit``. A regular file, or a character device
    (``/dev/null`` as an empty file; ``/dev/zero`` is ``TooLarge`` after limit + 1 bytes);
    a FIFO, socket or directory is ``NotRegular``. ``follow=False``: a symlink is ELOOP.

    O_NONBLOCK throughout: the open of a FIFO returns at once (then it is refused), and a
    device with nothing to read fails with EAGAIN instead of waiting. Regular files
    ignore the flag. Other OSErrors (missing, unreadable) pass through."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind not in (stat.S_IFREG, stat.S_IFCHR):
            raise NotRegular(path, kind)
        return read_fd(fd, path, limit)
    finally:
        os.close(fd)


def read_fd(fd: int, path: object, limit: int) -> bytes:
    """Read an open descriptor to its end, at most ``limit`` bytes, else ``TooLarge``.
    A regular file's size is checked first, so a huge (or sparse) one is never read."""
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_size > limit:
        raise TooLarge(path, limit)
    chunks = []
    left = limit + 1  # one byte more than allowed tells a file that grew, or /dev/zero
    while left > 0 and (chunk := os.read(fd, min(CHUNK, left))):
        chunks.append(chunk)
        left -= len(chunk)
    if left <= 0:
        raise TooLarge(path, limit)
    return b"".join(chunks)
