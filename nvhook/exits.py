"""The one place an exception becomes a stderr line and an exit status.

Shared by the typer app (``cli``) and the hook's typer-free path
(``modes.prestart.run``), so every command reports failures the same way.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from nvhook.errors import DeniedError, ExitStatus, NvhookError
from nvhook.safetext import one_line

T = TypeVar("T")


def fail(message: str, status: ExitStatus, notes: tuple[str, ...] = ()) -> NoReturn:
    for line in (message, *notes):
        # Messages quote the container's env, keys and paths: a control character or a
        # line separator there must not start a second (fake) line.
        try:
            print(f"nvhook: {one_line(line)}", file=sys.stderr)
        except (OSError, ValueError):
            # stderr is gone (a closed pipe, a full disk): the status is all that is left,
            # and it must still say "denied" rather than "internal error".
            to_devnull(2)
            break
    sys.exit(int(status))


def to_devnull(fd: int) -> None:
    """Point ``fd`` (a standard stream whose reader is gone) at /dev/null, so that the
    interpreter's own flush at exit cannot fail again and print "Exception ignored"."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)


def describe(exc: BaseException) -> tuple[str, ExitStatus, tuple[str, ...]]:
    """The line (without ``nvhook: ``), status and notes ``guard`` reports for ``exc``."""
    if isinstance(exc, DeniedError):
        return f"denied: {exc.message}", exc.status, exc.notes
    if isinstance(exc, NvhookError):
        return exc.message, exc.status, exc.notes
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", ExitStatus.INTERNAL, ()
    return f"internal error: {type(exc).__name__}: {exc}", ExitStatus.INTERNAL, ()


def stop_quietly() -> NoReturn:
    """stdout's reader is gone (``| head``): nothing is wrong, so nothing is said."""
    to_devnull(1)
    sys.exit(int(ExitStatus.PIPE))


def stdout_reader_gone() -> bool:
    """Whether fd 1 is a pipe whose reader has closed it (poll reports POLLERR)."""
    import select

    try:
        poller = select.poll()
        poller.register(1, 0)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def guard(fn: Callable[[], T], passthrough: tuple[type[BaseException], ...] = ()) -> T:
    """Run ``fn``; every exception becomes one stderr line and an exit status, except
    SystemExit and the ``passthrough`` types (the CLI's ``typer.Exit``)."""
    try:
        return fn()
    except SystemExit:
        raise
    except (Exception, KeyboardInterrupt) as e:  # a bug is still one line, never a traceback
        if isinstance(e, BrokenPipeError) and stdout_reader_gone():
            stop_quietly()  # `| head` left: not an error (a socket's EPIPE still is)
        if isinstance(e, passthrough) and not isinstance(e, NvhookError):
            raise
        fail(*describe(e))
