"""nvhook's TOML file -> a frozen ``Config``. Every error names the file, the key and the problem.

Read with stdlib ``tomllib``: it is cheap, and the hook reads this file for every
container that asks for a GPU. tomlkit is only for editing files users own.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from nvhook.decision.policy import (
    DEPRECATED_VALUES,
    IDENTITY_FIELDS,
    MAX_IMEX_CHANNEL,
    POLICY_KEYS,
    ChannelNumbers,
    LeaseMode,
    LeasePolicy,
    Policy,
    Rule,
    effective,
)
from nvhook.errors import ConfigError
from nvhook.kube.identity import Identity
from nvhook.kube.settings import SOURCES, Binding, KubeSettings, Unallocated
from nvhook.nvidia.delegate import DELEGATE_CANDIDATES as DELEGATE_CANDIDATES
from nvhook.nvidia.delegate import SAFE_PATH as SAFE_PATH
from nvhook.nvidia.delegate import DelegateSettings

DEFAULT_PATH = Path("/etc/nvhook/config.toml")
CONFIG_ENV = "NVHOOK_CONFIG"
DEFAULT_AUDIT_PATH = "/var/log/nvhook/audit.jsonl"
DEFAULT_SYSLOG_SOCKET = "/dev/log"  # journald and rsyslog read it
DEFAULT_LEASES_DIR = Path("/run/nvhook/leases")  # tmpfs: a reboot clears it


class InventorySource(StrEnum):
    NVML = "nvml"
    FILE = "file"


PROC_DEVICES = Path("/proc/devices")
MIG_MINORS = Path("/proc/driver/nvidia-caps/mig-minors")


@dataclass(frozen=True)
class InventorySettings:
    """Where the live GPU inventory and the host's device numbers are read from."""

    source: InventorySource = InventorySource.NVML
    file: Path | None = None
    timeout: float = 5.0
    # Where device numbers are read: the driver majors and NVIDIA's MIG capability minors.
    proc_devices: Path = PROC_DEVICES
    mig_minors: Path = MIG_MINORS


@dataclass(frozen=True)
class Config:
    """nvhook's config.toml, read and checked (``load``); the defaults without a file."""

    path: Path | None = None  # None: built-in defaults
    policy: Policy = field(default_factory=Policy)
    rules: tuple[Rule, ...] = ()
    inventory: InventorySettings = field(default_factory=InventorySettings)
    delegate: DelegateSettings = field(default_factory=DelegateSettings)
    audit_path: str = DEFAULT_AUDIT_PATH
    syslog: bool = True  # each decision also as a syslog line (nvhook.journal)
    syslog_socket: str = DEFAULT_SYSLOG_SOCKET
    runtime_path: str = "runc"
    swarm_resource: tuple[str, ...] = ()
    leases_dir: Path = DEFAULT_LEASES_DIR
    kubernetes: KubeSettings = field(default_factory=KubeSettings)
    # What an old key value was read as (doctor shows them): "policy.device-nodes: ...".
    deprecations: tuple[str, ...] = ()

    @property
    def leases_anywhere(self) -> bool:
        """Whether any policy (the base or a rule) leases devices."""
        return self.policy.leases.active or any(
            "leases" in r.overrides and r.overrides["leases"].active for r in self.rules)

    def policy_for(self, annotations: Mapping[str, str],
                   identity: Identity | None = None) -> Policy:
        return effective(self.policy, self.rules, annotations, identity)


def config_path(explicit: str | None, environ: Mapping[str, str] = os.environ) -> tuple[Path, bool]:
    """(path, explicitly named). An explicit file must exist; the default may be absent."""
    if explicit:
        return Path(explicit), True
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]), True
    return DEFAULT_PATH, False


MAX_CONFIG_BYTES = 1 << 20  # the commented default file is ~4 KiB


def load(explicit: str | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    from nvhook import fileops

    path, named = config_path(explicit, environ)
    try:
        data = fileops.read_bounded(path, MAX_CONFIG_BYTES)
    except fileops.TooLarge as e:
        raise ConfigError(f"config file {e}") from None
    except FileNotFoundError:
        if named:
            raise ConfigError(f"{path}: config file does not exist") from None
        return Config()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    return parse(data, path)


def parse(data: bytes, path: Path) -> Config:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 at byte {e.start}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return _Reader(path).config(doc)


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base_leases = LeasePolicy()
        self.deprecations: list[str] = []

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def config(self, doc: dict[str, Any]) -> Config:
        self.only(doc, "", {"version", "policy", "inventory", "delegate", "audit", "runtime",
                            "request", "leases", "kubernetes"})
        version = doc.get("version", 1)
        if version != 1 or isinstance(version, bool):
            raise self.fail("version", f"unsupported version {version!r} (expected 1)")
        policy_doc = self.table(doc, "policy")
        rules_doc = policy_doc.pop("rules", [])
        leases_doc = self.table(doc, "leases")
        self.only(leases_doc, "leases", {"mode", "max-per-gpu", "dir"})
        leases_dir = self.leases_dir(leases_doc.pop("dir", str(DEFAULT_LEASES_DIR)))
        self.base_leases = self.lease_policy(leases_doc, "leases", LeasePolicy())
        policy = Policy(**self.policy_fields(policy_doc, "policy"), leases=self.base_leases)
        return Config(
            path=self.path,
            policy=policy,
            rules=self.rules(rules_doc),
            inventory=self.inventory(self.table(doc, "inventory")),
            delegate=self.delegate(self.table(doc, "delegate")),
            **self.audit(self.table(doc, "audit")),
            runtime_path=self.runtime(self.table(doc, "runtime")),
            swarm_resource=self.swarm_resource(self.table(doc, "request")),
            leases_dir=leases_dir,
            kubernetes=self.kubernetes(self.table(doc, "kubernetes")),
            deprecations=tuple(self.deprecations),
        )

    def policy_fields(self, doc: dict[str, Any], where: str) -> dict[str, Any]:
        self.only(doc, where, set(POLICY_KEYS))
        fields: dict[str, Any] = {}
        for key, value in doc.items():
            at = f"{where}.{key}"
            kind = POLICY_KEYS[key]
            if kind is tuple:
                fields[key.replace("-", "_")] = tuple(self.uuid_list(value, at))
            elif kind is ChannelNumbers:
                fields[key.replace("-", "_")] = tuple(self.channel_numbers(value, at))
            elif isinstance(kind, tuple):
                fields[key.replace("-", "_")] = tuple(self.choices_list(value, at, kind))
            else:
                new = DEPRECATED_VALUES.get((key, value)) if isinstance(value, str) else None
                if new is not None:
                    self.deprecations.append(f'{at} = "{value}" is read as "{new}"; write '
                                             f'"{new}" (or "deny") instead')
                    value = new
                fields[key.replace("-", "_")] = self.choice(value, at, kind)
        return fields

    def rules(self, value: Any) -> tuple[Rule, ...]:
        if not isinstance(value, list):
            raise self.fail("policy.rules", "expected an array of tables ([[policy.rules]])")
        rules = []
        for i, doc in enumerate(value):
            at = f"policy.rules[{i}]"
            if not isinstance(doc, dict):
                raise self.fail(at, "expected a table")
            doc = dict(doc)
            name = doc.pop("name", f"rules[{i}]")
            if not isinstance(name, str):
                raise self.fail(f"{at}.name", "expected a string")
            match = doc.pop("match", None)
            keys = {"annotations", *IDENTITY_FIELDS}
            if not isinstance(match, dict) or not match or not set(match) <= keys:
                raise self.fail(f"{at}.match", "expected a table of 'annotations', "
                                f"{', '.join(repr(f) for f in IDENTITY_FIELDS)}")
            annotations = match.get("annotations", {})
            if not isinstance(annotations, dict) or ("annotations" in match and not annotations):
                raise self.fail(f"{at}.match.annotations", "expected a non-empty table of regexes")
            patterns = [(key, self.regex(regex, f"{at}.match.annotations.{key}"))
                        for key, regex in annotations.items()]
            identity = tuple((f, self.regex(match[f], f"{at}.match.{f}"))
                             for f in IDENTITY_FIELDS if f in match)
            lease_doc = doc.pop("leases", None)
            overrides = self.policy_fields(doc, at)
            if lease_doc is not None:
                if not isinstance(lease_doc, dict):
                    raise self.fail(f"{at}.leases", "expected a table (mode, max-per-gpu)")
                overrides["leases"] = self.lease_policy(dict(lease_doc), f"{at}.leases",
                                                        self.base_leases)
            rules.append(Rule(name, tuple(patterns), overrides, identity))
        return tuple(rules)

    def lease_policy(self, doc: dict[str, Any], where: str, base: LeasePolicy) -> LeasePolicy:
        """A rule's table overrides only the keys it names, so a rule can share what the
        base policy leases exclusively and still inherit the rest."""
        self.only(doc, where, {"mode", "max-per-gpu"})
        mode = self.choice(doc.get("mode", base.mode.value), f"{where}.mode", LeaseMode)
        cap = doc.get("max-per-gpu", base.max_per_gpu)
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 1024:
            raise self.fail(f"{where}.max-per-gpu", f"expected an integer in 1..1024, got {cap!r}")
        return LeasePolicy(mode, cap)

    def leases_dir(self, value: Any) -> Path:
        if not isinstance(value, str) or not os.path.isabs(value):
            raise self.fail("leases.dir", f"expected an absolute path, got {value!r}")
        return Path(value)

    def regex(self, value: Any, at: str) -> re.Pattern[str]:
        if not isinstance(value, str):
            raise self.fail(at, "expected a regex string")
        try:
            return re.compile(value)
        except re.error as e:
            raise self.fail(at, f"bad regex: {e}") from None

    def kubernetes(self, doc: dict[str, Any]) -> KubeSettings:
        self.only(doc, "kubernetes", {"allocation", "socket", "checkpoint", "sources",
                                      "resources", "timeout", "unallocated",
                                      "cdi-spec-dirs"})
        d = KubeSettings()
        paths = {}
        for key in ("socket", "checkpoint"):
            value = doc.get(key, str(getattr(d, key)))
            if not isinstance(value, str) or not os.path.isabs(value):
                raise self.fail(f"kubernetes.{key}", f"expected an absolute path, got {value!r}")
            paths[key] = Path(value)
        sources = self.strings(doc.get("sources", list(d.sources)), "kubernetes.sources")
        for s in sources:
            if s not in SOURCES:
                raise self.fail("kubernetes.sources",
                                f"unknown source {s!r} (known: {', '.join(SOURCES)})")
        if not sources:
            raise self.fail("kubernetes.sources", "must name at least one source")
        resources = self.strings(doc.get("resources", list(d.resources)), "kubernetes.resources")
        if not resources or not all(resources):
            raise self.fail("kubernetes.resources", "expected non-empty resource name patterns")
        timeout = doc.get("timeout", d.timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
            0 < timeout <= 60
        ):
            raise self.fail("kubernetes.timeout", f"expected seconds in (0, 60], got {timeout!r}")
        cdi_dirs = self.strings(doc.get("cdi-spec-dirs", [str(p) for p in d.cdi_spec_dirs]),
                                "kubernetes.cdi-spec-dirs")
        if not all(os.path.isabs(p) for p in cdi_dirs):
            raise self.fail("kubernetes.cdi-spec-dirs",
                            f"expected absolute paths, got {cdi_dirs!r}")
        return KubeSettings(
            cdi_spec_dirs=tuple(Path(p) for p in cdi_dirs),
            allocation=self.choice(doc.get("allocation", d.allocation.value),
                                   "kubernetes.allocation", Binding),
            socket=paths["socket"], checkpoint=paths["checkpoint"],
            sources=tuple(dict.fromkeys(sources)), resources=tuple(resources),
            timeout=float(timeout),
            unallocated=self.choice(doc.get("unallocated", d.unallocated.value),
                                    "kubernetes.unallocated", Unallocated),
        )

    def inventory(self, doc: dict[str, Any]) -> InventorySettings:
        self.only(doc, "inventory", {"source", "file", "timeout", "proc-devices", "mig-minors"})
        source = self.choice(doc.get("source", "nvml"), "inventory.source", InventorySource)
        file = doc.get("file")
        if file is not None and (not isinstance(file, str) or not file):
            raise self.fail("inventory.file", "expected a non-empty path string")
        if source is InventorySource.FILE and file is None:
            raise self.fail("inventory.file", 'required when inventory.source = "file"')
        timeout = doc.get("timeout", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
            0 < timeout <= 600
        ):
            raise self.fail("inventory.timeout", f"expected seconds in (0, 600], got {timeout!r}")
        paths = {}
        for key, default in (("proc-devices", PROC_DEVICES), ("mig-minors", MIG_MINORS)):
            value = doc.get(key, str(default))
            if not isinstance(value, str) or not os.path.isabs(value):
                raise self.fail(f"inventory.{key}", f"expected an absolute path, got {value!r}")
            paths[key] = Path(value)
        return InventorySettings(source, Path(file) if file else None, float(timeout),
                                 paths["proc-devices"], paths["mig-minors"])

    def delegate(self, doc: dict[str, Any]) -> DelegateSettings:
        self.only(doc, "delegate", {"path", "args", "env"})
        path = doc.get("path")
        if path is not None and not isinstance(path, str):
            raise self.fail("delegate.path", "expected a string")
        if path and not os.path.isabs(path) and "/" in path:
            raise self.fail("delegate.path", "expected an absolute path or a bare command name")
        args = self.strings(doc.get("args", ["prestart"]), "delegate.args")
        env = self.strings(doc.get("env", [f"PATH={SAFE_PATH}"]), "delegate.env")
        for i, entry in enumerate(env):
            if "=" not in entry:
                raise self.fail(f"delegate.env[{i}]", f"expected NAME=VALUE, got {entry!r}")
        return DelegateSettings(path, tuple(args), tuple(env))

    def audit(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.only(doc, "audit", {"path", "syslog", "syslog-socket"})
        syslog = doc.get("syslog", True)
        if not isinstance(syslog, bool):
            raise self.fail("audit.syslog", f"expected true or false, got {syslog!r}")
        sock = self.string(doc, "syslog-socket", "audit", DEFAULT_SYSLOG_SOCKET)
        if not os.path.isabs(sock):
            raise self.fail("audit.syslog-socket", f"expected an absolute path, got {sock!r}")
        return {"audit_path": self.string(doc, "path", "audit", DEFAULT_AUDIT_PATH),
                "syslog": syslog, "syslog_socket": sock}

    def runtime(self, doc: dict[str, Any]) -> str:
        self.only(doc, "runtime", {"path"})
        path = self.string(doc, "path", "runtime", "runc")
        if not path:
            raise self.fail("runtime.path", "must not be empty")
        return path

    def swarm_resource(self, doc: dict[str, Any]) -> tuple[str, ...]:
        self.only(doc, "request", {"swarm-resource"})
        value = doc.get("swarm-resource", [])
        # NVIDIA's own config takes one comma-separated string; accept both shapes.
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        names = self.strings(value, "request.swarm-resource")
        for name in names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise self.fail("request.swarm-resource", f"{name!r} is not an env variable name")
        return tuple(names)

    # -- primitives --------------------------------------------------------

    def table(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table")
        return dict(value)

    def only(self, doc: dict[str, Any], where: str, allowed: set[str]) -> None:
        for key in doc:
            if key not in allowed:
                full = f"{where}.{key}" if where else key
                raise self.fail(full, f"unknown key (expected one of {', '.join(sorted(allowed))})")

    def choice(self, value: Any, at: str, kind: type[StrEnum]) -> Any:
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(repr(v.value) for v in kind)
            raise self.fail(at, f"expected one of {allowed}, got {value!r}") from None

    def choices_list(self, value: Any, at: str, allowed: tuple[str, ...]) -> list[str]:
        items = self.strings(value, at)
        for item in items:
            if item not in allowed:
                raise self.fail(at, f"unknown capability {item!r} (known: {', '.join(allowed)})")
        return list(dict.fromkeys(items))

    def uuid_list(self, value: Any, at: str) -> list[str]:
        items = self.strings(value, at)
        for item in items:
            if item[:4].upper() not in ("GPU-", "MIG-"):
                raise self.fail(at, f"expected GPU-/MIG- UUIDs, got {item!r}")
        return items

    def channel_numbers(self, value: Any, at: str) -> list[int]:
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_IMEX_CHANNEL
            for v in value
        ):
            raise self.fail(at, f"expected an array of IMEX channel numbers (integers 0.."
                            f"{MAX_IMEX_CHANNEL - 1}), got {value!r}")
        return list(dict.fromkeys(value))

    def strings(self, value: Any, at: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(at, f"expected an array of strings, got {value!r}")
        return list(value)

    def string(self, doc: dict[str, Any], key: str, where: str, default: str) -> str:
        value = doc.get(key, default)
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"expected a string, got {value!r}")
        return value
