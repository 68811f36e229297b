"""Edit nvhook's own TOML config with tomlkit, keeping the user's comments and order.

``config set`` validates the whole edited document with ``config.parse`` before it
writes, so a bad value never reaches the file the hook reads for every container.
The commented default file that ``nvhook install`` writes is built here too: its
values come from the dataclass defaults, so the two cannot drift apart.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvhook import config as config_mod
from nvhook import fileops
from nvhook.errors import ConfigError, UsageError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Edit:
    path: Path
    key: str
    old: Any  # None when the key was unset
    new: Any
    changed: bool
    created: bool  # the file did not exist and was started from the default


def parse_value(text: str) -> Any:
    """A TOML value if ``text`` is one (``true``, ``5``, ``["GPU-…"]``), else the string."""
    import tomlkit

    try:
        tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return tomlkit.string(text)
    return tomlkit.parse(f"v = {text}")["v"]


def set_value(path: Path, key: str, value_text: str) -> Edit:
    import tomlkit
    from tomlkit.exceptions import ParseError

    parts = key.split(".")
    if not all(_BARE_KEY.fullmatch(p) for p in parts):
        raise UsageError(f"config set: {key!r} is not a dotted key like policy.mode")
    data = fileops.read_optional(path)
    created = data is None
    text = default_text() if data is None else _utf8(path, data)
    try:
        doc = tomlkit.parse(text)
    except ParseError as e:
        raise ConfigError(f"{path}:{e.line}:{e.col}: invalid TOML, not edited") from None
    table: Any = doc
    for i, part in enumerate(parts[:-1]):
        if part not in table:
            table[part] = tomlkit.table()
        table = table[part]
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {'.'.join(parts[: i + 1])}: not a table, cannot set {key}")
    last = parts[-1]
    old = table.get(last)
    old_plain = old.unwrap() if hasattr(old, "unwrap") else old
    value = parse_value(value_text)
    new_plain = value.unwrap() if hasattr(value, "unwrap") else value
    if old is not None and old_plain == new_plain and not created:
        return Edit(path, key, old_plain, new_plain, changed=False, created=False)
    table[last] = value
    out = tomlkit.dumps(doc).encode("utf-8")
    try:
        config_mod.parse(out, path)
    except ConfigError as e:
        raise ConfigError(
            f"config set {key} = {value_text}: rejected, file unchanged: {e}"
        ) from None
    fileops.write_atomic(path, out, 0o644)
    return Edit(path, key, old_plain, new_plain, changed=True, created=created)


def _utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 at byte {e.start}, not edited") from None


def default_text() -> str:
    """nvhook's config with every key at its default, each commented with what it does."""
    import tomlkit

    from nvhook.decision.policy import Policy

    p = Policy()
    c = config_mod.Config()
    doc = tomlkit.document()
    doc.add(tomlkit.comment("nvhook's config (README: Configuration). Every value here is the"))
    doc.add(tomlkit.comment("built-in default; edit with `nvhook config set KEY VALUE`."))
    doc.add("version", 1)
    doc.add(tomlkit.nl())

    policy = tomlkit.table()
    _key(policy, "mode", p.mode.value,
         '"enforce": deny a request that breaks any rule; "rewrite": drop what breaks a rule',
         'and keep the rest ("void" when nothing is left); "audit": let it through, record it')
    _key(policy, "all", p.all.value,
         'who may have every GPU (explicit or legacy implicit all): "never" | "privileged" |',
         '"always"')
    _key(policy, "indices", p.indices.value,
         '"deny": only UUIDs; index, g:m and PCI ids are violations')
    _key(policy, "unprivileged-env", p.unprivileged_env.value,
         'the env channel of unprivileged containers: "accept" | "ignore" | "deny"')
    _key(policy, "volume-mounts", p.volume_mounts.value,
         'device volume mounts: "accept" | "ignore" | "deny"')
    _key(policy, "cdi-annotations", p.cdi_annotations.value,
         'cdi.k8s.io/* annotations: "accept" | "ignore" | "deny"')
    _key(policy, "allow", list(p.allow),
         "GPU-/MIG- UUIDs that may be granted; empty = any live device")
    _key(policy, "deny", list(p.deny), "UUIDs never granted")
    _key(policy, "driver-capabilities", list(p.driver_capabilities),
         "NVIDIA_DRIVER_CAPABILITIES a container may ask for")
    _key(policy, "mig-config", p.mig_config.value,
         'NVIDIA_MIG_CONFIG_DEVICES / _MONITOR_DEVICES: "never" | "privileged"')
    _key(policy, "device-nodes", p.device_nodes.value,
         '"deny": /dev/nvidiaN in linux.devices is refused (cannot be rewritten)')
    for line in (
        "Per-container overrides: the first rule whose (anchored) annotation regexes all match",
        "wins. Example:",
        "[[policy.rules]]",
        'name = "batch"',
        'match.annotations = { "io.kubernetes.pod.namespace" = "batch-.*" }',
        'mode = "rewrite"',
        'allow = ["GPU-5a6e2b1c-8d3f-4e7a-9b0c-1d2e3f4a5b6c"]',
    ):
        policy.add(tomlkit.comment(line))
    policy.add(tomlkit.nl())
    doc.add("policy", policy)

    inventory = tomlkit.table()
    _key(inventory, "source", c.inventory.source.value,
         '"nvml" | "file"; with "file", set file = "/etc/nvhook/inventory.json"')
    _key(inventory, "timeout", c.inventory.timeout, "seconds for NVML init + enumeration")
    inventory.add(tomlkit.nl())
    doc.add("inventory", inventory)

    delegate = tomlkit.table()
    delegate.add(tomlkit.comment("NVIDIA's hook, exec'd after allow/rewrite."))
    delegate.add(tomlkit.comment("path: unset = look up nvidia-container-runtime-hook, then"))
    delegate.add(tomlkit.comment('nvidia-container-toolkit, on a fixed safe PATH; "" = policy'))
    delegate.add(tomlkit.comment('only: exit 0 and let a separately registered NVIDIA hook run'))
    delegate.add(tomlkit.comment('next.'))
    _key(delegate, "args", list(c.delegate.args),
         'e.g. ["-config=/etc/nvidia-container-runtime/config.toml", "prestart"]')
    _key(delegate, "env", list(c.delegate.env), "the delegate's whole env; nothing else reaches it")
    delegate.add(tomlkit.nl())
    doc.add("delegate", delegate)

    audit = tomlkit.table()
    _key(audit, "path", c.audit_path, 'one JSON line per GPU decision; "" turns the log off')
    audit.add(tomlkit.nl())
    doc.add("audit", audit)

    runtime = tomlkit.table()
    _key(runtime, "path", c.runtime_path,
         "the low-level runtime the Docker/containerd shim execs (name or absolute path)")
    runtime.add(tomlkit.nl())
    doc.add("runtime", runtime)

    request = tomlkit.table()
    _key(request, "swarm-resource", list(c.swarm_resource),
         "NVIDIA's swarm-resource: env names read instead of NVIDIA_VISIBLE_DEVICES")
    doc.add("request", request)
    return tomlkit.dumps(doc)


def _key(table: Any, key: str, value: Any, *comment: str) -> None:
    import tomlkit

    for line in comment:
        table.add(tomlkit.comment(line))
    table.add(key, tomlkit.item(value))
