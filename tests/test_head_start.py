"""The head start (``igrun.core.run.headstart``): a built-in trace gadget's object loaded and
attached while the launcher imports, taken by the run only when it is the object the run
would load, and otherwise dropped with every event it caught."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from containerlab import IMAGE
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf
CAP_SYS_CHROOT = 18


def head_start_line(stderr: str) -> str:
    (line,) = [ln for ln in stderr.splitlines() if "[debug] head_start " in ln]
    return line


def test_the_run_takes_the_head_start_and_shows_exact_events(
    igrun_cli: IgrunCli, tmp_path: Path
) -> None:
    program = tmp_path / f"p{uuid.uuid4().hex[:12]}"
    shutil.copy("/bin/true", program)
    proc = igrun_cli.start("-v", "trace", "exec", "--host", "-o", "json")
    child = subprocess.run([str(program), "hello"], check=True)
    time.sleep(0.3)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    assert "used=True" in head_start_line(err), err
    mine = [e for e in igrun_cli.events(out) if e["args"][:1] == [str(program)]]
    assert len(mine) == 1, mine
    assert mine[0]["args"] == [str(program), "hello"]
    assert mine[0]["ppid"] == os.getpid()
    assert child.returncode == 0 and "ret" not in mine[0]  # 0: omitted, as ig does
    proc.assert_released()


def test_a_head_start_the_run_would_not_load_is_dropped_with_its_events(
    igrun_cli: IgrunCli,
) -> None:
    """Failing execs every few ms from before the launch: the head start (compiled to show
    every exec) catches some, but ``IGRUN_IGNORE_ERRORS=true`` (which the launcher's guess
    does not look at) sets another constant, so the run drops it and loads its own, and no
    failure is shown."""
    missing = f"/nonexistent-{uuid.uuid4().hex[:12]}"
    loop = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time\n"
            "while True:\n"
            "    try:\n"
            f"        os.execv({missing!r}, [{missing!r}])\n"
            "    except OSError:\n"
            "        time.sleep(0.003)\n",
        ]
    )
    try:
        env = {**os.environ, "IGRUN_IGNORE_ERRORS": "true"}
        proc = igrun_cli.start("-v", "trace", "exec", "--host", "-o", "json", env=env)
        time.sleep(0.3)
        out, err = proc.stop()
    finally:
        loop.kill()
        loop.wait()
    assert proc.returncode == 0, err
    assert "used=False why='constant ignore_failed'" in head_start_line(err), err
    assert [e for e in igrun_cli.events(out) if e.get("ret")] == []
    assert missing not in out
    proc.assert_released()


def test_no_head_start_with_a_gadget_flag_or_when_turned_off(igrun_cli: IgrunCli) -> None:
    done = igrun_cli.run("-v", "trace", "exec", "--host", "--ignore-errors", "-t", "200ms")
    assert done.returncode == 0, done.stderr
    assert "head_start" not in done.stderr  # a constant the compiled object does not have
    env = {**os.environ, "IGRUN_NO_HEAD_START": "1"}
    done = igrun_cli.run("-v", "trace", "exec", "--host", "-t", "200ms", env=env)
    assert done.returncode == 0, done.stderr
    assert "head_start" not in done.stderr


def echo_loop(word: str) -> str:
    """A shell loop exec'ing ``/bin/echo WORD`` every 3 ms."""
    return f"while true; do /bin/echo {word} >/dev/null; usleep 3000; done"


def four_loops(
    podman: Podman,  # noqa: F811
    tag: str,
    loop: Callable[[str], str],
    private: str,
    setup: str,
) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    """Two containers (A, B), a process in a namespace of its own that is no container
    (``unshare PRIVATE``, after ``SETUP`` there) and a host process (H), each running the
    shell loop ``loop(WORD)``, WORD being its letter and ``tag``: the containers' names by
    letter, and the other two processes."""
    names = {w: f"igrun-hs-{w.lower()}-{tag}" for w in ("A", "B")}
    for word, name in names.items():
        podman.names.append(name)
        podman("run", "-d", "--pull=never", "--network", "none", "--name", name, IMAGE,
               "sh", "-c", loop(f"{word}{tag}"))  # fmt: skip
    own = ["unshare", private, "/bin/busybox", "sh", "-c", setup + loop(f"U{tag}")]
    loops = [
        subprocess.Popen(own),
        subprocess.Popen(["/bin/busybox", "sh", "-c", loop(f"H{tag}")]),
    ]
    return names, loops


def head_started_run(
    igrun_cli: IgrunCli,
    seconds: float,
    *args: str,
    while_running: Callable[[int], None] | None = None,
) -> tuple[str, str]:
    """``igrun -v ARGS`` for ``seconds`` (then ``while_running(its pid)``), checked to have
    taken the head start, ended well and released all it made: its output and its log."""
    proc = igrun_cli.start("-v", *args)
    time.sleep(seconds)
    if while_running is not None:
        while_running(proc.pid)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    assert "used=True" in head_start_line(err), err
    proc.assert_released()
    return out, err


def test_without_host_the_head_start_shows_only_the_selected_containers(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
) -> None:
    """Without ``--host`` the head start's object filters by mount namespace from its attach,
    through a map that holds every namespace but the host's until the run's first container
    scan says which are wanted. Two containers, a process in a private mount namespace that
    is no container, and a host process exec every 3 ms from before the launch: with ``-c
    A`` only A's execs are shown, also from the first moments; without ``-c``, A's and B's;
    never the others'."""
    tag = uuid.uuid4().hex[:8]
    names, loops = four_loops(podman, tag, echo_loop, "-m", "")
    try:
        time.sleep(0.2)
        shown = {}
        for selection in (["-c", names["A"]], []):
            out, _ = head_started_run(igrun_cli, 0.6, "trace", "exec", *selection, "-o", "json")
            words = [e["args"][1] for e in igrun_cli.events(out) if e["args"][:1] == ["/bin/echo"]]
            owners = {
                e["args"][1]: e.get("runtime", {}).get("containerName")
                for e in igrun_cli.events(out)
                if e["args"][:1] == ["/bin/echo"]
            }
            shown[bool(selection)] = (set(words), owners)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    words, owners = shown[True]
    assert words == {f"A{tag}"}, words
    assert owners == {f"A{tag}": names["A"]}
    words, owners = shown[False]
    assert {f"A{tag}", f"B{tag}"} <= words and not {f"U{tag}", f"H{tag}"} & words, words
    assert owners[f"B{tag}"] == names["B"]


def test_the_head_start_loads_without_importing_numpy() -> None:
    # numpy's import (about 100 ms) would hold the interpreter's lock while the head start
    # thread waits for it: the loader and what it needs must import without it.
    code = (
        "import sys, igrun.core.run.headstart, igrun.core.bpf.objects;print('numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_trace_capabilities_takes_a_head_start_with_this_boots_kernel_addresses(
    igrun_cli: IgrunCli,
) -> None:
    """Its object needs this boot's kernel addresses (``callers``), which no compiled object
    holds: the head start sets them from the cache, and a check's audit flag (read through
    them) is right."""
    from igrun.plugins.trace_capabilities import cached_caller_ranges

    assert any(cached_caller_ranges())  # the cache a first start of the boot leaves
    proc = igrun_cli.start("-v", "trace", "capabilities", "--host", "-o", "json")
    child = subprocess.Popen([sys.executable, "-c", "import os; os.chroot('/')"])
    child.wait()
    time.sleep(0.3)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    assert "used=True" in head_start_line(err), err
    assert child.returncode == 0
    mine = [
        (e["syscall"], e["capName"], e["verdict"], e["audit"], e["insetid"])
        for e in igrun_cli.events(out)
        if e["pid"] == child.pid and e["cap"] == CAP_SYS_CHROOT
    ]
    assert mine == [("chroot", "SYS_CHROOT", "Allow", 1, False)], mine
    proc.assert_released()


def test_trace_fsslower_takes_a_head_start_with_its_own_flags(igrun_cli: IgrunCli) -> None:
    """``-m`` is fsslower's ``--min`` (and not an interpreter's ``-m``): the head start reads
    it and ``-f`` into the object's constants, and the run's events are those it asked for."""
    name = f"hs{uuid.uuid4().hex[:12]}"
    proc = igrun_cli.start("-v", "trace", "fsslower", "--host", "-m", "0", "-f", "tmpfs",
                           "-o", "json")  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-c", f"import os; fd = os.open('/dev/shm/{name}', os.O_CREAT | "
         f"os.O_WRONLY, 0o600); os.fsync(fd); os.unlink('/dev/shm/{name}')"]
    )  # fmt: skip
    child.wait()
    time.sleep(0.3)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    assert "used=True" in head_start_line(err), err
    ops = [e["op"] for e in igrun_cli.events(out) if e["pid"] == child.pid and e["file"] == name]
    assert ops == ["O", "F"], ops
    proc.assert_released()


def test_execs_during_the_start_wait_in_a_ring_big_enough(igrun_cli: IgrunCli) -> None:
    """About 400 execs a second from before the launch: between the head start's attach and
    the run's first read (a few hundred ms) they wait in its ring, which holds 2 MiB (311 of
    exec's 6.7 KB records; the gadget's default 256 KiB holds 38): none is lost."""
    storm = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time\n"
            "while True:\n"
            "    os.waitpid(os.posix_spawn('/bin/true', ['/bin/true'], os.environ), 0)\n"
            "    time.sleep(0.0025)\n",
        ]
    )
    try:
        time.sleep(0.2)
        proc = igrun_cli.start("-v", "trace", "exec", "--host", "-o", "json")
        time.sleep(0.3)
        out, err = proc.stop()
    finally:
        storm.kill()
        storm.wait()
    assert proc.returncode == 0, err
    assert "used=True" in head_start_line(err), err
    assert "bytes=2097152" in err, err
    assert not re.search(r"lost \d+ events", err), err
    execs = [e for e in igrun_cli.events(out) if e.get("ppid") == storm.pid]
    assert len(execs) > 40, len(execs)  # more than the default ring could have held
    proc.assert_released()


DEAF_CONNECT = """
import ctypes, socket, struct
program = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # ret #0
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", 1, ctypes.addressof(program)))
listener.listen(8)
print(listener.getsockname()[1], flush=True)
client = socket.socket()
client.settimeout(0.3)
try:
    client.connect(listener.getsockname())
except OSError:
    pass
"""
"""A listener whose socket filter drops every packet (SO_ATTACH_FILTER, ``ret #0``), and a
connect to it: the SYN is dropped by the listener's filter, owned by this process."""


def test_trace_tcpdrop_takes_a_head_start_with_the_socket_enricher(igrun_cli: IgrunCli) -> None:
    """The object looks socket owners up: the head start starts the socket enricher before
    it loads and the run's sockets operator takes that enricher, so the run uses the head
    start and names the owner of a dropped SYN."""
    proc = igrun_cli.start("-v", "trace", "tcpdrop", "--host", "-o", "json")
    child = subprocess.Popen(
        [sys.executable, "-c", DEAF_CONNECT], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    port = int(child.stdout.readline())
    assert child.wait(10) == 0
    time.sleep(0.3)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    assert "used=True" in head_start_line(err), err
    mine = {
        (e["pid"], e["reason"], e["tcpflags"], e["ownerKnown"])
        for e in igrun_cli.events(out)
        if e["dst"]["port"] == port
    }
    assert mine == {(child.pid, "SOCKET_FILTER", "SYN", True)}, mine
    proc.assert_released()


def nslookup_loop(word: str) -> str:
    """A shell loop asking for ``WORD.test`` every 3 ms (nothing answers on the loopback: each
    query is one packet leaving)."""
    return f"while true; do nslookup {word}.test 127.0.0.1 >/dev/null 2>&1; usleep 3000; done"


def packet_sockets(pid: int, of: int) -> int:
    """How many packet sockets process ``pid`` has in the network namespace of process
    ``of``."""
    mine = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                mine.add(int(link[8:-1]))
    lines = Path(f"/proc/{of}/net/packet").read_text().splitlines()[1:]
    return len({int(line.split()[-1]) for line in lines if line.strip()} & mine)


def test_trace_dns_without_host_takes_a_head_start_only_where_the_selection_is(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
) -> None:
    """A packet gadget's head start attaches its socket filter in every network namespace but
    the host's before the run knows any container, and the run closes those no selected
    container is in after its first scan. Two containers, a process in a private network
    namespace that is no container and a host process ask every 3 ms from before the launch:
    with ``-c A`` only A's queries are shown, through the head start's socket (adopted, not
    made again), and the run keeps no socket in B's namespace; without ``-c``, A's and B's;
    never the others'."""
    tag = uuid.uuid4().hex[:8]
    names, loops = four_loops(podman, tag, nslookup_loop, "-n", "ip link set lo up; ")
    pids = {w: int(podman("inspect", "-f", "{{.State.Pid}}", n)) for w, n in names.items()}
    try:
        time.sleep(0.3)
        shown = {}
        for selection in (["-c", names["A"]], []):
            held: dict[str, int] = {}
            out, err = head_started_run(
                igrun_cli, 0.8, "trace", "dns", *selection, "-o", "json",
                while_running=lambda pid, held=held: held.update(
                    {w: packet_sockets(pid, p) for w, p in pids.items()}
                ),
            )  # fmt: skip
            (adopted,) = [ln for ln in err.splitlines() if "head_start_packet_filter" in ln]
            queries = [e for e in igrun_cli.events(out) if e.get("qr") == "Q"]
            owners = {
                e["name"].split(".")[0]: e.get("runtime", {}).get("containerName")
                for e in queries
                if e["name"].endswith(f"{tag}.test.")
            }
            shown[bool(selection)] = (owners, adopted, held)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    owners, adopted, held = shown[True]
    assert owners == {f"A{tag}": names["A"]}, owners
    assert "namespaces=1 owners=True" in adopted, adopted
    assert held == {"A": 1, "B": 0}, held
    owners, adopted, held = shown[False]
    assert owners == {f"A{tag}": names["A"], f"B{tag}": names["B"]}, owners
    assert held == {"A": 1, "B": 1}, held


LOGGED_GETPGID = """
import ctypes, os, struct, sys, time
nr = {"x86_64": 121, "aarch64": 155}[os.uname().machine]
insns = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in (
    (0x20, 0, 0, 0),  # ld [0]: the syscall's number
    (0x15, 0, 1, nr),  # jeq getpgid
    (0x06, 0, 0, 0x7FFC0000),  # ret LOG
    (0x06, 0, 0, 0x7FFF0000),  # ret ALLOW
)))
fprog = ctypes.create_string_buffer(struct.pack("HL", 4, ctypes.addressof(insns)))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, fprog, 0, 0):
    sys.exit(f"cannot load the seccomp filter: {ctypes.get_errno()}")
print("going", flush=True)
while True:
    os.getpgid(0)
    time.sleep(0.002)
"""
"""A process that loads a seccomp filter logging (``SECCOMP_RET_LOG``) its every ``getpgid``,
and calls it every 2 ms: an ``AUDIT_SECCOMP`` record each time."""


@pytest.mark.parametrize("head_start", [True, False])
def test_audit_seccomp_reads_the_audit_stream_from_the_launchers_first_moments(
    igrun_cli: IgrunCli, monkeypatch: pytest.MonkeyPatch, head_start: bool
) -> None:
    """``audit seccomp`` is no ``trace`` gadget, but takes a head start: the launcher opens
    the kernel's audit stream first thing (its records wait on the socket) and loads the
    gadget's object in the thread; the run takes both. A process logged every 2 ms from
    before the launch: its first record shown was made in the first half of the time from
    launch to ``ready``; without the head start, only in the second (the stream is opened
    by the gadget, once igrun is imported)."""
    if not head_start:
        monkeypatch.setenv("IGRUN_NO_HEAD_START", "1")
    child = subprocess.Popen([sys.executable, "-c", LOGGED_GETPGID], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"going\n"
        comm = Path(f"/proc/{child.pid}/comm").read_text().strip()
        launch = time.time_ns()  # events carry wall-clock times
        proc = igrun_cli.start("-v", "audit", "seccomp", "--host", "-o", "json")
        ready = time.time_ns()
        time.sleep(0.2)
        out, err = proc.stop()
    finally:
        child.kill()
        child.wait()
    assert proc.returncode == 0, err
    mine = [e for e in igrun_cli.events(out) if e["pid"] == child.pid]
    assert mine and {(e["syscall"], e["code"], e["comm"]) for e in mine} == {
        ("getpgid", "log", comm)
    }, mine
    first = min(e["timestamp"] for e in mine)
    halfway = launch + (ready - launch) // 2
    if head_start:
        assert "used=True" in head_start_line(err), err
        assert first < halfway, (first - launch, ready - launch)
    else:
        assert "[debug] head_start " not in err, err
        assert first > halfway, (first - launch, ready - launch)
    proc.assert_released()
