"""Text from events and containers made harmless for a terminal.

Exec args, paths, container names, images and annotations are chosen by whoever runs the
traced program or the container. Written raw, a carriage return or an escape sequence in them
erases or rewrites the rows around it (a forged row that even looks like uid 0), and a
Unicode bidi control reorders what is read. The columns output and the log lines therefore
show such characters as visible escapes, one scheme everywhere:

- ``\\t``, ``\\n``, ``\\r`` for tab, line feed and carriage return, and ``\\\\`` for a
  backslash itself (so an escape in the output always means an escaped character);
- ``\\xNN`` for every other C0 control (U+0000 to U+001F, ESC is ``\\x1b``) and DEL;
- ``\\uNNNN`` for the C1 controls (U+0080 to U+009F), the line and paragraph separators
  (U+2028, U+2029), the bidi controls (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to
  U+2069) and lone surrogates (U+D800 to U+DFFF, from JSON that declares them).

The escaped text is what is shown, so column widths count it. JSON output needs none of this:
its encoder escapes control characters already.
"""

from __future__ import annotations

import re

_RANGES = (
    (0x00, 0x1F), (0x7F, 0x9F), (0x61C, 0x61C), (0x200E, 0x200F), (0x2028, 0x202E),
    (0x2066, 0x2069), (0xD800, 0xDFFF),
)  # fmt: skip
"""The characters escaped besides the backslash, as ranges of code points."""
_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(code: int) -> str:
    named = _NAMED.get(chr(code))
    if named is not None:
        return named
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def _class(ranges: tuple[tuple[int, int], ...], extra: str = "") -> re.Pattern[str]:
    """A regex character class of ``ranges`` (plus ``extra``)."""
    parts = "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in ranges)
    return re.compile(f"[{extra}{parts}]")


_UNSAFE = _class(_RANGES, "\\\\")
_LINE_UNSAFE = _class(((0x00, 0x08), (0x0B, 0x1F), *_RANGES[1:]))
"""In lines of escaped values: not the backslash, tab or line feed."""


def _substitute(match: re.Match[str]) -> str:
    return _escape(ord(match.group()))


def printable(text: str) -> str:
    """``text`` with every character that could steer a terminal escaped (see the module)."""
    if text.isascii():  # the common case, decided without the regex (a few times faster)
        if text.isprintable() and "\\" not in text:
            return text
    elif _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_substitute, text)


def printable_lines(text: str) -> str:
    """Lines already made of escaped values (a rendered log line, a traceback): their own
    line feeds and tabs stay, backslashes are not escaped again, any other control is."""
    if _LINE_UNSAFE.search(text) is None:
        return text
    return _LINE_UNSAFE.sub(_substitute, text)
