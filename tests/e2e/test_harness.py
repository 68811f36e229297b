"""Prove the e2e harness against real runc and Podman, with tiny shell hooks (not nvhook)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from .harness import (
    HOOK_ENV,
    BundleFactory,
    Podman,
    Recorder,
    bind_mount,
    find_binary,
    new_container_id,
    run_runc,
    write_failing_hook,
    write_hooks_dir,
    write_stdin_hook,
)

pytestmark = pytest.mark.e2e

FAIL_LINE = "hookfail: denied"


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under root with its mode, size and symlink target."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            target = os.readlink(p) if p.is_symlink() else ""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, target)
    return out


def hook_entry(path: Path, *args: str, env: list[str] | None = None) -> dict[str, object]:
    return {"path": str(path), "args": [str(path), *args], "env": env or HOOK_ENV, "timeout": 10}


def read_state(record_dir: Path) -> dict[str, object]:
    state = json.loads((record_dir / "stdin.json").read_bytes())
    assert isinstance(state, dict)
    return state


# ---------------------------------------------------------------------------------------------
# runc
# ---------------------------------------------------------------------------------------------


def test_runc_passing_hook_gets_state_and_bundle_cwd(
    bundle_factory: BundleFactory, tmp_path: Path
) -> None:
    record = tmp_path / "hook-record"
    hook = write_stdin_hook(tmp_path / "hook.sh", record)
    bundle = bundle_factory(
        args=["/bin/echo", "hello"],
        env=["PATH=/bin"],
        hooks={"prestart": [hook_entry(hook)]},
        annotations={"nvhook.test/key": "value"},
    )
    cid = new_container_id()

    res = run_runc(bundle, cid)

    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello\n"
    assert (record / "called").exists()
    state = read_state(record)
    assert state["id"] == cid
    assert state["bundle"] == str(bundle)
    assert state["status"] == "creating"  # runc 1.1.x
    assert isinstance(state["pid"], int) and state["pid"] > 0
    assert state["annotations"] == {"nvhook.test/key": "value"}
    assert (record / "cwd").read_text().strip() == str(bundle)


def test_runc_failing_hook_aborts_container(bundle_factory: BundleFactory, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    marker = out / "ran"
    bundle_args = {
        "args": ["/bin/touch", "/mnt/ran"],
        "env": ["PATH=/bin"],
        "mounts_extra": [bind_mount(out, "/mnt")],
    }
    # Control: without the hook the container does create the marker through the bind mount.
    ok = run_runc(bundle_factory(**bundle_args), new_container_id())
    assert ok.returncode == 0, ok.stderr
    assert marker.exists()
    marker.unlink()

    hook = write_failing_hook(tmp_path / "fail.sh", message=FAIL_LINE, code=3)
    bundle = bundle_factory(**bundle_args, hooks={"prestart": [hook_entry(hook)]})
    res = run_runc(bundle, new_container_id())

    assert res.returncode != 0
    assert not marker.exists()
    assert res.stdout == ""
    # runc 1.1 logs, logfmt-quoted: error running hook #0: error running hook: exit status 3,
    # stdout: , stderr: hookfail: denied\n
    assert "error running hook #0" in res.stderr
    assert "exit status 3" in res.stderr
    assert FAIL_LINE in res.stderr


def test_runc_container_env_is_config_env(bundle_factory: BundleFactory) -> None:
    env = ["PATH=/bin", "FOO=bar", "NVIDIA_VISIBLE_DEVICES=all", "X=a=b", "EMPTY="]
    bundle = bundle_factory(args=["/bin/env"], env=env)

    res = run_runc(bundle, new_container_id())

    assert res.returncode == 0, res.stderr
    # runc adds HOME (from /etc/passwd) when the config has none.
    assert res.stdout.splitlines() == [*env, "HOME=/root"]


def test_runc_dedups_env_last_wins(bundle_factory: BundleFactory) -> None:
    """runc 1.1 setenv()s each entry before exec: a duplicate key keeps its first position and
    its last value, so the process (like NVIDIA's hook) sees the last one."""
    bundle = bundle_factory(args=["/bin/env"], env=["PATH=/bin", "A=1", "B=x", "A=2"])

    res = run_runc(bundle, new_container_id())

    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["PATH=/bin", "A=2", "B=x", "HOME=/root"]


def test_runc_recording_delegate(
    bundle_factory: BundleFactory, recorder: Recorder, rootfs: Path
) -> None:
    before = snapshot(rootfs)
    env = ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_VISIBLE_DEVICES=all"]
    hook_env = [*HOOK_ENV, "EXTRA=1"]
    bundle = bundle_factory(
        args=["/bin/true"],
        env=env,
        hooks={
            "prestart": [hook_entry(recorder.path, "-config=/x.toml", "prestart", env=hook_env)]
        },
        caps_bounding=["CAP_SYS_ADMIN"],
    )
    cid = new_container_id()
    assert recorder.read() is None

    res = run_runc(bundle, cid)

    assert res.returncode == 0, res.stderr
    rec = recorder.read()
    assert rec is not None
    assert rec.state is not None and rec.state["id"] == cid
    assert rec.state["bundle"] == str(bundle)
    assert rec.argv == [str(recorder.path), "-config=/x.toml", "prestart"]
    assert rec.env_list == hook_env  # exactly the hook's env, nothing from runc's
    assert rec.env["EXTRA"] == "1"
    assert rec.cwd == str(bundle)
    assert rec.config_env == env and rec.error is None
    assert rec.config_env_map["NVIDIA_VISIBLE_DEVICES"] == "all"
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["capabilities"]["bounding"] == ["CAP_SYS_ADMIN"]
    # The shared rootfs is mounted read-only and has every mountpoint: runc wrote nothing to it.
    assert snapshot(rootfs) == before


def test_runc_timeout_cleans_up(bundle_factory: BundleFactory, tmp_path: Path) -> None:
    runc = find_binary("runc")
    assert runc is not None
    state_root = tmp_path / "runc-state"
    bundle = bundle_factory(args=["/bin/sleep", "600"], env=["PATH=/bin"])
    cid = new_container_id()

    with pytest.raises(subprocess.TimeoutExpired):
        run_runc(bundle, cid, timeout=1, state_root=state_root)

    listed = subprocess.run(
        [runc, "--root", str(state_root), "list", "-q"], capture_output=True, text=True, check=True
    )
    assert listed.stdout.split() == []
    assert not (state_root / cid).exists()


# ---------------------------------------------------------------------------------------------
# Podman (hooks.d)
# ---------------------------------------------------------------------------------------------


def test_podman_passing_hook_gets_state_and_bundle_cwd(
    podman: Podman, tmp_path: Path, rootfs: Path
) -> None:
    before = snapshot(rootfs)
    record = tmp_path / "hook-record"
    hook = write_stdin_hook(tmp_path / "hook.sh", record)
    hooks_dir = write_hooks_dir(tmp_path / "hooks.d", "50-record", hook_entry(hook))

    res = podman.run(hooks_dir, ["/bin/echo", "hello"], annotations={"nvhook.test/key": "value"})

    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello\n"
    state = read_state(record)
    assert isinstance(state["id"], str) and re.fullmatch(r"[0-9a-f]{64}", state["id"])
    assert isinstance(state["bundle"], str) and state["bundle"].endswith("/userdata")
    assert state["bundle"].startswith(str(podman.store.base))  # isolated storage
    assert state["status"] == "creating"
    assert isinstance(state["annotations"], dict)
    assert state["annotations"]["nvhook.test/key"] == "value"
    assert state["annotations"]["io.container.manager"] == "libpod"
    assert (record / "cwd").read_text().strip() == state["bundle"]
    # Podman ran on a private copy of the rootfs; --rm removed the container.
    assert snapshot(rootfs) == before
    assert podman.store.podman("ps", "-aq").stdout.split() == []


def test_podman_failing_hook_exit_126(podman: Podman, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    marker = out / "ran"
    run_args = ["/bin/touch", "/mnt/ran"]
    volume = ["--volume", f"{out}:/mnt"]
    # Control: with no hooks the container does create the marker through the volume.
    empty_hooks = tmp_path / "no-hooks.d"
    empty_hooks.mkdir()
    ok = podman.run(empty_hooks, run_args, extra=volume)
    assert ok.returncode == 0, ok.stderr
    assert marker.exists()
    marker.unlink()

    hook = write_failing_hook(tmp_path / "fail.sh", message=FAIL_LINE, code=3)
    hooks_dir = write_hooks_dir(tmp_path / "hooks.d", "50-fail", hook_entry(hook))
    res = podman.run(hooks_dir, run_args, extra=volume)

    # Podman 4.3.1 prints on stderr (one line) and exits 126:
    # Error: OCI runtime error: runc: runc create failed: unable to start container process:
    # error during container init: error running hook #0: error running hook: exit status 3,
    # stdout: , stderr: hookfail: denied
    assert res.returncode == 126, res.stderr
    assert not marker.exists()
    assert res.stdout == ""
    assert "OCI runtime error" in res.stderr
    assert "exit status 3" in res.stderr
    assert FAIL_LINE in res.stderr
    assert podman.store.podman("ps", "-aq").stdout.split() == []


def test_podman_env_and_recording_delegate(
    podman: Podman, recorder: Recorder, tmp_path: Path
) -> None:
    hook_env = [*HOOK_ENV, "EXTRA=1"]
    hooks_dir = write_hooks_dir(
        tmp_path / "hooks.d", "50-delegate", hook_entry(recorder.path, "prestart", env=hook_env)
    )
    env = ["FOO=bar", "NVIDIA_VISIBLE_DEVICES=all"]

    res = podman.run(hooks_dir, ["/bin/env"], env=env)

    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert set(env) <= set(lines)
    rec = recorder.read()
    assert rec is not None and rec.state is not None
    assert rec.argv == [str(recorder.path), "prestart"]
    assert rec.env_list == hook_env
    assert rec.cwd == rec.state["bundle"]
    assert rec.config_env is not None
    # What the container printed is what the hook saw in config.json. With --rootfs Podman 4.3
    # adds PATH, TERM=xterm, HOSTNAME and HOME (but not container=podman).
    assert sorted(lines) == sorted(rec.config_env)
    assert {"TERM=xterm", "HOME=/root"} <= set(rec.config_env)


def test_podman_timeout_cleans_up(podman: Podman, tmp_path: Path) -> None:
    runc = find_binary("runc")
    assert runc is not None
    hooks_dir = tmp_path / "no-hooks.d"
    hooks_dir.mkdir()

    with pytest.raises(subprocess.TimeoutExpired):
        podman.run(hooks_dir, ["/bin/sleep", "600"], timeout=2)

    assert podman.store.podman("ps", "-aq").stdout.split() == []
    # Podman's runc keeps its state in the default /run/runc: nothing of ours may be left there.
    listed = subprocess.run(
        [runc, "list", "--format", "json"], capture_output=True, text=True, check=True
    )
    ours = [
        c["id"]
        for c in json.loads(listed.stdout or "null") or []
        if c["bundle"].startswith(str(podman.store.base))
    ]
    assert ours == []
