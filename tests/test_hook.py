"""`nvhook prestart` as a real process: stdin state, decision, rewrite, hand-over."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import fakenvml
import pytest
from conftest import Node, runc_state, write_bundle

HEAVY = ("typer", "click", "jsonschema", "pynvml", "tomlkit", "rich", "grpc", "google", "yaml")

# Runs nvhook's entry point in-process and reports which heavy modules, and which of nvhook's
# own and the stdlib's, it imported (at the hand-over to the delegate too, just before exec),
# and its dataclasses that have no docstring of their own.
PROBE = f"HEAVY = {HEAVY!r}\n" + """
import dataclasses, json, os, sys, runpy
def undocumented():
    # dataclasses writes a missing __doc__ from inspect.signature, at import.
    return sorted(f"{name}.{k}" for name, m in list(sys.modules.items())
                  if name.startswith("nvhook") and m is not None
                  for k, o in vars(m).items()
                  if isinstance(o, type) and dataclasses.is_dataclass(o)
                  and o.__module__ == name and (o.__doc__ or "").startswith(o.__name__ + "("))
def report(code, via="exit"):
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
    import gc
    print(json.dumps({"code": code, "via": via, "heavy": heavy, "modules": sorted(sys.modules),
                      "undocumented": undocumented(), "gc": gc.isenabled()}),
          file=sys.stderr, flush=True)
real_execve, real_exit = os.execve, os._exit
def execve(*args):
    report("exec")
    real_execve(*args)
def _exit(status):
    report(status, via="_exit")
    real_exit(status)
os.execve, os._exit = execve, _exit
sys.argv = ["nvhook", *sys.argv[1:]]
try:
    runpy.run_module("nvhook", run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code
report(code)
"""


def write_delegate(path: Path, record: Path) -> Path:
    """A stand-in for NVIDIA's hook: records argv, env, stdin and the env it reads."""
    path.write_text(
        f"#!{sys.executable} -I\n"
        "import json, os, sys\n"
        "state = sys.stdin.buffer.read()\n"
        "bundle = json.loads(state)['bundle']\n"
        "spec = json.load(open(os.path.join(bundle, 'config.json')))\n"
        f"json.dump({{'argv': sys.argv, 'env': dict(os.environ), 'stdin': state.decode(),\n"
        f"           'spec_env': spec['process']['env']}}, open({str(record)!r}, 'w'))\n"
    )
    path.chmod(0o755)
    return path


def probe(node: Node, args: list[str], stdin: bytes) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], input=stdin,
                          capture_output=True, env=node.env(), timeout=60, check=False)
    return json.loads(proc.stderr.decode().strip().splitlines()[-1])


@pytest.mark.parametrize(
    "env",
    [
        pytest.param(["PATH=/bin", "HOME=/root"], id="no NVIDIA variables"),
        pytest.param([], id="empty env"),
        pytest.param(["MY_NVIDIA_VISIBLE_DEVICES=all", "CUDA_VERSION_X=12", "nvidia=1"],
                     id="look-alike names"),
    ],
)
def test_no_gpu_container_takes_the_fast_path(node: Node, tmp_path: Path, env: list[str]) -> None:
    bundle = write_bundle(tmp_path / "b", env)
    out = probe(node, ["--config", str(node.config), "prestart"], runc_state(bundle))
    # Left through os._exit (entry.leave): no interpreter teardown on any container start.
    assert (out["code"], out["via"], out["heavy"]) == (0, "_exit", [])
    assert node.audit_lines() == []


# What the GPU path of a container with no CRI pod identity and no DRA claim does not
# import: each was made lazy for the hook's start-up time (docs/performance.md), so a change
# that brings one back at module level fails here, not only in the bench.
NOT_ON_THE_GPU_PATH = (
    "nvhook.kube.allocation",  # the kubelet's allocation: a CRI container only
    "nvhook.kube.podresources", "nvhook.kube.checkpoint", "nvhook.kube.cdi",
    "nvhook.leases", "nvhook.ops", "nvhook.cli", "nvhook.config_schema",
    "ctypes.util", "subprocess",  # pynvml's unused find_library (gpus.nvml)
    "socket",  # the syslog datagram goes through _socket
)


@pytest.mark.parametrize("env,code", [
    pytest.param(["NVIDIA_VISIBLE_DEVICES=all"], 3, id="denied (every GPU, unprivileged)"),
    pytest.param([f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"], 0, id="allowed, no delegate"),
    pytest.param([f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"], "exec",
                 id="allowed, handed to the delegate"),
])
def test_gpu_request_takes_the_full_path(node: Node, tmp_path: Path, env: list[str],
                                         code: int | str) -> None:
    if code == "exec":
        delegate = write_delegate(tmp_path / "nvidia-hook", tmp_path / "record.json")
        node.write_config(f'[delegate]\npath = "{delegate}"\n')
    bundle = write_bundle(tmp_path / "b", env)
    out = probe(node, ["--config", str(node.config), "prestart"], runc_state(bundle))
    assert out["code"] == code
    # Exits skip the interpreter's teardown of the GPU path's modules (entry.leave: ~11 ms);
    # an allow handed on execs the delegate, which skips it as well.
    assert out["via"] == ("exit" if code == "exec" else "_exit")
    assert out["gc"] is False  # no cyclic collection passes over the imports (entry.main)
    assert "nvhook.decision.decide" in out["modules"]  # the full path ran
    # The full hook path runs without the typer app, and a valid state needs no jsonschema;
    # a container with no CRI pod identity never loads the kubelet's gRPC client, and one
    # with no DRA claim never loads the CDI spec reader (YAML).
    assert not {"typer", "click", "jsonschema", "rich", "grpc", "google", "yaml"} & set(
        out["heavy"])
    loaded = {m for m in NOT_ON_THE_GPU_PATH
              if m in out["modules"] or any(n.startswith(m + ".") for n in out["modules"])}
    assert loaded == set()
    # A dataclass without a docstring costs an inspect.signature at import (dataclasses
    # writes the docstring from it): about 0.1 ms each on every GPU decision.
    assert out["undocumented"] == []


@pytest.mark.parametrize("stage", ["createContainer", "startContainer"])
@pytest.mark.parametrize("env", [["NVIDIA_VISIBLE_DEVICES=all"], ["PATH=/bin"]],
                         ids=["gpu asked", "no gpu"])
def test_stages_nvidia_refuses_are_refused_with_one_line(node: Node, tmp_path: Path,
                                                          stage: str, env: list[str]) -> None:
    """NVIDIA's hook exits 2 for these; a silent 0 would hide a gate registered there."""
    bundle = write_bundle(tmp_path / "b", env)
    proc = node.run(["--config", str(node.config), stage], stdin=runc_state(bundle))
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines() == [
        f"nvhook: stage {stage} is not one nvhook judges: register nvhook as a prestart or "
        "createRuntime hook (NVIDIA's hook refuses it too)"]
    assert node.audit_lines() == []


@pytest.mark.parametrize("stage", ["poststart"])
def test_other_stages_do_nothing(node: Node, tmp_path: Path, stage: str) -> None:
    bundle = write_bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=all"])
    proc = node.run(["--config", str(node.config), stage], stdin=runc_state(bundle))
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert node.audit_lines() == []


def test_denial_is_one_line_and_leaves_config_untouched(node: Node, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"])
    before = (bundle / "config.json").read_bytes()
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == 3
    lines = proc.stderr.decode().splitlines()
    assert lines == [
        "nvhook: denied: NVIDIA_VISIBLE_DEVICES=all: an unprivileged container may not have "
        'every GPU (policy.all = "privileged")'
    ]
    assert (bundle / "config.json").read_bytes() == before
    [entry] = node.audit_lines()
    assert entry["decision"] == "deny" and entry["container"] == "ctr-1"


def test_allow_execs_the_delegate_with_clean_env_and_same_stdin(node: Node,
                                                                 tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    delegate = write_delegate(tmp_path / "nvidia-hook", record)
    nvct = tmp_path / "nvct.toml"
    nvct.write_text("")  # NVIDIA's config: an empty file means NVIDIA's defaults
    node.write_config(
        f'[delegate]\npath = "{delegate}"\nargs = ["-config={nvct}", "prestart"]\n'
        'env = ["PATH=/usr/bin:/bin", "NVHOOK_TEST=1"]\n'
    )
    bundle = write_bundle(tmp_path / "b", [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}",
                                           "LD_PRELOAD=/evil.so"])
    before = (bundle / "config.json").read_bytes()
    state = runc_state(bundle)
    proc = node.run(["--config", str(node.config), "prestart"], stdin=state,
                    extra={"LD_PRELOAD": "", "PYTHONPATH": "/nowhere", "SECRET": "x"})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(record.read_text())
    assert seen["argv"][1:] == [f"-config={nvct}", "prestart"]
    assert seen["stdin"] == state.decode()
    # Exactly the configured env (plus what the interpreter itself adds).
    assert {k: v for k, v in seen["env"].items() if k != "LC_CTYPE"} == {
        "PATH": "/usr/bin:/bin", "NVHOOK_TEST": "1"}
    assert (bundle / "config.json").read_bytes() == before  # allow: no rewrite
    [entry] = node.audit_lines()
    assert entry["decision"] == "allow" and entry["granted"] == [fakenvml.GPU0_UUID]


def test_rewrite_is_atomic_and_keeps_mode_and_fields(node: Node, tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    delegate = write_delegate(tmp_path / "nvidia-hook", record)
    node.write_config(f'[policy]\nmode = "rewrite"\n[delegate]\npath = "{delegate}"\n')
    env = ["A=1", "NVIDIA_VISIBLE_DEVICES=1", "B=2", "NVIDIA_VISIBLE_DEVICES=0,1:1", "C=3"]
    bundle = write_bundle(tmp_path / "b", env, mode=0o600,
                          extra={"hostname": "h", "linux": {"namespaces": [{"type": "pid"}]}})
    before = json.loads((bundle / "config.json").read_text())
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == 0, proc.stderr
    after = json.loads((bundle / "config.json").read_text())
    canonical = f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID},{fakenvml.MIG_B_UUID}"
    assert after["process"]["env"] == ["A=1", canonical, "B=2", "C=3"]
    after["process"]["env"] = before["process"]["env"]
    assert after == before
    assert stat.S_IMODE(os.stat(bundle / "config.json").st_mode) == 0o600
    assert sorted(os.listdir(bundle)) == ["config.json"]
    assert json.loads(record.read_text())["spec_env"][1] == canonical


def test_fail_closed_when_nvml_is_missing(node: Node, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle),
                    nvml=False)
    assert proc.returncode == 3
    assert proc.stderr.decode().startswith("nvhook: denied: NVIDIA_VISIBLE_DEVICES=GPU-")
    assert "cannot load libnvidia-ml.so.1" in proc.stderr.decode()


def test_granted_gpu_without_delegate_is_an_error(node: Node, tmp_path: Path) -> None:
    node.write_config('[delegate]\npath = "/nonexistent/nvidia-container-runtime-hook"\n')
    bundle = write_bundle(tmp_path / "b", [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == 8
    assert proc.stderr.decode().count("\n") == 1
    assert "NVIDIA's hook is missing" in proc.stderr.decode()


def test_sarus_config_flag_alias(node: Node, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=all"])
    node.write_config('[policy]\nall = "always"\nmode = "audit"\n')
    proc = node.run([f"-config={node.config}", "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == 0, proc.stderr
    assert node.audit_lines()[0]["mode"] == "audit"


def test_failing_audit_write_never_fails_the_container(node: Node, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    node.write_config(f'[audit]\npath = "{blocker}/audit.jsonl"\n')
    bundle = write_bundle(tmp_path / "b", [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"])
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == 0
    assert proc.stderr.decode().startswith("nvhook: warning: audit log")


@pytest.mark.parametrize("code,status,stderr", [
    pytest.param("None", 0, "", id="None: 0"),
    pytest.param("3", 3, "", id="an int: that status"),
    pytest.param("'nvhook: text'", 1, "nvhook: text\n", id="text: printed, 1 (as sys.exit)"),
])
def test_leave_exits_as_sys_exit_does_with_its_output_flushed(code: str, status: int,
                                                              stderr: str) -> None:
    """entry.leave skips the interpreter's teardown (os._exit): what was written to stdout
    and stderr, even without a newline, must still reach their readers."""
    script = ("import sys\nfrom nvhook.entry import leave\n"
              "sys.stdout.write('out, no newline')\nsys.stderr.write('err, no newline|')\n"
              f"leave({code})\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                          check=False)
    assert proc.returncode == status
    assert proc.stdout == b"out, no newline"
    assert proc.stderr.decode() == "err, no newline|" + stderr
