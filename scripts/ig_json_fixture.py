"""Write tests/fixtures/ig_v0.25_json.json from Inspektor Gadget's own sources.

The fixture is what ``ig`` v0.25 writes with ``-o json``: Go's encoding/json of each trace
gadget's ``Event`` struct, of each top gadget's row struct and of each snapshot gadget's
``Event`` struct. This reads those structs (and the common ones they embed, in
``pkg/types/types.go``) at a tag of a clone of github.com/inspektor-gadget/inspektor-gadget,
and writes every key, dotted for nesting, with its Go type, its ``omitempty`` flag and the
file its tag is in, and each gadget's keys in the order Go writes them (struct field order,
an embedded struct's fields in place of the embedding field). ``--order-module`` writes the
same orders as the Python module igrun's JSON writer follows::

    git clone https://github.com/inspektor-gadget/inspektor-gadget ig
    python scripts/ig_json_fixture.py ig > tests/fixtures/ig_v0.25_json.json
    python scripts/ig_json_fixture.py --order-module ig > core/output/igorder.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

TAG = "v0.25.0"
COMMON = "pkg/types/types.go"
GADGETS = [
    "exec",
    "open",
    "signal",
    "mount",
    "bind",
    "capabilities",
    "oomkill",
    "fsslower",
    "tcpconnect",
    "tcp",
    "tcpdrop",
    "tcpretrans",
    "network",
    "dns",
    "sni",
]
TYPES_FILES = {"dns": "dns.go", "sni": "snisnoop.go"}
"""Trace gadgets whose ``Event`` is not in ``types/types.go``."""
TOP = {"tcp": "Stats", "block-io": "Stats", "ebpf": "Stats", "file": "Stats"}
"""Top gadgets: their struct (one row of an interval's array)."""
SNAPSHOTS = {"process": "process-collector.go", "socket": "socket-collector.go"}
"""Snapshot gadgets, by the file of their ``Event`` struct in ``types/``."""
OTHERS = {
    "audit seccomp": ("pkg/gadgets/audit/seccomp/types/types.go", "Event"),
    "profile cpu": ("pkg/gadgets/profile/cpu/types/types.go", "Report"),
    "traceloop": ("pkg/gadgets/traceloop/types/types.go", "Event"),
}
"""Gadgets of other categories: the file and name of the struct ``ig`` writes."""
_STRUCT = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.M | re.S)
_FIELD = re.compile(r"^\s*(\w+)\s+([\w.\[\]*]+)\s+`([^`]*)`")
_EMBEDDED = re.compile(r"^\s*([\w.]+)\s*(`[^`]*`)?\s*$")


def show(repo: str, path: str) -> str:
    return subprocess.check_output(["git", "-C", repo, "show", f"{TAG}:{path}"], text=True)


def structs(source: str) -> dict[str, list[str]]:
    return {m.group(1): m.group(2).splitlines() for m in _STRUCT.finditer(source)}


def keys(
    lines: list[str], path: str, common: dict[str, list[str]], prefix: str = ""
) -> dict[str, dict[str, Any]]:
    """The JSON keys of a struct's fields, as encoding/json writes them: embedded structs
    (and ``json:",inline"`` ones, which Go takes as embedded) promote their fields; a named
    struct field is an object of its own."""
    out: dict[str, dict[str, Any]] = {}
    for line in lines:
        if not line.strip() or line.strip().startswith("//"):
            continue
        field = _FIELD.match(line)
        if field is None:
            embedded = _EMBEDDED.match(line)
            if embedded is not None:
                base = embedded.group(1).split(".")[-1]
                promote(out, keys(common[base], COMMON, common, prefix))
            continue
        _, go_type, tags = field.groups()
        tag = re.search(r'json:"([^"]*)"', tags)
        if tag is None:
            continue
        key, *options = tag.group(1).split(",")
        base = go_type.split(".")[-1]
        if key == "-":
            continue
        if key == "":
            promote(out, keys(common[base], COMMON, common, prefix))
            continue
        if prefix + key in out:
            raise SystemExit(f"{path}: {prefix + key} twice: Go's dominance rules are not modelled")
        nested = base in common and base.endswith(("Endpoint", "Metadata"))
        out[prefix + key] = {
            "type": f"struct {base}" if nested else go_type,
            "omitempty": "omitempty" in options,
            "source": path,
        }
        if nested:
            out.update(keys(common[base], COMMON, common, f"{prefix}{key}."))
    return out


def promote(out: dict[str, dict[str, Any]], embedded: dict[str, dict[str, Any]]) -> None:
    """An embedded struct's keys, in place of the embedding field (Go orders fields by their
    index sequence). A key twice would need Go's dominance rules, which no v0.25 gadget needs."""
    for key, spec in embedded.items():
        if key in out:
            raise SystemExit(f"{key} twice: Go's dominance rules are not modelled")
        out[key] = spec


def gadget_keys(repo: str) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, list[str]]]:
    """Every gadget's keys, and ``ig``'s common event keys: ``Event`` (with ``CommonData``)
    then ``WithMountNsID`` and ``WithNetNsID``, as trace gadgets embed them."""
    common = structs(show(repo, COMMON))
    gadgets = {}
    for name in GADGETS:
        path = f"pkg/gadgets/trace/{name}/types/{TYPES_FILES.get(name, 'types.go')}"
        gadgets[f"trace {name}"] = keys(structs(show(repo, path))["Event"], path, common)
    for name, struct in TOP.items():
        path = f"pkg/gadgets/top/{name}/types/types.go"
        gadgets[f"top {name}"] = keys(structs(show(repo, path))[struct], path, common)
    for name, file in SNAPSHOTS.items():
        path = f"pkg/gadgets/snapshot/{name}/types/{file}"
        gadgets[f"snapshot {name}"] = keys(structs(show(repo, path))["Event"], path, common)
    for gadget, (path, struct) in OTHERS.items():
        gadgets[gadget] = keys(structs(show(repo, path))[struct], path, common)
    event = [
        key
        for struct in ("Event", "WithMountNsID", "WithNetNsID")
        for key in keys(common[struct], COMMON, common)
    ]
    return gadgets, {"": event, **{name: list(spec) for name, spec in gadgets.items()}}


def order_module(repo: str, commit: str) -> str:
    """The Python module of key orders igrun's JSON writer follows."""
    _, orders = gadget_keys(repo)
    lines = [
        f'"""The order of ``ig`` {TAG}\'s JSON keys (Go\'s encoding/json: struct field order, an',
        "embedded struct's fields in place of the embedding field), per gadget, dotted for",
        "nesting. Generated from Inspektor Gadget's sources by ``scripts/ig_json_fixture.py",
        f"--order-module`` (github.com/inspektor-gadget/inspektor-gadget, {TAG},",
        f'{commit}); do not edit."""',
        "",
        "EVENT: tuple[str, ...] = (",
        *(f"    {json.dumps(key)}," for key in orders[""]),
        ")",
        '"""The keys of ``ig``\'s common event structs, for gadgets ``ig`` does not have."""',
        "",
        "ORDER: dict[str, tuple[str, ...]] = {",
    ]
    for name, order in orders.items():
        if name:
            keys_ = (f"        {json.dumps(key)}," for key in order)
            lines += [f"    {json.dumps(name)}: (", *keys_, "    ),"]
    lines += ["}", '"""Per gadget (``trace exec``), its keys in the order ``ig`` writes them."""']
    return "\n".join(lines) + "\n"


def main(repo: str) -> None:
    gadgets, orders = gadget_keys(repo)
    fixture = {
        "about": "JSON keys of Inspektor Gadget's ig v0.25.0 (encoding/json of each gadget's "
        "Event struct): per gadget, each key (dotted for nesting) with its Go type, whether the "
        "json tag says omitempty (Go omits empty numbers, strings, lists and nil pointers, never "
        "structs) and the source file of the tag.",
        "repository": "github.com/inspektor-gadget/inspektor-gadget",
        "tag": TAG,
        "commit": commit(repo),
        "gadgets": gadgets,
        "order": {
            "about": "Per gadget, its keys in the order Go's encoding/json writes them: struct "
            "field order, an embedded struct's fields in place of the embedding field; under "
            '"" the common event keys (Event, WithMountNsID, WithNetNsID).',
            **orders,
        },
    }
    json.dump(fixture, sys.stdout, indent=1)
    print()


def commit(repo: str) -> str:
    return subprocess.check_output(
        ["git", "-C", repo, "rev-parse", f"{TAG}^{{commit}}"], text=True
    ).strip()


if __name__ == "__main__":
    args = sys.argv[1:]
    module = args[:1] == ["--order-module"]
    if len(args) != 1 + module:
        print("usage: ig_json_fixture.py [--order-module] IG_CLONE", file=sys.stderr)
        sys.exit(2)
    if module:
        sys.stdout.write(order_module(args[1], commit(args[1])))
    else:
        main(args[0])
