"""The pod identity the CRI runtime writes into ``config.json``, normalized.

containerd and CRI-O spell the same facts with different annotation keys; both are read
into one ``Identity`` so that rules, the audit line and the allocation lookup see one
namespace/pod/container, whichever runtime wrote it. These keys are trustworthy only
under a CRI runtime, which sets them itself; a Podman or Docker user can set any
annotation (see docs/kubernetes.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONTAINERD = "containerd"
CRIO = "cri-o"

# field -> (containerd key, CRI-O key)
KEYS: dict[str, tuple[str, str]] = {
    "namespace": ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"),
    "pod": ("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"),
    "pod_uid": ("io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"),
    "container": ("io.kubernetes.cri.container-name", "io.kubernetes.container.name"),
    "type": ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"),
}
SANDBOX = "sandbox"

# The kubelet's cgroup layouts: cgroupfs ".../pod<uid>/..." and systemd
# "kubepods-<qos>-pod<uid with _ for ->.slice". A pattern string: re compiles it on first
# use, for a CRI container only.
_CGROUP_UID = (
    r"pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})"
)


@dataclass(frozen=True)
class Identity:
    """The pod a CRI container belongs to, from either runtime's annotations."""

    runtime: str  # which runtime's keys carried it: "containerd" or "cri-o"
    namespace: str | None
    pod: str | None
    pod_uid: str | None
    container: str | None
    sandbox: bool
    cgroup_uid: str | None  # the pod UID in linux.cgroupsPath, when it carries one
    # Fields where containerd's and CRI-O's keys are both set and disagree: one was forged.
    conflicts: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return bool(self.namespace and self.pod and self.container)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(f for f in ("namespace", "pod", "container") if not getattr(self, f))

    @property
    def uid_mismatch(self) -> bool:
        """The kubelet set the cgroup path; an annotation naming another pod UID is forged."""
        return bool(self.pod_uid and self.cgroup_uid and
                    self.pod_uid.lower() != self.cgroup_uid.lower())

    @property
    def name(self) -> str:
        return f"{self.namespace or '?'}/{self.pod or '?'}/{self.container or '?'}"

    def as_json(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "namespace": self.namespace, "pod": self.pod,
                "pod_uid": self.pod_uid, "container": self.container, "sandbox": self.sandbox,
                "cgroup_uid": self.cgroup_uid}

    def aliases(self) -> dict[str, str]:
        """Both runtimes' keys for each known field, so a rule written with either matches."""
        out: dict[str, str] = {}
        for field, keys in KEYS.items():
            value = ((SANDBOX if self.sandbox else "container") if field == "type"
                     else getattr(self, field))
            if value:
                for key in keys:
                    out[key] = value
        return out


def cgroup_uid(cgroups_path: str | None) -> str | None:
    if not cgroups_path:
        return None
    m = re.search(_CGROUP_UID, cgroups_path)
    return m.group(1).replace("_", "-").lower() if m else None


def from_annotations(annotations: Mapping[str, str],
                     cgroups_path: str | None = None) -> Identity | None:
    """None when neither runtime's keys are present (not a CRI container)."""
    found = {}
    for n, runtime in enumerate((CONTAINERD, CRIO)):
        values = {f: annotations.get(keys[n]) or None for f, keys in KEYS.items()}
        if any(values.values()):
            found[runtime] = values
    if not found:
        return None
    # A spec carrying both sets must say the same in both, or one of them was forged.
    merged: dict[str, str | None] = {}
    conflicting = []
    for field in KEYS:
        values = {v[field] for v in found.values() if v[field]}
        merged[field] = values.pop() if len(values) == 1 else None
        if values:
            conflicting.append(field)
    runtime = CONTAINERD if CONTAINERD in found else CRIO
    return Identity(
        runtime=runtime if len(found) == 1 else f"{CONTAINERD}+{CRIO}",
        namespace=merged["namespace"],
        pod=merged["pod"],
        pod_uid=merged["pod_uid"],
        container=merged["container"],
        sandbox=merged["type"] == SANDBOX,
        cgroup_uid=cgroup_uid(cgroups_path),
        conflicts=tuple(conflicting),
    )


def of_spec(doc: Mapping[str, Any], annotations: Mapping[str, str]) -> Identity | None:
    linux = doc.get("linux")
    path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    return from_annotations(annotations, path if isinstance(path, str) else None)
