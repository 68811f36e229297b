"""`nvhook doctor`: check that this node can run nvhook the way it is configured.

Each check returns ``Check`` values; the CLI prints one line per check and exits
10 when any failed. Checks only read: the audit check appends nothing and removes
the probe file it makes. ``prefix`` relocates the files doctor reads by default
(as ``install --prefix`` does); paths named *inside* those files (a hook's
``path``, ``delegate.path``, ``audit.path``) are what the engine will use, so they
are checked as written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from nvhook import audit, fileops
from nvhook import config as config_mod
from nvhook.config import SAFE_PATH, Config, InventorySource
from nvhook.errors import NvhookError
from nvhook.nvidia.paths import MAX_CONFIG_BYTES as NVIDIA_MAX_BYTES
from nvhook.ops.install import HOOKS_DIRS, NVIDIA_HOOK_FILE, nvhook_executable, under

NVIDIA_CONFIG = Path("/etc/nvidia-container-runtime/config.toml")
VERSION_TIMEOUT = 5.0


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    level: Level
    name: str
    detail: str
    fix: str | None = None

    def line(self) -> str:
        """``LEVEL  NAME: DETAIL — fix: HINT``: one check on its own (tests, logs)."""
        fix = f" — fix: {self.fix}" if self.fix else ""
        return f"{self.level.value}  {self.name}: {self.detail}{fix}"

    def row(self, width: int) -> str:
        """``LEVEL  NAME  DETAIL — fix: HINT``, NAME padded to ``width`` (see ``render``)."""
        fix = f" — fix: {self.fix}" if self.fix else ""
        return f"{self.level.value:<4}  {self.name:<{width}}  {self.detail}{fix}"


def render(checks: Iterable[Check]) -> list[str]:
    """What ``nvhook doctor`` prints: one row per check, in aligned columns."""
    checks = list(checks)
    width = max((len(c.name) for c in checks), default=0)
    return [c.row(width) for c in checks]


@dataclass(frozen=True)
class Options:
    config: Path | None = None  # explicit --config / NVHOOK_CONFIG: used as given
    prefix: Path | None = None
    hooks_dirs: tuple[Path, ...] = ()
    nvidia_config: Path | None = None
    docker_socket: Path | None = None  # ask this dockerd (default: /var/run/docker.sock)
    containerd_socket: Path | None = None  # ask this containerd (default: /run/containerd/...)
    # The host's / mounted in a pod (the DaemonSet's readiness probe): every file, including
    # the paths named inside files, is looked up under it, and host binaries are not run.
    host_root: Path | None = None


def run(opts: Options) -> tuple[Check, ...]:
    if opts.host_root is not None and opts.prefix is None:
        opts = dataclasses.replace(opts, prefix=opts.host_root)
    config, policy_check = _policy(opts)
    delegate = _delegate(config) if opts.host_root is None else _delegate_on_host(opts, config)
    checks = [*_inventory(config), *delegate, _nvidia_mode(opts, config)]
    checks += _nvidia_settings(opts, config)
    checks += _hooks_d(opts, config)
    checks += _engines(opts)
    checks += [policy_check, *(Check(Level.WARN, "policy", f"deprecated: {note}")
                               for note in config.deprecations),
               _audit(config, opts.host_root), _syslog(config, opts.host_root),
               _leases(config),
               *_leases_dir(config), *_install()]
    checks += kubernetes_checks(config)
    return tuple(checks)


def kubernetes_checks(config: Config) -> list[Check]:
    """The kubelet's allocation sources: readable, answering, and the resource names set
    (and covering the NVIDIA resources the kubelet actually hands out)."""
    from nvhook.kube import allocation, checkpoint

    k = config.kubernetes
    if k.allocation is allocation.Binding.OFF:
        return [Check(Level.OK, "kubernetes", 'off (kubernetes.allocation = "off")')]
    required = k.allocation is allocation.Binding.ON
    checks = []
    present = 0
    seen: set[str] = set()  # resource names in the kubelet's answers
    for source in k.sources:
        path = k.socket if source == allocation.PODRESOURCES else k.checkpoint
        if not path.exists():
            checks.append(Check(
                Level.FAIL if required else Level.OK, source, f"{path} absent"
                + ("" if required else " (auto: not a Kubernetes node, or not this source)"),
                f"point kubernetes.{'socket' if source == allocation.PODRESOURCES else source}"
                " at the kubelet's file, or drop it from kubernetes.sources" if required
                else None))
            continue
        present += 1
        try:
            if source == allocation.PODRESOURCES:
                from nvhook.kube import podresources

                started = time.monotonic()
                pods = podresources.list_pods(k.socket, k.timeout)
                ms = (time.monotonic() - started) * 1000
                detail = f"{path}: List answered in {ms:.0f} ms, {len(pods)} pods"
                seen.update(d.resource for p in pods for c in p.containers for d in c.devices)
            else:
                entries = checkpoint.read(k.checkpoint)
                detail = f"{path}: readable, {len(entries)} device entries"
                seen.update(e.resource for e in entries)
        except (NvhookError, OSError) as e:
            checks.append(Check(Level.FAIL, source, f"{path}: {getattr(e, 'strerror', None) or e}",
                                "every GPU request of a pod is denied until it answers"))
            continue
        checks.append(Check(Level.OK, source, detail))
    names = ", ".join(k.resources)
    gpuish = any(r.startswith("nvidia.com/") for r in k.resources)
    # NVIDIA resources the kubelet allocates but nvhook does not count: pods given them
    # would run without GPUs (void) or be denied.
    uncounted = sorted(r for r in seen if r.startswith("nvidia.com/")
                       and not allocation.matches(r, k.resources))
    if uncounted:
        checks.append(Check(Level.WARN, "resources", f"the kubelet allocates "
                            f"{', '.join(uncounted)}, which kubernetes.resources ({names}) "
                            "does not count: such pods get no GPU",
                            "add them (or a pattern, e.g. nvidia.com/mig-*) to "
                            "kubernetes.resources"))
    else:
        checks.append(Check(Level.OK if gpuish else Level.WARN, "resources",
                            f"allocation counts {names}" if present or gpuish else names,
                            None if gpuish else "add the device plugin's resource names "
                            "(kubernetes.resources), e.g. nvidia.com/gpu"))
    return checks


def failed(checks: Iterable[Check]) -> bool:
    return any(c.level is Level.FAIL for c in checks)


# -- config and policy ------------------------------------------------------------------


def _policy(opts: Options) -> tuple[Config, Check]:
    path = opts.config or under(opts.prefix, config_mod.DEFAULT_PATH)
    try:
        data = fileops.read_bounded(path, config_mod.MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if opts.config is not None:
            return Config(), Check(Level.FAIL, "policy", f"{path}: config file not found",
                                   "create it, or drop --config / NVHOOK_CONFIG")
        return Config(), Check(Level.OK, "policy", f"built-in defaults ({path} absent)")
    except OSError as e:
        return Config(), Check(Level.FAIL, "policy", f"{path}: cannot read: {e.strerror}",
                               "make it readable by root (the hook runs as root)")
    try:
        config = config_mod.parse(data, path)
    except NvhookError as e:
        # Every other check still runs, against the defaults the hook would NOT use.
        return Config(), Check(Level.FAIL, "policy", e.message,
                               "fix the file; the hook denies every GPU request until then")
    return config, Check(Level.OK, "policy", f"{path}: mode {config.policy.mode.value}, "
                         f"{len(config.rules)} rule(s)")


# -- inventory --------------------------------------------------------------------------


def _inventory(config: Config) -> list[Check]:
    from nvhook.gpus import inventory as inventory_mod

    settings = config.inventory
    started = time.monotonic()
    try:
        if settings.source is InventorySource.FILE:
            assert settings.file is not None
            inv = inventory_mod.load_file(settings.file)
            first = Check(Level.OK, "nvml", f"not used: [inventory] source = \"file\" "
                          f"({settings.file})")
        else:
            from nvhook.gpus import nvml

            inv = nvml.read(settings.timeout)
            ms = (time.monotonic() - started) * 1000
            first = Check(Level.OK, "nvml", f"init + enumeration in {ms:.0f} ms "
                          f"(timeout {settings.timeout:g}s)")
    except NvhookError as e:
        fix = ("load the NVIDIA driver (nvidia-smi should work), or set [inventory] "
               'source = "file"')
        return [
            Check(Level.FAIL, "nvml", e.message, fix),
            Check(Level.FAIL, "driver", "unknown: no inventory", "see the nvml row"),
            Check(Level.FAIL, "gpus", "unknown: no inventory; every GPU request is denied",
                  "see the nvml row"),
        ]
    driver = (Check(Level.OK, "driver", inv.driver_version) if inv.driver_version
              else Check(Level.WARN, "driver", "version not reported"))
    gpus = ", ".join(g.uuid for g in inv.gpus) or "-"
    migs = ", ".join(m.uuid for m in inv.migs) or "-"
    level = Level.OK if inv.gpus else Level.WARN
    detail = f"{len(inv.gpus)} GPU(s): {gpus}; {len(inv.migs)} MIG device(s): {migs}"
    return [first, driver, Check(level, "gpus", detail)]


# -- the delegate -----------------------------------------------------------------------


def _delegate(config: Config) -> list[Check]:
    from nvhook.nvidia import delegate

    try:
        path = delegate.find(config.delegate)
    except NvhookError as e:
        return [Check(Level.FAIL, "delegate", e.message,
                      "install nvidia-container-toolkit")]
    if path is None:
        return [Check(Level.OK, "delegate", 'policy only (delegate.path = ""): NVIDIA\'s hook '
                      "must be registered separately")]
    try:
        # A clean env, as the hook itself hands over: nothing of the caller's reaches it.
        proc = subprocess.run([str(path), "--version"], capture_output=True, check=False,
                              timeout=VERSION_TIMEOUT, env={"PATH": SAFE_PATH},
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [Check(Level.WARN, "delegate", f"{path}: --version did not answer in "
                      f"{VERSION_TIMEOUT:g}s")]
    except OSError as e:
        return [Check(Level.FAIL, "delegate", f"{path}: cannot run: {e.strerror}",
                      "reinstall nvidia-container-toolkit")]
    text = (proc.stdout or proc.stderr).decode("utf-8", "replace").strip()
    version = text.splitlines()[0] if text else "(no output)"
    if proc.returncode != 0:
        return [Check(Level.WARN, "delegate", f"{path}: --version exited {proc.returncode}: "
                      f"{version}")]
    return [Check(Level.OK, "delegate", f"{path}: {version}")]


def _delegate_on_host(opts: Options, config: Config) -> list[Check]:
    """NVIDIA's hook as the host will find it; not run: it needs the host's libc, not the pod's."""
    if config.delegate.path == "":
        return [Check(Level.OK, "delegate", 'policy only (delegate.path = "")')]
    names = [config.delegate.path] if config.delegate.path else list(config_mod.DELEGATE_CANDIDATES)
    for name in names:
        places = [Path(name)] if "/" in name else [Path(d) / name for d in SAFE_PATH.split(":")]
        for p in places:
            seen = under(opts.host_root, p)
            if seen.is_file() and os.access(seen, os.X_OK):
                return [Check(Level.OK, "delegate", f"{p}: present on the host (not run)")]
    return [Check(Level.FAIL, "delegate", f"none of {', '.join(names)} found on the host under "
                  f"{opts.host_root}", "install nvidia-container-toolkit on the node")]


def _nvidia_mode(opts: Options, config: Config) -> Check:
    path = under(opts.prefix, opts.nvidia_config or NVIDIA_CONFIG)
    try:
        doc = tomllib.loads(fileops.read_bounded(path, NVIDIA_MAX_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return Check(Level.WARN, "nvidia-mode", f"{path} absent: NVIDIA's defaults apply "
                     "(mode auto resolves to CDI on toolkit >= 1.18)",
                     f"nvhook install --engine ... --nvidia-config {NVIDIA_CONFIG}")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        return Check(Level.FAIL, "nvidia-mode", f"{path}: cannot read: {e}",
                     "fix the file: NVIDIA's hook cannot read it either")
    hook = doc.get("nvidia-container-runtime-hook", {})
    runtime = doc.get("nvidia-container-runtime", {})
    skip = isinstance(hook, dict) and hook.get("skip-mode-detection") is True
    mode = runtime.get("mode", "auto") if isinstance(runtime, dict) else "auto"
    if mode == "legacy" or skip:
        why = 'mode = "legacy"' if mode == "legacy" else "skip-mode-detection = true"
        return Check(Level.OK, "nvidia-mode", f"{path}: {why}: the legacy hook runs")
    return Check(Level.FAIL, "nvidia-mode",
                 f"{path}: mode = {mode!r} without skip-mode-detection: NVIDIA's legacy hook "
                 "refuses to run (toolkit >= 1.18)",
                 f"nvhook install --engine ... --nvidia-config {NVIDIA_CONFIG} (sets mode = "
                 '"legacy" and skip-mode-detection = true)')


def _nvidia_settings(opts: Options, config: Config) -> list[Check]:
    """The settings of NVIDIA's config.toml that decide what its hook attaches, and
    where nvhook's own config disagrees with them."""
    from nvhook.nvidia import config as nvidia_config
    from nvhook.nvidia.paths import DEFAULT_PATHS, config_flag

    flag = config_flag(config.delegate.args)
    if opts.nvidia_config is not None or flag:
        paths: tuple[str, ...] = (str(under(opts.prefix, opts.nvidia_config or Path(str(flag)))),)
        args: tuple[str, ...] = (f"-config={paths[0]}",)
    else:
        paths, args = tuple(str(under(opts.prefix, Path(p))) for p in DEFAULT_PATHS), ()
    try:
        nv = nvidia_config.load(args, paths)
    except NvhookError as e:
        return [Check(Level.FAIL, "nvidia-config", f"{e.message}; every GPU request is denied",
                      "fix NVIDIA's config.toml (or the -config= path in [delegate] args)")]
    where = nv.path or "no config.toml: NVIDIA's defaults"
    detail = (f"{where}: env when unprivileged {_on(nv.accept_env_unprivileged)}, volume "
              f"mounts {_on(nv.accept_volume_mounts)}, swarm-resource "
              f"{','.join(nv.swarm_resource) or '-'}, capabilities "
              f"{','.join(nv.supported_driver_capabilities)}, IMEX requests "
              f"{'ignored' if nv.ignore_imex_requests else 'read'}")
    checks = [Check(Level.OK, "nvidia-config", detail)]
    policy = config.policy
    if config.swarm_resource and config.swarm_resource != nv.swarm_resource:
        checks.append(Check(
            Level.WARN, "nvidia-config",
            f"nvhook's request.swarm-resource {','.join(config.swarm_resource)} differs from "
            f"NVIDIA's {','.join(nv.swarm_resource) or '(none)'}: nvhook reads NVIDIA's",
            "drop [request] swarm-resource from nvhook's config"))
    if not nv.accept_volume_mounts and policy.volume_mounts.value != "accept":
        checks.append(Check(
            Level.WARN, "nvidia-config",
            f'policy.volume-mounts = "{policy.volume_mounts.value}" has no effect: NVIDIA '
            "does not read device mounts (accept-nvidia-visible-devices-as-volume-mounts = "
            "false)"))
    if not nv.accept_env_unprivileged and policy.unprivileged_env.value != "accept":
        checks.append(Check(
            Level.WARN, "nvidia-config",
            f'policy.unprivileged-env = "{policy.unprivileged_env.value}" has no effect: '
            "NVIDIA ignores an unprivileged container's env "
            "(accept-nvidia-visible-devices-envvar-when-unprivileged = false)"))
    extra = [c for c in policy.driver_capabilities if c not in nv.supported_driver_capabilities]
    if extra:
        checks.append(Check(
            Level.WARN, "nvidia-config",
            f"policy.driver-capabilities allows {','.join(extra)}, which NVIDIA's "
            "supported-driver-capabilities excludes: NVIDIA's hook fails such a request"))
    return checks


def _on(flag: bool) -> str:
    return "accepted" if flag else "not accepted"


# -- hooks.d ----------------------------------------------------------------------------


def _is_nvhook_hook(doc: object) -> bool:
    if not isinstance(doc, dict) or not isinstance(doc.get("hook"), dict):
        return False
    hook = doc["hook"]
    args = hook.get("args") or []
    return Path(str(hook.get("path", ""))).name == "nvhook" or (
        isinstance(args, list) and bool(args) and args[0] == "nvhook"
    )


def _hooks_d(opts: Options, config: Config) -> list[Check]:
    dirs = [under(opts.prefix, d) for d in (opts.hooks_dirs or HOOKS_DIRS)]
    checks: list[Check] = []
    for d in dirs if opts.hooks_dirs else []:
        # A typo in --hooks-dir must not read as "no nvhook hook there".
        if not d.is_dir():
            what = "does not exist" if not d.exists() else "is not a directory"
            checks.append(Check(Level.FAIL, "hooks.d", f"{d}: --hooks-dir {what}",
                                "check the path (Podman reads /usr/share/containers/oci/"
                                "hooks.d and /etc/containers/oci/hooks.d)"))
    ours: list[Path] = []
    for d in dirs:
        for f in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                doc = json.loads(fileops.read_bounded(f, fileops.MAX_EDITED_BYTES))
            except (OSError, ValueError) as e:
                checks.append(Check(Level.FAIL, "hooks.d", f"{f}: unreadable JSON: {e}",
                                    "fix or remove the file: the engine refuses to start"))
                continue
            if _is_nvhook_hook(doc):
                ours.append(f)
                checks.append(_hook_path(f, doc["hook"].get("path"), opts.host_root))
    where = ", ".join(str(d) for d in dirs)
    if not ours:
        checks.append(Check(Level.WARN, "hooks.d", f"no nvhook hook in {where} (fine for "
                            "Docker/containerd/Sarus)", "nvhook install --engine podman"))
    names = [f.name for f in ours]
    if len(set(names)) > 1:
        checks.append(Check(Level.FAIL, "hooks.d", "nvhook is registered more than once: "
                            + ", ".join(map(str, ours)) + " (it would run twice)",
                            "keep one file"))
    elif len(ours) > 1:
        checks.append(Check(Level.WARN, "hooks.d", "same file in several dirs, the preferred "
                            "one masks the rest: " + ", ".join(map(str, ours)),
                            "keep one copy"))
    nvidia = [d / NVIDIA_HOOK_FILE for d in dirs if (d / NVIDIA_HOOK_FILE).exists()]
    if nvidia and ours and config.delegate.path != "":
        checks.append(Check(Level.WARN, "hooks.d", f"NVIDIA's {', '.join(map(str, nvidia))} "
                            "is still present while nvhook delegates: NVIDIA's hook runs "
                            "twice and the second run ignores nvhook's decision",
                            f"mv {nvidia[0]} {nvidia[0]}.nvhook-disabled, or set "
                            'delegate.path = ""'))
    return checks


def _hook_path(f: Path, path: object, host_root: Path | None = None) -> Check:
    if not isinstance(path, str) or not path:
        return Check(Level.FAIL, "hooks.d", f"{f}: hook.path missing",
                     "nvhook install --engine podman (rewrites the file)")
    seen = str(under(host_root, Path(path)))  # the path the engine on the host will run
    if not (os.path.isfile(seen) and os.access(seen, os.X_OK)):
        return Check(Level.FAIL, "hooks.d", f"{f}: hook.path {path} does not exist or is not "
                     "executable; Podman skips such a hook silently (fail-open)",
                     "nvhook install --engine podman (rewrites the path)")
    return Check(Level.OK, "hooks.d", f"{f}: runs {path}")


# -- audit log and nvhook's own install -------------------------------------------------


def _syslog(config: Config, host_root: Path | None = None) -> Check:
    """The journal copy never fails a container, so a missing daemon is only a warning."""
    if not config.syslog:
        return Check(Level.OK, "syslog", "off (audit.syslog = false)")
    path = under(host_root, Path(config.syslog_socket))
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError as e:
        return Check(Level.WARN, "syslog", f"{path}: {e.strerror}: decisions go only to the "
                     "audit log", "start systemd-journald or rsyslog, or set audit.syslog-socket")
    if not is_socket:
        return Check(Level.WARN, "syslog", f"{path}: not a socket: nothing is sent there",
                     "set audit.syslog-socket to the syslog daemon's socket")
    return Check(Level.OK, "syslog", f"{path}: a socket (journalctl -t nvhook)")


def _audit(config: Config, host_root: Path | None = None) -> Check:
    if not config.audit_path:
        return Check(Level.OK, "audit", 'off (audit.path = "")')
    path = under(host_root, Path(config.audit_path))
    fix = "make the directory writable for root, or change audit.path"
    unsafe = audit.check_path(config.audit_path)  # the hook refuses such a log
    if unsafe:
        return Check(Level.FAIL, "audit", f"{path}: refused: {unsafe}",
                     "make the log and its directory root-owned and not group/world-writable")
    try:
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
            return Check(Level.OK, "audit", f"{path}: appendable")
        d = path.parent
        while not d.exists():
            d = d.parent
        if d != path.parent:
            ok = os.access(d, os.W_OK | os.X_OK)
            detail = f"{path}: {path.parent} will be created under {d}"
            return Check(Level.OK if ok else Level.FAIL, "audit",
                         detail if ok else f"{d}: not writable", None if ok else fix)
        # A probe file shows a read-only filesystem too, which os.access does not.
        fd, probe = tempfile.mkstemp(prefix=".nvhook-doctor-", dir=d)
        os.close(fd)
        os.unlink(probe)
        return Check(Level.OK, "audit", f"{path}: will be created")
    except OSError as e:
        return Check(Level.FAIL, "audit", f"{path}: not writable: {e.strerror}", fix)


def _leases(config: Config) -> Check:
    """The lease table, and the stale leases the next acquire would reclaim."""
    if not config.leases_anywhere:
        return Check(Level.OK, "leases", 'off (leases.mode = "off" and no rule leases)')
    from nvhook.leases import step as lease_step
    from nvhook.safetext import one_line

    try:
        table, stale = lease_step.listing(config)
    except NvhookError as e:
        return Check(Level.FAIL, "leases", e.message, "every GPU request under a lease "
                     "policy is denied until the table is fixed or removed")
    where = config.leases_dir
    if stale:
        items = "; ".join(f"{device} of container {one_line(container)}: {why}"
                          for (device, container), why in sorted(stale.items()))
        return Check(Level.WARN, "leases", f"{where}: {len(table.leases)} lease(s), "
                     f"{len(stale)} stale, would reclaim: {items}",
                     "nothing to do: the next GPU container start reclaims them")
    return Check(Level.OK, "leases", f"{where}: {len(table.leases)} lease(s), none stale")


def _leases_dir(config: Config) -> list[Check]:
    """The table belongs on a tmpfs, so a reboot clears it (the boot id would reclaim the
    leases anyway, so this is a warning)."""
    if not config.leases_anywhere:
        return []
    from nvhook.leases.store import filesystem_type

    kind = filesystem_type(config.leases_dir)
    if kind == "tmpfs":
        return [Check(Level.OK, "leases-dir", f"{config.leases_dir}: on a tmpfs")]
    on = kind or "an unknown filesystem"
    return [Check(Level.WARN, "leases-dir", f"{config.leases_dir}: on {on}, not a tmpfs: the "
                  "table outlives a reboot (its boot id still reclaims every lease)",
                  "set [leases] dir on a tmpfs (/run is one on most systems)")]


def _install() -> list[Check]:
    """Sarus-like rule: whatever the engine runs as root must be root-owned, not g/o-writable."""
    package = Path(__file__).resolve().parent
    try:
        script: Path | None = nvhook_executable()
    except NvhookError:
        script = None
    paths = [package, *sorted(package.glob("*.py"))]
    if script is not None:
        paths.append(script)
    bad = []
    for p in paths:
        st = os.stat(p)
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            bad.append(f"{p} (mode {stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid})")
    if bad:
        return [Check(Level.FAIL, "install", "not root-owned or group/world-writable: "
                      + ", ".join(bad), "chown root and chmod go-w, or reinstall as root")]
    where = f"{package} and {script}" if script else f"{package} (console script not found)"
    level = Level.OK if script else Level.WARN
    return [Check(level, "install", f"{where}: root-owned, not group/world-writable "
                  f"(python {sys.version.split()[0]})")]


# -- Docker and containerd --------------------------------------------------------------

DOCKER_SOCKET = Path("/var/run/docker.sock")
CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")
ENGINE_TIMEOUT = 5.0


def _engines(opts: Options) -> list[Check]:
    return [*_docker(opts), *_containerd(opts)]


def _executable(path: object) -> bool:
    return isinstance(path, str) and os.path.isfile(path) and os.access(path, os.X_OK)


def _ask(cmd: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run an engine's client with the safe PATH only; None when it cannot be run in time."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=ENGINE_TIMEOUT,
                              check=False, stdin=subprocess.DEVNULL,
                              env={"PATH": SAFE_PATH})
    except (OSError, subprocess.TimeoutExpired):
        return None


def _docker(opts: Options) -> list[Check]:
    from nvhook.ops.install import (
        DOCKER_CONFIG,
        RUNTIME_NAME,
        docker_ambiguity,
        docker_default,
    )

    path = under(opts.prefix, DOCKER_CONFIG)
    try:
        data = fileops.read_bounded(path, fileops.MAX_EDITED_BYTES)
    except FileNotFoundError:
        return [Check(Level.OK, "docker", f"{path} absent (Docker not configured)")]
    except OSError as e:
        return [Check(Level.FAIL, "docker", f"{path}: cannot read: {e.strerror}")]
    try:
        doc = json.loads(data) if data.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return [Check(Level.FAIL, "docker", f"{path}: invalid JSON: {e}; dockerd will not "
                      "start", "fix the file")]
    if not isinstance(doc, dict):
        return [Check(Level.FAIL, "docker", f"{path}: not a JSON object")]
    why = docker_ambiguity(data.decode("utf-8"))
    if why is not None:
        return [Check(Level.FAIL, "docker", f"{path}: {why}: dockerd (Go) may run another "
                      "runtime than this file seems to say", "spell each key once and exactly")]
    runtimes = doc.get("runtimes") if isinstance(doc.get("runtimes"), dict) else {}
    entry = runtimes.get(RUNTIME_NAME)
    checks: list[Check] = []
    if not isinstance(entry, dict):
        checks.append(Check(Level.WARN, "docker", f"{path}: no runtimes.{RUNTIME_NAME}",
                            "nvhook install --engine docker [--default]"))
    elif not _executable(entry.get("path")):
        checks.append(Check(Level.FAIL, "docker", f"{path}: runtimes.{RUNTIME_NAME}.path "
                            f"{entry.get('path')!r} is not an executable file; dockerd "
                            "fails every container that uses it",
                            "nvhook install --engine docker"))
    elif (entry.get("runtimeArgs") or [])[-1:] != ["runtime"]:
        checks.append(Check(Level.FAIL, "docker", f"{path}: runtimes.{RUNTIME_NAME}."
                            f"runtimeArgs {entry.get('runtimeArgs')!r} must end with "
                            '"runtime"', "nvhook install --engine docker"))
    else:
        checks.append(Check(Level.OK, "docker", f"{path}: runtimes.{RUNTIME_NAME} runs "
                            f"{entry['path']} {' '.join(entry['runtimeArgs'])}"))
    default = docker_default(doc)
    if default != RUNTIME_NAME:
        checks.append(Check(Level.WARN, "docker", f"default runtime is {default!r}: "
                            f"containers without --runtime={RUNTIME_NAME} bypass nvhook",
                            "nvhook install --engine docker --default"))
    else:
        checks.append(Check(Level.OK, "docker", f"default runtime is {RUNTIME_NAME}"))
    socket = opts.docker_socket or (DOCKER_SOCKET if opts.prefix is None else None)
    if socket is not None and socket.exists():
        checks.append(_docker_live(socket))
    return checks


def _docker_live(socket: Path) -> Check:
    from nvhook.ops.install import RUNTIME_NAME

    res = _ask(["docker", "--host", f"unix://{socket}", "info", "--format",
                "{{json .Runtimes}} {{json .DefaultRuntime}}"])
    if res is None or res.returncode != 0:
        why = "no docker client" if res is None else (res.stderr.strip() or "failed")
        return Check(Level.WARN, "docker", f"dockerd at {socket}: not asked ({why})")
    try:
        runtimes_json, default_json = res.stdout.strip().rsplit(" ", 1)
        runtimes, default = json.loads(runtimes_json), json.loads(default_json)
    except ValueError:
        return Check(Level.WARN, "docker", f"docker info: unexpected output {res.stdout!r}")
    if RUNTIME_NAME not in (runtimes or {}):
        return Check(Level.FAIL, "docker", "the running dockerd has no nvhook runtime "
                     f"(runtimes: {', '.join(sorted(runtimes or {}))})", "restart dockerd")
    level = Level.OK if default == RUNTIME_NAME else Level.WARN
    return Check(level, "docker", f"the running dockerd has runtime {RUNTIME_NAME}; its "
                 f"default is {default!r}")


def _containerd(opts: Options) -> list[Check]:
    from nvhook.ops.install import (
        CONTAINERD_CONFIG,
        CONTAINERD_CRI,
        CONTAINERD_DEFAULT_RUNTIME,
        RUNTIME_NAME,
    )

    path = under(opts.prefix, CONTAINERD_CONFIG)
    try:
        doc = tomllib.loads(fileops.read_bounded(path, fileops.MAX_EDITED_BYTES)
                            .decode("utf-8"))
    except FileNotFoundError:
        return [Check(Level.OK, "containerd", f"{path} absent (containerd not configured)")]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        return [Check(Level.FAIL, "containerd", f"{path}: cannot read: {e}", "fix the file")]
    version = doc.get("version", 1)
    if version not in CONTAINERD_CRI:
        return [Check(Level.WARN, "containerd", f"{path}: config version {version!r}: nvhook "
                      "knows versions 2 and 3", "containerd config migrate")]
    table: object = doc
    for key in CONTAINERD_CRI[version][:-1]:
        table = table.get(key, {}) if isinstance(table, dict) else {}
    table = table if isinstance(table, dict) else {}
    runtimes = table.get("runtimes", {}) if isinstance(table.get("runtimes"), dict) else {}
    default = table.get("default_runtime_name") or CONTAINERD_DEFAULT_RUNTIME
    checks: list[Check] = []
    entry = runtimes.get(RUNTIME_NAME)
    binary = entry.get("options", {}).get("BinaryName") if isinstance(entry, dict) else None
    if not isinstance(entry, dict):
        checks.append(Check(Level.WARN, "containerd", f"{path} (version {version}): no "
                            f"{RUNTIME_NAME} runtime handler",
                            "nvhook install --engine containerd [--default]"))
    elif not _executable(binary):
        checks.append(Check(Level.FAIL, "containerd", f"{path}: handler {RUNTIME_NAME}: "
                            f"BinaryName {binary!r} is not an executable file",
                            "nvhook install --engine containerd"))
    else:
        checks.append(Check(Level.OK, "containerd", f"{path} (version {version}): handler "
                            f"{RUNTIME_NAME}, BinaryName {binary}"))
    if runtimes and default not in runtimes:
        checks.append(Check(Level.FAIL, "containerd", f"default_runtime_name {default!r} has "
                            "no runtime table: the CRI plugin will not load",
                            f"add [...runtimes.{default}] or nvhook install --engine "
                            "containerd"))
    elif default != RUNTIME_NAME:
        checks.append(Check(Level.WARN, "containerd", f"default runtime name is {default!r}: "
                            f"pods without runtimeClassName: {RUNTIME_NAME} bypass nvhook",
                            "nvhook install --engine containerd --default"))
    else:
        checks.append(Check(Level.OK, "containerd", f"default runtime name is {RUNTIME_NAME}"))
    socket = opts.containerd_socket or (CONTAINERD_SOCKET if opts.prefix is None else None)
    if socket is not None and socket.exists():
        res = _ask(["ctr", "--address", str(socket), "plugins", "ls"])
        status = None
        for line in (res.stdout if res is not None else "").splitlines():
            cols = line.split()
            if cols[:2] == ["io.containerd.grpc.v1", "cri"]:
                status = cols[-1]
        if status is None:
            checks.append(Check(Level.WARN, "containerd", f"{socket}: could not "
                                "ask `ctr plugins ls`"))
        else:
            checks.append(Check(Level.OK if status == "ok" else Level.FAIL, "containerd",
                                f"the running containerd's CRI plugin: {status}"))
    return checks
