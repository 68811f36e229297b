"""The typer app. Commands parse options, call the core, render, and map errors
to exit codes; ``_guard`` (``exits.guard``, shared with the hook's typer-free
path) is the one place exceptions become an exit status."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
import typer.core
import typer.main

from nvhook import config as config_mod
from nvhook.errors import ExitStatus, UsageError
from nvhook.exits import guard, stdout_reader_gone, stop_quietly

if TYPE_CHECKING:
    from nvhook.ops import install as install_mod

T = TypeVar("T")

# -h as well as --help; subcommands inherit it from the root's context (runtime has none:
# every argument it gets is runc's).
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: no boxes, metavars as words (FILE, DIR)
    context_settings=CONTEXT,
    help="nvhook: gate which GPUs a container may have, then hand over to NVIDIA's hook.",
)


def _guard(fn: Callable[[], T]) -> T:
    return guard(fn, passthrough=(typer.Exit,))


def run(argv: list[str]) -> None:
    """Run the typer app. A usage error (unknown command or option, a missing option or
    value) is one ``nvhook: ...`` line and exit 2, like every other failure; everything a
    command raises has already gone through ``_guard``."""
    status = _guard(lambda: _invoke_flushed(argv))
    sys.exit(status if isinstance(status, int) else 0)


def _invoke_flushed(argv: list[str]) -> object:
    """Flushed inside the guard: a reader that went away (``| head``) is then a quiet
    exit, not an error in the interpreter's flush at exit."""
    status = _invoke(argv)
    sys.stdout.flush()
    return status


def _invoke(argv: list[str]) -> object:
    from nvhook.errors import UsageError

    usage_error, no_args, click_error = _click_errors()
    try:
        return app(args=argv, prog_name="nvhook", standalone_mode=False)
    except SystemExit as e:
        # typer's own EPIPE handling (its --help, say) exits 1; the reader left, nothing
        # failed: the status every other command gives then.
        if e.code == 1 and stdout_reader_gone():
            stop_quietly()
        raise
    except no_args as e:  # `nvhook`, `nvhook config`: the help, as click prints it
        print(e.ctx.get_help() if e.ctx else e.format_message())
        return int(ExitStatus.USAGE)
    except usage_error as e:
        raise UsageError(usage_line(e, argv)) from None
    except click_error as e:  # e.g. a file option click could not open
        raise UsageError(e.format_message()) from None


def _click_errors() -> tuple[type[Exception], type[Exception], type[Exception]]:
    """click's UsageError, NoArgsIsHelpError, ClickException: vendored by typer >= 0.22."""
    try:
        from typer._click import exceptions as ce  # type: ignore[import-not-found]
    except ImportError:  # older typer depends on click itself
        from click import exceptions as ce  # type: ignore[import-not-found,no-redef]
    no_args = getattr(ce, "NoArgsIsHelpError", type("NoArgsIsHelpError", (Exception,), {}))
    return ce.UsageError, no_args, ce.ClickException


def usage_line(e: Exception, argv: list[str]) -> str:
    """``explain: missing option '--bundle' (see nvhook explain --help)``."""
    from nvhook.hookargs import stage_word

    ctx = getattr(e, "ctx", None)
    if ctx is not None:
        path = ctx.command_path
    else:  # click parses some options before it has a context for the command
        word = stage_word(argv)
        path = f"nvhook {word}" if word in typer.main.get_command(app).commands else "nvhook"
    message = e.format_message().strip().rstrip(".")  # type: ignore[attr-defined]
    message = message[:1].lower() + message[1:]
    where = path.removeprefix("nvhook").strip()
    return f"{where + ': ' if where else ''}{message} (see {path} --help)"


ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", metavar="FILE", help="nvhook's TOML config (default: "
                 "$NVHOOK_CONFIG, then /etc/nvhook/config.toml).", show_default=False),
]


def _print_version(value: bool) -> None:
    if value:
        from nvhook import __version__

        print(f"nvhook {__version__}")
        raise typer.Exit(0)


VersionOpt = Annotated[
    bool,
    typer.Option("--version", help="Print nvhook's version and exit.", is_eager=True,
                 callback=_print_version),
]


@app.callback()
def _main(ctx: typer.Context, config: ConfigOpt = None, version: VersionOpt = False) -> None:
    ctx.obj = config


InventoryOpt = Annotated[
    Path | None,
    typer.Option("--inventory", metavar="FILE", help="A JSON inventory file instead of NVML.",
                 show_default=False),
]


def load_config(ctx: typer.Context) -> config_mod.Config:
    return config_mod.load(ctx.obj)


@app.command()
def prestart(ctx: typer.Context) -> None:
    """Run as an OCI prestart hook: the container state comes on stdin."""
    from nvhook.modes import prestart as prestart_mod

    prestart_mod.run(["--config", ctx.obj] if ctx.obj else [], _state_stdin(), None)


@app.command()
def poststop(ctx: typer.Context) -> None:
    """Run as an OCI poststop hook: release the container's GPU leases (state on stdin)."""
    from nvhook.modes import prestart as prestart_mod

    argv = ["--config", ctx.obj] if ctx.obj else []
    prestart_mod.run([*argv, "poststop"], _state_stdin(), None)


def _state_stdin() -> bytes:
    """The OCI state, to one byte past what ``state.decode`` accepts: /dev/zero on stdin
    is one line, not all of memory."""
    from nvhook.oci.scan import MAX_STATE_BYTES

    return sys.stdin.buffer.read(MAX_STATE_BYTES + 1)


@app.command()
def leases(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List the GPU lease table: who holds which device, and which leases are stale."""
    from nvhook.ops import leases as leases_mod

    def go() -> None:
        view = leases_mod.view(load_config(ctx))
        print(json.dumps(view.as_json(), indent=2) if as_json else view.as_text())

    _guard(go)


@app.command("log")
def log_(
    ctx: typer.Context,
    pod: Annotated[str | None, typer.Option("--pod", metavar="NAMESPACE/POD",
                                            help="Only this pod's containers.")] = None,
    decision: Annotated[
        list[str] | None,
        typer.Option("--decision", metavar="WORD", help="Only this decision: allow, rewrite, "
                     "deny, void (an empty kubelet allocation) or release (repeatable).",
                     show_default=False),
    ] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="TIME", help="Only entries from TIME on: an ISO time (no zone: "
        "local time) or back from now, 30s, 10m, 2h, 1d.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print each entry as its JSON "
                                          "line.")] = False,
    file: Annotated[str | None, typer.Option(
        "--file", metavar="PATH", help="Read this log instead of audit.path ('-': stdin).",
        show_default=False)] = None,
) -> None:
    """Show the audit log: one aligned line per decision (time, decision, container, pod,
    reason), or its JSON lines; a malformed line is a warning, then skipped."""
    from nvhook.errors import LogError
    from nvhook.ops import log as log_mod

    def go() -> None:
        filt = log_mod.Filter(
            pod=log_mod.parse_pod(pod) if pod is not None else None,
            kinds=log_mod.parse_kinds(decision or ()),
            since=log_mod.parse_since(since) if since is not None else None,
        )
        path = file
        if path is None:
            path = load_config(ctx).audit_path
            if not path:
                raise LogError('the audit log is off (audit.path = ""); give --file PATH')
        with log_mod.open_log(path) as stream:
            header = as_json
            for item in log_mod.select(stream, filt):
                if isinstance(item, log_mod.Malformed):
                    sys.stdout.flush()  # the warning lands between the rows it sits between
                    print(log_mod.warning(path, item), file=sys.stderr)
                    continue
                if not header:
                    print(log_mod.format_row(log_mod.HEADER))
                    header = True
                print(log_mod.as_json(item) if as_json else log_mod.row(item))

    _guard(go)


@app.command()
def explain(
    ctx: typer.Context,
    bundle: Annotated[Path | None, typer.Option("--bundle", metavar="DIR",
                                                help="The OCI bundle directory.")] = None,
    inventory: InventoryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    pod: Annotated[
        str | None, typer.Option("--pod", metavar="NAMESPACE/POD",
                                 help="Show the kubelet's allocation and what a container of "
                                 "that pod would get.")
    ] = None,
    container: Annotated[
        str | None, typer.Option("--container", metavar="NAME",
                                 help="With --pod: only this container.")
    ] = None,
) -> None:
    """Show what the hook would do to a bundle (or a pod's containers), and why."""
    from nvhook.decision.decide import Outcome
    from nvhook.decision.evaluate import evaluate
    from nvhook.oci import spec as spec_mod
    from nvhook.ops import explain as explain_mod

    def go() -> int:
        from nvhook.leases import step as lease_step

        config = load_config(ctx)
        if inventory is not None:
            # A typo in --inventory is exit 7 (INVENTORY), never a policy denial (3).
            from nvhook.gpus.inventory import load_file

            load_file(inventory)
        if pod is not None or bundle is None:
            namespace, _, name = (pod or "").partition("/")
            if bundle is not None or not namespace or not name or "/" in name:
                raise UsageError("explain: missing option '--bundle' DIR or '--pod' NAMESPACE/POD "
                                 "(see nvhook explain --help)")
            view = explain_mod.pod_view(config, namespace, name, container, inventory)
            print(json.dumps(view, indent=2) if as_json else explain_mod.pod_text(view))
            return 0
        evaluation = evaluate(spec_mod.load(bundle), config, inventory)
        evaluation, leased = lease_step.preview(evaluation, config)
        if as_json:
            print(json.dumps(explain_mod.as_json(evaluation, leased), indent=2))
        else:
            print(explain_mod.as_text(evaluation, leased))
        denied = evaluation.decision.outcome is Outcome.DENY
        return int(ExitStatus.DENIED) if denied else 0

    raise typer.Exit(_guard(go))


def _config_option(ctx: typer.Context) -> str | None:
    """``--config``, then $NVHOOK_CONFIG, as the hook path reads them."""
    import os

    return ctx.obj or os.environ.get(config_mod.CONFIG_ENV) or None


def _verbatim_args(parsed: list[str], command: str) -> list[str]:
    """The args after ``command`` exactly as given: click drops a ``--`` from its
    extra args, and a runtime's argv must be forwarded untouched."""
    from nvhook.hookargs import stage_word

    argv = sys.argv[1:]
    if stage_word(argv) == command:
        tail = argv[argv.index(command) + 1:]
        if [a for a in tail if a != "--"] == [a for a in parsed if a != "--"]:
            return tail
    return parsed


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
    options_metavar="RUNC-ARGS...",
)
def runtime(ctx: typer.Context) -> None:
    """Stand in for runc (Docker, containerd): judge the bundle, then exec the real runtime.

    On create, run and restore, nvhook reads the bundle named by --bundle, decides, and
    (allow or rewrite) edits config.json atomically before it execs the low-level runtime
    ([runtime] path, default runc) with the same arguments. Every other subcommand is
    passed straight through. All arguments are runc's, --help and -h included, so this
    page is only reachable as `nvhook help runtime`. A refusal is one `nvhook: denied:`
    line on stderr and in the runtime's --log, which is what Docker and containerd show.
    Register it with `nvhook install --engine docker` or `--engine containerd`."""
    import os

    from nvhook.exits import describe
    from nvhook.modes import shim

    args = _verbatim_args(list(ctx.args), "runtime")

    def go() -> None:
        target = shim.run(args, _config_option(ctx))
        try:
            os.execv(target.path, list(target.argv))
        except OSError as e:
            from nvhook.errors import DelegateError

            raise DelegateError(f"{target.path}: cannot run the runtime: {e.strerror}") from None

    def logged() -> None:
        try:
            go()
        except (Exception, KeyboardInterrupt) as e:
            # containerd (Docker, ctr, the kubelet) shows the runtime's --log, not stderr.
            line, _, notes = describe(e)
            for note in notes:
                shim.log_failure(args, f"nvhook: {note}", level="warning")
            shim.log_failure(args, f"nvhook: {line}")
            raise

    _guard(logged)


@app.command()
def precreate(ctx: typer.Context) -> None:
    """Run as a Podman precreate hook: the OCI config on stdin, the decided config on stdout."""
    from nvhook.modes import precreate as precreate_mod
    from nvhook.oci.scan import MAX_SPEC_BYTES

    raw = sys.stdin.buffer.read(MAX_SPEC_BYTES + 1)  # one more: parse_document refuses it
    out = _guard(lambda: precreate_mod.precreate(raw, _config_option(ctx)))
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()


@app.command()
def devices(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the inventory as JSON.")] = False,
) -> None:
    """List the GPUs and MIG devices nvhook sees, with the ids a request may use."""
    from nvhook.decision.evaluate import read_inventory
    from nvhook.errors import InventoryError
    from nvhook.ops import devices as devices_mod

    def go() -> None:
        config = load_config(ctx) if inventory is None else config_mod.Config()
        found = read_inventory(config, inventory)
        if isinstance(found, InventoryError):
            raise found
        if as_json:
            print(json.dumps(found.as_json(), indent=2))
        else:
            print(devices_mod.as_text(found))

    _guard(go)


PrefixOpt = Annotated[
    Path | None,
    typer.Option("--prefix", metavar="DIR", help="Prepend DIR to every absolute path nvhook "
                 "picks or is given (tests, packaging).", show_default=False),
]
HooksDirOpt = Annotated[
    Path | None,
    typer.Option("--hooks-dir", metavar="DIR", help="The hooks.d (or Sarus hooks) directory.",
                 show_default=False),
]
NvidiaConfigOpt = Annotated[
    Path | None,
    typer.Option("--nvidia-config", metavar="FILE", help="NVIDIA's config.toml.",
                 show_default=False),
]


EngineOpt = Annotated[
    str, typer.Option("--engine", metavar="ENGINE", help="podman | crio | sarus | docker | "
                      "containerd", show_default=False),
]


@app.command()
def install(
    ctx: typer.Context,
    engine: EngineOpt,
    prefix: PrefixOpt = None,
    hooks_dir: HooksDirOpt = None,
    nvidia_config: NvidiaConfigOpt = None,
    nvhook_path: Annotated[
        Path | None,
        typer.Option("--nvhook-path", metavar="PATH", help="The nvhook executable engines run "
                     "(default: the installed console script).", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print a diff; write nothing.")
    ] = False,
    default: Annotated[
        bool, typer.Option("--default", help="docker, containerd: make nvhook the default "
                           "runtime; the one it replaces becomes runtime.path.")
    ] = False,
) -> None:
    """Register nvhook with a container engine (backs up and atomically rewrites its files)."""
    from nvhook.ops import install as install_mod

    def go() -> None:
        kind = _engine(engine)
        explicit = _config_option(ctx)
        opts = install_mod.Options(
            engine=kind,
            nvhook_path=nvhook_path or install_mod.nvhook_executable(),
            prefix=prefix.absolute() if prefix else None,
            hooks_dir=hooks_dir,
            nvidia_config=nvidia_config,
            config_path=Path(explicit) if explicit else None,
            default=default,
        )
        plan = install_mod.plan(opts)
        for warning in plan.warnings:
            print(f"nvhook: warning: {warning}", file=sys.stderr)
        if plan.empty:
            print(f"nothing to do: nvhook is already installed for {kind.value}")
            return
        _render_plan(plan, dry_run, install_mod.apply)

    _guard(go)


def _engine(name: str) -> install_mod.Engine:
    from nvhook.errors import UsageError
    from nvhook.ops import install as install_mod

    try:
        return install_mod.Engine(name)
    except ValueError:
        names = ", ".join(e.value for e in install_mod.Engine)
        raise UsageError(f"--engine: unknown engine {name!r} (expected {names})") from None


def _render_plan(plan: object, dry_run: bool, apply: Callable[[object], tuple]) -> None:
    from nvhook.ops import install as install_mod

    assert isinstance(plan, install_mod.Plan)
    if dry_run:
        sys.stdout.write(install_mod.diff(plan))
        print(f"dry run: {len(plan.changes)} change(s), nothing written")
        return
    for done in apply(plan):
        c = done.change
        if c.action is install_mod.Action.MOVE:
            print(f"moved {c.path} -> {c.dest} ({c.why})")
        elif c.action is install_mod.Action.DELETE:
            print(f"removed {c.path}" + (f" (backup: {done.backup})" if done.backup else ""))
        elif done.backup is not None:
            print(f"updated {c.path} (backup: {done.backup})")
        else:
            print(f"created {c.path}")
    for note in plan.notes:
        print(note)


@app.command()
def uninstall(
    engine: EngineOpt,
    prefix: PrefixOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print a diff; write nothing.")
    ] = False,
) -> None:
    """Undo exactly what `nvhook install` did for an engine, keeping later edits."""
    from nvhook.ops import uninstall as uninstall_mod

    def go() -> None:
        kind = _engine(engine)
        plan = uninstall_mod.plan(kind, prefix.absolute() if prefix else None)
        if plan.empty:
            for note in plan.notes:
                print(note)
            if not dry_run:
                uninstall_mod.apply(plan)  # drops a record that has nothing left to undo
            print(f"nothing to do: nothing of nvhook's install for {kind.value} is left")
            return
        _render_plan(plan, dry_run, uninstall_mod.apply)

    _guard(go)


@app.command()
def doctor(
    ctx: typer.Context,
    prefix: PrefixOpt = None,
    hooks_dir: Annotated[
        list[Path] | None,
        typer.Option("--hooks-dir", metavar="DIR", help="A hooks.d directory to inspect "
                     "(repeatable; default: /usr/share/containers/oci/hooks.d and "
                     "/etc/containers/oci/hooks.d).",
                     show_default=False),
    ] = None,
    nvidia_config: NvidiaConfigOpt = None,
    docker_socket: Annotated[
        Path | None,
        typer.Option("--docker-socket", metavar="SOCKET",
                     help="Ask this dockerd for its runtimes (default: /var/run/docker.sock "
                     "when it exists and no --prefix).", show_default=False),
    ] = None,
    containerd_socket: Annotated[
        Path | None,
        typer.Option("--containerd-socket", metavar="SOCKET",
                     help="Ask this containerd whether its CRI plugin loaded (default: "
                     "/run/containerd/containerd.sock, as above).",
                     show_default=False),
    ] = None,
    host_root: Annotated[
        Path | None,
        typer.Option("--host-root", metavar="DIR",
                     help="The host's / as mounted in a pod (the DaemonSet's "
                     "readiness probe): files and the paths in them are read under it.",
                     show_default=False),
    ] = None,
) -> None:
    """Check this node: NVML, driver, GPUs, NVIDIA's hook and config, hooks.d, Docker,
    containerd, policy, audit."""
    from nvhook.ops import doctor as doctor_mod

    def go() -> int:
        explicit = _config_option(ctx)
        checks = doctor_mod.run(doctor_mod.Options(
            config=Path(explicit) if explicit else None,
            prefix=prefix.absolute() if prefix else None,
            hooks_dirs=tuple(hooks_dir or ()),
            nvidia_config=nvidia_config,
            docker_socket=docker_socket,
            containerd_socket=containerd_socket,
            host_root=host_root.absolute() if host_root else None,
        ))
        for row in doctor_mod.render(checks):
            print(row)
        return int(ExitStatus.DOCTOR) if doctor_mod.failed(checks) else 0

    raise typer.Exit(_guard(go))


class WordsCommand(typer.core.TyperCommand):
    """Arguments read as words: ``config set KEY VALUE``, not typer's ``{key} {value}``
    and ``key <str>``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument):
                param.metavar = param.metavar or (param.name or "").upper()
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument):
                pieces.append(param.metavar or "")
        return pieces


@app.command("help", cls=WordsCommand)
def help_(
    ctx: typer.Context,
    words: Annotated[list[str] | None, typer.Argument(
        metavar="COMMAND", help="A command, e.g. runtime or config set.", show_default=False)
    ] = None,
) -> None:
    """Show the help of nvhook or of a command; `help runtime` explains the runtime shim,
    whose own --help goes to runc."""
    from nvhook.errors import UsageError

    def go() -> None:
        parent = ctx.parent
        assert parent is not None
        cmd, here = parent.command, parent
        for word in words or []:
            sub = getattr(cmd, "commands", {}).get(word)
            if sub is None:
                raise UsageError(f"help: no such command {word!r} (see nvhook --help)")
            here = typer.Context(sub, info_name=word, parent=here)
            cmd = sub
        print(cmd.get_help(here))

    _guard(go)


config_app = typer.Typer(no_args_is_help=True, context_settings=CONTEXT, rich_markup_mode=None,
                         help="Edit nvhook's config file.")
app.add_typer(config_app, name="config")


@config_app.command("set", cls=WordsCommand)
def config_set(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Dotted key: policy.mode, delegate.path, ...")],
    value: Annotated[str, typer.Argument(help="A TOML value (true, 5, '[\"GPU-…\"]'), else a "
                                         "string.")],
) -> None:
    """Set KEY to VALUE in nvhook's config, keeping comments; validated before it is written."""
    from nvhook.ops import config_edit

    def go() -> None:
        explicit = _config_option(ctx)
        path = Path(explicit) if explicit else config_mod.DEFAULT_PATH
        edit = config_edit.set_value(path, key, value)
        if not edit.changed:
            print(f"{path}: {key} is already {edit.new!r}; nothing to do")
        else:
            was = "unset" if edit.old is None else repr(edit.old)
            made = " (created from the defaults)" if edit.created else ""
            print(f"{path}: {key} = {edit.new!r} (was {was}){made}")

    _guard(go)


node_app = typer.Typer(no_args_is_help=True, help="Install nvhook onto a Kubernetes node from "
                       "its DaemonSet pod (the node artifact; docs/deploy-kubernetes.md).")
app.add_typer(node_app, name="node")

HostRootOpt = Annotated[
    Path,
    typer.Option("--host-root", metavar="DIR", help="Where the host's / is mounted in this pod."),
]


@node_app.command("install")
def node_install(
    host_root: HostRootOpt = Path("/host"),
    engine: Annotated[
        str, typer.Option("--engine", metavar="ENGINE",
                          help="auto | podman | crio | containerd | docker")
    ] = "auto",
    restart: Annotated[
        str, typer.Option("--restart", metavar="HOW",
                          help="none | signal (SIGHUP dockerd) | systemd "
                          "(systemctl restart in the host root)")
    ] = "none",
    policy: Annotated[
        Path, typer.Option("--policy", metavar="FILE",
                           help="The policy to install as /etc/nvhook/config.toml "
                           "(the mounted ConfigMap); absent: keep the host's file.")
    ] = Path("/etc/nvhook-policy/config.toml"),
) -> None:
    """Copy this artifact to /opt/nvhook/VERSION, switch /opt/nvhook/current, write the
    policy and register the engine, all under --host-root. Re-running changes nothing."""
    from nvhook.errors import UsageError
    from nvhook.ops import node

    def go() -> None:
        try:
            how = node.Restart(restart)
        except ValueError:
            raise UsageError(f"--restart: unknown value {restart!r} (expected none, signal, "
                             "systemd)") from None
        result = node.install(node.Options(host_root=host_root.absolute(), engine=engine,
                                           restart=how, policy=policy))
        for line in result.lines:
            print(line)

    _guard(go)


@node_app.command("uninstall")
def node_uninstall(host_root: HostRootOpt = Path("/host")) -> None:
    """Undo `node install`: restore the engine files it replaced, remove what it created."""
    from nvhook.ops import node

    def go() -> None:
        for line in node.uninstall(node.Options(host_root=host_root.absolute())).lines:
            print(line)

    _guard(go)


@node_app.command("sleep")
def node_sleep() -> None:
    """Wait until SIGTERM, then exit 0: the DaemonSet's main container (the image has no shell,
    no sleep). Removes nothing: stopping the pod leaves the node installed."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()
