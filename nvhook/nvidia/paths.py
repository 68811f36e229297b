"""Where NVIDIA's hook finds its config.toml. Stdlib only and no dataclasses: the
hook's fast path uses this for every container on the node."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the fast path
if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_CONFIG_BYTES = 1 << 20  # NVIDIA's default config.toml is ~2 KiB

# NVIDIA's hook_config.go loadConfig, when no -config flag is given: the first that exists.
DEFAULT_PATHS = (
    "/run/nvidia/driver/etc/nvidia-container-runtime/config.toml",
    "/etc/nvidia-container-runtime/config.toml",
)


def config_flag(args: Sequence[str]) -> str | None:
    """``-config`` from NVIDIA's hook argv, parsed as Go's ``flag`` does: ``-config=X``,
    ``--config=X``, ``-config X`` or ``--config X``, before the first non-flag argument;
    the last one given wins."""
    it = iter(args)
    found: str | None = None
    for arg in it:
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name == "config":
            found = value if eq else next(it, "")
    return found or None


def candidate_paths(args: Sequence[str],
                    defaults: Sequence[str] = DEFAULT_PATHS) -> tuple[tuple[str, ...], bool]:
    """(paths to try in order, whether the first must exist)."""
    flag = config_flag(args)
    return ((flag,), True) if flag else (tuple(defaults), False)
