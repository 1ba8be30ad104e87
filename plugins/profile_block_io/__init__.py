"""``profile block-io``: the latency distribution of block I/O, issue to completion.

``ig`` v0.25's gadget (``pkg/gadgets/profile/block-io``, after libbpf-tools' ``biolatency``):
the kernel counts each completed request in a log2 bucket of microseconds; when the run ends
(``-t``, Ctrl-C or SIGTERM) the histogram is printed once, as ``ig``'s ``report`` (the
default) or as ``ig``'s JSON object (``-o json``: ``unit`` and ``intervals`` of ``count``,
``start``, ``end``). The programs hook the raw block tracepoints (``block_rq_insert``,
``block_rq_issue``, ``block_rq_complete``), as ``ig``'s do: no kprobe.

``ig`` has no flags for this gadget; igrun adds ``biolatency``'s: ``--milliseconds``,
``--per-disk`` (one histogram per disk, each titled ``disk = NAME``), ``--queued`` and
``--disk NAME``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from igrun.core import (
    Batch,
    Category,
    Column,
    Field,
    GadgetContext,
    Kind,
    OutputFormat,
    ParamDesc,
    ParamError,
    Schema,
    TypeHint,
    hookimpl,
)
from igrun.core.events.fields import per_distinct
from igrun.core.histogram import (
    BpfHistogram,
    bucket_fields,
    groups,
    intervals,
    json_line,
    report,
    unit_field,
)

PARAM_MILLISECONDS = "milliseconds"
PARAM_PER_DISK = "per-disk"
PARAM_QUEUED = "queued"
PARAM_DISK = "disk"

MINORBITS = 20
"""The kernel's own ``dev_t`` split (``MKDEV`` in ``biolatency.h``), not the user-space one."""
SYS_BLOCK = Path("/sys/class/block")


def kernel_dev(major: int, minor: int) -> int:
    return (major << MINORBITS) | minor


def disk_dev(name: str, root: Path = SYS_BLOCK) -> int:
    """The kernel ``dev_t`` of the whole disk ``name`` (``sda``, ``nvme0n1``, ``loop3``)."""
    try:
        text = (root / name / "dev").read_text().strip()
    except OSError:
        raise ParamError(
            f"--{PARAM_DISK}: no block device {name!r} (see /sys/class/block)"
        ) from None
    major, _, minor = text.partition(":")
    return kernel_dev(int(major), int(minor))


def check_disk(name: str) -> None:
    """A disk this host has, named as in /sys/class/block: refused before anything loads."""
    if not name:
        return
    if "/" in name or name in (".", ".."):
        raise ValueError(f"{name!r} is a disk name (sda, loop0), not a path")
    if not (SYS_BLOCK / name / "dev").exists():
        raise ValueError(f"no block device {name!r} (see /sys/class/block)")


def disk_name(dev: int) -> str:
    """``loop3`` for the kernel ``dev_t`` of /dev/loop3; ``major:minor`` when the device is
    gone; empty for 0 (every disk in one histogram)."""
    if dev == 0:
        return ""
    major, minor = dev >> MINORBITS, dev & ((1 << MINORBITS) - 1)
    try:
        return os.path.basename(os.readlink(f"/sys/dev/block/{major}:{minor}"))
    except OSError:
        return f"{major}:{minor}"


def _disks(batch: Batch) -> Any:
    return per_distinct(batch.member("dev"), disk_name)


SCHEMA = Schema(
    [
        Field(
            "disk",
            Kind.STR,
            "the disk (with --per-disk; empty: every disk)",
            decode=_disks,
            omit_empty=True,
            column=Column(width=12),
        ),
        *bucket_fields(),
        unit_field(),
    ],
)


def _title(values: dict[str, Any]) -> str:
    return f"disk = {values['disk']}"


def _report(batch: Batch) -> bytes:
    per_disk = bool(len(batch)) and bool(np.asarray(batch.member("per_disk")).any())
    return report(batch, ["disk"], _title if per_disk else None)


def _json(batch: Batch) -> bytes:
    """``ig``'s JSON result, ``{"unit": "µs", "intervals": [...]}``; with --per-disk one such
    object per disk, each with its ``disk``, one per line."""
    if not len(batch):
        return json_line({"unit": "µs"})
    units = np.asarray(batch["unit"]).tolist()
    out = []
    per_disk = bool(np.asarray(batch.member("per_disk")).any())
    for values, index in groups(batch, ["disk"]):
        record: dict[str, Any] = {"disk": values["disk"]} if per_disk else {}
        record.update(unit=units[int(index[0])], intervals=intervals(batch, index))
        out.append(json_line(record))
    return b"".join(out)


class ProfileBlockIo(BpfHistogram):
    name = "block-io"
    category = Category.PROFILE
    description = "Analyze block I/O performance through a latency distribution"
    bpf_object = "biolatency.bpf.o"
    schema = SCHEMA
    examples = (
        "igrun profile block-io -t 10s",
        "igrun profile block-io --per-disk -o json",
    )
    params = (
        ParamDesc(
            PARAM_MILLISECONDS,
            alias="m",
            default="false",
            type_hint=TypeHint.BOOL,
            description="show histogram in milliseconds instead of microseconds",
        ),
        ParamDesc(
            PARAM_PER_DISK,
            alias="D",
            default="false",
            type_hint=TypeHint.BOOL,
            description="one histogram per disk",
        ),
        ParamDesc(
            PARAM_QUEUED,
            alias="Q",
            default="false",
            type_hint=TypeHint.BOOL,
            description="include the time a request waits in the I/O scheduler's queue",
        ),
        ParamDesc(
            PARAM_DISK,
            description="only the I/O of this disk (sda, nvme0n1, loop0)",
            check=check_disk,
        ),
    )
    _formats: ClassVar[dict[str, OutputFormat]] = {
        "report": OutputFormat(
            "report",
            "A histogram showing the I/O time distribution",
            _report,
            requires_combined_result=True,
        ),
        "json": OutputFormat(
            "json",
            "ig's JSON: unit and intervals (count, start, end)",
            _json,
            requires_combined_result=True,
        ),
    }

    @classmethod
    def output_formats(cls) -> tuple[dict[str, OutputFormat], str]:
        return dict(cls._formats), "report"

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        p = ctx.gadget_params
        disk = p.get(PARAM_DISK)
        values: dict[str, int | bool | bytes] = {
            "targ_ms": bool(p.get(PARAM_MILLISECONDS)),
            "targ_per_disk": bool(p.get(PARAM_PER_DISK)),
            "targ_queued": bool(p.get(PARAM_QUEUED)),
        }
        if disk:
            values.update(filter_dev=True, targ_dev=disk_dev(disk))
        return values

    def row_constants(self, ctx: GadgetContext) -> dict[str, int]:
        p = ctx.gadget_params
        return {
            "ms": int(bool(p.get(PARAM_MILLISECONDS))),
            "per_disk": int(bool(p.get(PARAM_PER_DISK))),
        }


__all__ = ["ProfileBlockIo", "disk_dev", "disk_name"]


@hookimpl
def igrun_register_gadgets(register: Callable[[type[Any]], None]) -> None:
    register(ProfileBlockIo)
