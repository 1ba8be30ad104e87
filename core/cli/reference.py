"""The gadget reference (``docs/gadgets.md``), generated from the gadgets themselves.

Everything on the page comes from what runs: the hooks are the section names of the compiled
BPF object, the flags are the gadget's params, the fields are its schema. Regenerate it with
``python -m igrun.core.cli.reference > docs/gadgets.md`` (or ``nox -s docs``); a test fails when
the page and the gadgets disagree, so the reference cannot drift.
"""

from __future__ import annotations

import importlib.resources
import inspect
import sys
from collections.abc import Iterable

from igrun.core.events.schema import Field
from igrun.core.gadget import Gadget
from igrun.core.operator import Operator
from igrun.core.params import ParamDesc

HEADER = """\
# Gadget reference

Generated from the gadgets themselves by `python -m igrun.core.cli.reference`; do not edit by
hand. Every gadget also takes the common flags (`-o`, `-F`, `--sort`, `-m/--max-rows`,
`--interval`, `-t`, `-v`) described in the README, and the container flags
(`-c/--containername`, `--k8s-namespace`, `--k8s-podname`, `--k8s-containername`,
`--k8s-selector`, `--host`, `-r/--runtimes`, `--containerd-namespace`) when its events
carry a mount-namespace id. A gadget's own short flag wins: `trace fsslower -m` is its
minimum latency, as in `ig`, and max-rows is `--max-rows` there.
"""


def hooks(gadget: type[Gadget]) -> list[str]:
    """Where the gadget's BPF programs attach: the section names of its object."""
    name = getattr(gadget, "bpf_object", None)
    if not name:
        return []
    from igrun.core.bpf.objects import BpfObject

    resource = importlib.resources.files(gadget.__module__) / name
    with importlib.resources.as_file(resource) as path, BpfObject.open(path) as obj:
        return sorted({p.section for p in obj.programs.values()})


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _flag(p: ParamDesc) -> str:
    flag = f"`--{p.key}`"
    return f"`-{p.alias}`, {flag}" if p.alias else flag


def _params_table(params: Iterable[ParamDesc]) -> list[str]:
    rows = ["| flag | type | default | description |", "|---|---|---|---|"]
    for p in params:
        default = f"`{p.default}`" if p.default else ""
        rows.append(f"| {_flag(p)} | {p.type_hint.value} | {default} | {_cell(p.description)} |")
    return rows


def _summary(gadget: type[Gadget]) -> str:
    """The first paragraph of the gadget module's docstring, after its title line."""
    doc = inspect.getdoc(sys.modules[gadget.__module__]) or ""
    paragraphs = [p.strip() for p in doc.split("\n\n") if p.strip()]
    return " ".join(paragraphs[1].split()) if len(paragraphs) > 1 else ""


def _json_key(f: Field) -> str:
    if not f.in_json:
        return "`-`"
    return f"`{f.json_key}`" + (" (omitempty)" if f.omit_empty else "")


def gadget_section(gadget: type[Gadget]) -> str:
    lines = [f"## {gadget.full_name()}", "", gadget.description + "."]
    summary = _summary(gadget)
    if summary:
        lines += ["", summary]
    found = hooks(gadget)
    if found:
        lines += ["", "**Hooks:** " + ", ".join(f"`{h}`" for h in found)]
    if gadget.params:
        lines += ["", "**Flags:**", "", *_params_table(gadget.params)]
    lines += [
        "",
        "**Fields** (✓ = a default column; omitempty = left out of JSON when empty, as "
        "`ig` leaves it out):",
        "",
        "| field | JSON key | type | default | description |",
        "|---|---|---|---|---|",
    ]
    for f in gadget.schema.fields:
        shown = "" if f.column.hidden else "✓"
        lines.append(
            f"| `{f.name}` | {_json_key(f)} | {f.kind.value} | {shown} | {_cell(f.description)} |"
        )
    if gadget.examples:
        lines += ["", "**Examples:**", "", "```sh", *gadget.examples, "```"]
    return "\n".join(lines)


def operator_section(operators: Iterable[type[Operator]]) -> str:
    lines = ["## Operators", "", "Flags that operators add to the gadgets they apply to."]
    for op in operators:
        if not op.params:
            continue
        lines += ["", f"### {op.name}", "", op.description + ".", "", *_params_table(op.params)]
        if op.fields:
            lines += ["", "Fields it adds to every event:", "", "| field | JSON key | type |"]
            lines += ["|---|---|---|"]
            lines += [f"| `{f.name}` | {_json_key(f)} | {f.kind.value} |" for f in op.fields]
    return "\n".join(lines)


def render(gadgets: Iterable[type[Gadget]], operators: Iterable[type[Operator]] = ()) -> str:
    ordered = sorted(gadgets, key=lambda g: g.full_name())
    toc = [f"- [{g.full_name()}](#{g.full_name().replace(' ', '-')}): {g.description}"
           for g in ordered]  # fmt: skip
    parts = [HEADER.rstrip(), "\n".join(toc), *(gadget_section(g) for g in ordered)]
    ops = list(operators)
    if ops:
        parts.append(operator_section(sorted(ops, key=lambda o: o.name)))
    return "\n\n".join(parts) + "\n"


def builtin() -> str:
    """The reference of the gadgets and operators igrun itself ships."""
    from igrun.core.plugins import registry

    reg = registry()
    gadgets = [g for g in reg.gadgets().values() if g.__module__.startswith("igrun.")]
    operators = [o for o in reg.operators() if o.__module__.startswith("igrun.")]
    return render(gadgets, operators)


if __name__ == "__main__":
    sys.stdout.write(builtin())
