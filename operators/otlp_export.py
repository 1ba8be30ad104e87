"""The OTLP log exporter, counting what the collector accepted and what failed (imported only
when ``--otlp-endpoint`` is given: it needs the optional OpenTelemetry SDK)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import ReadableLogRecord


class Counts:
    """What happened to the log records, for the warning at the end and the metric."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queued_dropped = 0
        """Events of batches the sending thread could not take (its queue full)."""
        self.emitted = 0
        """Log records handed to the SDK."""
        self.exported = 0
        """Log records the collector accepted."""
        self.failed = 0
        """Log records in requests that failed (collector down, refused, timed out)."""

    def not_exported(self) -> int:
        with self.lock:
            return self.queued_dropped + self.emitted - self.exported


class CountingExporter(LogRecordExporter):
    """Wraps the real exporter: records of a request that succeeded are ``exported``, those
    of one that failed (after the exporter's own retries) ``failed``."""

    def __init__(self, inner: LogRecordExporter, counts: Counts) -> None:
        self.inner = inner
        self.counts = counts

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            result = self.inner.export(batch)
        except Exception:
            result = LogRecordExportResult.FAILURE
        with self.counts.lock:
            if result == LogRecordExportResult.SUCCESS:
                self.counts.exported += len(batch)
            else:
                self.counts.failed += len(batch)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)
