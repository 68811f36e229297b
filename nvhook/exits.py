"""The one place an exception becomes a stderr line and an exit status.

Shared by the typer app (``cli``) and the hook's typer-free path
(``modes.prestart.run``), so every command reports failures the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from nvhook.errors import DeniedError, ExitStatus, NvhookError

T = TypeVar("T")


def fail(message: str, status: ExitStatus, notes: tuple[str, ...] = ()) -> NoReturn:
    for line in (message, *notes):
        print(f"nvhook: {line}", file=sys.stderr)
    sys.exit(int(status))


def guard(fn: Callable[[], T], passthrough: tuple[type[BaseException], ...] = ()) -> T:
    """Run ``fn``; every exception becomes one stderr line and an exit status, except
    SystemExit and the ``passthrough`` types (the CLI's ``typer.Exit``)."""
    try:
        return fn()
    except DeniedError as e:
        fail(f"denied: {e.message}", e.status, e.notes)
    except NvhookError as e:
        fail(e.message, e.status, e.notes)
    except KeyboardInterrupt:
        fail("interrupted", ExitStatus.INTERNAL)
    except SystemExit:
        raise
    except Exception as e:  # a bug: still one line, never a traceback
        if isinstance(e, passthrough):
            raise
        fail(f"internal error: {type(e).__name__}: {e}", ExitStatus.INTERNAL)
