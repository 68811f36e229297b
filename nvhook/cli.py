"""The typer app. Commands parse options, call the core, render, and map errors
to exit codes; ``_guard`` is the one place exceptions become an exit status."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from nvhook import config as config_mod
from nvhook.errors import DeniedError, ExitStatus, NvhookError

T = TypeVar("T")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="nvhook: gate which GPUs a container may have, then hand over to NVIDIA's hook.",
)


def fail(message: str, status: ExitStatus) -> NoReturn:
    print(f"nvhook: {message}", file=sys.stderr)
    sys.exit(int(status))


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except DeniedError as e:
        fail(f"denied: {e.message}", e.status)
    except NvhookError as e:
        fail(e.message, e.status)
    except KeyboardInterrupt:
        fail("interrupted", ExitStatus.INTERNAL)
    except (SystemExit, typer.Exit):
        raise
    except Exception as e:  # a bug: still one line, never a traceback
        fail(f"internal error: {type(e).__name__}: {e}", ExitStatus.INTERNAL)


def run(argv: list[str]) -> None:
    """Run the typer app with nvhook's error mapping."""
    import click

    try:
        # Without standalone mode click returns an Exit's code instead of raising it.
        result = app(args=argv, prog_name="nvhook", standalone_mode=False)
        sys.exit(result if isinstance(result, int) else 0)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(int(ExitStatus.USAGE))
    except click.exceptions.Abort:
        fail("aborted", ExitStatus.INTERNAL)
    except (NvhookError, KeyboardInterrupt, Exception) as e:
        error = e
        _guard(lambda: _reraise(error))


def _reraise(e: BaseException) -> NoReturn:
    raise e


def run_hook(argv: list[str], raw: bytes, preloaded: Any) -> NoReturn:
    """The prestart path, entered from ``entry`` with stdin already read."""
    from nvhook import delegate, hook

    def go() -> NoReturn:
        config = config_mod.load(_config_from(argv))
        handover = hook.prestart(raw, config, preloaded)
        if handover.path is None:
            sys.exit(0)
        delegate.exec_delegate(handover.path, config.delegate, handover.state)

    _guard(go)
    sys.exit(0)


def _config_from(argv: list[str]) -> str | None:
    from nvhook.entry import _config_option

    return _config_option(argv)


ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", help="nvhook's TOML config (default: $NVHOOK_CONFIG, then "
                 "/etc/nvhook/config.toml).", show_default=False),
]


@app.callback()
def _main(ctx: typer.Context, config: ConfigOpt = None) -> None:
    ctx.obj = config


def load_config(ctx: typer.Context) -> config_mod.Config:
    return config_mod.load(ctx.obj)


@app.command()
def prestart(ctx: typer.Context) -> None:
    """Run as an OCI prestart hook: the container state comes on stdin."""
    run_hook(["--config", ctx.obj] if ctx.obj else [], sys.stdin.buffer.read(), None)


@app.command()
def explain(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Option("--bundle", help="The OCI bundle directory.")],
    inventory: Annotated[
        Path | None, typer.Option("--inventory", help="A JSON inventory file instead of NVML.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show what the hook would do to a bundle, and why."""
    from nvhook import explain as explain_mod
    from nvhook import spec as spec_mod
    from nvhook.decide import Outcome
    from nvhook.engine import evaluate

    def go() -> int:
        config = load_config(ctx)
        evaluation = evaluate(spec_mod.load(bundle), config, inventory)
        if as_json:
            print(json.dumps(explain_mod.as_json(evaluation), indent=2))
        else:
            print(explain_mod.as_text(evaluation))
        denied = evaluation.decision.outcome is Outcome.DENY
        return int(ExitStatus.DENIED) if denied else 0

    raise typer.Exit(_guard(go))
