"""The hook's no-GPU test, on the raw parsed config.json.

Imports nothing: ``entry``'s fast path runs it for every container on the node
before anything else is loaded (``spec`` costs ~10 ms of imports, mostly
``dataclasses``). ``spec.may_request_gpu`` is this same function.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms on the fast path
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any


def may_request_gpu(doc: Mapping[str, Any], extra_env_names: Sequence[str] = ()) -> bool:
    """Cheap, conservative test: False only when no channel can name a GPU.

    Runs before validation on the hook's fast path, so it tolerates any shape.
    """
    process = doc.get("process")
    env = process.get("env") if isinstance(process, dict) else None
    if isinstance(env, list):
        for entry in env:
            if not isinstance(entry, str):
                return True  # let the full path report the bad entry
            name = entry.partition("=")[0]
            if name.startswith("NVIDIA_") or name == "CUDA_VERSION" or name in extra_env_names:
                return True
    elif env is not None:
        return True
    mounts = doc.get("mounts")
    if isinstance(mounts, list):
        for m in mounts:
            if not isinstance(m, dict) or "nvidia-container-devices" in str(m.get("destination")):
                return True
    elif mounts is not None:
        return True
    annotations = doc.get("annotations")
    if isinstance(annotations, dict):
        if any(str(k).startswith("cdi.k8s.io/") for k in annotations):
            return True
    elif annotations is not None:
        return True
    linux = doc.get("linux")
    devices = linux.get("devices") if isinstance(linux, dict) else None
    if isinstance(devices, list):
        for d in devices:
            if not isinstance(d, dict) or str(d.get("path", "")).startswith("/dev/nvidia"):
                return True
    elif devices is not None:
        return True
    return False
