"""The OCI state a runtime writes to a hook's stdin, validated against our schema."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from nvhook.errors import DeniedError, SpecError, StateError
from nvhook.oci import gojson
from nvhook.oci.scan import MAX_STATE_BYTES, state_looks_valid

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "oci-state.json"


@dataclass(frozen=True)
class State:
    """The OCI state the runtime writes on the hook's stdin."""

    id: str
    bundle: Path
    status: str
    oci_version: str
    pid: int | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = field(default=b"", repr=False)  # handed on to the delegate as it came


@dataclass(frozen=True)
class Preloaded:
    """What the hook's fast path already parsed, so nothing is read or parsed twice."""

    state_doc: dict[str, Any]
    spec_doc: dict[str, Any]


def decode(raw: bytes) -> dict[str, Any]:
    """Bytes -> JSON object, with one clear line for every way it can be wrong."""
    if not raw.strip():
        raise StateError("stdin: empty, expected the OCI state JSON from the runtime")
    if len(raw) > MAX_STATE_BYTES:
        # Readers stop one byte past the limit, so the size itself is unknown here.
        raise StateError(f"stdin: larger than {MAX_STATE_BYTES} bytes, more than an OCI state "
                         "can be")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=gojson.pairs_hook,
                         parse_int=gojson.parse_int, parse_constant=float)
    except UnicodeDecodeError as e:
        raise StateError(f"stdin: not UTF-8 at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise StateError(f"stdin: not valid JSON: {e.msg} (line {e.lineno} column {e.colno})") \
            from None
    except RecursionError:
        raise StateError("stdin: JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise StateError(f"stdin: expected a JSON object, got {type(doc).__name__}")
    check(doc)
    return doc


def check(doc: dict[str, Any]) -> None:
    """NVIDIA's hook reads the state with Go's JSON too (``bundle``, ``pid``): refuse what
    it could read otherwise (``gojson.check``), and what Python cannot handle (a lone
    surrogate in the bundle path cannot even be opened), as a state error."""
    try:
        gojson.check(doc, "stdin")
    except (DeniedError, SpecError) as e:
        raise StateError(e.message) from None


def bundle_of(doc: Mapping[str, Any]) -> str | None:
    """The bundle path; very old runc sent ``bundlePath``."""
    bundle = doc.get("bundle", doc.get("bundlePath"))
    return bundle if isinstance(bundle, str) else None


def parse(raw: bytes) -> State:
    doc = decode(raw)
    validate(doc)
    return State(
        id=doc["id"],
        bundle=Path(bundle_of(doc) or ""),
        status=doc["status"],
        oci_version=doc["ociVersion"],
        pid=doc.get("pid"),
        annotations=doc.get("annotations", {}),
        raw=raw,
    )


def validate(doc: dict[str, Any]) -> None:
    if state_looks_valid(doc):
        return  # the schema accepts it too; jsonschema (~40 ms to import) only words errors
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or "state"
    if error.validator == "anyOf" and not error.absolute_path:
        raise StateError("stdin: state has no 'bundle' (or legacy 'bundlePath')")
    if error.validator == "pattern" and error.absolute_path and error.absolute_path[-1] in (
        "bundle", "bundlePath"
    ):
        raise StateError(f"stdin: {where}: {error.instance!r} is not an absolute path")
    raise StateError(f"stdin: {where}: {error.message}")


@cache
def _validator() -> Any:
    import jsonschema

    try:
        schema = json.loads(SCHEMA_PATH.read_bytes())
    except (OSError, ValueError) as e:
        raise StateError(f"{SCHEMA_PATH}: cannot load the state schema: {e}") from None
    return jsonschema.Draft202012Validator(schema)
