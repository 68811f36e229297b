"""`nvhook install`: plan the file changes that register nvhook with an engine, then apply them.

``plan`` only reads; it returns every change as a value (the bytes before and
after), so ``--dry-run`` is a diff of the plan and a re-run whose plan is empty
is a provable no-op. ``apply`` backs each existing file up before it replaces it
atomically. A config file that will not parse is never overwritten: the plan
fails with the file, line and problem instead.
"""

from __future__ import annotations

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
# containerd's CRI runtime table, by config version.
CONTAINERD_CRI = {
    2: ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"),
    3: ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"),
}


class Action(StrEnum):
    WRITE = "write"
    MOVE = "move"


@dataclass(frozen=True)
class Change:
    action: Action
    path: Path  # the file as it lies on disk (prefix applied)
    before: bytes | None  # None: the file does not exist yet
    after: bytes | None  # WRITE: the new bytes
    mode: int = 0o644  # WRITE of a new file
    dest: Path | None = None  # MOVE: where the file goes
    why: str = ""


@dataclass(frozen=True)
class Options:
    engine: Engine
    nvhook_path: Path  # the console script engines will run (never prefixed)
    prefix: Path | None = None
    hooks_dir: Path | None = None
    nvidia_config: Path | None = None
    config_path: Path | None = None  # nvhook's own config; None: the prefixed default


@dataclass(frozen=True)
class Plan:
    engine: Engine
    changes: tuple[Change, ...]
    notes: tuple[str, ...]  # what to do by hand (undo a move, restart a daemon)

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
        Engine.DOCKER: _docker,
        Engine.CONTAINERD: _containerd,
    }
    changes, notes = planners[opts.engine](opts)
    if opts.nvidia_config is not None:
        changes += _nvidia_config(under(opts.prefix, opts.nvidia_config))
    changes += _own_config(opts.config_path or under(opts.prefix, DEFAULT_PATH))
    return Plan(opts.engine, tuple(changes), tuple(notes))


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
        "stages": ["prestart"],
    }


def _json_bytes(doc: Any, indent: int) -> bytes:
    return (json.dumps(doc, indent=indent) + "\n").encode("utf-8")


def _write(path: Path, after: bytes, why: str, mode: int = 0o644) -> list[Change]:
    before = fileops.read_optional(path)
    if before == after:
        return []
    return [Change(Action.WRITE, path, before, after, mode=mode, why=why)]


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


def _docker(opts: Options) -> tuple[list[Change], list[str]]:
    path = under(opts.prefix, DOCKER_CONFIG)
    before = fileops.read_optional(path)
    doc: dict[str, Any] = {}
    if before is not None and before.strip():
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
    runtimes = doc.get("runtimes", {})
    if not isinstance(runtimes, dict):
        raise ConfigError(f"{path}: runtimes: expected an object; left unchanged")
    wanted = {"path": str(opts.nvhook_path), "runtimeArgs": ["runtime"]}
    notes = [f"restart dockerd, then: docker run --runtime={RUNTIME_NAME} ..."]
    if runtimes.get(RUNTIME_NAME) == wanted:
        return [], notes
    doc["runtimes"] = {**runtimes, RUNTIME_NAME: wanted}
    return _write(path, _json_bytes(doc, 4), "Docker runtime entry for nvhook"), notes


def _parse_toml(path: Path, data: bytes) -> Any:
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


def _table_at(doc: Any, keys: tuple[str, ...], path: Path) -> Any:
    """The table at ``keys``, created as header-less super tables where missing."""
    import tomlkit

    table = doc
    for i, key in enumerate(keys):
        if key not in table:
            table[key] = tomlkit.table(is_super_table=True)
        table = table[key]
        if not isinstance(table, dict):
            where = ".".join(keys[: i + 1])
            raise ConfigError(f"{path}: {where}: expected a table; left unchanged")
    return table


def _set(table: Any, key: str, value: Any) -> None:
    """Assign only when different, so a re-run re-renders nothing."""
    current = table.get(key)
    if (current.unwrap() if hasattr(current, "unwrap") else current) != value:
        table[key] = value


def _containerd(opts: Options) -> tuple[list[Change], list[str]]:
    import tomlkit

    path = under(opts.prefix, CONTAINERD_CONFIG)
    wrapper = under(opts.prefix, RUNC_WRAPPER)
    wrapper_text = f'#!/bin/sh\nexec {shlex.quote(str(opts.nvhook_path))} runtime "$@"\n'
    changes = _write(wrapper, wrapper_text.encode(), "containerd's BinaryName: one executable",
                     mode=0o755)
    before = fileops.read_optional(path)
    doc = _parse_toml(path, before) if before is not None else tomlkit.document()
    if "version" not in doc and not doc:
        doc.add("version", 2)
    version = doc.get("version")
    if version not in CONTAINERD_CRI:
        raise ConfigError(
            f"{path}: version = {version!r}: only containerd config versions 2 and 3 are "
            "supported (run `containerd config migrate`); left unchanged"
        )
    runtimes = _table_at(doc, CONTAINERD_CRI[version], path)
    if RUNTIME_NAME not in runtimes:
        runtimes[RUNTIME_NAME] = tomlkit.table()
    entry = runtimes[RUNTIME_NAME]
    _set(entry, "runtime_type", "io.containerd.runc.v2")
    if "options" not in entry:
        options = tomlkit.table()
        options.add("BinaryName", str(RUNC_WRAPPER))
        options.add(tomlkit.nl())
        entry["options"] = options
    _set(entry["options"], "BinaryName", str(RUNC_WRAPPER))
    after = tomlkit.dumps(doc).encode("utf-8")
    if before is None or after != before:
        changes += _write(path, after, "containerd runtime entry for nvhook")
    return changes, ["restart containerd; select the runtime with runtimeClassName / "
                     f"--runtime {RUNTIME_NAME}"]


def _nvidia_config(path: Path) -> list[Change]:
    before = fileops.read_optional(path)
    if before is None:
        raise ConfigError(f"{path}: NVIDIA's config.toml not found (--nvidia-config)")
    doc = _parse_toml(path, before)
    import tomlkit

    for table_name, key, value in (
        ("nvidia-container-runtime-hook", "skip-mode-detection", True),
        ("nvidia-container-runtime", "mode", "legacy"),
    ):
        if table_name not in doc:
            doc[table_name] = tomlkit.table()
        _set(doc[table_name], key, value)
    return _write(path, tomlkit.dumps(doc).encode("utf-8"),
                  "NVIDIA's legacy hook must run when delegated (toolkit >= 1.18)")


def _own_config(path: Path) -> list[Change]:
    if path.exists():
        return []  # the user's file: install never edits it (that is `nvhook config set`)
    from nvhook.ops.config_edit import default_text

    return _write(path, default_text().encode("utf-8"), "nvhook's default config")


# -- applying and rendering -------------------------------------------------------------


def apply(p: Plan, stamp: str | None = None) -> tuple[Applied, ...]:
    stamp = stamp or fileops.utc_stamp()
    done = []
    for change in p.changes:
        if change.action is Action.MOVE:
            assert change.dest is not None
            fileops.rename(change.path, change.dest)  # the moved file is its own backup
            done.append(Applied(change, None))
            continue
        saved = fileops.backup(change.path, stamp) if change.before is not None else None
        assert change.after is not None
        fileops.write_atomic(change.path, change.after, change.mode)
        done.append(Applied(change, saved))
    return tuple(done)


def diff(p: Plan) -> str:
    out: list[str] = []
    for change in p.changes:
        if change.action is Action.MOVE:
            out.append(f"rename {change.path} -> {change.dest}\n")
            continue
        old = (change.before or b"").decode("utf-8", "replace").splitlines(keepends=True)
        new = (change.after or b"").decode("utf-8", "replace").splitlines(keepends=True)
        src = str(change.path) if change.before is not None else "/dev/null"
        out.extend(difflib.unified_diff(old, new, src, str(change.path)))
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
    return "".join(out)
