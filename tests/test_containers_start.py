"""Containers that start while a gadget runs: every one traced from its first instruction,
named by its runtime, and runc never held long by igrun (:mod:`igrun.core.containers.starthold`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from containerlab import IMAGE, crun, needs, oci_bundle  # noqa: F401 (crun: a fixture)
from test_containers import podman_env  # noqa: F401 (a fixture)
from test_runtimes import CTR_NAMESPACE, Ctr, Docker, ctr, docker  # noqa: F401 (fixtures)

from igrun.core.containers.starthold import Birth, StartHold

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

COUNT = 50
ARGS = ["/bin/cat", "/etc/passwd"]
"""What each container runs: one exec (its first process) and one open."""
CGROUP_PARENT = "igrun-start"
PODMAN_RUN = ("podman", "run", "--rm", "--pull=never", "--network", "none")


class Traced:
    """A running igrun whose output is read all along: a full pipe would stall it (its logs,
    and with them the start hold, which would then let runc go after its bound; or its
    events, which would be named after the collection forgot their container)."""

    def __init__(self, cli: IgrunCli, *args: str) -> None:
        self.cli = cli
        self.proc = cli.start(*args)  # read all along by igrun.testing's runner
        self.out = self.err = ""

    def end(self) -> None:
        """End the run (Ctrl-C, then a kill if it does not end): never raises, so a
        failing check of one run cannot leave another running."""
        try:
            self.out, self.err = self.proc.stop(signal.SIGINT, timeout=30)
        except AssertionError as exc:  # killed after the timeout
            self.err = str(exc)

    def events(self) -> list[dict[str, Any]]:
        """The ended run's events, once it is checked to have ended well and held every
        container it saw start."""
        out, err = self.out, self.err
        assert self.proc.returncode == 0, err
        assert "container_start_not_held" not in err, err
        return self.cli.events(out)

    def stop(self) -> list[dict[str, Any]]:
        return stop(self)[0]


def stop(*runs: Traced) -> list[list[dict[str, Any]]]:
    """Let the last events drain, end every run, then check each and return its events."""
    time.sleep(1)
    for run in runs:
        run.end()
    return [run.events() for run in runs]


def _assert_all_traced(
    names: list[str], execs: list[dict[str, Any]], opens: list[dict[str, Any]]
) -> None:
    """Each container's one exec of ``ARGS`` and its one open of /etc/passwd, named."""
    exec_names = Counter(e["runtime"]["containerName"] for e in execs if e["args"] == ARGS)
    open_names = Counter(
        e["runtime"]["containerName"]
        for e in opens
        if e["comm"] == "cat" and e["path"] == "/etc/passwd" and e.get("err", 0) == 0
    )
    assert exec_names == Counter(names), set(names) ^ set(exec_names)
    assert open_names == Counter(names), set(names) ^ set(open_names)


def _trace_both(cli: IgrunCli, names: list[str]) -> tuple[Traced, Traced]:
    selected = ",".join(names)
    return (
        Traced(cli, "trace", "exec", "-o", "json", "-c", selected),
        Traced(cli, "trace", "open", "-o", "json", "-c", selected),
    )


def test_fifty_podman_run_rm_containers_are_traced_and_named(
    igrun_cli: IgrunCli,
    podman_env: dict[str, str],  # noqa: F811
) -> None:
    """Back-to-back ``podman run --rm`` (conmon, then runc create and start), each reusing
    the mount-ns id of the one before: all traced, from the first exec, by name."""
    tag = uuid.uuid4().hex[:6]
    names = [f"igrun-start-{tag}-{i}" for i in range(COUNT)]
    exec_events = _podman_runs_traced(igrun_cli, podman_env, names)
    (runtime,) = {e["runtime"]["runtimeName"] for e in exec_events}
    assert runtime == "podman"


def _podman_runs_traced(
    cli: IgrunCli, env: dict[str, str], names: list[str], *flags: str
) -> list[dict[str, Any]]:
    """``podman run --rm FLAGS`` each of ``names`` in turn, under ``trace exec`` and ``trace
    open`` selecting them; checks each was traced and named, and returns the execs."""
    execs, opens = _trace_both(cli, names)
    try:
        for name in names:
            subprocess.run(
                [*PODMAN_RUN, *flags, "--name", name, IMAGE, *ARGS],
                env=env,
                check=True,
                capture_output=True,
                timeout=60,
            )
    finally:
        exec_events, open_events = stop(execs, opens)
    _assert_all_traced(names, exec_events, open_events)
    return exec_events


def test_podman_containers_run_by_crun_are_traced_and_named(
    igrun_cli: IgrunCli,
    podman_env: dict[str, str],  # noqa: F811
    crun: None,  # noqa: F811
) -> None:
    """podman with crun (``crun create``, then ``crun start``): each container held at crun's
    first status write, while its init waits, so every one is traced from its first exec and
    named by podman."""
    tag = uuid.uuid4().hex[:6]
    names = [f"igrun-crun-{tag}-{i}" for i in range(20)]
    exec_events = _podman_runs_traced(igrun_cli, podman_env, names, "--runtime", "crun")
    assert {e["runtime"]["runtimeName"] for e in exec_events if e["args"] == ARGS} == {"podman"}


def test_bare_crun_runs_are_held_at_their_inits_first_open_in_their_root(
    igrun_cli: IgrunCli,
    rootfs: Path,
    tmp_path: Path,
    crun: None,  # noqa: F811
) -> None:
    """``crun run`` (no manager) runs the container's program before it writes its state:
    each is held instead when its init first opens something in the container's root
    folder (its bundle's config names it), so its very first exec is traced and named: five
    one after the other, and three at once in the same root folder, with no warning."""
    quick = oci_bundle("crun", tmp_path / "quick", rootfs, ARGS)
    slow = oci_bundle("crun", tmp_path / "slow", rootfs, ["/bin/sleep", "0.5"])
    ids = [f"igrun-crun-run-{uuid.uuid4().hex[:6]}" for _ in range(8)]
    traced = Traced(igrun_cli, "trace", "exec", "-o", "json", "-c", ",".join(ids))
    try:
        for id in ids[:5]:
            subprocess.run(
                ["crun", "run", "--bundle", str(quick), id],
                check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
            )  # fmt: skip
            # Each reuses the last one's mount-ns id. The collection then asks for the new
            # start to the microsecond (test_containers checks that split); kept a clock
            # tick apart, this test is about the hold alone.
            time.sleep(0.02)
        together = [
            subprocess.Popen(
                ["crun", "run", "--bundle", str(slow), id],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )
            for id in ids[5:]
        ]  # fmt: skip
        assert [p.wait(timeout=30) for p in together] == [0, 0, 0]
    finally:
        for id in ids:
            subprocess.run(["crun", "delete", "-f", id], capture_output=True)
        traced.end()
    events = traced.events()  # ended well, and no start went unheld
    named = [(e["runtime"]["containerName"], e["runtime"]["runtimeName"]) for e in events]
    assert named[:5] == [(id, "crun") for id in ids[:5]]
    assert all(e["args"] == ARGS for e in events[:5])
    assert sorted(named[5:]) == sorted((id, "crun") for id in ids[5:])
    assert all(e["args"] == ["/bin/sleep", "0.5"] for e in events[5:])


def test_a_crun_run_is_held_whichever_way_it_names_its_bundle_and_config(
    igrun_cli: IgrunCli,
    rootfs: Path,
    tmp_path: Path,
    crun: None,  # noqa: F811
) -> None:
    """crun resolves a relative ``--bundle`` and ``--config`` from where it was started, and
    changes into the bundle before it makes its state: the hold finds the container's root
    all the same. A relative bundle, a config outside the bundle named by its absolute path,
    one named relatively by crun started from a shell in its folder, and one named relatively
    by crun started in another folder than its parent's (a program's child started with a
    working folder of its own: where it was started is read at its exec): each container's
    first exec is traced and named (a root not found would leave the exec untraced, with a
    ``container_start_not_held`` warning)."""
    oci_bundle("crun", tmp_path / "b", rootfs, ARGS)
    bare = oci_bundle("crun", tmp_path / "bare", rootfs, ARGS)
    (bare / "config.json").rename(tmp_path / "elsewhere.json")
    ids = [f"igrun-crun-cfg-{uuid.uuid4().hex[:6]}" for _ in range(4)]
    ways = [
        f"crun run --bundle b {ids[0]}",
        f"crun run -bbare --config={tmp_path / 'elsewhere.json'} {ids[1]}",
        f"crun run --bundle={bare} -f elsewhere.json {ids[2]}",
    ]
    traced = Traced(igrun_cli, "trace", "exec", "-o", "json", "-c", ",".join(ids))
    try:
        for way in ways:  # crun a child of the shell (not exec'd by it): "; exit"
            subprocess.run(
                ["sh", "-c", f"cd {tmp_path} && {way}; exit $?"],
                check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
            )  # fmt: skip
            time.sleep(0.02)  # a clock tick apart (see above)
        subprocess.run(
            ["crun", "run", f"--bundle={bare}", "-f", "elsewhere.json", ids[3]],
            check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        for id in ids:
            subprocess.run(["crun", "delete", "-f", id], capture_output=True)
        traced.end()
    events = traced.events()  # ended well, and no start went unheld
    assert [(e["runtime"]["containerName"], e["args"]) for e in events] == [
        (id, ARGS) for id in ids
    ]


def test_a_crun_run_whose_root_cannot_be_found_in_time_is_said_and_learned_late(
    igrun_cli: IgrunCli,
    rootfs: Path,
    tmp_path: Path,
    crun: None,  # noqa: F811
) -> None:
    """A relative ``--config`` of a crun whose exec igrun did not see (a crun binary of its
    own, not among those marked) started in another folder than its parent's: where crun
    found it cannot be known once crun is in its bundle, so the container is learned at its
    state write. When its init ran its program (sh) before that, as it mostly does, or may
    be starting it, the miss is said: one ``container_start_not_held`` warning naming it;
    never missed silently (on a busy host the state write can come first: then sh is
    traced). What it runs later (cat, 0.3 s after) is traced and named either way."""
    bare = oci_bundle(
        "crun", tmp_path / "bare", rootfs, ["/bin/sh", "-c", "sleep 0.3; exec /bin/cat /etc/passwd"]
    )
    (bare / "config.json").rename(tmp_path / "elsewhere.json")
    own = tmp_path / "bin" / "crun"
    own.parent.mkdir()
    shutil.copy2(shutil.which("crun") or "crun", own)
    id = f"igrun-crun-late-{uuid.uuid4().hex[:6]}"
    traced = Traced(igrun_cli, "trace", "exec", "-o", "json", "-c", id)
    try:
        subprocess.run(
            [str(own), "run", f"--bundle={bare}", "-f", "elsewhere.json", id],
            check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        subprocess.run(["crun", "delete", "-f", id], capture_output=True)
        traced.end()
    assert traced.proc.returncode == 0, traced.err
    warnings = [ln for ln in traced.err.splitlines() if "container_start_not_held" in ln]
    events = [(e["runtime"]["containerName"], e["args"]) for e in igrun_cli.events(traced.out)]
    assert events[-1] == (id, ["/bin/cat", "/etc/passwd"]), events
    assert {name for name, _ in events} == {id}, events
    assert len(warnings) <= 1, traced.err
    if events[0][1][0] != "/bin/sh":  # missed, and said
        assert len(warnings) == 1 and f"container={id[:12]}" in warnings[0], (events, traced.err)


def test_with_host_every_podman_container_is_named_never_by_its_id(
    igrun_cli: IgrunCli,
    podman_env: dict[str, str],  # noqa: F811
) -> None:
    """``--host`` filters nothing in the kernel: what is checked is the name each event
    gets, from podman's own list read while runc is held."""
    tag = uuid.uuid4().hex[:6]
    names = [f"igrun-host-{tag}-{i}" for i in range(10)]
    traced = Traced(igrun_cli, "trace", "exec", "-o", "json", "--host")
    try:
        for name in names:
            subprocess.run(
                [*PODMAN_RUN, "--name", name, IMAGE, "/bin/echo", name],
                env=podman_env,
                check=True,
                capture_output=True,
                timeout=60,
            )
    finally:
        events = traced.stop()
    for name in names:
        (event,) = [e for e in events if e["args"] == ["/bin/echo", name]]
        assert event["runtime"]["containerName"] == name
        assert event["runtime"]["runtimeName"] == "podman"
        assert len(event["runtime"]["containerId"]) == 64


@pytest.fixture
def containerd(ctr: Ctr) -> list[str]:  # noqa: F811
    """``ctr`` in the test namespace of the session's containerd (see test_runtimes)."""
    return ["ctr", "-n", CTR_NAMESPACE]


def test_containerd_containers_are_traced_and_named(
    igrun_cli: IgrunCli, containerd: list[str]
) -> None:
    """containerd's shim runs runc create and start with its own ``--root``; the name is the
    ``name`` label ctr writes into the bundle's annotations."""
    tag = uuid.uuid4().hex[:6]
    names = [f"igrun-ctr-{tag}-{i}" for i in range(10)]
    selected = ",".join(names)
    traced = Traced(
        igrun_cli, "trace", "exec", "-o", "json", "-c", selected,
        "--containerd-namespace", CTR_NAMESPACE,
    )  # fmt: skip
    try:
        for i, name in enumerate(names):
            subprocess.run(
                [
                    *containerd,
                    "run",
                    "--rm",
                    "--label",
                    f"name={name}",
                    IMAGE,
                    f"ctr{i}-{tag}",
                    *ARGS,
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
    finally:
        events = traced.stop()
    exec_names = Counter(e["runtime"]["containerName"] for e in events if e["args"] == ARGS)
    assert exec_names == Counter(names)
    assert {e["runtime"]["runtimeName"] for e in events if e["args"] == ARGS} == {"containerd"}


def test_docker_run_rm_containers_are_traced_and_named(
    igrun_cli: IgrunCli,
    docker: Docker,  # noqa: F811
) -> None:
    """Docker starts runc through containerd's shim, with a ``--root`` under its exec root;
    the name comes from Docker's API, asked while runc is held."""
    tag = uuid.uuid4().hex[:6]
    names = [f"igrun-dk-{tag}-{i}" for i in range(10)]
    execs, opens = _trace_both(igrun_cli, names)
    try:
        for name in names:
            docker("run", "--rm", "--network", "none", "--name", name, IMAGE, *ARGS)
    finally:
        exec_events, open_events = stop(execs, opens)
    _assert_all_traced(names, exec_events, open_events)
    assert {e["runtime"]["runtimeName"] for e in exec_events if e["args"] == ARGS} == {"docker"}


@pytest.fixture
def runc_bundles(rootfs: Path, tmp_path: Path) -> Iterator[Any]:
    """Makes OCI bundles for plain runc containers that run ``args`` and are named ``name``
    (an annotation); removes what runc leaves behind."""
    needs("runc")

    def make(id: str, name: str, args: list[str]) -> Path:
        cgroup = f"/{CGROUP_PARENT}/{id}"
        return oci_bundle("runc", tmp_path / id, rootfs, args, {"name": name}, cgroup)

    ids: list[str] = []
    yield make, ids
    for id in ids:
        subprocess.run(["runc", "delete", "-f", id], capture_output=True)
    for cgroup in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}"):
        for child in cgroup.iterdir():
            if child.is_dir():
                child.rmdir()
        cgroup.rmdir()


def _runc_run(bundle: Path, id: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    # The container inherits runc's stdio: a captured pipe would never reach EOF.
    return subprocess.run(
        ["runc", "run", "--bundle", str(bundle), id],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=timeout,
    )


def test_fifty_runc_run_containers_are_traced_and_named(
    igrun_cli: IgrunCli, runc_bundles: Any
) -> None:
    """``runc run`` creates and starts in one process (no ``runc start`` to hold): each
    container is still known, by its bundle's name annotation, before it runs."""
    make, ids = runc_bundles
    tag = uuid.uuid4().hex[:6]
    names = [f"igrun-runc-{tag}-{i}" for i in range(COUNT)]
    bundles = [
        (f"igrun-runc-{tag}-id{i}", make(f"igrun-runc-{tag}-id{i}", n, ARGS))
        for i, n in enumerate(names)
    ]
    execs, opens = _trace_both(igrun_cli, names)
    try:
        for id, bundle in bundles:
            ids.append(id)
            assert _runc_run(bundle, id).returncode == 0
    finally:
        exec_events, open_events = stop(execs, opens)
    _assert_all_traced(names, exec_events, open_events)
    by_name = {e["runtime"]["containerName"]: e for e in exec_events if e["args"] == ARGS}
    assert {by_name[n]["runtime"]["containerId"] for n in names} == {i for i, _ in bundles}
    assert {e["runtime"]["runtimeName"] for e in by_name.values()} == {"runc"}


def test_runc_with_its_own_root_is_held_too(
    igrun_cli: IgrunCli, runc_bundles: Any, tmp_path: Path
) -> None:
    """The state folder is found from the fifo runc hands its init, whatever ``--root``."""
    make, _ = runc_bundles
    root = tmp_path / "runc-root"
    tag = uuid.uuid4().hex[:6]
    names = [f"igrun-root-{tag}-{i}" for i in range(5)]
    bundles = [(f"igrun-root-{tag}-id{i}", n) for i, n in enumerate(names)]
    bundles = [(id, make(id, n, ARGS)) for id, n in bundles]
    traced = Traced(igrun_cli, "trace", "exec", "-o", "json", "-c", ",".join(names))
    try:
        for id, bundle in bundles:
            subprocess.run(
                ["runc", "--root", str(root), "run", "--bundle", str(bundle), id],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
                check=True,
            )
    finally:
        events = traced.stop()
    assert Counter(e["runtime"]["containerName"] for e in events if e["args"] == ARGS) == Counter(
        names
    )


def test_a_slow_igrun_delays_runc_by_the_bound_at_most(
    runc_bundles: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A runtime answer that never comes: runc waits the bound, then goes on, and the hold
    says so."""
    make, ids = runc_bundles
    id = f"igrun-slow-{uuid.uuid4().hex[:6]}"
    bundle = make(id, id, ARGS)
    seen: list[Birth] = []

    def learn(birth: Birth) -> None:
        seen.append(birth)
        time.sleep(10)

    hold = StartHold(learn, bound=0.5)
    assert hold.start()
    try:
        ids.append(id)
        began = time.monotonic()
        assert _runc_run(bundle, id).returncode == 0
        took = time.monotonic() - began
    finally:
        hold.stop()
    (birth,) = [b for b in seen if b.id == id]
    assert birth.state_dir == Path("/run/runc") / id
    assert birth.bundle == str(bundle)
    assert 0.5 <= took < 3.0, took
    assert hold.expired >= 1
    assert "container_start_not_held" in capsys.readouterr().err


HOLDER = """
import sys, time
from igrun.core.containers.starthold import StartHold

def learn(birth):
    print("held", birth.id, flush=True)
    time.sleep(120)

hold = StartHold(learn, bound=float(sys.argv[1]))
assert hold.start()
print("ready", flush=True)
time.sleep(120)
"""
"""A process that holds every runc start and never learns the container: it says ``held ID``
and waits, until the bound (its argument) runs out."""


@contextlib.contextmanager
def holder_process(bound: float) -> Iterator[subprocess.Popen[str]]:
    """:data:`HOLDER`, ready; killed (and let go on, if stopped) afterwards."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(bound)],
        stdout=subprocess.PIPE, text=True, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "ready\n"
        yield holder
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.communicate()


@contextlib.contextmanager
def runc_running(bundle: Path, id: str) -> Iterator[subprocess.Popen[bytes]]:
    """``runc run`` of ``bundle`` as ``id``, in the background; killed if still running."""
    runc = subprocess.Popen(
        ["runc", "run", "--bundle", str(bundle), id],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield runc
    finally:
        if runc.poll() is None:
            runc.kill()
            runc.wait()


def wait_held(holder: subprocess.Popen[str], id: str) -> None:
    """Until ``holder`` says it holds container ``id``."""
    assert holder.stdout is not None
    while (line := holder.stdout.readline()) != f"held {id}\n":
        assert line, holder.stderr.read() if holder.stderr else ""


def test_killing_igrun_mid_hold_lets_runc_go_on(runc_bundles: Any) -> None:
    """The kernel answers for a closed fanotify group: SIGKILL ends the hold at once."""
    make, ids = runc_bundles
    id = f"igrun-kill-{uuid.uuid4().hex[:6]}"
    bundle = make(id, id, ARGS)
    with holder_process(120) as holder:
        ids.append(id)
        with runc_running(bundle, id) as runc:
            wait_held(holder, id)
            time.sleep(0.5)
            assert runc.poll() is None  # held
            os.kill(holder.pid, signal.SIGKILL)
            killed = time.monotonic()
            assert runc.wait(timeout=10) == 0
            assert time.monotonic() - killed < 2.0


def _guards(parent: int) -> list[int]:
    """Pids of the hold's guard processes that ``parent`` started."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or b"holdguard" not in (entry / "cmdline").read_bytes():
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        if f"\nPPid:\t{parent}\n" in status:
            found.append(int(entry.name))
    return found


def _running(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (an exited orphan may wait as a zombie a while)."""
    running = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] != "Z":
            running.append(pid)
    return running


@pytest.mark.parametrize("stopped", ["while holding", "before the start"])
def test_a_stopped_igrun_holds_runc_for_the_bound_at_most(runc_bundles: Any, stopped: str) -> None:
    """SIGSTOP (a debugger, Ctrl-Z) leaves igrun's events unanswered, and fanotify permission
    events have no timeout: its guard process answers for it what is late, a held start
    after the bound (1 s here) and half a second, an exec of runc nobody reads after half a
    second. The guard ends with igrun."""
    make, ids = runc_bundles
    id = f"igrun-stop-{uuid.uuid4().hex[:6]}"
    bundle = make(id, id, ARGS)
    with holder_process(1.0) as holder:
        time.sleep(0.5)  # the guard is started by the hold's thread
        guards = _guards(holder.pid)
        assert len(guards) == 1
        if stopped == "before the start":
            os.kill(holder.pid, signal.SIGSTOP)
        ids.append(id)
        began = time.monotonic()
        with runc_running(bundle, id) as runc:
            if stopped == "while holding":
                wait_held(holder, id)
                os.kill(holder.pid, signal.SIGSTOP)
            assert runc.wait(timeout=20) == 0
            took = time.monotonic() - began
        assert took < 5.0, took
    deadline = time.monotonic() + 3
    while _running(guards) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(guards) == []


STUCK_STDERR = """
import fcntl, os, sys, time
from igrun.core.containers.starthold import StartHold

r, w = os.pipe()  # a stderr nobody reads, full already: every log line would block
fcntl.fcntl(w, fcntl.F_SETFL, os.O_NONBLOCK)
try:
    while True:
        os.write(w, b"x" * 4096)
except BlockingIOError:
    pass
fcntl.fcntl(w, fcntl.F_SETFL, 0)
os.dup2(w, 2)

def learn(birth):
    time.sleep(120)  # never in time: every hold ends at the bound, with a warning

hold = StartHold(learn, bound=0.3)
assert hold.start()
print("ready", flush=True)
time.sleep(120)
"""


def test_a_blocked_stderr_does_not_hold_runc(runc_bundles: Any) -> None:
    """igrun's warnings go to a stderr that blocks (a full pipe, a paused terminal): the hold
    still ends at its bound, for this container and the next ones."""
    make, ids = runc_bundles
    holder = subprocess.Popen(
        [sys.executable, "-c", STUCK_STDERR], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    started = time.monotonic()
    try:
        assert holder.stdout.readline() == "ready\n"
        for _ in range(3):
            id = f"igrun-stuck-{uuid.uuid4().hex[:6]}"
            bundle = make(id, id, ARGS)
            ids.append(id)
            began = time.monotonic()
            assert _runc_run(bundle, id, timeout=20).returncode == 0
            assert time.monotonic() - began < 3.0
    finally:
        holder.kill()
        killed = time.monotonic()
        holder.communicate()
    assert time.monotonic() - killed < 5.0  # not stuck in the kernel on an unanswered event
    assert time.monotonic() - started < 20.0  # nothing anywhere waited on the log line
