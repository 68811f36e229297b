"""Hand over to NVIDIA's hook: explicit argv, explicit env, the same state bytes on fd 0.

execve replaces nvhook, so the runtime sees the delegate's own exit status and
stderr. Nothing of nvhook's environment (``LD_PRELOAD``, ``PYTHON*``) and nothing
of the container's reaches it: its env is exactly the configured list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from nvhook.errors import DelegateError

# The only PATH nvhook ever hands to a child: never the caller's, never the container's.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DELEGATE_CANDIDATES = ("nvidia-container-runtime-hook", "nvidia-container-toolkit")


@dataclass(frozen=True)
class DelegateSettings:
    """The ``[delegate]`` table: NVIDIA's hook, run after an allow, and its argv and env."""

    path: str | None = None  # None: look up DELEGATE_CANDIDATES; "": policy only
    args: tuple[str, ...] = ("prestart",)
    env: tuple[str, ...] = (f"PATH={SAFE_PATH}",)


def find(settings: DelegateSettings) -> Path | None:
    """The delegate's path; None when ``path = ""`` (policy only). Raises if missing."""
    if settings.path == "":
        return None
    names = (settings.path,) if settings.path else DELEGATE_CANDIDATES
    for name in names:
        found = which(name)
        if found is not None:
            return found
    where = "" if settings.path and os.path.isabs(settings.path) else f" on PATH={SAFE_PATH}"
    raise DelegateError(
        f"delegate.path: NVIDIA's hook is missing ({' or '.join(names)}{where}); "
        'install nvidia-container-toolkit, or set delegate.path = "" for policy only'
    )


def which(name: str) -> Path | None:
    """Look ``name`` up on the fixed safe PATH, never the caller's."""
    candidates = [Path(name)] if os.path.isabs(name) else [
        Path(d) / name for d in SAFE_PATH.split(":")
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def exec_delegate(path: Path, settings: DelegateSettings, state: bytes) -> NoReturn:
    argv = [str(path), *settings.args]
    env = dict(entry.split("=", 1) for entry in settings.env)
    _stdin_from(state)
    try:
        os.execve(path, argv, env)
    except OSError as e:
        raise DelegateError(f"{path}: cannot run NVIDIA's hook: {e.strerror}") from None


def _stdin_from(data: bytes) -> None:
    """Put ``data`` on fd 0. A memfd has no pipe-buffer limit and needs no reader thread."""
    fd = os.memfd_create("oci-state", 0)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 0)
    finally:
        os.close(fd)
