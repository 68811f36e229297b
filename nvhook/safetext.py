"""Text from a container, made safe to show on one line.

A denial line and an audit field carry strings the container chose (env values,
annotation values, ids). Control characters, line separators and lone surrogates
could fake a second line in a terminal or a log reader, so each is shown escaped.
"""

from __future__ import annotations

import re

# C0 and DEL, C1, U+2028/U+2029 (line/paragraph separators), lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def one_line(text: str) -> str:
    """``text`` with every unsafe character shown as ``\\xNN`` or ``\\uNNNN``."""
    return _UNSAFE.sub(_escape, text)
