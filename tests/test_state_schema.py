"""The stdlib mirror of the state schema (``entry.state_looks_valid``), which lets
``state.validate`` skip jsonschema, never accepts what the schema refuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvhook.errors import StateError
from nvhook.oci import state
from nvhook.oci.scan import state_looks_valid

RUNC = {"ociVersion": "1.0.2-dev", "id": "c", "status": "creating", "pid": 1, "bundle": "/b"}


def schema_accepts(doc: Any) -> bool:
    return not any(state._validator().iter_errors(doc))


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(RUNC, id="runc"),
        pytest.param({"ociVersion": "1.0", "id": "c", "status": "created", "bundle": "/b",
                      "root": "/run/crun", "annotations": {"a": "b"}}, id="crun"),
        pytest.param({"ociVersion": "1", "id": "c", "status": "s", "bundlePath": "/b"},
                     id="legacy bundlePath"),
    ],
)
def test_common_states_skip_jsonschema(doc: dict[str, Any]) -> None:
    assert state_looks_valid(doc)
    assert schema_accepts(doc)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"pid": True}, id="bool pid"),
        pytest.param({"pid": 1.0}, id="float pid"),
        pytest.param({"pid": -1}, id="negative pid"),
        pytest.param({"id": ""}, id="empty id"),
        pytest.param({"bundle": "rel"}, id="relative bundle"),
        pytest.param({"bundlePath": 3}, id="bad bundlePath"),
        pytest.param({"annotations": None}, id="null annotations"),
        pytest.param({"annotations": {"a": 1}}, id="non-string annotation"),
    ],
)
def test_anything_unusual_goes_to_the_schema(change: dict[str, Any]) -> None:
    doc = {**RUNC, **change}
    assert not state_looks_valid(doc)
    if not schema_accepts(doc):
        with pytest.raises(StateError):
            state.validate(doc)


def test_missing_bundle_is_worded_by_the_schema() -> None:
    doc = {k: v for k, v in RUNC.items() if k != "bundle"}
    with pytest.raises(StateError, match="no 'bundle'"):
        state.validate(doc)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2),
                    st.sampled_from(["", "/", "/b", "b", "x/"]))
values = st.one_of(scalars, st.dictionaries(st.sampled_from(["a", "b"]), scalars, max_size=2))
keys = st.sampled_from(["ociVersion", "id", "status", "pid", "bundle", "bundlePath",
                        "annotations", "root"])


@given(st.dictionaries(keys, values))
def test_fast_accept_implies_schema_accept(doc: dict[str, Any]) -> None:
    if state_looks_valid(doc):
        assert schema_accepts(doc), doc


@given(st.fixed_dictionaries({}, optional={k: values for k in
                                           ("pid", "bundlePath", "annotations", "root")}))
def test_fast_accept_implies_schema_accept_near_valid(extra: dict[str, Any]) -> None:
    doc = {**RUNC, **extra}
    if state_looks_valid(doc):
        assert schema_accepts(doc), doc
