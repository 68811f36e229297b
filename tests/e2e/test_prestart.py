"""nvhook as the prestart hook of real containers: runc directly, and Podman with the
repo's hooks.d file. A recording stand-in plays NVIDIA's hook; the fake NVML plays the GPUs."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import fakenvml
import pytest

from .harness import BundleFactory, Podman, Recorder, new_container_id, run_runc

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NVHOOK = Path(sys.executable).with_name("nvhook")
MARKER = "container-ran"
NOT_LIVE_UUID = "GPU-00000000-1111-4222-8333-444444444444"


@dataclass(frozen=True)
class Case:
    env: tuple[str, ...]
    runs: bool
    policy: str = ""
    nvml: bool = True
    # NVIDIA_VISIBLE_DEVICES in config.json, as the delegate read it
    delegate_sees: str | None = None


CASES = [
    pytest.param(Case(("PATH=/bin",), runs=True), id="no GPU asked: runs, delegate not called"),
    pytest.param(Case(("NVIDIA_VISIBLE_DEVICES=all",), runs=False),
                 id="all from an unprivileged container: denied"),
    pytest.param(Case((f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}",), runs=True,
                      delegate_sees=fakenvml.GPU0_UUID), id="live UUID: runs, delegate called"),
    pytest.param(Case((f"NVIDIA_VISIBLE_DEVICES={NOT_LIVE_UUID}",), runs=False),
                 id="well-formed UUID that is not live: denied"),
    pytest.param(Case((f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}",
                       "NVIDIA_VISIBLE_DEVICES=all"), runs=False),
                 id="duplicates [live uuid, all]: the last wins, denied"),
    pytest.param(Case(("CUDA_VERSION=12.4.1",), runs=False),
                 id="legacy CUDA_VERSION image, unprivileged: denied"),
    pytest.param(Case(("CUDA_VERSION=12.4.1",), runs=True, policy='mode = "rewrite"',
                      delegate_sees="void"), id="legacy image in rewrite mode: delegate sees void"),
    pytest.param(Case(("NVIDIA_VISIBLE_DEVICES=1,0",), runs=True, policy='mode = "rewrite"',
                      delegate_sees=f"{fakenvml.GPU1_UUID},{fakenvml.GPU0_UUID}"),
                 id="indices in rewrite mode: delegate sees UUIDs"),
    pytest.param(Case((f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}",), runs=False, nvml=False),
                 id="NVML unavailable while a GPU is asked for: denied"),
]


def node_config(tmp_path: Path, recorder: Recorder, policy: str) -> Path:
    path = tmp_path / "nvhook.toml"
    path.write_text(
        f"version = 1\n[policy]\n{policy}\n"
        f'[delegate]\npath = "{recorder.path}"\nargs = ["prestart"]\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
    )
    return path


def hook_entry(config: Path, fake_nvml: Path, nvml: bool, exe: Path = NVHOOK) -> dict:
    """The repo's hooks.d entry, pointed at ``exe`` (this venv's console script, or the node
    artifact's launcher) and the fake NVML."""
    hook = json.loads((REPO / "hooks.d" / "nvrw-hook.json").read_text())["hook"]
    hook["path"] = str(exe)
    hook["args"] = ["nvhook", "--config", str(config), "prestart"]
    if nvml:
        hook["env"] = [*hook["env"], f"LD_LIBRARY_PATH={fake_nvml}"]
    return hook


def check(case: Case, returncode: int, output: str, recorder: Recorder) -> None:
    record = recorder.read()
    if not case.runs:
        assert returncode != 0
        assert MARKER not in output
        assert "nvhook: denied: " in output
        assert record is None
        return
    assert returncode == 0, output
    assert MARKER in output
    if case.delegate_sees is None:
        assert record is None
        return
    assert record is not None, "the delegate was not called"
    assert record.state is not None and record.state["status"] == "creating"
    assert record.config_env_map["NVIDIA_VISIBLE_DEVICES"] == case.delegate_sees
    assert sum(e.startswith("NVIDIA_VISIBLE_DEVICES=") for e in record.config_env or []) == 1
    assert record.env == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.mark.parametrize("case", CASES)
def test_runc(case: Case, bundle_factory: BundleFactory, recorder: Recorder, fake_nvml: Path,
              tmp_path: Path) -> None:
    config = node_config(tmp_path, recorder, case.policy)
    bundle = bundle_factory(
        args=["/bin/echo", MARKER], env=list(case.env),
        hooks={"prestart": [hook_entry(config, fake_nvml, case.nvml)]},
    )
    cid = new_container_id()
    result = run_runc(bundle, cid)
    check(case, result.returncode, result.stdout + result.stderr, recorder)
    record = recorder.read()
    if record is not None:
        assert record.state is not None and record.state["id"] == cid
        assert record.state["bundle"] == str(bundle)


@pytest.mark.parametrize("case", CASES)
def test_podman(case: Case, podman: Podman, recorder: Recorder, fake_nvml: Path,
                tmp_path: Path) -> None:
    config = node_config(tmp_path, recorder, case.policy)
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir()
    doc = json.loads((REPO / "hooks.d" / "nvrw-hook.json").read_text())
    doc["hook"] = hook_entry(config, fake_nvml, case.nvml)
    (hooks_dir / "nvrw-hook.json").write_text(json.dumps(doc))
    result = podman.run(hooks_dir, ["/bin/echo", MARKER], env=list(case.env))
    check(case, result.returncode, result.stdout + result.stderr, recorder)
    if not case.runs:
        # Podman's status for a failed OCI runtime. (Podman turns any runtime error whose
        # text says "not found" into 127, so nvhook's messages avoid those words.)
        assert result.returncode == 126
