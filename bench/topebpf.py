"""What one interval of ``top ebpf`` costs, with N more programs (and maps) in the kernel.

Loads N copies of tests/bpf/topebpf_prog.bpf.c (one program; a preallocated map, read once,
and a map that allocates per element, whose size is read every interval), held by this
process, then times the gadget's interval (list programs and maps, read the holders, build the
batch) and prints the CPU and wall time per interval::

    sudo .venv/bin/python bench/topebpf.py 1000
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from igrun.core.bpf.build import compile_bpf
from igrun.core.bpf.objects import BpfObject
from igrun.core.gadget import GadgetContext
from igrun.core.log import get_logger
from igrun.core.params import Params
from igrun.core.run.local import RUNTIME_PARAMS
from igrun.plugins.top_ebpf import TopEbpf

SOURCE = Path(__file__).resolve().parent.parent / "tests" / "bpf" / "topebpf_prog.bpf.c"
INTERVALS = 20


def main(extra: int) -> None:
    with tempfile.TemporaryDirectory() as out:
        path = compile_bpf(SOURCE, Path(out) / "p.bpf.o", build_dir=Path(out) / "build")
        objects = []
        try:
            for _ in range(extra):
                obj = BpfObject.open(path)
                objects.append(obj)
                obj.load()
            ctx = GadgetContext(
                id="bench",
                gadget=TopEbpf,
                gadget_params=Params(()),
                runtime_params=Params(RUNTIME_PARAMS),
                operator_params={},
                logger=get_logger(),
            )
            gadget = TopEbpf()
            gadget.init(ctx)
            try:
                gadget.sample()  # the baseline, and every map read once
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(INTERVALS):
                    rows = len(gadget.sample())
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            finally:
                gadget.close()
        finally:
            for obj in objects:
                obj.close()
    print(
        f"{rows} programs: {cpu / INTERVALS * 1000:.2f} ms CPU, "
        f"{wall / INTERVALS * 1000:.2f} ms wall per interval"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
