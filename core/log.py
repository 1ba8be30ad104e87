"""structlog, configured once: human-readable lines on stderr (stdout is for data)."""

from __future__ import annotations

import logging
import sys
from typing import Any

_configured = False


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of writing (tests and tools swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(verbose: bool = False) -> None:
    """Send every log line to stderr; ``verbose`` adds debug lines (libbpf's too)."""
    global _configured
    import structlog

    level = logging.DEBUG if verbose else logging.INFO
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0, pad_level=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(**context: Any) -> Any:
    """A bound logger; configures defaults on first use."""
    import structlog

    if not _configured:
        configure()
    return structlog.get_logger("igrun").bind(**context)
