"""``-o json`` is ``ig`` v0.25's JSON, key for key, for every gadget both have.

``fixtures/ig_v0.25_json.json`` holds the reference: the JSON tags of each gadget's ``Event``
struct in Inspektor Gadget v0.25.0 (with the commit and source file each comes from), flattened
as dotted keys (``runtime.containerName``), each with its Go type and whether its tag says
``omitempty``. The tests check igrun against it twice: the schemas (every key ``ig`` writes
is igrun's, with the same omission rule and a matching type; igrun's additions are listed),
and real events of every gadget, written by ``igrun trace <gadget> -o json`` (names,
nesting, value types, ``"type":"normal"``, empty values left out as Go leaves them out).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from igrun.core.events.schema import Field, Kind
from igrun.core.gadget import Gadget
from igrun.core.output import igorder
from igrun.operators.containers import ENRICHED, node_name
from igrun.plugins.audit_seccomp import AuditSeccomp
from igrun.plugins.profile_cpu import ProfileCpu
from igrun.plugins.snapshot_process import SnapshotProcess
from igrun.plugins.snapshot_socket import SnapshotSocket
from igrun.plugins.top_block_io import TopBlockIo
from igrun.plugins.top_ebpf import TopEbpf
from igrun.plugins.top_file import TopFile
from igrun.plugins.top_tcp import TopTcp
from igrun.plugins.trace_bind import TraceBind
from igrun.plugins.trace_capabilities import TraceCapabilities
from igrun.plugins.trace_dns import TraceDns
from igrun.plugins.trace_exec import TraceExec
from igrun.plugins.trace_fsslower import TraceFsslower
from igrun.plugins.trace_mount import TraceMount
from igrun.plugins.trace_network import TraceNetwork
from igrun.plugins.trace_oomkill import TraceOomkill
from igrun.plugins.trace_open import TraceOpen
from igrun.plugins.trace_signal import TraceSignal
from igrun.plugins.trace_sni import TraceSni
from igrun.plugins.trace_tcp import TraceTcp
from igrun.plugins.trace_tcpconnect import TraceTcpconnect
from igrun.plugins.trace_tcpdrop import TraceTcpdrop
from igrun.plugins.trace_tcpretrans import TraceTcpretrans
from igrun.plugins.traceloop import Traceloop

if TYPE_CHECKING:
    from conftest import IgrunCli, NetnsPair

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "ig_v0.25_json.json").read_text())
IG: dict[str, dict[str, dict[str, Any]]] = FIXTURE["gadgets"]
ORDER: dict[str, list[str]] = FIXTURE["order"]
"""Per gadget, ``ig``'s keys in the order Go writes them (under ``""``, the common ones)."""

GADGETS: dict[str, type[Gadget]] = {
    "trace exec": TraceExec,
    "trace open": TraceOpen,
    "trace signal": TraceSignal,
    "audit seccomp": AuditSeccomp,
    "trace mount": TraceMount,
    "trace bind": TraceBind,
    "trace capabilities": TraceCapabilities,
    "trace oomkill": TraceOomkill,
    "trace fsslower": TraceFsslower,
    "trace tcpconnect": TraceTcpconnect,
    "trace tcp": TraceTcp,
    "trace tcpdrop": TraceTcpdrop,
    "trace tcpretrans": TraceTcpretrans,
    "trace network": TraceNetwork,
    "trace dns": TraceDns,
    "trace sni": TraceSni,
    "top tcp": TopTcp,
    "top block-io": TopBlockIo,
    "top ebpf": TopEbpf,
    "snapshot process": SnapshotProcess,
    "snapshot socket": SnapshotSocket,
    "top file": TopFile,
    "profile cpu": ProfileCpu,
    "traceloop": Traceloop,
}

NOT_WRITTEN = {
    "message": "only on ig's err, warn, debug and info records, never on an event",
    **{
        f"{end}.podlabels": "a pod's labels: ig's KubeIPResolver reads them from the "
        "Kubernetes API server (igrun fills namespace, podname and kind: test_endpoint_pods)"
        for end in ("src", "dst")
    },
    **{
        key: "the local pod's details ig takes from the Kubernetes API server (trace network)"
        for key in ("podHostIP", "podIP", "podOwner", "podLabels")
    },
    "src.proto": "the v0.25 tracers of these gadgets leave it 0 (omitted)",
    "dst.proto": "the v0.25 tracers of these gadgets leave it 0 (omitted)",
}
"""Keys of ``ig``'s structs that igrun never writes, and why. All are ``omitempty``."""

NOT_WRITTEN_BY = {
    "snapshot process": {"timestamp": "ig's snapshots leave it zero (omitted)"},
    "snapshot socket": {"timestamp": "ig's snapshots leave it zero (omitted)"},
}
"""Keys of one gadget's struct that igrun never writes, and why (also ``omitempty``)."""

POD_LABELS = "k8s.podLabels"
"""The pod's labels, on every event the containers operator enriches: not a key of ig v0.25's
common metadata, but the key later ig versions write there."""
ADDITIONS: dict[str, set[str]] = {
    "trace exec": {"tid", "truncated"},
    "trace open": {"tid"},
    "trace signal": set(),
    "audit seccomp": {"tid"},
    "trace mount": set(),
    "trace bind": {"tid", "error"},
    "trace capabilities": {"tid"},
    "trace oomkill": set(),
    "trace fsslower": {"tid", "error", "truncated"},
    "trace tcpconnect": {"tid", "error"},
    "trace tcp": {"tid", "error"},
    "trace tcpdrop": {"tid", "ownerKnown"},
    "trace tcpretrans": {"tid", "ownerKnown"},
    "trace network": {
        "direction",
        "src.addr",
        "src.version",
        "src.port",
        "src.namespace",
        "src.podname",
        "src.kind",
        "dst.port",
        "dst.containerName",
    },
    "trace dns": {"ownerKnown"},
    "trace sni": {"ownerKnown", "pktType"},
    "top tcp": set(),
    "top block-io": set(),
    "top ebpf": set(),
    "snapshot process": set(),
    "snapshot socket": set(),
    "top file": set(),
    "profile cpu": set(),
    "traceloop": {"tid", "result", "seq"},
}
"""igrun's keys that ``ig`` does not have: added, never in place of one of ``ig``'s."""

SIGNED = {
    ("trace signal", "tpid"): "a failed kill(-pgid) keeps its negative target, which ig's "
    "uint32 turns into a large number; a delivered signal's target is a pid, as in ig",
}
"""Keys igrun keeps signed where ``ig``'s type is unsigned, and why."""

NO_TYPE = {"profile cpu"}
"""Gadgets whose ``ig`` record embeds only ``CommonData`` (no ``type``): igrun's writer still
writes ``"type":"normal"``, as on every record."""

OLD_NAMES = {"retval", "k8s.pod", "k8s.container"}
"""Keys igrun used to write where ``ig`` writes others (``ret``, ``podName``...)."""

_UNSIGNED = {"byte", "uint8", "uint16", "uint32", "uint64", "fs.FileMode"}
_SIGNED = {"int", "int32", "int64", "Time", "time.Duration"}
_TEXT = {"string", "RuntimeName", "EventType", "EndpointKind", "DNSPktType"}


def json_type_ok(go: str, value: Any) -> bool:
    """Whether a JSON value is what Go's encoding/json writes for a field of type ``go``."""
    if go in _UNSIGNED:
        return type(value) is int and value >= 0
    if go in _SIGNED:
        return type(value) is int
    if go in _TEXT:
        return type(value) is str
    if go in ("bool", "*bool"):
        return type(value) is bool
    if go == "[]string":
        return type(value) is list and all(type(v) is str for v in value)
    if go == "float64":
        return type(value) in (int, float)  # Go writes a whole float as an integer
    if go == "[]*Process":  # top ebpf's processes: {"pid": uint32, "comm": string}, omitempty
        return type(value) is list and all(
            set(p) <= {"pid", "comm"} and type(p.get("pid", 0)) is int for p in value
        )
    if go == "[]SyscallParam":  # traceloop: {"name", "value", "content"}, strings, omitempty
        return type(value) is list and all(
            set(p) <= {"name", "value", "content"} and all(type(v) is str for v in p.values())
            for p in value
        )
    if go.startswith(("struct ", "map[")):
        return type(value) is dict
    raise AssertionError(f"no rule for Go type {go}")


KINDS = {
    Kind.UINT: _UNSIGNED | _SIGNED,
    Kind.INT: _SIGNED,
    Kind.TIME: {"Time"},
    Kind.STR: _TEXT,
    Kind.BOOL: {"bool", "*bool"},
    Kind.LIST: {"[]string", "[]*Process", "[]SyscallParam"},
    Kind.MAP: {"map[string]string"},
    Kind.FLOAT: {"float64"},
}
"""The Go types each igrun kind may stand for (an unsigned count where Go says ``int``)."""


def empty(value: Any) -> bool:
    """Go's omitempty: 0, false, "", an empty list or map."""
    return value in (0, "", [], {}) or value is False


def json_fields(gadget: type[Gadget]) -> dict[str, Field]:
    """The fields a run of ``gadget`` writes in JSON: its own and the containers operator's."""
    fields = [f for f in gadget.schema.fields if f.in_json] + [f for f, _ in ENRICHED]
    return {f.json_key: f for f in fields}


def flatten(event: dict[str, Any]) -> dict[str, Any]:
    """``{"runtime": {"containerName": "x"}}`` as ``{"runtime": {...}, "runtime.containerName":
    "x"}``: objects and their members by dotted key, as the fixture names them."""
    out = dict(event)
    for key in ("runtime", "k8s", "src", "dst"):
        if isinstance(event.get(key), dict):
            out.update({f"{key}.{k}": v for k, v in event[key].items()})
    return out


def written_order(event: dict[str, Any]) -> list[str]:
    """The event's keys as written, each object's members (dotted) right after it."""
    out = []
    for key, value in event.items():
        out.append(key)
        if key in ("runtime", "k8s", "src", "dst") and isinstance(value, dict):
            out += [f"{key}.{k}" for k in value]
    return out


def check_order(gadget: str, event: dict[str, Any]) -> None:
    """``ig``'s keys in ``ig``'s order (Go's struct order), igrun's additions after them: at
    the top and in each object."""
    written = written_order(event)
    ours = [k for k in written if k in IG[gadget]]
    assert ours == [k for k in ORDER[gadget] if k in ours], (gadget, written)
    for outer in ("", "runtime.", "k8s.", "src.", "dst."):
        level = [k for k in written if k.startswith(outer) and "." not in k[len(outer) :]]
        named = [k in IG[gadget] for k in level]
        if False in named:  # an addition: no key of ig's after it
            assert True not in named[named.index(False) :], (gadget, written)


def check_event(gadget: str, event: dict[str, Any]) -> None:
    """One event as ``ig`` would write it: every key of ``ig``'s that is not omitempty, its
    objects, the right value types, no empty value of an omitempty key, ``type`` normal (none
    on a top gadget's rows), and
    no key besides ``ig``'s and igrun's listed additions."""
    ig = IG[gadget]
    if gadget.startswith("top "):  # ig's top rows are stats structs: no event type
        # (top ebpf's stats have a "type" of their own: the program's)
        assert ("type" in event) == ("type" in ig) and event.get("type") != "normal", event
    else:
        assert event["type"] == "normal", event
    flat = flatten(event)
    for key, spec in ig.items():
        if spec["type"].startswith("struct "):
            assert type(event.get(key)) is dict, (key, event)  # Go writes structs, always
        elif not spec["omitempty"]:
            assert key in flat, (gadget, key, event)
    for key, value in flat.items():
        if key in ig:
            assert json_type_ok(ig[key]["type"], value), (gadget, key, value)
            if ig[key]["omitempty"] and not ig[key]["type"].startswith(("*", "struct ")):
                assert not empty(value), (gadget, key, "empty value of an omitempty key")
        elif key == "type" and gadget in NO_TYPE:
            continue  # igrun writes it on every record; ig's profile Report has no such key
        else:
            added = ADDITIONS[gadget] | {POD_LABELS}
            whole = any(a.startswith(f"{key}.") for a in added)  # an added object
            assert key in added or whole, (gadget, key, "neither ig's nor a known addition")
    assert not OLD_NAMES & set(flat), event
    check_order(gadget, event)


# ---- the schemas ----------------------------------------------------------------------------


def test_fixture_is_igs_v0_25_0() -> None:
    assert FIXTURE["tag"] == "v0.25.0"
    assert FIXTURE["commit"] == "5bba230d35f144758fcab911e8d2417e0f4a0308"
    assert set(IG) == set(GADGETS)
    assert IG["trace exec"]["ret"] == {
        "type": "int",
        "omitempty": True,
        "source": "pkg/gadgets/trace/exec/types/types.go",
    }
    assert IG["trace exec"]["k8s.podName"]["source"] == "pkg/types/types.go"
    # Go writes an embedded struct's fields in place of the embedding field: Event first.
    assert ORDER["trace exec"][:3] == ["runtime", "runtime.runtimeName", "runtime.containerId"]
    assert ORDER["trace exec"][12:17] == ["timestamp", "type", "message", "mountnsid", "pid"]
    assert ORDER["trace tcpdrop"][15:20] == ["mountnsid", "netnsid", "pid", "comm", "uid"]
    for name in GADGETS:
        assert ORDER[name] == list(IG[name])


def test_writer_follows_the_fixtures_order() -> None:
    """The order the JSON writer follows is the fixture's, generated from the same sources."""
    assert {name: list(keys) for name, keys in igorder.ORDER.items()} == {
        name: keys for name, keys in ORDER.items() if name and name != "about"
    }
    assert list(igorder.EVENT) == ORDER[""]


@pytest.mark.parametrize("name", sorted(GADGETS))
def test_schema_writes_igs_keys_with_igs_rules(name: str) -> None:
    ours = json_fields(GADGETS[name])
    ig = IG[name]
    for key, spec in ig.items():
        skipped = ("type", *NOT_WRITTEN, *NOT_WRITTEN_BY.get(name, {}))
        if spec["type"].startswith("struct ") or key in skipped:
            continue
        assert key in ours, f"{name}: ig's {key!r} is not written"
        field = ours[key]
        # A *bool is left out only when nil: igrun always knows the value, so writes it.
        omit = spec["omitempty"] and not spec["type"].startswith("*")
        assert field.omit_empty == omit, f"{name}: {key!r} omitempty is {spec['omitempty']}"
        kinds = KINDS[Kind.UINT] if (name, key) in SIGNED else KINDS[field.kind]
        assert spec["type"] in kinds, (name, key, field.kind, spec["type"])
    assert set(ours) - set(ig) - {POD_LABELS} == ADDITIONS[name]
    assert not OLD_NAMES & set(ours)


# ---- real events, written by the command ----------------------------------------------------


def run(
    cli: IgrunCli, gadget: str, action: Callable[[], Any], *flags: str
) -> tuple[list[dict[str, Any]], str]:
    """``igrun trace GADGET --host -o json FLAGS`` while ``action`` runs: its events, and
    its stdout as written."""
    proc = cli.start(*gadget.split(), "--host", "-o", "json", *flags)
    try:
        action()
        time.sleep(0.5)  # the last batch drains
    finally:
        out, err = proc.stop()
    assert proc.returncode == 0, err
    lines = [line for line in out.split("\n") if line]
    records = [json.loads(line) for line in lines]
    # A busy host may fill the buffer: the loss is reported as ig's warn record, not an event.
    events = [r for r in records if r.get("type") != "warn"]
    assert all(set(r) == {"type", "message"} for r in records if r not in events), records
    for event in events:
        check_event(gadget, event)
    return events, out


def test_exec(igrun_cli: IgrunCli) -> None:
    mark = f"igrun-{uuid.uuid4().hex[:8]}"
    missing = f"/nonexistent/{mark}"
    box: dict[str, int] = {}

    def action() -> None:
        ok = subprocess.Popen(["/bin/echo", mark], stdout=subprocess.DEVNULL)
        ok.wait()
        box["pid"] = ok.pid
        with pytest.raises(FileNotFoundError):
            subprocess.run([missing], check=False)

    events, out = run(igrun_cli, "trace exec", action)
    (good,) = [e for e in events if e.get("args") == ["/bin/echo", mark]]
    assert good["pid"] == box["pid"] and good["comm"] == "echo"
    assert "ret" not in good  # 0: omitempty
    assert good["upperlayer"] is False and good["uid"] == 0 and good["gid"] == 0
    assert good["runtime"] == {} and good["k8s"] == {"node": node_name()}  # a host process
    bad = [e for e in events if e.get("args", [""])[0] == missing]
    assert bad and {e["ret"] for e in bad} == {-errno.ENOENT}
    assert all("cwd" not in e for e in events)  # only with --cwd
    # A filter on the container name does not match host events, with jq as users run it
    # (on the test's own lines: containers elsewhere on the host may exec meanwhile).
    if shutil.which("jq"):
        own = "".join(line + "\n" for line in out.splitlines() if mark in line or missing in line)
        assert own.count("\n") == 1 + len(bad)
        picked = subprocess.run(
            ["jq", "-c", "select(.runtime.containerName)"],
            input=own, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert picked.stdout == ""


def test_exec_cwd(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """``--cwd``: ig's ``cwd`` key, the exact directory the child was started in."""
    mark = f"igrun-{uuid.uuid4().hex[:8]}"

    def action() -> None:
        subprocess.run(["/bin/echo", mark], cwd=tmp_path, stdout=subprocess.DEVNULL, check=True)

    events, _ = run(igrun_cli, "trace exec", action, "--cwd")
    (good,) = [e for e in events if e.get("args") == ["/bin/echo", mark]]
    assert good["cwd"] == os.path.realpath(tmp_path)


def test_open(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    there, missing = tmp_path / "there", tmp_path / "missing"
    there.write_text("x")

    def action() -> None:
        os.close(os.open(there, os.O_RDONLY))
        with pytest.raises(FileNotFoundError):
            os.open(missing, os.O_RDONLY)

    events, _ = run(igrun_cli, "trace open", action, "-F", f"pid:{os.getpid()}")
    (good,) = [e for e in events if e.get("path") == str(there)]
    assert good["fd"] == good["ret"] > 2 and "err" not in good
    assert good["flags"] == ["O_RDONLY", "O_CLOEXEC"]  # Python adds O_CLOEXEC
    assert good["flagsRaw"] == os.O_CLOEXEC  # O_RDONLY is 0
    assert "uid" not in good  # root: 0, and open's uid is omitempty in ig
    (bad,) = [e for e in events if e.get("path") == str(missing)]
    assert (bad["err"], bad["ret"]) == (errno.ENOENT, -errno.ENOENT) and "fd" not in bad


def test_signal(igrun_cli: IgrunCli) -> None:
    child = subprocess.Popen(["sleep", "30"])

    def action() -> None:
        os.kill(child.pid, signal.SIGUSR1)
        child.wait()

    events, _ = run(igrun_cli, "trace signal", action, "-F", f"pid:{os.getpid()}")
    mine = [e for e in events if e.get("tpid") == child.pid and e.get("signal") == "SIGUSR1"]
    assert mine and mine[0]["pid"] == os.getpid() and "ret" not in mine[0]


def test_mount(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    target = tmp_path / "mnt"
    target.mkdir()

    def action() -> None:
        assert libc.mount(b"igrun", str(target).encode(), b"tmpfs", 0, b"size=1m") == 0
        assert libc.umount2(str(target).encode(), 0) == 0

    events, _ = run(igrun_cli, "trace mount", action, "-F", f"pid:{os.getpid()}")
    mounted = [e for e in events if e.get("target") == str(target)]
    assert [e["operation"] for e in mounted] == ["mount", "umount"]
    assert mounted[0]["source"] == "igrun" and mounted[0]["fs"] == "tmpfs"
    assert mounted[0]["data"] == "size=1m" and "ret" not in mounted[0]
    assert "flags" not in mounted[0] and "flagsRaw" not in mounted[0]  # none: omitempty


def test_bind(igrun_cli: IgrunCli) -> None:
    box: dict[str, int] = {}

    def action() -> None:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::ffff:127.0.0.1", 0))
            box["port"] = s.getsockname()[1]

    events, _ = run(igrun_cli, "trace bind", action, "-F", f"pid:{os.getpid()}")
    (event,) = [e for e in events if e.get("port") == box["port"]]
    assert event["addr"] == "::ffff:127.0.0.1"  # as Go's netip prints an IPv4-mapped address
    assert event["proto"] == "TCP" and event["pid"] == os.getpid()


def test_capabilities(igrun_cli: IgrunCli) -> None:
    box: dict[str, int] = {}

    def action() -> None:
        child = subprocess.run(
            [sys.executable, "-c", "import os; os.setgid(os.getgid()); print(os.getpid())"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        box["pid"] = int(child.stdout)

    events, _ = run(igrun_cli, "trace capabilities", action)
    mine = [e for e in events if e.get("pid") == box["pid"] and e.get("capName") == "SETGID"]
    assert mine, events
    assert mine[0]["cap"] == 6 and mine[0]["verdict"] == "Allow"
    assert mine[0]["insetid"] is True and mine[0]["syscall"] == "setgid"


def test_fsslower(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    path = tmp_path / "file"

    def action() -> None:
        with path.open("wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())

    events, _ = run(igrun_cli, "trace fsslower", action, "--min", "0", "-F", f"pid:{os.getpid()}")
    mine = [e for e in events if e.get("file") == "file"]
    writes = [e for e in mine if e.get("op") == "W"]
    assert writes and writes[0]["bytes"] == 4096 and "offset" not in writes[0]  # at 0


def _connect_closed() -> tuple[int, int]:
    """A connect from a bound port to a port nobody listens on: (source, destination)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        sport = s.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", closed))
    return sport, closed


@pytest.mark.parametrize("gadget", ["trace tcpconnect", "trace tcp"])
def test_tcpconnect_and_tcp(igrun_cli: IgrunCli, gadget: str) -> None:
    box: dict[str, int] = {}

    def action() -> None:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            box["port"] = server.getsockname()[1]
            with socket.create_connection(("127.0.0.1", box["port"])) as c:
                box["sport"] = c.getsockname()[1]
                server.accept()[0].close()

    events, _ = run(igrun_cli, gadget, action, "-F", f"pid:{os.getpid()}")
    mine = [e for e in events if e["dst"].get("port") == box["port"]]
    assert mine, events
    assert mine[0]["src"] == {"addr": "127.0.0.1", "version": 4, "port": box["sport"]}
    assert mine[0]["dst"] == {"addr": "127.0.0.1", "version": 4, "port": box["port"]}
    assert mine[0]["ipversion"] == 4 and mine[0]["pid"] == os.getpid()
    if gadget == "trace tcp":
        assert mine[0]["operation"] == "connect"


def test_tcpdrop(igrun_cli: IgrunCli) -> None:
    box: dict[str, tuple[int, int]] = {}

    def action() -> None:
        box["ports"] = _connect_closed()

    events, _ = run(igrun_cli, "trace tcpdrop", action)
    sport, closed = box["ports"]
    (syn,) = [e for e in events if e["src"]["port"] == sport and e.get("tcpflags") == "SYN"]
    assert syn["reason"] == "NO_SOCKET" and syn["dst"]["port"] == closed
    assert "pid" not in syn and "mountnsid" not in syn  # no owner: 0, left out as in ig


@pytest.fixture
def retransmitting(netns_pair: NetnsPair) -> Iterator[Callable[[], tuple[int, int]]]:
    """A connection from netns a to b whose peer stops answering: calling it sends data
    that is retransmitted; returns the client's (pid, port)."""
    server_code = (
        "import socket,sys\nl=socket.socket()\nl.bind((sys.argv[1],9000))\nl.listen()\n"
        "print('ready',flush=True)\nc,_=l.accept()\nsys.stdin.readline()\n"
    )
    client_code = (
        "import socket,sys\ns=socket.create_connection((sys.argv[1],9000))\n"
        "print(s.getsockname()[1],flush=True)\nsys.stdin.readline()\ns.send(b'x'*100)\n"
        "sys.stdin.readline()\n"
    )
    procs: list[subprocess.Popen[str]] = []

    def start(ns: str, code: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            netns_pair.run(ns, sys.executable, "-c", code, netns_pair.addr_b),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(proc)
        return proc

    def go() -> tuple[int, int]:
        server = start(netns_pair.b, server_code)
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        client = start(netns_pair.a, client_code)
        assert client.stdout is not None and client.stdin is not None
        port = int(client.stdout.readline())
        rules = (
            "add table inet igrun_test; "
            "add chain inet igrun_test in { type filter hook input priority 0; }; "
            f"add rule inet igrun_test in ip saddr {netns_pair.addr_a} drop"
        )
        subprocess.run(netns_pair.run(netns_pair.b, "nft", rules), check=True)
        client.stdin.write("send\n")
        client.stdin.flush()
        time.sleep(1.0)  # retransmits after ~0.2 and 0.6 s
        return client.pid, port

    try:
        yield go
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_tcpretrans(
    igrun_cli: IgrunCli, netns_pair: NetnsPair, retransmitting: Callable[[], tuple[int, int]]
) -> None:
    box: dict[str, tuple[int, int]] = {}

    def action() -> None:
        box["client"] = retransmitting()

    events, _ = run(igrun_cli, "trace tcpretrans", action)
    pid, port = box["client"]
    mine = [e for e in events if e["src"]["port"] == port]
    assert mine and mine[0]["pid"] == pid and mine[0]["state"] == "ESTABLISHED"
    netns = os.stat(f"/run/netns/{netns_pair.a}").st_ino
    assert {e["netnsid"] for e in mine} == {netns}


def test_oomkill(igrun_cli: IgrunCli) -> None:
    from test_trace_oomkill import comm, make_memcg, run_to_death

    cg = make_memcg()
    if isinstance(cg, str):
        pytest.skip(cg)
    cg.set_limit(64 * 1024 * 1024)
    box: dict[str, Any] = {}
    try:
        events, _ = run(
            igrun_cli, "trace oomkill", lambda: box.setdefault("child", run_to_death(cg, comm()))
        )
    finally:
        for pid in (cg.path / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        cg.remove()
    child = box["child"]
    (event,) = [e for e in events if e.get("kpid") == child.pid]
    assert event["kcomm"] == event["tcomm"] and event["pages"] > 0
    assert type(event["tuid"]) is int and type(event["tgid"]) is int


def test_dns_and_sni(igrun_cli: IgrunCli) -> None:
    """A query and its response (with an A and an AAAA answer) on the loopback, and a TLS
    ClientHello naming a server, as ``ig`` writes them."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def exchange() -> None:
        question = b"\x04json\x05igrun\x04test\x00\x00\x01\x00\x01"
        client.sendto(b"\x4a\x53\x01\x00\x00\x01" + bytes(6) + question, server.getsockname())
        query, peer = server.recvfrom(512)
        answers = (
            b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x01\x02\x03"
            b"\xc0\x0c\x00\x1c\x00\x01\x00\x00\x00\x3c\x00\x10" + bytes(15) + b"\x01"
        )
        server.sendto(query[:2] + b"\x81\x80\x00\x01\x00\x02" + bytes(4) + question + answers,
                      peer)  # fmt: skip
        client.recv(512)

    with server, client:
        events, _ = run(igrun_cli, "trace dns", exchange)
    mine = [e for e in events if e.get("name") == "json.igrun.test."]
    assert {(e["qr"], e["pktType"]) for e in mine} == {
        ("Q", "OUTGOING"), ("Q", "HOST"), ("R", "OUTGOING"), ("R", "HOST")
    }  # fmt: skip
    (response,) = [e for e in mine if e["qr"] == "R" and e["pktType"] == "HOST"]
    assert response["id"] == "4a53" and response["addresses"] == ["10.1.2.3", "::1"]
    assert response["latency"] > 0 and response["numAnswers"] == 2

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    hello = bytes.fromhex(
        "16030100"
        "3d"
        "01000039"
        "0303" + "00" * 32 + "00"
        "0002"
        "1301"
        "0100"
        "000e"
        "0000000a"
        "0008"
        "00"
        "0005" + "6a736f6e2e"[:10]
    )  # a ClientHello whose only extension names "json."

    def connect() -> None:
        with socket.create_connection(listener.getsockname()) as sock:
            sock.sendall(hello)
            time.sleep(0.2)

    with listener:
        events, _ = run(igrun_cli, "trace sni", connect)
    assert any(e["name"] == "json." for e in events), events


def test_top_tcp(igrun_cli: IgrunCli) -> None:
    """A top gadget's rows, inside the array of each interval."""
    box: dict[str, int] = {}
    proc = igrun_cli.start("top", "tcp", "--host", "-o", "json", "--interval", "500ms")
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            with socket.create_connection(server.getsockname()) as c:
                box["sport"] = c.getsockname()[1]
                c.sendall(b"x" * 1000)
                conn = server.accept()[0]
                assert conn.recv(2000) == b"x" * 1000
                conn.close()
        time.sleep(1.2)
    finally:
        out, err = proc.stop()
    assert proc.returncode == 0, err
    rows = [row for line in out.splitlines() if line for row in json.loads(line)]
    for row in rows:
        check_event("top tcp", row)
    (mine,) = [r for r in rows if r["src"]["port"] == box["sport"]]
    assert mine["sent"] == 1000 and "received" not in mine  # 0: omitempty
    assert mine["pid"] == os.getpid() and mine["ipversion"] == 4


@pytest.mark.parametrize("gadget", ["snapshot process", "snapshot socket"])
def test_snapshots(igrun_cli: IgrunCli, gadget: str) -> None:
    with socket.socket() as listener:  # a socket for snapshot socket to show
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = igrun_cli.run(*gadget.split(), "--host", "-o", "json", "-m", "0")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events
    for event in events:
        check_event(gadget, event)
    if gadget == "snapshot process":
        (me,) = [e for e in events if e["pid"] == os.getpid()]
        assert me["uid"] == 0 and me["gid"] == 0 and me["tid"] == os.getpid()  # written: 0
    else:
        (mine,) = [e for e in events if e["src"]["port"] == port]
        assert mine["dst"] == {"addr": "0.0.0.0", "version": 4, "port": 0}
        assert mine["status"] == "LISTEN" and mine["protocol"] == "TCP"


def test_profile_cpu(igrun_cli: IgrunCli) -> None:
    box: dict[str, int] = {}

    def action() -> None:
        spin = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
        child = subprocess.Popen([sys.executable, "-c", spin])
        child.wait()
        box["pid"] = child.pid

    events, _ = run(igrun_cli, "profile cpu", action)
    mine = [e for e in events if e.get("pid") == box["pid"]]
    assert mine and all(e["count"] > 0 and e["comm"] for e in mine)
    assert any(e.get("userStack") for e in mine)
    assert "mountnsid" not in mine[0]  # ig's MntnsID is json:"-"


def test_traceloop(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    path = tmp_path / "traceloop-json"
    flags = ("--syscall-filters", "openat", "--max-syscalls", "20000")
    events, _ = run(igrun_cli, "traceloop", lambda: path.write_text("x"), *flags)
    mine = [
        e
        for e in events
        if e["pid"] == os.getpid() and any(p.get("content") == f'"{path}"' for p in e["parameters"])
    ]
    assert [e["syscall"] for e in mine] == ["openat"]
    assert int(mine[0]["ret"]) >= 3 and mine[0]["result"] == int(mine[0]["ret"])


def test_jsonpretty_follows_the_same_rules(igrun_cli: IgrunCli) -> None:
    """``-o jsonpretty`` (and yaml) are written by Python, not C: the same keys and rules."""
    mark = f"igrun-{uuid.uuid4().hex[:8]}"
    proc = igrun_cli.start("trace", "exec", "--host", "-o", "jsonpretty")
    subprocess.run(["/bin/echo", mark], check=True, capture_output=True)
    time.sleep(0.5)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    decoder, at, events = json.JSONDecoder(), 0, []
    while out[at:].strip():
        event, end = decoder.raw_decode(out, at + len(out[at:]) - len(out[at:].lstrip()))
        events.append(event)
        at = end
    (event,) = [e for e in events if e.get("args") == ["/bin/echo", mark]]
    check_event("trace exec", event)
    assert "ret" not in event and event["runtime"] == {} and event["type"] == "normal"


def test_top_block_io(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """Every row of every interval, as ig's top block-io writes its stats structs."""
    from test_top_block_io import WRITES, made_loop_device, started_child, windows

    with made_loop_device(tmp_path) as device, started_child(device) as child:
        proc = igrun_cli.start("top", "block-io", "--host", "--interval", "500ms", "-o", "json")
        child.go()
        time.sleep(1.2)
        out, err = proc.stop()
    assert proc.returncode == 0, err
    rows = [row for window in windows(out) for row in window]
    for row in rows:
        check_event("top block-io", row)
    mine = [r for r in rows if r.get("pid") == child.pid and r.get("write")]
    assert sum(r["ops"] for r in mine) == WRITES and mine[0]["comm"] == child.comm
    assert mine[0]["major"] == device.major and mine[0]["runtime"] == {}


def test_top_ebpf(igrun_cli: IgrunCli) -> None:
    run = igrun_cli.start("top", "ebpf", "-o", "json", "-m", "0", read_stdout=False)
    try:
        assert run.stdout is not None
        line = run.stdout.readline()
    finally:
        _, err = run.stop()
    assert run.returncode == 0, err
    assert run.stdout is not None
    run.stdout.close()
    rows = json.loads(line)
    for row in rows:
        check_event("top ebpf", row)
    # Its own iterator is among them, held by this igrun, and ran in the interval.
    (own,) = [r for r in rows if run.pid in [p["pid"] for p in r.get("processes", [])]]
    assert own["name"] == "ig_top_ebpf_it" and own["type"] == "Tracing"
    assert own["currentRunCount"] > 0 and own["currentRuntime"] > 0
    assert own["runtime"] == {} and own["k8s"] == {"node": node_name()}


def test_network(igrun_cli: IgrunCli) -> None:
    box: dict[str, int] = {}

    def action() -> None:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            box["port"] = server.getsockname()[1]
            with socket.create_connection(("127.0.0.1", box["port"])) as c:
                box["sport"] = c.getsockname()[1]
                server.accept()[0].close()

    events, _ = run(igrun_cli, "trace network", action, "-F", f"pid:{os.getpid()}")
    mine = [e for e in events if e.get("port") == box["port"]]
    assert sorted(e["pktType"] for e in mine) == ["HOST", "OUTGOING"], events
    (out,) = [e for e in mine if e["pktType"] == "OUTGOING"]
    assert out["dst"] == {"addr": "127.0.0.1", "version": 4, "port": box["port"]}
    assert out["src"] == {"addr": "127.0.0.1", "version": 4, "port": box["sport"]}
    assert out["proto"] == "TCP" and out["netnsid"] > 0 and out["runtime"] == {}
