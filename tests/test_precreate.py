"""`nvhook precreate`: Podman's config-filter stage, OCI config in on stdin, out on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import fakenvml
from conftest import Node

REPO = Path(__file__).resolve().parents[1]


def _doc(env: list[str], **extra: object) -> dict:
    return {"ociVersion": "1.0.2-dev", "hostname": "abc123",
            "process": {"args": ["/bin/sh"], "env": env}, "root": {"path": "rootfs"}, **extra}


def _run(node: Node, stdin: bytes) -> tuple[int, bytes, str]:
    proc = node.run(["--config", str(node.config), "precreate"], stdin=stdin)
    return proc.returncode, proc.stdout, proc.stderr.decode()


def test_non_gpu_config_comes_back_byte_identical(node: Node) -> None:
    raw = b'{ "ociVersion": "1.0.2",\n  "process": {"env": ["PATH=/bin"]}, "z": [1, 2.50] }'
    assert _run(node, raw) == (0, raw, "")
    assert node.audit_lines() == []


def test_allowed_canonical_request_comes_back_byte_identical(node: Node) -> None:
    raw = json.dumps(_doc([f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"]), indent=3).encode()
    assert _run(node, raw) == (0, raw, "")
    assert [e["stage"] for e in node.audit_lines()] == ["precreate"]
    assert node.audit_lines()[0]["container"] == "abc123"


def test_rewrite_pins_uuids_and_reindexes_cuda(node: Node) -> None:
    raw = json.dumps(_doc(["A=1", "NVIDIA_VISIBLE_DEVICES=1,0", "CUDA_VISIBLE_DEVICES=1,0"],
                          hooks={"prestart": [{"path": "/x"}]})).encode()
    code, out, err = _run(node, raw)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["process"]["env"] == [
        "A=1", f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU1_UUID},{fakenvml.GPU0_UUID}",
        "CUDA_VISIBLE_DEVICES=1,0"]
    assert doc["hooks"] == {"prestart": [{"path": "/x"}]}  # no hook inserted here
    assert {k: v for k, v in doc.items() if k != "process"} == {
        k: v for k, v in json.loads(raw).items() if k != "process"}


def test_mig_request_gets_mig_uuid_in_cuda(node: Node) -> None:
    raw = json.dumps(_doc(["NVIDIA_VISIBLE_DEVICES=1:1", "CUDA_VISIBLE_DEVICES=0"])).encode()
    code, out, _ = _run(node, raw)
    env = json.loads(out)["process"]["env"]
    assert code == 0
    assert env == [f"NVIDIA_VISIBLE_DEVICES={fakenvml.MIG_B_UUID}",
                   f"CUDA_VISIBLE_DEVICES={fakenvml.MIG_B_UUID}"]


def test_denial_prints_nothing_on_stdout(node: Node) -> None:
    node.write_config('[policy]\nall = "never"\n')
    code, out, err = _run(node, json.dumps(_doc(["NVIDIA_VISIBLE_DEVICES=all"])).encode())
    assert (code, out) == (3, b"")
    assert err.startswith("nvhook: denied: NVIDIA_VISIBLE_DEVICES=all")
    assert len(err.splitlines()) == 1


def test_audit_mode_changes_nothing(node: Node) -> None:
    node.write_config('[policy]\nmode = "audit"\nall = "never"\n')
    raw = json.dumps(_doc(["NVIDIA_VISIBLE_DEVICES=all", "CUDA_VISIBLE_DEVICES=1"])).encode()
    assert _run(node, raw) == (0, raw, "")


def test_bad_input_is_one_line(node: Node) -> None:
    code, out, err = _run(node, b'{"process": ')
    assert (code, out) == (6, b"")
    assert err.startswith("nvhook: <stdin>: not valid JSON")
    assert len(err.splitlines()) == 1


def test_example_hooks_d_file() -> None:
    doc = json.loads((REPO / "hooks.d" / "nvrw-precreate.json").read_text())
    assert doc["stages"] == ["precreate"]
    assert doc["hook"]["args"] == ["nvhook", "precreate"]
    assert doc["when"] == {"always": True}
