"""Damaged and hostile BTF given to ``igrun run``: one clear error line, never a crash or a hang.

``igrun run`` reads an object's BTF through libbpf (``igr_btf_*`` in the C extension, which
checks every id and index) and follows typedefs in Python with a bound. The objects here are
compiled from C and then damaged in their ``.BTF`` section: a typedef made to name itself, and
random bytes changed. Each is run by a child ``igrun`` process, so that a crash in C shows as
a signal and a loop as a timeout, not as a lost test run.
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from igrun.core.bpf.btf import BtfError, BtfKind, ObjectBtf
from igrun.core.bpf.build import compile_bpf
from igrun.core.bpf.objects import BpfObject

pytestmark = pytest.mark.bpf

SOURCE = r"""
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <igrun/buffer.h>
#include <igrun/display.h>
#include <igrun/macros.h>

typedef __u32 loop_a;
typedef loop_a loop_b;

struct event {
	__u32 pid;
	loop_b looped;
	gadget_errno error_raw;
	char comm[16];
};

GADGET_RINGBUF(events);
GADGET_TRACER(hostile, events, event);

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_hostile(void *ctx)
{
	struct event *e = gadget_reserve_buf(&events, sizeof(*e));

	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	gadget_submit_buf(&events, e);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""

BTF_MAGIC = b"\x9f\xeb\x01\x00"
TYPEDEF_INFO = 8 << 24


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile")
    source = out / "hostile.bpf.c"
    source.write_text(SOURCE)
    return compile_bpf(source, out / "hostile.bpf.o", build_dir=out / "b")


def btf_section(data: bytes) -> tuple[int, int, int, int]:
    """Where the ``.BTF`` section's types and strings are in the file: (types start, types
    length, strings start, strings length). Found by its magic and header, enough for a test
    that damages a file clang wrote."""
    at = data.index(BTF_MAGIC)
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", data, at + 4)
    base = at + hdr_len
    return base + type_off, type_len, base + str_off, str_len


def with_typedef_cycle(data: bytes) -> bytes:
    """``loop_a`` made a typedef of itself: its id is what ``loop_b`` (a typedef of it) names."""
    types, types_len, strings, strings_len = btf_section(data)
    table = data[strings : strings + strings_len]
    name_a = table.index(b"\0loop_a\0") + 1
    name_b = table.index(b"\0loop_b\0") + 1
    out = bytearray(data)
    record_a = record_b = None
    for at in range(types, types + types_len - 12, 4):
        name, info, _ = struct.unpack_from("<III", data, at)
        if info == TYPEDEF_INFO and name == name_a:
            record_a = at
        elif info == TYPEDEF_INFO and name == name_b:
            record_b = at
    assert record_a is not None and record_b is not None
    id_a = struct.unpack_from("<I", data, record_b + 8)[0]
    struct.pack_into("<I", out, record_a + 8, id_a)
    return bytes(out)


def run_object(cli_command: tuple[str, ...], path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command, "run", str(path), "-o", "json", "-t", "1s"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_typedef_naming_itself_is_one_line(clean: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cycle.bpf.o"
    bad.write_bytes(with_typedef_cycle(clean.read_bytes()))
    done = run_object((sys.executable, "-m", "igrun.core.cli"), bad)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line == f"igrun: error: {bad}: struct event cannot be decoded: Invalid argument"
    with BpfObject.open(bad) as obj:
        btf = ObjectBtf(obj)
        loop = btf.find(BtfKind.TYPEDEF, "loop_a")
        assert loop is not None
        with pytest.raises(BtfError, match="a cycle of typedefs or qualifiers"):
            btf.resolve(loop)
        with pytest.raises(BtfError, match="a cycle of typedefs or qualifiers"):
            btf.typedefs(loop)
        with pytest.raises(BtfError, match="BTF type 99999 does not exist"):
            btf.type(99999)


def test_random_damage_to_the_btf_is_one_line_or_a_run(clean: Path, tmp_path: Path) -> None:
    """Bytes of the BTF changed at random (seeded): each object either makes a gadget class
    or is refused with a one-line UsageError; none crashes the process (a signal; libbpf 1.1
    does crash on some of them, in the probe's child), hangs it (the timeout) or raises
    anything else (a traceback, a non-zero exit)."""
    data = clean.read_bytes()
    types, types_len, strings, strings_len = btf_section(data)
    start = data.index(BTF_MAGIC)
    regions = [(types, types_len)] * 3 + [(start, strings + strings_len - start)]
    rng = random.Random(13)
    paths = []
    for i in range(32):
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            at, length = rng.choice(regions)  # mostly types; sometimes header and strings too
            out[at + rng.randrange(length)] = rng.randrange(256)
        path = tmp_path / f"damaged{i}.bpf.o"
        path.write_bytes(bytes(out))
        paths.append(path)
    # One child tries them all (the CLI's own error handling, without a process per file).
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from igrun.core.errors import UsageError\n"
        "from igrun.core.objectrun.declarations import gadget_from_object\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        gadget_from_object(Path(p))\n"
        "        print('ok')\n"
        "    except UsageError as exc:\n"
        "        print('refused', len(str(exc).splitlines()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    results = done.stdout.splitlines()
    assert len(results) == len(paths)
    assert all(r in ("ok", "refused 1") for r in results), results
    assert "refused 1" in results
