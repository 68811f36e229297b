"""GPU leases with real processes: nvhook hooks as processes, real holder processes (their
pids and start times), the real lease table, flock and signals; the fake NVML plays the GPUs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import fakenvml
import pytest
from builders import node as device_node
from builders import rule as device_rule
from conftest import NVHOOK, Node, runc_state, write_bundle

from nvhook.decision.policy import LeaseMode, LeasePolicy
from nvhook.gpus.inventory import Gpu, Inventory, MigDevice
from nvhook.leases import liveness, rules
from nvhook.leases.store import PARK_ENV
from nvhook.leases.table import (
    EXCLUSIVE,
    SHARED,
    Lease,
    LeaseTableError,
    Table,
    decode,
    encode,
)

GPU0, GPU1 = fakenvml.GPU0_UUID, fakenvml.GPU1_UUID
MIG_A, MIG_B = fakenvml.MIG_A_UUID, fakenvml.MIG_B_UUID


# -- helpers -------------------------------------------------------------------------------


class Containers:
    """Stand-ins for container init processes: real, live pids until ``stop``."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> int:
        proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc.pid

    def stop(self, name: str, reap: bool = True) -> None:
        proc = self.procs[name]
        proc.kill()
        if reap:
            proc.wait()
        else:
            # Wait until it is a zombie without reaping it: waitid with WNOWAIT.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


@pytest.fixture
def containers() -> Iterator[Containers]:
    c = Containers()
    try:
        yield c
    finally:
        c.close()


def lease_config(node: Node, mode: str = "exclusive", extra: str = "", policy: str = "",
                 rules_text: str = "") -> Path:
    text = (f"[policy]\n{policy}\n{rules_text}\n[leases]\nmode = \"{mode}\"\n"
            f'dir = "{node.root / "leases"}"\n{extra}\n')
    return node.write_config(text)


def table_of(node: Node) -> dict:
    path = node.root / "leases" / "leases.json"
    return json.loads(path.read_text()) if path.exists() else {"leases": []}


def holders(node: Node) -> dict[str, list[str]]:
    """device -> containers holding it."""
    out: dict[str, list[str]] = {}
    for rec in table_of(node)["leases"]:
        out.setdefault(rec["device"], []).append(rec["container"])
    return out


def start(node: Node, tmp_path: Path, cid: str, pid: int | None, value: str,
          **env_kw: object) -> subprocess.CompletedProcess[bytes]:
    bundle = write_bundle(tmp_path / cid, [f"NVIDIA_VISIBLE_DEVICES={value}"],
                          caps=["CAP_SYS_ADMIN"])
    return node.run(["--config", str(node.config), "prestart"],
                    stdin=runc_state(bundle, cid, pid=pid), **env_kw)


def stop_hook(node: Node, tmp_path: Path, cid: str, args: tuple[str, ...] = ("prestart",)
              ) -> subprocess.CompletedProcess[bytes]:
    """The poststop call: hooks.d runs the same args with status "stopped"."""
    state = json.dumps({"ociVersion": "1.0.2-dev", "id": cid, "status": "stopped",
                        "bundle": str(tmp_path / cid)}).encode()
    return node.run(["--config", str(node.config), *args], stdin=state)


def denial(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 3, proc.stderr
    return proc.stderr.decode().splitlines()[0]


# -- a GPU injected as a device node is leased like a named one ---------------------------------


def start_with_node(node: Node, tmp_path: Path, cid: str, pid: int | None, minor: int
                    ) -> subprocess.CompletedProcess[bytes]:
    """A CDI-shaped container: void in the env, the GPU as a node (at a path of its own
    choosing) plus its cgroup rule; unprivileged."""
    linux = {"devices": [device_node(f"/dev/gpu{minor}", 195, minor)],
             "resources": {"devices": [device_rule(minor=minor)]}}
    bundle = write_bundle(tmp_path / cid, ["NVIDIA_VISIBLE_DEVICES=void"],
                          extra={"linux": linux})
    return node.run(["--config", str(node.config), "prestart"],
                    stdin=runc_state(bundle, cid, pid=pid))


@pytest.mark.parametrize("first_by, second_by", [
    pytest.param("node", "env", id="node first, then the env names the same GPU"),
    pytest.param("env", "node", id="env first, then a node for the same GPU"),
    pytest.param("node", "node", id="two nodes for one GPU"),
])
def test_a_device_node_takes_and_meets_the_lease(node: Node, tmp_path: Path,
                                                 containers: Containers, first_by: str,
                                                 second_by: str) -> None:
    lease_config(node)

    def run(cid: str, by: str) -> subprocess.CompletedProcess[bytes]:
        pid = containers.start(cid)
        if by == "node":
            return start_with_node(node, tmp_path, cid, pid, 0)  # GPU 0 has NVML minor 0
        return start(node, tmp_path, cid, pid, GPU0)

    first = run("first", first_by)
    assert first.returncode == 0, first.stderr
    assert holders(node) == {GPU0: ["first"]}
    second = run("second", second_by)
    # The node and its cgroup rule are two violations of one lease: the line names the first.
    assert f"{GPU0} is leased exclusively by container first (policy.leases)" in denial(second)
    assert holders(node) == {GPU0: ["first"]}


# -- two exclusive containers, one GPU --------------------------------------------------------


@pytest.mark.parametrize("release", [
    pytest.param("hooks.d poststop", id="poststop through the hooks.d prestart args"),
    pytest.param("shim poststop", id="poststop through the shim's poststop args"),
    pytest.param("died", id="died without poststop: reclaimed"),
    pytest.param("zombie", id="zombie without poststop: reclaimed"),
])
def test_second_exclusive_container_waits_for_the_first(node: Node, tmp_path: Path,
                                                        containers: Containers,
                                                        release: str) -> None:
    lease_config(node)
    first = start(node, tmp_path, "first", containers.start("first"), GPU0)
    assert first.returncode == 0, first.stderr
    second = start(node, tmp_path, "second", containers.start("second"), GPU0)
    assert denial(second) == (f"nvhook: denied: NVIDIA_VISIBLE_DEVICES={GPU0}: {GPU0} is "
                              "leased exclusively by container first (policy.leases)")
    assert holders(node) == {GPU0: ["first"]}
    if release == "hooks.d poststop":
        assert stop_hook(node, tmp_path, "first").returncode == 0
    elif release == "shim poststop":
        assert stop_hook(node, tmp_path, "first", ("poststop",)).returncode == 0
    else:
        containers.stop("first", reap=release == "died")
    again = start(node, tmp_path, "second", containers.procs["second"].pid, GPU0)
    assert again.returncode == 0, again.stderr
    assert holders(node) == {GPU0: ["second"]}


def test_release_is_idempotent_and_audited(node: Node, tmp_path: Path,
                                           containers: Containers) -> None:
    lease_config(node)
    assert start(node, tmp_path, "c1", containers.start("c1"), f"{GPU0},{MIG_A}").returncode == 0
    for _ in range(2):
        proc = stop_hook(node, tmp_path, "c1")
        assert (proc.returncode, proc.stderr) == (0, b"")
    assert holders(node) == {}
    acquire, release = node.audit_lines()
    assert acquire["decision"] == "allow"
    assert acquire["leases"]["held"] == [GPU0, MIG_A]
    assert acquire["leases"]["mode"] == "exclusive"
    assert release["decision"] == "release" and release["container"] == "c1"
    assert release["leases"]["released"] == [GPU0, MIG_A]


def test_a_live_container_keeps_its_lease_when_its_bundle_stays(node: Node, tmp_path: Path,
                                                                 containers: Containers) -> None:
    """Reconciliation runs before every acquire and must never free a live holder."""
    lease_config(node)
    assert start(node, tmp_path, "live", containers.start("live"), GPU0).returncode == 0
    for i in range(3):
        assert start(node, tmp_path, f"other{i}", containers.start(f"o{i}"),
                     GPU0).returncode == 3
    assert holders(node) == {GPU0: ["live"]}


def test_bundle_gone_is_stale(node: Node, tmp_path: Path, containers: Containers) -> None:
    lease_config(node)
    assert start(node, tmp_path, "gone", containers.start("gone"), GPU0).returncode == 0
    (tmp_path / "gone" / "config.json").unlink()
    (tmp_path / "gone").rmdir()
    assert start(node, tmp_path, "next", containers.start("next"), GPU0).returncode == 0
    assert holders(node) == {GPU0: ["next"]}


# -- shared, MIG, rewrite, all ------------------------------------------------------------------


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_sharing_is_capped(node: Node, tmp_path: Path, containers: Containers, cap: int) -> None:
    lease_config(node, "shared", f"max-per-gpu = {cap}")
    for i in range(cap):
        proc = start(node, tmp_path, f"s{i}", containers.start(f"s{i}"), GPU0)
        assert proc.returncode == 0, proc.stderr
    over = denial(start(node, tmp_path, "over", containers.start("over"), GPU0))
    assert f"{GPU0} is shared by {cap} container(s) already (max-per-gpu = {cap}): s0" in over
    assert sorted(holders(node)[GPU0]) == [f"s{i}" for i in range(cap)]
    assert {r["mode"] for r in table_of(node)["leases"]} == {SHARED}


@pytest.mark.parametrize(("first", "second", "second_mode", "admitted", "why"), [
    pytest.param(MIG_A, GPU1, "exclusive", False, f"{GPU1} is busy: its MIG device {MIG_A} is "
                 "leased by container first", id="MIG leased: parent busy for exclusive"),
    pytest.param(MIG_A, MIG_B, "exclusive", True, None, id="MIG devices are leased on their own"),
    pytest.param(GPU1, MIG_B, "exclusive", False, f"{MIG_B}: its parent GPU {GPU1} is leased "
                 "exclusively by container first", id="parent leased: its MIG devices busy"),
    pytest.param(MIG_A, GPU1, "shared", True, None, id="MIG leased: parent free for sharing"),
    pytest.param(MIG_A, GPU0, "exclusive", True, None, id="another GPU's MIG: no effect"),
])
def test_mig_and_parent(node: Node, tmp_path: Path, containers: Containers, first: str,
                        second: str, second_mode: str, admitted: bool, why: str | None) -> None:
    # The first container gets exclusive leases; the rule gives "second" its own mode.
    rule = (f'[[policy.rules]]\nname = "second"\nmatch.annotations = {{ "who" = "second" }}\n'
            f'leases = {{ mode = "{second_mode}", max-per-gpu = 4 }}\n')
    lease_config(node, rules_text=rule)
    assert start(node, tmp_path, "first", containers.start("first"), first).returncode == 0
    bundle = write_bundle(tmp_path / "second", [f"NVIDIA_VISIBLE_DEVICES={second}"],
                          annotations={"who": "second"})
    proc = node.run(["--config", str(node.config), "prestart"],
                    stdin=runc_state(bundle, "second", pid=containers.start("second")))
    if admitted:
        assert proc.returncode == 0, proc.stderr
        assert holders(node)[second] == ["second"]
    else:
        assert why is not None and why in denial(proc)
        assert "(policy.leases, rule 'second')" in denial(proc)
        assert second not in holders(node)


def test_rewrite_keeps_the_leasable_subset_or_void(node: Node, tmp_path: Path,
                                                   containers: Containers) -> None:
    lease_config(node, policy='mode = "rewrite"')
    assert start(node, tmp_path, "a", containers.start("a"), GPU0).returncode == 0
    proc = start(node, tmp_path, "b", containers.start("b"), f"{GPU0},{GPU1}")
    assert proc.returncode == 0, proc.stderr
    env = json.loads((tmp_path / "b" / "config.json").read_text())["process"]["env"]
    assert env == [f"NVIDIA_VISIBLE_DEVICES={GPU1}"]
    proc = start(node, tmp_path, "c", containers.start("c"), f"{GPU0},{GPU1}")
    assert proc.returncode == 0, proc.stderr
    env = json.loads((tmp_path / "c" / "config.json").read_text())["process"]["env"]
    assert env == ["NVIDIA_VISIBLE_DEVICES=void"]
    assert holders(node) == {GPU0: ["a"], GPU1: ["b"]}


def test_all_leases_every_device(node: Node, tmp_path: Path, containers: Containers) -> None:
    lease_config(node)
    assert start(node, tmp_path, "all", containers.start("all"), "all").returncode == 0
    assert holders(node) == {d: ["all"] for d in (GPU0, GPU1, MIG_A, MIG_B)}
    assert "is leased exclusively by container all" in denial(
        start(node, tmp_path, "mig", containers.start("mig"), MIG_B))


def test_off_by_default_nothing_is_leased(node: Node, tmp_path: Path,
                                          containers: Containers) -> None:
    node.write_config(f'[leases]\ndir = "{node.root / "leases"}"\n')
    for cid in ("x", "y"):
        assert start(node, tmp_path, cid, containers.start(cid), GPU0).returncode == 0
    assert not (node.root / "leases").exists()


def test_no_gpu_container_never_touches_the_table(node: Node, tmp_path: Path) -> None:
    lease_config(node)
    bundle = write_bundle(tmp_path / "plain", ["PATH=/bin"])
    for status in ("creating", "stopped"):
        proc = node.run(["--config", str(node.config), "prestart"],
                        stdin=runc_state(bundle, "plain", status=status))
        assert (proc.returncode, proc.stderr) == (0, b"")
    assert not (node.root / "leases").exists()


# -- the table's format, boot id, fail closed ----------------------------------------------------


def v1_table(boot_id: str, pid: int, bundle: Path) -> dict:
    return {"format": 1, "boot_id": boot_id, "devices": {GPU0: [
        {"container": "old", "bundle": str(bundle), "pid": pid, "time": "2026-01-01T00:00:00Z",
         "rule": None}]}}


def test_leases_survive_an_upgrade_from_format_1(node: Node, tmp_path: Path,
                                                 containers: Containers) -> None:
    lease_config(node)
    (tmp_path / "old").mkdir()
    directory = node.root / "leases"
    directory.mkdir()
    table = directory / "leases.json"
    table.write_text(json.dumps(v1_table(liveness.boot_id(), containers.start("old"),
                                         tmp_path / "old")))
    assert "leased exclusively by container old" in denial(
        start(node, tmp_path, "new", containers.start("new"), GPU0))
    assert start(node, tmp_path, "new", containers.procs["new"].pid, GPU1).returncode == 0
    doc = json.loads(table.read_text())
    assert doc["format"] == 2
    assert {(r["device"], r["container"], r["mode"]) for r in doc["leases"]} == {
        (GPU0, "old", EXCLUSIVE), (GPU1, "new", EXCLUSIVE)}


def test_a_reboot_reclaims_every_lease(node: Node, tmp_path: Path,
                                       containers: Containers) -> None:
    lease_config(node)
    (tmp_path / "old").mkdir()
    (node.root / "leases").mkdir()
    (node.root / "leases" / "leases.json").write_text(json.dumps(
        v1_table("another-boot", containers.start("old"), tmp_path / "old")))
    assert start(node, tmp_path, "new", containers.start("new"), GPU0).returncode == 0
    assert holders(node) == {GPU0: ["new"]}
    assert table_of(node)["boot_id"] == liveness.boot_id()


@pytest.mark.parametrize(("text", "problem"), [
    pytest.param('{"format": 3, "boot_id": "b", "leases": []}', "format 3 is not one this "
                 "nvhook reads (1, 2); was it written by a newer nvhook?", id="newer format"),
    pytest.param("{not json", "not a lease table (invalid JSON", id="not JSON"),
    pytest.param('{"format": 2, "boot_id": "b", "leases": [{"device": "GPU-x"}]}',
                 "leases[0].mode: expected 'exclusive' or 'shared', got None", id="bad record"),
])
def test_an_unreadable_table_fails_closed(node: Node, tmp_path: Path, containers: Containers,
                                          text: str, problem: str) -> None:
    lease_config(node)
    (node.root / "leases").mkdir()
    path = node.root / "leases" / "leases.json"
    path.write_text(text)
    line = denial(start(node, tmp_path, "c", containers.start("c"), GPU0))
    assert line.startswith(f"nvhook: denied: leases: lease table unusable: {path}: ")
    assert problem in line and line.endswith("(fail closed)")
    assert path.read_text() == text


@pytest.mark.parametrize("lease", [
    pytest.param(Lease(GPU0, "c", "/b", 12, 34, EXCLUSIVE, "t", None), id="full record"),
    pytest.param(Lease(MIG_A, "c", None, None, None, SHARED, "t", "r"), id="no pid or bundle"),
])
def test_table_round_trip(lease: Lease) -> None:
    table = Table("boot", (lease,))
    assert decode(encode(table), "t") == table


@pytest.mark.parametrize(("doc", "problem"), [
    pytest.param({"format": True, "boot_id": "b"}, "format: expected an integer", id="bool"),
    pytest.param({"format": 2, "boot_id": 5, "leases": []}, "boot_id: expected a string",
                 id="boot id"),
    pytest.param({"format": 2, "boot_id": "b", "leases": [
        {"device": "nvidia0", "container": "c", "mode": "shared", "time": "t"}]},
        "leases[0].device: expected a GPU-/MIG- UUID", id="device"),
    pytest.param({"format": 2, "boot_id": "b", "leases": [
        {"device": GPU0, "container": "c", "mode": "shared", "time": "t", "pid": -1}]},
        "leases[0].pid: expected a non-negative integer", id="pid"),
    pytest.param({"format": 1, "boot_id": "b", "devices": {GPU0: [{"container": ""}]}},
                 f"devices.{GPU0}[0].container: expected a non-empty string", id="v1 container"),
])
def test_decode_names_the_field_at_fault(doc: dict, problem: str) -> None:
    with pytest.raises(LeaseTableError) as e:
        decode(json.dumps(doc).encode(), "T")
    assert e.value.message.startswith("T: ") and problem in e.value.message


# -- liveness --------------------------------------------------------------------------------


def test_liveness(tmp_path: Path, containers: Containers) -> None:
    pid = containers.start("p")
    start_ = liveness.start_time(pid)
    assert start_ is not None
    live = Lease(GPU0, "c", str(tmp_path), pid, start_, EXCLUSIVE, "t", None)
    assert liveness.stale_reason(live) is None
    assert liveness.stale_reason(replace(live, pid_start=start_ + 1)).startswith(
        f"pid {pid} is another process now")
    assert liveness.stale_reason(replace(live, bundle=str(tmp_path / "nope"))) == \
        f"bundle {tmp_path / 'nope'} is gone"
    assert liveness.stale_reason(replace(live, pid=None, pid_start=None)) is None
    containers.stop("p", reap=False)
    assert liveness.stale_reason(live) == f"pid {pid} has exited (state Z)"
    assert liveness.start_time(pid) is None
    containers.procs["p"].wait()
    assert liveness.stale_reason(live) == f"pid {pid} is gone"


# -- the rules, as a table ----------------------------------------------------------------------

G0 = Gpu(0, "GPU-00000000-0000-4000-8000-000000000000", "00000000:10:00.0", 0, "H100", False)
G1 = Gpu(1, "GPU-00000001-0000-4000-8000-000000000001", "00000000:11:00.0", 1, "H100", True)
M1 = MigDevice(G1.uuid, 1, 0, "MIG-00000001-0000-5000-8000-000000000010", 1, 0)
INV = Inventory((G0, G1), (M1,), "550", source="test")
EX = LeasePolicy(LeaseMode.EXCLUSIVE)


def lease(device: str, who: str, mode: str = EXCLUSIVE) -> Lease:
    return Lease(device, who, None, None, None, mode, f"t-{who}", None)


@pytest.mark.parametrize(("leases", "policy", "busy"), [
    pytest.param([], EX, {}, id="empty table"),
    pytest.param([lease(G0.uuid, "me")], EX, {}, id="own lease is no collision"),
    pytest.param([lease(G0.uuid, "a")], EX,
                 {G0.uuid: f"{G0.uuid} is leased exclusively by container a"}, id="exclusive"),
    pytest.param([lease(G0.uuid, "a", SHARED), lease(G0.uuid, "b", SHARED)], EX,
                 {G0.uuid: f"{G0.uuid} is leased (shared) by container a (and 1 more), so it "
                  "cannot be leased exclusively"}, id="shared holders block exclusive"),
    pytest.param([lease(G0.uuid, "a", SHARED)], LeasePolicy(LeaseMode.SHARED, 2), {},
                 id="shared under the cap"),
    pytest.param([lease(G0.uuid, "a")], LeasePolicy(LeaseMode.SHARED, 4),
                 {G0.uuid: f"{G0.uuid} is leased exclusively by container a"},
                 id="exclusive holder blocks sharing"),
    pytest.param([lease(M1.uuid, "a")], EX,
                 {M1.uuid: f"{M1.uuid} is leased exclusively by container a",
                  G1.uuid: f"{G1.uuid} is busy: its MIG device {M1.uuid} is leased by "
                  "container a"}, id="MIG leased: parent busy"),
    pytest.param([lease(G1.uuid, "a")], LeasePolicy(LeaseMode.SHARED, 4),
                 {G1.uuid: f"{G1.uuid} is leased exclusively by container a",
                  M1.uuid: f"{M1.uuid}: its parent GPU {G1.uuid} is leased exclusively by "
                  "container a"}, id="parent exclusive: MIG busy"),
])
def test_held(leases: list[Lease], policy: LeasePolicy, busy: dict[str, str]) -> None:
    assert rules.held(leases, "me", policy, INV) == {k.lower(): v for k, v in busy.items()}


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "problem"), [
    pytest.param('[leases]\nmode = "sometimes"', "leases.mode: expected one of 'off', "
                 "'exclusive', 'shared', got 'sometimes'", id="mode"),
    pytest.param("[leases]\nmax-per-gpu = 0", "leases.max-per-gpu: expected an integer in "
                 "1..1024, got 0", id="cap"),
    pytest.param('[leases]\ndir = "run/x"', "leases.dir: expected an absolute path", id="dir"),
    pytest.param("[leases]\nttl = 5", "leases.ttl: unknown key", id="unknown key"),
    pytest.param('[[policy.rules]]\nmatch.annotations = { a = "b" }\nleases = { dir = "/x" }',
                 "policy.rules[0].leases.dir: unknown key", id="rule cannot move the table"),
])
def test_config_errors(node: Node, tmp_path: Path, text: str, problem: str) -> None:
    node.write_config(text)
    proc = start(node, tmp_path, "c", None, GPU0)
    assert proc.returncode == 4
    assert problem in proc.stderr.decode()


def test_rule_overrides_only_what_it_names() -> None:
    from nvhook.config import parse

    config = parse(b'[leases]\nmode = "exclusive"\nmax-per-gpu = 3\n[[policy.rules]]\n'
                   b'name = "nb"\nmatch.annotations = { ns = "nb" }\nleases.mode = "shared"\n',
                   Path("/c.toml"))
    assert config.policy.leases == LeasePolicy(LeaseMode.EXCLUSIVE, 3)
    assert config.policy_for({"ns": "nb"}).leases == LeasePolicy(LeaseMode.SHARED, 3)
    assert config.policy_for({"ns": "x"}).leases == LeasePolicy(LeaseMode.EXCLUSIVE, 3)


# -- what operators see ---------------------------------------------------------------------------


def test_leases_command_explain_and_doctor(node: Node, tmp_path: Path,
                                           containers: Containers) -> None:
    lease_config(node)
    assert start(node, tmp_path, "a", containers.start("a"), GPU0).returncode == 0
    assert start(node, tmp_path, "b", containers.start("b"), GPU1).returncode == 0
    containers.stop("b")
    listing = node.run(["--config", str(node.config), "leases", "--json"])
    assert listing.returncode == 0, listing.stderr
    doc = json.loads(listing.stdout)
    state = {r["container"]: r["stale"] for r in doc["leases"]}
    assert state["a"] is None and state["b"].startswith("pid ") and "gone" in state["b"]
    text = node.run(["--config", str(node.config), "leases"]).stdout.decode()
    assert "live" in text and "stale: pid" in text

    bundle = write_bundle(tmp_path / "probe", [f"NVIDIA_VISIBLE_DEVICES={GPU0},{GPU1}"])
    explain = node.run(["--config", str(node.config), "explain", "--bundle", str(bundle)])
    out = explain.stdout.decode()
    assert explain.returncode == 3
    assert f"collides     {GPU0} is leased exclusively by container a" in out
    assert f"stale        {GPU1} of container b: pid" in out
    as_json = json.loads(node.run(["--config", str(node.config), "explain", "--bundle",
                                   str(bundle), "--json"]).stdout)
    assert as_json["leases"]["collisions"] == [f"{GPU0} is leased exclusively by container a"]
    assert holders(node) == {GPU0: ["a"], GPU1: ["b"]}  # explain and leases changed nothing

    doctor = node.run(["--config", str(node.config), "doctor", "--hooks-dir", str(tmp_path)])
    # doctor prints aligned columns: LEVEL  NAME  DETAIL
    [line] = [x for x in doctor.stdout.decode().splitlines() if x.split()[:2] == ["warn",
                                                                                "leases"]]
    assert f"2 lease(s), 1 stale, would reclaim: {GPU1} of container b: pid" in line


# -- concurrency and crashes --------------------------------------------------------------------


def test_fifty_concurrent_starts_for_four_gpus(node: Node, tmp_path: Path,
                                               containers: Containers) -> None:
    topology = fakenvml.write_topology(tmp_path / "topo", fakenvml.big_topology(4, 0))
    uuids = [g["uuid"] for g in fakenvml.big_topology(4, 0)]
    lease_config(node)
    # 50 NVML inits at once on a slow, shared machine: no NVML timeout may decide the test.
    with node.config.open("a") as f:
        f.write("\n[inventory]\ntimeout = 600\n")
    env = node.env(topology=topology)
    procs = {}
    for i in range(50):
        cid = f"c{i:02d}"
        bundle = write_bundle(tmp_path / cid, [f"NVIDIA_VISIBLE_DEVICES={uuids[i % 4]}"])
        procs[cid] = subprocess.Popen(
            [str(NVHOOK), "--config", str(node.config), "prestart"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        procs[cid].stdin.write(runc_state(bundle, cid, pid=containers.start(cid)))
        procs[cid].stdin.close()
    results = {cid: (p.wait(timeout=600), p.stderr.read().decode()) for cid, p in procs.items()}
    for p in procs.values():
        p.stdout.close()
        p.stderr.close()
    admitted = sorted(cid for cid, (rc, _) in results.items() if rc == 0)
    assert len(admitted) == 4, results
    held = holders(node)
    assert sorted(held) == sorted(uuids) and all(len(v) == 1 for v in held.values())
    assert sorted(v[0] for v in held.values()) == admitted
    owner = {uuid: who[0] for uuid, who in held.items()}
    for cid, (rc, err) in results.items():
        if rc != 0:
            uuid = uuids[int(cid[1:]) % 4]
            assert rc == 3, err
            assert f"{uuid} is leased exclusively by container {owner[uuid]}" in err


@pytest.fixture
def park(tmp_path: Path) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "park.sock"))
    server.listen(4)
    server.settimeout(120)  # a guard against a hang, not a pace
    try:
        yield server
    finally:
        server.close()


def parked(server: socket.socket) -> tuple[socket.socket, str, int]:
    conn, _ = server.accept()
    conn.settimeout(120)
    point, pid = conn.makefile().readline().split()
    return conn, point, int(pid)


@pytest.mark.parametrize("point", ["locked", "written"])
def test_hook_killed_in_the_middle_of_an_acquire(node: Node, tmp_path: Path,
                                                 containers: Containers,
                                                 park: socket.socket, point: str) -> None:
    lease_config(node)
    assert start(node, tmp_path, "keep", containers.start("keep"), GPU1).returncode == 0
    bundle = write_bundle(tmp_path / "victim", [f"NVIDIA_VISIBLE_DEVICES={GPU0}"])
    env = node.env(extra={PARK_ENV: str(tmp_path / "park.sock")})
    hook = subprocess.Popen([str(NVHOOK), "--config", str(node.config), "prestart"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert hook.stdin is not None
    hook.stdin.write(runc_state(bundle, "victim", pid=containers.start("victim")))
    hook.stdin.close()
    conn, at, pid = parked(park)
    while at != point:
        conn.sendall(b"g")
        conn.close()
        conn, at, pid = parked(park)
    assert pid == hook.pid
    os.kill(pid, signal.SIGKILL)
    assert hook.wait() == -signal.SIGKILL
    conn.close()
    assert hook.stderr is not None
    hook.stderr.close()
    # No lost lease: the live holder keeps GPU1. A lease written just before the kill
    # belongs to a container whose runtime now aborts it.
    expected = {GPU1: ["keep"], **({GPU0: ["victim"]} if point == "written" else {})}
    assert holders(node) == expected
    containers.stop("victim")
    # No phantom lease: the next acquire (the lock is free again) reclaims it.
    assert start(node, tmp_path, "next", containers.start("next"), GPU0).returncode == 0
    assert holders(node) == {GPU1: ["keep"], GPU0: ["next"]}
    assert sorted(p.name for p in (node.root / "leases").iterdir()) == ["leases.json", "lock"]


def test_audit_mode_lets_a_collision_through_but_never_records_a_second_holder(
        node: Node, tmp_path: Path, containers: Containers) -> None:
    lease_config(node, policy='mode = "audit"')
    assert start(node, tmp_path, "a", containers.start("a"), GPU0).returncode == 0
    proc = start(node, tmp_path, "b", containers.start("b"), f"{GPU0},{GPU1}")
    assert proc.returncode == 0, proc.stderr
    assert holders(node) == {GPU0: ["a"], GPU1: ["b"]}
    entry = node.audit_lines()[-1]
    assert entry["leases"]["held"] == [GPU1]
    assert entry["leases"]["collisions"] == [f"{GPU0} is leased exclusively by container a"]
    assert any("(policy.leases)" in r for r in entry["reasons"])


def test_holder_named_in_one_line_even_with_control_characters(
        node: Node, tmp_path: Path, containers: Containers) -> None:
    lease_config(node)
    assert start(node, tmp_path, "evil", containers.start("evil"), GPU0).returncode == 0
    table = node.root / "leases" / "leases.json"
    doc = json.loads(table.read_text())
    doc["leases"][0]["container"] = "evil\nnvhook: allowed"
    table.write_text(json.dumps(doc))
    proc = start(node, tmp_path, "next", containers.start("next"), GPU0)
    assert proc.returncode == 3
    assert proc.stderr.decode().splitlines() == [
        f"nvhook: denied: NVIDIA_VISIBLE_DEVICES={GPU0}: {GPU0} is leased exclusively by "
        "container evil\\x0anvhook: allowed (policy.leases)"]


@pytest.mark.parametrize("where", ["/dev/shm", "tmp_path"])
def test_doctor_says_whether_the_table_is_on_a_tmpfs(node: Node, tmp_path: Path,
                                                     where: str) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(dir="/dev/shm")) if where == "/dev/shm" else tmp_path
    try:
        directory = base / "not-yet" / "leases"  # doctor looks at the nearest existing dir
        node.write_config(f'[leases]\nmode = "exclusive"\ndir = "{directory}"\n')
        kind = subprocess.run(["stat", "-f", "-c", "%T", str(base)], capture_output=True,
                              text=True, check=True).stdout.strip()
        doctor = node.run(["--config", str(node.config), "doctor", "--hooks-dir",
                           str(tmp_path)])
        # doctor's aligned columns, back in the one-check form ("LEVEL  NAME: DETAIL")
        rows = [x.split(None, 2) for x in doctor.stdout.decode().splitlines()]
        [line] = [f"{r[0]}  {r[1]}: {r[2]}" for r in rows if r[1] == "leases-dir"]
        if kind == "tmpfs":
            assert line == f"ok  leases-dir: {directory}: on a tmpfs"
        else:
            assert line.startswith(f"warn  leases-dir: {directory}: on ")
            assert "not a tmpfs" in line
        assert not directory.exists()
    finally:
        if where == "/dev/shm":
            import shutil

            shutil.rmtree(base)
