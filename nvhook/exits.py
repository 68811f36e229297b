"""The one place an exception becomes a stderr line and an exit status.

Shared by the typer app (``cli``) and the hook's typer-free path
(``modes.prestart.run``), so every command reports failures the same way.
"""

from __future__ import annotations

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
        print(f"nvhook: {one_line(line)}", file=sys.stderr)
    sys.exit(int(status))


def describe(exc: BaseException) -> tuple[str, ExitStatus, tuple[str, ...]]:
    """The line (without ``nvhook: ``), status and notes ``guard`` reports for ``exc``."""
    if isinstance(exc, DeniedError):
        return f"denied: {exc.message}", exc.status, exc.notes
    if isinstance(exc, NvhookError):
        return exc.message, exc.status, exc.notes
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", ExitStatus.INTERNAL, ()
    return f"internal error: {type(exc).__name__}: {exc}", ExitStatus.INTERNAL, ()


def guard(fn: Callable[[], T], passthrough: tuple[type[BaseException], ...] = ()) -> T:
    """Run ``fn``; every exception becomes one stderr line and an exit status, except
    SystemExit and the ``passthrough`` types (the CLI's ``typer.Exit``)."""
    try:
        return fn()
    except SystemExit:
        raise
    except (Exception, KeyboardInterrupt) as e:  # a bug is still one line, never a traceback
        if isinstance(e, passthrough) and not isinstance(e, NvhookError):
            raise
        fail(*describe(e))
