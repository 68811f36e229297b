"""Device nodes and cgroup device rules -> the NVIDIA devices they expose, by number.

A ``linux.devices`` path is the spec author's choice (``/dev/gpu0`` with 195:0 is GPU
0's node), so only the type and the major:minor say what a node is:

- char major 195 (the NVIDIA driver's fixed major): minors 0-253 are GPUs, by NVML's
  minor number (``Gpu.minor``); 254 is ``nvidia-modeset`` and 255 ``nvidiactl``, control
  nodes that attach no GPU;
- the ``nvidia-caps`` major, read from ``/proc/devices``: MIG access capabilities, mapped
  to MIG devices through ``/proc/driver/nvidia-caps/mig-minors`` exactly as NVIDIA's
  toolkit reads it (``internal/nvcaps``: lines ``gpu<G>/gi<I>/access <minor>`` and
  ``gpu<G>/gi<I>/ci<C>/access <minor>``, ``<G>`` the GPU's minor number, plus ``config``
  and ``monitor``, which are MIG management);
- the ``nvidia-uvm`` major (``/dev/nvidia-uvm``, ``-tools``): no GPU;
- the ``nvidia-caps-imex-channels`` major, read from ``/proc/devices``: IMEX channels, the
  minor being the channel number (``/dev/nvidia-caps-imex-channels/channel<N>`` is
  ``<major>:<N>``, as nvidia-modprobe's ``nvidia_cap_imex_channel_mknod`` creates it); no
  GPU, judged by ``policy.imex`` like the env's, mounts' and CDI names' channels;
- any other major: not NVIDIA's; block devices: never NVIDIA's.

The number a node really gets is the kernel's: runc passes ``Mkdev(uint32(major),
uint32(minor))`` to mknod(2), whose ``dev`` argument is 32 bits, so only the low 12 bits
of the major and 20 of the minor survive (a node written as 4291:0 is 195:0).

A cgroup allow rule with read or write access exposes what it covers even without a node
(a container with CAP_MKNOD creates one). runc 1.1.5 adds no cgroup rule for a listed
node (seen here: ``devices.list`` shows only its defaults), but nvhook still counts every
listed node as exposed: where the devices cgroup is not enforced (rootless, a permissive
parent, another runtime) the node is all it takes. A deny rule narrows only as a full
reset (``a *:*``) of the access an earlier allow gave: cgroup v1 removes only an exception
of exactly the same type:major:minor, so a narrower deny after a wildcard allow narrows
nothing there. nvhook therefore never grants less than runc can expose.

When ``/proc/devices`` cannot be read, a char major that the kernel hands out dynamically
(234-254, 384-511: where ``nvidia-caps``, ``nvidia-uvm`` and ``nvidia-caps-imex-channels``
land) could be NVIDIA's: such
a node or rule is ``unknown`` and judged fail-closed; a static major other than 195 is
not NVIDIA's and is ignored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from nvhook.gpus.inventory import Device, Gpu, Inventory, MigDevice
from nvhook.oci.spec import DeviceNode, DeviceRule

NVIDIA_MAJOR = 195
MODESET_MINOR = 254
CTL_MINOR = 255
GPU_MINORS = range(0, MODESET_MINOR)  # 0..253
CONTROL_MINORS = (MODESET_MINOR, CTL_MINOR)

CAPS_DRIVER = "nvidia-caps"
IMEX_DRIVER = "nvidia-caps-imex-channels"
UVM_DRIVERS = ("nvidia-uvm", "nvidia-uvm-tools")

PROC_DEVICES = Path("/proc/devices")
MIG_MINORS = Path("/proc/driver/nvidia-caps/mig-minors")
MAX_PROC_BYTES = 1 << 20

# Where register_chrdev(0, ...) and alloc_chrdev_region put a driver (fs/char_dev.c).
DYNAMIC_MAJORS = (range(234, 255), range(384, 512))
_DYNAMIC_DRIVERS = f"{CAPS_DRIVER}, {UVM_DRIVERS[0]} or {IMEX_DRIVER}"


class Reached(StrEnum):
    """What one node or rule exposes."""

    GPU = "gpu"  # one GPU, by its minor
    MIG = "mig"  # MIG devices, through their GI/CI access capabilities
    ALL = "all"  # every GPU: a rule with a wildcard over major 195
    PRIVILEGED = "privileged"  # a privileged container that may open every char device
    CONTROL = "control"  # nvidiactl, nvidia-modeset, nvidia-uvm: no GPU
    IMEX = "imex"  # one IMEX channel, by its minor (``channel`` None: every channel)
    MIG_MANAGEMENT = "mig-management"  # nvidia-caps config/monitor
    NOT_LIVE = "not-live"  # an NVIDIA minor that no live device has
    UNKNOWN = "unknown"  # could be NVIDIA's: /proc/devices was not readable

    @property
    def asks(self) -> bool:
        """Whether it is a request to judge (control nodes are only recorded)."""
        return self is not Reached.CONTROL


@dataclass(frozen=True)
class MigCap:
    """One line of ``mig-minors``: ``gi``/``ci`` None for config/monitor (and ci for a GI)."""

    name: str
    gpu_minor: int | None = None
    gi: int | None = None
    ci: int | None = None

    @property
    def management(self) -> bool:
        return self.gpu_minor is None


@dataclass(frozen=True)
class Host:
    """The host's device numbering: char majors by driver name (None: ``/proc/devices``
    could not be read, ``error`` says why) and the MIG caps by minor."""

    majors: Mapping[str, int] | None
    caps: Mapping[int, MigCap] = field(default_factory=dict)
    error: str | None = None

    def major_of(self, driver: str) -> int | None:
        return None if self.majors is None else self.majors.get(driver)

    @property
    def caps_major(self) -> int | None:
        return self.major_of(CAPS_DRIVER)

    @property
    def imex_major(self) -> int | None:
        return self.major_of(IMEX_DRIVER)

    @property
    def may_have_imex(self) -> bool:
        """The IMEX driver is registered, or ``/proc/devices`` could not tell."""
        return self.majors is None or self.imex_major is not None

    @property
    def uvm_majors(self) -> frozenset[int]:
        return frozenset(m for d in UVM_DRIVERS if (m := self.major_of(d)) is not None)


@dataclass(frozen=True)
class Reach:
    """One node or rule, by number: what it exposes, before the inventory is consulted.

    ``source`` is "node" or "rule", ``index`` its position in ``linux.devices`` or
    ``linux.resources.devices``. For GPU it is ``gpu_minor``; for MIG, the caps' GPU minor
    and ``gi`` (``ci`` None: a GI capability, part of each MIG device of that GI). For IMEX,
    ``channel`` (None: every channel, a wildcard rule).
    """

    source: str
    index: int
    label: str
    kind: Reached
    gpu_minor: int | None = None
    gi: int | None = None
    ci: int | None = None
    why: str = ""
    # A rule whose range cannot be narrowed by removing or replacing it (a *:*, c *:*, a
    # caps wildcard): a refusal can then only deny.
    narrowable: bool = True
    channel: int | None = None
    # PRIVILEGED only: the host has (or may have) IMEX channels, which it reaches too.
    imex_channels: bool = False
    # ALL only: a wildcard over nvidia-caps, which opens every MIG device but no whole GPU.
    migs_only: bool = False

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"what": self.label, "reaches": self.kind.value}
        if self.gpu_minor is not None:
            out["gpu_minor"] = self.gpu_minor
        if self.gi is not None:
            out["gi"] = self.gi
        if self.ci is not None:
            out["ci"] = self.ci
        if self.kind is Reached.IMEX:
            out["channel"] = "all" if self.channel is None else self.channel
        if self.why:
            out["why"] = self.why
        return out


@dataclass(frozen=True)
class Exposed:
    """A reach mapped onto the live inventory."""

    reach: Reach
    devices: tuple[Device, ...]
    kind: Reached  # NOT_LIVE when the reach names a device the inventory lacks


@dataclass(frozen=True)
class Exposure:
    """What a container's device nodes and rules expose, device by device."""

    items: tuple[Exposed, ...]

    @property
    def devices(self) -> tuple[Device, ...]:
        seen: dict[str, Device] = {}
        for item in self.items:
            for d in item.devices:
                seen.setdefault(d.uuid, d)
        return tuple(seen.values())

    @property
    def privileged(self) -> bool:
        return any(i.kind is Reached.PRIVILEGED for i in self.items)


# -- the host's files ---------------------------------------------------------------------


def parse_proc_devices(text: str) -> dict[str, int]:
    """The ``Character devices:`` section of ``/proc/devices``: driver name -> major.
    A name registered under several majors keeps its first."""
    majors: dict[str, int] = {}
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith(":"):
            section = stripped[:-1].lower()
            continue
        if section != "character devices":
            continue
        number, _, name = stripped.partition(" ")
        if number.isdigit() and name.strip():
            majors.setdefault(name.strip(), int(number))
    return majors


# Pattern strings: re compiles them on first use, on a host with a mig-minors file only.
_GI_CAP = r"^gpu(\d+)/gi(\d+)/access$"
_CI_CAP = r"^gpu(\d+)/gi(\d+)/ci(\d+)/access$"


def parse_mig_minors(text: str) -> dict[int, MigCap]:
    """``mig-minors`` -> cap minor -> cap, as nvcaps' processMinorsFile reads it: a line is
    ``<cap> <minor>`` split on one space; other lines are skipped."""
    caps: dict[int, MigCap] = {}
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        name, minor = parts[0], int(parts[1])
        if name in ("config", "monitor"):
            caps[minor] = MigCap(name)
        elif m := re.match(_CI_CAP, name):
            caps[minor] = MigCap(name, int(m[1]), int(m[2]), int(m[3]))
        elif m := re.match(_GI_CAP, name):
            caps[minor] = MigCap(name, int(m[1]), int(m[2]))
    return caps


def _read_text(path: Path) -> str:
    from nvhook import fileops

    return fileops.read_bounded(path, MAX_PROC_BYTES).decode("utf-8", "replace")


def read_proc_devices(path: Path = PROC_DEVICES) -> dict[str, int]:
    """Raises OSError (and ``fileops.TooLarge``)."""
    return parse_proc_devices(_read_text(path))


def driver_major(name: str, path: Path = PROC_DEVICES) -> int | None:
    """The char major the driver ``name`` holds (e.g. ``nvidia-caps-imex-channels``), None
    when it is not registered. Raises OSError when ``path`` cannot be read."""
    return read_proc_devices(path).get(name)


def load_host(proc_devices: Path = PROC_DEVICES, mig_minors: Path = MIG_MINORS) -> Host:
    """Never raises: an unreadable ``/proc/devices`` is ``Host(None, error=...)``; a missing
    ``mig-minors`` means no MIG caps (NVIDIA's nvcaps reads it so too)."""
    try:
        majors: Mapping[str, int] | None = read_proc_devices(proc_devices)
        error = None
    except (OSError, ValueError) as e:
        majors, error = None, f"{proc_devices}: {getattr(e, 'strerror', None) or e}"
    caps: dict[int, MigCap] = {}
    if majors is None or CAPS_DRIVER in majors:
        try:
            caps = parse_mig_minors(_read_text(mig_minors))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            error = error or f"{mig_minors}: {getattr(e, 'strerror', None) or e}"
    return Host(majors, caps, error)


# -- numbers ------------------------------------------------------------------------------


def kernel_number(major: int, minor: int) -> tuple[int, int]:
    """The device number mknod(2) really creates for runc's ``Mkdev(uint32(major),
    uint32(minor))``: the kernel keeps 32 bits of dev, 12 of major and 20 of minor."""
    return major & 0xFFF, minor & 0xFFFFF


def is_dynamic(major: int) -> bool:
    return any(major in r for r in DYNAMIC_MAJORS)


def _is_char_node(node: DeviceNode) -> bool:
    # runc's stringToDeviceRune: "c" and "u" are char devices, "b" block, "p" a FIFO;
    # anything else fails the container there, so it is judged as char (conservative).
    return node.type not in ("b", "p")


def _wild(n: int | None) -> bool:
    return n is None or n < 0


def _rule_number(n: int) -> int:
    # The kernel and runc's eBPF filter compare rule numbers as 32-bit values.
    return n & 0xFFFFFFFF


def _opens(access: str) -> bool:
    # runc refuses an empty access; another runtime might read it as "rwm": count it.
    return not access or "r" in access or "w" in access


def _covers_char(rule: DeviceRule) -> bool:
    # "a" and "c" do; an unknown type fails the container in runc: counted (conservative).
    return rule.type != "b"


def _resets(later: DeviceRule, access: str) -> bool:
    """A deny of everything (``a *:*``) covering every opening bit of ``access``."""
    bits = {c for c in (access or "rw") if c in "rw"}
    return (not later.allow and (later.type or "a") == "a" and _wild(later.major)
            and _wild(later.minor) and bits <= set(later.access))


def effective_allows(rules: Sequence[DeviceRule]) -> list[DeviceRule]:
    """The allow rules that open something (r or w) on char devices and that no later full
    reset takes back."""
    out = []
    for i, rule in enumerate(rules):
        if not rule.allow or not _opens(rule.access) or not _covers_char(rule):
            continue
        if any(_resets(later, rule.access) for later in rules[i + 1:]):
            continue
        out.append(rule)
    return out


# -- classification (no inventory) ---------------------------------------------------------


def classify(nodes: Sequence[DeviceNode], rules: Sequence[DeviceRule], host: Host,
             privileged: bool = False) -> tuple[Reach, ...]:
    """Every NVIDIA-relevant node and rule, by number. Non-NVIDIA entries are left out.

    A privileged container whose rules open every char device gets one PRIVILEGED reach
    in place of its NVIDIA nodes and rules: a spec edit cannot confine it (it may mknod
    any device), so it is judged as a whole.
    """
    allows = effective_allows(rules)
    if privileged and any(_wild(r.major) and _wild(r.minor) for r in allows):
        rule = next(r for r in allows if _wild(r.major) and _wild(r.minor))
        return (Reach("rule", rule.index, rule.label, Reached.PRIVILEGED,
                      why="privileged: every device node reachable", narrowable=False,
                      imex_channels=host.may_have_imex),)
    out: list[Reach] = []
    for node in nodes:
        if _is_char_node(node):
            reach = _classify_number("node", node.index, node.label,
                                     *kernel_number(node.major, node.minor), host)
            if reach is not None:
                out.append(reach)
    for rule in allows:
        out.extend(_classify_rule(rule, host))
    return tuple(out)


def _classify_number(source: str, index: int, label: str, major: int, minor: int,
                     host: Host) -> Reach | None:
    if major == NVIDIA_MAJOR:
        if minor in CONTROL_MINORS:
            name = "nvidiactl" if minor == CTL_MINOR else "nvidia-modeset"
            return Reach(source, index, label, Reached.CONTROL, why=name)
        if minor in GPU_MINORS:
            return Reach(source, index, label, Reached.GPU, gpu_minor=minor)
        return Reach(source, index, label, Reached.NOT_LIVE,
                     why=f"195:{minor} is no GPU minor (0-253) of the NVIDIA driver")
    if host.majors is None:
        if is_dynamic(major):
            return Reach(source, index, label, Reached.UNKNOWN,
                         why=_unknown(major, host))
        return None
    if major in host.uvm_majors:
        return Reach(source, index, label, Reached.CONTROL, why="nvidia-uvm")
    if major == host.imex_major:
        return Reach(source, index, label, Reached.IMEX, channel=minor,
                     why=f"IMEX channel {minor}")
    if major == host.caps_major:
        cap = host.caps.get(minor)
        if cap is None:
            return Reach(source, index, label, Reached.NOT_LIVE,
                         why=f"nvidia-caps minor {minor} is not in mig-minors")
        if cap.management:
            return Reach(source, index, label, Reached.MIG_MANAGEMENT, why=f"MIG {cap.name}")
        return Reach(source, index, label, Reached.MIG, gpu_minor=cap.gpu_minor, gi=cap.gi,
                     ci=cap.ci, why=cap.name)
    return None


def _unknown(major: int, host: Host) -> str:
    return f"major {major} may be NVIDIA's ({_DYNAMIC_DRIVERS}) and {host.error}"


def _classify_rule(rule: DeviceRule, host: Host) -> list[Reach]:
    if _wild(rule.major):
        if _wild(rule.minor):
            # Every device: every GPU and every NVIDIA capability. Not narrowable by an
            # edit of this rule without enumerating every other device of the host.
            every = [Reach("rule", rule.index, rule.label, Reached.ALL,
                           why="a wildcard major opens every GPU", narrowable=False)]
            if host.may_have_imex:
                every.append(Reach("rule", rule.index, rule.label, Reached.IMEX,
                                   why="a wildcard major opens every IMEX channel",
                                   narrowable=False))
            return every
        # One minor under every major: that minor of each NVIDIA major.
        minor = _rule_number(rule.minor)  # type: ignore[arg-type]
        majors = [NVIDIA_MAJOR, *sorted({host.caps_major, host.imex_major, *host.uvm_majors}
                                        - {None})]
        found = [_classify_number("rule", rule.index, rule.label, m, minor, host)
                 for m in majors]  # type: ignore[arg-type]
        if host.majors is None:
            found.append(Reach("rule", rule.index, rule.label, Reached.UNKNOWN,
                               why=f"a wildcard major may cover NVIDIA's and {host.error}"))
        return [dataclasses.replace(r, narrowable=False) for r in found if r is not None]
    major = _rule_number(rule.major)  # type: ignore[arg-type]
    if _wild(rule.minor):
        if major == NVIDIA_MAJOR:
            return [Reach("rule", rule.index, rule.label, Reached.ALL,
                          why="a wildcard minor on major 195 opens every GPU")]
        if host.majors is None and is_dynamic(major):
            return [Reach("rule", rule.index, rule.label, Reached.UNKNOWN,
                          why=_unknown(major, host),
                          narrowable=False)]
        if host.majors is not None and major == host.caps_major:
            return [Reach("rule", rule.index, rule.label, Reached.ALL,
                          why="a wildcard minor on nvidia-caps opens every MIG device",
                          narrowable=False, migs_only=True)]
        if host.majors is not None and major in host.uvm_majors:
            return [Reach("rule", rule.index, rule.label, Reached.CONTROL, why="nvidia-uvm")]
        if host.majors is not None and major == host.imex_major:
            # Narrowable: a rewrite replaces it by one rule per channel node kept.
            return [Reach("rule", rule.index, rule.label, Reached.IMEX,
                          why="a wildcard minor on nvidia-caps-imex-channels opens every "
                          "IMEX channel")]
        return []
    minor = _rule_number(rule.minor)  # type: ignore[arg-type]
    reach = _classify_number("rule", rule.index, rule.label, major, minor, host)
    return [reach] if reach is not None else []


# -- onto the inventory --------------------------------------------------------------------


def resolve(reaches: Iterable[Reach], inventory: Inventory) -> Exposure:
    """Map each reach onto the live devices. A GPU node of a GPU in MIG mode whose MIG
    devices are reached through their caps is part of those MIG devices, not the whole
    GPU: it is kept or refused with them (refusing the caps alone would leave the GPU)."""
    reaches = tuple(reaches)
    by_minor = {g.minor: g for g in inventory.gpus}
    via_caps: dict[int, dict[str, MigDevice]] = {}
    for r in reaches:
        if r.kind is Reached.MIG:
            migs = _migs_of_cap(inventory, by_minor.get(r.gpu_minor), r.gi, r.ci)  # type: ignore[arg-type]
            via_caps.setdefault(r.gpu_minor, {}).update((m.uuid, m) for m in migs)  # type: ignore[arg-type]
    items = []
    for r in reaches:
        if r.kind is Reached.GPU:
            gpu = by_minor.get(r.gpu_minor)  # type: ignore[arg-type]
            if gpu is None:
                items.append(Exposed(r, (), Reached.NOT_LIVE))
            elif gpu.mig_enabled and gpu.minor in via_caps:
                parts = tuple(via_caps[gpu.minor].values())
                items.append(Exposed(r, parts, Reached.MIG if parts else Reached.NOT_LIVE))
            else:
                items.append(Exposed(r, (gpu,), Reached.GPU))
        elif r.kind is Reached.MIG:
            migs = _migs_of_cap(inventory, by_minor.get(r.gpu_minor), r.gi, r.ci)  # type: ignore[arg-type]
            items.append(Exposed(r, migs, Reached.MIG if migs else Reached.NOT_LIVE))
        elif r.kind is Reached.ALL:
            every = inventory.migs if r.migs_only else tuple(inventory.devices())
            items.append(Exposed(r, every, Reached.ALL))
        else:
            items.append(Exposed(r, (), r.kind))
    return Exposure(tuple(items))


def _migs_of_cap(inventory: Inventory, gpu: Gpu | None, gi: int | None,
                 ci: int | None) -> tuple[MigDevice, ...]:
    if gpu is None:
        return ()
    return tuple(m for m in inventory.migs_of(gpu)
                 if m.gi == gi and (ci is None or m.ci == ci))


def devices_for_nodes(nodes: Sequence[DeviceNode], rules: Sequence[DeviceRule],
                      inventory: Inventory, host: Host, privileged: bool = False) -> Exposure:
    """The public entry: what ``nodes`` and ``rules`` expose on this host (for the request's
    judgement, and for CDI device nodes resolved elsewhere, e.g. DRA claims)."""
    return resolve(classify(nodes, rules, host, privileged), inventory)


def kept_rules(rule: DeviceRule, minors: Iterable[int], major: int = NVIDIA_MAJOR,
               control: Iterable[int] = CONTROL_MINORS) -> list[dict[str, object]]:
    """A wildcard-minor rule on ``major`` (195, or the IMEX channels' with no ``control``)
    rewritten as one rule per kept minor (control minors included, so nvidiactl keeps
    working), in the rule's own access."""
    kind = rule.type if rule.type in ("a", "c") else "c"
    return [{"allow": True, "type": "c" if kind == "a" else kind, "major": major,
             "minor": m, "access": rule.access}
            for m in sorted(set(minors) | set(control))]
