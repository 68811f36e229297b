"""CDI spec files, read for DRA: which device nodes a fully-qualified CDI name stands for.

Under DRA the kubelet reports a container's devices only as CDI names
(``vendor.com/class=name``), from specs the driver writes to ``/var/run/cdi`` (transient,
one per claim) or ``/etc/cdi``. A spec is ``{"cdiVersion", "kind": "vendor.com/class",
"devices": [{"name", "containerEdits": {"deviceNodes": [...]}}], "containerEdits": {...}}``;
a device's nodes are its own ``deviceNodes`` plus the spec-level ones, as CDI applies them.
Only a node's type and major:minor say what it is (the path is the author's choice);
where a spec leaves them out, CDI takes them from the host's node, and so does this.

Specs are JSON or YAML (CDI writes ``.yaml`` by default). Of the same name in two
directories the later one wins, as in CDI (``/var/run/cdi`` over ``/etc/cdi``); twice in
one directory is a conflict. A name that no readable spec defines is an error, which the
caller turns into a fail-closed denial.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvhook import bounded
from nvhook.errors import AllocationError
from nvhook.oci import gojson

# A spec is a few KiB; a node's spec directories hold a handful of them.
MAX_SPEC_BYTES = 4 * 1024 * 1024
MAX_SPECS = 1024
EXTENSIONS = (".json", ".yaml")


@dataclass(frozen=True)
class Node:
    """One ``deviceNodes`` entry; ``major``/``minor`` None where the spec leaves them out."""

    path: str
    type: str | None
    major: int | None
    minor: int | None
    host_path: str | None = None


@dataclass(frozen=True)
class Spec:
    """One CDI spec file: its kind and its devices' nodes by device name."""

    path: Path
    kind: str
    devices: dict[str, tuple[Node, ...]] = field(compare=False)  # name -> its nodes


@dataclass(frozen=True)
class Resolved:
    """A CDI name and what it stands for: the spec it is in and its char device numbers."""

    name: str
    spec: Path
    nodes: tuple[tuple[str, int, int], ...]  # (container path, major, minor), char nodes


def split_name(name: str) -> tuple[str, str] | None:
    """``vendor.com/class=dev`` -> (``vendor.com/class``, ``dev``), None when not qualified."""
    kind, sep, device = name.partition("=")
    vendor, slash, cls = kind.partition("/")
    if not sep or not device or not slash or not vendor or not cls or "/" in cls:
        return None
    return kind, device


# The fields of CDI's Go types (container-device-interface specs-go) that nvhook reads. The
# CDI library decodes a spec with Go's JSON (YAML through sigs.k8s.io/yaml, which converts
# to JSON first), which matches keys case-insensitively: a spec where that reading and
# Python's could differ is refused, never judged by the wrong reading.
GO_FIELDS = frozenset({"cdiVersion", "kind", "devices", "name", "containerEdits",
                       "deviceNodes", "path", "hostPath", "type", "major", "minor"})


def parse(data: bytes, where: Path) -> Spec:
    """One spec file's content. Raises ``AllocationError`` naming the file and the field."""
    doc = _decode(data, where)
    why = gojson.ambiguity_of(doc, GO_FIELDS)
    if why is not None:
        raise AllocationError(f"CDI spec {where}: {why}; the CDI library (Go) could read the "
                              "spec otherwise than nvhook, so it is not used")
    if not isinstance(doc, dict):
        raise AllocationError(f"CDI spec {where}: expected an object")
    version = doc.get("cdiVersion")
    if not isinstance(version, str) or not version:
        raise AllocationError(f"CDI spec {where}: cdiVersion: expected a string")
    kind = doc.get("kind")
    if not isinstance(kind, str) or split_name(f"{kind}=x") is None:
        raise AllocationError(f"CDI spec {where}: kind: expected vendor/class, got {kind!r}")
    common = _nodes(doc.get("containerEdits"), f"CDI spec {where}: containerEdits")
    raw = doc.get("devices")
    if not isinstance(raw, list) or not raw:
        raise AllocationError(f"CDI spec {where}: devices: expected a non-empty list")
    devices: dict[str, tuple[Node, ...]] = {}
    for i, d in enumerate(raw):
        at = f"CDI spec {where}: devices[{i}]"
        if not isinstance(d, dict):
            raise AllocationError(f"{at}: expected an object")
        name = d.get("name")
        if not isinstance(name, str) or not name or "=" in name:
            raise AllocationError(f"{at}.name: expected a device name, got {name!r}")
        if name in devices:
            raise AllocationError(f"{at}.name: {name!r} defined twice")
        devices[name] = _nodes(d.get("containerEdits"), f"{at}.containerEdits") + common
    return Spec(where, kind, devices)


def _decode(data: bytes, where: Path) -> object:
    if where.suffix == ".json":
        try:
            return json.loads(data, object_pairs_hook=gojson.pairs_hook)
        except (ValueError, RecursionError) as e:
            raise AllocationError(f"CDI spec {where}: not valid JSON: {e}") from None
    import yaml  # YAML specs only (CDI's default encoding)

    try:
        return yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        problem = " ".join(str(e).split())
        raise AllocationError(f"CDI spec {where}: not valid YAML: {problem}") from None


def _nodes(edits: object, at: str) -> tuple[Node, ...]:
    if edits is None:
        return ()
    if not isinstance(edits, dict):
        raise AllocationError(f"{at}: expected an object")
    raw = edits.get("deviceNodes")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise AllocationError(f"{at}.deviceNodes: expected a list")
    out = []
    for i, n in enumerate(raw):
        where = f"{at}.deviceNodes[{i}]"
        if not isinstance(n, dict):
            raise AllocationError(f"{where}: expected an object")
        path, host = n.get("path"), n.get("hostPath")
        if not isinstance(path, str) or not path:
            raise AllocationError(f"{where}.path: expected a path")
        if host is not None and (not isinstance(host, str) or not host):
            raise AllocationError(f"{where}.hostPath: expected a path")
        kind = n.get("type")
        if kind is not None and kind not in ("c", "b", "u", "p"):
            raise AllocationError(f"{where}.type: expected c, b, u or p, got {kind!r}")
        numbers = []
        for key in ("major", "minor"):
            value = n.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise AllocationError(f"{where}.{key}: expected a number, got {value!r}")
            numbers.append(value)
        out.append(Node(path, kind, numbers[0], numbers[1], host))
    return tuple(out)


@dataclass(frozen=True)
class Registry:
    """The specs of the CDI directories, and the files that could not be read."""

    specs: tuple[Spec, ...]
    errors: tuple[str, ...]
    conflicts: dict[str, str] = field(default_factory=dict, compare=False)

    def resolve(self, name: str) -> Resolved:
        """The name's char device nodes. Raises ``AllocationError`` (not found, unreadable,
        conflicting, or a node whose numbers cannot be known)."""
        parts = split_name(name)
        if parts is None:
            raise AllocationError(f"CDI device {name!r} is not a qualified vendor/class=name")
        if name in self.conflicts:
            raise AllocationError(f"CDI device {name}: {self.conflicts[name]}")
        kind, device = parts
        # Later directories take precedence (CDI's priority order).
        spec = next((s for s in reversed(self.specs) if s.kind == kind and device in s.devices),
                    None)
        if spec is None:
            unread = f"; unreadable: {'; '.join(self.errors)}" if self.errors else ""
            raise AllocationError(f"CDI device {name} is in no readable CDI spec{unread}")
        nodes = tuple(n for n in (_numbers(node, name, spec.path)
                                  for node in spec.devices[device]) if n is not None)
        return Resolved(name, spec.path, nodes)


def _numbers(node: Node, name: str, spec: Path) -> tuple[str, int, int] | None:
    """(path, major, minor) of a char node (None: another type); as CDI does, numbers the
    spec leaves out are the host node's."""
    kind, major, minor = node.type, node.major, node.minor
    if kind is None or major is None or minor is None:
        host = node.host_path or node.path
        try:
            st = os.stat(host)
        except OSError as e:
            raise AllocationError(f"CDI device {name} ({spec}): node {host} has no numbers in "
                                  f"the spec and cannot be read: {e.strerror}") from None
        if kind is None:
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else "?"
        if major is None or minor is None:
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    if kind not in ("c", "u"):
        return None
    return node.path, major, minor


def load(dirs: Iterable[Path]) -> Registry:
    """Every ``.json``/``.yaml`` spec of ``dirs`` (a missing directory has none)."""
    specs: list[Spec] = []
    errors: list[str] = []
    conflicts: dict[str, str] = {}
    for d in dirs:
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(EXTENSIONS))
        except FileNotFoundError:
            continue
        except OSError as e:
            errors.append(f"{d}: {e.strerror}")
            continue
        if len(names) > MAX_SPECS:
            errors.append(f"{d}: more than {MAX_SPECS} spec files")
            names = names[:MAX_SPECS]
        here: dict[str, Path] = {}
        for n in names:
            path = d / n
            try:
                spec = parse(bounded.read(path, MAX_SPEC_BYTES), path)
            except AllocationError as e:
                errors.append(str(e).removeprefix("CDI spec "))
                continue
            except OSError as e:  # unreadable, too large, a FIFO or a directory
                errors.append(f"{path}: {e.strerror}")
                continue
            for device in spec.devices:
                qualified = f"{spec.kind}={device}"
                if qualified in here:
                    conflicts[qualified] = f"defined in both {here[qualified]} and {path}"
                else:  # a later directory's definition overrides an earlier one's
                    conflicts.pop(qualified, None)
                here[qualified] = path
            specs.append(spec)
    return Registry(tuple(specs), tuple(errors), conflicts)


def as_json(resolved: Resolved) -> dict[str, Any]:
    return {"name": resolved.name, "spec": str(resolved.spec),
            "nodes": [{"path": p, "major": ma, "minor": mi} for p, ma, mi in resolved.nodes]}
