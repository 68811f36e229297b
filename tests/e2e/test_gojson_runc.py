"""Go's JSON through real runc: what runc (Go's encoding/json) reads from a config.json with
folded or repeated keys, and nvhook refusing the same document as runc's prestart hook.

Part one is the ground truth for ``nvhook.oci.gojson``: with no hook, the container prints the
``NVIDIA_VISIBLE_DEVICES`` that runc decoded, and it is Go's reading (``all``), not Python's
(``void`` or nothing). Part two puts nvhook in the same document's prestart hooks: the container
never runs, and runc's error carries nvhook's one line naming the key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .harness import BundleFactory, new_container_id, run_runc

pytestmark = pytest.mark.e2e

NVHOOK = Path(sys.executable).with_name("nvhook")
ALL = "NVIDIA_VISIBLE_DEVICES=all"
VOID = "NVIDIA_VISIBLE_DEVICES=void"
PRINT = ["/bin/sh", "-c", 'echo "seen=${NVIDIA_VISIBLE_DEVICES-unset}"']


def _object(obj: dict[str, Any], *extra: str) -> str:
    """``obj`` as JSON with raw ``"key":value`` members appended (a dict cannot repeat keys)."""
    text = json.dumps(obj)
    return text[:-1] + "".join("," + e for e in extra) + "}" if extra else text


def env_then_folded(process: dict[str, Any]) -> tuple[str, str]:
    return _object({**process, "env": [VOID]}, f'"Env":["{ALL}"]'), '"Env"'


def folded_only(process: dict[str, Any]) -> tuple[str, str]:
    rest = {k: v for k, v in process.items() if k != "env"}
    return _object(rest, f'"ENV":["{ALL}"]'), '"ENV"'


def escaped_folded(process: dict[str, Any]) -> tuple[str, str]:
    rest = {k: v for k, v in process.items() if k != "env"}
    return _object(rest, f'"\\u0045nv":["{ALL}"]'), '"Env"'


def process_twice(process: dict[str, Any]) -> tuple[str, str]:
    # Go decodes both copies into one Process: the env of the first survives the second.
    first = {k: v for k, v in process.items() if k != "args"}
    first["env"] = [ALL]
    return json.dumps(first) + ',"process":' + json.dumps({"args": PRINT}), '"process"'


def write_raw(bundle: Path, build: Callable[[dict[str, Any]], tuple[str, str]]) -> str:
    """Rewrite bundle/config.json with the process member(s) ``build`` makes -> shown key."""
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    process = config.pop("process")
    raw, shown = build(process)
    text = json.dumps(config)
    path.write_text(text[:-1] + ',"process":' + raw + "}")
    return shown


# Each builds the raw "process" member(s) of the top-level object from runc's own process.
ALL_CASES: dict[str, Callable[[dict[str, Any]], tuple[str, str]]] = {
    "env-then-Env": env_then_folded,
    "ENV-only": folded_only,
    "Env-spelled-with-an-escape": escaped_folded,
    "process-twice": process_twice,
}


def hook_entry(tmp_path: Path) -> dict[str, Any]:
    config = tmp_path / "nvhook.toml"
    config.write_text(f'version = 1\n[delegate]\npath = ""\n'
                      f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    return {"path": str(NVHOOK), "args": ["nvhook", "--config", str(config), "prestart"],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "timeout": 30}


@pytest.mark.parametrize("build", ALL_CASES.values(), ids=ALL_CASES.keys())
def test_runc_reads_the_folded_key(build: Callable[[dict[str, Any]], tuple[str, str]],
                                   bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory(args=PRINT, env=[VOID])
    write_raw(bundle, build)
    result = run_runc(bundle, new_container_id())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "seen=all" in result.stdout, result.stdout


@pytest.mark.parametrize("build", ALL_CASES.values(), ids=ALL_CASES.keys())
def test_nvhook_in_runc_refuses_it(build: Callable[[dict[str, Any]], tuple[str, str]],
                                   bundle_factory: BundleFactory, tmp_path: Path) -> None:
    bundle = bundle_factory(args=PRINT, env=[VOID], hooks={"prestart": [hook_entry(tmp_path)]})
    shown = write_raw(bundle, build)
    result = run_runc(bundle, new_container_id())
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "seen=" not in output
    # runc quotes the hook's stderr inside its own error (escaping the quotes).
    assert "nvhook: denied: " in output and shown.strip('"') in output, output
