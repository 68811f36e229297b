"""Text from a container, made safe to show on one line.

A denial line and an audit field carry strings the container chose (env values,
annotation values, ids). Control characters, line separators and lone surrogates
could fake a second line in a terminal or a log reader, so each is shown escaped.
"""

from __future__ import annotations

import re

# C0 and DEL, C1, U+2028/U+2029 (line/paragraph separators), lone surrogates. A pattern
# string: re compiles it (and caches it) the first time a string needs it.
_UNSAFE = "[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]"


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def one_line(text: str) -> str:
    """``text`` with every unsafe character shown as ``\\xNN`` or ``\\uNNNN``."""
    # Printable ASCII, almost every string the hook shows, holds none of them (in ASCII,
    # str.isprintable is false exactly for C0 and DEL): no regex, no compile on the GPU path.
    if text.isascii() and text.isprintable():
        return text
    return re.sub(_UNSAFE, _escape, text)
