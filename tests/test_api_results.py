"""What a run leaves to read from Python: ``run.lost`` (the events the kernel dropped) and
``run.global_value(name)`` (a global variable of the object, by name), during and after the
run, against the real kernel.

The objects count in a global what they sent, so the expected figures are exact: what was
lost is what was sent and not received.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from igrun.core import IgrunError, UsageError, run_gadget
from igrun.core.bpf.build import compile_bpf

pytestmark = pytest.mark.bpf

SOURCE = r"""
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <igrun/macros.h>

const volatile __u32 target_pid = 0;
GADGET_PARAM(target_pid);

__u64 sent = 0;
__u32 tries = 0;

struct event {
	__u32 pid;
	__u32 n;
	char pad[1016]; /* four events fill a page */
};

#ifdef OWN_RING
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");
#define reserve(map, size) bpf_ringbuf_reserve(map, size, 0)
#define submit(map, e) bpf_ringbuf_submit(e, 0)
#else
#include <igrun/buffer.h> /* GADGET_RINGBUF and its lost counter */
GADGET_RINGBUF(events);
#define reserve(map, size) gadget_reserve_buf(map, size)
#define submit(map, e) gadget_submit_buf(map, e)
#endif
GADGET_TRACER(results, events, event);

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_results(void *ctx)
{
	struct event *e;

	if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
		return 0;
	__sync_fetch_and_add(&tries, 1);
	e = reserve(&events, sizeof(*e));
	if (!e)
		return 0;
	e->pid = target_pid;
	e->n = __sync_fetch_and_add(&sent, 1) + 1;
	submit(&events, e);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""

CALLS = 3000


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("results")
    made = {}
    for name, extra in (("counted", ""), ("own_ring", "#define OWN_RING\n")):
        source = out / f"{name}.bpf.c"
        source.write_text(extra + SOURCE)
        made[name] = compile_bpf(source, out / f"{name}.bpf.o", build_dir=out / "b")
    return made


def number(run: object, name: str) -> int:
    return int.from_bytes(run.global_value(name), "little")  # type: ignore[attr-defined]


def test_lost_counts_exactly_what_the_kernel_dropped(objects: dict[str, Path]) -> None:
    """A one-page ring holds four events; thousands of calls in a row overflow it. What was
    lost is what was tried and not received, during the run and after it."""
    params = {"target_pid": os.getpid(), "runtime.buffer-size": "4K", "runtime.timeout": "30s"}
    with run_gadget(objects["counted"], params) as run:
        run.wait_ready()
        assert run.lost == 0
        for _ in range(CALLS):
            os.getppid()
        run.cancel()
        received = sum(len(b) for b in run.batches())
        tries, sent = number(run, "tries"), number(run, "sent")
        assert number(run, "target_pid") == os.getpid()  # .rodata, by name too
    assert tries == CALLS
    assert received == sent
    assert run.lost == CALLS - sent
    assert run.lost > 0  # the ring did overflow: the count is not a default


def test_lost_is_none_when_it_cannot_be_counted(objects: dict[str, Path]) -> None:
    """A ring buffer declared by hand has no lost counter: None, not a 0 that would lie."""
    params = {"target_pid": os.getpid(), "runtime.timeout": "30s"}
    with run_gadget(objects["own_ring"], params) as run:
        run.wait_ready()
        assert run.lost is None
        for _ in range(5):
            os.getppid()
        run.cancel()
        assert sum(len(b) for b in run.batches()) == 5
        assert number(run, "sent") == 5
    assert run.lost is None


def test_global_value_mistakes(objects: dict[str, Path]) -> None:
    params = {"target_pid": os.getpid(), "runtime.timeout": "30s"}
    with run_gadget(objects["counted"], params) as run:
        run.wait_ready()
        with pytest.raises(IgrunError, match="once the run has ended"):
            run.global_value("sent")
        run.cancel()
        run.wait(30)
        with pytest.raises(UsageError, match=r"no global variable 'nope' \(has: .*sent"):
            run.global_value("nope")
    with pytest.raises(IgrunError, match="no BPF object open"):
        run.global_value("sent")  # closed with the block
