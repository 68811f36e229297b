"""The hook's command line and nvhook's own config, read with the stdlib alone.

Every container on the node runs the hook, so this is what the fast path, the
typer-free hook path, the shim and the CLI share. Nothing here may import more
than the stdlib at module level.
"""

from __future__ import annotations

import os

# Stages where NVIDIA's hook does nothing, and so does nvhook. createContainer
# runs inside the container's mount namespace: acting there is never safe.
NOOP_STAGES = frozenset({"poststart", "createContainer", "startContainer"})
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
    """Extra variable names that ask for GPUs (None: the config is broken). The
    config is parsed only when it mentions ``swarm-resource``, so the common case
    costs one small read."""
    path = config_option or "/etc/nvhook/config.toml"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError:
        return ()
    if len(data) > MAX_CONFIG_BYTES:
        return None  # the full path refuses it with config.MAX_CONFIG_BYTES' message
    if b"swarm-resource" not in data:
        return ()
    from pathlib import Path

    from nvhook.config import parse
    from nvhook.errors import NvhookError

    try:
        return parse(data, Path(path)).swarm_resource
    except NvhookError:
        return None
