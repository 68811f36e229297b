"""The fake libnvidia-ml.so.1 (tests/fakenvml) drives unmodified pynvml in a subprocess."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import fakenvml
import pynvml
import pytest
from fakenvml import (
    CUDA_DRIVER_VERSION,
    DEFAULT_TOPOLOGY,
    DRIVER_VERSION,
    GPU0_BUS,
    GPU0_UUID,
    GPU1_BUS,
    GPU1_UUID,
    GPU_NAME,
    MIG_A_UUID,
    MIG_B_UUID,
    MIG_NAME,
    NVML_VERSION,
    big_topology,
    build,
    env_for,
    write_topology,
)

# Walks everything the fake reports through pynvml and prints it as JSON.
ENUMERATE = """
import json
import pynvml as n

n.nvmlInit()
gpus = []
for i in range(n.nvmlDeviceGetCount()):
    h = n.nvmlDeviceGetHandleByIndex(i)
    pci = n.nvmlDeviceGetPciInfo(h)
    migs = []
    for slot in range(n.nvmlDeviceGetMaxMigDeviceCount(h)):
        try:
            m = n.nvmlDeviceGetMigDeviceHandleByIndex(h, slot)
        except n.NVMLError_NotFound:
            continue
        migs.append({
            "slot": slot,
            "uuid": n.nvmlDeviceGetUUID(m),
            "gi": n.nvmlDeviceGetGpuInstanceId(m),
            "ci": n.nvmlDeviceGetComputeInstanceId(m),
            "name": n.nvmlDeviceGetName(m),
            "is_mig": n.nvmlDeviceIsMigDeviceHandle(m).value,
            "parent": n.nvmlDeviceGetUUID(n.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(m)),
        })
    gpus.append({
        "index": n.nvmlDeviceGetIndex(h),
        "uuid": n.nvmlDeviceGetUUID(h),
        "bus_id": pci.busId,
        "bus_id_legacy": pci.busIdLegacy,
        "pci": [pci.domain, pci.bus, pci.device],
        "minor": n.nvmlDeviceGetMinorNumber(h),
        "name": n.nvmlDeviceGetName(h),
        "mig_mode": n.nvmlDeviceGetMigMode(h),
        "max_migs": n.nvmlDeviceGetMaxMigDeviceCount(h),
        "is_mig": n.nvmlDeviceIsMigDeviceHandle(h).value,
        "migs": migs,
    })
print(json.dumps({
    "driver": n.nvmlSystemGetDriverVersion(),
    "nvml": n.nvmlSystemGetNVMLVersion(),
    "cuda": [n.nvmlSystemGetCudaDriverVersion(), n.nvmlSystemGetCudaDriverVersion_v2()],
    "gpus": gpus,
}))
n.nvmlShutdown()
"""

# Prints the name of the exception nvmlInit raises, or "ok".
INIT_OUTCOME = """
import pynvml
try:
    pynvml.nvmlInit()
except pynvml.NVMLError as e:
    print(type(e).__name__)
else:
    print("ok")
"""


@pytest.fixture(scope="session")
def libdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fake libnvidia-ml.so.1")
    return build(tmp_path_factory.mktemp("fakenvml"))


def run_child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def enumerate_nvml(env: dict[str, str]) -> dict:
    proc = run_child(ENUMERATE, env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def expected_gpus(topology: list[dict]) -> list[dict]:
    """What ENUMERATE should print for a topology given as write_topology() dicts."""
    gpus = []
    for index, gpu in enumerate(topology):
        bus = gpu["bus_id"]
        domain, bus_no, device = int(bus[0:8], 16), int(bus[9:11], 16), int(bus[12:14], 16)
        mig = int(gpu["mig_enabled"])
        migs = [
            {
                "slot": m["slot"],
                "uuid": m["uuid"],
                "gi": m["gi"],
                "ci": m["ci"],
                "name": f"{gpu['name']} MIG {m.get('profile', '1g.10gb')}",
                "is_mig": 1,
                "parent": gpu["uuid"],
            }
            for m in sorted(gpu["migs"], key=lambda m: m["slot"])
        ]
        gpus.append(
            {
                "index": index,
                "uuid": gpu["uuid"],
                "bus_id": bus,
                "bus_id_legacy": f"{domain:04X}:{bus_no:02X}:{device:02X}.0",
                "pci": [domain, bus_no, device],
                "minor": gpu["minor"],
                "name": gpu["name"],
                "mig_mode": [mig, mig],
                "max_migs": 7 if mig else 0,
                "is_mig": 0,
                "migs": migs,
            }
        )
    return gpus


# ---- the built-in topology ----


def test_default_topology_through_pynvml(libdir: Path) -> None:
    got = enumerate_nvml(env_for(libdir))

    assert got["driver"] == DRIVER_VERSION == "550.54.15"
    assert got["nvml"] == NVML_VERSION
    assert got["cuda"] == [CUDA_DRIVER_VERSION, CUDA_DRIVER_VERSION]
    gpu0, gpu1 = got["gpus"]
    assert (gpu0["uuid"], gpu0["bus_id"], gpu0["minor"]) == (GPU0_UUID, GPU0_BUS, 0)
    assert (gpu1["uuid"], gpu1["bus_id"], gpu1["minor"]) == (GPU1_UUID, GPU1_BUS, 1)
    assert gpu0["pci"] == [0, 0x17, 0] and gpu0["bus_id_legacy"] == "0000:17:00.0"
    assert gpu1["pci"] == [0, 0x65, 0]
    assert gpu0["name"] == gpu1["name"] == GPU_NAME == "NVIDIA H100 80GB HBM3"
    assert (gpu0["mig_mode"], gpu0["max_migs"], gpu0["migs"]) == ([0, 0], 0, [])
    assert (gpu1["mig_mode"], gpu1["max_migs"]) == ([1, 1], 7)
    # Slot 1 is empty (NOT_FOUND) and skipped; slots 3..6 too.
    assert [(m["slot"], m["uuid"], m["gi"], m["ci"]) for m in gpu1["migs"]] == [
        (0, MIG_A_UUID, 1, 0),
        (2, MIG_B_UUID, 2, 0),
    ]
    assert {m["parent"] for m in gpu1["migs"]} == {GPU1_UUID}
    assert {m["name"] for m in gpu1["migs"]} == {MIG_NAME}
    assert got["gpus"] == expected_gpus(DEFAULT_TOPOLOGY)


def test_default_topology_constants_match_builtin(libdir: Path, tmp_path: Path) -> None:
    topo = write_topology(tmp_path / "topo", DEFAULT_TOPOLOGY)
    assert enumerate_nvml(env_for(libdir, topology=topo)) == enumerate_nvml(env_for(libdir))


def test_mig_queries_on_the_wrong_kind_of_handle(libdir: Path) -> None:
    code = """
import pynvml as n
n.nvmlInit()
gpu0, gpu1 = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
mig = n.nvmlDeviceGetMigDeviceHandleByIndex(gpu1, 0)
calls = {
    "mig_handle_on_mig_disabled_gpu": lambda: n.nvmlDeviceGetMigDeviceHandleByIndex(gpu0, 0),
    "mig_slot_past_max": lambda: n.nvmlDeviceGetMigDeviceHandleByIndex(gpu1, 7),
    "gpu_index_past_count": lambda: n.nvmlDeviceGetHandleByIndex(2),
    "gi_of_whole_gpu": lambda: n.nvmlDeviceGetGpuInstanceId(gpu1),
    "ci_of_whole_gpu": lambda: n.nvmlDeviceGetComputeInstanceId(gpu1),
    "parent_of_whole_gpu": lambda: n.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(gpu1),
    "pci_of_mig": lambda: n.nvmlDeviceGetPciInfo(mig),
    "minor_of_mig": lambda: n.nvmlDeviceGetMinorNumber(mig),
    "mig_mode_of_mig": lambda: n.nvmlDeviceGetMigMode(mig),
}
for name, call in calls.items():
    try:
        call()
        print(name, "ok")
    except n.NVMLError as e:
        print(name, type(e).__name__)
"""
    proc = run_child(code, env_for(libdir))
    assert proc.returncode == 0, proc.stderr
    assert dict(line.split() for line in proc.stdout.splitlines()) == {
        "mig_handle_on_mig_disabled_gpu": "NVMLError_InvalidArgument",
        "mig_slot_past_max": "NVMLError_InvalidArgument",
        "gpu_index_past_count": "NVMLError_InvalidArgument",
        "gi_of_whole_gpu": "NVMLError_NotSupported",
        "ci_of_whole_gpu": "NVMLError_NotSupported",
        "parent_of_whole_gpu": "NVMLError_NotSupported",
        "pci_of_mig": "NVMLError_NotSupported",
        "minor_of_mig": "NVMLError_NotSupported",
        "mig_mode_of_mig": "NVMLError_NotSupported",
    }


def test_handle_by_uuid_finds_gpus_and_migs(libdir: Path) -> None:
    code = f"""
import pynvml as n
n.nvmlInit()
for uuid in ({GPU1_UUID!r}, {MIG_B_UUID!r}):
    h = n.nvmlDeviceGetHandleByUUID(uuid)
    print(n.nvmlDeviceGetUUID(h), n.nvmlDeviceIsMigDeviceHandle(h).value)
try:
    n.nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000")
except n.NVMLError_NotFound:
    print("not found")
"""
    proc = run_child(code, env_for(libdir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{GPU1_UUID} 0", f"{MIG_B_UUID} 1", "not found"]


# ---- custom topologies ----


@pytest.mark.parametrize(("n_gpus", "migs_per_gpu"), [(16, 7), (3, 0), (2, 3), (0, 0)])
def test_custom_topology(libdir: Path, tmp_path: Path, n_gpus: int, migs_per_gpu: int) -> None:
    gpus = big_topology(n_gpus, migs_per_gpu)
    got = enumerate_nvml(env_for(libdir, topology=write_topology(tmp_path / "topo", gpus)))

    assert len(got["gpus"]) == n_gpus
    assert sum(len(g["migs"]) for g in got["gpus"]) == n_gpus * migs_per_gpu
    assert got["gpus"] == expected_gpus(gpus)
    uuids = [g["uuid"] for g in got["gpus"]] + [m["uuid"] for g in got["gpus"] for m in g["migs"]]
    assert len(set(uuids)) == len(uuids)


def test_topology_file_comments_crlf_profiles_and_sparse_slots(
    libdir: Path, tmp_path: Path
) -> None:
    topo = tmp_path / "topo"
    topo.write_bytes(
        b"# a comment\r\n"
        b"\r\n"
        b"gpu GPU-aa 0000000A:1B:02.0 7 1   NVIDIA A100-SXM4-40GB  \r\n"
        b"  mig 6 MIG-bb 13 1 3g.20gb\r\n"
        b"mig 3 MIG-cc 9 0\r\n"
    )
    (gpu,) = enumerate_nvml(env_for(libdir, topology=topo))["gpus"]

    assert gpu["name"] == "NVIDIA A100-SXM4-40GB"
    assert gpu["bus_id"] == "0000000A:1B:02.0"
    assert gpu["pci"] == [0xA, 0x1B, 0x2] and gpu["bus_id_legacy"] == "000A:1B:02.0"
    assert gpu["minor"] == 7
    assert [(m["slot"], m["uuid"], m["gi"], m["ci"], m["name"]) for m in gpu["migs"]] == [
        (3, "MIG-cc", 9, 0, "NVIDIA A100-SXM4-40GB MIG 1g.10gb"),
        (6, "MIG-bb", 13, 1, "NVIDIA A100-SXM4-40GB MIG 3g.20gb"),
    ]


GOOD_GPU = "gpu GPU-a 00000000:17:00.0 0 1 NVIDIA H100 80GB HBM3\n"
TOO_MANY = "".join(f"gpu GPU-{i} 00000000:{i:02X}:00.0 {i} 0 X\n" for i in range(65))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("gpu GPU-a 00000000:17:00.0 0 0\n", "expected: gpu"),
        ("gpu GPU-a 0000:17:00.0 0 0 X\n", "busId"),
        ("gpu GPU-a 00000000:17:00.0 zero 0 X\n", "minor"),
        ("gpu GPU-a 00000000:17:00.0 -1 0 X\n", "minor"),
        ("gpu GPU-a 00000000:17:00.0 0 2 X\n", "mig must be 0 or 1"),
        ("mig 0 MIG-a 1 0\n", "before any gpu"),
        ("gpu GPU-a 00000000:17:00.0 0 0 X\nmig 0 MIG-a 1 0\n", "MIG disabled"),
        (GOOD_GPU + "mig 7 MIG-a 1 0\n", "slot"),
        (GOOD_GPU + "mig 0 MIG-a 1 0\nmig 0 MIG-b 2 0\n", "already used"),
        (GOOD_GPU + "mig 0 MIG-a 1\n", "expected: mig"),
        (GOOD_GPU + "mig 0 MIG-a 1 0 1g.10gb extra\n", "expected: mig"),
        (GOOD_GPU + "mig 0 MIG-a one 0\n", "bad gi or ci"),
        (f"gpu GPU-{'a' * 96} 00000000:17:00.0 0 0 X\n", "uuid too long"),
        (f"gpu GPU-a 00000000:17:00.0 0 0 {'X' * 96}\n", "name too long"),
        ("nic eth0\n", "unknown record"),
        (TOO_MANY, "too many GPUs"),
    ],
)
def test_malformed_topology_fails_init(
    libdir: Path, tmp_path: Path, text: str, reason: str
) -> None:
    topo = tmp_path / "topo"
    topo.write_text(text)
    proc = run_child(INIT_OUTCOME, env_for(libdir, topology=topo))
    assert proc.stdout == "NVMLError_Unknown\n"
    assert reason in proc.stderr


def test_missing_topology_file_fails_init(libdir: Path, tmp_path: Path) -> None:
    proc = run_child(INIT_OUTCOME, env_for(libdir, topology=tmp_path / "absent"))
    assert proc.stdout == "NVMLError_Unknown\n"
    assert "cannot open" in proc.stderr


def test_sixty_four_gpus_is_the_limit(libdir: Path, tmp_path: Path) -> None:
    topo = write_topology(tmp_path / "topo", big_topology(64, 1))
    assert len(enumerate_nvml(env_for(libdir, topology=topo))["gpus"]) == 64


# ---- failure modes ----


@pytest.mark.parametrize(
    ("fail", "error"),
    [
        ("driver_not_loaded", "NVMLError_DriverNotLoaded"),
        ("no_permission", "NVMLError_NoPermission"),
        ("no_such_mode", "NVMLError_Unknown"),
    ],
)
def test_init_failure_modes(libdir: Path, fail: str, error: str) -> None:
    proc = run_child(INIT_OUTCOME, env_for(libdir, fail=fail))
    assert proc.stdout == f"{error}\n"


def test_no_library_raises_library_not_found() -> None:
    proc = run_child(INIT_OUTCOME, env_for(None))
    if proc.stdout == "ok\n":
        pytest.skip("this host has a real libnvidia-ml.so.1")
    assert proc.stdout == "NVMLError_LibraryNotFound\n"


def wait_hung(proc: subprocess.Popen[str], ready: str, sig: signal.Signals) -> str:
    """Waits for the child to print `ready`, checks it then blocks, and kills it with sig."""
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == ready
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -sig
    return rest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_init_hang_blocks_until_killed(libdir: Path, sig: signal.Signals) -> None:
    code = "import pynvml\nprint('init', flush=True)\npynvml.nvmlInit()\nprint('returned')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env_for(libdir, fail="hang"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_hung(proc, "init\n", sig) == ""


def test_enum_hang_blocks_in_get_handle_by_index(libdir: Path) -> None:
    code = (
        "import pynvml\n"
        "pynvml.nvmlInit()\n"
        "print(pynvml.nvmlDeviceGetCount(), flush=True)\n"
        "pynvml.nvmlDeviceGetHandleByIndex(0)\n"
        "print('returned')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env_for(libdir, fail="enum_hang"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_hung(proc, "2\n", signal.SIGKILL) == ""


# ---- init/shutdown bookkeeping and the call log ----


def test_init_is_counted_and_queries_need_it(libdir: Path) -> None:
    code = """
import pynvml as n

def attempt(call):
    try:
        return call()
    except n.NVMLError as e:
        return type(e).__name__

n.nvmlInit()
n.nvmlInit()
n.nvmlShutdown()
print(attempt(n.nvmlDeviceGetCount))
n.nvmlShutdown()
print(attempt(n.nvmlDeviceGetCount))
print(attempt(n.nvmlSystemGetDriverVersion))
print(attempt(n.nvmlShutdown))
"""
    proc = run_child(code, env_for(libdir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "2",
        "NVMLError_Uninitialized",
        "NVMLError_Uninitialized",
        "NVMLError_Uninitialized",
    ]


def test_calls_log_has_one_line_per_successful_init(libdir: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    twice = "import os, pynvml\npynvml.nvmlInit()\npynvml.nvmlInit()\nprint(os.getpid())"
    once = "import os, pynvml\npynvml.nvmlInit()\nprint(os.getpid())"
    pid1 = run_child(twice, env_for(libdir, calls_log=log)).stdout.strip()
    pid2 = run_child(once, env_for(libdir, calls_log=log)).stdout.strip()

    assert pid1 != pid2
    assert log.read_text().splitlines() == [f"init {pid1}", f"init {pid1}", f"init {pid2}"]


def test_calls_log_untouched_without_a_successful_init(libdir: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    run_child("import pynvml", env_for(libdir, calls_log=log))
    run_child(INIT_OUTCOME, env_for(libdir, calls_log=log, fail="driver_not_loaded"))
    assert not log.exists()


def test_unwritable_calls_log_fails_init(libdir: Path, tmp_path: Path) -> None:
    proc = run_child(INIT_OUTCOME, env_for(libdir, calls_log=tmp_path / "no" / "dir"))
    assert proc.stdout == "NVMLError_Unknown\n"


# ---- the C ABI below pynvml ----


def test_c_abi_bounds_and_bad_handles(libdir: Path) -> None:
    code = """
import ctypes, json
lib = ctypes.CDLL("libnvidia-ml.so.1")
count, h, buf = ctypes.c_uint(), ctypes.c_void_p(), ctypes.create_string_buffer(96)
out = {"count_before_init": lib.nvmlDeviceGetCount_v2(ctypes.byref(count))}
out["init"] = lib.nvmlInit_v2()
lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(h))
out["uuid_41"] = [lib.nvmlDeviceGetUUID(h, buf, 41), buf.value.decode()]
out["uuid_40"] = lib.nvmlDeviceGetUUID(h, buf, 40)
out["driver_9"] = lib.nvmlSystemGetDriverVersion(buf, 9)
out["bogus_handle"] = lib.nvmlDeviceGetUUID(ctypes.c_void_p(ctypes.addressof(buf)), buf, 96)
out["null_handle"] = lib.nvmlDeviceGetUUID(None, buf, 96)
lib.nvmlErrorString.restype = ctypes.c_char_p
out["strings"] = [lib.nvmlErrorString(c).decode() for c in (0, 9, 12345)]
print(json.dumps(out))
"""
    proc = run_child(code, env_for(libdir))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "count_before_init": pynvml.NVML_ERROR_UNINITIALIZED,
        "init": pynvml.NVML_SUCCESS,
        "uuid_41": [pynvml.NVML_SUCCESS, GPU0_UUID],
        "uuid_40": pynvml.NVML_ERROR_INSUFFICIENT_SIZE,
        "driver_9": pynvml.NVML_ERROR_INSUFFICIENT_SIZE,
        "bogus_handle": pynvml.NVML_ERROR_INVALID_ARGUMENT,
        "null_handle": pynvml.NVML_ERROR_INVALID_ARGUMENT,
        "strings": ["Success", "Driver Not Loaded", "Unknown Error"],
    }
    assert ctypes.sizeof(pynvml.nvmlPciInfo_t) == 68


# ---- the Python helpers ----


def test_build_skips_when_up_to_date(libdir: Path) -> None:
    lib = libdir / fakenvml.LIBRARY_NAME
    before = lib.stat().st_mtime_ns
    assert build(libdir) == libdir
    assert lib.stat().st_mtime_ns == before


def test_build_rebuilds_when_source_is_newer(
    libdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "fake_nvml.c"
    shutil.copy(fakenvml.SOURCE, source)
    monkeypatch.setattr(fakenvml, "SOURCE", source)
    out = tmp_path / "out"
    lib = build(out) / fakenvml.LIBRARY_NAME
    first = lib.stat().st_mtime_ns
    os.utime(source, ns=(first + 10**9, first + 10**9))
    build(out)
    assert lib.stat().st_mtime_ns != first
    assert [p.name for p in out.iterdir()] == [fakenvml.LIBRARY_NAME]


def test_build_failure_carries_gcc_stderr(
    libdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int broken( {\n")
    monkeypatch.setattr(fakenvml, "SOURCE", source)
    out = tmp_path / "out"
    with pytest.raises(fakenvml.FakeNvmlBuildError, match=r"broken\.c:1"):
        build(out)
    assert list(out.iterdir()) == []


def test_write_topology_rejects_fields_with_whitespace(tmp_path: Path) -> None:
    gpus = big_topology(1, 0)
    gpus[0]["uuid"] = "GPU-a b"
    with pytest.raises(ValueError, match="whitespace"):
        write_topology(tmp_path / "topo", gpus)


def test_big_topology_limits_migs_per_gpu() -> None:
    with pytest.raises(ValueError):
        big_topology(1, 8)


def test_env_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NVML_FAIL", "hang")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/elsewhere")
    env = env_for(tmp_path, topology=tmp_path / "t", calls_log="/tmp/c")
    assert env["LD_LIBRARY_PATH"] == str(tmp_path)
    assert env["FAKE_NVML_TOPOLOGY"] == str(tmp_path / "t")
    assert env["FAKE_NVML_CALLS"] == "/tmp/c"
    assert "FAKE_NVML_FAIL" not in env
    assert env["PATH"] == os.environ["PATH"]
    assert "LD_LIBRARY_PATH" not in env_for(None)
