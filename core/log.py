"""structlog, configured once: human-readable lines on stderr (stdout is for data).

Importing structlog costs tens of milliseconds (it brings asyncio along), and most runs write
no log line before their gadget is tracing, or at all. So :func:`get_logger` hands out a
:class:`Logger` that checks the level first and loads structlog with the first line that is
actually written. A run imports it in a thread while its BPF programs load
(:func:`preload`), so that its ``ready`` line does not hold back the first events.

Log lines carry values that come from events and containers (a container's name, a path), so
every string in a line is escaped as the columns output escapes it
(:mod:`igrun.core.output.printable`): a line never steers the terminal, and a line feed in a value
never starts a forged line.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

_level = logging.INFO
_configured = False
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


_WRITING = threading.Lock()


class _LineWriter:
    """structlog's logger: each line to whatever ``sys.stderr`` is at the time of writing
    (tests and tools swap it), in one write under one lock for the process. The runs of a
    config log from threads of their own, and a line written in two parts (its text, then
    its newline, as ``print`` does) could take another thread's line into its middle. What
    reaches it has its values escaped already; any control character left (in a traceback, a
    value's repr) is escaped here, line feeds apart."""

    def msg(self, message: str) -> None:
        from igrun.core.output.printable import printable_lines

        line = printable_lines(message) + "\n"
        with _WRITING:
            sys.stderr.write(line)
            sys.stderr.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_LINE_WRITER = _LineWriter()


def configure(verbose: bool = False) -> None:
    """Send every log line to stderr; ``verbose`` adds debug lines (libbpf's too)."""
    global _level, _configured
    _level = logging.DEBUG if verbose else logging.INFO
    _configured = False  # structlog itself is set up with the first line written


_QUOTED = frozenset(" \t=\r\n\"'")
"""Strings with one of these the renderer shows as their repr, which escapes them itself."""


def _escape_values(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: the event name, and every string value the renderer would
    show as it is, escaped."""
    from igrun.core.output.printable import printable

    out = dict(event)
    for key, value in event.items():
        if isinstance(value, str) and (key == "event" or not _QUOTED.intersection(value)):
            out[key] = printable(value)
    return out


def _structlog() -> Any:
    global _configured
    import structlog

    if not _configured:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                _escape_values,
                structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
                structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0, pad_level=False),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(_level),
            logger_factory=lambda *args: _LINE_WRITER,
            cache_logger_on_first_use=False,
        )
        _configured = True
    return structlog


def preload() -> threading.Thread:
    """Import structlog in a thread of its own, while the kernel verifies a gadget's BPF
    programs (the C calls release the GIL): the ``ready`` line, written once every program
    is attached, then no longer holds back the first events by the import's tens of ms."""
    thread = threading.Thread(target=_import_structlog, name="igrun-log-preload", daemon=True)
    thread.start()
    return thread


def _import_structlog() -> None:
    import structlog  # noqa: F401  (only loaded here)


class Logger:
    """A structlog bound logger that loads structlog only to write a line at or above the
    configured level."""

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context

    def bind(self, **more: Any) -> Logger:
        return Logger({**self._context, **more})

    def _real(self) -> Any:
        return _structlog().get_logger("igrun").bind(**self._context)

    def __getattr__(self, name: str) -> Any:
        """structlog's methods; a level method below the configured level does nothing, so
        structlog stays unloaded."""
        level = _LEVELS.get(name)
        if level is not None and level < _level:
            return _ignore
        return getattr(self._real(), name)


def _ignore(*args: Any, **kw: Any) -> None:
    return None


def get_logger(**context: Any) -> Logger:
    """A logger bound to ``context``; structlog loads with its first line written."""
    return Logger(context)
