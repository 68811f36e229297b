"""Run real containers through nvhook on a simulated GPU node (see scripts/demo)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fakenvml  # noqa: E402
from e2e.harness import (  # noqa: E402
    make_bundle,
    make_rootfs,
    new_container_id,
    read_record,
    run_runc,
    write_recording_delegate,
)
from kubelet import Ctr, TestKubelet, containerd_annotations, crio_annotations  # noqa: E402

NVHOOK = Path(sys.executable).with_name("nvhook")
SAFE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

TRAIN_UID = "0f3e4a52-7b1c-4d2e-9a8b-1c2d3e4f5a6b"
CPU_UID = "11111111-2222-4333-8444-555555555555"
# The kubelet's allocation on the simulated node, served by a test kubelet (a real gRPC
# PodResources v1 server): team-a/train got GPU 0, team-a/etl asked for no GPU.
PODS = [("team-a", "train", TRAIN_UID, Ctr("main", {"nvidia.com/gpu": [fakenvml.GPU0_UUID]})),
        ("team-a", "etl", CPU_UID, Ctr("main"))]

SCENES: list[tuple[str, list[str], str, dict[str, str]]] = [
    ("Kubernetes (containerd): pod team-a/train, allocated GPU 0 by the kubelet",
     [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"], "",
     containerd_annotations("team-a", "train", TRAIN_UID, "main")),
    ("Kubernetes (CRI-O): pod team-a/etl requested no GPU, CUDA image (all baked in)",
     ["NVIDIA_VISIBLE_DEVICES=all", "CUDA_VERSION=12.4.1"], "",
     crio_annotations("team-a", "etl", CPU_UID, "main")),
    ("Kubernetes: pod team-a/train forges another tenant's GPU 1 into its env",
     [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU1_UUID}"], "",
     containerd_annotations("team-a", "train", TRAIN_UID, "main")),
    ("a pod that names another node's GPU",
     ["NVIDIA_VISIBLE_DEVICES=GPU-00000000-1111-4222-8333-444444444444"], "", {}),
    ("a pod spec that appends 'all' after its allocation (the last duplicate wins)",
     [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}", "NVIDIA_VISIBLE_DEVICES=all"], "", {}),
    ("a plain container, no GPU anywhere", ["PATH=/bin"], "", {}),
    ("rewrite mode: an index and a MIG slot are pinned to UUIDs",
     ["NVIDIA_VISIBLE_DEVICES=0,1:1"], 'mode = "rewrite"', {}),
    ("rewrite mode: a legacy CUDA image (implicit all) is neutralised with void",
     ["CUDA_VERSION=11.0"], 'mode = "rewrite"', {}),
]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="nvhook-demo-"))
    libdir = fakenvml.build(work / "fakenvml")
    rootfs = make_rootfs(work / "rootfs")
    print("Simulated GPU node (fake NVML through unmodified pynvml):")
    subprocess.run([str(NVHOOK), "devices"], env=fakenvml.env_for(libdir), check=False)
    print()
    kubelet = TestKubelet(work / "kubelet.sock")
    for ns, pod, uid, ctr in PODS:
        kubelet.add(ns, pod, uid, ctr)
    with kubelet:
        scenes(work, libdir, rootfs, kubelet)
    audit = [json.loads(line) for line in (work / "audit.jsonl").read_text().splitlines()]
    print(f"Audit log {work / 'audit.jsonl'}: {len(audit)} decisions "
          f"({', '.join(a['decision'] for a in audit)})")
    return 0


def scenes(work: Path, libdir: Path, rootfs: Path, kubelet: TestKubelet) -> None:
    for n, (title, env, policy, pod_keys) in enumerate(SCENES, 1):
        scene = work / f"scene{n}"
        record = scene / "delegate-record"
        delegate = write_recording_delegate(scene / "nvidia-container-runtime-hook", record)
        config = scene / "nvhook.toml"
        config.write_text(f'version = 1\n[policy]\n{policy}\n[delegate]\npath = "{delegate}"\n'
                          f'[audit]\npath = "{work / "audit.jsonl"}"\n'
                          f'[kubernetes]\nsocket = "{kubelet.socket}"\n'
                          f'checkpoint = "{work / "no-checkpoint"}"\n')
        hook = {"path": str(NVHOOK), "args": ["nvhook", "--config", str(config), "prestart"],
                "env": [SAFE_PATH, f"LD_LIBRARY_PATH={libdir}"], "timeout": 10}
        bundle = make_bundle(scene / "bundle", rootfs, args=["/bin/echo", "hello from inside"],
                             env=env, hooks={"prestart": [hook]}, annotations=pod_keys or None)
        result = run_runc(bundle, new_container_id("nvhook-demo"))
        print(f"[{n}] {title}")
        print(f"    env: {' '.join(env)}")
        if result.returncode == 0:
            seen = read_record(record)
            print(f"    ALLOWED  container said: {result.stdout.strip()!r}")
            if seen is None:
                print("    NVIDIA's hook: not called (nothing asked for)")
            else:
                print("    NVIDIA's hook saw NVIDIA_VISIBLE_DEVICES="
                      f"{seen.config_env_map.get('NVIDIA_VISIBLE_DEVICES')}")
        else:
            line = next((s for s in result.stderr.split("stderr: ")[1:]), result.stderr).strip()
            print(f"    DENIED   runc exited {result.returncode}; the container never ran")
            # runc quotes the hook's stderr inside its own log line.
            print(f"    {line.rstrip(chr(34)).encode().decode('unicode_escape').strip()}")
        print()


if __name__ == "__main__":
    sys.exit(main())
