"""What a container asks for, on every channel NVIDIA's hook reads.

``parse(spec)`` is pure and follows NVIDIA's semantics (FIELD.md §4): the env
list becomes a map where the last duplicate wins, the legacy ``CUDA_VERSION``
rule turns an unset variable into ``all``, ``void`` anywhere beats everything,
then the first ``all``/``none`` in list order decides. Case matters: ``ALL`` is a
device id here (nvidia-container-cli later resolves it case-insensitively, which
``inventory.resolve`` reproduces). Things NVIDIA ignores but a policy must see
(disagreeing duplicates, env entries without ``=``) are recorded too. IMEX channels are
read as NVIDIA's ``ImexChannelRequests`` reads them (``imex_request``). Device nodes and
cgroup device rules are a channel of their own, read by number (``gpus.devnodes``).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from nvhook.gpus import devnodes
from nvhook.gpus.devnodes import Host, Reach, Reached
from nvhook.nvidia.config import ALL_DRIVER_CAPABILITIES as ALL_DRIVER_CAPABILITIES
from nvhook.nvidia.config import NvidiaConfig
from nvhook.oci.spec import DEVICE_MOUNT_ROOT, Mount, Spec

VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
DRIVER_CAPABILITIES = "NVIDIA_DRIVER_CAPABILITIES"
MIG_CONFIG_DEVICES = "NVIDIA_MIG_CONFIG_DEVICES"
MIG_MONITOR_DEVICES = "NVIDIA_MIG_MONITOR_DEVICES"
IMEX_CHANNELS = "NVIDIA_IMEX_CHANNELS"
CUDA_VERSION = "CUDA_VERSION"
REQUIRE_CUDA = "NVIDIA_REQUIRE_CUDA"
CDI_ANNOTATION_PREFIX = "cdi.k8s.io/"
CAP_SYS_ADMIN = "CAP_SYS_ADMIN"

DEFAULT_DRIVER_CAPABILITIES = ("utility", "compute")

# A fully-qualified CDI device name: vendor/class=name.
_CDI_NAME = re.compile(
    r"^(?P<kind>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)=(?P<name>.+)$"
)
# What parse assumes without the host's numbering: /proc/devices read, no NVIDIA driver
# but the fixed major 195 (nvidia-caps and nvidia-uvm majors are the host's; evaluate
# passes them).
NO_HOST = Host({})


IMEX_MOUNT_PREFIX = "imex/"  # NVIDIA's volumeMountDevicePrefixImex
IMEX_CDI_KIND = "nvidia.com/imex-channel"
# libnvidia-container's parse_imex_info refuses a channel id from 1 << 20 on.
MAX_IMEX_CHANNEL = 1 << 20
# NVIDIA_IMEX_CHANNELS items that make NVIDIA's stack attach no channel at all.
_IMEX_SPECIAL = frozenset(("all", "none", "void"))


class Channel(StrEnum):
    """Which of a container's channels NVIDIA's hook reads (a priority, not a union)."""

    MOUNTS = "mounts"  # accept-...-as-volume-mounts and at least one device mount
    ENV = "env"  # privileged, or accept-...-envvar-when-unprivileged
    NONE = "none"  # neither: NVIDIA's hook attaches no device


@dataclass(frozen=True)
class NvidiaView:
    """What NVIDIA's hook will read of this container, and why, given its config."""

    channel: Channel
    why: str
    config: NvidiaConfig = field(default_factory=NvidiaConfig, compare=False)


class Kind(StrEnum):
    """The env channel's request, as NVIDIA's hook classifies it."""

    UNSET = "unset"  # not a GPU container
    VOID = "void"  # nothing at all; NVIDIA's hook behaves like plain runc
    NONE = "none"  # driver libraries and control nodes, no GPU
    ALL = "all"
    DEVICES = "devices"


@dataclass(frozen=True)
class VisibleDevices:
    """``NVIDIA_VISIBLE_DEVICES`` as NVIDIA's hook classifies it, with its device ids."""

    kind: Kind
    ids: tuple[str, ...] = ()

    def as_json(self) -> str | list[str] | None:
        if self.kind is Kind.UNSET:
            return None
        if self.kind is Kind.DEVICES:
            return list(self.ids)
        return self.kind.value


@dataclass(frozen=True)
class EnvChannel:
    """The env channel. ``variables`` are the names NVIDIA's hook read, in order."""

    devices: VisibleDevices
    variables: tuple[str, ...]
    value: str | None  # the winning raw value, joined with "," across variables
    legacy_implicit_all: bool = False
    # Every value the variables had, in env order, when duplicates disagree.
    conflicting_values: tuple[str, ...] = ()

    @property
    def mixed_void(self) -> bool:
        """``void`` next to other items, e.g. ``all,void``. Every toolkit from 1.14 on
        lets ``void`` win (nothing attached); nvhook reads it as void too and, on a
        rewrite, writes a lone ``void`` so that no reader can take another item."""
        return self.devices.kind is Kind.VOID and self.value is not None and split_ids(
            self.value
        ) not in ([], ["void"])

    @property
    def label(self) -> str:
        """How a reason names this channel: the variable and its value."""
        name = ",".join(self.variables)
        if self.legacy_implicit_all:
            return f"{name} (unset; legacy image: {CUDA_VERSION} set, {REQUIRE_CUDA} empty)"
        return f"{name}={self.value}"


@dataclass(frozen=True)
class MountRequest:
    """A ``/dev/null`` bind at ``/var/run/nvidia-container-devices/<id>``."""

    id: str
    mount: Mount


@dataclass(frozen=True)
class CdiRequest:
    """A fully-qualified CDI name from a ``cdi.k8s.io/*`` annotation."""

    annotation: str
    name: str


class ImexRead(StrEnum):
    """Which of the env and the IMEX volume mounts NVIDIA reads for IMEX channels."""

    MOUNTS = "mounts"  # accept-...-as-volume-mounts and at least one imex/ mount
    ENV = "env"  # privileged, or accept-...-envvar-when-unprivileged
    BOTH = "both"  # no NVIDIA config given: every channel counts
    NONE = "none"  # ignore-imex-channel-requests, or an unprivileged env NVIDIA ignores


class ImexVia(StrEnum):
    ENV = "env"
    MOUNT = "mount"
    ANNOTATION = "annotation"
    # A device node or cgroup rule on the nvidia-caps-imex-channels major: runc's, not
    # NVIDIA's, so it reaches the container on its own (no GPU request, no NVIDIA config).
    NODE = "node"


@dataclass(frozen=True)
class ImexChannel:
    """One IMEX channel NVIDIA's stack would attach, and what asked for it."""

    id: str  # as written; libnvidia-container parses it as a decimal number
    via: ImexVia
    label: str  # how a reason names the request: the variable, mount or annotation
    mount: Mount | None = None
    annotation: str | None = None
    reach: Reach | None = None  # NODE: the node or rule, removed when refused
    every: bool = False  # NODE: a wildcard rule that opens every channel (id "all")

    @property
    def number(self) -> int | None:
        """The channel number, or None when ``id`` is no decimal number below
        ``MAX_IMEX_CHANNEL`` (the length test first: ``int`` refuses 4301 digits); None
        for ``every`` too."""
        if not (self.id.isascii() and self.id.isdigit()) or len(self.id.lstrip("0")) > 7:
            return None
        number = int(self.id)
        return number if number < MAX_IMEX_CHANNEL else None


@dataclass(frozen=True)
class ImexRequest:
    """The IMEX channels of a container, as NVIDIA's ``ImexChannelRequests`` reads them
    (internal/config/image/cuda_image.go) plus the ``nvidia.com/imex-channel`` CDI names,
    which the engine (or NVIDIA's runtime in CDI mode) applies whatever the config says,
    and the channels its device nodes and cgroup rules reach by number (``nodes``), which
    runc gives it whatever NVIDIA reads."""

    read: ImexRead
    why: str
    env_value: str | None  # the raw NVIDIA_IMEX_CHANNELS value; None when unset
    env: tuple[ImexChannel, ...] = ()
    mounts: tuple[ImexChannel, ...] = ()
    annotations: tuple[ImexChannel, ...] = ()
    nodes: tuple[ImexChannel, ...] = ()

    @property
    def env_read(self) -> bool:
        return self.read in (ImexRead.ENV, ImexRead.BOTH)

    @property
    def mounts_read(self) -> bool:
        return self.read in (ImexRead.MOUNTS, ImexRead.BOTH)

    @property
    def channels(self) -> tuple[ImexChannel, ...]:
        """Every channel the container would get, in env, mount, annotation, node order."""
        return ((self.env if self.env_read else ()) + (self.mounts if self.mounts_read else ())
                + self.annotations + self.nodes)


NO_IMEX = ImexRequest(ImexRead.NONE, "no IMEX request", None)


@dataclass(frozen=True)
class MalformedEnv:
    """A ``process.env`` entry without ``=``: NVIDIA's hook fails on it, runc refuses it."""

    index: int
    entry: str


@dataclass(frozen=True)
class Request:
    """What a container asks for, channel by channel (``parse``)."""

    env: EnvChannel
    mounts: tuple[MountRequest, ...]
    cdi: tuple[CdiRequest, ...]
    privileged: bool
    legacy_image: bool
    driver_capabilities: str | None  # raw value; None when unset
    mig_config: str | None
    mig_monitor: str | None
    # linux.devices nodes and cgroup rules that reach NVIDIA devices, by major:minor.
    device_nodes: tuple[Reach, ...]
    malformed_env: tuple[MalformedEnv, ...]  # entries without "=": NVIDIA's hook fails
    # Mounts that look like device requests but that NVIDIA's hook ignores
    # (a source other than /dev/null): recorded, never granted.
    forged_mounts: tuple[Mount, ...] = field(default=())
    # The channel NVIDIA's hook reads; the default is the union view, for callers
    # that parse without NVIDIA's config (every channel counts: never less than NVIDIA).
    nvidia: NvidiaView = field(default_factory=lambda: NvidiaView(Channel.ENV, "default"))
    # Whether NVIDIA reads the device mounts (True in the union view).
    mounts_read: bool = True
    imex: ImexRequest = NO_IMEX

    @property
    def nvidia_cdi(self) -> tuple[CdiRequest, ...]:
        return tuple(c for c in self.cdi if c.name.startswith("nvidia.com/"))

    @property
    def asks_for_devices(self) -> bool:
        """True when any channel would make NVIDIA's stack attach something, or the
        container's device nodes and cgroup rules reach an NVIDIA device."""
        return (self.asks_for_gpu or bool(self.nvidia_cdi)
                or any(r.kind.asks for r in self.device_nodes))

    @property
    def asks_for_gpu(self) -> bool:
        """The GPU request NVIDIA's hook reads (no IMEX CDI names, no device nodes, which
        NVIDIA's hook does not read): what its IMEX env and mount channels ride along with
        (no GPU request, no IMEX from them)."""
        return (
            (self.env_read and (
                self.env.devices.kind in (Kind.NONE, Kind.ALL, Kind.DEVICES)
                or self.env.mixed_void))
            or (self.mounts_read and bool(self.mounts))
            or any(not c.name.startswith(IMEX_CDI_KIND + "=") for c in self.nvidia_cdi)
        )

    @property
    def bindable(self) -> bool:
        """Asks for something a kubelet allocation binds: every request but a privileged
        container's reach of every device node, which no spec edit can confine."""
        # IMEX channel nodes are not bound (an IMEX grant "as the allocation says" goes
        # in decide's imex_refusal): they alone must not make a pod with no GPU unallocated.
        if any(r.kind.asks and r.kind not in (Reached.PRIVILEGED, Reached.IMEX)
               for r in self.device_nodes):
            return True
        return dataclasses.replace(self, device_nodes=()).asks_for_devices

    @property
    def env_read(self) -> bool:
        """NVIDIA's hook reads the env: the mounts channel did not win, and the
        container is privileged or NVIDIA accepts an unprivileged container's env."""
        return self.nvidia.channel is Channel.ENV

    @property
    def env_shadowed(self) -> bool:
        """The env asks for devices but NVIDIA reads the mounts instead. A rewrite that
        drops mounts must then void it, or NVIDIA would fall back to it."""
        return self.nvidia.channel is Channel.MOUNTS and (
            self.env.devices.kind in (Kind.NONE, Kind.ALL, Kind.DEVICES))

    def driver_capability_set(self) -> tuple[str, ...]:
        """The capabilities NVIDIA's hook would grant, in canonical order: NVIDIA's
        getDriverCapabilities, within its ``supported-driver-capabilities``."""
        supported = self.nvidia.config.supported_driver_capabilities
        raw = self.driver_capabilities
        if raw is None and self.legacy_image:
            # NVIDIA's getDriverCapabilities: "unset with legacy image: set all capabilities".
            return supported
        if not raw:
            return tuple(c for c in DEFAULT_DRIVER_CAPABILITIES if c in supported)
        items = [c.strip() for c in raw.split(",") if c.strip()]
        if "all" in items:
            return supported
        # An unsupported item makes NVIDIA's hook fail; it is judged as asked for.
        return tuple(dict.fromkeys(items))


def env_map(env: Iterable[str]) -> dict[str, str]:
    """The env as NVIDIA's hook sees it: the last duplicate wins."""
    out: dict[str, str] = {}
    for entry in env:
        name, sep, value = entry.partition("=")
        if sep:
            out[name] = value
    return out


def split_ids(value: str) -> list[str]:
    """Comma list: items trimmed, empties dropped, repeats removed keeping order."""
    return list(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))


def visible_devices(value: str | None, legacy_image: bool) -> VisibleDevices:
    """NVIDIA_VISIBLE_DEVICES (or the joined swarm variables) -> request kind."""
    if value is None:
        return VisibleDevices(Kind.ALL) if legacy_image else VisibleDevices(Kind.UNSET)
    ids = split_ids(value)
    if not ids or "void" in ids:
        return VisibleDevices(Kind.VOID)
    for item in ids:
        if item == "all":
            return VisibleDevices(Kind.ALL)
        if item == "none":
            return VisibleDevices(Kind.NONE)
    return VisibleDevices(Kind.DEVICES, tuple(ids))


def is_legacy_image(env: dict[str, str]) -> bool:
    return bool(env.get(CUDA_VERSION)) and not env.get(REQUIRE_CUDA)


def parse(spec: Spec, swarm_resource: Sequence[str] = (),
          nvidia: NvidiaConfig | None = None, host: Host = NO_HOST) -> Request:
    """The request as NVIDIA's hook will read it under ``nvidia`` (its config.toml).

    Without ``nvidia`` every channel counts (the union view, never less than NVIDIA
    reads) and ``swarm_resource`` names the swarm variables; with it, NVIDIA's
    channel order and its own ``swarm-resource`` decide. ``host`` numbers the device
    nodes (the nvidia-caps and nvidia-uvm majors, the MIG capability minors).
    """
    env = env_map(spec.env)
    legacy = is_legacy_image(env)
    if nvidia is not None:
        swarm_resource = nvidia.swarm_resource
    privileged = CAP_SYS_ADMIN in spec.bounding_caps
    env_channel = _env_channel(spec.env, env, swarm_resource, legacy)
    mounts = tuple(_device_mounts(spec.mounts))
    view = (NvidiaView(Channel.ENV, "no NVIDIA config given: every channel counts")
            if nvidia is None else nvidia_channel(nvidia, bool(mounts), privileged))
    cdi = tuple(_cdi_annotations(spec.annotations))
    request = Request(
        env=env_channel,
        mounts=mounts,
        nvidia=view,
        mounts_read=nvidia is None or view.channel is Channel.MOUNTS,
        cdi=cdi,
        privileged=privileged,
        legacy_image=legacy,
        driver_capabilities=env.get(DRIVER_CAPABILITIES),
        mig_config=env.get(MIG_CONFIG_DEVICES) or None,
        mig_monitor=env.get(MIG_MONITOR_DEVICES) or None,
        device_nodes=devnodes.classify(spec.device_nodes, spec.device_rules, host, privileged),
        malformed_env=tuple(MalformedEnv(i, e) for i, e in enumerate(spec.env) if "=" not in e),
        forged_mounts=tuple(_forged_mounts(spec.mounts)),
    )
    imex = imex_request(env.get(IMEX_CHANNELS), spec.mounts, cdi, privileged, nvidia,
                        request.asks_for_gpu)
    nodes = tuple(imex_node(r) for r in request.device_nodes if r.kind is Reached.IMEX)
    return dataclasses.replace(request, imex=dataclasses.replace(imex, nodes=nodes))


def imex_node(reach: Reach) -> ImexChannel:
    """The IMEX channel a node or rule reaches (``gpus.devnodes``), as one more channel."""
    every = reach.channel is None
    return ImexChannel("all" if every else str(reach.channel), ImexVia.NODE, reach.label,
                       reach=reach, every=every)


def imex_request(value: str | None, mounts: Sequence[Mount], cdi: Sequence[CdiRequest],
                 privileged: bool, nvidia: NvidiaConfig | None,
                 gpu: bool = True) -> ImexRequest:
    """NVIDIA's ``ImexChannelRequests``: nothing under ``ignore-imex-channel-requests``;
    else the imex/ volume mounts when accepted and any exists (then the env is not read);
    else ``NVIDIA_IMEX_CHANNELS`` when privileged or unprivileged env is accepted. NVIDIA
    attaches those only alongside a GPU request (``gpu``: its legacy hook's getNvidiaConfig
    and its CDI modifier both stop at "no devices"); the CDI names count on their own.
    ``nvidia`` None: every channel counts."""
    env = tuple(ImexChannel(c, ImexVia.ENV, f"{IMEX_CHANNELS}={value}")
                for c in imex_env_ids(value))
    by_mount = tuple(_imex_mounts(mounts))
    annotations = tuple(ImexChannel(c.name.partition("=")[2], ImexVia.ANNOTATION,
                                    f"annotation {c.annotation}={c.name}", annotation=c.annotation)
                        for c in cdi if c.name.startswith(IMEX_CDI_KIND + "="))
    if not gpu:
        read, why = ImexRead.NONE, ("no GPU request: NVIDIA attaches the env's and mounts' "
                                    "IMEX channels only alongside one")
    elif nvidia is None:
        read, why = ImexRead.BOTH, "no NVIDIA config given: every channel counts"
    elif nvidia.ignore_imex_requests:
        read, why = ImexRead.NONE, (f"{nvidia.path or 'NVIDIA defaults'}: features.ignore-imex-"
                                    "channel-requests = true: neither the env nor mounts are read")
    elif nvidia.accept_volume_mounts and by_mount:
        read, why = ImexRead.MOUNTS, ("accept-nvidia-visible-devices-as-volume-mounts = true and "
                                      "the container has imex/ mounts; the env is not read")
    elif privileged or nvidia.accept_env_unprivileged:
        read, why = ImexRead.ENV, ("the container is privileged" if privileged else
                                   "accept-nvidia-visible-devices-envvar-when-unprivileged = "
                                   "true") + f", so {IMEX_CHANNELS} is read"
    else:
        read, why = ImexRead.NONE, (f"the container is unprivileged and unprivileged env is not "
                                    f"accepted: {IMEX_CHANNELS} is ignored")
    return ImexRequest(read, why, value, env, by_mount, annotations)


def imex_env_ids(value: str | None) -> tuple[str, ...]:
    """NVIDIA's imexChannelsFromEnvVar: the list syntax of NVIDIA_VISIBLE_DEVICES, but any
    ``all``, ``none`` or ``void`` item (and an unset, empty or legacy-image variable) yields
    no channel at all; explicit ids are passed on as written."""
    ids = split_ids(value or "")
    return () if _IMEX_SPECIAL.intersection(ids) else tuple(ids)


def _imex_mounts(mounts: Sequence[Mount]) -> Iterable[ImexChannel]:
    """NVIDIA's imexChannelsFromMounts: ``/dev/null`` binds whose device id (prefix quirk
    included, see ``device_mount_id``) starts with ``imex/``; the rest is the channel."""
    seen: set[str] = set()
    for m in mounts:
        device = device_mount_id(m)
        if device is None or not device.startswith(IMEX_MOUNT_PREFIX):
            continue
        channel = device.removeprefix(IMEX_MOUNT_PREFIX)
        if channel not in seen:
            seen.add(channel)
            yield ImexChannel(channel, ImexVia.MOUNT, f"mount {m.source} -> {m.destination}",
                              mount=m)


def nvidia_channel(nvidia: NvidiaConfig, has_device_mounts: bool,
                   privileged: bool) -> NvidiaView:
    """NVIDIA's getDevices: volume mounts first when accepted and any exists, and then
    the env is not read; else the env, if privileged or unprivileged env is accepted."""
    where = nvidia.path or "NVIDIA's defaults (no config.toml)"
    if nvidia.accept_volume_mounts and has_device_mounts:
        return NvidiaView(Channel.MOUNTS, f"{where}: accept-nvidia-visible-devices-as-volume-"
                          "mounts = true and the container has device mounts; the env is not "
                          "read", nvidia)
    mounts = ("device mounts are not read (accept-nvidia-visible-devices-as-volume-mounts = "
              "false)" if not nvidia.accept_volume_mounts else "no device mounts")
    if privileged:
        return NvidiaView(Channel.ENV, f"{where}: {mounts}; the container is privileged, so "
                          "the env is read", nvidia)
    if nvidia.accept_env_unprivileged:
        return NvidiaView(Channel.ENV, f"{where}: {mounts}; accept-nvidia-visible-devices-"
                          "envvar-when-unprivileged = true, so the env is read", nvidia)
    return NvidiaView(Channel.NONE, f"{where}: {mounts}; the container is unprivileged and "
                      "accept-nvidia-visible-devices-envvar-when-unprivileged = false, so the "
                      "env is ignored", nvidia)


def _env_channel(entries: Sequence[str], env: dict[str, str], swarm_resource: Sequence[str],
                 legacy: bool) -> EnvChannel:
    # NVIDIA reads the swarm-resource variables instead of NVIDIA_VISIBLE_DEVICES
    # as soon as any of them is present, and then concatenates all of them.
    preferred = [name for name in swarm_resource if name in env]
    names = tuple(preferred) if preferred else (VISIBLE_DEVICES,)
    present = [env[n] for n in names if n in env]
    value = ",".join(present) if present else None
    seen = [e.partition("=")[2] for e in entries if e.partition("=")[0] in names and "=" in e]
    conflicting = tuple(seen) if len(set(seen)) > 1 else ()
    return EnvChannel(
        devices=visible_devices(value, legacy and not present),
        variables=names,
        value=value,
        legacy_implicit_all=legacy and not present,
        conflicting_values=conflicting,
    )


def clean_path(path: str) -> str:
    """Go's ``filepath.Clean``: unlike ``posixpath.normpath`` it folds a leading ``//``."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _device_mounts(mounts: Sequence[Mount]) -> Iterable[MountRequest]:
    """Mirror of NVIDIA's DevicesFromMounts, prefix quirk included.

    The destination test is a plain string prefix, so ``...-devicesX/0`` yields
    the id ``X/0``: such ids never resolve and so are refused, not ignored.
    """
    seen: set[str] = set()
    for m in mounts:
        device = device_mount_id(m)
        # imex/ mounts name IMEX channels, not devices; NVIDIA skips them here too.
        if device is None or device.startswith(IMEX_MOUNT_PREFIX) or device in seen:
            continue
        seen.add(device)
        yield MountRequest(device, m)


def device_mount_id(m: Mount) -> str | None:
    """The id a ``/dev/null`` mount under the device root names, else None."""
    if clean_path(m.source) != "/dev/null":
        return None
    destination = clean_path(m.destination)
    if not destination.startswith(DEVICE_MOUNT_ROOT):
        return None
    return destination[len(DEVICE_MOUNT_ROOT):].strip("/") or None


def _forged_mounts(mounts: Sequence[Mount]) -> Iterable[Mount]:
    for m in mounts:
        if clean_path(m.destination).startswith(DEVICE_MOUNT_ROOT) and (
            clean_path(m.source) != "/dev/null"
        ):
            yield m


def _cdi_annotations(annotations: dict[str, str]) -> Iterable[CdiRequest]:
    seen: set[str] = set()
    for key, value in annotations.items():
        if not key.startswith(CDI_ANNOTATION_PREFIX):
            continue
        for name in split_ids(value):
            if name not in seen:
                seen.add(name)
                yield CdiRequest(key, name)


def cdi_device_name(item: str) -> tuple[str, str] | None:
    """``vendor/class=name`` -> (kind, name); None when ``item`` is not a CDI name."""
    m = _CDI_NAME.match(item)
    return (m["kind"], m["name"]) if m else None


def to_json(r: Request) -> dict[str, object]:
    """The request by channel, as ``explain --json`` and the audit log show it."""
    return {
        "nvidia_channel": r.nvidia.channel.value,
        "env": r.env.devices.as_json(),
        "variables": list(r.env.variables),
        "value": r.env.value,
        "mounts": [m.id for m in r.mounts],
        "annotations": [c.name for c in r.cdi],
        "privileged": r.privileged,
        "legacy_image": r.legacy_image,
        "driver_capabilities": r.driver_capabilities,
        "mig_config": r.mig_config,
        "mig_monitor": r.mig_monitor,
        "imex": imex_json(r.imex),
        "device_nodes": [n.as_json() for n in r.device_nodes],
        "conflicting_values": list(r.env.conflicting_values),
        "malformed_env": [{"index": m.index, "entry": m.entry} for m in r.malformed_env],
        "forged_mounts": [f"{m.source} -> {m.destination}" for m in r.forged_mounts],
    }


def imex_json(imex: ImexRequest) -> dict[str, object]:
    """The IMEX request: what NVIDIA reads, why, and the channels it would attach."""
    return {
        "read": imex.read.value,
        "why": imex.why,
        "env": imex.env_value,
        "channels": [{"id": c.id, "via": c.via.value} | ({"what": c.label} if c.reach else {})
                     for c in imex.channels],
    }
