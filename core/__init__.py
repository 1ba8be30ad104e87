"""igrun's public API for gadget and operator authors.

Everything a plugin needs is importable from here; the submodules hold the details.
"""

from igrun.core import fields
from igrun.core.attachpoints import kernel_type_exists, skip_missing, tracepoint_exists
from igrun.core.errors import (
    BpfError,
    EnvironmentProblem,
    GadgetNotFound,
    IgrunError,
    ParamError,
    PluginError,
    UsageError,
)
from igrun.core.gadget import (
    Category,
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
)
from igrun.core.params import ParamDesc, Params, TypeHint, ValueHint
from igrun.core.schema import Batch, Column, Event, Field, Kind, Schema

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
    "DefaultSort",
    "EnvironmentProblem",
    "Event",
    "Field",
    "Gadget",
    "GadgetContext",
    "GadgetNotFound",
    "GadgetType",
    "IgrunError",
    "InitClose",
    "Kind",
    "Operator",
    "OutputFormat",
    "OutputFormats",
    "ParamDesc",
    "ParamError",
    "Params",
    "PluginError",
    "ResultRunner",
    "Runner",
    "Schema",
    "TypeHint",
    "UsageError",
    "ValueHint",
    "fields",
    "hookimpl",
    "kernel_type_exists",
    "skip_missing",
    "tracepoint_exists",
]
