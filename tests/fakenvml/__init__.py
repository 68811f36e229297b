"""Build and drive the fake libnvidia-ml.so.1 in fake_nvml.c (see the comment at its top).

pynvml dlopens ``libnvidia-ml.so.1`` by soname, and the loader reads LD_LIBRARY_PATH only at
process start, so the fake works in a *child* process started with ``env_for(...)``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_nvml.c")
LIBRARY_NAME = "libnvidia-ml.so.1"
MAX_MIGS = 7  # MIG slots per GPU in fake_nvml.c

# The built-in topology of fake_nvml.c (used when FAKE_NVML_TOPOLOGY is unset).
DRIVER_VERSION = "550.54.15"
NVML_VERSION = "12.550.54.15"
CUDA_DRIVER_VERSION = 12040
GPU_NAME = "NVIDIA H100 80GB HBM3"
MIG_NAME = "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
GPU0_UUID = "GPU-5a6e2b1c-8d3f-4e7a-9b0c-1d2e3f4a5b6c"
GPU1_UUID = "GPU-c0ffee00-1234-4abc-8def-0123456789ab"
GPU0_BUS = "00000000:17:00.0"
GPU1_BUS = "00000000:65:00.0"
MIG_A_UUID = "MIG-2f7c1a9e-0b3d-5c4e-8f6a-7b8c9d0e1f2a"  # GPU 1, slot 0, gi 1, ci 0
MIG_B_UUID = "MIG-8e9f0a1b-2c3d-5e4f-9a0b-1c2d3e4f5a6b"  # GPU 1, slot 2, gi 2, ci 0

DEFAULT_TOPOLOGY: list[dict] = [
    {
        "uuid": GPU0_UUID,
        "bus_id": GPU0_BUS,
        "minor": 0,
        "name": GPU_NAME,
        "mig_enabled": False,
        "migs": [],
    },
    {
        "uuid": GPU1_UUID,
        "bus_id": GPU1_BUS,
        "minor": 1,
        "name": GPU_NAME,
        "mig_enabled": True,
        "migs": [
            {"slot": 0, "uuid": MIG_A_UUID, "gi": 1, "ci": 0},
            {"slot": 2, "uuid": MIG_B_UUID, "gi": 2, "ci": 0},
        ],
    },
]


class FakeNvmlBuildError(RuntimeError):
    """gcc could not build the fake library."""


def build(dest_dir: Path) -> Path:
    """Compile the fake into dest_dir/libnvidia-ml.so.1 unless it is newer than the source.

    Returns dest_dir, the directory to put on LD_LIBRARY_PATH.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    lib = dest_dir / LIBRARY_NAME
    if lib.exists() and lib.stat().st_mtime >= SOURCE.stat().st_mtime:
        return dest_dir
    # Build beside the target and rename, so a concurrent user never loads a partial file.
    fd, tmp = tempfile.mkstemp(prefix=".fake_nvml.", suffix=".so", dir=dest_dir)
    os.close(fd)
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC"]
    cmd += [f"-Wl,-soname,{LIBRARY_NAME}", "-o", tmp, str(SOURCE)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise FakeNvmlBuildError(
                f"building {LIBRARY_NAME} failed ({' '.join(cmd)}):\n{proc.stderr}"
            )
        os.replace(tmp, lib)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest_dir


def write_topology(path: Path, gpus: list[dict]) -> Path:
    """Write gpus (dicts shaped like DEFAULT_TOPOLOGY's) as a FAKE_NVML_TOPOLOGY file.

    A MIG dict may carry an optional "profile" (default 1g.10gb), used in its name.
    """
    lines = []
    for gpu in gpus:
        fields = [gpu["uuid"], gpu["bus_id"], str(gpu["minor"]), str(int(gpu["mig_enabled"]))]
        lines.append(" ".join(["gpu", *_checked(fields), gpu["name"]]))
        for mig in gpu.get("migs", []):
            fields = [str(mig["slot"]), mig["uuid"], str(mig["gi"]), str(mig["ci"])]
            if "profile" in mig:
                fields.append(mig["profile"])
            lines.append(" ".join(["mig", *_checked(fields)]))
    path = Path(path)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _checked(fields: list[str]) -> list[str]:
    # A space inside a field would silently shift the columns the C parser reads.
    for field in fields:
        if not field or field != "".join(field.split()):
            raise ValueError(f"topology field {field!r} is empty or holds whitespace")
    return fields


def big_topology(n_gpus: int = 8, migs_per_gpu: int = 7) -> list[dict]:
    """n_gpus GPUs with deterministic ids; each has MIG enabled with its first migs_per_gpu
    slots filled when migs_per_gpu > 0, else MIG disabled."""
    if not 0 <= migs_per_gpu <= MAX_MIGS:
        raise ValueError(f"migs_per_gpu must be 0..{MAX_MIGS}")
    return [
        {
            "uuid": f"GPU-{i:08x}-0000-4000-8000-{i:012x}",
            "bus_id": f"00000000:{0x10 + i:02X}:00.0",
            "minor": i,
            "name": GPU_NAME,
            "mig_enabled": migs_per_gpu > 0,
            "migs": [
                {
                    "slot": s,
                    "uuid": f"MIG-{i:08x}-{s:04x}-5000-8000-{i * 16 + s:012x}",
                    "gi": s + 1,
                    "ci": 0,
                }
                for s in range(migs_per_gpu)
            ],
        }
        for i in range(n_gpus)
    ]


def env_for(
    libdir: Path | None,
    *,
    topology: Path | str | None = None,
    fail: str | None = None,
    calls_log: Path | str | None = None,
) -> dict[str, str]:
    """os.environ for a child process that loads the fake from libdir.

    libdir=None drops LD_LIBRARY_PATH, so no libnvidia-ml.so.1 is found (unless the host has a
    real one). Inherited FAKE_NVML_* settings are dropped; only the ones given here are set.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_NVML_")}
    env.pop("LD_LIBRARY_PATH", None)
    if libdir is not None:
        env["LD_LIBRARY_PATH"] = str(libdir)
    for name, value in (("TOPOLOGY", topology), ("FAIL", fail), ("CALLS", calls_log)):
        if value is not None:
            env[f"FAKE_NVML_{name}"] = str(value)
    return env
