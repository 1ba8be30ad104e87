"""igrun's public API for gadget and operator authors.

Everything a plugin needs is importable from here; the submodules hold the details.
Every name is imported when first named (``from igrun.core import BpfTracer``), not with
this package: see :data:`LAZY`.
"""

TYPE_CHECKING = False  # typing's own, without importing typing first thing (type checkers know it)

if TYPE_CHECKING:
    from igrun.core.bpf.attachpoints import kernel_type_exists, skip_missing, tracepoint_exists
    from igrun.core.bpf.build import compile_bpf
    from igrun.core.bpf.objects import BpfObject
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
    from igrun.core.histogram import BpfHistogram
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
    from igrun.core.snapshot import BpfSnapshot
    from igrun.core.top import BpfTop
    from igrun.core.tracer import BpfTracer, MntnsFilter, SharedMaps

LAZY = {
    "kernel_type_exists": "igrun.core.bpf.attachpoints",
    "skip_missing": "igrun.core.bpf.attachpoints",
    "tracepoint_exists": "igrun.core.bpf.attachpoints",
    "Container": "igrun.core.containers.collection",
    "SelectedContainers": "igrun.core.containers.collection",
    "socket_in_netns": "igrun.core.containers.netns",
    "run_in_netns": "igrun.core.containers.netns",
    "BpfError": "igrun.core.errors",
    "EnvironmentProblem": "igrun.core.errors",
    "GadgetNotFound": "igrun.core.errors",
    "IgrunError": "igrun.core.errors",
    "MissingColumn": "igrun.core.errors",
    "ParamError": "igrun.core.errors",
    "PluginError": "igrun.core.errors",
    "RunError": "igrun.core.errors",
    "UsageError": "igrun.core.errors",
    "fields": "igrun.core.events.fields",
    "connection_fields": "igrun.core.events.fields",
    "duration_field": "igrun.core.events.fields",
    "errno_field": "igrun.core.events.fields",
    "flag_fields": "igrun.core.events.fields",
    "format_mode": "igrun.core.events.fields",
    "gid_field": "igrun.core.events.fields",
    "ip_address_field": "igrun.core.events.fields",
    "ip_version_field": "igrun.core.events.fields",
    "mode_fields": "igrun.core.events.fields",
    "process_fields": "igrun.core.events.fields",
    "uid_field": "igrun.core.events.fields",
    "Batch": "igrun.core.events.schema",
    "Column": "igrun.core.events.schema",
    "Event": "igrun.core.events.schema",
    "Field": "igrun.core.events.schema",
    "Kind": "igrun.core.events.schema",
    "Schema": "igrun.core.events.schema",
    "Category": "igrun.core.gadget",
    "ContainerAttacher": "igrun.core.gadget",
    "DefaultSort": "igrun.core.gadget",
    "Gadget": "igrun.core.gadget",
    "GadgetContext": "igrun.core.gadget",
    "GadgetType": "igrun.core.gadget",
    "InitClose": "igrun.core.gadget",
    "OutputFormat": "igrun.core.gadget",
    "OutputFormats": "igrun.core.gadget",
    "ResultRunner": "igrun.core.gadget",
    "Runner": "igrun.core.gadget",
    "hookimpl": "igrun.core.hookspecs",
    "PRIORITY_ENRICH": "igrun.core.operator",
    "PRIORITY_FILTER": "igrun.core.operator",
    "PRIORITY_LIMIT": "igrun.core.operator",
    "PRIORITY_OUTPUT": "igrun.core.operator",
    "PRIORITY_SORT": "igrun.core.operator",
    "Operator": "igrun.core.operator",
    "RunPlan": "igrun.core.operator",
    "ParamDesc": "igrun.core.params",
    "Params": "igrun.core.params",
    "TypeHint": "igrun.core.params",
    "ValueHint": "igrun.core.params",
    "resolve_column": "igrun.core.run.check",
    "GadgetRun": "igrun.core.run.gadgetrun",
    "run_gadget": "igrun.core.run.gadgetrun",
    "MissingDependency": "igrun.core.run.resources",
    "Resources": "igrun.core.run.resources",
    "BpfTracer": "igrun.core.tracer",
    "BpfTop": "igrun.core.top",
    "BpfSnapshot": "igrun.core.snapshot",
    "BpfHistogram": "igrun.core.histogram",
    "MntnsFilter": "igrun.core.tracer",
    "SharedMaps": "igrun.core.tracer",
    "BpfObject": "igrun.core.bpf.objects",
    "compile_bpf": "igrun.core.bpf.build",
}
"""Where each public name lives. Nothing is imported with the package itself: a name's module
is imported when the name is first asked for (``from igrun.core import BpfTracer``), so that
``igrun trace exec`` imports only what its run needs before the programs are attached (numpy,
the C extension and structlog each cost tens of milliseconds)."""


if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all

    def __getattr__(name: str) -> object:
        if name in LAZY:
            import importlib

            module = importlib.import_module(LAZY[name])
            value = module if name == "fields" else getattr(module, name)
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
