"""IMEX channels and env entries without "=", through the real console script in every mode
that judges a container: the prestart hook, the runtime shim and Podman's precreate stage.

Each denial is one stderr line of nvhook's own, naming what was refused and the rule; the
audit line and ``explain`` show the IMEX request and what was granted of it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import fakenvml
import pytest
from builders import fake_runtime
from conftest import Node, runc_state, write_bundle

GPU = f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"
ADMIN = ("CAP_SYS_ADMIN",)


def judge(node: Node, tmp_path: Path, mode: str, env: list[str], policy: str = "",
          caps: tuple[str, ...] = ()) -> tuple[int, str, Path]:
    """Run ``mode`` (prestart, runtime, precreate) on a container with ``env``.
    -> (exit status, stderr, the fake runtime, which runs only when the shim admits)."""
    rt = fake_runtime(tmp_path)
    node.write_config(f'[runtime]\npath = "{rt}"\n[policy]\n{policy}\n')
    bundle = write_bundle(tmp_path / "b", env, caps=caps)
    base = ["--config", str(node.config)]
    if mode == "prestart":
        proc = node.run([*base, "prestart"], stdin=runc_state(bundle))
    elif mode == "runtime":
        proc = node.run([*base, "runtime", "create", "--bundle", str(bundle), "c1"])
    else:
        proc = node.run([*base, "precreate"], stdin=(bundle / "config.json").read_bytes())
    return proc.returncode, proc.stderr.decode(), rt.parent / "argv"


MODES = ["prestart", "runtime", "precreate"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", ["", 'mode = "rewrite"', 'mode = "audit"'],
                         ids=["enforce", "rewrite", "audit"])
def test_env_entry_without_equals_is_denied_first(node: Node, tmp_path: Path, mode: str,
                                                  policy: str) -> None:
    code, err, ran = judge(node, tmp_path, mode, ["PATH=/bin", "BROKEN\x1b[2J", GPU], policy)
    assert code == 3, err
    assert err.splitlines() == [
        'nvhook: denied: process.env[1] "BROKEN\\x1b[2J": an env entry without "=" '
        "(NVIDIA's hook and runc refuse it) (OCI env syntax)"]
    assert not ran.exists()
    (entry,) = node.audit_lines()
    assert entry["decision"] == "deny"
    assert entry["request"]["malformed_env"] == [{"index": 1, "entry": "BROKEN\\x1b[2J"}]


@pytest.mark.parametrize("mode", MODES)
def test_env_entry_without_equals_in_a_container_without_gpu_is_not_ours(
        node: Node, tmp_path: Path, mode: str) -> None:
    code, err, _ = judge(node, tmp_path, mode, ["PATH=/bin", "BROKEN"])
    assert (code, err) == (0, "")
    assert node.audit_lines() == []


@pytest.mark.parametrize("mode", MODES)
def test_imex_of_an_unprivileged_container_is_denied(node: Node, tmp_path: Path,
                                                     mode: str) -> None:
    code, err, ran = judge(node, tmp_path, mode, [GPU, "NVIDIA_IMEX_CHANNELS=0"])
    assert code == 3, err
    assert err.splitlines() == [
        "nvhook: denied: NVIDIA_IMEX_CHANNELS=0: IMEX channel 0: an unprivileged container "
        'may not have IMEX channels (policy.imex = "privileged")']
    assert not ran.exists()
    (entry,) = node.audit_lines()
    assert entry["request"]["imex"]["channels"] == [{"id": "0", "via": "env"}]
    assert entry["imex_granted"] == []


@pytest.mark.parametrize("mode", MODES)
def test_imex_of_a_privileged_container_is_admitted_and_audited(node: Node, tmp_path: Path,
                                                                mode: str) -> None:
    code, err, _ = judge(node, tmp_path, mode, [GPU, "NVIDIA_IMEX_CHANNELS=0,1"], caps=ADMIN)
    assert (code, err) == (0, ""), err
    (entry,) = node.audit_lines()
    assert entry["decision"] == "allow"
    assert entry["imex_granted"] == ["0", "1"]


def test_shim_rewrite_voids_a_refused_imex_request(node: Node, tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path)
    node.write_config(f'[runtime]\npath = "{rt}"\n[policy]\nmode = "rewrite"\n')
    bundle = write_bundle(tmp_path / "b", [GPU, "NVIDIA_IMEX_CHANNELS=0"])
    proc = node.run(["--config", str(node.config), "runtime", "create", "--bundle", str(bundle),
                     "c1"])
    assert (proc.returncode, proc.stderr) == (0, b"")
    env = json.loads((bundle / "config.json").read_text())["process"]["env"]
    assert [e for e in env if e.startswith("NVIDIA_")] == [GPU, "NVIDIA_IMEX_CHANNELS=void"]
    (entry,) = node.audit_lines()
    assert entry["decision"] == "rewrite" and entry["granted"] == [fakenvml.GPU0_UUID]
    assert entry["imex_granted"] == [] and "IMEX channel 0" in entry["reasons"][0]


def test_explain_shows_the_imex_request_and_decision(node: Node, tmp_path: Path) -> None:
    node.write_config('[policy]\nimex-channels = [1]\nmode = "rewrite"\n')
    bundle = write_bundle(tmp_path / "b", [GPU, "NVIDIA_IMEX_CHANNELS=0,1"], caps=ADMIN)
    base = ["--config", str(node.config), "explain", "--bundle", str(bundle)]
    text = node.run(base)
    assert text.returncode == 0, text.stderr
    out = text.stdout.decode()
    assert re.search(r"^imex +0 \(env\), 1 \(env\); reads env: the container is privileged",
                     out, re.M), out
    assert re.search(r"^imex granted +1$", out, re.M), out
    doc = json.loads(node.run([*base, "--json"]).stdout)
    assert doc["imex_granted"] == ["1"]
    assert doc["request"]["imex"]["channels"] == [{"id": "0", "via": "env"},
                                                  {"id": "1", "via": "env"}]
    assert doc["env"]["NVIDIA_IMEX_CHANNELS"] == "1"
    assert "IMEX channel 0: not on the allow list (policy.imex-channels)" in doc["reasons"][0]
