"""The example gadget ``trace netnssyn`` (examples/igrun-gadget-netnssyn), as its tests run it:
built from its source into a temporary folder, and recording every attach and detach call.

The subclass uses the public API only, as a third party's tests would.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

from igrun.core import Container

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "igrun-gadget-netnssyn"
SOURCE = EXAMPLE / "igrun_gadget_netnssyn" / "netnssyn.bpf.c"
sys.path.insert(0, str(EXAMPLE))

from igrun_gadget_netnssyn import TraceNetnsSyn  # noqa: E402 (found through the line above)


class RecordingNetnsSyn(TraceNetnsSyn):
    compiled: ClassVar[Path]
    """Where the test compiled the object."""
    attach_error: ClassVar[str] = ""
    """A container name whose attach fails on purpose."""
    last: ClassVar[RecordingNetnsSyn | None] = None
    """The instance of the last run."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, int]] = []
        """(``attach`` | ``detach``, container name, netns inode), in call order."""
        self.threads: set[int] = set()
        self.attached: dict[str, Container] = {}
        """By name: the containers as the gadget was given them."""
        RecordingNetnsSyn.last = self

    def object_path(self) -> Any:
        return self.compiled

    def attach_container(self, container: Container) -> None:
        with self.lock:
            self.calls.append(("attach", container.name, container.netns))
            self.threads.add(threading.get_ident())
            self.attached[container.name] = container
        if container.name == self.attach_error:
            raise RuntimeError("refused on purpose")
        super().attach_container(container)

    def detach_container(self, container: Container) -> None:
        with self.lock:
            self.calls.append(("detach", container.name, container.netns))
        super().detach_container(container)

    def open_copies(self) -> int:
        with self.lock:
            return len(self.per_container)


def own_fds() -> set[str]:
    """What this process's descriptors point to (``anon_inode:bpf-prog``, ``socket:[…]``)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
    return out
