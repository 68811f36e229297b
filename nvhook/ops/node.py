"""`nvhook node install|uninstall`: put the node artifact onto a host from a privileged pod.

The DaemonSet mounts the host's ``/`` at ``--host-root`` (``/host``). Install, in this order:

1. validate the policy from the mounted ConfigMap (invalid: nothing on the host changes, the
   command fails, the pod stays unready and its log has the one-line error);
2. copy the running artifact to ``<host>/opt/nvhook/<version>/`` (once per build);
3. point ``<host>/opt/nvhook/current`` at it: a new relative symlink renamed over the old one,
   so the engine sees the old or the new version, never a missing path;
4. write ``<host>/etc/nvhook/config.toml`` (a backup of a differing old file first);
5. register the engine through ``ops.install`` with the paths the host sees
   (``/opt/nvhook/current/nvhook``), so an upgrade never has to touch engine files again;
6. optionally make the engine notice (``--restart``).

Every file it creates or replaces is recorded in ``<host>/etc/nvhook/node-install.json``
(first record per path wins, so the backup kept is the pre-nvhook original), which is what
``uninstall`` undoes. Nothing here runs when the pod stops: removal is only ``uninstall``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from nvhook import config as config_mod
from nvhook import fileops
from nvhook.errors import ConfigError, UsageError, WriteError
from nvhook.ops import install as install_mod

INSTALL_DIR = Path("/opt/nvhook")
CURRENT = "current"
EXECUTABLE = "nvhook"  # the launcher at the top of an artifact
STATE_FILE = Path("/etc/nvhook/node-install.json")
POLICY_MOUNT = Path("/etc/nvhook-policy/config.toml")  # where the DaemonSet mounts the ConfigMap
STATE_VERSION = 1


class Restart(StrEnum):
    NONE = "none"  # print what to restart; hooks.d engines need nothing
    SIGNAL = "signal"  # SIGHUP a daemon that reloads its config on it (dockerd)
    SYSTEMD = "systemd"  # systemctl restart <unit> in the host's root


# How to find each engine on a host root, in the order `auto` tries them: the kubelet's CRI
# engine first (CRI-O, containerd), because Docker installs containerd's files too.
DETECT: dict[install_mod.Engine, tuple[Path, ...]] = {
    install_mod.Engine.CRIO: (Path("/etc/crio"), Path("/run/crio/crio.sock"),
                              Path("/var/run/crio/crio.sock")),
    install_mod.Engine.CONTAINERD: (Path("/etc/containerd/config.toml"),
                                    Path("/run/containerd/containerd.sock")),
    install_mod.Engine.DOCKER: (Path("/etc/docker/daemon.json"), Path("/run/docker.sock"),
                                Path("/var/run/docker.sock")),
    install_mod.Engine.PODMAN: (Path("/etc/containers"), Path("/usr/bin/podman")),
}
SYSTEMD_UNITS = {
    install_mod.Engine.CRIO: "crio",
    install_mod.Engine.CONTAINERD: "containerd",
    install_mod.Engine.DOCKER: "docker",
}
# Daemons that reload their config on SIGHUP, with the pid file they write by default.
SIGHUP_DAEMONS = {install_mod.Engine.DOCKER: ("dockerd", Path("/var/run/docker.pid"))}


@dataclass(frozen=True)
class Artifact:
    root: Path
    version: str
    build: str  # BUILD-INPUTS: tells two builds of one version apart


@dataclass(frozen=True)
class Options:
    host_root: Path
    engine: str = "auto"  # "auto" or an install.Engine value
    restart: Restart = Restart.NONE
    policy: Path | None = POLICY_MOUNT  # None or absent: keep the host's file (or the defaults)
    artifact: Artifact | None = None  # None: the artifact this process runs from


@dataclass(frozen=True)
class Result:
    engine: install_mod.Engine | None  # None: uninstall
    version: str
    lines: tuple[str, ...]  # what was done, one line each, for the CLI to print

    @property
    def changed(self) -> bool:
        return any(not line.startswith("unchanged") for line in self.lines)


@dataclass(frozen=True)
class Record:
    """One path install touched; ``backup`` None means install created it."""

    path: str  # as the host sees it
    kind: str  # "file" | "dir" | "link" | "artifact" | "backup" | "engine" (moved_to: its name)
    backup: str | None = None
    moved_to: str | None = None


@dataclass
class _State:
    records: list[Record] = field(default_factory=list)

    def add(self, record: Record) -> None:
        if all(r.path != record.path for r in self.records):
            self.records.append(record)


# -- the artifact ------------------------------------------------------------------------


def running_artifact() -> Artifact:
    """The artifact this interpreter belongs to: ``ROOT/python/bin/python3`` -> ``ROOT``."""
    root = Path(sys.executable).resolve().parents[2]
    return read_artifact(root)


def read_artifact(root: Path) -> Artifact:
    try:
        version = (root / "VERSION").read_text().strip()
        build = (root / "BUILD-INPUTS").read_text().strip()
    except OSError:
        raise UsageError(
            f"{root}: not an nvhook node artifact (no VERSION/BUILD-INPUTS); `nvhook node` "
            "runs from the artifact built by scripts/build-artifact"
        ) from None
    if not (root / EXECUTABLE).is_file() or not version or "/" in version:
        raise UsageError(f"{root}: not an nvhook node artifact (version {version!r})")
    return Artifact(root, version, build)


def _host(opts: Options, path: Path) -> Path:
    return install_mod.under(opts.host_root, path)


def _copy_artifact(opts: Options, art: Artifact) -> tuple[Path, str]:
    """Copy the artifact to <host>/opt/nvhook/<version>/ unless that build is already there."""
    base = _host(opts, INSTALL_DIR)
    dest = base / art.version
    with contextlib.suppress(OSError):
        if (dest / "BUILD-INPUTS").read_text().strip() == art.build:
            return dest, f"unchanged {INSTALL_DIR / art.version} (build {art.build})"
    tmp = base / f".{art.version}.nvhook-{os.getpid()}.tmp"
    try:
        base.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(art.root, tmp, symlinks=True)
        old = None
        if dest.exists():
            # Same version, other build: swap it out; a hook running from it keeps its files.
            old = base / f".{art.version}.nvhook-old-{os.getpid()}"
            os.rename(dest, old)
        os.rename(tmp, dest)
        fileops.fsync_dir(base)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"{dest}: cannot copy the artifact: {e.strerror}") from None
    return dest, f"copied {INSTALL_DIR / art.version} (build {art.build})"


def _swap_current(opts: Options, version: str) -> str:
    """Point current at <version> atomically: a relative link, valid on the host and under
    --host-root alike, renamed over the old one."""
    base = _host(opts, INSTALL_DIR)
    link = base / CURRENT
    with contextlib.suppress(OSError):
        if os.readlink(link) == version:
            return f"unchanged {INSTALL_DIR / CURRENT} -> {version}"
    tmp = base / f".{CURRENT}.nvhook-{os.getpid()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(version, tmp)
        os.replace(tmp, link)
        fileops.fsync_dir(base)
    except OSError as e:
        raise WriteError(f"{link}: cannot point it at {version}: {e.strerror}") from None
    return f"switched {INSTALL_DIR / CURRENT} -> {version}"


# -- the policy --------------------------------------------------------------------------


def read_policy(path: Path) -> bytes:
    """The ConfigMap's policy, validated exactly as the hook will read it."""
    try:
        data = fileops.read_bounded(path, config_mod.MAX_CONFIG_BYTES)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the policy: {e.strerror}") from None
    config_mod.parse(data, path)  # raises ConfigError naming the file and key
    return data


# -- engine detection and restart --------------------------------------------------------


def detect_engine(host_root: Path) -> tuple[install_mod.Engine, Path]:
    for engine, marks in DETECT.items():
        for mark in marks:
            if os.path.lexists(install_mod.under(host_root, mark)):
                return engine, mark
    looked = ", ".join(str(m) for marks in DETECT.values() for m in marks)
    raise UsageError(f"--engine auto: no container engine found under {host_root} (looked "
                     f"for {looked}); pass --engine")


def _engine(opts: Options) -> tuple[install_mod.Engine, str]:
    if opts.engine == "auto":
        engine, mark = detect_engine(opts.host_root)
        return engine, f"engine {engine.value} (auto: found {mark})"
    try:
        engine = install_mod.Engine(opts.engine)
    except ValueError:
        names = ", ".join(["auto", *(e.value for e in DETECT)])
        raise UsageError(f"--engine: unknown engine {opts.engine!r} (expected {names})") from None
    if engine not in DETECT:
        raise UsageError(f"--engine: {engine.value} is not a Kubernetes node engine")
    return engine, f"engine {engine.value}"


def _restart(opts: Options, engine: install_mod.Engine, changed: bool) -> str:
    if engine in (install_mod.Engine.CRIO, install_mod.Engine.PODMAN):
        return "restart not needed: CRI-O and Podman read hooks.d for every container"
    if not changed:
        return "restart not needed: the engine's files are unchanged"
    if opts.restart is Restart.NONE:
        unit = SYSTEMD_UNITS[engine]
        return f"restart {unit} on the host to load the nvhook runtime (--restart none)"
    if opts.restart is Restart.SIGNAL:
        if engine not in SIGHUP_DAEMONS:
            raise UsageError(f"--restart signal: {engine.value} does not reload its config on a "
                             "signal; use --restart systemd or restart it yourself")
        name, pidfile = SIGHUP_DAEMONS[engine]
        pid = _daemon_pid(_host(opts, pidfile), name)
        os.kill(pid, signal.SIGHUP)
        return f"sent SIGHUP to {name} (pid {pid}): it reloads {install_mod.DOCKER_CONFIG}"
    unit = SYSTEMD_UNITS[engine]
    return _systemctl_restart(opts.host_root, unit)


def _daemon_pid(pidfile: Path, name: str) -> int:
    """The pid in the daemon's pid file, checked against /proc (the pod runs with hostPID)."""
    try:
        pid = int(pidfile.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        raise UsageError(f"--restart signal: {pidfile}: no running {name} found") from None
    if comm != name:
        raise UsageError(f"--restart signal: {pidfile}: pid {pid} is {comm!r}, not {name}")
    return pid


def _systemctl_restart(host_root: Path, unit: str) -> str:
    """Run the host's own systemctl inside the host root (needs /run/systemd from the host)."""
    def enter() -> None:
        os.chroot(host_root)
        os.chdir("/")

    try:
        proc = subprocess.run(["systemctl", "restart", unit], preexec_fn=enter,
                              capture_output=True, check=False, timeout=120,
                              env={"PATH": config_mod.SAFE_PATH})
    except (OSError, subprocess.SubprocessError) as e:
        raise UsageError(f"--restart systemd: cannot run systemctl in {host_root}: {e}") from None
    if proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"--restart systemd: systemctl restart {unit} exited "
                         f"{proc.returncode}: {why[0] if why else '(no output)'}")
    return f"restarted {unit} (systemctl, in {host_root})"


# -- state -------------------------------------------------------------------------------


def _load_state(opts: Options) -> _State:
    path = _host(opts, STATE_FILE)
    data = fileops.read_optional(path)
    if data is None:
        return _State()
    try:
        doc = json.loads(data)
        return _State([Record(**r) for r in doc["records"]])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: unreadable install record ({e}); fix or remove it") from None


def _save_state(opts: Options, state: _State) -> None:
    doc = {"version": STATE_VERSION, "records": [r.__dict__ for r in state.records]}
    data = (json.dumps(doc, indent=2) + "\n").encode()
    path = _host(opts, STATE_FILE)
    if fileops.read_optional(path) != data:
        fileops.write_atomic(path, data, 0o644)


def _host_path(opts: Options, path: Path) -> str:
    """``path`` (under --host-root) as the host sees it."""
    return "/" + str(path.relative_to(opts.host_root))


def _missing_dirs(opts: Options, path: Path) -> list[Path]:
    """Ancestors of ``path`` that do not exist yet, outermost first (install creates them)."""
    out = []
    d = path.parent
    while d != opts.host_root and not d.exists():
        out.append(d)
        d = d.parent
    return out[::-1]


def _record_dirs(opts: Options, state: _State, path: Path) -> None:
    for d in _missing_dirs(opts, path):
        state.add(Record(_host_path(opts, d), "dir"))


# -- install and uninstall ---------------------------------------------------------------


def install(opts: Options) -> Result:
    policy = read_policy(opts.policy) if opts.policy and opts.policy.exists() else None
    art = opts.artifact or running_artifact()
    engine, engine_line = _engine(opts)
    state = _load_state(opts)
    lines = [engine_line]

    base = _host(opts, INSTALL_DIR)
    _record_dirs(opts, state, base / CURRENT)
    dest, line = _copy_artifact(opts, art)
    state.add(Record(_host_path(opts, dest), "artifact"))
    lines.append(line)
    link = base / CURRENT
    state.add(Record(_host_path(opts, link), "link"))
    lines.append(_swap_current(opts, art.version))

    config_path = _host(opts, config_mod.DEFAULT_PATH)
    state_path = _host(opts, STATE_FILE)
    _record_dirs(opts, state, state_path)
    if policy is not None:
        lines.append(_write_recorded(opts, state, config_path, policy, "policy from "
                                     f"{opts.policy}"))

    nvhook_path = INSTALL_DIR / CURRENT / EXECUTABLE
    plan = install_mod.plan(install_mod.Options(
        engine=engine, nvhook_path=nvhook_path, prefix=opts.host_root,
        config_path=config_path,
    ))
    # install keeps its own per-engine record (key-level, read by ops.uninstall); this record
    # adds the engine, the directories install creates and the backups it leaves.
    state.add(Record(_host_path(opts, install_mod.state_path(engine, opts.host_root)),
                     "engine", moved_to=engine.value))
    for path in (*(c.path for c in plan.changes), install_mod.state_path(engine, opts.host_root)):
        _record_dirs(opts, state, path)
    for done in install_mod.apply(plan, fileops.utc_stamp()):
        c = done.change
        if done.backup is not None:
            state.add(Record(_host_path(opts, done.backup), "backup"))
        if c.action is install_mod.Action.MOVE:
            lines.append(f"moved {_host_path(opts, c.path)} aside ({c.why})")
        else:
            lines.append(f"wrote {_host_path(opts, c.path)} ({c.why})")
    if plan.empty:
        lines.append(f"unchanged {engine.value} registration ({nvhook_path})")
    _save_state(opts, state)
    lines.append(_restart(opts, engine, not plan.empty))
    return Result(engine, art.version, tuple(lines))


def _write_recorded(opts: Options, state: _State, path: Path, data: bytes, why: str) -> str:
    before = fileops.read_optional(path)
    shown = _host_path(opts, path)
    if before == data:
        return f"unchanged {shown}"
    backup = fileops.backup(path, fileops.utc_stamp()) if before is not None else None
    fileops.write_atomic(path, data, 0o644)
    saved = _host_path(opts, backup) if backup else None
    if saved and any(r.path == shown for r in state.records):
        state.add(Record(saved, "backup"))  # a later policy's backup: the first one is restored
    state.add(Record(shown, "file", backup=saved))
    return f"wrote {shown} ({why})"


def uninstall(opts: Options) -> Result:
    """Undo every recorded change, newest first; what install did not create stays."""
    state = _load_state(opts)
    if not state.records:
        raise UsageError(f"{_host(opts, STATE_FILE)}: no node install recorded here; "
                         "nothing to undo")
    lines: list[str] = []
    for r in state.records:
        if r.kind == "engine" and r.moved_to:
            lines += _uninstall_engine(opts, state, install_mod.Engine(r.moved_to))
    for r in reversed(state.records):
        path = _host(opts, Path(r.path))
        try:
            lines.append(_undo(opts, r, path))
        except OSError as e:
            raise WriteError(f"{path}: cannot undo ({r.kind}): {e.strerror}; the install "
                             "record is kept, run uninstall again") from None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_host(opts, STATE_FILE))
    with contextlib.suppress(OSError):
        _host(opts, STATE_FILE).parent.rmdir()  # only when empty (install created it)
    return Result(None, "", tuple(lines))


def _uninstall_engine(opts: Options, state: _State, engine: install_mod.Engine) -> list[str]:
    from nvhook.ops import uninstall as uninstall_mod

    plan = uninstall_mod.plan(engine, opts.host_root)
    lines = [f"{engine.value}: {note}" for note in plan.notes]
    for done in uninstall_mod.apply(plan, fileops.utc_stamp()):
        if done.backup is not None:  # the undo's own safety copy: the record had the bytes
            state.add(Record(_host_path(opts, done.backup), "backup"))
        lines.append(f"{engine.value}: undid {_host_path(opts, done.change.path)} "
                     f"({done.change.why})")
    return lines


def _undo(opts: Options, r: Record, path: Path) -> str:
    if r.kind == "engine":
        return f"unregistered {r.moved_to}"
    if r.kind == "backup":
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return f"removed {r.path} (backup made by node install/uninstall)"
    if r.kind == "file":
        if r.backup is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return f"removed {r.path}"
        backup = _host(opts, Path(r.backup))
        fileops.write_atomic(path, backup.read_bytes())
        os.chmod(path, backup.stat().st_mode & 0o7777)
        backup.unlink()
        return f"restored {r.path} from {r.backup}"
    if r.kind == "link":
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return f"removed {r.path}"
    if r.kind == "artifact":
        shutil.rmtree(path, ignore_errors=True)
        return f"removed {r.path}"
    if r.kind == "dir":
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            return f"left {r.path} (not empty)"
        return f"removed {r.path}"
    raise ConfigError(f"{_host(opts, STATE_FILE)}: unknown record kind {r.kind!r}")
