"""Console-script entry point, with the hook's stdlib-only fast path.

A hooks.d hook runs for every container on the node (no ``when`` condition can
see the env), so a container that cannot be asking for a GPU must cost almost
nothing: read stdin and config.json, scan them, exit 0. Past that point the hook
runs through ``hookmain``, never the typer app; pynvml is imported only when an
inventory is needed, and jsonschema only to word an invalid state's error.
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the fast path
if TYPE_CHECKING:
    from nvhook.hook import Preloaded

# Stages where NVIDIA's hook does nothing, and so does nvhook. createContainer
# runs inside the container's mount namespace: acting there is never safe.
NOOP_STAGES = frozenset({"poststart", "poststop", "createContainer", "startContainer"})
HOOK_STAGES = frozenset({"prestart", "createRuntime"})


def main() -> None:
    argv = normalize_argv(sys.argv[1:])
    stage = _stage_word(argv)
    if stage in NOOP_STAGES:
        sys.exit(0)
    if stage in HOOK_STAGES:
        raw = _read_stdin()
        fast = fast_path(raw, _config_option(argv))
        if fast is True:
            sys.exit(0)
        from nvhook.hookmain import run_hook  # not cli: typer costs ~30 ms of imports

        run_hook(argv, raw, fast or None)
    from nvhook import cli

    cli.run(argv)


def normalize_argv(argv: list[str]) -> list[str]:
    """Accept Sarus's NVIDIA-hook convention ``-config=PATH`` (or ``-config PATH``)."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg.startswith("-config="):
            out += ["--config", arg.removeprefix("-config=")]
        elif arg == "-config":
            out += ["--config", next(it, "")]
        else:
            out.append(arg)
    return out


def _stage_word(argv: list[str]) -> str | None:
    """The first positional argument, skipping ``--config PATH``."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _config_option(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.removeprefix("--config=")
    return os.environ.get("NVHOOK_CONFIG") or None


def _read_stdin() -> bytes:
    try:
        return sys.stdin.buffer.read()
    except (OSError, ValueError, AttributeError):
        return b""


def fast_path(raw: bytes, config_option: str | None) -> bool | Preloaded | None:
    """True: nothing can ask for a GPU, exit 0. Else the parsed documents for the
    full path, or None when anything looked off: the full path then reads
    everything again and reports the problem properly."""
    try:
        if len(raw) > _MAX_STATE_BYTES:
            return None
        # Decode as UTF-8 explicitly: json.loads(bytes) would also take UTF-16/32,
        # which the full path rejects.
        state = json.loads(raw.decode("utf-8"))
        if not _state_looks_valid(state):
            return None
        bundle = state.get("bundle", state.get("bundlePath"))
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.loads(f.read().decode("utf-8"))
        if not isinstance(spec, dict):
            return None
    except (ValueError, OSError, AttributeError, RecursionError):
        return None
    from nvhook.scan import may_request_gpu

    swarm = _swarm_names(config_option)
    if swarm is not None and not may_request_gpu(spec, swarm):
        return True
    from nvhook.hook import Preloaded

    return Preloaded(state, spec)


_MAX_STATE_BYTES = 1 << 20  # nvhook.state.MAX_STATE_BYTES (not imported: it loads more)


def _state_looks_valid(state: object) -> bool:
    """A stdlib mirror of schemas/oci-state.json: anything it would reject goes to the
    full path, which reports it. Exiting 0 here would hide a broken state."""
    if not isinstance(state, dict):
        return False
    if not all(isinstance(state.get(k), str) and state[k] for k in
               ("ociVersion", "id", "status")):
        return False
    paths = [state[k] for k in ("bundle", "bundlePath") if k in state]
    if not paths or not all(isinstance(p, str) and p.startswith("/") for p in paths):
        return False
    pid = state.get("pid", 0)
    if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
        return False
    annotations = state.get("annotations", {})
    return isinstance(annotations, dict) and all(
        isinstance(v, str) for v in annotations.values()
    )


def _swarm_names(config_option: str | None) -> tuple[str, ...] | None:
    """Extra variable names that ask for GPUs (None: the config is broken). The
    config is parsed only when it mentions ``swarm-resource``, so the common case
    costs one small read."""
    path = config_option or "/etc/nvhook/config.toml"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ()
    if b"swarm-resource" not in data:
        return ()
    from pathlib import Path

    from nvhook.config import parse
    from nvhook.errors import NvhookError

    try:
        return parse(data, Path(path)).swarm_resource
    except NvhookError:
        return None
