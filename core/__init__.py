"""igrun's public API for gadget and operator authors.

Everything a plugin needs is importable from here; the submodules hold the details.
:class:`BpfTracer` (with its resources :class:`MntnsFilter` and :class:`SharedMaps`),
:class:`BpfTop`, :class:`BpfSnapshot`, :class:`BpfHistogram`, :class:`BpfObject` and
:func:`compile_bpf` are imported
when first named (``from igrun.core import BpfTracer``): the C extension loads with them, not
with this package.
"""

from typing import TYPE_CHECKING, Any

from igrun.core.bpf.attachpoints import kernel_type_exists, skip_missing, tracepoint_exists
from igrun.core.containers.collection import Container, SelectedContainers
from igrun.core.containers.netns import run_in_netns, socket_in_netns
from igrun.core.errors import (
    BpfError,
    EnvironmentProblem,
    GadgetNotFound,
    IgrunError,
    MissingColumn,
    ParamError,
    PluginError,
    RunError,
    UsageError,
)
from igrun.core.events import fields
from igrun.core.events.fields import (
    connection_fields,
    duration_field,
    errno_field,
    flag_fields,
    format_mode,
    gid_field,
    ip_address_field,
    ip_version_field,
    mode_fields,
    process_fields,
    uid_field,
)
from igrun.core.events.schema import Batch, Column, Event, Field, Kind, Schema
from igrun.core.gadget import (
    Category,
    ContainerAttacher,
    DefaultSort,
    Gadget,
    GadgetContext,
    GadgetType,
    InitClose,
    OutputFormat,
    OutputFormats,
    ResultRunner,
    Runner,
)
from igrun.core.hookspecs import hookimpl
from igrun.core.operator import (
    PRIORITY_ENRICH,
    PRIORITY_FILTER,
    PRIORITY_LIMIT,
    PRIORITY_OUTPUT,
    PRIORITY_SORT,
    Operator,
    RunPlan,
)
from igrun.core.params import ParamDesc, Params, TypeHint, ValueHint
from igrun.core.run.check import resolve_column
from igrun.core.run.gadgetrun import GadgetRun, run_gadget
from igrun.core.run.resources import MissingDependency, Resources

if TYPE_CHECKING:
    from igrun.core.bpf.build import compile_bpf
    from igrun.core.bpf.objects import BpfObject
    from igrun.core.histogram import BpfHistogram
    from igrun.core.snapshot import BpfSnapshot
    from igrun.core.top import BpfTop
    from igrun.core.tracer import BpfTracer, MntnsFilter, SharedMaps

LAZY = {
    "BpfSnapshot": "igrun.core.snapshot",
    "BpfHistogram": "igrun.core.histogram",
    "BpfTop": "igrun.core.top",
    "BpfTracer": "igrun.core.tracer",
    "MntnsFilter": "igrun.core.tracer",
    "SharedMaps": "igrun.core.tracer",
    "BpfObject": "igrun.core.bpf.objects",
    "compile_bpf": "igrun.core.bpf.build",
}
"""Public names whose modules load the C extension (or a compiler's tooling): imported on
first use."""


if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all

    def __getattr__(name: str) -> Any:
        if name in LAZY:
            import importlib

            value = getattr(importlib.import_module(LAZY[name]), name)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PRIORITY_ENRICH",
    "PRIORITY_FILTER",
    "PRIORITY_LIMIT",
    "PRIORITY_OUTPUT",
    "PRIORITY_SORT",
    "Batch",
    "BpfError",
    "BpfHistogram",
    "BpfObject",
    "BpfSnapshot",
    "BpfTop",
    "BpfTracer",
    "Category",
    "Column",
    "Container",
    "ContainerAttacher",
    "DefaultSort",
    "EnvironmentProblem",
    "Event",
    "Field",
    "Gadget",
    "GadgetContext",
    "GadgetNotFound",
    "GadgetRun",
    "GadgetType",
    "IgrunError",
    "InitClose",
    "Kind",
    "MissingColumn",
    "MissingDependency",
    "MntnsFilter",
    "Operator",
    "OutputFormat",
    "OutputFormats",
    "ParamDesc",
    "ParamError",
    "Params",
    "PluginError",
    "Resources",
    "ResultRunner",
    "RunError",
    "RunPlan",
    "Runner",
    "Schema",
    "SelectedContainers",
    "SharedMaps",
    "TypeHint",
    "UsageError",
    "ValueHint",
    "compile_bpf",
    "connection_fields",
    "duration_field",
    "errno_field",
    "fields",
    "flag_fields",
    "format_mode",
    "gid_field",
    "hookimpl",
    "ip_address_field",
    "ip_version_field",
    "kernel_type_exists",
    "mode_fields",
    "process_fields",
    "resolve_column",
    "run_gadget",
    "run_in_netns",
    "skip_missing",
    "socket_in_netns",
    "tracepoint_exists",
    "uid_field",
]
