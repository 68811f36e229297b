"""The node artifact and its image, built once per test session (and cached across sessions by
scripts/build-artifact itself: a rebuild happens only when nvhook's sources change)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .harness import PodmanStore

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-artifact"
CONTAINERFILE = REPO / "Containerfile"
ARTIFACT_OUT = REPO / "build" / "artifact"


@dataclass(frozen=True)
class Artifact:
    root: Path  # .../nvhook-<version>

    @property
    def exe(self) -> Path:
        return self.root / "nvhook"

    @property
    def version(self) -> str:
        return (self.root / "VERSION").read_text().strip()


def build_artifact(out: Path = ARTIFACT_OUT) -> Artifact:
    res = subprocess.run(["bash", str(BUILD_SCRIPT), str(out)], capture_output=True, text=True,
                         timeout=1800, stdin=subprocess.DEVNULL, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"scripts/build-artifact failed ({res.returncode}):\n{res.stderr}")
    return Artifact(Path(res.stdout.strip().splitlines()[-1]))


def restamped(art: Artifact, dest_dir: Path, version: str) -> Artifact:
    """A copy of ``art`` that calls itself ``version``: a second release for upgrade tests."""
    root = dest_dir / f"nvhook-{version}"
    shutil.copytree(art.root, root, symlinks=True)
    (root / "VERSION").write_text(version + "\n")
    (root / "BUILD-INPUTS").write_text(f"test-{version}\n")
    return Artifact(root)


def build_image(store: PodmanStore, art: Artifact) -> str:
    """`podman build --network none` of the FROM-scratch Containerfile; returns the tag."""
    tag = f"localhost/nvhook:{art.version.replace('+', '_')}"
    res = store.podman("build", "--network", "none", "-f", str(CONTAINERFILE),
                       "--build-arg", f"VERSION={art.version}", "-t", tag, str(art.root.parent),
                       timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"podman build failed ({res.returncode}):\n{res.stderr}")
    return tag
