"""`nvhook log`: the audit log read for an operator, filtered, one entry at a time.

The log grows without bound (logrotate is the operator's), so it is streamed: one line
in memory at a time, and a line past ``MAX_LINE`` bytes is skipped in chunks, never held.
A line that is not an audit entry (a torn write from a full disk, a hand edit) is one
warning naming its line number, and the rest is still read.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import IO, Any

from nvhook import journal
from nvhook.errors import LogError, UsageError
from nvhook.safetext import one_line

MAX_LINE = 1 << 20  # an audit line is ~1 KiB; one past this is not an audit line
STDIN = "-"
RELATIVE = re.compile(r"(\d+)([smhd])")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
HEX_ID = re.compile(r"[0-9a-f]{64}")


class Kind(StrEnum):
    """What ``--decision`` matches: the audit line's decision, or ``void`` (a rewrite whose
    kubelet allocation was empty, so the request was replaced by void)."""

    ALLOW = "allow"
    REWRITE = "rewrite"
    DENY = "deny"
    VOID = "void"
    RELEASE = "release"


@dataclass(frozen=True)
class Filter:
    pod: tuple[str, str] | None = None  # (namespace, pod)
    kinds: frozenset[Kind] = frozenset()  # empty: every decision
    since: datetime | None = None

    def matches(self, entry: Entry) -> bool:
        if self.since is not None and entry.time < self.since:
            return False
        if self.kinds and not self.kinds & entry.kinds:
            return False
        return self.pod is None or self.pod == (entry.doc.get("namespace"), entry.doc.get("pod"))


@dataclass(frozen=True)
class Entry:
    number: int  # the line number in the log, from 1
    time: datetime
    doc: dict[str, Any]

    @property
    def kinds(self) -> frozenset[Kind]:
        kinds = set()
        decision = self.doc.get("decision")
        if decision in Kind.__members__.values():
            kinds.add(Kind(decision))
        allocation = self.doc.get("allocation")
        if isinstance(allocation, dict) and str(allocation.get("outcome", "")).startswith("void"):
            kinds.add(Kind.VOID)
        return frozenset(kinds)


@dataclass(frozen=True)
class Malformed:
    number: int
    problem: str


def parse_pod(text: str) -> tuple[str, str]:
    namespace, _, pod = text.partition("/")
    if not namespace or not pod or "/" in pod:
        raise UsageError(f"log: --pod {text!r}: expected NAMESPACE/POD (see nvhook log --help)")
    return namespace, pod


def parse_kinds(values: Iterable[str]) -> frozenset[Kind]:
    kinds = set()
    for value in values:
        try:
            kinds.add(Kind(value))
        except ValueError:
            known = ", ".join(k.value for k in Kind)
            raise UsageError(f"log: --decision {value!r}: expected one of {known} "
                             "(see nvhook log --help)") from None
    return frozenset(kinds)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO time (no zone: the machine's local time) or a span back from now: ``90s``,
    ``10m``, ``2h``, ``1d``."""
    m = RELATIVE.fullmatch(text.strip())
    if m:
        now = now or datetime.now(UTC)
        return now - timedelta(**{UNITS[m.group(2)]: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"log: --since {text!r}: expected an ISO time "
                         "(2024-05-01T12:00, 2024-05-01 12:00:00+02:00) or 10m, 2h, 1d "
                         "(see nvhook log --help)") from None
    return when if when.tzinfo else when.astimezone()


def open_log(path: str) -> IO[bytes]:
    """The log to stream: a regular file, a pipe, or stdin (``-``). Raises ``LogError``."""
    if path == STDIN:
        return sys.stdin.buffer
    try:
        # O_NONBLOCK: a FIFO with no writer must not hang the open; cleared below.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise LogError(f"{path}: no audit log there (no GPU decision logged yet, or "
                       "audit.path points elsewhere)") from None
    except OSError as e:
        raise LogError(f"{path}: cannot read the audit log: {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        os.close(fd)
        raise LogError(f"{path}: not a regular file or a pipe")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes), or None for a line past ``MAX_LINE``: it is skipped in
    chunks, so a log with no newline at all never fills memory."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, line


def entries(stream: IO[bytes]) -> Iterator[Entry | Malformed]:
    for number, line in lines(stream):
        if line is None:
            yield Malformed(number, f"longer than {MAX_LINE} bytes")
            continue
        if not line.strip():
            continue
        yield entry(number, line)


def entry(number: int, line: bytes) -> Entry | Malformed:
    try:
        doc = json.loads(line)
    except UnicodeDecodeError:
        return Malformed(number, "not UTF-8")
    except ValueError as e:
        return Malformed(number, f"not JSON ({e})")
    if not isinstance(doc, dict):
        return Malformed(number, "not a JSON object")
    if not isinstance(doc.get("decision"), str):
        return Malformed(number, "no decision")
    try:
        when = datetime.fromisoformat(doc["time"])
    except (KeyError, TypeError, ValueError):
        return Malformed(number, "no valid time")
    return Entry(number, when if when.tzinfo else when.replace(tzinfo=UTC), doc)


def select(stream: IO[bytes], filt: Filter) -> Iterator[Entry | Malformed]:
    """The matching entries, and every malformed line, in log order."""
    for item in entries(stream):
        if isinstance(item, Malformed) or filt.matches(item):
            yield item


# -- rendering --------------------------------------------------------------------------

HEADER = ("TIME", "DECISION", "CONTAINER", "POD", "REASON")
WIDTHS = (20, 8, 12, 24)  # streamed, so fixed: a longer value pushes the row, never cut


def row(entry: Entry) -> str:
    doc = entry.doc
    container = str(doc.get("container") or "-")
    if HEX_ID.fullmatch(container):
        container = container[:12]  # as docker ps and podman ps show it
    pod = "/".join(str(doc.get(k) or "-") for k in ("namespace", "pod", "pod_container"))
    decision = "void" if Kind.VOID in entry.kinds else str(doc["decision"])
    if doc["decision"] == Kind.RELEASE:
        released = (doc.get("leases") or {}).get("released") or []
        why = f"released {','.join(map(str, released)) or '-'}"
    else:
        why = journal.reason(doc)
        granted = doc.get("granted")
        if why == "-" and isinstance(granted, list) and granted:
            why = f"granted {','.join(map(str, granted))}"
    cells = (entry.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), decision, container,
             pod if pod != "-/-/-" else "-", why)
    return one_line(format_row(cells))


def format_row(cells: tuple[str, ...]) -> str:
    padded = [c.ljust(w) for c, w in zip(cells, WIDTHS, strict=False)]
    return "  ".join([*padded, *cells[len(WIDTHS):]])


def as_json(entry: Entry) -> str:
    """The entry as the log has it: one compact JSON line (ASCII: a U+2028 a hand-edited
    log may carry cannot break the line in a terminal)."""
    return json.dumps(entry.doc, separators=(",", ":"))


def warning(path: str, bad: Malformed) -> str:
    where = "<stdin>" if path == STDIN else path
    return one_line(f"nvhook: warning: {where}:{bad.number}: {bad.problem}, skipped")
