"""igrun.core.run_gadget: the run's lifecycle from Python, against the real kernel.

The examples of docs/api.md (tests/test_api_docs.py) show the happy paths; these pin down the
edges: errors come out once and where the caller looks, a cancel at any moment ends the run
with nothing left, batches are numpy columns, maps are read only while the object is open.
"""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest

from igrun.core import GadgetNotFound, IgrunError, ParamError, run_gadget
from igrun.testing import BpfIds, assert_released, bpf_ids_of, marker

HOST = {"operator.containers.host": True, "runtime.timeout": "20s"}


def test_an_unknown_gadget_is_reported_at_once() -> None:
    with pytest.raises(GadgetNotFound, match='unknown gadget "trace exce"'):
        run_gadget("trace exce")


def test_a_bad_param_is_reported_before_anything_starts() -> None:
    run = run_gadget("trace exec", {"ignore-errors": "maybe"})
    with pytest.raises(ParamError, match="maybe"), run:
        pass
    assert run.context is None  # the runtime never made one: nothing loaded
    with pytest.raises(ParamError, match="nope"):
        run_gadget("trace exec", {"nope": 1}).start()
    with pytest.raises(IgrunError, match="unknown operator 'filtre'"):
        run_gadget("trace exec", operators=["filtre"]).start()


def test_using_a_run_before_it_starts_says_so() -> None:
    run = run_gadget("trace exec")
    with pytest.raises(IgrunError, match="has not started"):
        run.wait_ready()
    with pytest.raises(IgrunError, match="has not started"):
        list(run.batches())


@pytest.mark.bpf
def test_batches_are_numpy_and_the_run_leaves_nothing() -> None:
    mark = marker()
    before = bpf_ids_of()
    with run_gadget("trace exec", HOST, ["containers"]) as run:
        run.wait_ready()
        assert run.is_ready and run.pin_folder is not None and run.pin_folder.is_dir()
        held = bpf_ids_of()
        assert run.program_ids and run.program_ids <= held.programs  # its own, by id
        child = subprocess.Popen(["/bin/true", mark])
        child.wait()
        time.sleep(0.2)
        run.cancel()
        batches = list(run.batches())
        with pytest.raises(IgrunError, match="no map 'nope'"):
            run.map("nope")
        assert run.map("events") is not None  # open until the block ends
        folder = run.pin_folder
    assert all(isinstance(b["pid"], np.ndarray) for b in batches)
    pids = np.concatenate([b["pid"] for b in batches])
    assert child.pid in pids.tolist()
    assert run.bpf_object is None
    assert_released(BpfIds(programs=run.program_ids), [folder])
    after = bpf_ids_of()
    assert after.programs - before.programs == set()  # this process holds none of them
    with pytest.raises(IgrunError, match="no BPF object open"):
        run.map("events")  # closed with the block


@pytest.mark.bpf
def test_a_cancel_before_ready_ends_the_run_cleanly() -> None:
    run = run_gadget("trace exec", HOST).start()
    run.cancel()  # at once: the run may not even have its context yet
    assert run.wait(30)
    run.close()
    with pytest.raises(IgrunError, match="ended before it was ready"):
        run.wait_ready(5)
    assert list(run.events()) == []


@pytest.mark.bpf
def test_maps_are_read_only_once_the_run_has_ended() -> None:
    with run_gadget("trace exec", HOST) as run:
        run.wait_ready()
        with pytest.raises(IgrunError, match="once the run has ended"):
            run.map("events")
        run.cancel()
        assert run.wait(30)
        assert run.map(".rodata").lookup(b"\0\0\0\0") is not None


@pytest.mark.bpf
def test_a_failure_during_the_run_comes_out_once() -> None:
    """A filter on a column nobody has fails when the operators start: wait_ready says so,
    and the end of the block does not say it again."""
    run = run_gadget("trace exec", {"operator.filter.filter": "nope:1"}, ["filter"])
    with run, pytest.raises(IgrunError, match='no column "nope"'):
        run.wait_ready(30)


@pytest.mark.bpf
def test_the_on_ready_callback_runs_once_every_program_is_attached() -> None:
    seen: list[bool] = []
    called = threading.Event()

    def on_ready(run: object) -> None:
        seen.append(bool(run.program_ids))  # type: ignore[attr-defined]
        called.set()

    with run_gadget("trace exec", HOST, on_ready=on_ready, collect=False) as run:
        assert called.wait(30)
        run.cancel()
        with pytest.raises(IgrunError, match="collects no batches"):
            list(run.batches())
    assert seen == [True]
