"""The hook's no-GPU test, on the raw parsed state and config.json.

Imports nothing: ``entry``'s fast path runs it for every container on the node
before anything else is loaded (``spec`` costs ~10 ms of imports, mostly
``dataclasses``). ``spec.may_request_gpu`` is this same function.
"""

from __future__ import annotations

import os  # loaded by the interpreter at start-up, like stat: free
import stat

from nvhook.bounded import NotRegular, read_fd
from nvhook.oci.fields import BY_LOWER, OCI_FIELDS

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
    if linux is None:
        return False
    if not isinstance(linux, dict):
        return True
    devices = linux.get("devices")
    if isinstance(devices, list):
        for d in devices:
            if not isinstance(d, dict) or _node_may_be_nvidia(d):
                return True
    elif devices is not None:
        return True
    resources = linux.get("resources")
    rules = resources.get("devices") if isinstance(resources, dict) else None
    if isinstance(rules, list):
        for r in rules:
            if not isinstance(r, dict) or _rule_may_open_nvidia(r):
                return True
    elif rules is not None or (resources is not None and not isinstance(resources, dict)):
        return True
    return False


# Char majors an engine's default devices use (mem, tty, console/ptmx, misc, pts) and
# that are never NVIDIA's. NVIDIA's are 195 (fixed) and the dynamic ones the kernel hands
# nvidia-caps and nvidia-uvm (234-254, 384-511): those, and anything unusual, go to the
# full path, which reads /proc/devices (``gpus.devnodes``).
_STATIC_MAJORS = frozenset({1, 4, 5, 10, 136})


def _node_may_be_nvidia(d: dict) -> bool:
    kind, major, minor = d.get("type"), d.get("major", 0), d.get("minor", 0)
    if kind in ("b", "p"):
        return False
    if type(major) is not int or type(minor) is not int:
        return True  # let the full path report the bad field
    # mknod keeps the low 12 bits of the major (gpus.devnodes.kernel_number).
    return (major & 0xFFF) not in _STATIC_MAJORS


def _rule_may_open_nvidia(r: dict) -> bool:
    allow = r.get("allow")
    if allow is not True:
        return allow is not None and type(allow) is not bool  # the full path says so
    access = r.get("access")
    if not isinstance(access, str) or (access and "r" not in access and "w" not in access):
        return not isinstance(access, str)
    if r.get("type") == "b":
        return False
    major = r.get("major")
    if major is None:
        return True  # every major, 195 included
    if type(major) is not int:
        return True
    return major < 0 or (major & 0xFFFFFFFF) not in _STATIC_MAJORS


class GoWouldDiffer(ValueError):
    """A key Go's JSON could read otherwise than Python's: leave it to the full path."""


def loads_spec(text: str) -> Any:
    """``json.loads`` for the fast path, raising ValueError (the fast path then hands the
    document to the full path, which refuses it with its place named) wherever
    ``gojson.check`` could object: a coarse, cheap version of it.

    Costs a substring search over the text and, per object, a dict, a set and one set
    lookup per key: a spec written by an engine passes all of them.
    """
    if _has_surrogate_escape(text):
        raise GoWouldDiffer("a surrogate escape")  # lone ones are refused; pairs are rare
    return _loads(text)


class _Decoder:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``: the same hooks."""

    strict = True
    object_hook = None
    memo: dict[str, str]

    def __init__(self) -> None:
        self.object_pairs_hook = _pairs
        self.parse_int = _int
        self.parse_float = _float
        self.parse_constant = _constant
        self.memo = {}


def _loads(text: str) -> Any:
    """``json.loads(text, <the hooks above>)`` through the C scanner that ``json`` itself
    uses, without importing ``json``: ``json.decoder`` imports ``re``, which costs about
    as much as the interpreter's start (measured on a regular install). Same scanner, same
    hooks, same whitespace rule (space, tab, newline, return); any failure or trailing data
    goes to ``json.loads`` itself, so it accepts and returns exactly what that does."""
    try:
        from _json import make_scanner

        scan = make_scanner(_Decoder())
        start = len(text) - len(text.lstrip(_WS))
        doc, end = scan(text, start)
        if not text[end:].strip(_WS):
            return doc
    except GoWouldDiffer:
        raise
    except Exception:  # any failure: json.loads itself words the error
        pass
    # The error path (and an interpreter without _json): json.loads, for its exact error.
    # (The C scanner raises json.decoder's error type, so it needs json imported anyway.)
    import json

    return json.loads(text, object_pairs_hook=_pairs, parse_int=_int, parse_float=_float,
                      parse_constant=_constant)


_WS = " \t\n\r"


def _has_surrogate_escape(text: str) -> bool:
    """Whether a ``\\uD...`` escape occurs (all surrogates, and a few letters the full
    path then reads as usual). Hops from backslash to backslash
    (a one-character find is a memchr: ~0.3 ms for 10 MiB, where a find of the
    three-character ``\\ud`` takes ~9 ms), skipping the escaped character each time."""
    i = text.find("\\")
    while i >= 0:
        if text[i + 1 : i + 3] in ("ud", "uD"):
            return True
        i = text.find("\\", i + 2)
    return False


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Repeated keys, two keys Go folds together (ASCII case; any non-ASCII key may fold
    # under Unicode folding), a field name in another case.
    obj = dict(pairs)
    if len(obj) != len(pairs) or len({key.lower() for key in obj}) != len(obj):
        raise GoWouldDiffer
    for key in obj:
        if key not in OCI_FIELDS and (not key.isascii() or key.lower() in BY_LOWER):
            raise GoWouldDiffer
    return obj


def _int(text: str) -> int:
    if len(text) > 100:  # gojson.MAX_INT_DIGITS
        raise GoWouldDiffer
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if value in (INF, -INF):
        raise GoWouldDiffer
    return value


def _constant(name: str) -> float:
    raise GoWouldDiffer(name)  # NaN, Infinity: not JSON to Go


INF = float("inf")


def read_regular(path: str) -> bytes:
    """The bytes of ``path``, which must be a regular file and not a symbolic link.

    A FIFO could hand one document to nvhook and another to NVIDIA's hook, and would
    block a plain open; a device is no spec. Raises OSError: ELOOP for a symlink,
    ``NotRegular``, ``TooLarge`` past ``MAX_SPEC_BYTES``. ``lstat`` first, so a device node
    or FIFO is never opened at all; the ``O_NOFOLLOW`` open and the ``fstat`` of the
    descriptor are the checks that count (the path can change in between).
    """
    kind = stat.S_IFMT(os.lstat(path).st_mode)
    if kind != stat.S_IFREG:
        raise NotRegular(path, kind)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind != stat.S_IFREG:
            raise NotRegular(path, kind)
        return read_fd(fd, path, MAX_SPEC_BYTES)  # a size check after fstat: cheap
    finally:
        os.close(fd)


MAX_STATE_BYTES = 1 << 20  # real states are a few hundred bytes
# runc's own config.json is ~3 KiB, a Kubernetes pod's tens of KiB (env and mounts are
# bounded by the kernel's exec limits): a bigger one is not a spec.
MAX_SPEC_BYTES = 16 << 20


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
