"""The hook's command line and nvhook's own config, read with the stdlib alone.

Every container on the node runs the hook, so this is what the fast path, the
typer-free hook path, the shim and the CLI share. Nothing here may import more
than the stdlib at module level.
"""

from __future__ import annotations

import os

# Stages where NVIDIA's hook does nothing (exit 0), and so does nvhook.
NOOP_STAGES = frozenset({"poststart"})
# Stages NVIDIA's hook refuses (exit 2): nvhook refuses them too, with one line. A
# silent exit 0 there would make a gate registered at the wrong stage fail open;
# and createContainer runs inside the container's mount namespace, where acting is
# never safe.
REFUSED_STAGES = frozenset({"createContainer", "startContainer"})
# poststop releases the container's GPU leases; a container that asked for no GPU
# leaves there on the fast path, without touching the lease table.
HOOK_STAGES = frozenset({"prestart", "createRuntime", "poststop"})
MAX_CONFIG_BYTES = 1 << 20  # config.MAX_CONFIG_BYTES (a test keeps them equal)


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


def stage_word(argv: list[str]) -> str | None:
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


def plain_hook_call(argv: list[str], stage: str) -> bool:
    """Only the stage word and ``--config PATH``: what engines run. Anything else
    (``prestart --help``, a typo) goes to the CLI, which prints help or refuses it,
    instead of the hook reading stdin and ignoring the extra words."""
    skip = seen = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif arg.startswith("--config="):
            continue
        elif arg == stage and not seen:
            seen = True
        else:
            return False
    return True


def config_option(argv: list[str]) -> str | None:
    """``--config PATH`` from argv, else $NVHOOK_CONFIG, else None (the default path)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.removeprefix("--config=")
    return os.environ.get("NVHOOK_CONFIG") or None


def swarm_names(config_option: str | None) -> tuple[str, ...] | None:
    """Extra variable names that ask for GPUs (None: a config is broken, take the full
    path). Both configs count: nvhook's ``[request] swarm-resource`` and NVIDIA's own
    ``swarm-resource``, which NVIDIA's hook reads instead of NVIDIA_VISIBLE_DEVICES (a
    container naming only such a variable still gets GPUs). Each file is parsed only
    when it mentions ``swarm-resource`` (nvhook's also for a ``-config`` delegate
    argument), so the common case costs one small read per file."""
    from nvhook import bounded

    path = config_option or "/etc/nvhook/config.toml"
    try:
        data = bounded.read(path, MAX_CONFIG_BYTES)
    except bounded.Refused:
        return None  # too large, a FIFO, ...: the full path refuses it in its own words
    except OSError:
        data = b""
    names: tuple[str, ...] = ()
    delegate_args: tuple[str, ...] = ()
    if _mentions(data, b"swarm-resource") or _mentions(data, b"-config"):
        from pathlib import Path

        from nvhook.config import parse
        from nvhook.errors import NvhookError

        try:
            config = parse(data, Path(path))
        except NvhookError:
            return None
        names, delegate_args = config.swarm_resource, config.delegate.args
    nvidia = nvidia_swarm_names(delegate_args)
    return None if nvidia is None else names + nvidia


def nvidia_swarm_names(delegate_args: tuple[str, ...]) -> tuple[str, ...] | None:
    """NVIDIA's ``swarm-resource`` names, from the config.toml its hook will read."""
    from nvhook import bounded
    from nvhook.nvidia.paths import MAX_CONFIG_BYTES as MAX_NVIDIA_BYTES
    from nvhook.nvidia.paths import candidate_paths

    paths, _ = candidate_paths(delegate_args)
    for candidate in paths:
        try:
            data = bounded.read(candidate, MAX_NVIDIA_BYTES)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        if not _mentions(data, b"swarm-resource"):
            return ()
        from nvhook.errors import NvhookError
        from nvhook.nvidia.config import parse

        try:
            return parse(data, candidate).swarm_resource
        except NvhookError:
            return None
    return ()


def _mentions(data: bytes, word: bytes) -> bool:
    """``word`` may be in the file: literally, or spelled with a TOML ``\\u`` escape
    in a quoted key (then parse to be sure)."""
    return word in data or b"\\u" in data or b"\\U" in data
