"""A read view of a bundle's ``config.json`` and its atomic write-back.

Stdlib only: the hook's fast path loads the spec before it knows whether the
container asks for a GPU at all.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvhook.bounded import NotRegular
from nvhook.errors import SpecError, WriteError
from nvhook.oci import gojson
from nvhook.oci.scan import MAX_SPEC_BYTES, read_regular
from nvhook.oci.scan import may_request_gpu as may_request_gpu  # lives there: see nvhook/scan.py

CONFIG_NAME = "config.json"
# What NVIDIA's hook reads as "devices requested through volume mounts".
DEVICE_MOUNT_ROOT = "/var/run/nvidia-container-devices"
_TMP_PREFIX = f".{CONFIG_NAME}.nvhook-"


@dataclass(frozen=True)
class Mount:
    """A ``mounts`` entry of the spec, as far as a request reads it."""

    source: str
    destination: str


INT64 = (-(1 << 63), (1 << 63) - 1)
UINT32 = (0, (1 << 32) - 1)


@dataclass(frozen=True)
class DeviceNode:
    """A ``linux.devices`` entry, as Go reads it (``major``/``minor`` int64, absent = 0).

    The path is the spec author's choice; only type and number say which device it is.
    """

    index: int  # its position in linux.devices, for labels and rewrites
    path: str
    type: str
    major: int
    minor: int
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None

    @property
    def label(self) -> str:
        return f"linux.devices[{self.index}] {self.path} ({self.type} {self.major}:{self.minor})"


@dataclass(frozen=True)
class DeviceRule:
    """A ``linux.resources.devices`` cgroup rule. ``major``/``minor`` None: absent (runc reads
    absent as -1, the wildcard); ``type`` "" reads as "a" (all)."""

    index: int
    allow: bool
    type: str
    major: int | None
    minor: int | None
    access: str

    @property
    def label(self) -> str:
        def number(n: int | None) -> str:
            return "*" if n is None or n < 0 else str(n)

        verb = "allow" if self.allow else "deny"
        kind = self.type or "a"
        return (f"linux.resources.devices[{self.index}] {verb} {kind} "
                f"{number(self.major)}:{number(self.minor)} {self.access}")


@dataclass(frozen=True, eq=False)
class Spec:
    """The parts of an OCI runtime spec that can ask for a GPU.

    ``env`` keeps the entries exactly as written, duplicates and all, because
    NVIDIA's hook lets the last duplicate win while glibc's getenv sees the first.
    ``doc`` is the whole parsed document, for write-back.
    """

    path: Path
    doc: dict[str, Any]
    env: tuple[str, ...]
    bounding_caps: frozenset[str]
    mounts: tuple[Mount, ...]
    annotations: Mapping[str, str]
    device_nodes: tuple[DeviceNode, ...]
    device_rules: tuple[DeviceRule, ...]
    root_path: str | None

    @property
    def bundle(self) -> Path:
        return self.path.parent

    @property
    def device_paths(self) -> tuple[str, ...]:
        return tuple(d.path for d in self.device_nodes)


def read_bytes(path: Path) -> bytes:
    """The file's bytes; it must be a regular file, not a symlink, FIFO or device
    (``scan.read_regular``, which the fast path uses too)."""
    try:
        return read_regular(str(path))
    except NotRegular as e:
        if e.kind == stat.S_IFDIR:
            raise SpecError(f"{path}: is a directory, expected the OCI config.json") from None
        raise SpecError(f"{path}: is {e.what}; nvhook reads the spec only from a regular "
                        "file (a FIFO or a link can serve another document to the next "
                        "reader)") from None
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file (is the bundle path right?)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SpecError(f"{path}: is a symbolic link; nvhook reads the spec only from "
                            "a regular file") from None
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None


def parse_document(path: Path, data: bytes) -> dict[str, Any]:
    if len(data) > MAX_SPEC_BYTES:  # stdin (precreate) is read to one byte more than this
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES} bytes, not an OCI config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 at byte {e.start}") from None
    if "\x00" in text:
        raise SpecError(f"{path}: contains a NUL byte at offset {text.index(chr(0))}")
    try:
        doc = gojson.loads(text, str(path))  # refuses what Go's JSON would read otherwise
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise SpecError(f"{path}: not valid JSON: {e.msg} ({where})") from None
    except RecursionError:
        raise SpecError(f"{path}: JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: expected a JSON object, got {_kind(doc)}")
    return doc


def load(bundle: Path) -> Spec:
    path = bundle / CONFIG_NAME
    return from_document(path, parse_document(path, read_bytes(path)))


def from_preloaded(path: Path, doc: dict[str, Any]) -> Spec:
    """A document the hook's fast path parsed: its coarse key check ran already (it
    refuses repeated keys), so ``gojson.check`` does the rest here."""
    gojson.check(doc, str(path))
    return from_document(path, doc)


def from_document(path: Path, doc: dict[str, Any]) -> Spec:
    """Validate the fields nvhook reads; a wrong type names its field."""
    process = _field(path, doc, "process", dict, {})
    env = _string_list(path, process, "env", "process.env")
    caps = _field(path, process, "capabilities", dict, {}, "process.capabilities")
    bounding = _string_list(path, caps, "bounding", "process.capabilities.bounding")
    mounts = []
    for i, m in enumerate(_field(path, doc, "mounts", list, [])):
        where = f"mounts[{i}]"
        if not isinstance(m, dict):
            raise SpecError(f"{path}: {where}: expected an object, got {_kind(m)}")
        source = _field(path, m, "source", str, "", f"{where}.source")
        destination = _field(path, m, "destination", str, "", f"{where}.destination")
        mounts.append(Mount(source, destination))
    annotations = _field(path, doc, "annotations", dict, {})
    for key, value in annotations.items():
        if not isinstance(value, str):
            raise SpecError(f"{path}: annotations.{key}: expected a string, got {_kind(value)}")
    linux = _field(path, doc, "linux", dict, {})
    nodes, rules = _devices(path, linux)
    root = _field(path, doc, "root", dict, {})
    root_path = _field(path, root, "path", str, None, "root.path")
    return Spec(
        path=path,
        doc=doc,
        env=tuple(env),
        bounding_caps=frozenset(bounding),
        mounts=tuple(mounts),
        annotations=dict(annotations),
        device_nodes=nodes,
        device_rules=rules,
        root_path=root_path,
    )


def _devices(path: Path, linux: Mapping[str, Any]
             ) -> tuple[tuple[DeviceNode, ...], tuple[DeviceRule, ...]]:
    """``linux.devices`` and ``linux.resources.devices`` with the types Go decodes them into
    (runtime-spec's LinuxDevice and LinuxDeviceCgroup): a value Go would refuse is refused
    here with its field named, so nvhook never judges a document runc reads otherwise."""
    nodes = []
    for i, d in enumerate(_field(path, linux, "devices", list, [], "linux.devices")):
        at = f"linux.devices[{i}]"
        if not isinstance(d, dict):
            raise SpecError(f"{path}: {at}: expected an object, got {_kind(d)}")
        nodes.append(DeviceNode(
            index=i,
            path=_field(path, d, "path", str, "", f"{at}.path"),
            type=_field(path, d, "type", str, "", f"{at}.type"),
            major=_integer(path, d, "major", at, INT64, 0),
            minor=_integer(path, d, "minor", at, INT64, 0),
            file_mode=_integer(path, d, "fileMode", at, UINT32, None),
            uid=_integer(path, d, "uid", at, UINT32, None),
            gid=_integer(path, d, "gid", at, UINT32, None),
        ))
    resources = _field(path, linux, "resources", dict, {}, "linux.resources")
    rules = []
    for i, r in enumerate(_field(path, resources, "devices", list, [],
                                 "linux.resources.devices")):
        at = f"linux.resources.devices[{i}]"
        if not isinstance(r, dict):
            raise SpecError(f"{path}: {at}: expected an object, got {_kind(r)}")
        rules.append(DeviceRule(
            index=i,
            allow=_field(path, r, "allow", bool, False, f"{at}.allow"),
            type=_field(path, r, "type", str, "", f"{at}.type"),
            major=_integer(path, r, "major", at, INT64, None),
            minor=_integer(path, r, "minor", at, INT64, None),
            access=_field(path, r, "access", str, "", f"{at}.access"),
        ))
    return tuple(nodes), tuple(rules)


def _integer(path: Path, obj: Mapping[str, Any], key: str, at: str,
             bounds: tuple[int, int], default: int | None) -> int | None:
    """An integer field as Go decodes it: a JSON float (``1.0``) or a value out of the Go
    type's range is an error there, so it is one here."""
    value = _field(path, obj, key, int, default, f"{at}.{key}")
    if value is not None and not bounds[0] <= value <= bounds[1]:
        kind = "int64" if bounds == INT64 else "uint32"
        raise SpecError(f"{path}: {at}.{key}: {value} is out of range for {kind}")
    return value


def write_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``doc`` so that a reader sees the old or the new file, never a mix.

    The file keeps its mode and owner (``fileops.write_atomic``); temp files left by
    a writer that was killed are swept first.
    """
    from nvhook.fileops import write_atomic as write_bytes

    if not path.is_file():
        raise WriteError(f"{path}: cannot rewrite: the file is gone")
    data = encode(path, doc)  # before anything is touched: a failure leaves the file as it was
    sweep_temp_files(path.parent)
    write_bytes(path, data)


def encode(path: Path, doc: Mapping[str, Any]) -> bytes:
    """``doc`` as compact UTF-8 JSON. ``gojson`` refuses what cannot be encoded (lone
    surrogates, NaN), so a failure here is a bug; it still gets one line, not a trace."""
    try:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError) as e:
        raise WriteError(f"{path}: cannot encode the decided spec ({e}); "
                         "file left as it was") from None


def sweep_temp_files(directory: Path) -> None:
    """Remove temp files left by writers that no longer run."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(_TMP_PREFIX) and name.endswith(".tmp")):
            continue
        # fileops names them .<name>.nvhook-<pid>-<random>.tmp
        pid_text = name[len(_TMP_PREFIX) : -len(".tmp")].partition("-")[0]
        if pid_text.isdigit() and _alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        with contextlib.suppress(OSError):
            os.unlink(directory / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _field(path: Path, obj: Mapping[str, Any], key: str, kind: type, default: Any,
           where: str | None = None) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SpecError(
            f"{path}: {where or key}: expected {_kind_name(kind)}, got {_kind(value)}"
        )
    return value


def _string_list(path: Path, obj: Mapping[str, Any], key: str, where: str) -> list[str]:
    values = _field(path, obj, key, list, [], where)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise SpecError(f"{path}: {where}[{i}]: expected a string, got {_kind(v)}")
    return values


def _kind_name(kind: type) -> str:
    return {dict: "an object", list: "an array", str: "a string", int: "an integer",
            bool: "a boolean"}.get(
        kind, kind.__name__
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "an object", list: "an array", str: "a string", bool: "a boolean",
        int: "a number", float: "a number",
    }.get(type(value), type(value).__name__)
