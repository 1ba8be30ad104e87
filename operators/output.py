"""``-o``: the last operator, which writes every batch to stdout in one call.

Formats are ``ig``'s: ``columns`` (UPPERCASE headers, declared widths, ``…`` on overflow,
scaled to the terminal only on a TTY), ``columns=a,b`` (exactly these), ``columns=+x,-y``
(the default ones plus x, minus y), ``json`` (one object per line), ``jsonpretty`` and ``yaml``.
``columns`` and ``json`` lines are written by C for the whole batch at once
(:mod:`igrun.core.output.columns`, :mod:`igrun.core.output.jsonlines`).

With ``--interval`` (and for gadgets that report every interval) each window is written whole
when it ends, as ``ig``'s interval gadgets print it: in JSON one array per window on one line
(``[]`` for a window without events), so ``jq -c '.[]'`` or a line reader sees where windows
end; in columns a block that starts with a delimiter line holding the window's end time
(:func:`window_line`), then the header and the rows. A top gadget on a terminal redraws the
screen with each interval instead (:data:`CLEAR_SCREEN`), as ``top`` does.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from igrun.core.errors import ParamError, output_failed
from igrun.core.events.schema import Batch, Field, Schema
from igrun.core.gadget import (
    Gadget,
    GadgetContext,
    OutputFormat,
    OutputFormats,
    ResultRunner,
    gadget_output_formats,
)
from igrun.core.hookspecs import hookimpl
from igrun.core.operator import PRIORITY_OUTPUT, Operator
from igrun.core.output.columns import ColumnLines, fit
from igrun.core.output.jsonlines import JsonLines, dumps, ig_order, record_order
from igrun.core.output.printable import printable
from igrun.core.params import ParamDesc, Params
from igrun.core.run.resources import Resources
from igrun.operators._common import by_interval, resolve_column, windowed

if TYPE_CHECKING:
    from igrun.core.operator import RunPlan

FORMATS = ("columns", "json", "jsonpretty", "yaml", "none")
NORMAL = "normal"
"""``type`` of every event record, as ``ig`` marks its events (``ready``, ``warn`` ... are
the others)."""


def parse_output(
    spec: str, schema: Schema, extra: Mapping[str, OutputFormat] | None = None
) -> tuple[str, list[Field]]:
    """``"columns=+uid,-ppid"`` -> ("columns", [the fields to show, in order]); ``extra`` are
    the gadget's own formats (:class:`~igrun.core.gadget.OutputFormats`), which win over a
    built-in one of the same name."""
    fmt, equals, selection = spec.partition("=")
    fmt = fmt.strip()
    extra = extra or {}
    if fmt in extra:
        if equals:
            raise ParamError(f'invalid output "{spec}": only columns takes a column list')
        return fmt, list(schema.fields)
    if fmt not in FORMATS:
        known = [*FORMATS, *(name for name in extra if name not in FORMATS)]
        raise ParamError(f'invalid output "{spec}": use one of {", ".join(known)}')
    if fmt != "columns":
        if equals:
            raise ParamError(f'invalid output "{spec}": only columns takes a column list')
        return fmt, list(schema.fields)
    if not equals:
        return fmt, schema.default_columns()
    parts = [p.strip() for p in selection.split(",")]
    what = f'output "{spec}"'
    if not all(parts) or not all(p.lstrip("+-") for p in parts):
        raise ParamError(f"invalid {what}: an empty column name (e.g. columns=pid,comm)")
    if all(p[0] in "+-" for p in parts):
        fields = schema.default_columns()
        for p in parts:
            f = resolve_column(p[1:], schema, what)
            if p[0] == "+" and f not in fields:
                fields.append(f)
            elif p[0] == "-" and f in fields:
                fields.remove(f)
        return fmt, fields
    if any(p[0] in "+-" for p in parts):
        raise ParamError(f"invalid {what}: either name the columns or add/remove with +/-")
    return fmt, [resolve_column(p, schema, what) for p in parts]


def header_widths(fields: list[Field]) -> list[int]:
    """Declared widths, widened to the header where it is longer: a header is never cut
    (``OPERATION``, not ``OPERAT…``) unless the terminal has no room for it."""
    return [max(f.width, len(f.name)) for f in fields]


def scale_widths(fields: list[Field], available: int) -> list[int]:
    """:func:`header_widths`, shrunk in proportion to fit ``available``: not below a header
    while that fits, then not below min_width."""
    widths = header_widths(fields)
    excess = sum(widths) + len(widths) - 1 - available
    if excess <= 0:
        return widths
    flexible = [i for i, f in enumerate(fields) if not f.column.fixed]
    least = [max(f.column.min_width, 1) for f in fields]
    headers = [max(low, len(f.name)) for low, f in zip(least, fields, strict=True)]
    scaled, left = _shrink(widths, headers, flexible, excess)
    if left > 0:
        scaled, _ = _shrink(widths, least, flexible, excess)
    return scaled


def _shrink(
    widths: list[int], floors: list[int], flexible: list[int], excess: int
) -> tuple[list[int], int]:
    """``excess`` columns taken from the ``flexible`` widths in proportion to them, none below
    its floor; what could not be taken is returned too."""
    out = list(widths)
    while excess > 0:
        room = [i for i in flexible if out[i] > floors[i]]
        if not room:
            break
        spare = sum(out[i] for i in room)
        taken = 0
        for i in room:
            cut = min(out[i] - floors[i], max(1, round(excess * out[i] / spare)), excess - taken)
            out[i] -= cut
            taken += cut
        excess -= taken
    return out, excess


CLEAR_SCREEN = "\x1b[H\x1b[2J"
"""Cursor home, then erase the screen: how a top gadget redraws its interval on a terminal."""


def window_line(wall_ns: int, tag: str | None = None) -> str:
    """The delimiter that opens a window's block in columns: ``--- 2026-01-02T03:04:05.678Z ---``
    (UTC, when the window ended), with the gadget's name when several share the output."""
    seconds, ns = divmod(wall_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns // 1_000_000:03d}Z"
    return f"--- {stamp} {tag} ---\n" if tag else f"--- {stamp} ---\n"


@dataclass(frozen=True)
class OutputLock:
    """Held while a whole batch is written: the runs of one process share one (a resource
    of the process, see :meth:`OutputOperator.share`), so their batches never mix."""

    lock: threading.Lock = field(default_factory=threading.Lock)


class OutputOperator(Operator):
    name = "output"
    description = "print events"
    priority = PRIORITY_OUTPUT
    params = (
        ParamDesc(
            "output",
            alias="o",
            default="columns",
            description="columns, json, jsonpretty, yaml, columns=a,b (these columns), "
            "columns=+x,-y (the default ones plus x, minus y), none (print no events), or a "
            "format of the gadget's own (listed below when it has some)",
        ),
    )

    def __init__(self, ctx: GadgetContext, params: Params, stream: TextIO | None = None):
        super().__init__(ctx, params)
        self.stream: TextIO = stream or sys.stdout
        self.format = "columns"
        self.columns: list[Field] = []
        self.widths: list[int] = []
        self.windowed = windowed(ctx)
        self.intervals = by_interval(ctx)
        """Each window is written whole at its end: one JSON array, or one columns block."""
        self._window: list[Batch] = []
        self.redraw = False
        """A top gadget on a terminal: each interval replaces the last on the screen, as
        ``top`` does (never in a pipe or a file, which keep every interval)."""
        self._periodic = ctx.gadget.type.is_periodic and ctx.tag is None
        self._type = None if ctx.gadget.type.is_periodic else NORMAL
        """``ig`` writes ``"type":"normal"`` on events, never on a top gadget's rows (its
        stats structs carry no event type)."""
        self._header_due = True
        self._started = False
        self._json: JsonLines | None = None
        self._lines: ColumnLines | None = None
        self.tag: str | None = ctx.tag
        """Set when several gadgets share stdout: every record and line says whose it is."""
        shared = ctx.resources.get(OutputLock)
        self._lock: Any = shared.lock if shared is not None else threading.Lock()
        """Shared when several gadgets write to one stdout (whole batches, never mixed)."""
        self._failed = False
        """A write failed (reported once, by the error that ends the run): write no more."""
        self.gadget_formats = gadget_output_formats(ctx.gadget)[0]
        self.custom: OutputFormat | None = None
        """The gadget's own format ``-o`` chose (a report, a flame graph), if any."""
        self._result_gadget = issubclass(ctx.gadget, ResultRunner)
        """The gadget returns its whole result at the end (:meth:`result`) instead of rows."""
        self._schema: Schema | None = None

    @classmethod
    def can_operate_on(cls, gadget: type[Gadget]) -> bool:
        """Not for a gadget with its own ``--output`` (a file it writes its result to, as
        ``ig``'s advisors have): it prints what it makes itself."""
        return all(p.key != "output" for p in gadget.params)

    @classmethod
    def check(cls, plan: RunPlan, params: Params, schema: Schema) -> None:
        parse_output(params.raw("output"), schema, gadget_output_formats(plan.gadget)[0])

    @classmethod
    def share(cls, process: Resources) -> None:
        process.provide(OutputLock(), by=cls.name)

    def pre_run(self, schema: Schema) -> None:
        live = self.ctx.resources.get(self.ctx.gadget)
        if isinstance(live, OutputFormats):  # the run's own instance: formats that read its
            self.gadget_formats = dict(live.output_formats()[0])  # state at the end (pprof)
        self.format, self.columns = parse_output(
            self.values.raw("output"), schema, self.gadget_formats
        )
        self._schema = schema
        self.custom = self.gadget_formats.get(self.format)
        if self.custom is not None:
            return
        self.widths = header_widths(self.columns)
        if self.format == "json":
            self._json = JsonLines(self.columns, self.tag, self._type, self._order())
        if self.format == "columns" and self.stream.isatty():
            self.widths = scale_widths(self.columns, shutil.get_terminal_size().columns)
            self.redraw = self._periodic
        if self.format == "columns":
            self._lines = ColumnLines(self.columns, self.widths, self.tag)

    def _header(self) -> str:
        names = [printable(f.name.upper()) for f in self.columns]  # a .bpf.o names its own
        cells = [fit(n, w, f) for n, w, f in zip(names, self.widths, self.columns, strict=True)]
        cells[-1] = names[-1] if self.columns[-1].column.align == "left" else cells[-1]
        prefix = "\n" if self._started else ""
        tag = f"{'GADGET':<22} " if self.tag else ""
        return prefix + tag + " ".join(cells).rstrip() + "\n"

    def _columns(self, batch: Batch) -> None:
        assert self._lines is not None
        header = self._header() if self._header_due else ""
        self._header_due = False
        self.write_bytes(self._lines.encode(batch), header)

    def _records(self, records: list[dict[str, Any]]) -> str:
        if self.format == "json":
            return "".join(dumps(r) + "\n" for r in records)
        if self.format == "jsonpretty":
            return "".join(json.dumps(r, indent=2) + "\n" for r in records)
        import yaml

        return "".join("---\n" + yaml.safe_dump(r, sort_keys=False) for r in records)

    def write(self, text: str) -> None:
        if self._failed:
            return
        with self._lock:
            try:
                self.stream.write(text)
                self.stream.flush()
            except OSError as exc:
                self._failed = True
                raise output_failed(exc) from None
        self._started = True

    def write_bytes(self, data: memoryview, header: str = "") -> None:
        """UTF-8 text straight to the stream's bytes, skipping a decode and re-encode;
        ``header`` goes first, in the same write (no other gadget's lines between)."""
        binary = getattr(self.stream, "buffer", None)
        if binary is None:
            self.write(header + bytes(data).decode())
            return
        if self._failed:
            return
        with self._lock:
            try:
                if header:
                    self.stream.write(header)
                self.stream.flush()
                binary.write(data)
                binary.flush()
            except OSError as exc:
                self._failed = True
                raise output_failed(exc) from None
        self._started = True

    def process(self, batch: Batch) -> Batch:
        if self.format == "none":  # a metrics exporter: the events go to Prometheus only
            return batch
        if self.custom is not None:
            if self.custom.requires_combined_result:
                self._window.append(batch)
            else:
                self.write_bytes(memoryview(self.custom.transform(batch)))
            return batch
        if self.intervals:
            self._window.append(batch)
            return batch
        if self.format == "columns":
            self._columns(batch)
        elif self._json is not None:
            self.write_bytes(self._json.encode(batch))
        else:
            lead = {"gadget": self.tag} if self.tag else {}
            fields, keys = record_order(self.columns, self._type, self._order())
            fixed = {"type": self._type} if self._type else {}
            rows = batch.to_dicts(fields, omit_empty=True)
            records = [
                {k: r[k] for k in keys if k in r} for r in ({**fixed, **row} for row in rows)
            ]
            self.write(self._records([{**lead, **r} for r in records]))
        return batch

    def _order(self) -> tuple[str, ...]:
        """The order of JSON keys: ``ig``'s for the gadget, igrun's additions after them."""
        return ig_order(self.ctx.gadget.full_name())

    def flush(self) -> Batch | None:
        if self.format == "none":
            return None
        if self.custom is not None:
            if self.custom.requires_combined_result and not self._result_gadget:
                self._write_combined(self.custom)
            return None
        if self.intervals:
            self._write_window()
        elif self.windowed:
            self._header_due = True
        return None

    def _write_combined(self, fmt: OutputFormat) -> None:
        """The window that ends now (the whole run of a profile gadget), in the gadget's
        format: one transform of every row it held, written in one call."""
        held, self._window = self._window, []
        assert self._schema is not None
        batch = Batch.concat(held) if held else self._schema.empty()
        self.write_bytes(memoryview(fmt.transform(batch)))

    def result(self, data: bytes) -> bool:
        """A :class:`~igrun.core.gadget.ResultRunner`'s whole result: in the gadget's format
        when ``-o`` chose one, else as it came (``jsonpretty`` re-indents a JSON result)."""
        if self.format == "none":
            return True
        if self.custom is not None:
            data = self.custom.transform(data)
        elif self.format == "jsonpretty":
            with contextlib.suppress(ValueError):  # not JSON: as it came
                data = (json.dumps(json.loads(data), indent=2) + "\n").encode()
        if data and not data.endswith(b"\n"):
            data += b"\n"
        self.write_bytes(memoryview(data))
        return True

    def _write_window(self) -> None:
        """The window that ends now, whole: a JSON array (``[]`` when empty), or a columns
        block (delimiter line, header, rows)."""
        held, self._window = self._window, []
        batch = Batch.concat(held) if held else None
        if self.format == "columns":
            assert self._lines is not None
            lead = CLEAR_SCREEN if self.redraw else "\n" if self._started else ""
            opening = lead + window_line(time.time_ns(), self.tag)
            header = opening + self._header().lstrip("\n")
            rows = self._lines.encode(batch) if batch is not None else memoryview(b"")
            self.write_bytes(rows, header)
        elif self._json is not None:
            lines = bytes(self._json.encode(batch)) if batch is not None else b""
            objects = lines.rstrip(b"\n").split(b"\n") if lines else []
            self.write_bytes(memoryview(b"[" + b",".join(objects) + b"]\n"))
        else:
            fields, keys = record_order(self.columns, None, self._order())
            dicts = batch.to_dicts(fields, omit_empty=True) if batch is not None else []
            records = [{k: r[k] for k in keys if k in r} for r in dicts]
            if self.format == "jsonpretty":
                self.write(json.dumps(records, indent=2) + "\n")
            else:
                import yaml

                self.write("---\n" + yaml.safe_dump(records, sort_keys=False))

    def warn(self, message: str) -> None:
        """A ``{"type": "warn"}`` record in the stream, as ``ig`` writes one, except between
        windows: written whole at each interval, they are one array each and nothing else,
        so there the warning is only the line the runtime logs on stderr."""
        if self.format not in ("columns", "none") and not self.intervals and self.custom is None:
            record = {"gadget": self.tag} if self.tag else {}
            self.write(self._records([{**record, "type": "warn", "message": message}]))

    def started(self) -> None:
        """The header of a stream as soon as every program is attached, as ``ig`` and
        libbpf-tools print theirs: a quiet run is seen to be tracing, not to hang. Windows
        (``--interval``, sorting gadgets) keep a header per window."""
        if self.format == "columns" and self.columns and not self.windowed and self._header_due:
            if self._result_gadget:
                return  # its result has no columns: no header before it
            self._header_due = False
            self.write(self._header())

    def post_run(self) -> None:
        if self._result_gadget:
            return  # a result has no columns: no header after it
        if self.columns and self.format == "columns" and not self._started and self._header_due:
            self.write(self._header())  # an empty run still says what it would have shown


@hookimpl
def igrun_register_operators(register: Callable[[type[Operator]], None]) -> None:
    register(OutputOperator)
