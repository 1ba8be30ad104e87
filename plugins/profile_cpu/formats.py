"""The outputs of ``profile cpu`` beyond ``ig``'s columns and JSON, as pure functions from the
run's rows to bytes: folded stacks, a gzipped pprof profile, an interactive flame-graph SVG.

A result is either the gadget's :class:`~igrun.core.Batch` or ``ig``'s reports as JSON gives
them (dicts with ``comm``, ``pid``, ``userStack``, ``kernelStack`` and ``count``; stacks
innermost frame first), so a saved ``-o json`` can be turned into a flame graph later.
"""

from __future__ import annotations

import gzip
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from igrun.core.events.schema import Batch


@dataclass(frozen=True)
class Stack:
    """One sampled stack: root first (``comm``, user frames, then kernel frames)."""

    comm: str
    pid: int
    user: tuple[str, ...]
    """Innermost first, as ``ig``'s ``userStack``."""
    kernel: tuple[str, ...]
    count: int
    container: str = ""
    """``runtime.containerName``, when the containers operator named one."""

    def path(self) -> list[str]:
        """The frames from the root (the command) to the leaf."""
        return [self.comm or "[unknown]", *reversed(self.user), *reversed(self.kernel)]


def stacks(result: Batch | Iterable[Mapping[str, Any]]) -> list[Stack]:
    """The stacks of a result, whichever form it has."""
    if isinstance(result, Batch):
        names = ("comm", "pid", "userStack", "kernelStack", "count")
        cols = [result[n].tolist() for n in names]
        cols.append(
            result["runtime.containerName"].tolist()
            if "runtime.containerName" in result.schema
            else [""] * len(result)
        )
        rows: Iterable[Sequence[Any]] = zip(*cols, strict=True)
    else:
        rows = (
            (r.get("comm", ""), r.get("pid", 0), r.get("userStack") or (),
             r.get("kernelStack") or (), r.get("count", 0),
             (r.get("runtime") or {}).get("containerName", ""))
            for r in result
        )  # fmt: skip
    return [
        Stack(str(c), int(p), tuple(map(str, u)), tuple(map(str, k)), int(n), str(ct or ""))
        for c, p, u, k, n, ct in rows
        if int(n) > 0
    ]


def to_stacks(result: Batch | Iterable[Mapping[str, Any]]) -> bytes:
    """``ig``'s columns output of ``profile cpu``: one line per stack (container, command,
    pid, samples) followed by its frames, one per tab-indented line, in ``ig``'s order (the
    kernel stack from its outermost frame in, then the user stack from its outermost in)."""
    lines = [f"{'RUNTIME.CONTAINERNAME':<30} {'COMM':<16} {'PID':>7} {'COUNT':>7}"]
    for s in stacks(result):
        lines.append(f"{s.container[:30]:<30} {s.comm[:16]:<16} {s.pid:>7} {s.count:>7}")
        lines += [f"\t{frame}" for frame in (*reversed(s.kernel), *reversed(s.user))]
    return ("\n".join(lines) + "\n").encode()


_SEMI = re.compile(r"[;\n\r]")


def _frame(name: str) -> str:
    """A frame name the folded format can carry: no ``;`` (the separator) nor line breaks."""
    return _SEMI.sub("_", name) if name else "[unknown]"


def to_folded(result: Batch | Iterable[Mapping[str, Any]]) -> bytes:
    """``comm;root;...;leaf count`` per line (Brendan Gregg's folded format, which
    flamegraph.pl, inferno and speedscope read); the same path in several processes is
    summed, lines sorted like stackcollapse's output."""
    merged: dict[str, int] = {}
    for s in stacks(result):
        key = ";".join(_frame(f) for f in s.path())
        merged[key] = merged.get(key, 0) + s.count
    return "".join(f"{k} {v}\n" for k, v in sorted(merged.items())).encode()


# ---- pprof -------------------------------------------------------------------------------


def _varint(value: int, out: bytearray) -> None:
    value &= (1 << 64) - 1  # int64 fields: two's complement, as protobuf encodes them
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _key(number: int, wire: int, out: bytearray) -> None:
    _varint(number << 3 | wire, out)


def _int(number: int, value: int, out: bytearray) -> None:
    if value:
        _key(number, 0, out)
        _varint(value, out)


def _bytes(number: int, data: bytes, out: bytearray) -> None:
    _key(number, 2, out)
    _varint(len(data), out)
    out += data


def _packed(number: int, values: Iterable[int], out: bytearray) -> None:
    body = bytearray()
    for v in values:
        _varint(v, body)
    if body:
        _bytes(number, bytes(body), out)


@dataclass
class _Strings:
    table: list[str] = field(default_factory=lambda: [""])
    index: dict[str, int] = field(default_factory=lambda: {"": 0})

    def __call__(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.table)
            self.table.append(text)
        return found


def to_pprof(
    result: Batch | Iterable[Mapping[str, Any]], period_ns: int = 20_408_163, duration_ns: int = 0
) -> bytes:
    """A gzipped ``perftools.profiles.Profile`` (profile.proto, as ``go tool pprof`` and
    Grafana Pyroscope read it): two sample types, ``samples/count`` and ``cpu/nanoseconds``
    (samples × the sampling period); one location and one function per distinct frame name;
    ``pid`` and ``comm`` as labels of each sample. The comm is the root frame, as in the
    folded output, so a flame graph from pprof looks the same."""
    strings = _Strings()
    functions: dict[tuple[str, bool], int] = {}
    out = bytearray()
    samples = bytearray()
    for s in stacks(result):
        locations = []
        for name, kernel in [
            *((f, True) for f in s.kernel),
            *((f, False) for f in s.user),
            (s.comm or "[unknown]", False),
        ]:
            locations.append(functions.setdefault((name, kernel), len(functions) + 1))
        sample = bytearray()
        _packed(1, locations, sample)
        _packed(2, [s.count, s.count * period_ns], sample)
        label = bytearray()
        _int(1, strings("pid"), label)
        _int(3, s.pid, label)
        _bytes(3, bytes(label), sample)
        label = bytearray()
        _int(1, strings("comm"), label)
        _int(2, strings(s.comm), label)
        _bytes(3, bytes(label), sample)
        _bytes(2, bytes(sample), samples)
    for type_, unit in (("samples", "count"), ("cpu", "nanoseconds")):
        vt = bytearray()
        _int(1, strings(type_), vt)
        _int(2, strings(unit), vt)
        _bytes(1, bytes(vt), out)
    out += samples
    for fid in functions.values():
        loc = bytearray()
        _int(1, fid, loc)
        line = bytearray()
        _int(1, fid, line)
        _bytes(4, bytes(line), loc)
        _bytes(4, bytes(loc), out)
    for (name, kernel), fid in functions.items():
        fn = bytearray()
        _int(1, fid, fn)
        _int(2, strings(name), fn)
        _int(3, strings(name), fn)
        _int(4, strings("[kernel]" if kernel else ""), fn)
        _bytes(5, bytes(fn), out)
    period_type = bytearray()
    _int(1, strings("cpu"), period_type)
    _int(2, strings("nanoseconds"), period_type)
    table = list(strings.table)  # every string is in: the table goes after what used it
    for text in table:
        _bytes(6, text.encode(), out)
    _int(10, duration_ns, out)
    _bytes(11, bytes(period_type), out)
    _int(12, period_ns, out)
    return gzip.compress(bytes(out), mtime=0)


# ---- flame graph -------------------------------------------------------------------------

WIDTH = 1200
FRAME_H = 16
PAD_TOP = 60
PAD_BOTTOM = 40
PAD_SIDE = 10
MIN_WIDTH_PX = 0.1
"""Frames narrower than this are left out of the picture (flamegraph.pl's --minwidth); their
samples still count in their parents' widths."""
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(name: str) -> str:
    return html.escape(_XML_BAD.sub("?", name), quote=True)


@dataclass
class _Node:
    name: str
    kernel: bool = False
    total: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(all_stacks: list[Stack]) -> _Node:
    root = _Node("all")
    for s in all_stacks:
        root.total += s.count
        node = root
        path = [(s.comm or "[unknown]", False)]
        path += [(f, False) for f in reversed(s.user)] + [(f, True) for f in reversed(s.kernel)]
        for name, kernel in path:
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = _Node(name, kernel)
            child.total += s.count
            node = child
    return root


def _color(name: str, kernel: bool) -> str:
    """flamegraph.pl's palette: warm hues for user code, orange-ish for the kernel; the same
    name always gets the same colour."""
    h = 0
    for ch in name[:32]:
        h = (h * 31 + ord(ch)) & 0xFFFF
    v1, v2 = (h % 97) / 97, (h % 89) / 89
    if kernel:
        return f"rgb({205 + int(50 * v2)},{int(80 + 100 * v1)},0)"
    return f"rgb({205 + int(50 * v1)},{int(230 * v2)},{int(55 * v1)})"


def _script() -> str:
    """The flame graph's JavaScript (flamegraph.js beside this module), as CDATA."""
    import importlib.resources

    text = (importlib.resources.files(__package__) / "flamegraph.js").read_text()
    return "<![CDATA[\n" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def to_svg(result: Batch | Iterable[Mapping[str, Any]], title: str = "Flame Graph") -> bytes:
    """An interactive flame graph, as flamegraph.pl draws one: the root at the bottom, each
    frame as wide as its share of the samples, user frames in warm colours and kernel frames
    in orange. Hover shows a frame's samples and share, a click zooms in on it, "Reset Zoom"
    zooms out, "Search" (or Ctrl-F) colours every frame matching a regular expression and
    shows their share. Self-contained: one file, a little JavaScript, no fetches. When every
    stack comes from one container, the title names it."""
    all_stacks = stacks(result)
    containers = {s.container for s in all_stacks}
    if len(containers) == 1 and "" not in containers:
        title = f"{title}: container {containers.pop()}"
    root = _tree(all_stacks)
    total = max(root.total, 1)
    scale = (WIDTH - 2 * PAD_SIDE) / total
    rows: list[str] = []
    depth_max = 0

    def draw(node: _Node, x: float, depth: int, node_id: str = "") -> None:
        nonlocal depth_max
        w = node.total * scale
        if w < MIN_WIDTH_PX:
            return
        depth_max = max(depth_max, depth)
        y = -depth  # placed once the height is known
        share = 100 * node.total / total
        label = f"{node.name} ({node.total:,} samples, {share:.2f}%)"
        fill = _color(node.name, node.kernel) if depth else "rgb(250,250,250)"
        rows.append(
            f'<g class="f" data-name="{_text(node.name)}"><title>{_text(label)}</title>'
            f'<rect{node_id} x="{PAD_SIDE + x:.2f}" y="{{y{y}}}" width="{w:.2f}" '
            f'height="{FRAME_H - 1}" fill="{fill}" data-fill="{fill}" data-x="{PAD_SIDE + x:.2f}" '
            f'data-w="{w:.2f}" rx="2" ry="2"/><text x="{PAD_SIDE + x + 3:.2f}" '
            f'y="{{t{y}}}"></text></g>'
        )
        offset = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            draw(child, offset, depth + 1)
            offset += child.total * scale

    draw(root, 0.0, 0, ' id="root"')
    height = PAD_TOP + (depth_max + 1) * FRAME_H + PAD_BOTTOM
    bottom = height - PAD_BOTTOM

    def place(m: re.Match[str]) -> str:
        kind, depth = m.group(1), -int(m.group(2))
        y = bottom - (depth + 1) * FRAME_H
        return f"{y}" if kind == "y" else f"{y + FRAME_H - 4.5:.1f}"

    body = re.sub(r"\{([yt])(-?\d+)\}", place, "\n".join(rows))
    right, low = WIDTH - PAD_SIDE - 100, height - 15
    head = (
        '<?xml version="1.0" standalone="no"?>\n'
        f'<svg version="1.1" width="{WIDTH}" height="{height}" onload="init(evt)" '
        f'viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg" '
        'xmlns:xlink="http://www.w3.org/1999/xlink">\n'
        '<style type="text/css">text { font-family: Verdana, sans-serif; font-size: 12px; '
        "fill: rgb(0,0,0); } #title { text-anchor: middle; font-size: 17px; } "
        "g.f:hover rect { stroke: black; stroke-width: 0.5; cursor: pointer; } "
        ".hide { display: none; } .parent { opacity: 0.5; } "
        "#search, #unzoom { cursor: pointer; } #search.show { opacity: 1; }</style>\n"
        f'<script type="text/ecmascript">var XPAD = {PAD_SIDE};\n{_script()}</script>\n'
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="rgb(248,248,248)"/>\n'
        f'<text id="title" x="{WIDTH / 2}" y="24">{_text(title)}</text>\n'
        f'<text id="subtitle" x="{WIDTH / 2}" y="42" style="text-anchor: middle">'
        f"{root.total:,} samples; click a frame to zoom, Ctrl-F to search</text>\n"
        f'<text id="unzoom" class="hide" x="{PAD_SIDE}" y="24" onclick="unzoom()">'
        "Reset Zoom</text>\n"
        f'<text id="search" x="{right}" y="24" onclick="search_prompt()">Search</text>\n'
        f'<text id="matched" class="hide" x="{right}" y="{low}"> </text>\n'
        f'<text id="details" x="{PAD_SIDE}" y="{low}"> </text>\n'
        '<g id="frames">\n'
    )
    return (head + body + "\n</g>\n</svg>\n").encode()


# ---- a saved profile, converted later -----------------------------------------------------

CONVERTERS = {"folded": to_folded, "pprof": to_pprof, "svg": to_svg, "stacks": to_stacks}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m igrun.plugins.profile_cpu {folded,pprof,svg} [FILE]``: the JSON of
    ``igrun profile cpu -o json`` (one report per line; FILE or stdin) as folded stacks, pprof or
    a flame-graph SVG on stdout."""
    import json
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in CONVERTERS or len(args) > 2:
        names = ",".join(CONVERTERS)
        print(f"usage: python -m igrun.plugins.profile_cpu {{{names}}} [FILE]", file=sys.stderr)
        return 2
    try:
        if len(args) == 2:
            with open(args[1], encoding="utf-8") as f:
                text = f.read()
        else:
            text = sys.stdin.read()
        reports = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("["):
                reports += json.loads(line)
            elif line.startswith("{"):
                reports.append(json.loads(line))
        if not all(isinstance(r, dict) for r in reports):
            raise ValueError("a report that is not a JSON object")
        data = CONVERTERS[args[0]](reports)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        print(f"profile cpu: cannot convert: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0
