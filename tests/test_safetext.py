from __future__ import annotations

import pytest

from nvhook.safetext import one_line


@pytest.mark.parametrize(("text", "want"), [
    pytest.param("GPU-0 all", "GPU-0 all", id="plain text unchanged"),
    pytest.param("a\nnvhook: allowed", "a\\x0anvhook: allowed", id="newline escaped"),
    pytest.param("a\rb", "a\\x0db", id="carriage return"),
    pytest.param("\x1b[2K", "\\x1b[2K", id="ESC"),
    pytest.param("a\x85b", "a\\x85b", id="C1 NEL"),
    pytest.param("a\u2028b\u2029", "a\\u2028b\\u2029", id="line and paragraph separators"),
    pytest.param("a\ud800b", "a\\ud800b", id="lone surrogate"),
    pytest.param("grüße, 名前", "grüße, 名前", id="printable unicode kept"),
    pytest.param("a\x7fb", "a\\x7fb", id="DEL (ASCII, not printable)"),
    pytest.param("a\tb", "a\\x09b", id="tab (ASCII, not printable)"),
    pytest.param(" ~", " ~", id="space and tilde: the ends of printable ASCII"),
    pytest.param("", "", id="empty"),
])
def test_one_line(text: str, want: str) -> None:
    assert one_line(text) == want
    assert len(one_line(text).splitlines()) <= 1
    one_line(text).encode("utf-8")  # always encodable


def test_every_ascii_and_latin1_character() -> None:
    """Printable ASCII skips the regex: every code point below U+0100 is still shown as its
    escape exactly when it is C0, DEL or C1."""
    for code in range(0x100):
        unsafe = code < 0x20 or 0x7F <= code <= 0x9F
        assert one_line(f"a{chr(code)}b") == (f"a\\x{code:02x}b" if unsafe else f"a{chr(code)}b")
