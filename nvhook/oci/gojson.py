"""Read ``config.json`` as Go's ``encoding/json`` reads it, or refuse it.

runc, Podman, containerd and NVIDIA's hook decode the spec with Go, which matches an
object key to a struct field case-insensitively with Unicode simple folding
(``"Process"``, ``"ENV"``, ``"source"`` spelled with U+017F and ``"kernel"`` with the
Kelvin sign all land in a field) and decodes a repeated key into the same struct
again, so the fields of earlier copies survive. Python's ``json`` matches keys
exactly and keeps only the last copy. Rather than imitate Go, every document where
the two could disagree is refused (``DeniedError``: exit status 3, one line naming
the key and where it stands). Engines marshal the spec from Go structs and never
write such keys, so this costs real users nothing.

Refused, in any object at any depth:
- the same key twice (maps included: one rule everywhere is simpler to trust);
- outside a map, two keys that fold to the same name;
- outside a map, a key that folds to an OCI field name (``fields.OCI_FIELDS``)
  without being spelled exactly as it.

Maps (``annotations``, ``linux.sysctl``, ...) are ``map[...]`` in Go: their keys are
not folded, so ``"Foo"`` and ``"foo"`` are two annotations to both readers.

Also refused, with ``SpecError`` (exit status 6), values Python reads but Go does not
read the same way, or Python cannot write back: a lone UTF-16 surrogate (``"\ud800"``,
Go reads U+FFFD), ``NaN``/``Infinity`` (not JSON; Go rejects them), a float that
overflows to infinity, and an integer wider than any Go integer field
(``MAX_INT_DIGITS``; Python itself refuses past 4300 digits with a ValueError).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from nvhook.errors import DeniedError, SpecError
from nvhook.oci.fields import BY_LOWER, OCI_FIELDS

# The widest Go integer, uint64, has 20 digits; keep a margin so the message is the only
# thing such a number ever causes.
MAX_INT_DIGITS = 100
_MAX_INT = 10 ** MAX_INT_DIGITS

# Key paths (list indices left out) whose object is a Go map: keys are not folded.
_MAPS = frozenset({
    ("annotations",),
    ("linux", "sysctl"),
    ("linux", "timeOffsets"),
    ("linux", "netDevices"),
    ("linux", "resources", "rdma"),
    ("linux", "resources", "unified"),
})
# interface{} in Go: every object below decodes into map[string]interface{}.
_ANY = frozenset({("windows", "credentialSpec")})

# A pattern string: re compiles it on first use, for a non-ASCII string only.
_SURROGATE = "[\ud800-\udfff]"
STRUCT, MAP, ANY = 0, 1, 2


class _Pairs(dict):  # type: ignore[type-arg]
    """An object that held a key more than once; ``pairs`` keeps every occurrence."""

    pairs: list[tuple[str, Any]]


class _LongInt:
    """An integer literal too long for any Go field; reported with its place by the walk."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    dup = _Pairs(obj)
    dup.pairs = pairs
    return dup


def parse_int(text: str) -> int | _LongInt:
    if len(text) > MAX_INT_DIGITS:
        return _LongInt(len(text.lstrip("-")))
    return int(text)


def loads(text: str, where: str) -> dict[str, Any] | Any:
    """Parse ``text`` and check it (``check``). ``where`` names the document in errors.

    Raises json.JSONDecodeError and RecursionError as ``json.loads`` does, so the
    caller words those; ``DeniedError``/``SpecError`` for what Go would read otherwise.
    """
    doc = json.loads(text, object_pairs_hook=pairs_hook, parse_int=parse_int,
                     parse_constant=float)
    check(doc, where)
    return doc


def go_fold(name: str) -> str:
    """A fold key: two names Go's ``encoding/json`` matches case-insensitively get the same
    key. Slightly coarser than Go's simple folding (it also folds U+0130/U+0131 to ``i``
    and takes full case folding where simple folding has no entry), which only refuses a
    few more odd documents and never misses a pair Go would match."""
    if name.isascii():
        return name.lower()
    return "".join(_fold_char(c) for c in name)


def _fold_char(c: str) -> str:
    if c.isascii():
        return c.lower()
    folded = c.casefold()
    for mapped in (folded, c.lower(), c.upper()):
        # U+017F long s, U+212A Kelvin sign (Go's two), and the dotted/dotless i.
        if len(mapped) == 1 and mapped.isascii():
            return mapped.lower()
    if c in "\u0130\u0131":
        return "i"
    if len(folded) == 1:
        return folded
    lower = c.lower()
    return lower if len(lower) == 1 else c


def check(doc: Any, where: str) -> None:
    """Refuse what Go's decoder could read otherwise than ``doc`` says (module doc).

    Iterative, so a document nested as deeply as ``json`` accepts cannot overflow here.
    """
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(doc, (), STRUCT)]
    while stack:
        value, path, mode = stack.pop()
        if isinstance(value, dict):
            keys_path = tuple(p for p in path if isinstance(p, str))
            if mode == STRUCT and keys_path in _MAPS:
                mode = MAP
            elif mode != ANY and keys_path in _ANY:
                mode = ANY
            _check_object(value, path, mode, where)
            child_mode = STRUCT if mode == MAP else mode
            for key, item in value.items():
                if isinstance(item, (dict, list)):
                    stack.append((item, (*path, key), child_mode))
                elif not (isinstance(item, str) and item.isascii()):
                    _check_scalar(item, (*path, key), where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, (dict, list)):
                    stack.append((item, (*path, i), mode))
                elif not (isinstance(item, str) and item.isascii()):
                    _check_scalar(item, (*path, i), where)


def _check_object(obj: dict[str, Any], path: tuple[str | int, ...], mode: int,
                  where: str) -> None:
    keys = [k for k, _ in obj.pairs] if isinstance(obj, _Pairs) else list(obj)
    at = show_path(path)
    seen: dict[str, str] = {}
    for key in keys:
        if not key.isascii() and re.search(_SURROGATE, key):
            raise SpecError(f"{where}: {at}: key {_show(key)} holds a lone UTF-16 surrogate, "
                            "which Go reads as U+FFFD")
        if mode != STRUCT:
            if key in seen:
                raise DeniedError(f"{where}: {at}: key {_show(key)} appears twice; nvhook "
                                  "refuses repeated keys")
            seen[key] = key
            continue
        fold = go_fold(key)
        if fold in seen:
            other = seen[fold]
            if other == key:
                raise DeniedError(
                    f"{where}: {at}: key {_show(key)} appears twice; Go's JSON merges both "
                    "copies, Python keeps the last: nvhook refuses repeated keys")
            raise DeniedError(
                f"{where}: {at}: keys {_show(other)} and {_show(key)} are one field to Go's "
                "JSON (it matches keys case-insensitively): nvhook refuses the document")
        seen[fold] = key
        field = BY_LOWER.get(fold)
        if field is not None and key != field:
            raise DeniedError(
                f"{where}: {at}: key {_show(key)} is not spelled {_show(field)}, but Go's JSON "
                f"reads it as {_show(field)} (case-insensitive): nvhook refuses the document")


def _check_scalar(value: Any, path: tuple[str | int, ...], where: str) -> None:
    if isinstance(value, str):
        if not value.isascii() and re.search(_SURROGATE, value):
            raise SpecError(f"{where}: {show_path(path)}: a lone UTF-16 surrogate "
                            f"({_show(value)}), which Go reads as U+FFFD")
    elif isinstance(value, _LongInt):
        raise SpecError(f"{where}: {show_path(path)}: a number with {value.digits} digits; "
                        "no field of the spec holds it")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(f"{where}: {show_path(path)}: NaN or an infinite number, which "
                            "JSON does not have")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _MAX_INT:
        raise SpecError(f"{where}: {show_path(path)}: a number with more than "
                        f"{MAX_INT_DIGITS} digits; no field of the spec holds it")


def show_path(path: tuple[str | int, ...]) -> str:
    """``process.env[3]``; a key that is not a plain name is shown quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in OCI_FIELDS:
            out += f".{part}" if out else part
        else:
            out += f"[{_show(part)}]"
    return out or "top level"


def _show(text: str) -> str:
    """A key or value quoted as JSON would write it: control characters, separators and
    surrogates come out as escapes, so the line stays one line."""
    shown = json.dumps(text)
    return shown if len(shown) <= 80 else shown[:77] + '..."'


def ambiguity(text: str, fields: frozenset[str]) -> str | None:
    """Why Go's decoder could read the JSON ``text`` otherwise than Python's, or None.

    For files nvhook reads but does not own (Docker's ``daemon.json``): the same key twice
    in one object, two keys of one object that Go folds together, or a key that folds to
    one of ``fields`` (the names nvhook reads) without being spelled exactly. Every object
    is treated as a struct, so a map whose keys differ only in case is refused too; no real
    file has one. Raises ``json.JSONDecodeError`` as ``json.loads`` does.
    """
    return ambiguity_of(json.loads(text, object_pairs_hook=pairs_hook), fields)


def ambiguity_of(doc: Any, fields: frozenset[str]) -> str | None:
    """``ambiguity`` for a document already parsed (with ``pairs_hook``, so that repeated
    keys are seen; a document from another parser is checked for folded keys only)."""
    by_fold = {go_fold(f): f for f in fields}
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
            continue
        if not isinstance(value, dict):
            continue
        keys = [k for k, _ in value.pairs] if isinstance(value, _Pairs) else list(value)
        seen: dict[str, str] = {}
        for key in keys:
            fold = go_fold(key)
            at = _json_path((*path, key))
            if fold in seen:
                return (f"{at}: appears twice" if seen[fold] == key else
                        f"{at}: one key to Go's JSON with {_show(seen[fold])}")
            seen[fold] = key
            field = by_fold.get(fold)
            if field is not None and key != field:
                return f"{at}: Go's JSON reads it as {_show(field)}"
        stack.extend((item, (*path, key)) for key, item in value.items())
    return None


def _json_path(path: tuple[str | int, ...]) -> str:
    """``runtimes["nvhook"].path``-style, every key quoted where it is not a plain name."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.replace("-", "").replace("_", "").isalnum() and part.isascii():
            out += f".{part}" if out else part
        else:
            out += f"[{_show(part)}]"
    return out
