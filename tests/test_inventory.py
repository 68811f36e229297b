"""nvhook.gpus.inventory: how each device id form resolves against the live GPUs.

The rows mirror nvidia-container-cli's ``select_devices`` and its MIG counterpart, over the
fake NVML default topology: GPU 0 (MIG off), GPU 1 (MIG on, MIG devices in slots 0 and 2).
Where the C parser accepts junk (a sign, trailing text, a PCI function other than .0, a UUID
prefix), nvhook refuses instead of guessing.
"""

from __future__ import annotations

import json

import pytest
from builders import ALL_UUIDS, fake_inventory, inventory_json
from fakenvml import GPU0_BUS, GPU0_UUID, GPU1_BUS, GPU1_UUID, MIG_A_UUID, MIG_B_UUID

from nvhook.errors import InventoryError
from nvhook.gpus.inventory import (
    Gpu,
    IdForm,
    Inventory,
    MigDevice,
    Unresolved,
    from_json,
    load_file,
    looks_like_uuid,
    normalize_bus_id,
)
from nvhook.gpus.source import load

P = pytest.param
INV = fake_inventory()

RESOLVE_CASES = [
    # all
    P("all", IdForm.ALL, ALL_UUIDS, id="all: every GPU, then every MIG device"),
    P("ALL", IdForm.ALL, ALL_UUIDS, id="ALL resolves case-insensitively"),
    P("All", IdForm.ALL, ALL_UUIDS, id="All resolves case-insensitively"),
    # GPU uuids
    P(GPU0_UUID, IdForm.GPU_UUID, (GPU0_UUID,), id="GPU uuid, NVML spelling"),
    P(GPU1_UUID, IdForm.GPU_UUID, (GPU1_UUID,), id="MIG-enabled GPU by uuid"),
    P(GPU0_UUID.lower(), IdForm.GPU_UUID, (GPU0_UUID,), id="lowercase GPU uuid"),
    P(GPU1_UUID.upper(), IdForm.GPU_UUID, (GPU1_UUID,), id="uppercase GPU uuid"),
    P("gpu-" + GPU0_UUID[4:], IdForm.GPU_UUID, (GPU0_UUID,), id="lowercase gpu- prefix"),
    # PCI bus ids
    P(GPU0_BUS, IdForm.PCI, (GPU0_UUID,), id="PCI 00000000:17:00.0 (NVML form)"),
    P("0000:17:00.0", IdForm.PCI, (GPU0_UUID,), id="PCI 4-digit domain"),
    P("0:17:0.0", IdForm.PCI, (GPU0_UUID,), id="PCI without leading zeros"),
    P(GPU1_BUS, IdForm.PCI, (GPU1_UUID,), id="PCI of GPU 1"),
    P("00000000:65:00.0".upper(), IdForm.PCI, (GPU1_UUID,), id="PCI uppercase"),
    P("0:65:0.0", IdForm.PCI, (GPU1_UUID,), id="PCI short form of GPU 1"),
    # indices
    P("0", IdForm.INDEX, (GPU0_UUID,), id="index 0"),
    P("1", IdForm.INDEX, (GPU1_UUID,), id="index 1 (a MIG-enabled GPU is still a GPU)"),
    P("00", IdForm.INDEX, (GPU0_UUID,), id="index 00 is decimal 0"),
    P("001", IdForm.INDEX, (GPU1_UUID,), id="index 001 is decimal 1"),
    # MIG
    P(MIG_A_UUID, IdForm.MIG_UUID, (MIG_A_UUID,), id="MIG uuid"),
    P(MIG_B_UUID, IdForm.MIG_UUID, (MIG_B_UUID,), id="MIG uuid after an empty slot"),
    P(MIG_A_UUID.lower(), IdForm.MIG_UUID, (MIG_A_UUID,), id="lowercase MIG uuid"),
    P(f"MIG-{GPU1_UUID}/1/0", IdForm.LEGACY_MIG, (MIG_A_UUID,),
      id="legacy MIG-GPU-<uuid>/1/0"),
    P(f"MIG-{GPU1_UUID}/2/0", IdForm.LEGACY_MIG, (MIG_B_UUID,),
      id="legacy MIG-GPU-<uuid>/2/0"),
    P(f"mig-{GPU1_UUID.lower()}/2/0", IdForm.LEGACY_MIG, (MIG_B_UUID,),
      id="legacy MIG form, lowercase"),
    P("1:0", IdForm.MIG_INDEX, (MIG_A_UUID,), id="1:0 is GPU 1's first MIG device"),
    P("1:1", IdForm.MIG_INDEX, (MIG_B_UUID,),
      id="1:1 is the slot-2 device (empty slots are skipped)"),
    P("01:01", IdForm.MIG_INDEX, (MIG_B_UUID,), id="g:m with leading zeros"),
]


@pytest.mark.parametrize(("device_id", "form", "uuids"), RESOLVE_CASES)
def test_resolve(device_id, form, uuids):
    res = INV.resolve(device_id)
    assert res.id == device_id
    assert res.form is form
    assert tuple(d.uuid for d in res.devices) == uuids


UNRESOLVED_CASES = [
    P("2", "index out of range (this node has 2 GPUs)", id="index 2 is out of range"),
    P("99999999999999999999999", "index out of range (this node has 2 GPUs)",
      id="huge number is out of range"),
    P("+0", "unknown device", id="+0: strtoumax would take the sign, nvhook does not"),
    P("-1", "unknown device", id="-1 does not wrap around"),
    P(" 0", "unknown device", id="a leading blank is not trimmed here"),
    P("0 ", "unknown device", id="a trailing blank is not trimmed here"),
    P("0x1", "unknown device", id="hex index"),
    P("1.0", "unknown device", id="not an integer"),
    P("", "unknown device", id="empty id"),
    P("1:2", "GPU 1 has 2 MIG devices", id="1:2: only two MIG devices exist (slot 2 is 1:1)"),
    P("0:0", "GPU 0 has 0 MIG devices", id="0:0: GPU 0 has MIG off"),
    P("2:0", "GPU index out of range (this node has 2 GPUs)", id="g:m with no such GPU"),
    P("1:-1", "unknown device", id="negative MIG position"),
    P("1:0:0", "unknown device", id="three-part index"),
    P("00000000:17:00.1", "unknown device", id="PCI function .1 does not resolve"),
    P("0:17:0.7", "unknown device", id="PCI function .7 does not resolve"),
    P("00000000:18:00.0", "no GPU at that PCI bus id", id="PCI bus with no GPU"),
    P("00000001:17:00.0", "no GPU at that PCI bus id", id="PCI with another domain"),
    P("00000000:17:00.0junk", "unknown device", id="PCI with trailing text"),
    P("GPU-00000000-0000-4000-8000-000000000000", "no such device on this node",
      id="well-formed GPU uuid that is not live"),
    P("MIG-00000000-0000-4000-8000-000000000000", "no such device on this node",
      id="well-formed MIG uuid that is not live"),
    P(GPU0_UUID[:12], "unknown device", id="a GPU uuid prefix does not resolve"),
    P(GPU0_UUID + "0", "unknown device", id="a GPU uuid with an extra digit"),
    P(GPU0_UUID + " ", "unknown device", id="a GPU uuid with a trailing blank"),
    P("GPU-", "unknown device", id="bare GPU- prefix"),
    P(MIG_A_UUID[:-1], "unknown device", id="a MIG uuid missing its last digit"),
    P(f"MIG-{GPU1_UUID}/3/0", "no such MIG device on this node", id="legacy MIG, no such gi"),
    P(f"MIG-{GPU0_UUID}/1/0", "no such MIG device on this node",
      id="legacy MIG on a GPU with MIG off"),
    P(f"MIG-GPU-{GPU1_UUID}/1/0", "no such MIG device on this node",
      id="legacy MIG with a doubled GPU- prefix"),
    P("MIG-" + GPU0_UUID, "unknown device", id="MIG- prefix on a GPU uuid"),
    P("GPU-" + MIG_A_UUID[4:], "no such device on this node",
      id="GPU- prefix on a MIG uuid's body"),
    P("none", "unknown device", id="none is not a device id at this level"),
    P("void", "unknown device", id="void is not a device id at this level"),
    P("nvidia.com/gpu=0", "unknown device", id="a CDI name is not an inventory id"),
    P("gpu0", "unknown device", id="garbage"),
    P("allx", "unknown device", id="'all' with a suffix"),
]


@pytest.mark.parametrize(("device_id", "message"), UNRESOLVED_CASES)
def test_unresolved(device_id, message):
    with pytest.raises(Unresolved) as exc:
        INV.resolve(device_id)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("device_id", "positional"),
    [
        P("0", True, id="index is positional"),
        P("1:0", True, id="g:m is positional"),
        P(GPU0_BUS, True, id="PCI bus id is positional"),
        P(GPU0_UUID, False, id="GPU uuid is not"),
        P(MIG_A_UUID, False, id="MIG uuid is not"),
        P(f"MIG-{GPU1_UUID}/1/0", False, id="legacy MIG names gi/ci, not a slot"),
        P("all", False, id="all is governed by policy.all"),
    ],
)
def test_positional_forms(device_id, positional):
    assert INV.resolve(device_id).form.is_positional is positional


def test_inventory_shape():
    assert [g.uuid for g in INV.gpus] == [GPU0_UUID, GPU1_UUID]
    assert INV.gpus[0] == Gpu(0, GPU0_UUID, GPU0_BUS, 0, "NVIDIA H100 80GB HBM3", False)
    assert INV.gpus[1].mig_enabled is True
    assert INV.migs == (
        MigDevice(GPU1_UUID, 1, 0, MIG_A_UUID, 1, 0),
        MigDevice(GPU1_UUID, 1, 1, MIG_B_UUID, 2, 0),
    )
    assert [m.index_id for m in INV.migs] == ["1:0", "1:1"]
    assert INV.migs_of(INV.gpus[0]) == ()
    assert INV.parent_of(INV.migs[1]) is INV.gpus[1]
    assert INV.by_uuid(MIG_B_UUID.upper()) == INV.migs[1]
    assert INV.by_uuid("GPU-nope") is None
    assert INV.driver_version == "550.54.15"
    assert INV.source == "file"


def test_as_json_round_trips():
    again = from_json(INV.as_json())
    assert again.gpus == INV.gpus
    assert again.migs == INV.migs
    assert again.driver_version == INV.driver_version


def test_empty_inventory_resolves_nothing():
    empty = Inventory((), ())
    assert empty.resolve("all").devices == ()
    with pytest.raises(Unresolved, match="this node has 0 GPUs"):
        empty.resolve("0")


# -- normalize_bus_id / looks_like_uuid -------------------------------------------------------

@pytest.mark.parametrize(
    ("bus_id", "normalized"),
    [
        P("00000000:17:00.0", "00000000:17:00.0", id="NVML form unchanged"),
        P("0000:17:00.0", "00000000:17:00.0", id="4-digit domain padded"),
        P("0:17:0.0", "00000000:17:00.0", id="short form padded"),
        P("0000:AB:1F.0", "00000000:ab:1f.0", id="uppercase hex lowered"),
        P(" 0:65:0.0 ", "00000000:65:00.0", id="surrounding blanks ignored"),
        P("00000000:17:00.1", "00000000:17:00.1", id="function .1 is left as is (lowered)"),
        P("junk", "junk", id="not a bus id: lowered only"),
        P("JUNK", "junk", id="not a bus id: lowered"),
    ],
)
def test_normalize_bus_id(bus_id, normalized):
    assert normalize_bus_id(bus_id) == normalized


@pytest.mark.parametrize(
    ("device_id", "looks"),
    [
        P(GPU0_UUID, True, id="GPU uuid"),
        P(MIG_A_UUID.lower(), True, id="lowercase MIG uuid"),
        P("GPU-1234", False, id="short body"),
        P("NVD-" + GPU0_UUID[4:], False, id="wrong prefix"),
        P(GPU0_UUID[4:], False, id="bare body"),
    ],
)
def test_looks_like_uuid(device_id, looks):
    assert looks_like_uuid(device_id) is looks


# -- from_json validation -----------------------------------------------------------------------

def _with(path: str, value):
    """INVENTORY_JSON with one field replaced; path like 'gpus.0.uuid'. value=KeyError deletes."""
    data = inventory_json()
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


FROM_JSON_ERRORS = [
    P([], "inv: expected a JSON object", id="top level not an object"),
    P({}, "inv: gpus: expected an array", id="gpus missing"),
    P({"gpus": {}}, "inv: gpus: expected an array", id="gpus an object"),
    P(_with("driver_version", 550), "inv: driver_version: expected a string",
      id="driver_version not a string"),
    P(_with("gpus.0", "GPU-x"), "inv: gpus[0]: expected an object", id="gpu not an object"),
    P(_with("gpus.0.uuid", KeyError), "inv: gpus[0].uuid: missing", id="gpu uuid missing"),
    P(_with("gpus.0.uuid", 7), "inv: gpus[0].uuid: expected str, got 7",
      id="gpu uuid not a string"),
    P(_with("gpus.1.uuid", MIG_A_UUID), f"inv: gpus[1].uuid: expected a GPU-<uuid>, got "
      f"'{MIG_A_UUID}'", id="gpu uuid without GPU- prefix"),
    P(_with("gpus.1.uuid", "GPU-" + GPU0_UUID[4:].upper()),
      f"inv: gpus[1].uuid: GPU-{GPU0_UUID[4:].upper()} appears twice",
      id="gpu uuid repeated (case-insensitive)"),
    P(_with("gpus.0.pci_bus_id", KeyError), "inv: gpus[0].pci_bus_id: missing",
      id="pci_bus_id missing"),
    P(_with("gpus.0.minor", "0"), "inv: gpus[0].minor: expected int, got '0'",
      id="minor a string"),
    P(_with("gpus.0.minor", True), "inv: gpus[0].minor: expected int, got True",
      id="minor a boolean is not an int"),
    P(_with("gpus.0.name", 1), "inv: gpus[0].name: expected str, got 1", id="name not str"),
    P(_with("gpus.1.mig_enabled", "yes"), "inv: gpus[1].mig_enabled: expected bool, got 'yes'",
      id="mig_enabled not a bool"),
    P(_with("gpus.1.mig_devices", {}), "inv: gpus[1].mig_devices: expected an array",
      id="mig_devices not an array"),
    P(_with("gpus.1.mig_devices.0", []), "inv: gpus[1].mig_devices[0]: expected an object",
      id="mig device not an object"),
    P(_with("gpus.1.mig_devices.1.uuid", KeyError), "inv: gpus[1].mig_devices[1].uuid: missing",
      id="mig uuid missing"),
    P(_with("gpus.1.mig_devices.0.uuid", GPU0_UUID[:4] + MIG_A_UUID[4:]),
      "inv: gpus[1].mig_devices[0].uuid: expected a MIG-<uuid>", id="mig uuid wrong prefix"),
    P(_with("gpus.1.mig_devices.1.uuid", MIG_A_UUID),
      f"inv: gpus[1].mig_devices[1].uuid: {MIG_A_UUID} appears twice", id="mig uuid repeated"),
    P(_with("gpus.1.mig_devices.0.gi", KeyError), "inv: gpus[1].mig_devices[0].gi: missing",
      id="gi missing"),
    P(_with("gpus.1.mig_devices.0.ci", "0"),
      "inv: gpus[1].mig_devices[0].ci: expected int, got '0'", id="ci not an int"),
]


@pytest.mark.parametrize(("data", "message"), FROM_JSON_ERRORS)
def test_from_json_errors(data, message):
    with pytest.raises(InventoryError) as exc:
        from_json(data, "inv")
    assert str(exc.value).startswith(message)


@pytest.mark.parametrize(
    ("data", "check"),
    [
        P({"gpus": []}, lambda inv: inv.gpus == () and inv.driver_version is None,
          id="no GPUs is a valid (empty) inventory"),
        P({"gpus": [{"uuid": GPU0_UUID, "pci_bus_id": "0:17:0.0"}]},
          lambda inv: inv.gpus[0] == Gpu(0, GPU0_UUID, GPU0_BUS, 0, "", False),
          id="optional fields default; bus id normalized"),
        P({"gpus": [{"uuid": GPU0_UUID, "pci_bus_id": GPU0_BUS, "minor": 7}]},
          lambda inv: inv.gpus[0].minor == 7, id="minor kept"),
        P(_with("gpus.1.mig_enabled", KeyError), lambda inv: inv.gpus[1].mig_enabled is True,
          id="mig_enabled defaults to having MIG devices"),
        P({"gpus": [], "extra": 1}, lambda inv: inv.gpus == (), id="unknown keys are ignored"),
    ],
)
def test_from_json_accepts(data, check):
    assert check(from_json(data))


# -- load_file / load ---------------------------------------------------------------------------

def test_load_file_reads_the_dry_run_format(tmp_path):
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(inventory_json()))
    inv = load_file(path)
    assert inv.gpus == INV.gpus and inv.migs == INV.migs


@pytest.mark.parametrize(
    ("content", "message"),
    [
        P(None, "inventory file does not exist", id="missing file"),
        P(b"{", "inventory file is not valid JSON", id="truncated JSON"),
        P(b"\xff\xfe\x00", "inventory file is not valid JSON", id="not UTF-8"),
        P(b"[]", "expected a JSON object", id="JSON array"),
        P(b'{"gpus": [{"uuid": 1}]}', "gpus[0].uuid: expected str, got 1",
          id="field errors carry the file name"),
    ],
)
def test_load_file_errors(tmp_path, content, message):
    path = tmp_path / "inv.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InventoryError) as exc:
        load_file(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert message in str(exc.value)


def test_load_file_unreadable_is_an_inventory_error(tmp_path):
    with pytest.raises(InventoryError, match="cannot read inventory file"):
        load_file(tmp_path)  # a directory


def test_load_source_file_without_path():
    with pytest.raises(InventoryError, match=r'inventory\.source is "file" but no'):
        load("file", None, 1.0)


def test_load_source_file(tmp_path):
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(inventory_json()))
    assert load("file", path, 1.0).gpus == INV.gpus
