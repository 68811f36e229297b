"""NVIDIA's own ``config.toml``, read-only, as NVIDIA's hook reads it.

NVIDIA's hook decides which channel of a container it reads (volume mounts or the
env), whether an unprivileged container's env counts, which env names replace
``NVIDIA_VISIBLE_DEVICES`` (``swarm-resource``) and which driver capabilities exist
from this file, not from the container. A gate that does not read it cannot know
what NVIDIA will attach (FIELD.md §4).

Where the file is (NVIDIA's ``hook_config.go`` ``loadConfig``): the ``-config`` flag in
the hook's argv, which must then exist; else the first of
``/run/nvidia/driver/etc/nvidia-container-runtime/config.toml`` and
``/etc/nvidia-container-runtime/config.toml`` that exists; else NVIDIA's defaults.
A key missing from the file keeps its default, as NVIDIA overlays the file on them.

Read with stdlib ``tomllib`` only, and only on the GPU path.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nvhook import bounded
from nvhook.errors import ConfigError
from nvhook.nvidia.paths import DEFAULT_PATHS, MAX_CONFIG_BYTES, candidate_paths

# NVIDIA's image.SupportedDriverCapabilities, in its order.
ALL_DRIVER_CAPABILITIES = (
    "compute", "compat32", "graphics", "utility", "video", "display", "ngx",
)

ACCEPT_ENV_UNPRIVILEGED = "accept-nvidia-visible-devices-envvar-when-unprivileged"
ACCEPT_VOLUME_MOUNTS = "accept-nvidia-visible-devices-as-volume-mounts"
SWARM_RESOURCE = "swarm-resource"
SUPPORTED_CAPABILITIES = "supported-driver-capabilities"
IGNORE_IMEX = "features.ignore-imex-channel-requests"
RUNTIME_MODE = "nvidia-container-runtime.mode"
SKIP_MODE_DETECTION = "nvidia-container-runtime-hook.skip-mode-detection"


class NvidiaConfigError(ConfigError):
    """NVIDIA's config.toml is unreadable or invalid: a GPU request is refused (exit 4)."""


@dataclass(frozen=True)
class NvidiaConfig:
    """The settings of NVIDIA's hook that change what it attaches. Defaults are NVIDIA's."""

    path: str | None = None  # the file read; None: none found, NVIDIA's defaults
    accept_env_unprivileged: bool = True
    accept_volume_mounts: bool = False
    swarm_resource: tuple[str, ...] = ()
    supported_driver_capabilities: tuple[str, ...] = ALL_DRIVER_CAPABILITIES
    ignore_imex_requests: bool = False
    mode: str = "auto"  # nvidia-container-runtime.mode: the legacy hook runs only in legacy
    skip_mode_detection: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            ACCEPT_ENV_UNPRIVILEGED: self.accept_env_unprivileged,
            ACCEPT_VOLUME_MOUNTS: self.accept_volume_mounts,
            SWARM_RESOURCE: list(self.swarm_resource),
            SUPPORTED_CAPABILITIES: list(self.supported_driver_capabilities),
            IGNORE_IMEX: self.ignore_imex_requests,
            RUNTIME_MODE: self.mode,
            SKIP_MODE_DETECTION: self.skip_mode_detection,
        }


def load(args: Sequence[str], defaults: Sequence[str] = DEFAULT_PATHS) -> NvidiaConfig:
    """NVIDIA's settings for a hook run with ``args``. Raises ``NvidiaConfigError``."""
    paths, required = candidate_paths(args, defaults)
    for path in paths:
        try:
            data = bounded.read(path, MAX_CONFIG_BYTES)
        except FileNotFoundError:
            if required:
                raise NvidiaConfigError(
                    f"{path}: NVIDIA's config file (-config in delegate.args) does not exist"
                ) from None
            continue
        except OSError as e:
            raise NvidiaConfigError(
                f"{path}: cannot read NVIDIA's config file: {e.strerror or e}") from None
        return parse(data, path)
    return NvidiaConfig()


def parse(data: bytes, path: str) -> NvidiaConfig:
    if len(data) > MAX_CONFIG_BYTES:
        raise NvidiaConfigError(f"{path}: NVIDIA's config file is larger than "
                                f"{MAX_CONFIG_BYTES} bytes")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise NvidiaConfigError(f"{path}: NVIDIA's config file is not UTF-8 at byte {e.start}"
                                ) from None
    except tomllib.TOMLDecodeError as e:
        raise NvidiaConfigError(f"{path}: NVIDIA's config file is invalid TOML: {e}") from None
    return _Reader(path, doc).config()


class _Reader:
    def __init__(self, path: str, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc

    def fail(self, key: str, problem: str) -> NvidiaConfigError:
        return NvidiaConfigError(f"{self.path}: {key}: {problem} (NVIDIA's config file)")

    def get(self, dotted: str) -> Any:
        node: Any = self.doc
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def string(self, key: str, default: str) -> str:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {value!r}")
        return value

    def config(self) -> NvidiaConfig:
        # NVIDIA's getSwarmResourceEnvvars: split on ",", trim, drop empties.
        swarm = tuple(n.strip() for n in self.string(SWARM_RESOURCE, "").split(",")
                      if n.strip())
        caps = self.string(SUPPORTED_CAPABILITIES, "all")
        if caps == "all":
            supported = ALL_DRIVER_CAPABILITIES
        else:
            items = [c.strip() for c in caps.split(",") if c.strip()]
            unknown = [c for c in items if c not in ALL_DRIVER_CAPABILITIES]
            if unknown:
                # NVIDIA's hook panics on such a value: every GPU container would fail.
                raise self.fail(SUPPORTED_CAPABILITIES,
                                f"unknown capabilities {', '.join(unknown)} (NVIDIA's hook "
                                "refuses to start with them)")
            supported = tuple(c for c in ALL_DRIVER_CAPABILITIES if c in items)
        return NvidiaConfig(
            path=self.path,
            accept_env_unprivileged=self.boolean(ACCEPT_ENV_UNPRIVILEGED, True),
            accept_volume_mounts=self.boolean(ACCEPT_VOLUME_MOUNTS, False),
            swarm_resource=swarm,
            supported_driver_capabilities=supported,
            ignore_imex_requests=self.boolean(IGNORE_IMEX, False),
            mode=self.string(RUNTIME_MODE, "auto"),
            skip_mode_detection=self.boolean(SKIP_MODE_DETECTION, False),
        )
