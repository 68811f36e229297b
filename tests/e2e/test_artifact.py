"""The self-contained node artifact (scripts/build-artifact) as the prestart hook of real runc
containers, through the same cases as the venv install (test_prestart.CASES): the fake NVML
reaches it through LD_LIBRARY_PATH, as a real driver's library reaches it by soname. Then:
it is relocatable, it needs nothing from the host's /, and it bundles no libnvidia-ml."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import fakenvml
import pytest

from .artifact import Artifact
from .harness import BundleFactory, Recorder, new_container_id, run_runc
from .test_prestart import CASES, MARKER, Case, check, hook_entry, node_config

pytestmark = pytest.mark.e2e


def run_case(case: Case, exe: Path, bundle_factory: BundleFactory, recorder: Recorder,
             fake_nvml: Path, tmp_path: Path) -> None:
    config = node_config(tmp_path, recorder, case.policy)
    bundle = bundle_factory(
        args=["/bin/echo", MARKER], env=list(case.env),
        hooks={"prestart": [hook_entry(config, fake_nvml, case.nvml, exe)]},
    )
    result = run_runc(bundle, new_container_id())
    check(case, result.returncode, result.stdout + result.stderr, recorder)


@pytest.mark.parametrize("case", CASES)
def test_artifact_in_runc(case: Case, node_artifact: Artifact, bundle_factory: BundleFactory,
                          recorder: Recorder, fake_nvml: Path, tmp_path: Path) -> None:
    run_case(case, node_artifact.exe, bundle_factory, recorder, fake_nvml, tmp_path)


RELOCATED = [
    pytest.param(Case((f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}",), runs=True,
                      delegate_sees=fakenvml.GPU0_UUID), id="live UUID: allowed"),
    pytest.param(Case(("NVIDIA_VISIBLE_DEVICES=all",), runs=False), id="all: denied"),
]


@pytest.mark.parametrize("case", RELOCATED)
def test_artifact_is_relocatable(case: Case, node_artifact: Artifact,
                                 bundle_factory: BundleFactory, recorder: Recorder,
                                 fake_nvml: Path, tmp_path: Path) -> None:
    """Moved to a new path under a new name, reached through a symlink (as `current` is)."""
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(node_artifact.root, moved, symlinks=True)
    link = tmp_path / "current"
    link.symlink_to(moved)
    run_case(case, link / "nvhook", bundle_factory, recorder, fake_nvml, tmp_path)


def test_artifact_needs_nothing_from_the_host_root(node_artifact: Artifact,
                                                   tmp_path: Path) -> None:
    """In a chroot holding only the artifact (no libc, no Python, no /proc) it still runs: the
    launcher falls back from /proc/self/exe to argv[0], and glibc comes from the bundle."""
    root = tmp_path / "root"
    shutil.copytree(node_artifact.root, root / "nvhook", symlinks=True)
    state = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "bundle": "/b"}
    (root / "b").mkdir()
    (root / "b" / "config.json").write_text(json.dumps(
        {"ociVersion": "1.0.2", "process": {"args": ["sh"], "env": ["PATH=/bin"]},
         "root": {"path": "rootfs"}}))

    def enter() -> None:
        os.chroot(root)
        os.chdir("/")

    help_run = subprocess.run(["/nvhook/nvhook", "node", "--help"], preexec_fn=enter,
                              capture_output=True, text=True, timeout=120, env={},
                              stdin=subprocess.DEVNULL, check=False)
    assert help_run.returncode == 0, help_run.stderr
    assert "install" in help_run.stdout
    hook_run = subprocess.run(["/nvhook/nvhook", "prestart"], preexec_fn=enter,
                              input=json.dumps(state), capture_output=True, text=True,
                              timeout=120, env={}, check=False)
    assert (hook_run.returncode, hook_run.stderr) == (0, "")
    assert not list(root.rglob("__pycache__/*.tmp*")), "the artifact wrote bytecode"


def test_artifact_bundles_no_nvml_and_no_absolute_paths(node_artifact: Artifact) -> None:
    files = [p for p in node_artifact.root.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith("libnvidia-ml")]
    assert not [p for p in node_artifact.root.rglob("*") if p.is_symlink()
                and os.readlink(p).startswith("/")]
    assert (node_artifact.root / "VERSION").read_text().strip() == node_artifact.version
    from nvhook import __version__

    assert node_artifact.version == __version__


def test_artifact_ignores_python_environment(node_artifact: Artifact, tmp_path: Path) -> None:
    """Runs isolated (-I): PYTHONPATH, PYTHONHOME and PYTHONSTARTUP from the caller change
    nothing (a hook never takes code from its environment)."""
    evil = tmp_path / "evil"
    (evil / "nvhook").mkdir(parents=True)
    (evil / "nvhook" / "__init__.py").write_text("raise SystemExit('evil imported')\n")
    (evil / "sitecustomize.py").write_text("raise SystemExit('evil site')\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(evil), "PYTHONHOME": str(evil),
           "PYTHONSTARTUP": str(evil / "sitecustomize.py")}
    res = subprocess.run([str(node_artifact.exe), "--help"], capture_output=True, text=True,
                         timeout=120, env=env, stdin=subprocess.DEVNULL, check=False)
    assert res.returncode == 0, res.stderr
    assert "evil" not in res.stdout + res.stderr
