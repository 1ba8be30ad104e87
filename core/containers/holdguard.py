"""A guard process for the start hold: runc never waits on an igrun that cannot answer.

The start hold (:mod:`igrun.core.containers.starthold`) answers its fanotify permission
events within :data:`~igrun.core.containers.starthold.HOLD_SECONDS`, from a thread of igrun.
A stopped igrun (SIGSTOP, a debugger, Ctrl-Z) or one whose interpreter is stuck answers
nothing, and the kernel has no timeout for permission events: every runc on the host would
wait for as long. A dead igrun is no problem (its group closes, and the kernel lets
everything go on); a stopped one is.

So igrun starts this small process beside itself, in a session of its own (Ctrl-Z does not
stop it), with a copy of the fanotify group and a pipe on which igrun tells it which events
it holds (``h FD``) and which it has answered (``d FD``). Every :data:`TICK` seconds the guard
looks, and once something has waited past the bound plus :data:`GRACE` it answers for igrun:

- an event igrun holds and has not answered: allowed by its number (the kernel matches a
  response to a held event by that number only, whoever writes it);
- events nobody reads (the group stays readable for :data:`GRACE`): the guard reads them
  itself and allows them.

It only ever allows, and only what is late, so a working igrun never notices it (the
containers whose start it lets go are learnt from their state folders, later). It ends when
the pipe closes: igrun ended, however it ended. Run as ``python -I -S holdguard.py GROUP PIPE
BOUND``: it imports only the standard library and :mod:`igrun.core.containers.fanotify`.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time

if not __package__:  # run as a script (``-S``: no site-packages): igrun's own folder
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, *[os.pardir] * 4)))

from igrun.core.containers import fanotify  # after the path: the script needs it

TICK = 0.1
GRACE = 0.5
"""How long past the bound igrun has to answer a held event before the guard does, and how
long events may wait unread (igrun reads each within milliseconds: every exec of runc is one,
so a stopped igrun would otherwise cost each of them the whole bound)."""
ATTEMPTS = 4
"""Responses written for one late number: each allows one held event with it (igrun's, or one
the guard read, which may share the number)."""


def allow_all(group: int, fd: int) -> None:
    """Allow every held event that has the number ``fd`` (stop at the first refusal)."""
    for _ in range(ATTEMPTS):
        try:
            fanotify.allow(group, fd)
        except OSError:
            return


class Guard:
    """The guard's state: the numbers igrun holds, and since when the group is unread."""

    def __init__(self, group: int, pipe: int, bound: float) -> None:
        self.group = group
        self.pipe = pipe
        self.late_after = bound + GRACE
        self.held: dict[int, float] = {}
        """igrun's held events: number and since when."""
        self.unread_since: float | None = None
        self._buffer = b""

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.pipe, select.POLLIN)
        while True:
            ready = poller.poll(TICK * 1000)
            if ready and not self._read_pipe():
                return  # igrun ended
            self._answer_late(time.monotonic())

    def _read_pipe(self) -> bool:
        """Take igrun's messages; False at the end of the pipe."""
        try:
            data = os.read(self.pipe, 4096)
        except BlockingIOError:
            return True
        if not data:
            return False
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        now = time.monotonic()
        for line in lines:
            kind, _, number = line.partition(b" ")
            if not number.isdigit():
                continue
            if kind == b"h":
                self.held[int(number)] = now
            elif kind == b"d":
                self.held.pop(int(number), None)
        return True

    def _answer_late(self, now: float) -> None:
        for fd, since in list(self.held.items()):
            if now - since > self.late_after:
                allow_all(self.group, fd)
                del self.held[fd]
        unread = select.select([self.group], [], [], 0)[0]
        if not unread:
            self.unread_since = None
            return
        if self.unread_since is None:
            self.unread_since = now
            return
        if now - self.unread_since <= GRACE:
            return
        for event in fanotify.read_events(self.group):
            if event.fd == fanotify.FAN_NOFD:
                continue
            allow_all(self.group, event.fd)
            with contextlib.suppress(OSError):
                os.close(event.fd)
        self.unread_since = None


def main(argv: list[str]) -> int:
    group, pipe, bound = int(argv[1]), int(argv[2]), float(argv[3])
    os.set_blocking(pipe, False)
    Guard(group, pipe, bound).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
