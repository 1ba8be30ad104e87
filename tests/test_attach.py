"""Per-container attach for real: the example gadget ``trace netnssyn`` (public API alone)
attaches one socket filter per container network namespace, to podman containers running
before the run starts and created after; it is detached from each one that goes and from the
rest at the end, and sees a real SYN sent from inside each container."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gadgetlab
import pytest
from containerlab import IMAGE
from netns_syn import SOURCE, own_fds
from netns_syn import RecordingNetnsSyn as TraceNetnsSyn
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

from igrun.core import Batch, GadgetContext, MissingDependency
from igrun.core.bpf.build import compile_bpf
from igrun.core.containers.procfs import cgroup2_root
from igrun.core.run.local import Runtime
from igrun.operators.containers import ContainersOperator

pytestmark = pytest.mark.bpf

PORT = 47311  # nothing listens: each connect is one SYN, answered by a reset


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("netns_syn")
    TraceNetnsSyn.compiled = compile_bpf(SOURCE, out / "netnssyn.bpf.o", build_dir=out / "b")
    yield TraceNetnsSyn.compiled
    TraceNetnsSyn.attach_error = ""


def netns_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Scenario:
    """Runs ``body(gadget)`` once the run is started (every present container attached),
    then ends the run."""

    def __init__(self, body: Callable[[TraceNetnsSyn], None]) -> None:
        self.body = body
        self.error: BaseException | None = None
        self.started_attached: list[tuple[str, str, int]] = []

    def igrun_run_started(self, ctx: GadgetContext) -> None:
        gadget = TraceNetnsSyn.last
        assert gadget is not None
        self.started_attached = list(gadget.calls)

        def work() -> None:
            try:
                self.body(gadget)
            except BaseException as exc:
                self.error = exc
            finally:
                ctx.cancel()

        threading.Thread(target=work, daemon=True).start()

    def igrun_run_finished(self, ctx: GadgetContext, error: BaseException | None) -> None:
        pass


ROWS: list[dict[str, Any]] = []
"""What the run's :class:`Capture` saw, readable while the run goes on."""


class Capture(gadgetlab.Capture):
    def process(self, batch: Batch) -> Batch:
        ROWS.extend(batch.to_dicts())
        return batch


def run(
    names: list[str],
    body: Callable[[TraceNetnsSyn], None],
    more: dict[str, str] | None = None,
) -> tuple[Scenario, Any]:
    ROWS.clear()
    runtime = Runtime([ContainersOperator, Capture])
    values = {
        "port": str(PORT),
        "operator.containers.containername": ",".join(names),
        "runtime.timeout": "90s",
        **(more or {}),
    }
    scenario = Scenario(body)
    runtime.run(TraceNetnsSyn, *runtime.params_for(TraceNetnsSyn, values), hooks=scenario)
    if scenario.error is not None:
        raise scenario.error
    return scenario, TraceNetnsSyn.last


def syn_from(podman: Podman, name: str) -> None:  # noqa: F811
    """One connect from inside the container: refused, so exactly one SYN."""
    podman("exec", name, "nc", "127.0.0.1", str(PORT), check=False)


def test_attached_to_containers_before_and_after_start(
    compiled: Path,
    podman: Podman,  # noqa: F811
) -> None:
    before, after = f"igrun-at-{uuid.uuid4().hex[:6]}", f"igrun-at-{uuid.uuid4().hex[:6]}"
    a = podman.run(before)
    a_netns = netns_of(a.pid)
    seen: dict[str, Any] = {}
    fds_before = own_fds()

    def body(gadget: TraceNetnsSyn) -> None:
        syn_from(podman, before)
        b = podman.run(after)
        seen["b_netns"] = netns_of(b.pid)
        wait_until("the attach to the new container", lambda: len(gadget.calls) == 2)
        seen["b_thread"] = list(gadget.threads)
        syn_from(podman, after)
        wait_until(
            "the SYN from the new container",
            lambda: any(r["netns"] == seen["b_netns"] for r in ROWS),
        )
        podman.stop(after)
        wait_until("the detach from the stopped container", lambda: len(gadget.calls) == 3)
        seen["open_after_stop"] = gadget.open_copies()

    scenario, gadget = run([before, after], body)
    b_netns = seen["b_netns"]
    assert scenario.started_attached == [("attach", before, a_netns)]
    given = gadget.attached[before]  # what the gadget is told of a container
    cgroup = next(
        x for x in Path(f"/proc/{a.pid}/cgroup").read_text().splitlines() if x[:3] == "0::"
    )
    root = cgroup2_root()
    assert root is not None
    assert (given.id, given.pid, given.mntns, given.netns) == (a.id, a.pid, a.mntns, a_netns)
    assert given.cgroup_path == cgroup[3:]
    assert given.cgroup_id == os.stat(root / cgroup[3:].lstrip("/")).st_ino != 0
    assert gadget.calls == [
        ("attach", before, a_netns),
        ("attach", after, b_netns),
        ("detach", after, b_netns),
        ("detach", before, a_netns),  # at the end of the run
    ]
    assert len(seen["b_thread"]) == 2  # the late attach came from another thread
    assert seen["open_after_stop"] == 1
    assert gadget.open_copies() == 0
    events = sorted(
        (r["netns"], r["src"], r["dst"], r["dport"])
        for r in ROWS
        if r["netns"] in (a_netns, b_netns)
    )
    assert events == sorted(
        [(a_netns, "127.0.0.1", "127.0.0.1", PORT), (b_netns, "127.0.0.1", "127.0.0.1", PORT)]
    )
    by_netns = {r["netns"]: r["runtime"]["containerName"] for r in ROWS}
    assert by_netns[a_netns] == before
    assert by_netns[b_netns] == after
    leaked = {fd for fd in own_fds() - fds_before if "bpf" in fd or fd.startswith("socket:")}
    assert leaked == set()


def test_attached_before_the_first_process_of_a_new_container_runs(
    compiled: Path,
    podman: Podman,  # noqa: F811
) -> None:
    """The container's only process connects at once: its SYN is seen, so the filter was in
    its namespace before that process ran (runc is held while the gadget attaches)."""
    name = f"igrun-at-{uuid.uuid4().hex[:6]}"

    def body(gadget: TraceNetnsSyn) -> None:
        podman.names.append(name)
        podman("run", "--rm", "--pull=never", "--network", "none", "--name", name,
               IMAGE, "nc", "127.0.0.1", str(PORT), check=False)  # fmt: skip
        wait_until("the detach from the finished container", lambda: len(gadget.calls) == 2)

    _, gadget = run([name], body)
    netns = gadget.calls[0][2]
    assert gadget.calls == [("attach", name, netns), ("detach", name, netns)]
    assert [(r["netns"], r["dport"]) for r in ROWS] == [(netns, PORT)]
    assert gadget.open_copies() == 0


def test_a_failed_attach_is_logged_and_the_run_goes_on(
    compiled: Path,
    podman: Podman,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad, good = f"igrun-at-{uuid.uuid4().hex[:6]}", f"igrun-at-{uuid.uuid4().hex[:6]}"
    b, g = podman.run(bad), podman.run(good)
    TraceNetnsSyn.attach_error = bad
    try:
        _, gadget = run([bad, good], lambda gadget: syn_from(podman, good))
    finally:
        TraceNetnsSyn.attach_error = ""
    assert sorted(gadget.calls) == sorted(
        [
            ("attach", bad, netns_of(b.pid)),
            ("attach", good, netns_of(g.pid)),
            ("detach", good, netns_of(g.pid)),  # never the one whose attach failed
        ]
    )
    assert gadget.calls[-1][0] == "detach"
    err = capsys.readouterr().err
    assert "attach_failed" in err and f"container={bad}" in err and "refused on purpose" in err
    assert [r["netns"] for r in ROWS if r["dport"] == PORT] == [netns_of(g.pid)]


def test_with_host_the_host_is_attached_first_and_detached_last(compiled: Path) -> None:
    """``--host`` attaches the host as a container named ``host`` (other containers on this
    machine may be attached too: only the host's calls are checked)."""
    own = netns_of(os.getpid())

    def body(gadget: TraceNetnsSyn) -> None:
        with socket.socket() as s:  # refused: one SYN in the host's namespace
            assert s.connect_ex(("127.0.0.1", PORT)) == errno.ECONNREFUSED
        wait_until("the host's SYN", lambda: any(r["netns"] == own for r in ROWS))

    scenario, gadget = run([], body, {"operator.containers.host": "true"})
    assert scenario.started_attached[0] == ("attach", "host", own)
    assert gadget.calls[-1] == ("detach", "host", own)
    assert [c for c in gadget.calls if c[1] == "host"] == [
        ("attach", "host", own),
        ("detach", "host", own),
    ]
    (event,) = [r for r in ROWS if r["netns"] == own]
    assert (event["src"], event["dst"], event["dport"]) == ("127.0.0.1", "127.0.0.1", PORT)
    assert event["runtime"]["containerName"] == ""  # the host is no container to name
    assert gadget.open_copies() == 0


def test_an_attaching_gadget_without_the_containers_operator_is_refused() -> None:
    """A chain that leaves the containers operator out still gets it (the selection holds);
    with no operator that provides the selection installed, the run is refused at once."""
    chain = Runtime([ContainersOperator, Capture], chain=["capture"])
    assert [op.name for op in chain.operators_for(TraceNetnsSyn)] == ["containers", "capture"]
    runtime = Runtime([Capture], chain=["capture"])
    params = runtime.params_for(TraceNetnsSyn, {})
    with pytest.raises(MissingDependency) as info:
        runtime.run(TraceNetnsSyn, *params)
    assert str(info.value) == (
        "gadget 'trace netnssyn' needs SelectedContainers, and no installed operator provides it"
    )
