"""Helpers for end-to-end tests that run real containers with runc and Podman.

Everything here drives the real binaries (Debian's `runc`, `busybox-static`, `podman`; see
scripts/ensure-system-deps.sh) and needs root. Nothing here sleeps: every wait is on a process.

Sandbox notes (Debian 12, runc 1.1.5, Podman 4.3.1, firecracker VM, cgroup v1, no systemd,
no CAP_SYS_RESOURCE, no /dev/log) that shaped `run_podman`:
- Podman's default rlimits (nofile/nproc up to 1048576 hard) exceed the sandbox's hard limits and
  raising them needs CAP_SYS_RESOURCE, so runc fails with `error setting rlimit type 7 (then 6):
  operation not permitted` unless both `--ulimit nofile=...` and `--ulimit nproc=...` are given.
- `--cgroup-manager=cgroupfs`: there is no systemd. (Podman picks cgroupfs on its own here, but
  say so explicitly for hosts where systemd is PID 1 but not usable.) Podman leaves an empty
  `libpod_parent` cgroup behind under each v1 controller; harmless.
- `--network none`: the default bridge network makes netavark add iptables chains and a bridge to
  the host; the tests need no network, so do not touch the host's.
- Storage is isolated per `PodmanStore` (`--root/--runroot/--tmpdir`, `--storage-driver vfs`,
  `--events-backend none`, `CONTAINERS_STORAGE_CONF` pointing at our own file), so the tests
  neither read nor pollute /var/lib/containers, /run/containers or /run/libpod. With `--rootfs`
  no image layers are used; vfs mounts nothing, so the store can be deleted with rmtree.
- Podman with `--rootfs` writes into the rootfs (mountpoints /etc/hosts, /etc/hostname,
  /etc/resolv.conf, /etc/mtab, /run/.containerenv), so every run gets its own copy.
- Podman refuses a runroot longer than 50 characters, so a store cannot live under pytest's
  tmp_path (/tmp/pytest-of-root/pytest-10/... is already too long): `PodmanStore.create()`.
- Not isolated: Podman's runc keeps its state in the default /run/runc, and rootful Podman's
  locks are in /dev/shm/libpod_lock. Killed between `runc create` and recording that in its
  database, Podman forgets the runc container, which then stays "created" under /run/runc with
  its conmon waiting forever (seen on most kills in the first ~0.3 s); `run_podman` therefore
  passes `--cidfile` and after a timeout also runs `runc delete --force <id>`.
- Exited conmons linger a moment as zombies of PID 1 (the sandbox's init reaps lazily); harmless.
- `--log-level=debug` makes each run take 20 s more here (conmon waits on its syslog, and there is
  no /dev/log); do not use it for routine runs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUSYBOX",
    "HOOK_ENV",
    "PODMAN_BASE_ARGS",
    "BundleFactory",
    "Podman",
    "PodmanStore",
    "Record",
    "Recorder",
    "bind_mount",
    "copy_rootfs",
    "find_binary",
    "make_bundle",
    "make_rootfs",
    "new_container_id",
    "podman_available",
    "read_record",
    "run_podman",
    "run_runc",
    "runc_spec_template",
    "write_failing_hook",
    "write_hooks_dir",
    "write_recording_delegate",
    "write_stdin_hook",
]

#: Where busybox-static puts its binary on Debian.
BUSYBOX = Path("/bin/busybox")

#: Hooks get exactly their `env` list (runc) or an empty env (Podman's own stages): give them a
#: PATH explicitly.
HOOK_ENV: list[str] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The Podman command line seen working here, minus storage flags and the command.
PODMAN_BASE_ARGS: tuple[str, ...] = ("--runtime", "runc", "--cgroup-manager=cgroupfs")
_PODMAN_RUN_ARGS: tuple[str, ...] = (
    "--rm",
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
)


def find_binary(name: str) -> str | None:
    """`shutil.which` that also looks in the sbin dirs (runc is /usr/sbin/runc on Debian)."""
    path = os.environ.get("PATH", "")
    return shutil.which(name, path=f"{path}:{_SYSTEM_PATH}" if path else _SYSTEM_PATH)


def new_container_id(prefix: str = "nvhook-e2e") -> str:
    """A container id/name that no other test (or earlier run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _run_group(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cleanup: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run cmd in its own process group, stdin from /dev/null, capturing text output.

    On timeout: kill the whole group, call `cleanup()` (which must kill whatever lives outside the
    group and may still hold the output pipes, e.g. the container), collect what was printed and
    raise `TimeoutExpired` with it. The caller's own cleanup (container delete) runs in `finally`.
    """
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        if cleanup is not None:
            cleanup()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            # Something outside the group still holds the pipes: give up on the output.
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            proc.wait()
            out, err = "", ""
        raise subprocess.TimeoutExpired(list(cmd), timeout, out, err) from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


# --------------------------------------------------------------------------------------------
# Rootfs
# --------------------------------------------------------------------------------------------


def _elf_interpreter(path: Path) -> bytes | None:
    """The PT_INTERP of an x86-64/aarch64 ELF64 little-endian file, None when static."""
    with path.open("rb") as f:
        ident = f.read(64)
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            raise ValueError(f"{path}: not a little-endian ELF64 file")
        (e_phoff,) = struct.unpack_from("<Q", ident, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", ident, 54)
        for i in range(e_phnum):
            f.seek(e_phoff + i * e_phentsize)
            p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack(
                "<IIQQQQ", f.read(40)
            )
            if p_type == 3:  # PT_INTERP
                f.seek(p_offset)
                return f.read(p_filesz).rstrip(b"\0")
    return None


def make_rootfs(dest: Path, busybox: Path = BUSYBOX) -> Path:
    """Build a minimal busybox rootfs at dest (created; must not exist or be empty).

    Layout: /bin/busybox plus one relative symlink per applet (`busybox --list`); /sbin, /usr/bin
    and /usr/sbin are symlinks to /bin; empty /proc /dev /sys /tmp /run /mnt /root /var/tmp;
    /etc/passwd and /etc/group. Every mountpoint runc's default spec needs exists, so runc with a
    read-only root writes nothing into it and one rootfs can be shared by many runc bundles.
    Use /mnt (or /tmp) as the destination of extra bind mounts for the same reason.
    """
    if not busybox.is_file():
        raise FileNotFoundError(f"{busybox} is missing: install busybox-static")
    interp = _elf_interpreter(busybox.resolve())
    if interp is not None:
        raise RuntimeError(
            f"{busybox} is dynamically linked (interpreter {interp.decode()}): the rootfs needs "
            "Debian's busybox-static, not busybox"
        )
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()

    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    dest.chmod(0o755)
    bindir = dest / "bin"
    bindir.mkdir()
    shutil.copy2(busybox, bindir / "busybox")
    (bindir / "busybox").chmod(0o755)
    for name in applets:
        if name != "busybox" and "/" not in name:
            (bindir / name).symlink_to("busybox")
    (dest / "sbin").symlink_to("bin")
    (dest / "usr").mkdir()
    (dest / "usr" / "bin").symlink_to("../bin")
    (dest / "usr" / "sbin").symlink_to("../bin")
    for d in ("proc", "dev", "sys", "run", "mnt", "root", "etc", "var"):
        (dest / d).mkdir(mode=0o755)
    (dest / "root").chmod(0o700)
    for d in (dest / "tmp", dest / "var" / "tmp"):
        d.mkdir()
        d.chmod(0o1777)
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return dest


def copy_rootfs(src: Path, dest: Path) -> Path:
    """A private, writable copy of a rootfs: dirs and files copied, symlinks kept as symlinks.

    Symlinks are hard-linked rather than re-created: a symlink cannot be changed in place, so
    sharing its inode is safe, and creating one costs ~0.3 ms here (the ~270 applet links took
    ~200 ms) against ~0.03 ms for a hard link. Falls back to new symlinks across filesystems.
    """

    def copy_dir(s: Path, d: Path) -> None:
        d.mkdir()
        for entry in os.scandir(s):
            target = d / entry.name
            if entry.is_symlink():
                try:
                    os.link(entry.path, target, follow_symlinks=False)
                except OSError:
                    os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir():
                copy_dir(Path(entry.path), target)
            else:
                shutil.copy2(entry.path, target)
        shutil.copystat(s, d)

    copy_dir(src, dest)
    return dest


# --------------------------------------------------------------------------------------------
# runc bundles
# --------------------------------------------------------------------------------------------


@functools.cache
def _runc_spec_text() -> str:
    runc = find_binary("runc")
    if runc is None:
        raise FileNotFoundError("runc is not installed (scripts/ensure-system-deps.sh)")
    with tempfile.TemporaryDirectory(prefix="nvhook-spec-") as tmp:
        subprocess.run(
            [runc, "spec", "--rootless=false", "--bundle", tmp],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return (Path(tmp) / "config.json").read_text()


def runc_spec_template() -> dict[str, Any]:
    """A fresh copy of `runc spec --rootless=false` (generated once per process)."""
    return json.loads(_runc_spec_text())


def make_bundle(
    dir: Path,
    rootfs: Path,
    *,
    args: list[str],
    env: list[str],
    hooks: dict[str, Any] | None = None,
    caps_bounding: list[str] | None = None,
    mounts_extra: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
) -> Path:
    """Write dir/config.json for a runc container over rootfs; return dir.

    Based on `runc spec`: read-only root at the absolute rootfs path, no terminal, the given
    process args and env (written as is: duplicates and odd entries included), optional hooks
    (`{"prestart": [{"path": ..., "args": [...], "env": [...], "timeout": 10}]}`), optional
    `process.capabilities.bounding` (the other sets are left as runc spec has them), extra
    mounts appended after runc's defaults (their destinations must exist in the rootfs, e.g. /mnt,
    or runc creates them inside the shared rootfs), and optional annotations.
    """
    dir.mkdir(parents=True, exist_ok=True)
    config = runc_spec_template()
    config["root"] = {"path": str(rootfs.resolve()), "readonly": True}
    process = config["process"]
    process["terminal"] = False
    process["args"] = list(args)
    process["env"] = list(env)
    if caps_bounding is not None:
        process["capabilities"]["bounding"] = list(caps_bounding)
    if hooks is not None:
        config["hooks"] = copy.deepcopy(hooks)
    if mounts_extra:
        config["mounts"].extend(copy.deepcopy(mounts_extra))
    if annotations is not None:
        config["annotations"] = dict(annotations)
    (dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return dir


def bind_mount(source: Path, destination: str, *, readonly: bool = False) -> dict[str, Any]:
    """An OCI bind mount entry for `mounts_extra`."""
    options = ["rbind", "ro" if readonly else "rw"]
    return {"destination": destination, "type": "bind", "source": str(source), "options": options}


def run_runc(
    bundle: Path,
    container_id: str,
    timeout: float = 30,
    *,
    state_root: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`runc --root STATE run --bundle BUNDLE ID` with stdin from /dev/null; text output.

    STATE is a fresh temporary dir unless state_root is given. The container is always deleted
    (`runc delete -f`), also on failure or timeout (then `TimeoutExpired` is raised carrying the
    output so far). runc prints hook output only when a hook fails, inside its error message.
    """
    runc = find_binary("runc")
    if runc is None:
        raise FileNotFoundError("runc is not installed (scripts/ensure-system-deps.sh)")
    own_state = state_root is None
    root = Path(tempfile.mkdtemp(prefix="nvhook-runc-")) if state_root is None else state_root
    root.mkdir(parents=True, exist_ok=True)

    def delete() -> None:
        subprocess.run(
            [runc, "--root", str(root), "delete", "-f", container_id],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )

    cmd = [runc, "--root", str(root), "run", "--bundle", str(bundle), container_id]
    try:
        return _run_group(cmd, timeout=timeout, cleanup=delete)
    finally:
        delete()
        if own_state:
            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------


def _write_executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)  # never exec a half-written file
    return path


def write_stdin_hook(path: Path, record_dir: Path) -> Path:
    """A /bin/sh hook that saves its stdin to record_dir/stdin.json, its cwd to record_dir/cwd,
    touches record_dir/called last, and exits 0. Give it HOOK_ENV (it needs cat and pwd)."""
    rd = shlex.quote(str(record_dir))
    return _write_executable(
        path,
        "#!/bin/sh\nset -e\n"
        f"mkdir -p {rd}\n"
        f"cat > {rd}/stdin.json\n"
        f"pwd > {rd}/cwd\n"
        f": > {rd}/called\n"
        "exit 0\n",
    )


def write_failing_hook(path: Path, *, message: str = "hookfail: denied", code: int = 3) -> Path:
    """A /bin/sh hook that prints message to stderr and exits with code."""
    return _write_executable(
        path, f"#!/bin/sh\necho {shlex.quote(message)} >&2\nexit {int(code)}\n"
    )


_DELEGATE = '''\
#!{python} -I
"""Recording stand-in for NVIDIA's hook, written by tests/e2e/harness.py."""
import json
import os
import sys

RECORD = {record!r}
EXIT_CODE = {exit_code!r}
STDERR = {stderr!r}


def put(name, value):
    with open(os.path.join(RECORD, name), "w") as f:
        json.dump(value, f)


def main():
    os.makedirs(RECORD, exist_ok=True)
    data = sys.stdin.buffer.read()
    with open(os.path.join(RECORD, "stdin.json"), "wb") as f:
        f.write(data)
    put("argv.json", sys.argv)
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
        env = [e.decode("utf-8", "surrogateescape") for e in raw.split(b"\\0") if e]
    except OSError:
        env = ["%s=%s" % kv for kv in os.environ.items()]
    put("env.json", env)
    put("cwd.json", os.getcwd())
    config_env, error = None, None
    try:
        state = json.loads(data)
        bundle = state.get("bundle") or state.get("bundlePath")
        with open(os.path.join(bundle, "config.json")) as f:
            config_env = json.load(f)["process"].get("env")
    except Exception as exc:
        error = "%s: %s" % (type(exc).__name__, exc)
    put("config_env.json", config_env)
    put("error.json", error)
    open(os.path.join(RECORD, "called"), "w").close()
    if STDERR:
        sys.stderr.write(STDERR + "\\n")
    return EXIT_CODE


sys.exit(main())
'''


def write_recording_delegate(
    path: Path,
    record_dir: Path,
    *,
    exit_code: int = 0,
    stderr: str = "",
) -> Path:
    """Write an executable stand-in for nvidia-container-runtime-hook at path.

    When run it records into record_dir: stdin bytes (the OCI state) -> stdin.json, sys.argv ->
    argv.json (argv[0] is the script path), its environment as an ordered "K=V" list ->
    env.json, its cwd -> cwd.json, `process.env` of `<bundle>/config.json` (bundle, or the old
    bundlePath, from the state) -> config_env.json (null when unreadable; why -> error.json),
    then touches `called`, writes stderr (if any) to stderr and exits with exit_code.
    It runs `sys.executable -I`, so it ignores PYTHON* env vars and needs no PATH.
    """
    record_dir.mkdir(parents=True, exist_ok=True)
    text = _DELEGATE.format(
        python=sys.executable, record=str(record_dir), exit_code=exit_code, stderr=stderr
    )
    return _write_executable(path, text)


@dataclass(frozen=True)
class Record:
    """What the recording delegate saw on one call."""

    stdin: bytes
    state: dict[str, Any] | None  # stdin parsed as JSON; None when it was not valid JSON
    argv: list[str]
    env_list: list[str]  # its own environment, in order, duplicates kept
    cwd: str
    config_env: list[str] | None  # process.env in <bundle>/config.json when it ran
    error: str | None  # why config_env could not be read

    @property
    def env(self) -> dict[str, str]:
        """env_list as a mapping (last duplicate wins)."""
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in self.env_list)

    @property
    def config_env_map(self) -> dict[str, str]:
        """config_env as NVIDIA's hook reads it: last duplicate wins."""
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in self.config_env or [])


def read_record(record_dir: Path) -> Record | None:
    """The delegate's record in record_dir, or None when it was not called."""
    if not (record_dir / "called").exists():
        return None

    def load(name: str) -> Any:
        return json.loads((record_dir / name).read_text())

    raw = (record_dir / "stdin.json").read_bytes()
    try:
        state = json.loads(raw)
    except ValueError:
        state = None
    return Record(
        stdin=raw,
        state=state if isinstance(state, dict) else None,
        argv=load("argv.json"),
        env_list=load("env.json"),
        cwd=load("cwd.json"),
        config_env=load("config_env.json"),
        error=load("error.json"),
    )


def write_hooks_dir(
    dir: Path,
    name: str,
    hook: dict[str, Any],
    *,
    stages: Sequence[str] = ("prestart",),
    when: dict[str, Any] | None = None,
) -> Path:
    """Write dir/<name>.json as a containers/common 1.0.0 hook; return dir (for --hooks-dir).

    hook is `{"path": ..., "args": [...], "env": [...], "timeout": N}`; `when` defaults to
    `{"always": true}`. Podman silently skips an entry whose path does not exist.
    """
    dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": "1.0.0",
        "hook": hook,
        "when": when if when is not None else {"always": True},
        "stages": list(stages),
    }
    filename = name if name.endswith(".json") else f"{name}.json"
    (dir / filename).write_text(json.dumps(doc, indent=2) + "\n")
    return dir


def precreate_hooks(tmp_path: Path, inventory: Mapping[str, Any], tables: str = ""
                    ) -> tuple[Path, Path]:
    """(hooks dir whose one entry runs nvhook's precreate stage, its nvhook config): GPUs
    from ``inventory`` (the dry-run file format), ``tables`` (policy, kubernetes) on top,
    the audit log and syslog socket in ``tmp_path``."""
    inventory_file = tmp_path / "inventory.json"
    inventory_file.write_text(json.dumps(inventory))
    config = tmp_path / "config.toml"
    config.write_text(f'{tables}\n[inventory]\nsource = "file"\nfile = "{inventory_file}"\n'
                      f'[delegate]\npath = ""\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
                      f'syslog-socket = "{tmp_path / "syslog.sock"}"\n')
    nvhook = Path(sys.executable).with_name("nvhook")
    hook = {"path": str(nvhook), "args": ["nvhook", "--config", str(config), "precreate"],
            "env": ["PATH=/usr/bin:/bin"], "timeout": 10}
    return write_hooks_dir(tmp_path / "hooks", "nvrw-precreate", hook,
                           stages=["precreate"]), config


# --------------------------------------------------------------------------------------------
# Podman
# --------------------------------------------------------------------------------------------


@functools.cache
def podman_available() -> bool:
    """podman and runc are installed and `podman --version` works."""
    podman = find_binary("podman")
    if podman is None or find_binary("runc") is None:
        return False
    try:
        res = subprocess.run(
            [podman, "--version"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


@dataclass(frozen=True)
class PodmanStore:
    """An isolated Podman state/storage tree under base (nothing in /var/lib/containers).

    Podman refuses a runroot longer than 50 characters ("the specified runroot is longer than
    50 characters"), so base must be short: pytest's tmp_path is not (use `PodmanStore.create`).
    """

    base: Path

    @classmethod
    def create(cls) -> PodmanStore:
        """A store in a new short-named dir under /tmp; the caller removes `base` when done."""
        tmp = "/tmp" if os.path.isdir("/tmp") else None
        return cls(Path(tempfile.mkdtemp(prefix="nvhook-podman-", dir=tmp)))

    def __post_init__(self) -> None:
        runroot = str(self.base / "runroot")
        if len(runroot) > 50:
            raise ValueError(f"Podman needs a runroot of at most 50 characters: {runroot}")
        self.base.mkdir(parents=True, exist_ok=True)
        conf = self.base / "storage.conf"
        if not conf.exists():
            conf.write_text(
                "[storage]\n"
                'driver = "vfs"\n'
                f'graphroot = "{self.base / "root"}"\n'
                f'runroot = "{self.base / "runroot"}"\n'
            )

    def global_args(self) -> list[str]:
        """Podman's global flags for this store."""
        return [
            "--root",
            str(self.base / "root"),
            "--runroot",
            str(self.base / "runroot"),
            "--tmpdir",
            str(self.base / "tmp"),
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
        ]

    def env(self) -> dict[str, str]:
        """The environment to run podman with (host storage.conf not read)."""
        env = dict(os.environ)
        env["CONTAINERS_STORAGE_CONF"] = str(self.base / "storage.conf")
        env["PATH"] = f"{env['PATH']}:{_SYSTEM_PATH}" if env.get("PATH") else _SYSTEM_PATH
        return env

    def podman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run another podman command (ps, rm, ...) against this store."""
        podman = find_binary("podman")
        if podman is None:
            raise FileNotFoundError("podman is not installed")
        return subprocess.run(
            [podman, *PODMAN_BASE_ARGS, *self.global_args(), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )


@contextlib.contextmanager
def _store(store: PodmanStore | None) -> Iterator[PodmanStore]:
    if store is not None:
        yield store
        return
    st = PodmanStore.create()
    try:
        yield st
    finally:
        shutil.rmtree(st.base, ignore_errors=True)


def run_podman(
    rootfs: Path,
    hooks_dir: Path,
    args: list[str],
    env: list[str] | None = None,
    timeout: float = 60,
    annotations: dict[str, str] | None = None,
    extra: list[str] | None = None,
    *,
    store: PodmanStore | None = None,
    name: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run args in a Podman container over a private copy of rootfs with --hooks-dir hooks_dir.

    The command line (seen working here as root):
      podman --runtime runc --cgroup-manager=cgroupfs <store flags> --hooks-dir DIR
        run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
        --name NAME [--env K=V]... [--annotation K=V]... [EXTRA...] --rootfs COPY ARGS...
    env entries are "K=V" strings passed with --env (with --rootfs Podman 4.3 adds its own:
    PATH, TERM=xterm, HOME, HOSTNAME). `extra` goes after the defaults, so it can override them
    (`--network host`, ...). store defaults to a throwaway `PodmanStore`. The container is
    removed even on timeout (`podman rm -f`), and the rootfs copy deleted.
    On a failing prestart hook Podman exits 126 and prints on stderr
    `Error: OCI runtime error: runc: runc create failed: ... error running hook #0: error running
    hook: exit status 3, stdout: , stderr: <hook's stderr>`.
    """
    podman = find_binary("podman")
    if podman is None:
        raise FileNotFoundError("podman is not installed (scripts/ensure-system-deps.sh)")
    name = name or new_container_id()
    with _store(store) as st, tempfile.TemporaryDirectory(prefix="nvhook-podman-rootfs-") as tmp:
        private = copy_rootfs(rootfs, Path(tmp) / "rootfs")
        cidfile = Path(tmp) / "cid"
        cmd = [
            podman,
            *PODMAN_BASE_ARGS,
            *st.global_args(),
            "--hooks-dir",
            str(hooks_dir),
            "run",
            *_PODMAN_RUN_ARGS,
            "--name",
            name,
            "--cidfile",
            str(cidfile),
        ]
        for item in env or []:
            cmd += ["--env", item]
        for key, value in (annotations or {}).items():
            cmd += ["--annotation", f"{key}={value}"]
        cmd += [*(extra or []), "--rootfs", str(private), *args]

        def remove() -> None:
            st.podman("rm", "--force", "--time", "0", "--ignore", name, timeout=60)
            # Killed between `runc create` and recording that in its database, Podman forgets
            # the runc container (left "created" under /run/runc, with conmon waiting on it).
            # The cidfile is written before the container is created in runc, so delete by id.
            try:
                cid = cidfile.read_text().strip()
            except FileNotFoundError:
                return
            runc = find_binary("runc")
            if cid and runc is not None:
                subprocess.run(
                    [runc, "delete", "--force", cid],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=30,
                    check=False,
                )

        # `--rm` removes the container when podman returns normally, even when it fails to
        # start it; remove it here too after a failure, a timeout or an interrupt.
        done = False
        try:
            res = _run_group(cmd, timeout=timeout, env=st.env(), cleanup=remove)
            done = res.returncode == 0
            return res
        finally:
            if not done:
                remove()


# --------------------------------------------------------------------------------------------
# Fixture types (see conftest.py)
# --------------------------------------------------------------------------------------------

#: `bundle_factory(**make_bundle kwargs) -> bundle dir` over the session rootfs.
BundleFactory = Callable[..., Path]


@dataclass(frozen=True)
class Recorder:
    """A recording stand-in for NVIDIA's hook (`path`) and where it records (`record_dir`)."""

    path: Path
    record_dir: Path

    def read(self) -> Record | None:
        """The record of the last call, None when it was not called."""
        return read_record(self.record_dir)


@dataclass(frozen=True)
class Podman:
    """run_podman bound to the session's rootfs and isolated store."""

    rootfs: Path
    store: PodmanStore

    def run(
        self, hooks_dir: Path, args: list[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return run_podman(self.rootfs, hooks_dir, args, store=self.store, **kwargs)
