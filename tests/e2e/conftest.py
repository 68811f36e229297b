"""Fixtures for the end-to-end tests: real runc / Podman containers over a busybox rootfs.

Every test in this directory first requests `system_deps` (autouse): it skips when not root and
otherwise runs scripts/ensure-system-deps.sh once per session. Mark test modules with
`pytestmark = pytest.mark.e2e`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .artifact import Artifact, build_artifact
from .harness import (
    BundleFactory,
    Podman,
    PodmanStore,
    Recorder,
    make_bundle,
    make_rootfs,
    podman_available,
    write_recording_delegate,
)

REPO = Path(__file__).resolve().parents[2]
DEPS_SCRIPT = REPO / "scripts" / "ensure-system-deps.sh"


@pytest.fixture(scope="session")
def system_deps() -> subprocess.CompletedProcess[str]:
    """Run scripts/ensure-system-deps.sh once; skip (not root) or fail (script failed)."""
    if os.geteuid() != 0:
        pytest.skip("e2e tests run real runc/podman containers and need root")
    res = subprocess.run(
        ["bash", str(DEPS_SCRIPT)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if res.returncode != 0:
        pytest.fail(
            f"{DEPS_SCRIPT} failed (exit {res.returncode}):\n{res.stdout}{res.stderr}",
            pytrace=False,
        )
    return res


@pytest.fixture(autouse=True)
def _e2e_needs_system_deps(system_deps: subprocess.CompletedProcess[str]) -> None:
    """Gate every test in tests/e2e on root + the system packages."""


@pytest.fixture(scope="session")
def rootfs(
    system_deps: subprocess.CompletedProcess[str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One busybox rootfs per session. runc bundles share it read-only; Podman runs copy it."""
    return make_rootfs(tmp_path_factory.mktemp("rootfs", numbered=True) / "rootfs")


@pytest.fixture
def bundle_factory(rootfs: Path, tmp_path: Path) -> BundleFactory:
    """`bundle_factory(args=[...], env=[...], hooks=..., ...) -> bundle dir` under tmp_path.

    Takes make_bundle's keyword arguments; each call makes a new bundle dir (bundle0, bundle1...).
    """
    counter = iter(range(1_000_000))

    def factory(**kwargs: Any) -> Path:
        return make_bundle(tmp_path / f"bundle{next(counter)}", rootfs, **kwargs)

    return factory


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    """A recording delegate (`write_recording_delegate`) under tmp_path; `.read()` its record."""
    record_dir = tmp_path / "delegate-record"
    path = write_recording_delegate(
        tmp_path / "delegate" / "nvidia-container-runtime-hook", record_dir
    )
    return Recorder(path=path, record_dir=record_dir)


@pytest.fixture(scope="session")
def podman_store(system_deps: subprocess.CompletedProcess[str]) -> Iterator[PodmanStore]:
    """One isolated Podman store per session (short path under /tmp, removed at the end)."""
    store = PodmanStore.create()
    try:
        yield store
    finally:
        shutil.rmtree(store.base, ignore_errors=True)


@pytest.fixture
def podman(
    system_deps: subprocess.CompletedProcess[str], rootfs: Path, podman_store: PodmanStore
) -> Podman:
    """Skips when podman is not installed (ensure-system-deps.sh only warns about it)."""
    if not podman_available():
        why = system_deps.stderr.strip() or "podman is not installed"
        pytest.skip(f"podman unavailable: {why}")
    return Podman(rootfs=rootfs, store=podman_store)


@pytest.fixture(scope="session")
def node_artifact(system_deps: subprocess.CompletedProcess[str]) -> Artifact:
    """The self-contained node artifact (scripts/build-artifact), built once per session."""
    return build_artifact()
