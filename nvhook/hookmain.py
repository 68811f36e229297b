"""The prestart hook's command layer, without typer.

``entry`` calls ``run_hook`` for every container that may ask for a GPU, so this
module imports only what that path needs: the typer app (``cli``) costs ~30 ms
of imports and is never loaded here. ``cli`` re-uses ``fail`` and ``guard``, so
exceptions become exit statuses in one place for every command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

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


def run_hook(argv: list[str], raw: bytes, preloaded: Any) -> NoReturn:
    """The prestart path, entered from ``entry`` with stdin already read."""

    def go() -> NoReturn:
        from nvhook import config as config_mod
        from nvhook import delegate, hook
        from nvhook.entry import _config_option

        config = config_mod.load(_config_option(argv))
        handover = hook.prestart(raw, config, preloaded)
        for warning in handover.warnings:
            print(f"nvhook: {warning}", file=sys.stderr)
        if handover.path is None:
            sys.exit(0)
        delegate.exec_delegate(handover.path, config.delegate, handover.state)

    guard(go)
    sys.exit(0)
