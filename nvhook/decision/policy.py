"""The policy a container is judged by, and the per-container rules that pick it.

Values only: reading and validating the TOML file is ``config.py``'s job.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nvhook.decision.request import ALL_DRIVER_CAPABILITIES
from nvhook.decision.request import MAX_IMEX_CHANNEL as MAX_IMEX_CHANNEL
from nvhook.kube.identity import Identity


class Mode(StrEnum):
    ENFORCE = "enforce"  # deny a request that breaks any rule
    REWRITE = "rewrite"  # drop what breaks a rule, keep the rest
    AUDIT = "audit"  # let it through unchanged, record each violation


class AllRule(StrEnum):
    NEVER = "never"
    PRIVILEGED = "privileged"
    ALWAYS = "always"


class Indices(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Trust(StrEnum):
    ACCEPT = "accept"
    IGNORE = "ignore"  # grant nothing through the channel and hide it from NVIDIA's hook
    DENY = "deny"  # any use of the channel is a violation


class MigConfig(StrEnum):
    NEVER = "never"
    PRIVILEGED = "privileged"


class Imex(StrEnum):
    """Who may have IMEX channels (NVIDIA_IMEX_CHANNELS, imex/ mounts, CDI imex-channel,
    channel device nodes and cgroup rules)."""

    NEVER = "never"
    PRIVILEGED = "privileged"
    ALWAYS = "always"


class ChannelNumbers(tuple[int, ...]):
    """``POLICY_KEYS`` marker: an array of IMEX channel numbers (non-negative integers)."""


class DeviceNodes(StrEnum):
    """How ``linux.devices`` nodes and cgroup device rules are judged (by major:minor)."""

    JUDGE = "judge"  # each GPU a node or rule exposes is judged like any other request
    DENY = "deny"  # no GPU node or rule may be passed in at all


# Old values still read, as (key, old value) -> the value they now mean: an old config's
# device-nodes = "accept" (nodes unjudged) is read as "judge", and doctor says so.
DEPRECATED_VALUES = {("device-nodes", "accept"): "judge"}


class LeaseMode(StrEnum):
    OFF = "off"  # no lease table: nothing changes for nodes that do not ask for it
    EXCLUSIVE = "exclusive"  # one container per device
    SHARED = "shared"  # up to max-per-gpu containers per device


@dataclass(frozen=True)
class LeasePolicy:
    """``[leases]`` (or a rule's ``leases`` table): how devices are leased to containers."""

    mode: LeaseMode = LeaseMode.OFF
    max_per_gpu: int = 1  # only for SHARED

    @property
    def active(self) -> bool:
        return self.mode is not LeaseMode.OFF


class AllocationRule(StrEnum):
    BOUND = "bound"  # on Kubernetes, grants never exceed the kubelet's allocation
    EXEMPT = "exempt"  # management pods (device plugin, dcgm-exporter): not bound


@dataclass(frozen=True)
class Policy:
    """Field names are the TOML keys with ``-`` spelled ``_``."""

    mode: Mode = Mode.ENFORCE
    all: AllRule = AllRule.PRIVILEGED
    indices: Indices = Indices.ALLOW
    unprivileged_env: Trust = Trust.ACCEPT
    volume_mounts: Trust = Trust.ACCEPT
    cdi_annotations: Trust = Trust.ACCEPT
    allow: tuple[str, ...] = ()  # empty: every live device may be granted
    deny: tuple[str, ...] = ()
    driver_capabilities: tuple[str, ...] = ALL_DRIVER_CAPABILITIES
    mig_config: MigConfig = MigConfig.PRIVILEGED
    imex: Imex = Imex.PRIVILEGED
    imex_channels: tuple[int, ...] = ()  # empty: any channel (that ``imex`` allows)
    device_nodes: DeviceNodes = DeviceNodes.JUDGE
    leases: LeasePolicy = LeasePolicy()
    allocation: AllocationRule = AllocationRule.BOUND
    rule: str | None = None  # the [[policy.rules]] entry that produced this policy

    def with_overrides(self, overrides: Mapping[str, Any], rule: str) -> Policy:
        return dataclasses.replace(self, **overrides, rule=rule)


# The normalized pod identity fields a rule may match on (``match.namespace`` ...).
IDENTITY_FIELDS = ("namespace", "pod", "container")


@dataclass(frozen=True)
class Rule:
    """A ``[[rules]]`` entry: the policy keys it overrides for the pods its patterns match."""

    name: str
    annotations: tuple[tuple[str, re.Pattern[str]], ...]
    overrides: Mapping[str, Any]
    # (identity field, pattern): matched against the CRI runtime's normalized pod identity.
    identity: tuple[tuple[str, re.Pattern[str]], ...] = ()

    def matches(self, annotations: Mapping[str, str],
                identity: Identity | None = None) -> bool:
        """All patterns must match their annotation's (or identity field's) whole value.

        With a CRI identity, ``annotations`` is read with both runtimes' pod keys filled in
        from it, so a rule written with CRI-O's keys matches a containerd pod and back.
        """
        if identity is not None and not identity.sandbox:
            annotations = {**annotations, **identity.aliases()}
        if self.identity and identity is None:
            return False
        return all(
            key in annotations and pattern.fullmatch(annotations[key]) is not None
            for key, pattern in self.annotations
        ) and all(
            (value := getattr(identity, key)) is not None and pattern.fullmatch(value) is not None
            for key, pattern in self.identity
        )


def effective(base: Policy, rules: tuple[Rule, ...], annotations: Mapping[str, str],
              identity: Identity | None = None) -> Policy:
    """The first matching rule wins; no rule matching means the base policy."""
    for rule in rules:
        if rule.matches(annotations, identity):
            return base.with_overrides(rule.overrides, rule.name)
    return base


POLICY_KEYS: dict[str, type | tuple[str, ...]] = {
    "mode": Mode,
    "all": AllRule,
    "indices": Indices,
    "unprivileged-env": Trust,
    "volume-mounts": Trust,
    "cdi-annotations": Trust,
    "allow": tuple,
    "deny": tuple,
    "driver-capabilities": ALL_DRIVER_CAPABILITIES,
    "mig-config": MigConfig,
    "imex": Imex,
    "imex-channels": ChannelNumbers,
    "device-nodes": DeviceNodes,
    "allocation": AllocationRule,
}
