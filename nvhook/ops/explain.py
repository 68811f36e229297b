"""Render an evaluation for people (a short table) and for programs (one JSON object)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nvhook.config import Config
from nvhook.decision.decide import Outcome
from nvhook.decision.evaluate import Evaluation, evaluate
from nvhook.decision.request import Request, env_map, to_json
from nvhook.errors import AllocationError, InventoryError
from nvhook.gpus.devnodes import Reached
from nvhook.kube import identity as identity_mod
from nvhook.kube.allocation import matches, strip_replica
from nvhook.leases.step import LeaseStep
from nvhook.oci import spec as spec_mod
from nvhook.safetext import one_line


def nvidia_env(env: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in env_map(env).items() if k.startswith("NVIDIA_")}


def as_json(e: Evaluation, leases: LeaseStep | None = None) -> dict[str, Any]:
    d = e.decision
    inventory = e.inventory
    out = {
        "bundle": str(e.spec.bundle),
        "decision": d.outcome.value,
        "request": to_json(e.request),
        "nvidia": {"channel": e.request.nvidia.channel.value, "why": e.request.nvidia.why,
                   "config": e.request.nvidia.config.as_json()},
        "granted": list(d.granted),
        "imex_granted": list(d.imex),
        "reasons": d.reasons,
        "env": nvidia_env(d.env),
        # A denied container never starts: the env above is never seen by anything.
        "starts": d.outcome is not Outcome.DENY,
        "policy": {"mode": d.policy.mode.value, "rule": d.policy.rule},
        "inventory": (
            {"error": str(inventory)} if isinstance(inventory, InventoryError)
            else inventory.as_json() if inventory is not None else None
        ),
        "allocation": e.allocation_json(),
    }
    if d.policy.leases.active:
        out["leases"] = {"mode": d.policy.leases.mode.value,
                         "max_per_gpu": d.policy.leases.max_per_gpu,
                         **(leases.as_json() if leases is not None else {})}
    return out


def lease_rows(e: Evaluation, leases: LeaseStep | None) -> list[tuple[str, str]]:
    """Which leases the container would take, and which it collides with."""
    policy = e.decision.policy.leases
    if not policy.active:
        return []
    mode = policy.mode.value + (f", max-per-gpu {policy.max_per_gpu}"
                                if policy.mode.value == "shared" else "")
    rows = [("leases", mode)]
    if leases is not None:
        rows.append(("would lease", ", ".join(x.device for x in leases.held) or "-"))
        rows += [("collides", c) for c in leases.collisions]
        rows += [("stale", f"{s.lease.device} of container {one_line(s.lease.container)}: {s.why} "
                  "(reclaimed at the next start)") for s in leases.reclaimed]
    return rows


def as_text(e: Evaluation, leases: LeaseStep | None = None) -> str:
    d = e.decision
    r = e.request
    rows: list[tuple[str, str]] = [
        ("bundle", str(e.spec.bundle)),
        ("container", f"privileged={_yes(r.privileged)} legacy-image={_yes(r.legacy_image)}"),
        ("nvidia", f"reads {r.nvidia.channel.value}: {r.nvidia.why}"),
        ("env", f"{r.env.label} -> {_show(r.env.devices.as_json())}"
         if r.env.value is not None or r.env.legacy_implicit_all else "-"),
        ("mounts", ", ".join(m.id for m in r.mounts) or "-"),
        ("cdi", ", ".join(c.name for c in r.cdi) or "-"),
        ("imex", imex_text(r)),
        ("nodes", "; ".join(f"{n.label} -> {n.kind.value}"
                                   + (f" {n.gpu_minor}" if n.gpu_minor is not None else "")
                                   + (f" {n.as_json()['channel']}" if n.kind is Reached.IMEX
                                      else "")
                                   for n in r.device_nodes) or "-"),
    ]
    if isinstance(e.inventory, InventoryError):
        rows.append(("inventory", f"unavailable: {e.inventory}"))
    if e.identity is not None:
        rows.append(("pod", f"{e.identity.name} ({e.identity.runtime}"
                     + (", sandbox)" if e.identity.sandbox else ")")))
    allocation = e.allocation_json()
    if allocation is not None:
        rows.append(("allocation", f"error: {allocation['error']}" if "error" in allocation
                     else f"{allocation['source']}: "
                     + (", ".join(allocation.get("allocated") or [])  # type: ignore[arg-type]
                        or "no GPU")))
    rows.append(("decision", d.outcome.value + (f" (rule {d.policy.rule})" if d.policy.rule
                                                 else "")))
    rows.append(("granted", ", ".join(d.granted) or "-"))
    if r.imex.channels or r.imex.env_value is not None:
        rows.append(("imex granted", ", ".join(d.imex) or "-"))
    rows += [("reason", reason) for reason in d.reasons]
    rows += lease_rows(e, leases)
    if d.outcome is Outcome.DENY:
        rows.append(("container", "gets nothing: the runtime aborts it, it never starts"))
    else:
        after = nvidia_env(d.env)
        rows += [("env after", f"{k}={v}") for k, v in after.items()] or [("env after", "-")]
    width = max(len(k) for k, _ in rows)
    # Values quote the container's env and ids: one row stays one line on the terminal.
    return "\n".join(f"{k.ljust(width)}  {one_line(v)}" for k, v in rows)


def imex_text(r: Request) -> str:
    """The IMEX row: the channels NVIDIA's stack would attach, and which channel it reads."""
    imex = r.imex
    if not imex.channels and imex.env_value is None and not imex.mounts:
        return "-"
    asked = ", ".join(f"{c.id} ({c.via.value})" for c in imex.channels) or "no channel"
    return f"{asked}; reads {imex.read.value}: {imex.why}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _show(value: object) -> str:
    if value is None:
        return "not requested"
    return ",".join(value) if isinstance(value, list) else str(value)


def pod_view(config: Config, namespace: str, pod: str, container: str | None,
             inventory_file: Path | None = None) -> dict[str, Any]:
    """``explain --pod``: the kubelet's allocation for each container of a pod, and what a
    container of that pod asking as the device plugin does (its allocated ids; ``all``, as a
    CUDA image bakes in, when it has none) would get. The pod is read as the hook reads it
    (``Get``, else ``List``), and each container judged by the hook's own evaluation.
    Raises ``AllocationError``."""
    from nvhook.kube import podresources

    k = config.kubernetes
    found = podresources.lookup(k.socket, namespace, pod, k.timeout)
    names = [c.name for c in found.containers]
    if container is not None and container not in names:
        raise AllocationError(f"pod {namespace}/{pod} has no container {container!r} "
                              f"(containers: {', '.join(names) or 'none'})")
    out = []
    for c in found.containers:
        if container is not None and c.name != container:
            continue
        ids = [strip_replica(i) for d in c.devices if matches(d.resource, k.resources)
               for i in d.device_ids]
        env = f"NVIDIA_VISIBLE_DEVICES={','.join(dict.fromkeys(ids)) or 'all'}"
        doc = {"ociVersion": "1.0.2", "process": {"env": [env]},
               "annotations": containerd_annotations_of(namespace, pod, c.name)}
        e = evaluate(spec_mod.from_document(Path("/explain-pod/config.json"), doc), config,
                     inventory_file)
        out.append({"container": c.name,
                    "devices": [{"resource": d.resource, "ids": list(d.device_ids),
                                 "counted": matches(d.resource, k.resources)}
                                for d in c.devices],
                    "cdi_devices": list(c.cdi_devices),
                    "asks": env, "decision": e.decision.outcome.value,
                    "granted": list(e.decision.granted), "reasons": e.decision.reasons,
                    "allocation": e.allocation_json()})
    return {"namespace": namespace, "pod": pod,
            "kubelet": {"socket": str(k.socket), "answered_by": found.via.value},
            "containers": out}


def containerd_annotations_of(namespace: str, pod: str, container: str) -> dict[str, str]:
    keys = identity_mod.KEYS
    return {keys["namespace"][0]: namespace, keys["pod"][0]: pod,
            keys["container"][0]: container, keys["type"][0]: "container"}


def pod_text(view: dict[str, Any]) -> str:
    kubelet = view["kubelet"]
    lines = [f"pod {view['namespace']}/{view['pod']} (kubelet {kubelet['socket']}, "
             f"answered by {kubelet['answered_by']})"]
    for c in view["containers"]:
        devices = "; ".join(f"{d['resource']}: {','.join(d['ids'])}"
                            + ("" if d["counted"] else " (not counted: not in "
                               "kubernetes.resources)") for d in c["devices"])
        lines.append(f"  container {c['container']}: kubelet allocated {devices or 'no device'}")
        if c["cdi_devices"]:
            lines.append(f"    CDI devices (DRA): {', '.join(c['cdi_devices'])}")
        lines.append(f"    {c['asks']} -> {c['decision']}, granted "
                     f"{', '.join(c['granted']) or 'none'}")
        lines += [f"    reason: {r}" for r in c["reasons"]]
    # Pod and container names and ids come from the kubelet: one row stays one line.
    return "\n".join(one_line(line) for line in lines)
