"""Real container daemons for the end-to-end tests: containerd and dockerd, each on a private
socket with its root, state and exec dirs under one temp dir, never the host's defaults.

A daemon is started in its own session and counts as up when it logs that it is (containerd:
"containerd successfully booted", dockerd: "API listen on"): nothing here sleeps or polls on
a clock. `stop()` kills the daemon's whole process group and waits for it; the fixtures call it
in `finally`, so no daemon outlives a failing test. Shims that containerd starts (they setsid)
are ended first by deleting every task and container through the daemon itself.

Not isolated (containerd 1.6 hard-codes it): each running shim's socket lives in
/run/containerd/s/<hash> while its container runs; the shim removes it when it exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from .harness import find_binary

T = TypeVar("T")

BOOT_TIMEOUT = 120.0  # a watchdog only: a daemon that never says it is up is killed


class DaemonError(Exception):
    """The daemon exited or never said it was up; carries the tail of its log."""


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    _drain: threading.Thread | None = field(default=None, repr=False)

    @classmethod
    def start(cls, name: str, cmd: Sequence[str], ready: bytes, log: Path,
              env: dict[str, str] | None = None) -> Daemon:
        """Start ``cmd`` and return once a line of its stderr contains ``ready``."""
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True, env=env)
        daemon = cls(name, proc, log)
        watchdog = threading.Timer(BOOT_TIMEOUT, daemon._kill)
        watchdog.start()
        up = False
        out = log.open("ab")
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                out.write(line)
                if ready in line:
                    up = True
                    break
        finally:
            watchdog.cancel()
            out.flush()
        if not up:
            daemon.stop()
            out.close()
            raise DaemonError(f"{name} did not start: {daemon.tail()}")
        # Keep reading, or the daemon blocks on a full stderr pipe.
        daemon._drain = threading.Thread(target=_copy, args=(proc.stderr, out), daemon=True)
        daemon._drain.start()
        return daemon

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it has not exited after a while."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._kill()
                self.proc.wait()
        self._kill()  # whatever else is left in its group
        if self._drain is not None:
            self._drain.join(timeout=30)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _copy(src: object, dst: object) -> None:
    with contextlib.suppress(ValueError, OSError):
        for line in src:  # type: ignore[attr-defined]
            dst.write(line)  # type: ignore[attr-defined]
            dst.flush()  # type: ignore[attr-defined]
    with contextlib.suppress(OSError):
        dst.close()  # type: ignore[attr-defined]


def start_or_skip(name: str, why_not: str | None, start: Callable[[], T]) -> T:
    """``start()``, skipping the test with a clear reason when the daemon is not installed
    or cannot start on this machine (the reason shows in pytest's summary with -rs)."""
    if why_not is not None:
        pytest.skip(f"{name} cannot run here: {why_not}")
    try:
        return start()
    except DaemonError as e:
        pytest.skip(f"{name} cannot start here: {e}")


def oci_archive(rootfs: Path, name: str) -> bytes:
    """An OCI image layout tarball (one uncompressed layer: ``rootfs``) that `ctr images
    import` reads, named ``name`` through containerd's image-name annotation."""
    import hashlib
    import io
    import json
    import tarfile

    layer = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True,
                           check=True, timeout=120).stdout

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [digest(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(layer), "size": len(layer)}],
    }).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest),
        "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}]})
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index.encode()}
        for blob in (layer, config, manifest):
            files[f"blobs/sha256/{digest(blob).split(':')[1]}"] = blob
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def short_tempdir(prefix: str) -> Path:
    """A temp dir with a short path: a unix socket path must fit in 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass
class Containerd:
    base: Path
    daemon: Daemon
    ctr_binary: str

    @property
    def address(self) -> Path:
        return self.base / "c.sock"

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.ctr_binary, "--address", str(self.address), "--namespace",
                               "nvhook-e2e", *args], capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)

    def cri_status(self) -> str:
        """The status column of the CRI plugin in `ctr plugins ls` ("ok", "error"...)."""
        out = self.ctr("plugins", "ls").stdout
        for line in out.splitlines():
            cols = line.split()
            if len(cols) >= 4 and cols[0] == "io.containerd.grpc.v1" and cols[1] == "cri":
                return cols[-1]
        return f"missing from: {out!r}"

    def stop(self) -> None:
        try:
            if self.daemon.proc.poll() is None:
                tasks = self.ctr("tasks", "ls", "-q").stdout.split()
                for task in tasks:
                    self.ctr("tasks", "kill", "-s", "SIGKILL", task)
                    self.ctr("tasks", "delete", "-f", task)
                for c in self.ctr("containers", "ls", "-q").stdout.split():
                    self.ctr("containers", "delete", c)
        finally:
            self.daemon.stop()
            shutil.rmtree(self.base, ignore_errors=True)


def containerd_available() -> str | None:
    """Why containerd cannot run here, or None."""
    for name in ("containerd", "ctr"):
        if find_binary(name) is None:
            return f"{name} is not installed"
    return None


def start_containerd(config: Path | None, base: Path | None = None) -> Containerd:
    """containerd on ``base``/c.sock with root and state under ``base``. ``config`` None: an
    empty file (containerd's built-in defaults, CRI plugin included)."""
    base = base or short_tempdir("nvh-ctd-")
    if config is None:
        config = base / "config.toml"
        config.write_text("version = 2\n")
    binary, ctr = find_binary("containerd"), find_binary("ctr")
    assert binary is not None and ctr is not None
    cmd = [binary, "--config", str(config), "--address", str(base / "c.sock"), "--root",
           str(base / "root"), "--state", str(base / "state"), "--log-level", "info"]
    try:
        daemon = Daemon.start("containerd", cmd, b"containerd successfully booted",
                              base / "log")
    except DaemonError:
        shutil.rmtree(base, ignore_errors=True)
        raise
    return Containerd(base, daemon, ctr)


@dataclass
class Docker:
    base: Path
    daemon: Daemon
    docker_binary: str

    @property
    def host(self) -> str:
        return f"unix://{self.base}/d.sock"

    def docker(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), "DOCKER_CONFIG": str(self.base / "client"),
               "HOME": str(self.base)}
        return subprocess.run([self.docker_binary, "--host", self.host, *args],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL, env=env)

    def stop(self) -> None:
        try:
            if self.daemon.proc.poll() is None:
                ids = self.docker("ps", "-aq").stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids)
        finally:
            self.daemon.stop()
            # dockerd's own containerd runs in its own session: a dockerd that had to be
            # SIGKILLed leaves it behind, so end it by the pid it wrote.
            _kill_pidfile(self.base / "exec" / "containerd" / "containerd.pid")
            # vfs layers are plain directories; nothing stays mounted once dockerd is gone.
            shutil.rmtree(self.base, ignore_errors=True)


def _kill_pidfile(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"containerd" in cmdline and str(pidfile.parent).encode() in cmdline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def docker_client() -> str | None:
    """Debian's docker.io client (matches its 20.10 daemon), else any docker on PATH."""
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else find_binary("docker")


def docker_available() -> str | None:
    if find_binary("dockerd") is None:
        return "dockerd is not installed (Debian package docker.io)"
    if docker_client() is None:
        return "the docker client is not installed"
    return None


def start_docker(config_file: Path, base: Path) -> Docker:
    """dockerd on ``base``/d.sock, data/exec root and pidfile under ``base``, no networking
    (no iptables, no bridge), vfs storage, its own containerd under the exec root."""
    binary, client = find_binary("dockerd"), docker_client()
    assert binary is not None and client is not None
    cmd = [binary, "--host", f"unix://{base}/d.sock", "--data-root", str(base / "root"),
           "--exec-root", str(base / "exec"), "--pidfile", str(base / "docker.pid"),
           "--config-file", str(config_file), "--iptables=false", "--ip-masq=false",
           "--ip-forward=false", "--bridge=none", "--storage-driver=vfs",
           "--log-level=info"]
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(base)}
    daemon = Daemon.start("dockerd", cmd, b"API listen on", base / "log", env=env)
    return Docker(base, daemon, client)
