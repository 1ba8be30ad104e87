"""igrun's public API for gadget and operator authors.

Everything a plugin needs is importable from here; the submodules hold the details.
"""

from igrun.core.bpf.attachpoints import kernel_type_exists, skip_missing, tracepoint_exists
from igrun.core.containers.collection import Container, SelectedContainers
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

__all__ = [
    "PRIORITY_ENRICH",
    "PRIORITY_FILTER",
    "PRIORITY_LIMIT",
    "PRIORITY_OUTPUT",
    "PRIORITY_SORT",
    "Batch",
    "BpfError",
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
    "TypeHint",
    "UsageError",
    "ValueHint",
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
    "skip_missing",
    "tracepoint_exists",
    "uid_field",
]
