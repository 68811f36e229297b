"""Bad input, through the real console script: exactly one stderr line starting with
``nvhook: ``, a documented exit code (README: 3 denied / fail closed, 4 config, 5 state,
6 spec), never a traceback. Each broken state or spec is tried on a bundle that asks for a GPU
and on one that does not, so the stdlib fast path must hand malformed input on to the full
path instead of exiting 0."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakenvml
import pytest
from conftest import Node, runc_state, write_bundle

STATE, SPEC, CONFIG, DENIED = 5, 6, 4, 3
GPU_ENV = [f"NVIDIA_VISIBLE_DEVICES={fakenvml.GPU0_UUID}"]
NO_GPU_ENV = ["PATH=/bin", "HOME=/root"]


def assert_one_line(proc: Any, code: int, *needles: str) -> str:
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert proc.returncode == code, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nvhook: "), err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def hook(node: Node, stdin: bytes, **kw: Any) -> Any:
    return node.run(["--config", str(node.config), "prestart"], stdin=stdin, timeout=30, **kw)


def state(bundle: str | Path | list[str] | None = None, **fields: Any) -> bytes:
    doc: dict[str, Any] = {"ociVersion": "1.0.2-dev", "id": "ctr", "status": "creating",
                           "pid": 42}
    if bundle is not None:
        doc["bundle"] = str(bundle) if isinstance(bundle, Path) else bundle
    doc.update(fields)
    return json.dumps(doc).encode()


# -- stdin (the OCI state) ----------------------------------------------------------------------
STDIN_CASES: dict[str, Callable[[Path], bytes]] = {
    "empty": lambda b: b"",
    "blank": lambda b: b" \n\t",
    "not-json": lambda b: b"this is not json",
    "json-array": lambda b: b"[1, 2]",
    "json-string": lambda b: b'"bundle"',
    "truncated": lambda b: state(b)[:-5],
    "huge-2MiB": lambda b: state(b, annotations={"x": "y" * (2 << 20)}),
    "not-utf8": lambda b: state(b).replace(b'"ctr"', b'"c\xff\xfe"'),
    "utf16": lambda b: state(b).decode().encode("utf-16"),
    "nul-bytes": lambda b: state(b) + b"\x00",
    "deep-nesting": lambda b: b"[" * 100000 + b"]" * 100000,
    "id-number": lambda b: state(b, id=7),
    "id-empty": lambda b: state(b, id=""),
    "status-null": lambda b: state(b, status=None),
    "bundle-list": lambda b: state([str(b)]),
    "bundle-missing": lambda b: state(None),
    "bundle-relative": lambda b: state("bundle"),
    "bundle-empty": lambda b: state(""),
    "bundlePath-number": lambda b: state(b, bundlePath=5),
    "pid-string": lambda b: state(b, pid="42"),
    "pid-negative": lambda b: state(b, pid=-1),
    "pid-bool": lambda b: state(b, pid=True),
    "annotations-non-string": lambda b: state(b, annotations={"a": 1}),
    "annotations-list": lambda b: state(b, annotations=["a"]),
    # What Go (NVIDIA's hook reads the state too) would read otherwise, or Python cannot use.
    "pid-5000-digits": lambda b: state(b).replace(b'"pid": 42', b'"pid": ' + b"4" * 5000),
    "pid-nan": lambda b: state(b).replace(b'"pid": 42', b'"pid": NaN'),
    "bundle-lone-surrogate": lambda b: state(str(b) + "\ud800"),
    "id-lone-surrogate": lambda b: state(b, id="c\udfff"),
    "bundle-and-Bundle": lambda b: state(b)[:-1] + b', "Bundle": "/elsewhere"}',
    "bundle-twice": lambda b: state(b)[:-1] + b', "bundle": "/elsewhere"}',
}


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu-bundle", "no-gpu-bundle"])
@pytest.mark.parametrize("case", list(STDIN_CASES))
def test_bad_state(node: Node, tmp_path: Path, case: str, gpu: bool) -> None:
    bundle = write_bundle(tmp_path / "bundle", GPU_ENV if gpu else NO_GPU_ENV)
    proc = hook(node, STDIN_CASES[case](bundle))
    assert_one_line(proc, STATE, "stdin")
    assert node.audit_lines() == []


# -- config.json ---------------------------------------------------------------------------------
def spec_text(env: list[str]) -> dict[str, Any]:
    return {"ociVersion": "1.0.2", "process": {"args": ["sh"], "env": env},
            "root": {"path": "rootfs"}}


def put(bundle: Path, data: bytes) -> None:
    (bundle / "config.json").write_bytes(data)


SPEC_CASES: dict[str, Callable[[Path, list[str]], None]] = {
    "missing": lambda b, env: None,
    "directory": lambda b, env: (b / "config.json").mkdir(),
    "dangling-symlink": lambda b, env: (b / "config.json").symlink_to(b / "nowhere.json"),
    "not-json": lambda b, env: put(b, b"{not json"),
    "empty-file": lambda b, env: put(b, b""),
    "truncated": lambda b, env: put(b, json.dumps(spec_text(env)).encode()[:-3]),
    "nul-bytes": lambda b, env: put(b, json.dumps(spec_text(env)).encode() + b"\x00"),
    "nul-in-string": lambda b, env: put(
        b, json.dumps(spec_text(env)).encode().replace(b'"sh"', b'"s\x00h"')),
    "not-utf8": lambda b, env: put(
        b, json.dumps(spec_text(env)).encode().replace(b'"sh"', b'"s\xffh"')),
    "utf16": lambda b, env: put(b, json.dumps(spec_text(env)).encode("utf-16")),
    "top-level-array": lambda b, env: put(b, b"[]"),
    "env-not-a-list": lambda b, env: put(
        b, json.dumps({"process": {"env": "NVIDIA_VISIBLE_DEVICES=all"}}).encode()),
    "env-entry-number": lambda b, env: put(b, json.dumps({"process": {"env": [*env, 5]}}).encode()),
    "mounts-not-a-list": lambda b, env: put(
        b, json.dumps({**spec_text(env), "mounts": {"a": 1}}).encode()),
    "annotation-number": lambda b, env: put(
        b, json.dumps({**spec_text(env), "annotations": {"cdi.k8s.io/x": 1}}).encode()),
    "deep-nesting": lambda b, env: put(b, b"[" * 100000 + b"]" * 100000),
    "deep-nesting-in-object": lambda b, env: put(
        b, b'{"process":{"env":' + json.dumps(env).encode() + b'},"x":' + b'{"a":' * 5000
        + b"1" + b"}" * 5001),
    # Not a regular file: a FIFO could serve one document to nvhook and another to NVIDIA's
    # hook (and would block a plain open); a link is not followed.
    "fifo": lambda b, env: os.mkfifo(b / "config.json"),
    "symlink-to-valid-spec": lambda b, env: (
        (b / "real.json").write_text(json.dumps(spec_text(env))),
        (b / "config.json").symlink_to("real.json")),
    "symlink-to-dev-null": lambda b, env: (b / "config.json").symlink_to("/dev/null"),
    # What Python's json accepts but Go reads otherwise, or Python cannot encode back.
    "lone-surrogate-in-env": lambda b, env: put(
        b, json.dumps(spec_text([*env, "X=\ud800"])).encode()),
    "lone-surrogate-in-annotation-key": lambda b, env: put(
        b, json.dumps({**spec_text(env), "annotations": {"a\udfff": "1"}}).encode()),
    "nan": lambda b, env: put(b, json.dumps({**spec_text(env), "x": float("nan")}).encode()),
    "infinity": lambda b, env: put(b, json.dumps({**spec_text(env), "x": float("-inf")}).encode()),
    "float-overflows": lambda b, env: put(
        b, json.dumps(spec_text(env)).encode()[:-1] + b',"x":1e999}'),
    "int-200-digits": lambda b, env: put(
        b, json.dumps({**spec_text(env), "x": 10 ** 199}).encode()),
    "int-5000-digits": lambda b, env: put(
        b, json.dumps(spec_text(env)).encode()[:-1] + b',"x":' + b"7" * 5000 + b"}"),
}


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu-env", "no-gpu-env"])
@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_bad_config_json(node: Node, tmp_path: Path, case: str, gpu: bool) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    SPEC_CASES[case](bundle, GPU_ENV if gpu else NO_GPU_ENV)
    assert_one_line(hook(node, state(bundle)), SPEC, "config.json")


def test_bundle_directory_missing(node: Node, tmp_path: Path) -> None:
    assert_one_line(hook(node, state(tmp_path / "gone")), SPEC, "no such file")


def test_ten_mebibyte_env_is_decided_as_usual(node: Node, tmp_path: Path) -> None:
    filler = [f"FILLER_{i}={'x' * 1000}" for i in range(11 * 1024)]
    bundle = write_bundle(tmp_path / "deny", [*filler, "NVIDIA_VISIBLE_DEVICES=all", "A=1"])
    assert (bundle / "config.json").stat().st_size > 10 << 20
    line = assert_one_line(hook(node, runc_state(bundle, "big-deny")), DENIED, "denied")
    assert "NVIDIA_VISIBLE_DEVICES=all" in line
    allowed = write_bundle(tmp_path / "allow", [*filler, *GPU_ENV])
    proc = hook(node, runc_state(allowed, "big-allow"))
    assert (proc.returncode, proc.stderr) == (0, b"")
    skipped = write_bundle(tmp_path / "skip", filler)
    proc = hook(node, runc_state(skipped, "big-skip"))
    assert (proc.returncode, proc.stderr) == (0, b"")
    decisions = {e["container"]: e["decision"] for e in node.audit_lines()}
    assert decisions == {"big-deny": "deny", "big-allow": "allow"}


# -- nvhook's own config file ----------------------------------------------------------------------
CONFIG_CASES = {
    "bad-toml": "[policy\nmode = ",
    "wrong-key": "[policy]\nmodee = \"enforce\"\n",
    "wrong-value": "[policy]\nmode = \"permissive\"\n",
    "wrong-type": "[inventory]\ntimeout = \"soon\"\n",
    "unknown-table": "[polcy]\nmode = \"enforce\"\n",
    "not-utf8": "[policy]\nmode = \"\xff\"\n",
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_file(node: Node, tmp_path: Path, case: str) -> None:
    node.config.write_bytes(CONFIG_CASES[case].encode("latin-1"))
    bundle = write_bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=all"])
    assert_one_line(hook(node, runc_state(bundle)), CONFIG, str(node.config))


def test_bad_config_file_with_swarm_resource_on_the_fast_path(node: Node, tmp_path: Path) -> None:
    # The fast path reads the file only for swarm-resource; a broken one must not pass silently.
    node.config.write_text('[request]\nswarm-resource = ["X"]\n[policy\n')
    bundle = write_bundle(tmp_path / "b", NO_GPU_ENV)
    assert_one_line(hook(node, runc_state(bundle)), CONFIG, str(node.config))


def test_named_config_file_missing(node: Node, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", GPU_ENV)
    missing = tmp_path / "nope.toml"
    proc = node.run(["--config", str(missing), "prestart"], stdin=runc_state(bundle), timeout=30)
    assert_one_line(proc, CONFIG, str(missing))


# -- the inventory: fail closed ------------------------------------------------------------------
@pytest.mark.parametrize("fail", ["driver_not_loaded", "enum_hang"])
def test_nvml_failure_denies(node: Node, tmp_path: Path, fail: str) -> None:
    node.write_config("[inventory]\ntimeout = 0.5\n")
    bundle = write_bundle(tmp_path / "b", GPU_ENV)
    line = assert_one_line(hook(node, runc_state(bundle), fail=fail), DENIED, "fail closed")
    assert line.startswith("nvhook: denied: NVIDIA_VISIBLE_DEVICES=GPU-")


def test_hung_nvml_init_denies_within_the_bound(node: Node, tmp_path: Path) -> None:
    node.write_config("[inventory]\ntimeout = 0.5\n")
    bundle = write_bundle(tmp_path / "b", GPU_ENV)
    # The fake NVML hangs forever: the hook can only answer at all because its own bound
    # fired, which its message names. No wall-clock window here (the subprocess timeout is a
    # safety net, never what ends it), so a slow machine cannot fail this.
    proc = hook(node, runc_state(bundle), fail="hang")
    assert_one_line(proc, DENIED, "fail closed", "0.5s")
    [entry] = node.audit_lines()
    assert entry["decision"] == "deny"


def test_inventory_file_broken_denies(node: Node, tmp_path: Path) -> None:
    inv = tmp_path / "inventory.json"
    inv.write_text("{broken")
    node.write_config(f'[inventory]\nsource = "file"\nfile = "{inv}"\n')
    bundle = write_bundle(tmp_path / "b", GPU_ENV)
    assert_one_line(hook(node, runc_state(bundle)), DENIED, "fail closed", str(inv))


def test_unreadable_stdin_is_empty(node: Node, tmp_path: Path) -> None:
    write_bundle(tmp_path / "b", GPU_ENV)
    with open(os.devnull, "rb") as devnull:
        import subprocess

        from conftest import NVHOOK

        proc = subprocess.run([str(NVHOOK), "--config", str(node.config), "prestart"],
                              stdin=devnull, capture_output=True, env=node.env(), timeout=30,
                              check=False)
    assert_one_line(proc, STATE, "empty")


# -- text from the container: one line, whatever it holds -----------------------------------------
LINE_BREAKERS = {
    "line-separator": "all\u2028nvhook: allowed",
    "paragraph-separator": "all\u2029nvhook: allowed",
    "carriage-return": "all\rnvhook: allowed",
    "escape-sequence": "all\x1b[2K\x1b[1Gnvhook: allowed",
    "c1-next-line": "all\x85nvhook: allowed",
    "vertical-tab": "all\x0bnvhook: allowed",
    "file-separator": "all\x1cnvhook: allowed",
    "nul": "all\x00nvhook: allowed",
}


@pytest.mark.parametrize("value", LINE_BREAKERS.values(), ids=LINE_BREAKERS.keys())
def test_denial_line_stays_one_line(node: Node, tmp_path: Path, value: str) -> None:
    bundle = write_bundle(tmp_path / "b", [f"NVIDIA_VISIBLE_DEVICES={value}"])
    line = assert_one_line(hook(node, runc_state(bundle)), DENIED, "denied")
    assert all(c.isprintable() for c in line), ascii(line)
    assert "nvhook: allowed" in line  # shown, escaped, inside the one line


def test_surrogate_in_rewrite_mode_leaves_the_file_as_it_was(node: Node, tmp_path: Path) -> None:
    # A rewrite would json.dumps(...).encode() a lone surrogate: UnicodeEncodeError. nvhook
    # refuses the document first, and the file keeps every byte.
    node.write_config('[policy]\nmode = "rewrite"\n')
    bundle = tmp_path / "b"
    bundle.mkdir()
    put(bundle, json.dumps(spec_text(["NVIDIA_VISIBLE_DEVICES=all", "X=\ud800"])).encode())
    before = (bundle / "config.json").read_bytes()
    assert_one_line(hook(node, state(bundle)), SPEC, "surrogate", "process.env[1]")
    assert (bundle / "config.json").read_bytes() == before
    proc = node.run(["--config", str(node.config), "precreate"], stdin=before, timeout=30)
    assert_one_line(proc, SPEC, "surrogate")
    assert proc.stdout == b""
