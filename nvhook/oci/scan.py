"""The hook's no-GPU test, on the raw parsed state and config.json.

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


MAX_STATE_BYTES = 1 << 20  # real states are a few hundred bytes


def state_looks_valid(state: object) -> bool:
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
