"""Device nodes and cgroup device rules judged by type and major:minor (``gpus.devnodes``):
the mapping, the host's files, the spec fields as Go reads them, the decision at prestart
and before creation, allocation binding, privileged containers, the fast path, the config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from builders import (
    ADMIN,
    CAPS_MAJOR,
    HOST_MIG_MINORS,
    HOST_PROC_DEVICES,
    IMEX_MAJOR,
    UVM_MAJOR,
    document,
    fake_inventory,
    host,
    policy,
    rule,
    spec_from,
)
from builders import node as dev
from conftest import Node, runc_state
from fakenvml import GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID

from nvhook import config as config_mod
from nvhook.decision.decide import Outcome, decide
from nvhook.decision.request import parse
from nvhook.errors import SpecError
from nvhook.gpus import devnodes
from nvhook.gpus.devnodes import Host
from nvhook.kube.allocation import Allocation, Unallocated
from nvhook.kube.identity import Identity
from nvhook.oci import scan
from nvhook.oci.spec import from_document

P = pytest.param
G0, G1, MA, MB = GPU0_UUID, GPU1_UUID, MIG_A_UUID, MIG_B_UUID
VOID = "NVIDIA_VISIBLE_DEVICES=void"
INV = fake_inventory()


def exposure(nodes: list[dict[str, Any]] = (), rules: list[dict[str, Any]] = (),  # type: ignore[assignment]
             privileged: bool = False, on: Host | None = None) -> devnodes.Exposure:
    spec = spec_from(document([VOID], ADMIN if privileged else (), devices=nodes, rules=rules))
    return devnodes.devices_for_nodes(spec.device_nodes, spec.device_rules, INV,
                                      on or host(), privileged)


def summary(e: devnodes.Exposure) -> list[tuple[str, tuple[str, ...]]]:
    return [(i.kind.value, tuple(d.uuid for d in i.devices)) for i in e.items]


def channels(nodes: list[dict[str, Any]] = (), rules: list[dict[str, Any]] = (),  # type: ignore[assignment]
             on: Host | None = None) -> list[tuple[str, int | str | None]]:
    """What each node and rule reaches, with the IMEX channel where it is one."""
    spec = spec_from(document([VOID], devices=nodes, rules=rules))
    return [(r.kind.value, r.as_json().get("channel"))
            for r in devnodes.classify(spec.device_nodes, spec.device_rules, on or host())]


# -- the mapping ---------------------------------------------------------------------------

MAPPING = [
    P([dev("/dev/./nvidia0", 195, 0)], [], [("gpu", (G0,))], id="/dev/./nvidia0 195:0"),
    P([dev("//dev/nvidia0", 195, 0)], [], [("gpu", (G0,))], id="//dev/nvidia0 195:0"),
    P([dev("/dev/gpu0", 195, 0)], [], [("gpu", (G0,))], id="/dev/gpu0 195:0"),
    P([dev("/dev/nvidia0", 195, 1)], [], [("gpu", (G1,))], id="the path lies, the number wins"),
    P([dev("/dev/nvidia-modeset", 195, 254)], [], [("control", ())], id="195:254 modeset"),
    P([dev("/dev/nvidiactl", 195, 255)], [], [("control", ())], id="195:255 nvidiactl"),
    P([dev("/dev/nvidia-uvm", UVM_MAJOR, 0)], [], [("control", ())], id="a uvm node"),
    P([dev("/dev/x", 195, 0, kind="b")], [], [], id="block type 195 is not NVIDIA's"),
    P([dev("/dev/x", 10, 0)], [], [], id="another major is ignored"),
    P([dev("/dev/nvidia5", 195, 5)], [], [("not-live", ())], id="a minor no GPU has"),
    P([dev("/dev/x", 195 + 4096, 1)], [], [("gpu", (G1,))],
      id="mknod keeps 12 bits of the major"),
    P([dev("/dev/nvidia1", 195, 1), dev("/dev/nvidia-caps/nvidia-cap12", CAPS_MAJOR, 12),
       dev("/dev/nvidia-caps/nvidia-cap13", CAPS_MAJOR, 13)], [],
      [("mig", (MA,)), ("mig", (MA,)), ("mig", (MA,))],
      id="caps nodes of a MIG device: the parent node is part of it"),
    P([dev("/dev/c", CAPS_MAJOR, 21)], [], [("mig", (MB,))], id="a GI cap alone: its MIG device"),
    P([dev("/dev/c", CAPS_MAJOR, 1)], [], [("mig-management", ())], id="the MIG config cap"),
    P([dev("/dev/c", CAPS_MAJOR, 77)], [], [("not-live", ())], id="a cap minor not in mig-minors"),
    P([], [rule(True, "c", 195, None, "rwm")], [("all", (G0, G1, MA, MB))],
      id="a wildcard 195 rule is all"),
    P([], [rule(True, None, None, None, "rwm")], [("all", (G0, G1, MA, MB)), ("imex", ())],
      id="a *:* rwm in an unprivileged container is all, and every IMEX channel"),
    P([], [rule(True, "c", 195, 1, "rw"), rule(False, "c", 195, 1, "rw")], [("gpu", (G1,))],
      id="a narrower deny after an allow narrows nothing (cgroup v1)"),
    P([], [rule(True, "c", 195, 1, "rw"), rule(False, None, None, None, "rwm")], [],
      id="a full reset after an allow takes it back"),
    P([], [rule(True, "c", 195, 1, "m")], [], id="mknod-only access opens nothing"),
    P([], [rule(True, "b", 195, None, "rwm")], [], id="a block rule is not NVIDIA's"),
    P([], [rule(True, "c", CAPS_MAJOR, None, "rw")], [("all", (MA, MB))],
      id="a wildcard caps rule: every MIG device, no whole GPU"),
]


@pytest.mark.parametrize(("nodes", "rules", "expected"), MAPPING)
def test_mapping(nodes, rules, expected):
    assert summary(exposure(nodes, rules)) == expected


CHANNEL = "/dev/nvidia-caps-imex-channels/channel"
IMEX_MAPPING = [
    P([dev(CHANNEL + "0")], [], [("imex", 0)], id="channel0 node: IMEX channel 0"),
    P([dev("/dev/x", IMEX_MAJOR, 7)], [], [("imex", 7)],
      id="any path: the minor is the channel"),
    P([dev(CHANNEL + "0", IMEX_MAJOR, 3)], [], [("imex", 3)], id="the path lies, the minor wins"),
    P([dev("/dev/x", IMEX_MAJOR + 4096, 2)], [], [("imex", 2)],
      id="mknod keeps 12 bits of the channel major"),
    P([dev(CHANNEL + "0", IMEX_MAJOR, 0, kind="b")], [], [], id="a block node is no channel"),
    P([], [rule(True, "c", IMEX_MAJOR, None, "rw")], [("imex", "all")],
      id="a wildcard-minor rule on the channel major: every channel"),
    P([], [rule(True, "c", IMEX_MAJOR, -1, "rw")], [("imex", "all")],
      id="minor -1 is a wildcard too"),
    P([], [rule(True, "c", IMEX_MAJOR, 5, "rw")], [("imex", 5)], id="a rule with one minor"),
    P([], [rule(True, "c", None, 5, "rw")],
      [("gpu", None), ("not-live", None), ("imex", 5), ("control", None)],
      id="a wildcard major with minor 5: 195:5, caps 5, channel 5, uvm 5"),
    P([], [rule(True, "c", IMEX_MAJOR, 5, "m")], [], id="mknod-only opens no channel"),
    P([], [rule(True, "c", IMEX_MAJOR, 5, "rw"), rule(False, "c", IMEX_MAJOR, 5, "rw")],
      [("imex", 5)], id="deny after allow narrows nothing (cgroup v1)"),
    P([], [rule(True, "c", IMEX_MAJOR, None, "rw"), rule(False, None, None, None, "rwm")], [],
      id="a full reset after the allow takes it back"),
]


@pytest.mark.parametrize(("nodes", "rules", "expected"), IMEX_MAPPING)
def test_imex_channel_mapping(nodes, rules, expected):
    assert channels(nodes, rules) == expected


def test_imex_channel_major_unknown_without_proc_devices(tmp_path: Path):
    unread = devnodes.load_host(tmp_path / "absent", tmp_path / "absent")
    (reach,) = devnodes.classify(spec_from(document([VOID], devices=[dev(CHANNEL + "0")]))
                                 .device_nodes, (), unread)
    assert reach.kind is devnodes.Reached.UNKNOWN
    assert "nvidia-caps-imex-channels" in reach.why and "absent" in reach.why


def test_privileged_every_device_reaches_imex_only_where_the_driver_may_be(tmp_path: Path):
    doc = document([], ADMIN, rules=[rule(True, None, None, None, "rwm")])
    spec = spec_from(doc)
    no_imex = Host(devnodes.parse_proc_devices(HOST_PROC_DEVICES.replace(
        f"{IMEX_MAJOR} nvidia-caps-imex-channels", "")))
    unread = devnodes.load_host(tmp_path / "absent", tmp_path / "absent")
    assert [r.imex_channels for h in (host(), no_imex, unread)
            for r in devnodes.classify(spec.device_nodes, spec.device_rules, h, True)] == [
        True, False, True]


def test_privileged_every_device_is_one_reach():
    e = exposure([dev("/dev/nvidia0", 195, 0), dev("/dev/nvidia1", 195, 1)],
                 [rule(True, None, None, None, "rwm")], privileged=True)
    assert summary(e) == [("privileged", ())]
    assert e.privileged


@pytest.mark.parametrize(("kernel", "expected"), [
    P((195, 0), (195, 0), id="plain"),
    P((195 + 4096, 7), (195, 7), id="major above 12 bits"),
    P((195, (1 << 20) + 3), (195, 3), id="minor above 20 bits"),
    P((-1, -1), (0xFFF, 0xFFFFF), id="negative numbers as uint32"),
])
def test_kernel_number(kernel, expected):
    assert devnodes.kernel_number(*kernel) == expected


# -- the host's files ----------------------------------------------------------------------


def test_proc_devices_reads_char_majors_only():
    majors = devnodes.parse_proc_devices(HOST_PROC_DEVICES)
    assert majors["nvidia-caps"] == CAPS_MAJOR and majors["nvidia-uvm"] == UVM_MAJOR
    assert "notnvidia" not in majors and "loop" not in majors


def test_mig_minors_as_nvcaps_reads_them():
    caps = devnodes.parse_mig_minors(HOST_MIG_MINORS + "junk line here\ngpu1/gi1/access x\n")
    assert caps[12] == devnodes.MigCap("gpu1/gi1/access", 1, 1)
    assert caps[13] == devnodes.MigCap("gpu1/gi1/ci0/access", 1, 1, 0)
    assert caps[1].management and caps[2].management
    assert len(caps) == 7


def test_driver_major_for_another_helper(tmp_path: Path):
    proc = tmp_path / "devices"
    proc.write_text(HOST_PROC_DEVICES)
    assert devnodes.driver_major("nvidia-caps-imex-channels", proc) == IMEX_MAJOR
    assert devnodes.driver_major("nvidia-nvswitch", proc) is None
    with pytest.raises(OSError):
        devnodes.driver_major("x", tmp_path / "absent")


def test_load_host_from_files(tmp_path: Path):
    (tmp_path / "devices").write_text(HOST_PROC_DEVICES)
    (tmp_path / "mig-minors").write_text(HOST_MIG_MINORS)
    h = devnodes.load_host(tmp_path / "devices", tmp_path / "mig-minors")
    assert h.caps_major == CAPS_MAJOR and h.uvm_majors == {UVM_MAJOR} and h.caps[22].gi == 2
    assert devnodes.load_host(tmp_path / "devices", tmp_path / "none").caps == {}


@pytest.mark.parametrize(("major", "expected"), [
    P(240, [("unknown", ())], id="a dynamic major may be NVIDIA's: unknown"),
    P(400, [("unknown", ())], id="the high dynamic range too"),
    P(10, [], id="a static major is not NVIDIA's"),
])
def test_unreadable_proc_devices_fails_closed_only_for_dynamic_majors(tmp_path, major, expected):
    h = devnodes.load_host(tmp_path / "absent", tmp_path / "absent")
    assert h.majors is None and "absent" in (h.error or "")
    assert summary(exposure([dev("/dev/x", major, 0)], on=h)) == expected


# -- the spec's fields, as Go reads them ---------------------------------------------------

BAD_FIELDS = [
    P({"devices": [{"path": "/dev/x", "type": "c", "major": "195", "minor": 0}]},
      "linux.devices[0].major: expected an integer, got a string", id="major a string"),
    P({"devices": [dev("/dev/a"), dev("/dev/b"), {"path": "/dev/x", "major": 1.0}]},
      "linux.devices[2].major: expected an integer, got a number", id="major a float"),
    P({"devices": [{"path": "/dev/x", "minor": 1 << 63}]},
      "linux.devices[0].minor: 9223372036854775808 is out of range for int64", id="past int64"),
    P({"devices": [{"path": "/dev/x", "fileMode": -1}]},
      "linux.devices[0].fileMode: -1 is out of range for uint32", id="fileMode negative"),
    P({"devices": [{"path": "/dev/x", "type": 99}]},
      "linux.devices[0].type: expected a string, got a number", id="type a number"),
    P({"resources": {"devices": [{"allow": 1, "access": "rw"}]}},
      "linux.resources.devices[0].allow: expected a boolean, got a number", id="allow a number"),
    P({"resources": {"devices": [{"allow": True, "major": True}]}},
      "linux.resources.devices[0].major: expected an integer, got a boolean", id="major a bool"),
    P({"resources": []}, "linux.resources: expected an object, got an array",
      id="resources an array"),
]


@pytest.mark.parametrize(("linux", "message"), BAD_FIELDS)
def test_bad_device_fields_name_their_field(linux, message):
    doc = document()
    doc["linux"] = linux
    with pytest.raises(SpecError) as e:
        from_document(Path("/b/config.json"), doc)
    assert e.value.message == f"/b/config.json: {message}"


def test_spec_keeps_every_field():
    spec = spec_from(document(devices=[{"path": "/dev/x", "type": "c", "major": 195, "minor": 3,
                                        "fileMode": 0o666, "uid": 0, "gid": 5}],
                              rules=[rule(False, None, None, None, "rwm")]))
    n = spec.device_nodes[0]
    assert (n.path, n.type, n.major, n.minor, n.file_mode, n.uid, n.gid) == (
        "/dev/x", "c", 195, 3, 0o666, 0, 5)
    assert spec.device_rules[0].label == "linux.resources.devices[0] deny a *:* rwm"


# -- the decision --------------------------------------------------------------------------


def judge(doc: dict[str, Any], before_create: bool = False, allocation: Any = None,
          unallocated: Unallocated = Unallocated.VOID, **overrides: Any):
    spec = spec_from(doc)
    return decide(parse(spec, host=host()), INV, policy(**overrides), spec,
                  allocation=allocation, unallocated=unallocated, before_create=before_create)


CDI_GPU1 = document([VOID], devices=[dev("/dev/nvidia1", 195, 1), dev("/dev/nvidiactl")],
                    rules=[rule(False, None, None, None, "rwm"), rule(True, "c", 195, 1, "rw"),
                           rule(True, "c", 195, 255, "rw"), rule(True, "c", 10, 229, "rwm")])

DECISIONS = [
    P(CDI_GPU1, {}, False, Outcome.ALLOW, (G1,), None,
      id="CDI GPU 1 with void env: allowed and granted GPU 1"),
    P(CDI_GPU1, {"deny": [G1]}, False, Outcome.DENY, (), "GPU-c0ffee00",
      id="deny-listed GPU 1 through CDI: denied at prestart"),
    P(CDI_GPU1, {"deny": [G1], "mode": "rewrite"}, False, Outcome.DENY, (), "deny list",
      id="rewrite cannot remove a node at prestart"),
    P(CDI_GPU1, {"deny": [G1], "mode": "rewrite"}, True, Outcome.REWRITE, (), "deny list",
      id="before creation, rewrite removes the node and its rule"),
    P(CDI_GPU1, {"deny": [G1]}, True, Outcome.DENY, (), "deny list",
      id="before creation, enforce still denies"),
    P(document([VOID], devices=[dev("/dev/nvidia0")]), {"device_nodes": "deny"}, True,
      Outcome.DENY, (), "GPU device nodes may not be passed in", id="device-nodes deny"),
    P(document([VOID], devices=[dev("/dev/nvidia5", 195, 5)]), {}, False, Outcome.DENY, (),
      "no such live device", id="a minor NVML does not report fails closed"),
    P(document([VOID], ADMIN, rules=[rule(True, "c", 195, None, "rw")]),
      {"deny": [G1], "mode": "rewrite"}, True, Outcome.REWRITE, (G0,), "deny list",
      id="a privileged wildcard rule narrows to the minors kept"),
    P(document([VOID], rules=[rule(True, None, None, None, "rwm")]), {"mode": "rewrite"}, True,
      Outcome.DENY, (), "every GPU", id="a *:* rwm unprivileged cannot be narrowed"),
    P(document([], ADMIN, devices=[dev("/dev/nvidia0"), dev("/dev/nvidia1")],
               rules=[rule(True, None, None, None, "rwm")]), {}, False, Outcome.ALLOW, (), None,
      id="a privileged container with every device: allowed by the all rule"),
    P(document([], ADMIN, devices=[dev("/dev/nvidia0")],
               rules=[rule(True, None, None, None, "rwm")]), {"all": "never"}, True,
      Outcome.DENY, (), "no container may have every GPU",
      id="a privileged container with every device under all = never"),
    P(document([VOID], devices=[dev("/dev/c", CAPS_MAJOR, 1)]), {}, False, Outcome.DENY, (),
      "MIG management needs a privileged container", id="MIG config cap, unprivileged"),
]


@pytest.mark.parametrize(("doc", "overrides", "before", "outcome", "granted", "reason"),
                         DECISIONS)
def test_decision(doc, overrides, before, outcome, granted, reason):
    d = judge(doc, before, **overrides)
    assert d.outcome is outcome, d.reasons
    assert d.granted == granted
    assert d.attached == ()
    if reason is None:
        assert d.violations == ()
    else:
        assert any(reason in r for r in d.reasons), d.reasons


def test_rewrite_removes_refused_node_and_rule_keeps_the_rest_byte_identical():
    d = judge(CDI_GPU1, True, deny=[G1], mode="rewrite")
    assert d.doc is not None
    assert d.doc["linux"]["devices"] == [dev("/dev/nvidiactl")]
    assert d.doc["linux"]["resources"]["devices"] == [
        rule(False, None, None, None, "rwm"), rule(True, "c", 195, 255, "rw"),
        rule(True, "c", 10, 229, "rwm")]
    assert d.doc["process"]["env"] == [VOID]


def test_narrowed_wildcard_lists_the_kept_minors_and_control_nodes():
    d = judge(document([VOID], ADMIN, rules=[rule(True, "c", 195, None, "rw")]), True,
              deny=[G1], mode="rewrite")
    assert d.doc["linux"]["resources"]["devices"] == [
        {"allow": True, "type": "c", "major": 195, "minor": m, "access": "rw"}
        for m in (0, 254, 255)]


# -- allocation binding (#10) --------------------------------------------------------------

POD = Identity("containerd", "team", "pod-a", "uid-1", "main", False, None)


def allocated(*ids: str) -> Allocation:
    return Allocation("podresources", POD, tuple(("nvidia.com/gpu", i) for i in ids))


@pytest.mark.parametrize(("doc", "ids", "before", "overrides", "outcome", "granted"), [
    P(document([VOID], devices=[dev("/dev/nvidia1")]), (G0,), False, {}, Outcome.DENY, (),
      id="allocated GPU 0, node 195:1: denied at prestart"),
    P(document([VOID], devices=[dev("/dev/nvidia1")]), (G0,), True, {"mode": "rewrite"},
      Outcome.REWRITE, (), id="allocated GPU 0, node 195:1: removed by the shim's rewrite"),
    P(document([VOID], devices=[dev("/dev/nvidia1")]), (G1,), False, {}, Outcome.ALLOW, (G1,),
      id="allocated GPU 1, CDI node 195:1: allowed"),
    P(document([VOID], devices=[dev("/dev/nvidia1")]), (), False, {}, Outcome.DENY, (),
      id="nothing allocated, a GPU node: denied (void cannot take a node away)"),
    P(document([], ADMIN, devices=[dev("/dev/nvidia0")],
               rules=[rule(True, None, None, None, "rwm")]), (), False, {}, Outcome.ALLOW, (),
      id="kube-proxy: privileged, nothing allocated, unallocated void"),
])
def test_allocation_binds_device_nodes(doc, ids, before, overrides, outcome, granted):
    d = judge(doc, before, allocation=allocated(*ids), **overrides)
    assert (d.outcome, d.granted) == (outcome, granted), d.reasons
    if outcome is not Outcome.ALLOW:
        assert any("not allocated" in r for r in d.reasons), d.reasons


def test_kube_proxy_is_not_bound_even_when_unallocated_means_deny():
    doc = document([], ADMIN, devices=[dev("/dev/nvidia0")],
                   rules=[rule(True, None, None, None, "rwm")])
    spec = spec_from(doc)
    request = parse(spec, host=host())
    assert request.asks_for_devices and not request.bindable
    d = judge(doc, allocation=allocated(), unallocated=Unallocated.DENY)
    assert d.outcome is Outcome.ALLOW
    assert any("privileged: every device node reachable" in n for n in d.notes)


# -- the fast path -------------------------------------------------------------------------

FAST = [
    P(document(), False, id="no devices"),
    P(document(devices=[dev("/dev/null"), dev("/dev/fuse")]), False,
      id="engine default devices"),
    P(document(rules=[rule(False, None, None, None, "rwm"), rule(True, "c", 1, 3, "rwm"),
                      rule(True, "c", 136, None, "rwm"), rule(True, "c", None, None, "m"),
                      rule(True, "b", None, None, "m")]), False, id="Docker's default rules"),
    P(document(devices=[dev("/dev/gpu0", 195, 0)]), True, id="195:0 at any path"),
    P(document(devices=[dev("/dev/x", 195 + 4096, 0)]), True, id="a truncated 195"),
    P(document(devices=[dev("/dev/x", CAPS_MAJOR, 12)]), True, id="a dynamic major"),
    P(document(devices=[dev("/dev/x", 195, 0, kind="b")]), False, id="a block node"),
    P(document(devices=[{"path": "/dev/x", "major": "195"}]), True, id="a bad major"),
    P(document(rules=[rule(True, "c", 195, 1, "rw")]), True, id="an allow rule on 195"),
    P(document(rules=[rule(True, "a", None, None, "rwm")]), True, id="a *:* rwm"),
    P(document(rules=[rule(True, "c", 195, None, "m")]), False, id="mknod only"),
    P(document(rules=[rule(True, "c", 195, None, "")]), True, id="empty access"),
    P(document(rules=[rule(False, "c", 195, None, "rw")]), False, id="a deny rule"),
    P(document(rules=[{"allow": 1, "access": "rw"}]), True, id="a non-boolean allow"),
    P(document(devices=[dev(CHANNEL + "0")]), True, id="an IMEX channel node alone"),
    P(document(["NVIDIA_IMEX_CHANNELS=void"], devices=[dev("/dev/x", IMEX_MAJOR, 3)]), True,
      id="an IMEX channel node whatever the env says"),
    P(document(rules=[rule(True, "c", IMEX_MAJOR, None, "rw")]), True,
      id="a wildcard rule on the IMEX channel major"),
    P(document(rules=[rule(True, "c", IMEX_MAJOR, 0, "m")]), False,
      id="mknod only on the IMEX channel major"),
]


@pytest.mark.parametrize(("doc", "expected"), FAST)
def test_fast_path(doc, expected):
    assert scan.may_request_gpu(doc) is expected
    if not expected:
        assert not parse(spec_from(doc), host=host()).asks_for_devices


@pytest.mark.parametrize("doc", [
    P(document(devices=[dev(CHANNEL + "0")]), id="channel node"),
    P(document(rules=[rule(True, "c", IMEX_MAJOR, 2, "rw")]), id="channel rule"),
    P(document(rules=[rule(True, "c", IMEX_MAJOR, None, "rw")]), id="every-channel rule"),
])
def test_an_imex_channel_node_alone_asks_for_devices(doc):
    """No GPU request, no NVIDIA variable: the node still reaches a channel, so neither the
    fast path nor the full path may skip it."""
    request = parse(spec_from(doc), host=host())
    assert scan.may_request_gpu(doc) and request.asks_for_devices and not request.asks_for_gpu
    assert [c.via.value for c in request.imex.channels] == ["node"]


def test_fast_path_never_skips_what_the_full_path_judges():
    from hypothesis import given, settings
    from test_hostile_properties import docs

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(docs())
    def check(doc: dict[str, Any]) -> None:
        if not scan.may_request_gpu(doc):
            assert not parse(spec_from(doc), host=host()).asks_for_devices

    check()


# -- configuration -------------------------------------------------------------------------


def test_old_accept_reads_as_judge_with_a_note(tmp_path: Path):
    cfg = config_mod.parse(b'[policy]\ndevice-nodes = "accept"\n', tmp_path / "c.toml")
    assert cfg.policy.device_nodes.value == "judge"
    assert cfg.deprecations == (
        'policy.device-nodes = "accept" is read as "judge"; write "judge" (or "deny") instead',)


def test_host_paths_are_configurable_and_absolute(tmp_path: Path):
    cfg = config_mod.parse(b'[inventory]\nproc-devices = "/x/devices"\nmig-minors = "/x/m"\n',
                           tmp_path / "c.toml")
    assert (cfg.inventory.proc_devices, cfg.inventory.mig_minors) == (
        Path("/x/devices"), Path("/x/m"))
    with pytest.raises(Exception, match=r"inventory\.proc-devices: expected an absolute path"):
        config_mod.parse(b'[inventory]\nproc-devices = "devices"\n', tmp_path / "c.toml")


# -- the hook, end to end in a process -----------------------------------------------------


def write_cdi_bundle(bundle: Path, minor: int) -> Path:
    bundle.mkdir(parents=True)
    doc = document([VOID], devices=[dev("/dev/gpu", 195, minor), dev("/dev/c", CAPS_MAJOR, 13)],
                   rules=[rule(True, "c", 195, minor, "rw")])
    doc["root"] = {"path": "rootfs", "readonly": True}
    (bundle / "config.json").write_text(json.dumps(doc))
    return bundle


@pytest.mark.parametrize(("deny", "code", "granted"), [
    P([], 0, [MA], id="allowed: the MIG device its caps and parent node reach is granted"),
    P([G1], 3, [], id="its parent GPU deny-listed: denied"),
])
def test_prestart_reads_the_configured_host_files(node: Node, tmp_path: Path, deny, code,
                                                  granted) -> None:
    (tmp_path / "devices").write_text(HOST_PROC_DEVICES)
    (tmp_path / "mig-minors").write_text(HOST_MIG_MINORS)
    node.write_config(f'[inventory]\nproc-devices = "{tmp_path}/devices"\n'
                      f'mig-minors = "{tmp_path}/mig-minors"\n'
                      f"[policy]\ndeny = {json.dumps(deny)}\n")
    bundle = write_cdi_bundle(tmp_path / "b", 1)
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == code, proc.stderr
    (line,) = node.audit_lines()
    assert line["granted"] == granted
    # The request by number; the parent node and rule are part of the MIG device.
    assert [n["reaches"] for n in line["request"]["device_nodes"]] == ["gpu", "mig", "gpu"]


def test_explain_shows_the_device_nodes_by_number(node: Node, tmp_path: Path) -> None:
    import re

    bundle = tmp_path / "b"
    bundle.mkdir()
    doc = document([VOID], devices=[dev("/dev/gpu", 195, 1), dev("/dev/nvidiactl")])
    (bundle / "config.json").write_text(json.dumps(doc))
    base = ["--config", str(node.config), "explain", "--bundle", str(bundle)]
    text = node.run(base)
    assert text.returncode == 0, text.stderr
    out = text.stdout.decode()
    assert re.search(r"^nodes +linux\.devices\[0\] /dev/gpu \(c 195:1\) -> gpu 1; "
                     r"linux\.devices\[1\] /dev/nvidiactl \(c 195:255\) -> control$", out, re.M)
    assert re.search(rf"^granted +{G1}$", out, re.M), out
    reaches = json.loads(node.run([*base, "--json"]).stdout)["request"]["device_nodes"]
    assert [r["reaches"] for r in reaches] == ["gpu", "control"]


@pytest.mark.parametrize(("caps", "code", "imex_granted"), [
    P((), 3, [], id="unprivileged: denied by the default policy.imex"),
    P(ADMIN, 0, ["0"], id="privileged: admitted, channel 0 granted"),
])
def test_prestart_judges_an_imex_channel_node_alone(node: Node, tmp_path: Path, caps, code,
                                                    imex_granted) -> None:
    """A bundle whose only NVIDIA thing is channel 0's node, through the real command: the
    audit line and explain show the channel as reached by node."""
    import re

    (tmp_path / "devices").write_text(HOST_PROC_DEVICES)
    node.write_config(f'[inventory]\nproc-devices = "{tmp_path}/devices"\n')
    bundle = tmp_path / "b"
    bundle.mkdir()
    doc = document([], caps, devices=[dev(CHANNEL + "0")])
    (bundle / "config.json").write_text(json.dumps(doc))
    proc = node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle))
    assert proc.returncode == code, proc.stderr
    (line,) = node.audit_lines()
    assert line["imex_granted"] == imex_granted
    assert line["request"]["imex"]["channels"] == [
        {"id": "0", "via": "node", "what": f"linux.devices[0] {CHANNEL}0 (c {IMEX_MAJOR}:0)"}]
    out = node.run(["--config", str(node.config), "explain", "--bundle", str(bundle)])
    text = out.stdout.decode()
    assert re.search(rf"^nodes +linux\.devices\[0\] {CHANNEL}0 \(c {IMEX_MAJOR}:0\) -> imex 0$",
                     text, re.M), text
    assert re.search(r"^imex +0 \(node\);", text, re.M), text
