"""``trace oomkill``: every process the OOM killer kills, and which task made it do so.

Hooks the ``oom/mark_victim`` tracepoint, a stable ABI that needs no kprobe: the kernel marks
each victim exactly once, from the context of the task whose allocation failed. So the current
task is the trigger (``tpid``, ``tcomm``, ``tuid``, ``tgid``, and the mount namespace the filter
uses) and the tracepoint's record is the victim (``kpid``, ``kcomm``, ``pages``).

Where this differs from Inspektor Gadget, which uses a kprobe on ``oom_kill_process``:

- ``pages``: ig reports ``oc->totalpages`` (what the OOM domain had); no tracepoint carries
  that, so here it is what the kill frees: the victim's resident pages (anonymous, file and
  shared memory) when it was chosen.
- the mount namespace (container filter and enrichment) is the trigger's, since the tracepoint
  does not give the victim's task; ig uses the victim's. In a memory cgroup OOM (a container's
  limit) both are in the container; in a host-wide OOM they may not be.
- a task that is already exiting when it runs out of memory is marked (given the reserves)
  rather than killed: it is reported too, as its own trigger.
- on older kernels the tracepoint records only the victim's pid: ``kcomm`` is then empty and
  ``pages`` 0.
"""

from __future__ import annotations

import mmap
from typing import Any, ClassVar

from igrun.core import (
    Category,
    Column,
    Field,
    GadgetContext,
    Kind,
    Schema,
    fields,
    hookimpl,
    process_fields,
)
from igrun.core.tracer import BpfTracer

_PID = Column(min_width=7, align="right")

PAGE_SHIFT = mmap.PAGESIZE.bit_length() - 1
"""The tracepoint reports memory in kB; the BPF program turns it into pages of this size."""


class TraceOomkill(BpfTracer):
    name = "oomkill"
    category = Category.TRACE
    description = "Trace when OOM killer is triggered and kills a process"
    bpf_object = "oomkill.bpf.o"
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace oomkill",
        "igrun trace oomkill --host -o json",
        "igrun trace oomkill -o columns=+tuid,+tgid,+timestamp",
    )
    schema = Schema(
        [
            fields.timestamp("when the victim was chosen"),
            *process_fields("mntns", member="trigger", about="of the triggering task"),
            Field(
                "kpid", Kind.UINT, "process id of the killed process", column=_PID, omit_empty=True
            ),
            Field(
                "kcomm",
                Kind.STR,
                "command name of the killed process",
                column=Column(max_width=16),
                omit_empty=True,
            ),
            Field(
                "pages",
                Kind.UINT,
                "resident pages of the killed process when it was chosen",
                column=Column(width=6, align="right"),
                omit_empty=True,
            ),
            *process_fields(
                "pid uid gid comm",
                member="trigger",
                prefix="t",
                about="of the task whose allocation triggered the kill",
            ),
        ],
        struct="event",
    )

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        # No params (as in Inspektor Gadget); only the page size, which BPF cannot read.
        return {"page_shift": PAGE_SHIFT}


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceOomkill)
