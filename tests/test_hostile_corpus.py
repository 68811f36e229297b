"""A hand-written corpus of hostile GPU requests, run through the pure engine.

Every row runs under four policies: the defaults (enforce), rewrite mode, and a restrictive
policy (allow-list with GPU 0 only, indices = "deny", all = "never") in rewrite and in enforce
mode. For every row and policy the safety invariants of ``hostile.check_invariants`` hold:
granted is within (policy-allowed ∩ live), NVIDIA's hook is handed a spec that attaches exactly
the granted devices, ``all`` never reaches an unprivileged container under the defaults, and a
rewrite leaves one canonical ``NVIDIA_VISIBLE_DEVICES``. Each row also states its outcome
under the defaults (``d``), rewrite mode (``r``) and the restrictive policy (``x``):
``S`` skip, ``D`` deny, ``A:<devices>`` allow, ``W:<devices>`` rewrite.

Rows are judged as a mode that runs before the container is created (runtime shim, Podman
precreate), where a refused device node can still be removed; each row is judged at prestart
too, where the same outcome holds except that removing a node becomes a denial.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from builders import CAPS_MAJOR, IMEX_MAJOR, UVM_MAJOR, device_mount, document, node, rule
from fakenvml import GPU0_BUS, GPU0_UUID, GPU1_BUS, GPU1_UUID, MIG_A_UUID, MIG_B_UUID
from hostile import (
    CONFIG,
    DEFAULT,
    GO_KEY_ACCEPTED,
    GO_KEY_CASES,
    OTHER_GPU0,
    OTHER_GPU1,
    OTHER_MIG,
    RESTRICT,
    RESTRICT_ENFORCE,
    REWRITE,
    GoKeyCase,
    check_invariants,
)

from nvhook.decision.decide import Outcome
from nvhook.decision.request import MIG_CONFIG_DEVICES, MIG_MONITOR_DEVICES
from nvhook.errors import DeniedError
from nvhook.oci.spec import parse_document

V = "NVIDIA_VISIBLE_DEVICES"
G0, G1, MA, MB = GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID
NAMES = {"G0": G0, "G1": G1, "MA": MA, "MB": MB}
ADMIN = ("CAP_SYS_ADMIN",)
ALL4 = "G0,G1,MA,MB"
G0_BODY = G0.removeprefix("GPU-")
G1_BODY = G1.removeprefix("GPU-")
OUTCOMES = {"S": Outcome.SKIP, "D": Outcome.DENY, "A": Outcome.ALLOW, "W": Outcome.REWRITE}

# Shorthands for the three expectations (d, r, x).
REFUSED = ("D", "W:", "W:")  # an unprivileged request nothing of which may be granted
SKIP = ("S", "S", "S")
NONE_OK = ("A:", "A:", "A:")  # "none": driver libraries, no GPU
# void next to other items: older toolkits let the first keyword win, so nvhook writes a
# lone "void" instead of skipping.
NEUTRALISED = ("W:", "W:", "W:")


@dataclass(frozen=True)
class Row:
    id: str
    env: tuple[str, ...] = ()
    expect: tuple[str, str, str] = SKIP
    caps: tuple[str, ...] = ()
    effective: tuple[str, ...] | None = None
    mounts: tuple[dict[str, Any], ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    devices: tuple[dict[str, Any], ...] = ()
    rules: tuple[dict[str, Any], ...] = ()

    def doc(self) -> dict[str, Any]:
        return document(self.env, self.caps, self.mounts, self.annotations or None,
                        self.devices, effective=self.effective, rules=self.rules)


def R(id: str, env: tuple[str, ...] | list[str] | str, d: str, r: str, x: str,
      **kw: Any) -> Row:
    if isinstance(env, str):
        env = (f"{V}={env}",)
    return Row(id, tuple(env), (d, r, x), **kw)


def RR(id: str, env: tuple[str, ...] | list[str] | str, expect: tuple[str, str, str],
       **kw: Any) -> Row:
    return R(id, env, *expect, **kw)


def env_dups(*values: str) -> tuple[str, ...]:
    return tuple(f"{V}={v}" for v in values)


# -- 1. duplicate keys: the last one wins, in every order --------------------------------------
# What the winning value leads to, for an unprivileged container, when the env holds duplicates
# (a rewrite always collapses them, so allow becomes rewrite there).
LAST_WINS = {
    "all": REFUSED,
    "none": ("W:", "W:", "W:"),
    "void": SKIP,
    "": SKIP,
    G0: ("W:G0", "W:G0", "W:G0"),
    G1: ("W:G1", "W:G1", "W:"),
    "0": ("W:G0", "W:G0", "W:"),
}
DUPLICATES = [
    RR(f"dup-{i}-{'+'.join(v[:6] or 'empty' for v in perm)}", env_dups(*perm), LAST_WINS[perm[-1]])
    for i, perm in enumerate(itertools.permutations(["all", "none", "void", G0]))
] + [
    RR(f"dup-pair-{a[:6] or 'empty'}-then-{b[:6] or 'empty'}", env_dups(a, b), LAST_WINS[b])
    for a, b in itertools.permutations(LAST_WINS, 2)
] + [
    R("dup-same-uuid-twice", env_dups(G0, G0), "W:G0", "W:G0", "W:G0"),
    R("dup-uuid-other-vars-between", ["A=1", f"{V}=all", "B=2", f"{V}={G0}", "C=3"],
      "W:G0", "W:G0", "W:G0"),
    R("dup-three-ends-in-index", env_dups("0", "all", "1"), "W:G1", "W:G1", "W:"),
    # An entry without "=" fails NVIDIA's hook and runc: denied in every mode.
    R("dup-first-without-equals", [V, f"{V}={G0}"], "D", "D", "D"),
    R("dup-last-without-equals", [f"{V}={G0}", V], "D", "D", "D"),
    R("dup-ALL-then-all", env_dups("ALL", "all"), *REFUSED),
    R("dup-all-then-ALL", env_dups("all", "ALL"), *REFUSED),
    R("dup-privileged-uuid-then-all", env_dups(G0, "all"), "W:" + ALL4, "W:" + ALL4, "W:",
      caps=ADMIN),
    R("dup-name-with-trailing-space", [f"{V} =all", f"{V}={G0}"], "A:G0", "A:G0", "A:G0"),
    R("dup-lowercase-name-ignored", ["nvidia_visible_devices=all", f"{V}={G0}"],
      "A:G0", "A:G0", "A:G0"),
]

# -- 2. `all` hidden in lists, in every case ----------------------------------------------------
ALL_VARIANTS = [
    RR(f"all-variant-{name}", value, REFUSED)
    for name, value in [
        ("all", "all"), ("ALL", "ALL"), ("All", "All"), ("aLL", "aLL"), ("spaced", " all "),
        ("tab", "\tall"), ("newline", "all\n"), ("trailing-comma", "all,"),
        ("index-then-all", "0,all"), ("leading-comma", ",all"), ("all-then-index", "all,0"),
        ("uuid-then-all", f"{G0},all"), ("all-then-none", "all,none"),
        ("ALL-alone-twice", "ALL,ALL"), ("all-spaced-comma", " all , "),
        ("cdi-all", "nvidia.com/gpu=all"), ("cdi-ALL", "nvidia.com/gpu=ALL"),
        ("other-node-then-all", f"{OTHER_GPU0},all"), ("all-many-commas", ",,,all,,,"),
    ]
] + [
    R("all-none-first-wins", "none,all", "W:", "W:", "W:"),
    R("all-void-anywhere", "all,void", *NEUTRALISED),
    R("all-void-first", "void,all", *NEUTRALISED),
    R("ALL-with-index", "ALL,0", "D", "W:G0", "W:"),
    R("ALL-with-uuid", f"ALL,{G0}", "D", "W:G0", "W:G0"),
    R("uuid-with-All", f"{G0},All", "D", "W:G0", "W:G0"),
    R("cdi-ALL-with-uuid", f"nvidia.com/gpu=ALL,{G0}", "D", "W:G0", "W:G0"),
    R("all-privileged", "all", "W:" + ALL4, "W:" + ALL4, "W:", caps=ADMIN),
    R("ALL-privileged", "ALL", "W:" + ALL4, "W:" + ALL4, "W:", caps=ADMIN),
    R("all-effective-not-bounding", "all", *REFUSED, effective=ADMIN),
    R("all-bounding-lowercase-cap", "all", *REFUSED, caps=("cap_sys_admin",)),
    R("all-bounding-cap-without-prefix", "all", *REFUSED, caps=("SYS_ADMIN",)),
    R("all-bounding-cap-trailing-space", "all", *REFUSED, caps=("CAP_SYS_ADMIN ",)),
    R("all-privileged-other-caps", "all", "W:" + ALL4, "W:" + ALL4, "W:",
      caps=("CAP_CHOWN", "CAP_SYS_ADMIN")),
]

# -- 3. void, none, whitespace, empty items -----------------------------------------------------
VOID_NONE = [
    R("void", "void", *SKIP), R("none", "none", *NONE_OK),
    R("VOID-is-a-device-id", "VOID", *REFUSED), R("NONE-is-a-device-id", "NONE", *REFUSED),
    R("Void", "Void", *REFUSED),
    R("void-none", "void,none", *NEUTRALISED), R("none-void", "none,void", *NEUTRALISED),
    R("uuid-void", f"{G0},void", *NEUTRALISED),
    R("void-uuid", f"void,{G0}", *NEUTRALISED),
    R("none-uuid", f"none,{G0}", "W:", "W:", "W:"),
    R("uuid-none", f"{G0},none", "W:", "W:", "W:"),
    R("none-spaced", " none ", "W:", "W:", "W:"),
    R("void-spaced", " void ", *SKIP),
    R("empty", "", *SKIP), R("comma", ",", *SKIP), R("blank", " ", *SKIP),
    R("blank-commas", " , ,, ", *SKIP), R("tab", "\t", *SKIP),
    R("none-privileged", "none", *NONE_OK, caps=ADMIN),
    R("uuid-spaced", f" {G0} ", "W:G0", "W:G0", "W:G0"),
    R("uuid-empty-items", f",,{G0},,", "W:G0", "W:G0", "W:G0"),
    R("uuid-repeated", f"{G0},{G0}", "W:G0", "W:G0", "W:G0"),
    R("uuid-and-index-same-gpu", f"{G0},0", "W:G0", "W:G0", "W:G0"),
    R("two-uuids", f"{G0},{G1}", "A:G0,G1", "A:G0,G1", "W:G0"),
    R("two-uuids-reversed", f"{G1},{G0}", "A:G0,G1", "A:G0,G1", "W:G0"),
    R("uuid-space-uuid", f"{G0} {G1}", *REFUSED),
    R("uuid-semicolon-uuid", f"{G0};{G1}", *REFUSED),
]

# -- 4. UUID look-alikes ------------------------------------------------------------------------
LOOKALIKES = [
    RR(f"uuid-{name}", value, REFUSED)
    for name, value in [
        ("truncated", G0[:-1]), ("one-char-extra", G0 + "0"), ("braces", "{" + G0_BODY + "}"),
        ("prefix-braces", "GPU-{" + G0_BODY + "}"), ("urn", "urn:uuid:" + G0_BODY),
        ("prefix-urn", "GPU-urn:uuid:" + G0_BODY), ("no-dashes", "GPU-" + G0_BODY.replace("-", "")),
        ("body-only", G0_BODY), ("prefix-only", "GPU-"), ("prefix-no-dash", "GPU"),
        ("mig-prefix-only", "MIG-"), ("mig-gpu-prefix-only", "MIG-GPU-"),
        ("other-node-gpu", OTHER_GPU0), ("other-node-gpu-upper", OTHER_GPU1.upper()),
        ("other-node-mig", OTHER_MIG), ("gpu-body-as-mig", "MIG-" + G0_BODY),
        ("mig-body-as-gpu", "GPU-" + MA.removeprefix("MIG-")), ("double-prefix", "GPU-" + G0),
        ("trailing-junk", G0 + "x"), ("trailing-nul", G0 + "\x00"),
        ("cyrillic-a", G0.replace("a", "\u0430", 1)),
        ("fullwidth-digit", G0.replace("5", "\uff15")),
        ("underscore-prefix", "GPU_" + G0_BODY), ("space-in-prefix", "GPU -" + G0_BODY),
        ("dashes-moved", "GPU-" + G0_BODY[:9] + G0_BODY[10:13] + "-" + G0_BODY[13:]),
        ("uuid-of-gpu1-truncated", G1[:20]),
    ]
] + [
    R("uuid-uppercase", G0.upper(), "W:G0", "W:G0", "W:G0"),
    R("uuid-lowercase-prefix", "gpu-" + G0_BODY, "W:G0", "W:G0", "W:G0"),
    R("uuid-mixed-case-body", "GPU-" + G0_BODY.upper(), "W:G0", "W:G0", "W:G0"),
    R("mig-uuid-uppercase", MA.upper(), "W:MA", "W:MA", "W:"),
    R("uuid-plus-other-node", f"{G0},{OTHER_GPU0}", "D", "W:G0", "W:G0"),
    R("other-node-plus-uuid", f"{OTHER_MIG},{G1}", "D", "W:G1", "W:"),
    R("uuid-privileged-other-node", OTHER_GPU0, *REFUSED, caps=ADMIN),
    R("uuid-exact-gpu1", G1, "A:G1", "A:G1", "W:"),
]

# -- 5. MIG: new and legacy forms, g:m ----------------------------------------------------------
MIG = [
    R("mig-uuid", MA, "A:MA", "A:MA", "W:"), R("mig-uuid-b", MB, "A:MB", "A:MB", "W:"),
    R("mig-legacy-1-0", f"MIG-{G1}/1/0", "W:MA", "W:MA", "W:"),
    R("mig-legacy-2-0", f"MIG-{G1}/2/0", "W:MB", "W:MB", "W:"),
    R("mig-legacy-lowercase", f"mig-{G1.lower()}/2/0", "W:MB", "W:MB", "W:"),
    R("mig-legacy-missing-gi", f"MIG-{G1}/3/0", *REFUSED),
    R("mig-legacy-missing-ci", f"MIG-{G1}/1/1", *REFUSED),
    R("mig-legacy-on-non-mig-gpu", f"MIG-{G0}/1/0", *REFUSED),
    R("mig-legacy-other-node", f"MIG-{OTHER_GPU0}/1/0", *REFUSED),
    R("mig-legacy-extra-part", f"MIG-{G1}/1/0/0", *REFUSED),
    R("mig-legacy-negative", f"MIG-{G1}/-1/0", *REFUSED),
    R("mig-legacy-no-parts", f"MIG-{G1}", *REFUSED),
    R("gm-1-0", "1:0", "W:MA", "W:MA", "W:"), R("gm-1-1", "1:1", "W:MB", "W:MB", "W:"),
    R("gm-1-2-empty-slot-skipped", "1:2", *REFUSED), R("gm-1-7", "1:7", *REFUSED),
    R("gm-0-0-no-mig", "0:0", *REFUSED), R("gm-2-0-no-gpu", "2:0", *REFUSED),
    R("gm-negative", "1:-1", *REFUSED), R("gm-huge", "1:99999999999999999999", *REFUSED),
    R("gm-leading-zero", "01:0", "W:MA", "W:MA", "W:"),
    R("gm-three-parts", "1:0:0", *REFUSED), R("gm-no-minor", "1:", *REFUSED),
    R("gm-no-major", ":0", *REFUSED), R("gm-space", "1 :0", *REFUSED),
    R("gm-plus", "+1:0", *REFUSED), R("gm-hex", "0x1:0", *REFUSED),
    R("gm-and-parent", "1:0,1", "W:MA,G1", "W:MA,G1", "W:"),
    R("mig-uuid-and-legacy-same", f"{MA},MIG-{G1}/1/0", "W:MA", "W:MA", "W:"),
    R("mig-privileged-gm", "1:1", "W:MB", "W:MB", "W:", caps=ADMIN),
]

# -- 6. PCI bus ids -----------------------------------------------------------------------------
PCI = [
    R("pci-nvml-form", GPU0_BUS, "W:G0", "W:G0", "W:"),
    R("pci-short-domain", "0000:17:00.0", "W:G0", "W:G0", "W:"),
    R("pci-minimal", "0:17:0.0", "W:G0", "W:G0", "W:"),
    R("pci-uppercase", GPU1_BUS.upper(), "W:G1", "W:G1", "W:"),
    R("pci-hex-uppercase", "00000000:65:00.0".replace("65", "65"), "W:G1", "W:G1", "W:"),
    R("pci-spaced", f" {GPU0_BUS} ", "W:G0", "W:G0", "W:"),
    R("pci-function-1", "00000000:17:00.1", *REFUSED),
    R("pci-function-7", "0:17:00.7", *REFUSED),
    R("pci-no-function", "00000000:17:00", *REFUSED),
    R("pci-extra-function", "00000000:17:00.0.0", *REFUSED),
    R("pci-no-domain", "17:00.0", *REFUSED),
    R("pci-0x", "0000:0x17:00.0", *REFUSED),
    R("pci-absent-bus", "00000000:99:00.0", *REFUSED),
    R("pci-nine-digit-domain", "000000000:17:00.0", *REFUSED),
    R("pci-wrong-device", "00000000:17:1f.0", *REFUSED),
    R("pci-other-domain", "00000001:17:00.0", *REFUSED),
    R("pci-trailing-junk", GPU0_BUS + "x", *REFUSED),
    R("pci-sysfs-path", f"/sys/bus/pci/devices/{GPU0_BUS}", *REFUSED),
    R("pci-and-uuid", f"{GPU0_BUS},{G1}", "W:G0,G1", "W:G0,G1", "W:"),
]

# -- 7. indices ---------------------------------------------------------------------------------
INDICES = [
    R("index-0", "0", "W:G0", "W:G0", "W:"), R("index-1", "1", "W:G1", "W:G1", "W:"),
    R("index-2-out-of-range", "2", *REFUSED), R("index-negative", "-1", *REFUSED),
    R("index-huge", "99999999999999999999", *REFUSED), R("index-plus", "+0", *REFUSED),
    R("index-space-trimmed", " 0", "W:G0", "W:G0", "W:"),
    R("index-leading-zeros", "00", "W:G0", "W:G0", "W:"),
    R("index-hex", "0x0", *REFUSED), R("index-float", "0.0", *REFUSED),
    R("index-exponent", "1e0", *REFUSED), R("index-two-in-one", "0 1", *REFUSED),
    R("index-arabic-indic-zero", "\u0660", *REFUSED), R("index-superscript", "\u00b9", *REFUSED),
    R("index-both", "0,1", "W:G0,G1", "W:G0,G1", "W:"),
    R("index-both-reversed", "1,0", "W:G0,G1", "W:G0,G1", "W:"),
    R("index-repeated", "0,0", "W:G0", "W:G0", "W:"),
    R("index-and-out-of-range", "0,5", "D", "W:G0", "W:"),
    R("index-and-negative", "1,-1", "D", "W:G1", "W:"),
    R("index-privileged-huge", "99999999999999999999", *REFUSED, caps=ADMIN),
    R("index-with-uuid-allowed", f"0,{G0}", "W:G0", "W:G0", "W:G0"),
]

# -- 8. CDI names: in the env and in annotations ------------------------------------------------
CDI_ENV = [
    R("cdi-env-index", "nvidia.com/gpu=0", "W:G0", "W:G0", "W:"),
    R("cdi-env-uuid", f"nvidia.com/gpu={G0}", "W:G0", "W:G0", "W:G0"),
    R("cdi-env-gm", "nvidia.com/gpu=1:0", "W:MA", "W:MA", "W:"),
    R("cdi-env-two", "nvidia.com/gpu=0,nvidia.com/gpu=1", "W:G0,G1", "W:G0,G1", "W:"),
    R("cdi-env-other-vendor", "amd.com/gpu=0", *REFUSED),
    R("cdi-env-mig-kind", "nvidia.com/mig=1:0", *REFUSED),
    R("cdi-env-uppercase-kind", "NVIDIA.COM/GPU=0", *REFUSED),
    R("cdi-env-empty-name", "nvidia.com/gpu=", *REFUSED),
    R("cdi-env-no-name", "nvidia.com/gpu", *REFUSED),
    R("cdi-env-no-kind", "=0", *REFUSED),
    R("cdi-env-double-equals", "nvidia.com/gpu==0", *REFUSED),
    R("cdi-env-other-node", f"nvidia.com/gpu={OTHER_GPU0}", *REFUSED),
    R("cdi-env-out-of-range", "nvidia.com/gpu=9", *REFUSED),
    R("cdi-env-nested", "nvidia.com/gpu=nvidia.com/gpu=0", *REFUSED),
]


def cdi(*values: str) -> dict[str, str]:
    return {f"cdi.k8s.io/req{i}": v for i, v in enumerate(values)}


CDI_ANNOTATIONS = [
    R("cdi-ann-index", (), "A:G0", "A:G0", "W:", annotations=cdi("nvidia.com/gpu=0")),
    R("cdi-ann-uuid", (), "A:G0", "A:G0", "A:G0", annotations=cdi(f"nvidia.com/gpu={G0}")),
    R("cdi-ann-all", (), *REFUSED, annotations=cdi("nvidia.com/gpu=all")),
    R("cdi-ann-ALL", (), *REFUSED, annotations=cdi("nvidia.com/gpu=ALL")),
    R("cdi-ann-all-privileged", (), "A:" + ALL4, "A:" + ALL4, "W:", caps=ADMIN,
      annotations=cdi("nvidia.com/gpu=all")),
    R("cdi-ann-other-vendor", (), *SKIP, annotations=cdi("vendor.com/fpga=0")),
    R("cdi-ann-mixed-value", (), "D", "W:G0", "W:G0",
      annotations=cdi(f"nvidia.com/gpu={G0},nvidia.com/gpu={OTHER_GPU0}")),
    R("cdi-ann-repeated-keys", (), "A:G0", "A:G0", "W:",
      annotations=cdi("nvidia.com/gpu=0", "nvidia.com/gpu=0")),
    R("cdi-ann-all-hidden-in-second", (), "D", "W:G0", "W:G0",
      annotations=cdi(f"nvidia.com/gpu={G0}", "nvidia.com/gpu=all")),
    R("cdi-ann-malformed", (), *REFUSED, annotations=cdi("nvidia.com/gpu")),
    R("cdi-ann-empty-name", (), *REFUSED, annotations=cdi("nvidia.com/gpu=")),
    R("cdi-ann-imex", (), "D", "W:", "A:", annotations=cdi("nvidia.com/imex-channel=0")),
    R("cdi-ann-other-vendor-and-gpu", (), "A:G1", "A:G1", "W:",
      annotations=cdi("vendor.com/fpga=0,nvidia.com/gpu=1")),
    R("cdi-ann-look-alike-prefix", (), *SKIP,
      annotations={"cdi.k8s.io.evil/x": "nvidia.com/gpu=all"}),
    R("cdi-ann-spaces", (), "A:G0", "A:G0", "W:", annotations=cdi(" nvidia.com/gpu=0 , ")),
    R("cdi-ann-plus-env", f"{G1}", "A:G0,G1", "A:G0,G1", "W:",
      annotations=cdi("nvidia.com/gpu=0")),
]

# -- 9. device volume mounts --------------------------------------------------------------------
ROOT = "/var/run/nvidia-container-devices"


def dm(device_id: str, source: str = "/dev/null", root: str = ROOT) -> dict[str, Any]:
    return device_mount(device_id, source, root)


def raw_mount(source: str, destination: str) -> dict[str, Any]:
    return {"source": source, "destination": destination, "type": "bind", "options": ["bind"]}


MOUNTS = [
    R("mount-uuid", (), "A:G0", "A:G0", "A:G0", mounts=(dm(G0),)),
    R("mount-index-pinned", (), "W:G0", "W:G0", "W:", mounts=(dm("0"),)),
    R("mount-all", (), *REFUSED, mounts=(dm("all"),)),
    R("mount-ALL", (), *REFUSED, mounts=(dm("ALL"),)),
    R("mount-other-node", (), *REFUSED, mounts=(dm(OTHER_GPU0),)),
    R("mount-source-dev-zero", (), *SKIP, mounts=(dm("all", "/dev/zero"),)),
    R("mount-source-empty", (), *SKIP, mounts=(dm("all", ""),)),
    R("mount-source-trailing-space", (), *SKIP, mounts=(dm("all", "/dev/null "),)),
    R("mount-source-relative", (), *SKIP, mounts=(dm("all", "dev/null"),)),
    R("mount-source-dotdot", (), *REFUSED, mounts=(dm("all", "/dev/../dev/null"),)),
    R("mount-source-double-slash", (), *REFUSED, mounts=(dm("all", "//dev//null"),)),
    R("mount-dest-dotdot", (), *REFUSED,
      mounts=(raw_mount("/dev/null", f"{ROOT}/../nvidia-container-devices/all"),)),
    R("mount-dest-double-slash", (), *REFUSED,
      mounts=(raw_mount("/dev/null", "/var/run//nvidia-container-devices//all"),)),
    R("mount-dest-leading-double-slash", (), *REFUSED,
      mounts=(raw_mount("/dev/null", "//var/run/nvidia-container-devices/all"),)),
    R("mount-dest-trailing-slash", (), "W:G0", "W:G0", "W:", mounts=(dm("0/"),)),
    R("mount-prefix-quirk", (), *REFUSED, mounts=(dm("X/0", root=ROOT + "X"),)),
    # NVIDIA's plain prefix test reads this one as the id GPU-<uuid>: judged and pinned as such.
    R("mount-prefix-quirk-uuid", (), "W:G0", "W:G0", "W:G0",
      mounts=(raw_mount("/dev/null", f"{ROOT}{G0}"),)),
    R("mount-root-itself", (), *SKIP, mounts=(raw_mount("/dev/null", ROOT),)),
    R("mount-run-not-var-run", (), *SKIP,
      mounts=(raw_mount("/dev/null", "/run/nvidia-container-devices/all"),)),
    R("mount-dest-relative", (), *SKIP,
      mounts=(raw_mount("/dev/null", "var/run/nvidia-container-devices/all"),)),
    R("mount-duplicates", (), "W:G0", "W:G0", "W:", mounts=(dm("0"), dm("0"))),
    R("mount-duplicate-uuid-and-index", (), "W:G0", "W:G0", "W:G0", mounts=(dm(G0), dm("0"))),
    R("mount-good-and-all", (), "D", "W:G0", "W:G0", mounts=(dm(G0), dm("all"))),
    R("mount-good-and-dotdot-all", (), "D", "W:G0", "W:G0",
      mounts=(dm(G0), raw_mount("/dev/null", f"{ROOT}/x/../all"))),
    R("mount-imex", (), *SKIP, mounts=(dm("imex/0"),)),
    R("mount-nested-id", (), *REFUSED, mounts=(dm("0/1"),)),
    R("mount-gm", (), "W:MB", "W:MB", "W:", mounts=(dm("1:1"),)),
    R("mount-pci", (), "W:G1", "W:G1", "W:", mounts=(dm(GPU1_BUS),)),
    R("mount-and-env", G1, "A:G0,G1", "A:G0,G1", "W:G0", mounts=(dm(G0),)),
    R("mount-all-privileged", (), "W:" + ALL4, "W:" + ALL4, "W:", caps=ADMIN,
      mounts=(dm("all"),)),
    R("mount-forged-and-real", (), "A:G0", "A:G0", "A:G0",
      mounts=(dm("all", "/etc/shadow"), dm(G0))),
]

# -- 10. NVIDIA_MIG_* management variables ------------------------------------------------------
MIG_VARS = [
    R("migcfg-unprivileged", [f"{MIG_CONFIG_DEVICES}=all", f"{V}={G0}"], "D", "W:G0", "W:G0"),
    R("migmon-unprivileged", [f"{MIG_MONITOR_DEVICES}=all", f"{V}={G0}"], "D", "W:G0", "W:G0"),
    R("migmon-unprivileged-none", [f"{MIG_MONITOR_DEVICES}=all", f"{V}=none"], "D", "W:", "W:"),
    R("migcfg-effective-only", [f"{MIG_CONFIG_DEVICES}=0", f"{V}={G0}"], "D", "W:G0", "W:G0",
      effective=ADMIN),
    R("migcfg-privileged", [f"{MIG_CONFIG_DEVICES}=all", f"{V}={G0}"], "A:G0", "A:G0", "A:G0",
      caps=ADMIN),
    R("migcfg-empty-ignored", [f"{MIG_CONFIG_DEVICES}=", f"{V}={G0}"], "A:G0", "A:G0", "A:G0"),
    R("migcfg-without-request", [f"{MIG_CONFIG_DEVICES}=all"], *SKIP),
    R("migcfg-duplicates", [f"{MIG_CONFIG_DEVICES}=all", f"{V}={G0}", f"{MIG_CONFIG_DEVICES}=0"],
      "D", "W:G0", "W:G0"),
    R("migcfg-last-empty", [f"{MIG_CONFIG_DEVICES}=all", f"{V}={G0}", f"{MIG_CONFIG_DEVICES}="],
      "A:G0", "A:G0", "A:G0"),
    R("migboth-unprivileged-all", [f"{MIG_CONFIG_DEVICES}=all", f"{MIG_MONITOR_DEVICES}=all",
                                   f"{V}=all"], *REFUSED),
]

# -- 11. legacy images: CUDA_VERSION without NVIDIA_REQUIRE_CUDA means `all` --------------------
LEGACY = [
    R("legacy-cuda-version", ["CUDA_VERSION=12.2"], *REFUSED),
    R("legacy-cuda-version-empty", ["CUDA_VERSION="], *SKIP),
    R("legacy-cuda-version-no-equals", ["CUDA_VERSION"], *SKIP),
    R("legacy-require-empty", ["CUDA_VERSION=12", "NVIDIA_REQUIRE_CUDA="], *REFUSED),
    R("legacy-require-set", ["CUDA_VERSION=12", "NVIDIA_REQUIRE_CUDA=cuda>=12"], *SKIP),
    R("legacy-require-set-then-empty",
      ["CUDA_VERSION=12", "NVIDIA_REQUIRE_CUDA=cuda>=12", "NVIDIA_REQUIRE_CUDA="], *REFUSED),
    R("legacy-require-empty-then-set",
      ["CUDA_VERSION=12", "NVIDIA_REQUIRE_CUDA=", "NVIDIA_REQUIRE_CUDA=cuda>=12"], *SKIP),
    R("legacy-visible-empty", ["CUDA_VERSION=12", f"{V}="], *SKIP),
    R("legacy-visible-void", ["CUDA_VERSION=12", f"{V}=void"], *SKIP),
    R("legacy-visible-none", ["CUDA_VERSION=12", f"{V}=none"], *NONE_OK),
    R("legacy-visible-uuid", ["CUDA_VERSION=12", f"{V}={G0}"], "A:G0", "A:G0", "A:G0"),
    R("legacy-version-then-empty", ["CUDA_VERSION=12", "CUDA_VERSION="], *SKIP),
    R("legacy-empty-then-version", ["CUDA_VERSION=", "CUDA_VERSION=12"], *REFUSED),
    R("legacy-version-blank", ["CUDA_VERSION= "], *REFUSED),
    R("legacy-privileged", ["CUDA_VERSION=12"], "W:" + ALL4, "W:" + ALL4, "W:", caps=ADMIN),
    R("legacy-effective-only", ["CUDA_VERSION=12"], *REFUSED, effective=ADMIN),
    R("legacy-lowercase-name", ["cuda_version=12"], *SKIP),
    R("legacy-disable-require", ["CUDA_VERSION=12", "NVIDIA_DISABLE_REQUIRE=1"], *REFUSED),
    R("legacy-with-mount", ["CUDA_VERSION=12"], "D", "W:G0", "W:G0", mounts=(dm(G0),)),
]

# -- 12. IMEX channels: env, volume mounts, CDI names --------------------------------------------
# Here the tokens name IMEX channels, not GPUs: ``A:0,1`` = allowed with channels 0 and 1
# attached. The restrictive policy has imex = "always" and imex-channels = [0].
IMEX_VAR = "NVIDIA_IMEX_CHANNELS"


def imex_env(value: str, gpu: str | None = G0) -> tuple[str, ...]:
    return ((f"{V}={gpu}",) if gpu is not None else ()) + (f"{IMEX_VAR}={value}",)


def imex_cdi(value: str) -> dict[str, str]:
    return {"cdi.k8s.io/imex": value}


IMEX_ROWS = [
    R("imex-env-unprivileged", imex_env("0"), "D", "W:", "A:0"),
    R("imex-env-privileged", imex_env("0"), "A:0", "A:0", "A:0", caps=ADMIN),
    R("imex-env-effective-only", imex_env("0"), "D", "W:", "A:0", effective=ADMIN),
    R("imex-env-two-one-allowed", imex_env("0,1"), "A:0,1", "A:0,1", "W:0", caps=ADMIN),
    R("imex-env-duplicates-last-wins", (f"{IMEX_VAR}=0", f"{V}={G0}", f"{IMEX_VAR}=1"),
      "A:1", "A:1", "W:", caps=ADMIN),
    R("imex-env-duplicates-unprivileged", (f"{IMEX_VAR}=1", f"{V}={G0}", f"{IMEX_VAR}=0"),
      "D", "W:", "A:0"),
    R("imex-env-all", imex_env("all"), "A:", "A:", "A:"),
    R("imex-env-all-with-id", imex_env("0,all"), "A:", "A:", "A:"),
    R("imex-env-none", imex_env("none"), "A:", "A:", "A:"),
    R("imex-env-void-mixed", imex_env("3,void"), "A:", "A:", "A:"),
    R("imex-env-empty", imex_env(""), "A:", "A:", "A:"),
    R("imex-env-ALL-is-an-id", imex_env("ALL"), "D", "W:", "W:", caps=ADMIN),
    R("imex-env-blanks-trimmed", imex_env(" 0 , ,"), "A:0", "A:0", "A:0", caps=ADMIN),
    R("imex-env-leading-zero", imex_env("00"), "A:00", "A:00", "A:00", caps=ADMIN),
    R("imex-env-plus-sign", imex_env("+0"), "D", "W:", "W:", caps=ADMIN),
    R("imex-env-arabic-digit", imex_env("\u0663"), "D", "W:", "W:", caps=ADMIN),
    R("imex-env-past-bound", imex_env("1048576"), "D", "W:", "W:", caps=ADMIN),
    R("imex-env-thousands-of-digits", imex_env("9" * 5000), "D", "W:", "W:", caps=ADMIN),
    R("imex-env-newline-in-id", imex_env("0\n1"), "D", "W:", "W:", caps=ADMIN),
    R("imex-env-without-gpu", imex_env("0", gpu=None), *SKIP),
    R("imex-env-with-gpu-none", imex_env("0", gpu="none"), "A:0", "A:0", "A:0", caps=ADMIN),
    # The restrictive policy voids the legacy all: with no GPU left, no IMEX channel either.
    R("imex-env-legacy-image", ("CUDA_VERSION=12", f"{IMEX_VAR}=0"), "W:0", "W:0", "W:",
      caps=ADMIN),
    R("imex-env-gpu-refused", imex_env("0", gpu=G1), "A:0", "A:0", "W:", caps=ADMIN),
    R("imex-env-lowercase-name", (f"{V}={G0}", "nvidia_imex_channels=0"), "A:", "A:", "A:"),
    R("imex-mount-unprivileged", (f"{V}={G0}",), "D", "W:", "A:0", mounts=(dm("imex/0"),)),
    R("imex-mount-prefix-quirk", (f"{V}={G0}",), "D", "W:", "A:0",
      mounts=(raw_mount("/dev/null", f"{ROOT}imex/0"),)),
    R("imex-mount-dotdot", (f"{V}={G0}",), "A:1", "A:1", "W:", caps=ADMIN,
      mounts=(raw_mount("/dev/null", f"{ROOT}/x/../imex/1"),)),
    R("imex-mount-two-spellings", (f"{V}={G0}",), "D", "W:", "W:",
      mounts=(dm("imex/1"), raw_mount("//dev/null", f"{ROOT}//imex/1/"))),
    R("imex-mount-forged-source", (f"{V}={G0}",), "A:", "A:", "A:",
      mounts=(dm("imex/0", "/dev/zero"),)),
    R("imex-mount-and-env", imex_env("0"), "A:0,1", "A:0,1", "W:0", caps=ADMIN,
      mounts=(dm("imex/1"),)),
    R("imex-mount-without-gpu", (), *SKIP, mounts=(dm("imex/0"),)),
    R("imex-cdi-alone-unprivileged", (), "D", "W:", "A:0",
      annotations=imex_cdi("nvidia.com/imex-channel=0")),
    R("imex-cdi-repeated", (), "A:1", "A:1", "W:", caps=ADMIN,
      annotations={"cdi.k8s.io/a": "nvidia.com/imex-channel=1",
                   "cdi.k8s.io/b": "nvidia.com/imex-channel=1"}),
    R("imex-cdi-with-gpu-name", (), "D", "W:", "W:0",
      annotations=imex_cdi("nvidia.com/gpu=0,nvidia.com/imex-channel=0")),
    R("imex-cdi-all", (), "D", "W:", "W:", caps=ADMIN,
      annotations=imex_cdi("nvidia.com/imex-channel=all")),
    R("imex-cdi-look-alike-kind", (), "A:", "A:", "A:", caps=ADMIN,
      annotations=imex_cdi("nvidia.com/imex-channels=0")),
    R("imex-env-and-cdi", imex_env("0"), "D", "W:", "W:0",
      annotations=imex_cdi("nvidia.com/imex-channel=2")),
    R("imex-every-channel-privileged", imex_env("0"), "A:0,1,2", "A:0,1,2", "W:0", caps=ADMIN,
      mounts=(dm("imex/1"),), annotations=imex_cdi("nvidia.com/imex-channel=2")),
]

# -- 13. device nodes and cgroup rules, by number (CDI injection: NVIDIA_VISIBLE_DEVICES=void) ---
CDI = (f"{V}=void",)


def N(id: str, d: str, r: str, x: str, *nodes: dict[str, Any], env: tuple[str, ...] = CDI,
      rules: tuple[dict[str, Any], ...] = (), **kw: Any) -> Row:
    return Row(id, env, (d, r, x), devices=nodes, rules=rules, **kw)


G0_ONLY = ("A:G0", "A:G0", "A:G0")
G1_NOT_X = ("A:G1", "A:G1", "W:")  # the restrictive policy allows GPU 0 only: node removed
GONE = ("D", "W:", "W:")  # refused everywhere, removable before creation
NODES = [
    N("node-dot-path", *G0_ONLY, node("/dev/./nvidia0", 195, 0)),
    N("node-double-slash", *G0_ONLY, node("//dev/nvidia0", 195, 0)),
    N("node-gpu0-path", *G0_ONLY, node("/dev/gpu0", 195, 0)),
    N("node-195-1", *G1_NOT_X, node("/dev/nvidia1", 195, 1)),
    N("node-path-says-0-number-says-1", *G1_NOT_X, node("/dev/nvidia0", 195, 1)),
    N("node-type-u-is-char", *G0_ONLY, node("/dev/x", 195, 0, kind="u")),
    N("node-modeset-control", *SKIP, node("/dev/nvidia-modeset", 195, 254)),
    N("node-ctl-control", *SKIP, node("/dev/nvidiactl", 195, 255)),
    N("node-uvm-control", *SKIP, node("/dev/nvidia-uvm", UVM_MAJOR, 0),
      node("/dev/nvidia-uvm-tools", UVM_MAJOR, 1)),
    N("node-block-195-not-nvidia", *SKIP, node("/dev/nvidia0", 195, 0, kind="b")),
    N("node-fifo-195-not-nvidia", *SKIP, node("/dev/nvidia0", 195, 0, kind="p")),
    N("node-other-major-ignored", *SKIP, node("/dev/nvidia0", 10, 0)),
    N("node-minor-not-live", *GONE, node("/dev/nvidia7", 195, 7)),
    N("node-minor-past-254", *GONE, node("/dev/x", 195, 300)),
    N("node-major-truncated-by-mknod", *G0_ONLY, node("/dev/x", 195 + 4096, 0)),
    N("node-minor-truncated-by-mknod", *G1_NOT_X, node("/dev/x", 195, (1 << 20) + 1)),
    N("node-with-its-cgroup-rule", *G1_NOT_X, node("/dev/nvidia1", 195, 1),
      rules=(rule(False, "a", None), rule(True, "c", 195, 1, "rwm"))),
    N("node-and-env-union", "A:G0,G1", "A:G0,G1", "W:G0", node("/dev/nvidia1", 195, 1),
      env=(f"{V}={G0}",)),
    N("node-twice-same-gpu", *G1_NOT_X, node("/dev/a", 195, 1), node("/dev/b", 195, 1)),
    N("rule-specific-minor", *G0_ONLY, rules=(rule(True, "c", 195, 0, "rw"),)),
    N("rule-major-wraps-32-bits", *G1_NOT_X, rules=(rule(True, "c", (1 << 32) + 195, 1, "rw"),)),
    N("rule-empty-access-counts", *G0_ONLY, rules=(rule(True, "c", 195, 0, ""),)),
    N("rule-mknod-only-opens-nothing", *SKIP, rules=(rule(True, "c", 195, 0, "m"),)),
    N("rule-block-195", *SKIP, rules=(rule(True, "b", 195, None, "rwm"),)),
    N("rule-wildcard-195-unprivileged", *GONE, rules=(rule(True, "c", 195, None, "rw"),)),
    N("rule-wildcard-195-minus-one", *GONE, rules=(rule(True, "c", 195, -1, "rw"),)),
    N("rule-wildcard-195-privileged", "A:" + ALL4, "A:" + ALL4, "W:",
      rules=(rule(True, "c", 195, None, "rw"),), caps=ADMIN),
    N("rule-every-device-unprivileged", "D", "D", "D", rules=(rule(True, None, None),)),
    N("rule-every-char-unprivileged", "D", "D", "D", rules=(rule(True, "c", None),)),
    N("rule-every-major-minor-0", "D", "D", "D", rules=(rule(True, "c", None, 0, "rw"),)),
    N("privileged-every-device-kube-proxy", "A:", "A:", "D", node("/dev/nvidia0", 195, 0),
      node("/dev/nvidia1", 195, 1), rules=(rule(True, None, None),), caps=ADMIN, env=()),
    N("rule-deny-after-allow-narrows-nothing", *G1_NOT_X,
      rules=(rule(True, "c", 195, 1, "rw"), rule(False, "c", 195, 1, "rw"))),
    N("rule-reset-after-allow", *SKIP,
      rules=(rule(True, "c", 195, 1, "rw"), rule(False, None, None, None, "rwm"))),
    N("rule-partial-reset-keeps-write", *G1_NOT_X,
      rules=(rule(True, "c", 195, 1, "rw"), rule(False, None, None, None, "r"))),
    N("mig-parent-and-caps", "A:MA", "A:MA", "W:", node("/dev/nvidia1", 195, 1),
      node("/dev/nvidia-caps/nvidia-cap12", CAPS_MAJOR, 12),
      node("/dev/nvidia-caps/nvidia-cap13", CAPS_MAJOR, 13)),
    N("mig-gi-cap-alone", "A:MB", "A:MB", "W:", node("/dev/c", CAPS_MAJOR, 21)),
    N("mig-cap-path-lies", "A:MB", "A:MB", "W:", node("/dev/nvidia-caps/nvidia-cap12",
                                                      CAPS_MAJOR, 22)),
    N("mig-cap-minor-unknown", *GONE, node("/dev/c", CAPS_MAJOR, 99)),
    N("mig-cap-of-gpu-without-mig", *GONE, node("/dev/c", CAPS_MAJOR, 3)),
    N("mig-config-cap-unprivileged", *GONE, node("/dev/c", CAPS_MAJOR, 1)),
    N("mig-monitor-cap-privileged", "A:", "A:", "A:", node("/dev/c", CAPS_MAJOR, 2),
      caps=ADMIN),
    N("caps-wildcard-rule", "D", "D", "D", rules=(rule(True, "c", CAPS_MAJOR, None, "rw"),)),
]

# -- 14. IMEX channels by device node and cgroup rule (tokens name channels, as in 12) ----------
# runc gives a container the channel its node's minor names, with no GPU request and whatever
# NVIDIA_IMEX_CHANNELS says. Judged before creation (a refused node is removed) and at prestart
# (where removing one is a denial).
CH = "/dev/nvidia-caps-imex-channels/channel"
IMEX_NODE_ROWS = [
    N("imex-node-alone-unprivileged", "D", "W:", "A:0", node(CH + "0", IMEX_MAJOR, 0), env=()),
    N("imex-node-off-the-allow-list", "D", "W:", "W:", node(CH + "1", IMEX_MAJOR, 1), env=()),
    N("imex-node-privileged", "A:0", "A:0", "A:0", node(CH + "0", IMEX_MAJOR, 0), env=(),
      caps=ADMIN),
    N("imex-node-path-lies", "A:1", "A:1", "W:", node(CH + "0", IMEX_MAJOR, 1), env=(),
      caps=ADMIN),
    N("imex-node-major-truncated", "A:0", "A:0", "A:0", node("/dev/x", IMEX_MAJOR + 4096, 0),
      env=(), caps=ADMIN),
    N("imex-node-env-says-void", "D", "W:", "A:0", node(CH + "0", IMEX_MAJOR, 0),
      env=(f"{V}={G0}", "NVIDIA_IMEX_CHANNELS=void")),
    N("imex-rule-alone-mknod-reach", "D", "W:", "W:", env=(),
      rules=(rule(True, "c", IMEX_MAJOR, 2, "rw"),)),
    N("imex-rule-deny-after-allow", "D", "W:", "W:", env=(),
      rules=(rule(True, "c", IMEX_MAJOR, 1, "rw"), rule(False, "c", IMEX_MAJOR, 1, "rw"))),
    N("imex-rule-wildcard-narrowed", "A:0,all", "A:0,all", "W:0", node(CH + "0", IMEX_MAJOR, 0),
      env=(), caps=ADMIN, rules=(rule(True, "c", IMEX_MAJOR, None, "rw"),)),
]

CORPUS: list[Row] = (DUPLICATES + ALL_VARIANTS + VOID_NONE + LOOKALIKES + MIG + PCI + INDICES
                     + CDI_ENV + CDI_ANNOTATIONS + MOUNTS + MIG_VARS + LEGACY + NODES)
IMEX_IDS = {r.id for r in IMEX_ROWS}
POLICIES = {"default": DEFAULT, "rewrite": REWRITE, "restrict": RESTRICT}


def expected(token: str) -> tuple[Outcome, set[str]]:
    outcome, _, devices = token.partition(":")
    return OUTCOMES[outcome], {NAMES[d] for d in devices.split(",") if d}


def expected_imex(token: str) -> tuple[Outcome, set[str]]:
    outcome, _, channels = token.partition(":")
    return OUTCOMES[outcome], {c for c in channels.split(",") if c}


def test_corpus_is_big_and_ids_are_unique() -> None:
    assert len(CORPUS) >= 200
    assert len({r.id for r in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("row", CORPUS, ids=[r.id for r in CORPUS])
def test_row(row: Row) -> None:
    doc = row.doc()
    got = {}
    for (name, policy), token in zip(POLICIES.items(), row.expect, strict=True):
        decision = check_invariants(doc, policy, before_create=True)
        got[name] = (decision.outcome, set(decision.granted))
        assert got[name] == expected(token), (name, decision.reasons)
        # At prestart the nodes exist already: removing one is a denial there.
        at_prestart = check_invariants(doc, policy)
        edits_devices = decision.doc is not None and (
            decision.doc.get("linux") != doc.get("linux"))
        want = (Outcome.DENY, set()) if edits_devices else got[name]
        assert (at_prestart.outcome, set(at_prestart.granted)) == want, (name, at_prestart)
    # The restrictive policy in enforce mode: invariants only, and never more than rewrite.
    strict = check_invariants(doc, RESTRICT_ENFORCE, before_create=True)
    if strict.outcome is not Outcome.DENY:
        assert set(strict.granted) == got["restrict"][1]


@pytest.mark.parametrize("row", IMEX_NODE_ROWS, ids=[r.id for r in IMEX_NODE_ROWS])
def test_imex_node_row(row: Row) -> None:
    doc = row.doc()
    for (name, policy), token in zip(POLICIES.items(), row.expect, strict=True):
        decision = check_invariants(doc, policy, before_create=True)
        got = (decision.outcome, set(decision.imex))
        assert got == expected_imex(token), (name, decision.reasons)
        at_prestart = check_invariants(doc, policy)
        edits_devices = decision.doc is not None and (
            decision.doc.get("linux") != doc.get("linux"))
        want = (Outcome.DENY, set()) if edits_devices else got
        assert (at_prestart.outcome, set(at_prestart.imex)) == want, (name, at_prestart)
    check_invariants(doc, RESTRICT_ENFORCE, before_create=True)


@pytest.mark.parametrize("row", IMEX_ROWS, ids=[r.id for r in IMEX_ROWS])
def test_imex_row(row: Row) -> None:
    doc = row.doc()
    for (name, policy), token in zip(POLICIES.items(), row.expect, strict=True):
        decision = check_invariants(doc, policy)
        got = (decision.outcome, set(decision.imex))
        assert got == expected_imex(token), (name, decision.reasons)
    check_invariants(doc, RESTRICT_ENFORCE)


# -- Go's JSON: folded and repeated keys ---------------------------------------------------------
@pytest.mark.parametrize("case", GO_KEY_CASES, ids=lambda c: c.id)
def test_go_key_documents_are_refused(case: GoKeyCase) -> None:
    with pytest.raises(DeniedError) as e:
        parse_document(CONFIG, case.text.encode())
    assert case.shown in e.value.message, e.value.message
    assert e.value.status == 3


@pytest.mark.parametrize("policy", [*POLICIES, "restrict-enforce"])
@pytest.mark.parametrize("case", GO_KEY_ACCEPTED, ids=lambda c: c.id)
def test_documents_go_reads_alike_are_judged(case: GoKeyCase, policy: str) -> None:
    doc = parse_document(CONFIG, case.text.encode())
    check_invariants(doc, POLICIES.get(policy, RESTRICT_ENFORCE))
