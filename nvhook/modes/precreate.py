"""Podman's ``precreate`` stage: the OCI config comes in on stdin, the decided one goes out.

containers/common's ``RuntimeConfigFilter`` hands each precreate hook the
JSON-marshalled spec on stdin and unmarshals the hook's stdout as the new spec, so
stdout must carry one JSON document and nothing else. Like the runtime shim, this
runs before the runtime reads the config, so env edits reach the container; unlike
it, no prestart hook is inserted: Podman adds hooks.d hooks (NVIDIA's included)
itself.
"""

from __future__ import annotations

from pathlib import Path

from nvhook import config as config_mod
from nvhook.decision.evaluate import evaluate
from nvhook.modes import apply
from nvhook.oci import spec as spec_mod

STDIN = Path("<stdin>")


def precreate(raw: bytes, config_option: str | None) -> bytes:
    """-> the bytes to print. A config nvhook leaves alone comes back byte-identical.
    Raises ``DeniedError`` (and the other NvhookErrors) instead of printing anything."""
    doc = spec_mod.parse_document(STDIN, raw)
    if not apply.may_request_gpu(doc, config_option):
        return raw
    config = config_mod.load(config_option)
    spec = spec_mod.from_document(STDIN, doc)
    evaluation = evaluate(spec, config, before_create=True)
    # The config carries no container id; Podman's default hostname is its short id.
    hostname = doc.get("hostname")
    apply.record(config, evaluation, hostname if isinstance(hostname, str) else "", "precreate")
    new = apply.decided_document(evaluation)
    if new == spec.doc:
        return raw
    return spec_mod.encode(STDIN, new) + b"\n"
