"""Containers for real: podman (with runc) and plain runc bundles, traced and filtered in the
kernel, named on every event."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import containerlab
import pytest
from containerlab import IMAGE, Running, marker, needs, stop_and_read, with_arg

from igrun.core.bpf.objects import Map
from igrun.core.containers.collection import ContainerCollection, from_process
from igrun.core.containers.discovery import Discovery, select_clients
from igrun.core.containers.engines.oci import RuncClient
from igrun.core.errors import EnvironmentProblem, ParamError
from igrun.operators.containers import node_name

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf


@pytest.fixture(scope="session")
def podman_env(rootfs_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """podman set up for this kind of host: runc, and limits root may set."""
    needs("podman", "runc")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    subprocess.run(
        ["podman", "import", "--change", 'CMD ["/bin/sh"]', str(rootfs_tar), IMAGE],
        env=env,
        check=True,
        capture_output=True,
    )
    return env


class Podman:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.names: list[str] = []

    def __call__(self, *args: str, check: bool = True) -> str:
        return subprocess.run(
            ["podman", *args], env=self.env, check=check, capture_output=True, text=True
        ).stdout.strip()

    def run(self, name: str, network: str = "none") -> Running:
        self.names.append(name)
        id = self(
            "run",
            "-d",
            "--pull=never",
            "--network",
            network,
            "--name",
            name,
            IMAGE,
            "sh",
            "-c",
            "while true; do sleep 1; done",
        )
        pid = int(self("inspect", "-f", "{{.State.Pid}}", name))
        return Running(name, id, pid, "podman")

    def stop(self, name: str) -> None:
        self("rm", "-f", "-t", "0", name, check=False)


@pytest.fixture
def podman(podman_env: dict[str, str]) -> Iterator[Podman]:
    p = Podman(podman_env)
    yield p
    for name in p.names:
        p.stop(name)


@pytest.fixture
def runc_container(rootfs: Path, tmp_path: Path) -> Iterator[Running]:
    """A plain runc container from an OCI bundle (no manager above it)."""
    annotations = {
        "io.kubernetes.pod.namespace": "prod",
        "io.kubernetes.pod.name": "web-1",
        "io.kubernetes.container.name": "web",
    }
    with containerlab.runc_container(rootfs, tmp_path / "bundle", annotations) as running:
        yield running


def test_exec_in_a_container_names_it(igrun_cli: IgrunCli, podman: Podman) -> None:
    a = podman.run(f"igrun-a-{uuid.uuid4().hex[:6]}")
    mark = marker()
    proc = igrun_cli.start("trace", "exec", "-o", "json")
    podman("exec", a.name, "/bin/echo", mark)
    host = marker()
    subprocess.run(["/bin/echo", host], check=True, capture_output=True)
    events = stop_and_read(igrun_cli, proc)
    (event,) = with_arg(events, mark)
    image_id = podman("inspect", "-f", "{{.Image}}", a.name).strip()
    assert event["runtime"] == {
        "containerName": a.name,
        "containerId": a.id,
        "runtimeName": "podman",
        "containerImageName": IMAGE,
        "containerImageDigest": f"sha256:{image_id}",
    }
    assert event["k8s"] == {"node": node_name()}  # not a Kubernetes container
    assert event["type"] == "normal"
    assert event["mountnsid"] == a.mntns
    assert event["args"] == ["/bin/echo", mark]
    assert with_arg(events, host) == []  # no --host: no host processes


def test_host_network_is_told_as_ig_tells_it(igrun_cli: IgrunCli, podman: Podman) -> None:
    """``k8s.hostNetwork`` is true for a container in the host's network namespace and left
    out (false, omitempty) for one in its own."""
    shared = podman.run(f"igrun-h-{uuid.uuid4().hex[:6]}", network="host")
    own = podman.run(f"igrun-n-{uuid.uuid4().hex[:6]}")
    in_shared, in_own = marker(), marker()
    proc = igrun_cli.start("trace", "exec", "-o", "json")
    podman("exec", shared.name, "/bin/echo", in_shared)
    podman("exec", own.name, "/bin/echo", in_own)
    events = stop_and_read(igrun_cli, proc)
    (event,) = with_arg(events, in_shared)
    assert event["k8s"] == {"node": node_name(), "hostNetwork": True}
    (event,) = with_arg(events, in_own)
    assert event["k8s"] == {"node": node_name()}


def test_upperlayer_tells_a_program_the_container_wrote(
    igrun_cli: IgrunCli, podman: Podman
) -> None:
    """``upperlayer``, as ``ig``'s: true for a program in the overlay's upper layer (copied
    in by the container), false for one of the image."""
    a = podman.run(f"igrun-u-{uuid.uuid4().hex[:6]}")
    podman("exec", a.name, "cp", "/bin/echo", "/copied")
    from_image, written = marker(), marker()
    proc = igrun_cli.start("trace", "exec", "-o", "json")
    podman("exec", a.name, "/bin/echo", from_image)
    podman("exec", a.name, "/copied", written, check=False)  # busybox: no applet "copied"
    events = stop_and_read(igrun_cli, proc)
    (image,) = with_arg(events, from_image)
    (copied,) = [e for e in events if e["args"] == ["/copied", written]]
    assert (image["upperlayer"], copied["upperlayer"]) == (False, True)


def test_containername_selects_in_the_kernel(igrun_cli: IgrunCli, podman: Podman) -> None:
    a = podman.run(f"igrun-a-{uuid.uuid4().hex[:6]}")
    b = podman.run(f"igrun-b-{uuid.uuid4().hex[:6]}")
    in_a, in_b, on_host = marker(), marker(), marker()
    proc = igrun_cli.start("trace", "exec", "-o", "json", "-c", a.name)
    (pins,) = igrun_cli.pin_dirs_of(proc.pid)
    filter_map = Map.from_pin(pins / "gadget_mntns_filter_map")
    keys = {struct.unpack("<Q", k)[0] for k in filter_map.keys()}  # noqa: SIM118
    filter_map.close()
    assert keys == {a.mntns}
    podman("exec", a.name, "/bin/echo", in_a)
    podman("exec", b.name, "/bin/echo", in_b)
    subprocess.run(["/bin/echo", on_host], check=True, capture_output=True)
    events = stop_and_read(igrun_cli, proc)
    assert [e["runtime"]["containerName"] for e in with_arg(events, in_a)] == [a.name]
    assert with_arg(events, in_b) == []
    assert with_arg(events, on_host) == []
    assert {e["runtime"]["containerName"] for e in events} == {a.name}


def test_late_container_is_traced_and_forgotten(igrun_cli: IgrunCli, podman: Podman) -> None:
    name = f"igrun-late-{uuid.uuid4().hex[:6]}"
    proc = igrun_cli.start("trace", "exec", "-o", "json", "-c", name)
    (pins,) = igrun_cli.pin_dirs_of(proc.pid)
    late = podman.run(name)
    time.sleep(1.0)  # known within 1 s of its start
    mark = marker()
    podman("exec", name, "/bin/echo", mark)
    filter_map = Map.from_pin(pins / "gadget_mntns_filter_map")
    try:
        keys = {struct.unpack("<Q", k)[0] for k in filter_map.keys()}  # noqa: SIM118
        assert keys == {late.mntns}
        podman.stop(name)
        deadline = time.monotonic() + 1.0
        while list(filter_map.keys()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(filter_map.keys()) == []  # its mount-ns id left the filter
    finally:
        filter_map.close()
    events = stop_and_read(igrun_cli, proc)
    (event,) = with_arg(events, mark)
    assert event["runtime"]["containerName"] == name


def test_first_process_of_a_new_container_is_traced(igrun_cli: IgrunCli, podman: Podman) -> None:
    """runc writes its state at create: the container is in the filter before it starts."""
    name = f"igrun-first-{uuid.uuid4().hex[:6]}"
    mark = marker()
    proc = igrun_cli.start("trace", "exec", "-o", "json", "-c", name)
    podman.names.append(name)
    podman("run", "--pull=never", "--network", "none", "--name", name, IMAGE, "/bin/echo", mark)
    events = stop_and_read(igrun_cli, proc)
    (event,) = with_arg(events, mark)
    assert event["runtime"]["containerName"] == name


def test_host_flag_adds_host_processes(igrun_cli: IgrunCli, podman: Podman) -> None:
    a = podman.run(f"igrun-a-{uuid.uuid4().hex[:6]}")
    in_a, on_host = marker(), marker()
    proc = igrun_cli.start("trace", "exec", "-o", "json", "--host")
    podman("exec", a.name, "/bin/echo", in_a)
    subprocess.run(["/bin/echo", on_host], check=True, capture_output=True)
    events = stop_and_read(igrun_cli, proc)
    (host,) = with_arg(events, on_host)
    assert host["runtime"] == {}  # no empty values: left out, as ig's omitempty leaves them
    assert host["k8s"] == {"node": node_name()}
    (inside,) = with_arg(events, in_a)
    assert inside["runtime"]["containerName"] == a.name
    # What users filter on, with jq: the container's events, not the host's.
    out = "".join(json.dumps(e) + "\n" for e in events)
    if shutil.which("jq"):
        picked = subprocess.run(
            ["jq", "-c", "select(.runtime.containerName) | .args[1]"],
            input=out, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert in_a in picked.stdout and on_host not in picked.stdout


def test_plain_runc_container_with_kubernetes_names(
    igrun_cli: IgrunCli, runc_container: Running
) -> None:
    mark = marker()
    proc = igrun_cli.start("trace", "exec", "-o", "json", "-r", "runc")
    subprocess.run(
        ["runc", "exec", runc_container.id, "/bin/echo", mark], check=True, capture_output=True
    )
    events = stop_and_read(igrun_cli, proc)
    (event,) = with_arg(events, mark)
    assert event["runtime"]["containerName"] == "web"  # the CRI container name
    assert event["runtime"]["containerId"] == runc_container.id
    assert event["runtime"]["runtimeName"] == "runc"
    assert event["k8s"] == {
        "node": node_name(),
        "namespace": "prod",
        "podName": "web-1",
        "containerName": "web",
    }


def test_list_containers_agrees_with_podman_ps(igrun_cli: IgrunCli, podman: Podman) -> None:
    a = podman.run(f"igrun-a-{uuid.uuid4().hex[:6]}")
    b = podman.run(f"igrun-b-{uuid.uuid4().hex[:6]}")
    listed = igrun_cli.run("list-containers", "-o", "json", "-r", "podman")
    assert listed.returncode == 0, listed.stderr
    ours = {c["id"]: c for c in map(json.loads, listed.stdout.splitlines())}
    ps = json.loads(podman("ps", "--format", "json"))
    assert {c["Id"] for c in ps} == set(ours)
    for c in ps:
        assert ours[c["Id"]]["name"] == c["Names"][0]
        assert ours[c["Id"]]["pid"] == c["Pid"]
        assert ours[c["Id"]]["imageName"] == c["Image"]
    for running in (a, b):
        assert ours[running.id]["mntns"] == running.mntns
        assert ours[running.id]["cgroupPath"] == f"/libpod_parent/libpod-{running.id}"


def test_watch_shows_containers_come_and_go(podman: Podman, igrun_cli: IgrunCli) -> None:
    first = podman.run(f"igrun-w-{uuid.uuid4().hex[:6]}")
    watch = subprocess.Popen(
        [*igrun_cli.command, "list-containers", "-w", "-o", "json", "-r", "podman"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        seen = json.loads(watch.stdout.readline())  # the watch is up once it lists what runs
        assert seen["event"] == "running"
        c = podman.run(f"igrun-w-{uuid.uuid4().hex[:6]}")
        podman.stop(c.name)
        time.sleep(1)
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=10)
    mine = [json.loads(line) for line in out.splitlines()]
    mine = [(m["event"], m["container"]["id"]) for m in mine if m["container"]["id"] == c.id]
    assert mine == [("added", c.id), ("removed", c.id)]
    assert first.id != c.id


def test_reused_mount_namespace_is_never_misattributed() -> None:
    """A removed container only claims events from before its removal."""
    import numpy as np

    from igrun.operators.containers import attribute

    pid = os.getpid()
    me = from_process("old", "old", "runc", pid)
    assert me is not None
    collection = ContainerCollection()
    collection.sync([me])
    collection.sync([])  # gone: kept as a tombstone
    (gone,) = collection.candidates(me.mntns)
    assert gone.removed_ns is not None
    before, after = gone.removed_ns - 1, gone.removed_ns + 1
    pool, owners = attribute(
        collection,
        np.array([me.mntns, me.mntns], dtype=np.uint64),
        np.array([before, after], dtype=np.uint64),
    )
    assert [pool[i].name if i >= 0 else None for i in owners] == ["old", None]
    pool, owners = attribute(collection, np.array([me.mntns], dtype=np.uint64), None)
    assert (pool, owners.tolist()) == ([], [-1])


def test_back_to_back_containers_sharing_a_mount_ns_id_split_within_one_clock_tick() -> None:
    """The kernel gives a new mount namespace the id of one that just ended. A first
    "container" (a process in a mount namespace of its own) takes a timestamp, its last
    event, and exits; the next one starts at once and gets the same id, within the same
    clock tick as that event. ``/proc`` knows its start only to the tick, which would give the
    first one's last event to it; its start to the microsecond (taskstats) splits them."""
    import numpy as np

    from igrun.core.containers.collection import process_start_ns, tick_of
    from igrun.core.containers.procfs import ns_inode
    from igrun.operators.containers import attribute

    last = "import sys, time\nsys.stdin.readline()\nprint(time.clock_gettime_ns(7))"  # BOOTTIME
    for attempt in range(30):
        first = subprocess.Popen(
            ["unshare", "--mount", sys.executable, "-c", last],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        while ns_inode(first.pid, "mnt") in (0, ns_inode(os.getpid(), "mnt")):
            time.sleep(0.001)  # until unshare made the namespace
        mntns = ns_inode(first.pid, "mnt")
        old = from_process("a" * 64, "first", "runc", first.pid)
        assert old is not None and old.mntns == mntns
        collection = ContainerCollection()
        collection.add(old)
        out, _ = first.communicate("go\n", timeout=30)
        event = int(out)
        second = subprocess.Popen(["unshare", "--mount", "sleep", "30"])
        try:
            while ns_inode(second.pid, "mnt") in (0, ns_inode(os.getpid(), "mnt")):
                time.sleep(0.001)
            if ns_inode(second.pid, "mnt") != mntns:
                continue  # another namespace took the id meanwhile
            if tick_of(event) != process_start_ns(second.pid):
                continue  # not the case at hand: the tick alone splits them
            new = from_process("b" * 64, "second", "runc", second.pid)
            assert new is not None
            collection.add(new)
            later = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            pool, owners = attribute(
                collection,
                np.array([mntns, mntns], dtype=np.uint64),
                np.array([event, later], dtype=np.uint64),
            )
            assert [pool[i].name for i in owners] == ["first", "second"], attempt
            (gone,) = [c for c in collection.candidates(mntns) if c.name == "first"]
            assert gone.removed_ns is not None and event < gone.removed_ns < later
            return
        finally:
            second.kill()
            second.wait()
    pytest.fail("no next namespace took the id within the first one's last tick in 30 tries")


def test_runtime_selection_errors_and_malformed_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker.sock'}")
    with pytest.raises(ParamError, match="--runtimes: unknown runtime 'nope'"):
        select_clients(["nope"])
    with pytest.raises(EnvironmentProblem, match="container runtime docker is not available"):
        select_clients(["docker"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.json").write_text("{not json")
    discovery = Discovery(ContainerCollection(), [RuncClient((tmp_path,))])
    assert discovery.scan() == []
    assert any("malformed state file" in w for w in discovery._warned)


def test_bad_runtime_flag_is_one_line(
    igrun_cli: IgrunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker.sock'}")
    result = igrun_cli.run("trace", "exec", "-r", "docker", "-t", "1s")
    assert result.returncode == 1
    assert result.stderr == "igrun: error: container runtime docker is not available on this host\n"


def test_a_settled_answer_is_reused_only_while_nothing_changes() -> None:
    """Batch after batch from one mount namespace reuse the last answer; a container that
    appears or goes (the collection's generation) makes the next batch look again."""
    import numpy as np

    from igrun.core.events import fields
    from igrun.core.events.schema import Batch, Schema
    from igrun.core.gadget import Category, Gadget, GadgetContext
    from igrun.core.log import get_logger
    from igrun.core.params import Params
    from igrun.core.run.local import RUNTIME_PARAMS
    from igrun.operators.containers import ContainersOperator

    layout = np.dtype([("mntns_id", "<u8"), ("timestamp", "<u8")])
    schema = Schema([fields.mntns(), fields.timestamp()], "event").bind(layout)

    class Tracer(Gadget):
        name = "t"
        category = Category.TRACE

    Tracer.schema = schema
    me = from_process("c1", "web", "runc", os.getpid())
    assert me is not None
    collection = ContainerCollection()
    ctx = GadgetContext("t", Tracer, Params(()), Params(RUNTIME_PARAMS), {}, get_logger())
    ctx.resources.provide(collection, by="test")
    op = ContainersOperator(ctx, Params(ContainersOperator.params, {"host": "true"}))
    op.pre_run(schema.extend(list(ContainersOperator.fields)))

    def names() -> list[str]:
        raw = np.zeros(3, layout)
        raw["mntns_id"] = me.mntns
        raw["timestamp"] = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        batch = op.process(Batch(schema.extend(list(ContainersOperator.fields)), raw))
        return batch["runtime.containerName"].tolist()  # type: ignore[no-any-return]

    assert names() == names() == ["", "", ""]  # nobody's, twice (the second one reused)
    collection.sync([me])
    assert names() == names() == ["web", "web", "web"]
    collection.sync([])  # removed: events from now on are nobody's again
    assert names() == ["", "", ""]
