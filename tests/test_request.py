"""nvhook.decision.request: what a container asks for, on every channel, with NVIDIA's semantics.

Each row pins one rule of FIELD.md §4 (how NVIDIA's hook reads a spec).
"""

from __future__ import annotations

import pytest
from builders import ADMIN, device_mount, make_spec, mount, node
from fakenvml import GPU0_UUID, GPU1_UUID, MIG_A_UUID

from nvhook.decision.request import (
    ALL_DRIVER_CAPABILITIES,
    DEFAULT_DRIVER_CAPABILITIES,
    ImexRead,
    Kind,
    MalformedEnv,
    VisibleDevices,
    cdi_device_name,
    clean_path,
    env_map,
    is_legacy_image,
    parse,
    split_ids,
    to_json,
    visible_devices,
)
from nvhook.nvidia.config import NvidiaConfig

P = pytest.param
NVD = "NVIDIA_VISIBLE_DEVICES"
ROOT = "/var/run/nvidia-container-devices"


def nvd(value: str) -> str:
    return f"{NVD}={value}"


# -- the env channel ------------------------------------------------------------------------

# (env, swarm-resource names, expected kind, expected ids, expected raw value)
ENV_CASES = [
    # unset / legacy
    P([], (), Kind.UNSET, (), None, id="empty env: not a GPU container"),
    P(["PATH=/bin"], (), Kind.UNSET, (), None, id="variable unset, no CUDA_VERSION: unset"),
    P(["CUDA_VERSION=12.4"], (), Kind.ALL, (), None,
      id="legacy image (CUDA_VERSION set, REQUIRE unset), variable unset -> all"),
    P(["CUDA_VERSION=12.4", "NVIDIA_REQUIRE_CUDA=cuda>=12.4"], (), Kind.UNSET, (), None,
      id="CUDA_VERSION with NVIDIA_REQUIRE_CUDA set is not legacy -> unset"),
    P(["CUDA_VERSION=12.4", "NVIDIA_REQUIRE_CUDA="], (), Kind.ALL, (), None,
      id="NVIDIA_REQUIRE_CUDA empty still counts as unset -> legacy all"),
    P(["CUDA_VERSION="], (), Kind.UNSET, (), None, id="empty CUDA_VERSION is not legacy"),
    P(["CUDA_VERSION=12.4", "CUDA_VERSION="], (), Kind.UNSET, (), None,
      id="CUDA_VERSION emptied by a later duplicate is not legacy (last wins)"),
    P(["CUDA_VERSION=", "CUDA_VERSION=11.0"], (), Kind.ALL, (), None,
      id="CUDA_VERSION set by a later duplicate makes the image legacy"),
    P(["CUDA_VERSION=12.4", nvd("")], (), Kind.VOID, (), "",
      id="legacy image with the variable set but empty -> void, not all"),
    P(["CUDA_VERSION=12.4", nvd("0")], (), Kind.DEVICES, ("0",), "0",
      id="legacy image with the variable set -> the variable decides"),
    # empty / void
    P([nvd("")], (), Kind.VOID, (), "", id="empty value -> void"),
    P([nvd(",")], (), Kind.VOID, (), ",", id="a lone comma -> void"),
    P([nvd("   ")], (), Kind.VOID, (), "   ", id="blanks only -> void"),
    P([nvd(" , ,, ")], (), Kind.VOID, (), " , ,, ", id="commas and blanks -> void"),
    P([nvd("void")], (), Kind.VOID, (), "void", id="void -> void"),
    P([nvd("all,void")], (), Kind.VOID, (), "all,void", id="void after all still wins"),
    P([nvd("void,all")], (), Kind.VOID, (), "void,all", id="void before all wins"),
    P([nvd("none,void")], (), Kind.VOID, (), "none,void", id="void beats none"),
    P([nvd("0, void ,1")], (), Kind.VOID, (), "0, void ,1",
      id="void anywhere among device ids (trimmed) -> void"),
    P([nvd("Void")], (), Kind.DEVICES, ("Void",), "Void", id="'Void' is a device id (case)"),
    P([nvd("VOID,0")], (), Kind.DEVICES, ("VOID", "0"), "VOID,0",
      id="'VOID' is a device id, not void"),
    # all / none, first one wins
    P([nvd("all")], (), Kind.ALL, (), "all", id="all -> all"),
    P([nvd("none")], (), Kind.NONE, (), "none", id="none -> none"),
    P([nvd("0,all")], (), Kind.ALL, (), "0,all", id="device ids then all -> all"),
    P([nvd("none,all")], (), Kind.NONE, (), "none,all", id="none before all -> none"),
    P([nvd("all,none")], (), Kind.ALL, (), "all,none", id="all before none -> all"),
    P([nvd(" all ")], (), Kind.ALL, (), " all ", id="all is trimmed"),
    P([nvd("0,none,1")], (), Kind.NONE, (), "0,none,1", id="none among device ids -> none"),
    P([nvd("ALL")], (), Kind.DEVICES, ("ALL",), "ALL", id="'ALL' is a device id (case)"),
    P([nvd("All,0")], (), Kind.DEVICES, ("All", "0"), "All,0", id="'All' is a device id"),
    P([nvd("NONE")], (), Kind.DEVICES, ("NONE",), "NONE", id="'NONE' is a device id"),
    # device lists
    P([nvd("0")], (), Kind.DEVICES, ("0",), "0", id="one index"),
    P([nvd("0,1")], (), Kind.DEVICES, ("0", "1"), "0,1", id="two indices, order kept"),
    P([nvd("1,0")], (), Kind.DEVICES, ("1", "0"), "1,0", id="order is request order"),
    P([nvd(" 0 , 1 ")], (), Kind.DEVICES, ("0", "1"), " 0 , 1 ", id="items are trimmed"),
    P([nvd("0,,1,")], (), Kind.DEVICES, ("0", "1"), "0,,1,", id="empty items are dropped"),
    P([nvd("0,0")], (), Kind.DEVICES, ("0",), "0,0",
      id="repeats are removed (not NVIDIA's old double-attach bug)"),
    P([nvd("1,0,1,0")], (), Kind.DEVICES, ("1", "0"), "1,0,1,0",
      id="repeats removed keeping first-seen order"),
    P([nvd(f"{GPU0_UUID},1:0")], (), Kind.DEVICES, (GPU0_UUID, "1:0"), f"{GPU0_UUID},1:0",
      id="uuid and g:m forms pass through verbatim"),
    P([nvd("\t0\t")], (), Kind.DEVICES, ("0",), "\t0\t", id="tabs are trimmed too"),
    P([nvd("nvidia.com/gpu=0")], (), Kind.DEVICES, ("nvidia.com/gpu=0",), "nvidia.com/gpu=0",
      id="a CDI name in the variable is kept as an id"),
    P([nvd("nvidia.com/gpu=all")], (), Kind.DEVICES, ("nvidia.com/gpu=all",),
      "nvidia.com/gpu=all", id="CDI 'gpu=all' is an id, not the all keyword"),
    P([nvd("a=b=c")], (), Kind.DEVICES, ("a=b=c",), "a=b=c",
      id="only the first '=' splits the env entry"),
    # duplicates: last wins
    P([nvd("0"), nvd("1")], (), Kind.DEVICES, ("1",), "1", id="duplicate variable: last wins"),
    P([nvd(GPU0_UUID), nvd("all")], (), Kind.ALL, (), "all",
      id="duplicate [uuid, all]: all wins"),
    P([nvd("all"), nvd("void")], (), Kind.VOID, (), "void", id="duplicate [all, void]: void"),
    P([nvd("void"), nvd("all")], (), Kind.ALL, (), "all",
      id="duplicate [void, all]: all (what glibc getenv hides)"),
    P([nvd("0"), nvd("")], (), Kind.VOID, (), "", id="duplicate emptied last -> void"),
    # swarm resource
    P(["DOCKER_RESOURCE_GPU=0", nvd("all")], ("DOCKER_RESOURCE_GPU",), Kind.DEVICES, ("0",),
      "0", id="swarm variable present: NVIDIA_VISIBLE_DEVICES is ignored"),
    P([nvd("1")], ("DOCKER_RESOURCE_GPU",), Kind.DEVICES, ("1",), "1",
      id="swarm names configured but absent: NVIDIA_VISIBLE_DEVICES is read"),
    P(["B=1", "A=0", nvd("all")], ("A", "B"), Kind.DEVICES, ("0", "1"), "0,1",
      id="several swarm variables: concatenated in configured order"),
    P(["B=1"], ("A", "B"), Kind.DEVICES, ("1",), "1", id="only the present swarm variable"),
    P(["A=", nvd("0")], ("A",), Kind.VOID, (), "",
      id="swarm variable present but empty -> void (the variable is not a fallback)"),
    P(["A=0,1", "B=1"], ("A", "B"), Kind.DEVICES, ("0", "1"), "0,1,1",
      id="swarm concatenation is de-duplicated"),
    P(["A=none", "B=all"], ("A", "B"), Kind.NONE, (), "none,all",
      id="swarm: first keyword across variables decides"),
    P(["CUDA_VERSION=12", "A=0"], ("A",), Kind.DEVICES, ("0",), "0",
      id="legacy image with a swarm variable: the swarm variable decides"),
    # malformed entries
    P([NVD, "PATH=/bin"], (), Kind.UNSET, (), None,
      id="entry without '=' does not set the variable"),
    P([nvd("0"), NVD], (), Kind.DEVICES, ("0",), "0",
      id="a later entry without '=' does not override"),
]


@pytest.mark.parametrize(("env", "swarm", "kind", "ids", "value"), ENV_CASES)
def test_env_channel(env, swarm, kind, ids, value):
    r = parse(make_spec(env=env), swarm)
    assert r.env.devices == VisibleDevices(kind, ids)
    assert r.env.value == value


@pytest.mark.parametrize(
    ("env", "swarm", "variables", "label"),
    [
        P([nvd("all")], (), (NVD,), "NVIDIA_VISIBLE_DEVICES=all", id="label names variable=value"),
        P(["CUDA_VERSION=12.4"], (), (NVD,),
          "NVIDIA_VISIBLE_DEVICES (unset; legacy image: CUDA_VERSION set, "
          "NVIDIA_REQUIRE_CUDA empty)", id="legacy label explains the implicit all"),
        P(["A=0", "B=1"], ("A", "B"), ("A", "B"), "A,B=0,1",
          id="swarm label names every swarm variable"),
        P(["B=1"], ("A", "B"), ("B",), "B=1", id="swarm label names only the present one"),
        P([nvd("0")], ("A",), (NVD,), "NVIDIA_VISIBLE_DEVICES=0",
          id="absent swarm variables are not named"),
    ],
)
def test_env_label(env, swarm, variables, label):
    r = parse(make_spec(env=env), swarm)
    assert r.env.variables == variables
    assert r.env.label == label


@pytest.mark.parametrize(
    ("env", "legacy_image", "implicit"),
    [
        P(["CUDA_VERSION=12"], True, True, id="legacy and unset: implicit all"),
        P(["CUDA_VERSION=12", nvd("0")], True, False, id="legacy but set: no implicit all"),
        P([nvd("all")], False, False, id="not legacy"),
        P(["CUDA_VERSION=12", "NVIDIA_REQUIRE_CUDA=cuda>=12"], False, False,
          id="require set: not legacy"),
    ],
)
def test_legacy_flags(env, legacy_image, implicit):
    r = parse(make_spec(env=env))
    assert r.legacy_image is legacy_image
    assert r.env.legacy_implicit_all is implicit


@pytest.mark.parametrize(
    ("env", "conflicting"),
    [
        P([nvd("0"), nvd("all")], ("0", "all"), id="disagreeing duplicates recorded in order"),
        P([nvd("0"), "X=1", nvd("0")], (), id="agreeing duplicates are not a conflict"),
        P([nvd("0")], (), id="single entry: no conflict"),
        P([nvd("0"), nvd("1"), nvd("0")], ("0", "1", "0"), id="every value kept, repeats too"),
        P(["A=0", "A=1"], (), id="conflicts of other variables are not recorded"),
    ],
)
def test_conflicting_duplicates(env, conflicting):
    assert parse(make_spec(env=env)).env.conflicting_values == conflicting


def test_swarm_conflicts_are_recorded_across_swarm_variables():
    r = parse(make_spec(env=["A=0", nvd("all"), "A=1"]), ("A",))
    assert r.env.conflicting_values == ("0", "1")


# -- volume mounts --------------------------------------------------------------------------

# (mounts, expected ids, expected forged (source, destination) pairs)
MOUNT_CASES = [
    P([device_mount("0")], ("0",), (), id="/dev/null at the root/<id> -> id"),
    P([device_mount(GPU0_UUID)], (GPU0_UUID,), (), id="uuid id"),
    P([device_mount("0"), device_mount("1")], ("0", "1"), (), id="two mounts, order kept"),
    P([device_mount("0"), device_mount("0")], ("0",), (), id="duplicate mounts de-duplicated"),
    P([device_mount("0", source="//dev/null")], ("0",), (),
      id="source //dev/null is cleaned to /dev/null (Go filepath.Clean)"),
    P([device_mount("0", source="/dev/../dev/null")], ("0",), (),
      id="source /dev/../dev/null is cleaned"),
    P([device_mount("0", source="/dev/./null/")], ("0",), (), id="source /dev/./null/ cleaned"),
    P([mount("/dev/null", "//var/run/nvidia-container-devices//1/")], ("1",), (),
      id="destination is cleaned and trimmed"),
    P([mount("/dev/null", "/var/run/x/../nvidia-container-devices/1")], ("1",), (),
      id="destination with .. is cleaned before the prefix test"),
    P([mount("/dev/null", f"{ROOT}/./0"), device_mount("0")], ("0",), (),
      id="two spellings of one destination -> one id"),
    P([mount("/dev/null", f"{ROOT}X/0")], ("X/0",), (),
      id="prefix quirk: '...-devicesX/0' -> id 'X/0'"),
    P([mount("/dev/null", f"{ROOT}/a/b")], ("a/b",), (), id="nested path is one id"),
    P([mount("/dev/null", ROOT)], (), (), id="the root itself names no device"),
    P([mount("/dev/null", f"{ROOT}/")], (), (), id="the root with a slash names no device"),
    P([mount("/dev/null", "/var/run/other/0")], (), (), id="destination outside the root"),
    P([mount("/dev/null", "/run/nvidia-container-devices/0")], (), (),
      id="/run (not /var/run) is outside the root"),
    P([device_mount("imex/channel0")], (), (), id="imex/ mounts are skipped"),
    P([device_mount("imex/0"), device_mount("1")], ("1",), (),
      id="imex/ skipped, devices kept"),
    P([device_mount("cdi/nvidia.com/gpu=0")], ("cdi/nvidia.com/gpu=0",), (),
      id="cdi/ mount id kept verbatim"),
    P([device_mount("0", source="/dev/zero")], (),
      (("/dev/zero", f"{ROOT}/0"),), id="source other than /dev/null is forged, not a request"),
    P([device_mount("0", source="/tmp/null")], (),
      (("/tmp/null", f"{ROOT}/0"),), id="a file named null is forged"),
    P([device_mount("0", source="")], (), (("", f"{ROOT}/0"),), id="empty source is forged"),
    P([mount("/dev/zero", "/data")], (), (), id="ordinary mount is neither"),
    P([device_mount("0", source="/dev/zero"), device_mount("0")], ("0",),
      (("/dev/zero", f"{ROOT}/0"),), id="forged mount beside a real one: both recorded"),
]


@pytest.mark.parametrize(("mounts", "ids", "forged"), MOUNT_CASES)
def test_volume_mounts(mounts, ids, forged):
    r = parse(make_spec(mounts=mounts))
    assert tuple(m.id for m in r.mounts) == ids
    assert tuple((m.source, m.destination) for m in r.forged_mounts) == forged


def test_mount_request_keeps_the_original_mount():
    r = parse(make_spec(mounts=[device_mount("0", source="//dev/null")]))
    assert r.mounts[0].mount.source == "//dev/null"
    assert r.mounts[0].mount.destination == f"{ROOT}/0"


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [
        P("/dev/null", "/dev/null", id="already clean"),
        P("//dev/null", "/dev/null", id="leading // folded (unlike posixpath)"),
        P("///dev//null", "/dev/null", id="repeated slashes folded"),
        P("/dev/../dev/null", "/dev/null", id="dot-dot resolved"),
        P("/../dev/null", "/dev/null", id="dot-dot above root stays at root"),
        P("dev/null/", "dev/null", id="relative, trailing slash dropped"),
        P("", ".", id="empty -> ."),
        P("/", "/", id="root"),
        P("//", "/", id="double slash root"),
    ],
)
def test_clean_path(path, cleaned):
    assert clean_path(path) == cleaned


# -- CDI annotations --------------------------------------------------------------------------

# (annotations, expected cdi (annotation, name), expected nvidia cdi names)
CDI_CASES = [
    P({"cdi.k8s.io/gpu": "nvidia.com/gpu=0"}, (("cdi.k8s.io/gpu", "nvidia.com/gpu=0"),),
      ("nvidia.com/gpu=0",), id="one nvidia CDI name"),
    P({"cdi.k8s.io/gpu": "nvidia.com/gpu=0,nvidia.com/gpu=1"},
      (("cdi.k8s.io/gpu", "nvidia.com/gpu=0"), ("cdi.k8s.io/gpu", "nvidia.com/gpu=1")),
      ("nvidia.com/gpu=0", "nvidia.com/gpu=1"), id="comma list in one annotation"),
    P({"cdi.k8s.io/a": " nvidia.com/gpu=0 , ,"}, (("cdi.k8s.io/a", "nvidia.com/gpu=0"),),
      ("nvidia.com/gpu=0",), id="items trimmed, empties dropped"),
    P({"cdi.k8s.io/a": "nvidia.com/gpu=0", "cdi.k8s.io/b": "nvidia.com/gpu=1"},
      (("cdi.k8s.io/a", "nvidia.com/gpu=0"), ("cdi.k8s.io/b", "nvidia.com/gpu=1")),
      ("nvidia.com/gpu=0", "nvidia.com/gpu=1"), id="several annotations, in order"),
    P({"cdi.k8s.io/a": "nvidia.com/gpu=0", "cdi.k8s.io/b": "nvidia.com/gpu=0"},
      (("cdi.k8s.io/a", "nvidia.com/gpu=0"),), ("nvidia.com/gpu=0",),
      id="a name repeated across annotations is requested once"),
    P({"cdi.k8s.io/x": "vendor.com/fpga=0"}, (("cdi.k8s.io/x", "vendor.com/fpga=0"),), (),
      id="another vendor is kept in cdi but not nvidia_cdi"),
    P({"cdi.k8s.io/x": "vendor.com/fpga=0,nvidia.com/gpu=1"},
      (("cdi.k8s.io/x", "vendor.com/fpga=0"), ("cdi.k8s.io/x", "nvidia.com/gpu=1")),
      ("nvidia.com/gpu=1",), id="mixed vendors in one annotation"),
    P({"other.io/gpu": "nvidia.com/gpu=0"}, (), (), id="other annotation keys are ignored"),
    P({"cdi.k8s.io": "nvidia.com/gpu=0"}, (), (), id="the bare prefix without '/' is not CDI"),
    P({"CDI.K8S.IO/gpu": "nvidia.com/gpu=0"}, (), (), id="the key prefix is case-sensitive"),
    P({"cdi.k8s.io/gpu": ""}, (), (), id="empty annotation value names nothing"),
    P({}, (), (), id="no annotations"),
]


@pytest.mark.parametrize(("annotations", "cdi", "nvidia"), CDI_CASES)
def test_cdi_annotations(annotations, cdi, nvidia):
    r = parse(make_spec(annotations=annotations))
    assert tuple((c.annotation, c.name) for c in r.cdi) == cdi
    assert tuple(c.name for c in r.nvidia_cdi) == nvidia


@pytest.mark.parametrize(
    ("item", "parsed"),
    [
        P("nvidia.com/gpu=0", ("nvidia.com/gpu", "0"), id="vendor/class=name"),
        P("nvidia.com/gpu=all", ("nvidia.com/gpu", "all"), id="name 'all'"),
        P(f"nvidia.com/gpu={GPU0_UUID}", ("nvidia.com/gpu", GPU0_UUID), id="uuid name"),
        P("nvidia.com/gpu=a=b", ("nvidia.com/gpu", "a=b"), id="name may contain '='"),
        P("nvidia.com/gpu", None, id="no name"),
        P("nvidia.com/gpu=", None, id="empty name"),
        P("gpu=0", None, id="no class"),
        P("0", None, id="plain index"),
        P(GPU0_UUID, None, id="plain uuid"),
        P("/gpu=0", None, id="empty vendor"),
    ],
)
def test_cdi_device_name(item, parsed):
    assert cdi_device_name(item) == parsed


# -- driver capabilities, MIG, IMEX --------------------------------------------------------

@pytest.mark.parametrize(
    ("env", "raw", "caps"),
    [
        P([], None, DEFAULT_DRIVER_CAPABILITIES, id="unset -> utility,compute"),
        P(["NVIDIA_DRIVER_CAPABILITIES="], "", DEFAULT_DRIVER_CAPABILITIES,
          id="empty -> default"),
        P(["NVIDIA_DRIVER_CAPABILITIES=all"], "all", ALL_DRIVER_CAPABILITIES,
          id="all -> every one of the seven"),
        P(["NVIDIA_DRIVER_CAPABILITIES=compute,all"], "compute,all", ALL_DRIVER_CAPABILITIES,
          id="all anywhere in the list -> every one"),
        P(["NVIDIA_DRIVER_CAPABILITIES=graphics"], "graphics", ("graphics",), id="one"),
        P(["NVIDIA_DRIVER_CAPABILITIES= video , compute ,video"], " video , compute ,video",
          ("video", "compute"), id="trimmed, de-duplicated, request order"),
        P(["NVIDIA_DRIVER_CAPABILITIES=compute", "NVIDIA_DRIVER_CAPABILITIES=display"],
          "display", ("display",), id="last duplicate wins"),
        P(["NVIDIA_DRIVER_CAPABILITIES=,"], ",", (), id="only commas -> nothing listed"),
        P(["CUDA_VERSION=12.4"], None, ALL_DRIVER_CAPABILITIES,
          id="legacy image, unset -> every capability (NVIDIA's getDriverCapabilities)"),
        P(["CUDA_VERSION=12.4", "NVIDIA_DRIVER_CAPABILITIES="], "", DEFAULT_DRIVER_CAPABILITIES,
          id="legacy image, set but empty -> default"),
        P(["CUDA_VERSION=12.4", "NVIDIA_DRIVER_CAPABILITIES=video"], "video", ("video",),
          id="legacy image, set -> as listed"),
        P(["CUDA_VERSION=12.4", "NVIDIA_REQUIRE_CUDA=cuda>=12"], None,
          DEFAULT_DRIVER_CAPABILITIES, id="CUDA image that is not legacy, unset -> default"),
    ],
)
def test_driver_capabilities(env, raw, caps):
    r = parse(make_spec(env=env))
    assert r.driver_capabilities == raw
    assert r.driver_capability_set() == caps


def test_all_driver_capabilities_are_nvidias_seven():
    assert set(ALL_DRIVER_CAPABILITIES) == {
        "compute", "compat32", "graphics", "utility", "video", "display", "ngx",
    }


@pytest.mark.parametrize(
    ("env", "config", "monitor"),
    [
        P([], None, None, id="unset"),
        P(["NVIDIA_MIG_CONFIG_DEVICES=all"], "all", None, id="config devices"),
        P(["NVIDIA_MIG_MONITOR_DEVICES=0"], None, "0", id="monitor devices"),
        P(["NVIDIA_MIG_CONFIG_DEVICES="], None, None, id="empty config is unset"),
        P(["NVIDIA_MIG_CONFIG_DEVICES=all", "NVIDIA_MIG_CONFIG_DEVICES="], None, None,
          id="emptied by a later duplicate"),
    ],
)
def test_mig_management(env, config, monitor):
    r = parse(make_spec(env=env))
    assert (r.mig_config, r.mig_monitor) == (config, monitor)


IMEX = "NVIDIA_IMEX_CHANNELS"
NV_DEFAULT = NvidiaConfig()
NV_MOUNTS = NvidiaConfig(path="t", accept_volume_mounts=True)
NV_ENV_OFF = NvidiaConfig(path="t", accept_env_unprivileged=False)
NV_IGNORE = NvidiaConfig(path="t", ignore_imex_requests=True, accept_volume_mounts=True)
IMEX_ANN = {"cdi.k8s.io/x": "nvidia.com/imex-channel=3,nvidia.com/gpu=0"}


def imex(value: str) -> str:
    return f"{IMEX}={value}"


# (container, NVIDIA's config or None for the union view, what NVIDIA reads, channels as
# "via:id"). NVIDIA's ImexChannelRequests (cuda_image.go) and the CDI names.
IMEX_CASES = [
    P({}, None, ImexRead.BOTH, (), id="unset: no channel"),
    P({"env": [imex("0")]}, None, ImexRead.BOTH, ("env:0",), id="one channel"),
    P({"env": [imex(" 0,1 ,,1")]}, None, ImexRead.BOTH, ("env:0", "env:1"),
      id="list syntax: trim, drop empties, dedupe"),
    P({"env": [imex("")]}, None, ImexRead.BOTH, (), id="empty: no channel"),
    P({"env": [imex("all")]}, None, ImexRead.BOTH, (),
      id="all: NVIDIA attaches no channel (imexChannelsFromEnvVar)"),
    P({"env": [imex("0,all")]}, None, ImexRead.BOTH, (), id="all next to an id: no channel"),
    P({"env": [imex("none")]}, None, ImexRead.BOTH, (), id="none: no channel"),
    P({"env": [imex("0,void")]}, None, ImexRead.BOTH, (), id="void anywhere: no channel"),
    P({"env": [imex("ALL")]}, None, ImexRead.BOTH, ("env:ALL",),
      id="ALL is an id, passed on (and refused later)"),
    P({"env": ["CUDA_VERSION=12"]}, None, ImexRead.BOTH, (),
      id="legacy image, unset: all, so no channel"),
    P({"env": [imex("0"), imex("1")]}, None, ImexRead.BOTH, ("env:1",),
      id="duplicates: the last wins"),
    P({"env": [imex("0")]}, NV_DEFAULT, ImexRead.ENV, ("env:0",),
      id="NVIDIA's defaults: an unprivileged env is read"),
    P({"env": [imex("0")]}, NV_ENV_OFF, ImexRead.NONE, (),
      id="unprivileged env not accepted: ignored"),
    P({"env": [imex("0")], "caps": ADMIN}, NV_ENV_OFF, ImexRead.ENV, ("env:0",),
      id="unprivileged env not accepted, but privileged: read"),
    P({"env": [imex("0")], "mounts": [device_mount("imex/1")]}, NV_DEFAULT, ImexRead.ENV,
      ("env:0",), id="mounts not accepted: only the env"),
    P({"env": [imex("0")], "mounts": [device_mount("imex/1")]}, NV_MOUNTS, ImexRead.MOUNTS,
      ("mount:1",), id="mounts accepted and present: the env is not read"),
    P({"env": [imex("0")], "mounts": [device_mount("0")]}, NV_MOUNTS, ImexRead.ENV,
      ("env:0",), id="mounts accepted, no imex/ mount: the env"),
    P({"env": [imex("0")], "mounts": [device_mount("imex/1")]}, None, ImexRead.BOTH,
      ("env:0", "mount:1"), id="union view: env and mounts"),
    P({"env": [imex("0")], "mounts": [device_mount("imex/1")], "annotations": IMEX_ANN},
      NV_IGNORE, ImexRead.NONE, ("annotation:3",),
      id="ignore-imex-channel-requests: env and mounts ignored, CDI names still count"),
    P({"annotations": IMEX_ANN}, NV_DEFAULT, ImexRead.ENV, ("annotation:3",),
      id="a CDI imex-channel name counts in every view"),
    P({"mounts": [mount("/dev/null", f"{ROOT}imex/4")]}, NV_MOUNTS, ImexRead.MOUNTS,
      ("mount:4",), id="NVIDIA's prefix quirk: ...-devicesimex/4 is channel 4"),
    P({"mounts": [device_mount("imex/4"), mount("/dev/null", f"{ROOT}/./imex//4/")]}, None,
      ImexRead.BOTH, ("mount:4",), id="two spellings of one mount: one channel"),
    P({"mounts": [device_mount("imex/4", source="/dev/zero")]}, NV_MOUNTS, ImexRead.ENV, (),
      id="a forged imex mount (not /dev/null) is no request"),
]


IMEX_CASES += [
    P({"env": [imex("0")], "gpu": False}, None, ImexRead.NONE, (),
      id="no GPU request: the env's channels ride along with nothing"),
    P({"mounts": [device_mount("imex/0")], "gpu": False}, NV_MOUNTS, ImexRead.NONE, (),
      id="no GPU request: nor the mounts'"),
    P({"env": [imex("0")], "annotations": {"cdi.k8s.io/x": "nvidia.com/imex-channel=3"},
       "gpu": False}, None, ImexRead.NONE, ("annotation:3",),
      id="no GPU request: a CDI imex-channel name still counts, and is no GPU request"),
]


@pytest.mark.parametrize(("container", "nvidia", "read", "channels"), IMEX_CASES)
def test_imex_request(container, nvidia, read, channels):
    """Every row asks for GPU 0 in the env too, unless it says gpu False."""
    container = dict(container)
    if container.pop("gpu", True):
        container["env"] = [nvd(GPU0_UUID), *container.get("env", ())]
    r = parse(make_spec(**container), nvidia=nvidia).imex
    assert r.read is read
    assert tuple(f"{c.via.value}:{c.id}" for c in r.channels) == channels


# -- privilege, device nodes, malformed env --------------------------------------------------

@pytest.mark.parametrize(
    ("caps", "effective", "privileged"),
    [
        P(ADMIN, None, True, id="CAP_SYS_ADMIN in bounding -> privileged"),
        P(("CAP_CHOWN", "CAP_SYS_ADMIN"), None, True, id="among other caps"),
        P((), ADMIN, False, id="CAP_SYS_ADMIN only in effective -> NOT privileged"),
        P(("CAP_NET_ADMIN",), None, False, id="CAP_NET_ADMIN is not CAP_SYS_ADMIN"),
        P(("cap_sys_admin",), None, False, id="capability names are case-sensitive"),
        P(("SYS_ADMIN",), None, False, id="without the CAP_ prefix it is not the capability"),
        P((), None, False, id="no capabilities"),
    ],
)
def test_privileged(caps, effective, privileged):
    r = parse(make_spec(env=[nvd("all")], caps=caps, effective=effective))
    assert r.privileged is privileged


@pytest.mark.parametrize(
    ("devices", "recorded"),
    [
        P(["/dev/nvidia0"], (("gpu", 0),), id="GPU node recorded by its minor"),
        P(["/dev/nvidiactl", "/dev/nvidia-modeset"], (("control", None), ("control", None)),
          id="control nodes recorded"),
        P(["/dev/fuse", "/dev/nvidia1"], (("gpu", 1),), id="other devices are not"),
        P([node("/dev/gpu0", 195, 0)], (("gpu", 0),), id="the path does not matter"),
        P([], (), id="none"),
    ],
)
def test_device_nodes(devices, recorded):
    reaches = parse(make_spec(devices=devices)).device_nodes
    assert tuple((r.kind.value, r.gpu_minor) for r in reaches) == recorded


def test_malformed_env_entries_are_recorded_in_order():
    r = parse(make_spec(env=["A=1", "NVIDIA_VISIBLE_DEVICES", "B", "C="]))
    assert r.malformed_env == (MalformedEnv(1, "NVIDIA_VISIBLE_DEVICES"), MalformedEnv(2, "B"))


# -- asks_for_devices ---------------------------------------------------------------------

ASKS_CASES = [
    P({}, False, id="empty spec asks for nothing"),
    P({"env": ["PATH=/bin"]}, False, id="no GPU variables"),
    P({"env": [nvd("void")]}, False, id="void asks for nothing"),
    P({"env": [nvd("")]}, False, id="empty asks for nothing"),
    P({"env": [nvd("none")]}, True, id="none asks (driver libraries)"),
    P({"env": [nvd("all")]}, True, id="all asks"),
    P({"env": [nvd("0")]}, True, id="an index asks"),
    P({"env": [nvd("ALL")]}, True, id="'ALL' asks (as a device id)"),
    P({"env": ["CUDA_VERSION=12"]}, True, id="legacy image asks (implicit all)"),
    P({"env": ["CUDA_VERSION=12", "NVIDIA_REQUIRE_CUDA=cuda>=12"]}, False,
      id="non-legacy CUDA image asks for nothing"),
    P({"env": ["NVIDIA_DRIVER_CAPABILITIES=all"]}, False,
      id="capabilities alone ask for nothing"),
    P({"env": [nvd("void")], "mounts": [device_mount("0")]}, True,
      id="void env but a device mount asks"),
    P({"mounts": [device_mount("0", source="/dev/zero")]}, False,
      id="a forged mount asks for nothing"),
    P({"mounts": [device_mount("imex/0")]}, False, id="an imex mount asks for no device"),
    P({"annotations": {"cdi.k8s.io/a": "nvidia.com/gpu=0"}}, True, id="nvidia CDI asks"),
    P({"annotations": {"cdi.k8s.io/a": "vendor.com/x=0"}}, False,
      id="another vendor's CDI name does not"),
    P({"devices": ["/dev/nvidia0"]}, True, id="a GPU device node asks"),
    P({"devices": ["/dev/nvidiactl"]}, False, id="a control node alone does not"),
    P({"devices": [node("/dev/gpu0", 195, 0)]}, True, id="195:0 at any path asks"),
    P({"devices": [node("/dev/nvidia0", 195, 0, kind="b")]}, False,
      id="a block device 195:0 is not NVIDIA's"),
    P({"env": [nvd("all"), nvd("void")]}, False, id="duplicate ending in void asks nothing"),
]


@pytest.mark.parametrize(("kwargs", "asks"), ASKS_CASES)
def test_asks_for_devices(kwargs, asks):
    assert parse(make_spec(**kwargs)).asks_for_devices is asks


# -- the pure helpers --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "ids"),
    [
        P("", [], id="empty"),
        P(",", [], id="comma"),
        P("a", ["a"], id="one"),
        P(" a , b ", ["a", "b"], id="trimmed"),
        P("a,,b", ["a", "b"], id="empties dropped"),
        P("a,b,a", ["a", "b"], id="repeats dropped, first kept"),
        P("a,A", ["a", "A"], id="case-sensitive"),
    ],
)
def test_split_ids(value, ids):
    assert split_ids(value) == ids


@pytest.mark.parametrize(
    ("value", "legacy", "expected"),
    [
        P(None, False, VisibleDevices(Kind.UNSET), id="unset"),
        P(None, True, VisibleDevices(Kind.ALL), id="unset, legacy -> all"),
        P("", True, VisibleDevices(Kind.VOID), id="empty, legacy -> void"),
        P("0,1", True, VisibleDevices(Kind.DEVICES, ("0", "1")), id="set, legacy ignored"),
    ],
)
def test_visible_devices(value, legacy, expected):
    assert visible_devices(value, legacy) == expected


@pytest.mark.parametrize(
    ("devices", "as_json"),
    [
        P(VisibleDevices(Kind.UNSET), None, id="unset -> null"),
        P(VisibleDevices(Kind.VOID), "void", id="void"),
        P(VisibleDevices(Kind.NONE), "none", id="none"),
        P(VisibleDevices(Kind.ALL), "all", id="all"),
        P(VisibleDevices(Kind.DEVICES, ("0", "1")), ["0", "1"], id="devices -> list"),
    ],
)
def test_visible_devices_as_json(devices, as_json):
    assert devices.as_json() == as_json


def test_env_map_last_duplicate_wins_and_skips_malformed():
    assert env_map(["A=1", "B", "A=2", "C=x=y", "D="]) == {"A": "2", "C": "x=y", "D": ""}


@pytest.mark.parametrize(
    ("env", "legacy"),
    [
        P({"CUDA_VERSION": "12"}, True, id="CUDA_VERSION only"),
        P({"CUDA_VERSION": "12", "NVIDIA_REQUIRE_CUDA": ""}, True, id="require empty"),
        P({"CUDA_VERSION": "12", "NVIDIA_REQUIRE_CUDA": "cuda>=12"}, False, id="require set"),
        P({"CUDA_VERSION": ""}, False, id="CUDA_VERSION empty"),
        P({}, False, id="neither"),
    ],
)
def test_is_legacy_image(env, legacy):
    assert is_legacy_image(env) is legacy


def test_to_json_reports_every_channel():
    spec = make_spec(
        env=[nvd("0"), nvd(f"{GPU1_UUID}"), "NVIDIA_DRIVER_CAPABILITIES=all", "BROKEN",
             "NVIDIA_IMEX_CHANNELS=0"],
        caps=ADMIN,
        mounts=[device_mount(MIG_A_UUID), device_mount("1", source="/dev/zero")],
        annotations={"cdi.k8s.io/a": "nvidia.com/gpu=0"},
        devices=["/dev/nvidia0"],
    )
    assert to_json(parse(spec)) == {
        "nvidia_channel": "env",
        "env": [GPU1_UUID],
        "variables": [NVD],
        "value": GPU1_UUID,
        "mounts": [MIG_A_UUID],
        "annotations": ["nvidia.com/gpu=0"],
        "privileged": True,
        "legacy_image": False,
        "driver_capabilities": "all",
        "mig_config": None,
        "mig_monitor": None,
        "imex": {"read": "both", "why": "no NVIDIA config given: every channel counts",
                 "env": "0", "channels": [{"id": "0", "via": "env"}]},
        "device_nodes": [{"what": "linux.devices[0] /dev/nvidia0 (c 195:0)", "reaches": "gpu",
                          "gpu_minor": 0}],
        "conflicting_values": ["0", GPU1_UUID],
        "malformed_env": [{"index": 3, "entry": "BROKEN"}],
        "forged_mounts": [f"/dev/zero -> {ROOT}/1"],
    }
