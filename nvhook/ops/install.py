"""`nvhook install`: plan the file changes that register nvhook with an engine, then apply them.

``plan`` only reads; it returns every change as a value (the bytes before and
after), so ``--dry-run`` is a diff of the plan and a re-run whose plan is empty
is a provable no-op. ``apply`` backs each existing file up before it replaces it
atomically. A config file that will not parse is never overwritten: the plan
fails with the file, line and problem instead.

Every key install sets is also recorded as a ``KeyEdit`` (where, what was there,
what it wrote), and ``apply`` keeps that record with the bytes before and after in
``/var/lib/nvhook/install/<engine>.json`` (``STATE_DIR``), so ``nvhook uninstall``
(``ops.uninstall``) can undo exactly this and nothing else.

Reusable with a host-root prefix (``nvhook node install`` builds on this):
``plan(Options(engine, nvhook_path, prefix=HOSTROOT, default=...))`` reads and
plans inside ``HOSTROOT``, ``apply(plan)`` writes there, and every path written
*into* a file is the one the host will use.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shlex
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from nvhook import fileops
from nvhook.config import DEFAULT_PATH, SAFE_PATH
from nvhook.errors import ConfigError, UsageError, WriteError


class Engine(StrEnum):
    PODMAN = "podman"
    CRIO = "crio"
    SARUS = "sarus"
    DOCKER = "docker"
    CONTAINERD = "containerd"


HOOKS_DIRS = (Path("/usr/share/containers/oci/hooks.d"), Path("/etc/containers/oci/hooks.d"))
HOOK_FILE = "nvrw-hook.json"  # sorts before oci-nvidia-hook.json, so nvhook decides first
NVIDIA_HOOK_FILE = "oci-nvidia-hook.json"
DISABLED_SUFFIX = ".nvhook-disabled"
SARUS_HOOKS_DIR = Path("/opt/sarus/etc/hooks.d")
SARUS_HOOK_FILE = "nvhook.json"
DOCKER_CONFIG = Path("/etc/docker/daemon.json")
CONTAINERD_CONFIG = Path("/etc/containerd/config.toml")
RUNC_WRAPPER = Path("/usr/local/bin/nvhook-runc")
RUNTIME_NAME = "nvhook"
STATE_DIR = Path("/var/lib/nvhook/install")
# containerd's CRI default runtime when default_runtime_name is unset, and the runtime table it
# implies when the config has none: removing or shadowing it stops the CRI plugin loading.
CONTAINERD_DEFAULT_RUNTIME = "runc"
RUNC_V2 = "io.containerd.runc.v2"
RUNTIME_CLASS = f"""apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: {RUNTIME_NAME}
handler: {RUNTIME_NAME}
"""
# containerd's CRI runtime table, by config version.
CONTAINERD_CRI = {
    2: ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"),
    3: ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"),
}


class Action(StrEnum):
    WRITE = "write"
    MOVE = "move"
    DELETE = "delete"  # only uninstall: a file install created


class Format(StrEnum):
    JSON = "json"
    TOML = "toml"
    OPAQUE = "opaque"  # a whole file nvhook owns (hook JSON, wrapper script)


@dataclass(frozen=True)
class KeyEdit:
    """One key install set in a JSON/TOML file: enough to undo it and nothing else."""

    keys: tuple[str, ...]
    existed: bool  # whether the key was there before
    old: Any  # its value before (when it existed)
    new: Any  # what install wrote; None for a table install had to create (TABLE)
    table: bool = False  # a container install created: removed again only while empty
    # Kept while its table holds anything else: containerd's implied runc, written out, must
    # stay once other runtimes are listed, or the CRI plugin's default has no handler.
    needed_by_siblings: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "existed": self.existed, "old": self.old,
                "new": self.new, "table": self.table,
                "needed_by_siblings": self.needed_by_siblings}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KeyEdit:
        return cls(tuple(d["keys"]), bool(d["existed"]), d.get("old"), d.get("new"),
                   bool(d.get("table")), bool(d.get("needed_by_siblings")))


@dataclass(frozen=True)
class Change:
    action: Action
    path: Path  # the file as it lies on disk (prefix applied)
    before: bytes | None  # None: the file does not exist yet
    after: bytes | None  # WRITE: the new bytes
    mode: int = 0o644  # WRITE of a new file
    dest: Path | None = None  # MOVE: where the file goes
    why: str = ""
    fmt: Format = Format.OPAQUE
    edits: tuple[KeyEdit, ...] = ()  # JSON/TOML: the keys set, for uninstall


@dataclass(frozen=True)
class Options:
    engine: Engine
    nvhook_path: Path  # the console script engines will run (never prefixed)
    prefix: Path | None = None
    hooks_dir: Path | None = None
    nvidia_config: Path | None = None
    config_path: Path | None = None  # nvhook's own config; None: the prefixed default
    default: bool = False  # docker/containerd: make nvhook the default runtime


@dataclass(frozen=True)
class Plan:
    engine: Engine
    changes: tuple[Change, ...]
    notes: tuple[str, ...]  # what to do by hand (undo a move, restart a daemon)
    warnings: tuple[str, ...] = ()  # one line each: something still bypasses nvhook
    prefix: Path | None = None

    @property
    def empty(self) -> bool:
        return not self.changes


@dataclass(frozen=True)
class Applied:
    change: Change
    backup: Path | None


def nvhook_executable() -> Path:
    """The installed console script, next to this interpreter if it is there."""
    beside = Path(sys.executable).with_name("nvhook")
    if beside.is_file():
        return beside
    found = shutil.which("nvhook")
    if found is None:
        raise UsageError("cannot find the nvhook console script; pass --nvhook-path")
    return Path(found).absolute()


def under(prefix: Path | None, path: Path) -> Path:
    """``path`` inside ``prefix`` (a DESTDIR-like root); relative paths stay as given."""
    if prefix is None or not path.is_absolute():
        return path
    return prefix / path.relative_to("/")


# -- planning ---------------------------------------------------------------------------


def plan(opts: Options) -> Plan:
    planners: dict[Engine, Callable[[Options], tuple[list[Change], list[str]]]] = {
        Engine.PODMAN: _hooks_d,
        Engine.CRIO: _hooks_d,
        Engine.SARUS: _sarus,
    }
    warnings: list[str] = []
    runtime_path: str | None = None
    if opts.engine is Engine.DOCKER:
        changes, notes, warnings, runtime_path = _docker(opts)
    elif opts.engine is Engine.CONTAINERD:
        changes, notes, warnings, runtime_path = _containerd(opts)
    else:
        changes, notes = planners[opts.engine](opts)
    if opts.default and opts.engine not in (Engine.DOCKER, Engine.CONTAINERD):
        raise UsageError(f"--default: only for docker and containerd, not {opts.engine}")
    if opts.nvidia_config is not None:
        changes += _nvidia_config(under(opts.prefix, opts.nvidia_config))
    changes += _own_config(opts.config_path or under(opts.prefix, DEFAULT_PATH), runtime_path)
    return Plan(opts.engine, tuple(changes), tuple(notes), tuple(warnings), opts.prefix)


def state_path(engine: Engine | str, prefix: Path | None = None) -> Path:
    """Where install records what it did for ``engine`` (read by uninstall)."""
    return under(prefix, STATE_DIR) / f"{Engine(engine).value}.json"


def hook_document(nvhook_path: Path) -> dict[str, Any]:
    """hooks.d/nvrw-hook.json with the installed script's path: valid for hooks.d and Sarus."""
    return {
        "version": "1.0.0",
        "hook": {
            "path": str(nvhook_path),
            "args": ["nvhook", "prestart"],
            "env": [f"PATH={SAFE_PATH}"],
            "timeout": 10,
        },
        "when": {"always": True},
        # poststop releases GPU leases; the same args run there (the state says "stopped").
        "stages": ["prestart", "poststop"],
    }


def _json_bytes(doc: Any, indent: int) -> bytes:
    return (json.dumps(doc, indent=indent) + "\n").encode("utf-8")


def _write(path: Path, after: bytes, why: str, mode: int = 0o644, fmt: Format = Format.OPAQUE,
           edits: tuple[KeyEdit, ...] = ()) -> list[Change]:
    before = fileops.read_optional(path)
    if before == after:
        return []
    return [Change(Action.WRITE, path, before, after, mode=mode, why=why, fmt=fmt, edits=edits)]


def _plain(value: Any) -> Any:
    """A tomlkit item as plain Python (dicts, lists, str, int...), for comparing and JSON."""
    if hasattr(value, "unwrap"):
        return value.unwrap()
    return value


def set_key(doc: Any, keys: tuple[str, ...], value: Any, path: Path,
            make_table: Callable[[], Any] = dict) -> list[KeyEdit]:
    """Set ``keys`` to ``value`` in a JSON dict or tomlkit document, creating the tables on
    the way with ``make_table``; -> what was done, as KeyEdits (nothing when already so)."""
    edits: list[KeyEdit] = []
    table = doc
    for i, key in enumerate(keys[:-1]):
        if key not in table:
            table[key] = make_table()
            edits.append(KeyEdit(keys[: i + 1], False, None, None, table=True))
        table = table[key]
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {'.'.join(keys[: i + 1])}: expected a table; "
                              "left unchanged")
    last = keys[-1]
    existed = last in table
    old = _plain(table[last]) if existed else None
    if existed and old == _plain(value):
        return edits
    table[last] = value
    edits.append(KeyEdit(keys, existed, old, _plain(value)))
    return edits


def _hooks_d(opts: Options) -> tuple[list[Change], list[str]]:
    dirs = [opts.hooks_dir] if opts.hooks_dir else list(HOOKS_DIRS)
    dirs = [under(opts.prefix, d) for d in dirs]
    changes = _write(dirs[0] / HOOK_FILE, _json_bytes(hook_document(opts.nvhook_path), 2),
                     f"{opts.engine} hooks.d entry for nvhook")
    notes: list[str] = []
    for d in dirs:
        nvidia = d / NVIDIA_HOOK_FILE
        if nvidia.exists():
            aside = nvidia.with_name(nvidia.name + DISABLED_SUFFIX)
            if aside.exists():
                raise WriteError(f"{nvidia}: cannot move aside, {aside} already exists")
            changes.append(Change(Action.MOVE, nvidia, None, None, dest=aside,
                                  why="nvhook delegates to NVIDIA's hook; it must not run twice"))
            notes.append(f"to undo: mv {shlex.quote(str(aside))} {shlex.quote(str(nvidia))}")
    return changes, notes


def _sarus(opts: Options) -> tuple[list[Change], list[str]]:
    path = under(opts.prefix, opts.hooks_dir or SARUS_HOOKS_DIR) / SARUS_HOOK_FILE
    changes = _write(path, _json_bytes(hook_document(opts.nvhook_path), 2),
                     "Sarus hook for nvhook")
    problems = sarus_permission_problems(
        path, opts.nvhook_path, opts.prefix, will_write=bool(changes)
    )
    if problems:
        # Sarus refuses such a hook at run time; installing it anyway would look like success.
        raise WriteError("Sarus would reject the hook, nothing written: " + "; ".join(problems))
    return changes, ["Sarus: NVIDIA's own Sarus hook must not also run while nvhook delegates"]


def sarus_permission_problems(
    hook_json: Path, binary: Path, prefix: Path | None, *, will_write: bool
) -> list[str]:
    """Every path Sarus checks that is not root-owned or is group/world-writable."""
    problems: list[str] = []
    # Under --prefix the prefix stands for "/": its own ancestors (/tmp, 1777) are not checked,
    # and a binary staged under the prefix is checked there (packaging), else the live one.
    stop = prefix.absolute() if prefix is not None else None
    staged = under(prefix, binary)
    if staged != binary and staged.exists():
        binary, binary_stop = staged, stop
    else:
        binary_stop = None
    paths = [] if will_write else [hook_json]  # a file install writes gets root 0644
    paths += _existing_ancestors(hook_json.parent, stop)
    paths += [binary, *_existing_ancestors(binary.parent, binary_stop)]
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            if p == binary:
                problems.append(f"{p}: hook binary not found")
            continue
        bad = []
        if st.st_uid != 0:
            bad.append(f"owner uid {st.st_uid}, not root")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            bad.append("group/world-writable")
        if bad:
            problems.append(f"{p}: mode {stat.S_IMODE(st.st_mode):04o} ({', '.join(bad)})")
    return problems


def _existing_ancestors(directory: Path, stop: Path | None) -> list[Path]:
    """``directory`` and its parents that exist, up to ``stop`` (inclusive) or "/"."""
    out = []
    d = directory.absolute()
    while True:
        if d.exists():
            out.append(d)
        if d == stop or d.parent == d:
            return out
        d = d.parent


def _parse_json_object(path: Path, before: bytes | None) -> dict[str, Any]:
    if before is None or not before.strip():
        return {}
    try:
        doc = json.loads(before.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 at byte {e.start}; left unchanged") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}; left unchanged"
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}:1: expected a JSON object; left unchanged")
    why = docker_ambiguity(before.decode("utf-8"))
    if why is not None:
        raise ConfigError(f"{path}: {why}; dockerd (Go) could read the file otherwise than "
                          "nvhook: left unchanged, spell each key once and exactly")
    return doc


# The daemon.json keys nvhook reads or writes, as dockerd's Go structs spell them.
DOCKER_FIELDS = frozenset({"runtimes", "default-runtime", "path", "runtimeArgs"})


def docker_ambiguity(text: str) -> str | None:
    """Why dockerd could read ``text`` otherwise than nvhook (gojson.ambiguity), or None."""
    from nvhook.oci import gojson

    return gojson.ambiguity(text, DOCKER_FIELDS)


def docker_default(doc: dict[str, Any]) -> str:
    """The runtime Docker uses when ``docker run`` names none (dockerd: runc)."""
    value = doc.get("default-runtime")
    return value if isinstance(value, str) and value else "runc"


def _chain_target(name: str, binary: object, args: object) -> tuple[str | None, list[str]]:
    """The runtime nvhook must exec once it replaces ``name`` as the default.
    -> (runtime.path or None for "keep runc"), warnings."""
    if name == "runc" or name == RUNTIME_NAME:
        return None, []
    if not isinstance(binary, str) or not binary:
        return None, [f"the default runtime {name!r} has no path nvhook can exec; "
                      "runtime.path stays as it is"]
    warnings = []
    if args:
        warnings.append(f"the default runtime {name!r} has arguments {args!r} that "
                        "runtime.path cannot carry; wrap them in a script")
    return binary, warnings


def _docker(opts: Options) -> tuple[list[Change], list[str], list[str], str | None]:
    path = under(opts.prefix, DOCKER_CONFIG)
    before = fileops.read_optional(path)
    doc = _parse_json_object(path, before)
    runtimes = doc.get("runtimes", {})
    if not isinstance(runtimes, dict):
        raise ConfigError(f"{path}: runtimes: expected an object; left unchanged")
    wanted = {"path": str(opts.nvhook_path), "runtimeArgs": ["runtime"]}
    edits = set_key(doc, ("runtimes", RUNTIME_NAME), wanted, path)
    previous = docker_default(doc)
    warnings: list[str] = []
    runtime_path = None
    if opts.default:
        entry = runtimes.get(previous) if isinstance(runtimes.get(previous), dict) else {}
        runtime_path, warnings = _chain_target(previous, entry.get("path"),
                                               entry.get("runtimeArgs"))
        edits += set_key(doc, ("default-runtime",), RUNTIME_NAME, path)
        notes = ["restart dockerd; every `docker run` now goes through nvhook"
                 + (f", then {runtime_path}" if runtime_path else "")]
    else:
        notes = [f"restart dockerd, then: docker run --runtime={RUNTIME_NAME} ..."]
        if previous != RUNTIME_NAME:
            warnings.append(f"{path}: the default runtime is {previous!r}: containers "
                            f"without --runtime={RUNTIME_NAME} bypass nvhook (--default "
                            "makes nvhook the default)")
    if not edits:
        return [], notes, warnings, runtime_path
    return (_write(path, _json_bytes(doc, 4), "Docker runtime entry for nvhook",
                   fmt=Format.JSON, edits=tuple(edits)), notes, warnings, runtime_path)


def parse_toml(path: Path, data: bytes) -> Any:
    import tomlkit
    from tomlkit.exceptions import ParseError

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 at byte {e.start}; left unchanged") from None
    try:
        return tomlkit.parse(text)
    except ParseError as e:
        # tomlkit's message ends with "at line L col C"; keep only the problem.
        problem = str(e).split(" at line ")[0]
        raise ConfigError(
            f"{path}:{e.line}:{e.col}: invalid TOML: {problem}; left unchanged"
        ) from None


def _containerd(opts: Options) -> tuple[list[Change], list[str], list[str], str | None]:
    import tomlkit

    path = under(opts.prefix, CONTAINERD_CONFIG)
    wrapper = under(opts.prefix, RUNC_WRAPPER)
    wrapper_text = f'#!/bin/sh\nexec {shlex.quote(str(opts.nvhook_path))} runtime "$@"\n'
    changes = _write(wrapper, wrapper_text.encode(), "containerd's BinaryName: one executable",
                     mode=0o755)
    before = fileops.read_optional(path)
    doc = parse_toml(path, before) if before is not None else tomlkit.document()
    edits: list[KeyEdit] = []
    if "version" not in doc and not doc:
        edits += set_key(doc, ("version",), 2, path)
    version = doc.get("version")
    if version not in CONTAINERD_CRI:
        raise ConfigError(
            f"{path}: version = {version!r}: only containerd config versions 2 and 3 are "
            "supported (run `containerd config migrate`); left unchanged"
        )
    cri = CONTAINERD_CRI[version]
    super_table = lambda: tomlkit.table(is_super_table=True)  # noqa: E731
    containerd_table = doc
    for key in cri[:-1]:
        containerd_table = containerd_table.get(key, {}) if isinstance(containerd_table,
                                                                        dict) else {}
    previous = containerd_table.get("default_runtime_name") if isinstance(
        containerd_table, dict) else None
    previous = _plain(previous) or CONTAINERD_DEFAULT_RUNTIME
    runtimes_now = containerd_table.get("runtimes", {}) if isinstance(containerd_table,
                                                                       dict) else {}
    if previous not in runtimes_now and previous != RUNTIME_NAME:
        if previous != CONTAINERD_DEFAULT_RUNTIME:
            raise ConfigError(f"{path}: default_runtime_name = {previous!r} has no runtime "
                              "table: containerd's CRI plugin would not load; left unchanged")
        # Implied by containerd's defaults: a runtimes table that lacks it would take it away.
        runc = tomlkit.table()
        runc.add("runtime_type", RUNC_V2)
        edits += [dataclasses.replace(e, needed_by_siblings=not e.table) for e in
                  set_key(doc, (*cri, CONTAINERD_DEFAULT_RUNTIME), runc, path, super_table)]
    entry = tomlkit.table()
    entry.add("runtime_type", RUNC_V2)
    options = tomlkit.table()
    options.add("BinaryName", str(RUNC_WRAPPER))
    entry.add("options", options)
    current = runtimes_now.get(RUNTIME_NAME) if isinstance(runtimes_now, dict) else None
    if current is None:
        edits += set_key(doc, (*cri, RUNTIME_NAME), entry, path, super_table)
    else:  # keep the user's other keys in an existing entry
        edits += set_key(doc, (*cri, RUNTIME_NAME, "runtime_type"), RUNC_V2, path, super_table)
        edits += set_key(doc, (*cri, RUNTIME_NAME, "options", "BinaryName"), str(RUNC_WRAPPER),
                         path, tomlkit.table)
    warnings: list[str] = []
    runtime_path = None
    notes = ["restart containerd"]
    if opts.default:
        prev_entry = runtimes_now.get(previous) if isinstance(runtimes_now, dict) else None
        prev_options = _plain(prev_entry.get("options", {})) if isinstance(prev_entry,
                                                                           dict) else {}
        binary = prev_options.get("BinaryName") if isinstance(prev_options, dict) else None
        runtime_path, warnings = (None, []) if previous == RUNTIME_NAME else (
            _chain_target(previous, binary or "runc", None))
        if binary in (None, "", "runc"):
            runtime_path = None
        edits += set_key(doc, (*cri[:-1], "default_runtime_name"), RUNTIME_NAME, path,
                         super_table)
        notes.append("every CRI container now goes through nvhook"
                     + (f", then {runtime_path}" if runtime_path else ""))
    else:
        notes.append("select it on Kubernetes with runtimeClassName: "
                     f"{RUNTIME_NAME} and this RuntimeClass:\n{RUNTIME_CLASS.rstrip()}")
        notes.append(f"or: ctr run --runtime {RUNC_V2} --runc-binary {RUNC_WRAPPER} ...")
        if previous != RUNTIME_NAME:
            warnings.append(f"{path}: the default runtime is {previous!r}: pods without "
                            f"runtimeClassName: {RUNTIME_NAME} bypass nvhook (--default makes "
                            "nvhook the default)")
    if edits:
        changes += _write(path, tomlkit.dumps(doc).encode("utf-8"),
                          "containerd runtime entry for nvhook", fmt=Format.TOML,
                          edits=tuple(edits))
    return changes, notes, warnings, runtime_path


def _nvidia_config(path: Path) -> list[Change]:
    before = fileops.read_optional(path)
    if before is None:
        raise ConfigError(f"{path}: NVIDIA's config.toml not found (--nvidia-config)")
    doc = parse_toml(path, before)
    import tomlkit

    edits: list[KeyEdit] = []
    for table_name, key, value in (
        ("nvidia-container-runtime-hook", "skip-mode-detection", True),
        ("nvidia-container-runtime", "mode", "legacy"),
    ):
        edits += set_key(doc, (table_name, key), value, path, tomlkit.table)
    if not edits:
        return []
    return _write(path, tomlkit.dumps(doc).encode("utf-8"),
                  "NVIDIA's legacy hook must run when delegated (toolkit >= 1.18)",
                  fmt=Format.TOML, edits=tuple(edits))


def _own_config(path: Path, runtime_path: str | None = None) -> list[Change]:
    """nvhook's config: written from the defaults when missing; otherwise only
    ``runtime.path`` is set, when ``--default`` chains to the runtime it replaced."""
    import tomlkit

    from nvhook.ops.config_edit import default_text

    before = fileops.read_optional(path)
    if before is None:
        doc = tomlkit.parse(default_text())
        if runtime_path is not None:
            set_key(doc, ("runtime", "path"), runtime_path, path, tomlkit.table)
        return _write(path, tomlkit.dumps(doc).encode("utf-8"), "nvhook's default config")
    if runtime_path is None:
        return []  # the user's file: install never edits it otherwise (`nvhook config set`)
    doc = parse_toml(path, before)
    edits = set_key(doc, ("runtime", "path"), runtime_path, path, tomlkit.table)
    if not edits:
        return []
    return _write(path, tomlkit.dumps(doc).encode("utf-8"),
                  f"nvhook execs the runtime it replaced as the default ({runtime_path})",
                  fmt=Format.TOML, edits=tuple(edits))


# -- applying and rendering -------------------------------------------------------------


def apply(p: Plan, stamp: str | None = None) -> tuple[Applied, ...]:
    """Back up and apply every change, then record them for uninstall (install only)."""
    done = apply_changes(p.changes, stamp)
    if done:
        record_state(p)
    return done


def apply_changes(changes: tuple[Change, ...], stamp: str | None = None) -> tuple[Applied, ...]:
    stamp = stamp or fileops.utc_stamp()
    done = []
    for change in changes:
        if change.action is Action.MOVE:
            assert change.dest is not None
            fileops.rename(change.path, change.dest)  # the moved file is its own backup
            done.append(Applied(change, None))
            continue
        saved = fileops.backup(change.path, stamp) if change.before is not None else None
        if change.action is Action.DELETE:
            try:
                change.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise WriteError(f"{change.path}: cannot remove: {e.strerror}") from None
        else:
            assert change.after is not None
            fileops.write_atomic(change.path, change.after, change.mode)
        done.append(Applied(change, saved))
    return tuple(done)


def _b64(data: bytes | None) -> str | None:
    import base64

    return None if data is None else base64.b64encode(data).decode("ascii")


def record_state(p: Plan) -> Path:
    """Merge this plan into the engine's install record. A file's first ``before`` and
    each key's first ``old`` are kept, so uninstall goes back to before the first install."""
    path = state_path(p.engine, p.prefix)
    state = read_state(path) or {"engine": p.engine.value, "files": [], "moves": []}
    files = {f["path"]: f for f in state["files"]}
    for c in p.changes:
        if c.action is Action.MOVE:
            state["moves"].append({"src": str(c.path), "dest": str(c.dest)})
            continue
        entry = files.get(str(c.path))
        if entry is None:
            entry = files[str(c.path)] = {"path": str(c.path), "before": _b64(c.before),
                                          "fmt": c.fmt.value, "mode": c.mode, "edits": []}
        entry["after"] = _b64(c.after)
        known = {tuple(e["keys"]) for e in entry["edits"]}
        for e in c.edits:
            if e.keys not in known:
                entry["edits"].append(e.to_json())
            else:  # set again: keep the first old value, take the new one
                for old in entry["edits"]:
                    if tuple(old["keys"]) == e.keys and not old.get("table"):
                        old["new"] = e.new
    state["files"] = list(files.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    fileops.write_atomic(path, _json_bytes(state, 2), 0o600)
    return path


def read_state(path: Path) -> dict[str, Any] | None:
    data = fileops.read_optional(path)
    if data is None:
        return None
    try:
        state = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: install record is not JSON ({e}); left unchanged") from None
    if not isinstance(state, dict) or not isinstance(state.get("files"), list):
        raise ConfigError(f"{path}: not an nvhook install record; left unchanged")
    state.setdefault("moves", [])
    return state


def diff(p: Plan) -> str:
    out: list[str] = []
    for change in p.changes:
        if change.action is Action.MOVE:
            out.append(f"rename {change.path} -> {change.dest}\n")
            continue
        if change.action is Action.DELETE:
            out.append(f"delete {change.path}\n")
        old = (change.before or b"").decode("utf-8", "replace").splitlines(keepends=True)
        new = (change.after or b"").decode("utf-8", "replace").splitlines(keepends=True)
        src = str(change.path) if change.before is not None else "/dev/null"
        out.extend(difflib.unified_diff(old, new, src, str(change.path)))
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
    return "".join(out)
