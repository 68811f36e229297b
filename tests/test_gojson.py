"""Go's JSON is the ground truth: nvhook reads config.json as Go's encoding/json does, or
refuses it (DENIED, one line naming the key and where it stands).

The hostile documents are the table in ``hostile.GO_KEY_CASES``. Here they go through the
real console script, on the fast path's side too (a document Python reads as "no GPU" must
not be skipped), plus Go's folding rules, the field table, and a property test against a
model of Go's decoder: a document nvhook accepts reads the same to Go and to nvhook.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Node, runc_state
from hostile import CONFIG, GO_KEY_ACCEPTED, GO_KEY_CASES, GoKeyCase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvhook.errors import DeniedError, NvhookError, SpecError
from nvhook.oci import gojson
from nvhook.oci.fields import OCI_FIELDS
from nvhook.oci.spec import from_document, parse_document

DENIED = 3


# -- Go's folding ----------------------------------------------------------------------------------
# Classes of Go's unicode.SimpleFold (what encoding/json matches keys by).
FOLD_CLASSES = {
    "ascii": ("env", "Env", "ENV", "eNv"),
    "long-s": ("s", "S", "\u017f"),
    "kelvin": ("k", "K", "\u212a"),
    "angstrom": ("\u00e5", "\u00c5", "\u212b"),
    "micro": ("\u00b5", "\u03bc", "\u039c"),
    "sigma": ("\u03c3", "\u03c2", "\u03a3"),
    "sharp-s": ("\u00df", "\u1e9e"),
    "dz-digraph": ("\u01c4", "\u01c5", "\u01c6"),
    "greek-iota-subscript": ("\u1f80", "\u1f88"),
    "cherokee": ("\u13a0", "\uab70"),
}
# Pairs Go keeps apart: simple folding never maps one letter to two.
FOLD_APART = {
    "sharp-s-vs-ss": ("\u00df", "ss"),
    "ligature-ff-vs-ff": ("\ufb00", "ff"),
    "s-vs-z": ("s", "z"),
}


@pytest.mark.parametrize("members", FOLD_CLASSES.values(), ids=FOLD_CLASSES.keys())
def test_go_fold_classes(members: tuple[str, ...]) -> None:
    assert len({gojson.go_fold(m) for m in members}) == 1, [gojson.go_fold(m) for m in members]


@pytest.mark.parametrize("pair", FOLD_APART.values(), ids=FOLD_APART.keys())
def test_go_fold_keeps_apart(pair: tuple[str, str]) -> None:
    assert gojson.go_fold(pair[0]) != gojson.go_fold(pair[1])


def test_no_two_oci_fields_fold_together() -> None:
    # A key equal to a field name is then that field wherever it stands (fields.py).
    folds = [gojson.go_fold(n) for n in OCI_FIELDS]
    assert len(set(folds)) == len(folds)


# -- the table, through the real hook --------------------------------------------------------------
def hook(node: Node, bundle: Path) -> Any:
    return node.run(["--config", str(node.config), "prestart"], stdin=runc_state(bundle),
                    timeout=30)


def bundle_with(tmp_path: Path, text: str) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(text, encoding="utf-8")
    return bundle


@pytest.mark.parametrize("case", GO_KEY_CASES, ids=lambda c: c.id)
def test_hook_denies_go_key_documents(node: Node, tmp_path: Path, case: GoKeyCase) -> None:
    proc = hook(node, bundle_with(tmp_path, case.text))
    err = proc.stderr.decode()
    assert proc.returncode == DENIED, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nvhook: denied: "), err
    assert "config.json" in lines[0] and case.shown in lines[0], err
    assert node.audit_lines() == []


NO_GPU_FOLDED = {
    # Python reads no GPU channel at all in each: the fast path would have exited 0.
    "Process-only": '{"ociVersion":"1.0.2","Process":{"Env":["NVIDIA_VISIBLE_DEVICES=all"]}}',
    "Env-only": '{"ociVersion":"1.0.2","process":{"Env":["NVIDIA_VISIBLE_DEVICES=all"]}}',
    "env-merged-from-first-copy": '{"process":{"env":["NVIDIA_VISIBLE_DEVICES=all"]},'
                                  '"process":{"args":["sh"]}}',
    "long-s-in-mounts": '{"mount\\u017f":[{"destination":"/var/run/nvidia-container-devices/all",'
                        '"source":"/dev/null"}]}',
    "kelvin-twin-of-unknown": '{"process":{"env":["A=1"]},"x\\u212a":1,"xk":2}',
    "lowercase-twins-unknown": '{"process":{"env":["A=1"]},"abc":1,"ABC":2}',
}


@pytest.mark.parametrize("text", NO_GPU_FOLDED.values(), ids=NO_GPU_FOLDED.keys())
def test_fast_path_never_skips_a_folded_document(node: Node, tmp_path: Path, text: str) -> None:
    proc = hook(node, bundle_with(tmp_path, text))
    assert proc.returncode == DENIED, proc.stderr
    assert proc.stderr.decode().startswith("nvhook: denied: "), proc.stderr


@pytest.mark.parametrize("case", GO_KEY_ACCEPTED, ids=lambda c: c.id)
def test_hook_takes_documents_go_reads_alike(node: Node, tmp_path: Path,
                                             case: GoKeyCase) -> None:
    proc = hook(node, bundle_with(tmp_path, case.text))
    assert (proc.returncode, proc.stderr) == (0, b"")


def test_explain_refuses_too(node: Node, tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, GO_KEY_CASES[0].text)
    proc = node.run(["--config", str(node.config), "explain", "--bundle", str(bundle)])
    assert proc.returncode == DENIED, proc.stderr
    assert proc.stderr.decode().startswith("nvhook: denied: "), proc.stderr


def test_precreate_refuses_too(node: Node) -> None:
    text = next(c.text for c in GO_KEY_CASES if c.id == "process-twice-env-survives")
    proc = node.run(["--config", str(node.config), "precreate"], stdin=text.encode())
    assert proc.returncode == DENIED, proc.stderr
    assert proc.stdout == b""


@pytest.mark.parametrize("subcommand", ["create", "run", "restore"])
def test_runtime_shim_refuses_too(node: Node, tmp_path: Path, subcommand: str) -> None:
    runtime = tmp_path / "rt" / "fakerunc"
    runtime.parent.mkdir()
    runtime.write_text('#!/bin/sh\ntouch "$(dirname "$0")/ran"\n')
    runtime.chmod(0o755)
    node.write_config(f'[runtime]\npath = "{runtime}"\n')
    text = next(c.text for c in GO_KEY_CASES if c.id == "env-then-Env")
    bundle = bundle_with(tmp_path, text)
    proc = node.run(["--config", str(node.config), "runtime", subcommand, "--bundle",
                     str(bundle), "c1"])
    assert proc.returncode == DENIED, proc.stderr
    assert proc.stderr.decode().startswith("nvhook: denied: "), proc.stderr
    assert not (runtime.parent / "ran").exists()
    assert (bundle / "config.json").read_text() == text


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
def test_runc_default_spec_is_accepted(tmp_path: Path) -> None:
    # What a real engine writes must never be refused: runc's own template, every field set.
    subprocess.run(["runc", "spec", "--bundle", str(tmp_path)], check=True)
    doc = parse_document(tmp_path / "config.json", (tmp_path / "config.json").read_bytes())
    assert doc["process"]["args"] == ["sh"]


# -- property: nvhook refuses, or reads what Go reads ---------------------------------------------
# A model of Go's encoding/json for the fields nvhook judges. A key lands in a struct field when it
# equals the field's name ignoring ASCII case, with U+017F for s and U+212A for k (the only
# non-ASCII runes that fold onto ASCII letters); a repeated struct is decoded into the same value,
# so fields of earlier copies survive; a slice or string is replaced; a map keeps earlier keys.
STRUCTS: dict[str, dict[str, Any]] = {
    "spec": {"process": "process", "mounts": ["mount"], "annotations": {"map": str},
             "linux": "linux", "root": "root"},
    "process": {"env": [str], "capabilities": "caps"},
    "caps": {"bounding": [str]},
    "mount": {"source": str, "destination": str},
    "linux": {"devices": ["device"]},
    "device": {"path": str},
    "root": {"path": str},
}


def go_key_matches(key: str, field: str) -> bool:
    if len(key) != len(field):
        return False
    for k, f in zip(key, field, strict=True):
        if k.lower() == f.lower() and k.isascii():
            continue
        if (k == "\u017f" and f in "sS") or (k == "\u212a" and f in "kK"):
            continue
        return False
    return True


def go_decode(value: Any, kind: Any, into: Any = None) -> Any:
    """``value`` is json.loads(..., object_pairs_hook=list) output."""
    if isinstance(kind, str):  # a struct
        out = dict(into) if isinstance(into, dict) else {}
        if not isinstance(value, list):
            return into
        for key, item in value:
            fields = STRUCTS[kind]
            name = key if key in fields else next(
                (f for f in fields if go_key_matches(key, f)), None)
            if name is not None:
                out[name] = go_decode(item, fields[name], out.get(name))
        return out
    if isinstance(kind, dict):  # a map
        out = dict(into) if isinstance(into, dict) else {}
        for key, item in value if isinstance(value, list) else ():
            out[key] = item
        return out
    if isinstance(kind, list):
        return [go_decode(v, kind[0]) for v in value] if isinstance(value, list) else None
    return value


def go_reading(text: str) -> tuple[Any, ...]:
    spec = go_decode(json.loads(text, object_pairs_hook=list), "spec")
    process = spec.get("process") or {}
    linux = spec.get("linux") or {}
    return (
        tuple(process.get("env") or ()),
        frozenset((process.get("capabilities") or {}).get("bounding") or ()),
        tuple((m.get("source", ""), m.get("destination", "")) for m in spec.get("mounts") or ()),
        spec.get("annotations") or {},
        tuple(d.get("path", "") for d in linux.get("devices") or ()),
        (spec.get("root") or {}).get("path"),
    )


def nvhook_reading(doc: dict[str, Any]) -> tuple[Any, ...]:
    spec = from_document(CONFIG, doc)
    return (spec.env, spec.bounding_caps, tuple((m.source, m.destination) for m in spec.mounts),
            dict(spec.annotations), spec.device_paths, spec.root_path)


ENV = st.sampled_from(["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=void",
                       "NVIDIA_VISIBLE_DEVICES=0", "PATH=/bin", "CUDA_VERSION=12"])
CAPS = st.lists(st.sampled_from(["CAP_SYS_ADMIN", "CAP_CHOWN"]), max_size=2)


def spelled(key: str) -> st.SearchStrategy[str]:
    """The key as written, or a spelling Go folds onto it."""
    def variant(flips: list[bool]) -> str:
        out = []
        for c, flip in zip(key, flips, strict=False):
            if flip and c == "s":
                out.append("\u017f")
            elif flip and c == "k":
                out.append("\u212a")
            else:
                out.append(c.swapcase() if flip else c)
        return "".join(out) + key[len(flips):]
    return st.one_of(st.just(key), st.lists(st.booleans(), min_size=len(key),
                                            max_size=len(key)).map(variant))


def obj(fields: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """A JSON object: each field zero to two times, each time spelled some way, in any order."""
    def entry(name: str, value: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
        one = st.tuples(spelled(name), value).map(
            lambda kv: json.dumps(kv[0], ensure_ascii=st_escape(kv[0])) + ":" + kv[1])
        return st.lists(one, min_size=0, max_size=2)
    parts = st.tuples(*(entry(n, v) for n, v in fields.items()))
    return st.tuples(parts, st.randoms(use_true_random=False)).map(_shuffled_object)


def st_escape(key: str) -> bool:
    return len(key) % 2 == 0  # half the non-ASCII keys go as \\u escapes, half raw


def _shuffled_object(args: tuple[tuple[list[str], ...], Any]) -> str:
    parts, rnd = args
    items = [p for group in parts for p in group]
    rnd.shuffle(items)
    return "{" + ",".join(items) + "}"


def arr(item: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(item, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]")


def jstr(s: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return s.map(json.dumps)


DOCUMENT = obj({
    "process": obj({"env": arr(jstr(ENV)),
                    "capabilities": obj({"bounding": CAPS.map(json.dumps)})}),
    "mounts": arr(obj({"source": jstr(st.just("/dev/null")),
                       "destination": jstr(st.sampled_from(
                           ["/var/run/nvidia-container-devices/all", "/data"]))})),
    "annotations": obj({"cdi.k8s.io/x": jstr(st.sampled_from(["nvidia.com/gpu=all", "a"]))}),
    "linux": obj({"devices": arr(obj({"path": jstr(st.sampled_from(
        ["/dev/nvidia0", "/dev/null"]))}))}),
    "root": obj({"path": jstr(st.just("rootfs"))}),
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENT)
def test_nvhook_refuses_or_reads_what_go_reads(text: str) -> None:
    try:
        doc = parse_document(CONFIG, text.encode())
    except DeniedError:
        return  # refused: the container does not start, nothing is granted
    except NvhookError as e:  # pragma: no cover - would be a wrong status
        raise AssertionError(f"refused with the wrong status: {e}") from None
    assert nvhook_reading(doc) == go_reading(text), text


def test_property_generator_makes_both_kinds() -> None:
    # The property above must see accepted documents too, or it tests nothing.
    seen = {"accepted": 0, "refused": 0}

    # derandomize: the same 200 examples every run, so the count cannot flake.
    @settings(max_examples=200, deadline=None, database=None, derandomize=True)
    @given(DOCUMENT)
    def probe(text: str) -> None:
        try:
            parse_document(CONFIG, text.encode())
            seen["accepted"] += 1
        except DeniedError:
            seen["refused"] += 1

    probe()
    assert seen["accepted"] >= 5 and seen["refused"] >= 5, seen


# -- odd values: SPEC, never an internal error -------------------------------------------------
ODD_VALUES = {
    "lone-high-surrogate-in-env": '{"process":{"env":["NVIDIA_VISIBLE_DEVICES=\\ud800"]}}',
    "lone-low-surrogate-in-key": '{"annotations":{"a\\udc00":"x"}}',
    "nan": '{"process":{"user":{"uid":NaN}}}',
    "infinity": '{"process":{"user":{"uid":-Infinity}}}',
    "float-overflows": '{"process":{"user":{"uid":1e400}}}',
    "int-101-digits": '{"process":{"user":{"uid":' + "9" * 101 + "}}}",
    "int-5000-digits": '{"process":{"user":{"uid":' + "9" * 5000 + "}}}",
}


@pytest.mark.parametrize("text", ODD_VALUES.values(), ids=ODD_VALUES.keys())
def test_odd_values_are_spec_errors(text: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_document(CONFIG, text.encode())
    assert "process" in e.value.message or "annotations" in e.value.message, e.value.message
