"""Every key of nvhook's config file, in one table: the single source for its docs.

``KEYS`` lists each key with its table, name, TOML type, default, allowed values and a
one-line meaning. Generated from it (so they cannot drift):
- the commented default file ``nvhook install`` writes (``ops.config_edit.default_text``);
- ``config set``'s "unknown key" message (``ops.config_edit``);
- ``docs/configuration.md`` and the ``nvhook.toml(5)`` man page (``ops.manpages``).

**Adding a key to the reader (``config.py``)?** Add a ``Key(...)`` here too, in the table's
block. ``tests/test_config_schema.py`` fails until you do: it records every key set
``config._Reader.only`` is handed (one table at a time) and compares it with this table,
parses a file made of every key's default/example, checks the defaults against
``config.Config()``, and checks that the committed ``docs/configuration.md`` and man pages are
what ``scripts/gen-docs`` writes now (run it after editing this file). A new top-level table
gets a ``TABLES`` entry as well. Keep this module cheap to import: the hook reads config for
every container that asks for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nvhook.decision import policy as p
from nvhook.decision.request import ALL_DRIVER_CAPABILITIES
from nvhook.kube.settings import SOURCES, Binding, KubeSettings, Unallocated
from nvhook.nvidia.delegate import SAFE_PATH

TRUST = tuple(t.value for t in p.Trust)


@dataclass(frozen=True)
class Key:
    table: str  # "" for top-level keys; "policy.rules[]" for per-rule keys
    name: str
    type: str  # in TOML's words: string, integer, float, boolean, array of strings, ...
    default: Any  # a TOML-representable value; None: unset by default (see ``unset``)
    meaning: str  # one line
    allowed: tuple[str, ...] = ()  # the only values a string (or its array items) may take
    unset: str = ""  # what an unset key means, when ``default`` is None
    example: str = ""  # a TOML value (as text) for a key with no default

    @property
    def dotted(self) -> str:
        return f"{self.table}.{self.name}" if self.table else self.name


def _values(kind: type[StrEnum]) -> tuple[str, ...]:
    return tuple(v.value for v in kind)


TABLES: dict[str, str] = {
    "": "top-level keys",
    "policy": "what a container may ask for, and what happens when it breaks a rule",
    "policy.rules[]": "per-container overrides: the first rule whose annotation regexes all "
                      "match (anchored) wins; it may set any [policy] key except rules",
    "inventory": "where nvhook learns which GPUs exist",
    "delegate": "NVIDIA's hook, exec'd after allow/rewrite",
    "audit": "the audit log and its syslog copy",
    "runtime": "the runtime shim (Docker, containerd)",
    "request": "how a request is read, as NVIDIA's hook reads it",
    "leases": "node-local GPU leases for nodes without a scheduler (docs/leases.md)",
    "kubernetes": "allocation-bound grants: a container gets at most what the kubelet "
                  "allocated to it (docs/kubernetes.md)",
}

P = p.Policy()
K = KubeSettings()

KEYS: tuple[Key, ...] = (
    Key("", "version", "integer", 1, "the config format version; only 1 exists"),
    # -- [policy] -------------------------------------------------------------
    Key("policy", "mode", "string", P.mode.value,
        "enforce: deny a request that breaks any rule; rewrite: drop what breaks a rule and "
        "keep the rest (void when nothing is left); audit: let it through, record it",
        _values(p.Mode)),
    Key("policy", "all", "string", P.all.value,
        "who may have every GPU (an explicit or the legacy implicit all)", _values(p.AllRule)),
    Key("policy", "indices", "string", P.indices.value,
        "deny: only UUIDs may be asked for; index, g:m and PCI ids are violations",
        _values(p.Indices)),
    Key("policy", "unprivileged-env", "string", P.unprivileged_env.value,
        "the env channel (NVIDIA_VISIBLE_DEVICES) of unprivileged containers; ignore drops it "
        "and says so in the decision's reasons", TRUST),
    Key("policy", "volume-mounts", "string", P.volume_mounts.value,
        "the device volume-mount channel (/var/run/nvidia-container-devices/...)", TRUST),
    Key("policy", "cdi-annotations", "string", P.cdi_annotations.value,
        "the cdi.k8s.io/* annotation channel", TRUST),
    Key("policy", "allow", "array of strings", list(P.allow),
        "GPU-/MIG- UUIDs that may be granted; empty: any live device"),
    Key("policy", "deny", "array of strings", list(P.deny), "GPU-/MIG- UUIDs never granted"),
    Key("policy", "driver-capabilities", "array of strings", list(P.driver_capabilities),
        "the NVIDIA_DRIVER_CAPABILITIES a container may ask for", ALL_DRIVER_CAPABILITIES),
    Key("policy", "mig-config", "string", P.mig_config.value,
        "who may ask for NVIDIA_MIG_CONFIG_DEVICES / NVIDIA_MIG_MONITOR_DEVICES",
        _values(p.MigConfig)),
    Key("policy", "imex", "string", P.imex.value,
        "who may have IMEX channels (NVIDIA_IMEX_CHANNELS, imex/ volume mounts, "
        "nvidia.com/imex-channel CDI names, channel device nodes): never, privileged "
        "containers, or always",
        _values(p.Imex)),
    Key("policy", "imex-channels", "array of integers", list(P.imex_channels),
        "the IMEX channel numbers that may be granted; empty: any channel policy.imex allows"),
    Key("policy", "device-nodes", "string", P.device_nodes.value,
        "judge: GPUs that linux.devices nodes and cgroup device rules expose (by major:minor, "
        "never by path) are judged like any request; deny: no GPU node or rule at all "
        "(\"accept\" of old configs reads as judge)", _values(p.DeviceNodes)),
    Key("policy", "allocation", "string", P.allocation.value,
        "bound: on Kubernetes a container gets at most the GPUs the kubelet allocated to it; "
        "exempt: not bound (management pods, set by a rule)", _values(p.AllocationRule)),
    Key("policy", "rules", "array of tables", [],
        "per-container overrides ([[policy.rules]]), see below"),
    # -- [[policy.rules]] -------------------------------------------------------
    Key("policy.rules[]", "name", "string", None, "the rule's name, shown in decisions",
        unset="rules[N], N its position", example='"batch"'),
    Key("policy.rules[]", "match.annotations", "table of strings", None,
        "annotation name -> regex; all must match the whole value",
        unset="required unless a match.namespace/pod/container is given",
        example='{ "io.kubernetes.pod.namespace" = "batch-.*" }'),
    Key("policy.rules[]", "match.namespace", "string", None,
        "regex on the pod namespace the CRI runtime set (containerd's or CRI-O's key)",
        unset="any", example='"batch-.*"'),
    Key("policy.rules[]", "match.pod", "string", None,
        "regex on the pod name the CRI runtime set", unset="any", example='".*"'),
    Key("policy.rules[]", "match.container", "string", None,
        "regex on the container name the CRI runtime set", unset="any", example='".*"'),
    Key("policy.rules[]", "leases", "table", None,
        "overrides [leases] mode and max-per-gpu for this rule (only the keys it names)",
        unset="[leases] applies", example='{ mode = "shared", max-per-gpu = 4 }'),
    # -- [inventory] ------------------------------------------------------------
    Key("inventory", "source", "string", "nvml",
        "nvml: ask the driver; file: read the JSON inventory at inventory.file",
        ("nvml", "file")),
    Key("inventory", "file", "string", None, "a JSON inventory file (see nvhook devices --json)",
        unset="none; required when source = \"file\"", example='"/etc/nvhook/inventory.json"'),
    Key("inventory", "timeout", "float", 5.0,
        "seconds for NVML init and enumeration, in (0, 600]; past it the request is denied"),
    Key("inventory", "proc-devices", "string", "/proc/devices",
        "where the char majors of nvidia-caps and nvidia-uvm are read"),
    Key("inventory", "mig-minors", "string", "/proc/driver/nvidia-caps/mig-minors",
        "NVIDIA's MIG capability minors (gpu<minor>/gi<I>[/ci<C>]/access <minor>)"),
    # -- [delegate] -------------------------------------------------------------
    Key("delegate", "path", "string", None,
        "NVIDIA's hook; \"\": policy only, exit 0 and let a separately registered NVIDIA "
        "hook run next",
        unset="look up nvidia-container-runtime-hook, then nvidia-container-toolkit, on a "
              "fixed safe PATH", example='"/usr/bin/nvidia-container-runtime-hook"'),
    Key("delegate", "args", "array of strings", ["prestart"],
        "the delegate's arguments, e.g. [\"-config=/etc/nvidia-container-runtime/config.toml\", "
        "\"prestart\"]"),
    Key("delegate", "env", "array of strings", [f"PATH={SAFE_PATH}"],
        "the delegate's whole env (NAME=VALUE); nothing else reaches it"),
    # -- [audit] ----------------------------------------------------------------
    Key("audit", "path", "string", "/var/log/nvhook/audit.jsonl",
        "one JSON line per GPU decision; \"\" turns the log off"),
    Key("audit", "syslog", "boolean", True,
        "each GPU decision also as one syslog line (facility daemon, ident nvhook; "
        "journalctl -t nvhook); never fails the container"),
    Key("audit", "syslog-socket", "string", "/dev/log",
        "the syslog datagram socket (journald's and rsyslog's); none there: nothing is sent"),
    # -- [runtime] --------------------------------------------------------------
    Key("runtime", "path", "string", "runc",
        "the low-level runtime the shim execs (a name or an absolute path)"),
    # -- [request] --------------------------------------------------------------
    Key("request", "swarm-resource", "array of strings", [],
        "NVIDIA's swarm-resource: env names read instead of NVIDIA_VISIBLE_DEVICES (a "
        "comma-separated string is accepted too)"),
    # -- [leases] ---------------------------------------------------------------
    Key("leases", "mode", "string", P.leases.mode.value,
        "off: no leases; exclusive: one container per device; shared: up to max-per-gpu "
        "containers per device", _values(p.LeaseMode)),
    Key("leases", "max-per-gpu", "integer", P.leases.max_per_gpu,
        "containers that may share one device in shared mode, 1..1024"),
    Key("leases", "dir", "string", "/run/nvhook/leases",
        "the lease table's directory; keep it on a tmpfs, so a reboot clears it"),
    # -- [kubernetes] -----------------------------------------------------------
    Key("kubernetes", "allocation", "string", K.allocation.value,
        "auto: bind when the container has a CRI pod identity and the socket or checkpoint "
        "exists; on: required (no source is a denial); off", _values(Binding)),
    Key("kubernetes", "socket", "string", str(K.socket), "the kubelet's PodResources v1 socket"),
    Key("kubernetes", "checkpoint", "string", str(K.checkpoint),
        "the kubelet device manager's checkpoint file"),
    Key("kubernetes", "sources", "array of strings", list(K.sources),
        "where the allocation is read, tried in order", SOURCES),
    Key("kubernetes", "resources", "array of strings", list(K.resources),
        "the device plugin's resource names (glob patterns) that count as GPUs"),
    Key("kubernetes", "timeout", "float", K.timeout,
        "seconds for the kubelet lookup, rate-limit retries included, in (0, 60]; past it the "
        "request is denied"),
    Key("kubernetes", "unallocated", "string", K.unallocated.value,
        "a container with no allocation that asks for GPUs: void (runs without GPUs, audited) "
        "or deny", _values(Unallocated)),
    Key("kubernetes", "cdi-spec-dirs", "array of strings", [str(d) for d in K.cdi_spec_dirs],
        "DRA: the CDI spec directories a claim's CDI names are resolved in, later ones "
        "taking precedence; a name in none is a denial"),
)


def by_dotted() -> dict[str, Key]:
    return {k.dotted: k for k in KEYS}


def tables() -> list[str]:
    """Table names in ``KEYS`` order, each once."""
    return list(dict.fromkeys(k.table for k in KEYS))
