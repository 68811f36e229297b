"""Each decision on a GPU request as one syslog line, where operators look first.

What ``syslog(3)`` does, done here so that one code path serves the node and the tests: a
datagram ``<PRI>Mmm dd hh:mm:ss nvhook[pid]: MESSAGE`` sent to a unix datagram socket
(``[audit] syslog-socket``, ``/dev/log``: the socket journald and rsyslog read). Stdlib
``syslog.openlog`` always talks to /dev/log and may block on a full buffer; this never does.

The journal is a copy for the operator, never a gate: every failure becomes at most one
warning, and a node without a syslog daemon (no socket, or no one bound to it) is not a
failure at all, so nothing is said about it (``nvhook doctor`` shows it).
"""

from __future__ import annotations

# _socket, not socket: socket.py turns every constant into an IntEnum member at import,
# about 3 ms of CPU on each GPU decision, and a datagram needs none of its wrapper.
import _socket
import errno
import os
import time
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

from nvhook.safetext import one_line

IDENT = "nvhook"
FACILITY_DAEMON = 3
# RFC 5424 receivers should accept 2048 bytes; rsyslog's default limit is 8 KiB. A
# longer line (a request naming many devices, a long reason) is cut, marked as cut.
MAX_DATAGRAM = 2048
CUT_MARK = b"...[cut]"
# No daemon listening: journald or rsyslog is simply not installed or not running.
ABSENT = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR)


class Severity(IntEnum):
    WARNING = 4
    NOTICE = 5
    INFO = 6


SEVERITY = {"deny": Severity.WARNING, "rewrite": Severity.NOTICE, "allow": Severity.INFO}


def message(entry: Mapping[str, Any]) -> str:
    """The line for one audit entry: the decision first, the reason last (it may hold
    spaces), every container-chosen string escaped onto one line."""
    parts = [str(entry.get("decision", "?")), f"container={entry.get('container') or '-'}"]
    pod = "/".join(str(entry.get(k) or "-") for k in ("namespace", "pod", "pod_container"))
    if pod != "-/-/-":
        parts.append(f"pod={pod}")
    parts += [f"stage={entry.get('stage', '-')}", f"mode={entry.get('mode', '-')}"]
    if entry.get("rule"):
        parts.append(f"rule={entry['rule']}")
    granted = entry.get("granted")
    if isinstance(granted, Sequence) and not isinstance(granted, str):
        parts.append(f"granted={','.join(map(str, granted)) or '-'}")
    parts.append(f"reason={reason(entry)}")
    return one_line(" ".join(parts))


def reason(entry: Mapping[str, Any]) -> str:
    """Why: the decision's reasons, or what an empty kubelet allocation did (a void
    carries no violation), or ``-``."""
    reasons = entry.get("reasons") or []
    if reasons:
        return "; ".join(map(str, reasons))
    allocation = entry.get("allocation")
    if isinstance(allocation, Mapping) and allocation.get("outcome"):
        return str(allocation["outcome"])
    return "-"


def datagram(entry: Mapping[str, Any], now: float | None = None, pid: int | None = None) -> bytes:
    """The bytes ``syslog(3)`` would send for this entry (BSD format, no hostname: the
    local daemon adds it), at most ``MAX_DATAGRAM``."""
    severity = SEVERITY.get(str(entry.get("decision")), Severity.NOTICE)
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime(now))
    head = f"<{FACILITY_DAEMON * 8 + severity}>{stamp} {IDENT}[{pid or os.getpid()}]: "
    data = (head + message(entry)).encode("utf-8", "backslashreplace")
    if len(data) <= MAX_DATAGRAM:
        return data
    # Never end inside a UTF-8 sequence: the decoder drops a partial one at the end.
    cut = data[:MAX_DATAGRAM - len(CUT_MARK)].decode("utf-8", "ignore").encode("utf-8")
    return cut + CUT_MARK


def send(path: str, entry: Mapping[str, Any]) -> str | None:
    """Send the entry's line to the socket at ``path``. -> a warning, or None when sent or
    when no syslog daemon is there. Never blocks (MSG_DONTWAIT) and never raises."""
    try:
        data = datagram(entry)
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
        try:
            s.sendto(data, _socket.MSG_DONTWAIT, path)
        finally:
            s.close()
    except OSError as e:
        if e.errno in ABSENT:
            return None
        if e.errno in (errno.EAGAIN, errno.ENOBUFS):
            return f"syslog {path}: its buffer is full, this decision was not sent"
        return f"syslog {path}: {e.strerror or e}"
    except Exception as e:  # of any type: the journal never fails the container
        return f"syslog {path}: {type(e).__name__}: {e}"
    return None
