"""The ``[kubernetes]`` settings: whether and how a container is bound to the kubelet's
allocation.

Apart from ``kube.allocation`` so that loading the config does not define the allocation's
own types (frozen dataclasses, built at import): the GPU path of a container without a CRI
identity never imports ``kube.allocation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

PODRESOURCES = "podresources"
CHECKPOINT = "checkpoint"
SOURCES = (PODRESOURCES, CHECKPOINT)


class Binding(StrEnum):
    AUTO = "auto"  # on when the container has a CRI identity and a source exists
    ON = "on"  # required: no readable source is a denial
    OFF = "off"


class Unallocated(StrEnum):
    VOID = "void"  # a GPU request with no allocation runs without GPUs, audited
    DENY = "deny"


@dataclass(frozen=True)
class KubeSettings:
    """The ``[kubernetes]`` table: whether a container is bound to the kubelet's allocation."""

    allocation: Binding = Binding.AUTO
    socket: Path = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    checkpoint: Path = Path("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint")
    sources: tuple[str, ...] = SOURCES
    resources: tuple[str, ...] = ("nvidia.com/gpu", "nvidia.com/gpu.shared", "nvidia.com/mig-*")
    timeout: float = 2.0
    unallocated: Unallocated = Unallocated.VOID
    # CDI's own spec directories (kube.cdi reads them: imported only for DRA claims).
    cdi_spec_dirs: tuple[Path, ...] = (Path("/etc/cdi"), Path("/var/run/cdi"))

