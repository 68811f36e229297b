"""The runtime shim: ``nvhook runtime [RUNTIME ARGS...]`` stands in for runc.

Docker and containerd have no hooks.d, so nvhook is registered as the runtime
itself. On ``create``, ``run`` and ``restore`` (each of them runs the prestart
hooks) it judges the bundle's spec *before* the low-level runtime reads it, so its
env edits reach the container process (a prestart hook is too late for that).
Then, and for every other subcommand, it execs the real runtime with the original
argv, untouched. A refusal is also appended to the runtime's ``--log``, in runc's
format, because containerd reports a runtime's error from there.

Returns what to exec; the CLI does it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nvhook import bounded
from nvhook import config as config_mod
from nvhook.config import SAFE_PATH, Config
from nvhook.decision.decide import Outcome
from nvhook.decision.evaluate import Evaluation, evaluate
from nvhook.decision.request import Kind, parse
from nvhook.errors import DelegateError, UsageError
from nvhook.leases import step as lease_step
from nvhook.leases.rules import Holder
from nvhook.modes.apply import decided_document, may_request_gpu, record
from nvhook.nvidia import delegate
from nvhook.oci import spec as spec_mod

# runc's global options (main.go), urfave/cli: "-x v", "--x v", "--x=v"; booleans never
# take a separate value. The criu global is gone from runc 1.2 but older runcs still take it.
GLOBAL_VALUE_OPTIONS = frozenset({"root", "log", "log-format", "criu", "rootless"})
GLOBAL_BOOL_OPTIONS = frozenset({"debug", "systemd-cgroup", "help", "h", "version", "v"})
# The subcommands that create a container and run its prestart/createRuntime hooks, with every
# option their runc source (create.go, run.go, restore.go, up to runc 1.3) declares. An option
# not listed here is refused on these subcommands: without knowing whether it takes a value,
# the container id and the bundle could be mistaken (fail closed).
_CREATE_VALUES = frozenset({"bundle", "b", "config", "console-socket", "pidfd-socket",
                            "pid-file", "preserve-fds"})
_CREATE_BOOLS = frozenset({"no-pivot", "no-new-keyring", "help", "h"})
JUDGED_OPTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "create": (_CREATE_VALUES, _CREATE_BOOLS),
    "run": (_CREATE_VALUES, _CREATE_BOOLS | {"detach", "d", "keep", "no-subreaper"}),
    "restore": (
        _CREATE_VALUES - {"preserve-fds"} | {"image-path", "work-path", "manage-cgroups-mode",
                                             "empty-ns", "lsm-profile", "lsm-mount-context"},
        _CREATE_BOOLS | {"detach", "d", "no-subreaper", "tcp-established", "ext-unix-sk",
                         "shell-job", "file-locks", "auto-dedup", "lazy-pages"},
    ),
}
# A hook with one of these basenames already hands the container to NVIDIA's stack.
NVIDIA_HOOK_NAMES = frozenset({"nvidia-container-runtime-hook", "nvidia-container-toolkit",
                               "nvhook"})
# Runtimes that add NVIDIA's hook themselves: inserting ours too would run it twice.
NVIDIA_RUNTIMES = frozenset({"nvidia-container-runtime", "nvidia-container-runtime.legacy"})


@dataclass(frozen=True)
class RuntimeCall:
    """What the engine asked the runtime to do, as far as nvhook cares."""

    args: tuple[str, ...]
    subcommand: str | None
    bundle: Path | None = None  # only for create/run/restore: --bundle, else the cwd
    container_id: str | None = None
    log: Path | None = None  # runc's global --log: where the engine reads a runtime's error
    log_format: str = "text"
    config: str | None = None  # --config (runc >= 1.3): the spec file, relative to the bundle

    @property
    def judged(self) -> bool:
        return self.subcommand in JUDGED_OPTIONS

    @property
    def spec_path(self) -> Path:
        assert self.bundle is not None
        # runc chdirs into the bundle before it opens the spec, so a relative --config is
        # relative to the bundle.
        return self.bundle / (self.config or spec_mod.CONFIG_NAME)


@dataclass(frozen=True)
class Exec:
    """Exec ``path`` with ``argv`` (argv[0] first), keeping the environment."""

    path: Path
    argv: tuple[str, ...]


def _option(arg: str) -> tuple[str, str | None] | None:
    """``--x=v`` / ``-x v`` -> (name, inline value); None for a positional arg.

    Go's flag package takes one or two dashes alike, so runc does too.
    """
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name, eq, value = arg.lstrip("-").partition("=")
    return name, (value if eq else None)


def parse_argv(args: Sequence[str]) -> RuntimeCall:
    """Find the subcommand word and, for the judged ones, their bundle and container id.

    The subcommand is the first positional argument that is not an option's value,
    so ``runc --root create state`` is ``state`` and ``--bundle create`` is a path.
    Raises UsageError for an option runc's create/run/restore do not declare.
    """
    args = tuple(args)
    globals_: dict[str, str] = {}
    i = 0
    while i < len(args):
        opt = _option(args[i])
        if opt is None:
            break
        name, inline = opt
        if (name not in GLOBAL_VALUE_OPTIONS and name not in GLOBAL_BOOL_OPTIONS
                and any(a in JUDGED_OPTIONS for a in args[i + 1:])):
            # Whether it takes a value decides which word is the subcommand.
            raise UsageError(f"runtime: unknown global option {args[i]!r} before a "
                             "create/run/restore: nvhook cannot tell which word is the "
                             "subcommand (runc's own options only)")
        value = inline
        if name in GLOBAL_VALUE_OPTIONS and inline is None:
            value = args[i + 1] if i + 1 < len(args) else None
            i += 1
        if value is not None:
            globals_[name] = value  # the last one wins, as with Go's flag package
        i += 1
    else:
        return _call(args, None, globals_)
    if args[i] == "--":
        return _call(args, None, globals_)
    subcommand = args[i]
    if subcommand not in JUDGED_OPTIONS:
        return _call(args, subcommand, globals_)
    values, bools = JUDGED_OPTIONS[subcommand]
    # urfave/cli moves flags given after the id in front of it, so scan them all.
    found: dict[str, str] = {}
    container_id: str | None = None
    rest = args[i + 1:]
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg == "--":
            if container_id is None and j + 1 < len(rest):
                container_id = rest[j + 1]
            break
        opt = _option(arg)
        if opt is None:
            if container_id is None:
                container_id = arg
            j += 1
            continue
        name, inline = opt
        if name not in values and name not in bools:
            raise UsageError(f"runtime {subcommand}: unknown option {arg!r}: nvhook cannot "
                             "tell the container id and bundle apart (runc's own options "
                             "only)")
        value = inline
        if name in values and inline is None:
            if j + 1 >= len(rest):
                raise UsageError(f"runtime {subcommand}: option {arg!r} needs a value")
            value = rest[j + 1]
            j += 1
        if value is not None:
            found["bundle" if name == "b" else name] = value  # the last one wins
        j += 1
    bundle = Path(found["bundle"]) if found.get("bundle") else Path.cwd()
    return _call(args, subcommand, globals_, bundle, container_id, found.get("config") or None)


def _call(args: tuple[str, ...], subcommand: str | None, globals_: Mapping[str, str],
          bundle: Path | None = None, container_id: str | None = None,
          config: str | None = None) -> RuntimeCall:
    log = globals_.get("log")
    return RuntimeCall(args, subcommand, bundle, container_id, Path(log) if log else None,
                       globals_.get("log-format") or "text", config)


def log_failure(args: Sequence[str], line: str, level: str = "error",
                now: datetime | None = None) -> bool:
    """Append ``line`` to the runtime log the engine gave (``--log``), in runc's format.

    containerd's shim (and so Docker, ctr and the kubelet) reads a failed runtime's reason
    from that file, not from stderr: the last ``"level":"error"`` entry of the JSON lines,
    whose ``time`` must parse as RFC 3339. Text format is logrus' text formatter, as runc
    writes it. Best effort: -> whether it was written; stderr still carries the line.
    """
    try:
        call = parse_argv(args)
    except UsageError:
        call = _globals_only(args)
    if call.log is None:
        return False
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if call.log_format == "json":
        entry = json.dumps({"level": level, "msg": line, "time": stamp},
                           ensure_ascii=True, separators=(",", ":"))
    else:
        entry = f"time={json.dumps(stamp)} level={level} msg={json.dumps(line)}"
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(call.log, flags, 0o644)
    except OSError:
        return False
    try:
        os.write(fd, (entry + "\n").encode("ascii"))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _globals_only(args: Sequence[str]) -> RuntimeCall:
    """The global options of an argv whose subcommand part does not parse."""
    for n in range(len(args), -1, -1):
        try:
            return parse_argv(args[:n])
        except UsageError:
            continue
    return RuntimeCall(tuple(args), None)


def wants_nvidia_hook(evaluation: Evaluation, doc: Mapping[str, Any], config: Config) -> bool:
    """Whether the runtime must be given a hook that attaches the GPUs.

    Only when something was granted or ``none`` (driver libraries, no GPU) is kept.
    """
    decision = evaluation.decision
    if decision.outcome not in (Outcome.ALLOW, Outcome.REWRITE):
        return False
    if Path(config.runtime_path).name in NVIDIA_RUNTIMES:
        return False
    if _has_nvidia_hook(doc):
        return False
    if decision.attached:
        return True
    final = spec_mod.from_document(evaluation.spec.path, dict(doc))
    # As NVIDIA's hook will read it: its channel order and its own swarm-resource names.
    request = parse(final, nvidia=evaluation.request.nvidia.config)
    return request.env_read and request.env.devices.kind is Kind.NONE


def _has_nvidia_hook(doc: Mapping[str, Any]) -> bool:
    hooks = doc.get("hooks")
    if not isinstance(hooks, dict):
        return False
    for stage in ("prestart", "createRuntime"):
        for hook in hooks.get(stage) or []:
            if isinstance(hook, dict) and Path(str(hook.get("path", ""))).name in NVIDIA_HOOK_NAMES:
                return True
    return False


def with_prestart_hook(doc: dict[str, Any], nvhook: Path, config: Config) -> dict[str, Any]:
    """Append nvhook's own prestart hook, which re-checks and hands over to NVIDIA's."""
    return _with_hook(doc, "prestart", nvhook, config)


def with_poststop_hook(doc: dict[str, Any], nvhook: Path, config: Config) -> dict[str, Any]:
    """Append nvhook's poststop hook, which releases the container's GPU leases
    (runc runs it on ``delete``). Once: a second create of the bundle adds no copy."""
    return _with_hook(doc, "poststop", nvhook, config)


def _with_hook(doc: dict[str, Any], stage: str, nvhook: Path, config: Config) -> dict[str, Any]:
    args = ["nvhook"]
    if config.path is not None:
        # The hook gets only PATH in its env, so NVHOOK_CONFIG would not reach it.
        args += ["--config", str(config.path)]
    args.append(stage)
    out = copy.deepcopy(doc)
    hooks = out.get("hooks")
    if not isinstance(hooks, dict):
        hooks = out["hooks"] = {}
    entries = hooks.get(stage)
    if not isinstance(entries, list):
        entries = hooks[stage] = []
    entry = {"path": str(nvhook), "args": args, "env": [f"PATH={SAFE_PATH}"]}
    if stage != "poststop" or entry not in entries:
        entries.append(entry)
    return out


def nvhook_executable() -> Path:
    """nvhook's own console script, for the hook entry (it must be an absolute path)."""
    candidates = []
    if sys.argv and Path(sys.argv[0]).name == "nvhook":
        candidates.append(Path(sys.argv[0]).absolute())
    candidates.append(Path(sys.executable).with_name("nvhook"))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = delegate.which("nvhook")
    if found is None:
        raise DelegateError(f"cannot find nvhook's own executable (on PATH={SAFE_PATH}) "
                            "for the prestart hook it must insert")
    return found


def resolve_runtime(name: str, environ: Mapping[str, str] = os.environ) -> Path:
    """The low-level runtime. A bare name is looked up on the engine's PATH (the
    daemon's, not a container's), then on the safe PATH."""
    if os.sep in name:
        path = Path(name)
        if path.is_file() and os.access(path, os.X_OK):
            return path.absolute()
        raise DelegateError(f"runtime.path: {name}: not found or not executable")
    for search in (environ.get("PATH"), SAFE_PATH):
        found = shutil.which(name, path=search) if search else None
        if found:
            return Path(found)
    raise DelegateError(f"runtime.path: {name!r} not found on PATH or {SAFE_PATH}")


def runtime_name(config_option: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """``runtime.path`` read leniently, for every path that must not fail on a broken
    config: ``delete``, ``kill`` and ``state`` of a running container must keep working
    while the config is being fixed. Warns on stderr and falls back to "runc"."""
    path, named = config_mod.config_path(config_option, environ)
    try:
        doc = tomllib.loads(bounded.read(path, config_mod.MAX_CONFIG_BYTES).decode("utf-8"))
        value = doc.get("runtime", {}).get("path", "runc")
        if isinstance(value, str) and value:
            return value
        problem = "runtime.path is not a non-empty string"
    except FileNotFoundError:
        if not named:
            return "runc"
        problem = "config file not found"
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError) as e:
        problem = f"cannot read it ({getattr(e, 'strerror', None) or e})"
    print(f"nvhook: warning: {path}: {problem}; using runtime \"runc\"", file=sys.stderr)
    return "runc"


def run(args: Sequence[str], config_option: str | None,
        environ: Mapping[str, str] = os.environ) -> Exec:
    call = parse_argv(args)
    name = runtime_name(config_option, environ)
    if call.judged:
        name = prepare_create(call, config_option) or name
    path = resolve_runtime(name, environ)
    _refuse_self(path)
    return Exec(path, (name, *call.args))


def prepare_create(call: RuntimeCall, config_option: str | None) -> str | None:
    """Judge and edit the bundle (create, run, restore). -> the runtime name from the full
    config, or None when the spec cannot ask for a GPU (the config is then not even parsed)."""
    path = call.spec_path
    raw = spec_mod.read_bytes(path)
    doc = spec_mod.parse_document(path, raw)
    if not may_request_gpu(doc, config_option):
        return None
    config = config_mod.load(config_option)
    spec = spec_mod.from_document(path, doc)
    evaluation = evaluate(spec, config, before_create=True)
    # No pid before create: the lease is bound to the bundle until nvhook's prestart
    # hook (inserted below) records the container's init pid.
    bundle = (call.bundle or path.parent).absolute()
    holder = Holder(call.container_id or "", str(bundle), None, None)
    evaluation, leased = lease_step.acquire(evaluation, config, holder)
    record(config, evaluation, call.container_id or "", f"runtime-{call.subcommand}",
           leased.as_json() if leased is not None else None)
    new = decided_document(evaluation)
    if wants_nvidia_hook(evaluation, new, config):
        new = with_prestart_hook(new, nvhook_executable(), config)
    if leased is not None and leased.held:
        new = with_poststop_hook(new, nvhook_executable(), config)
    if new != spec.doc:
        spec_mod.write_atomic(path, new)
    return config.runtime_path


def _refuse_self(path: Path) -> None:
    """runtime.path pointing back at nvhook would exec itself forever."""
    own = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    # nvhook-runc is the wrapper `nvhook install --engine containerd` writes.
    if path.name.startswith("nvhook") or (own is not None and path.resolve() == own):
        raise DelegateError(f"runtime.path: {path} is nvhook itself; name the low-level "
                            "runtime (runc, crun)")
