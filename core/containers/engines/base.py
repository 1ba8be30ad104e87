"""The one interface every runtime reader implements."""

from __future__ import annotations

from pathlib import Path

from igrun.core.containers.collection import Container


class RuntimeUnavailable(Exception):
    """The runtime is not on this host, or refused to answer."""


class RuntimeClient:
    """Lists the running containers of one runtime."""

    name: str = ""

    def __init__(self) -> None:
        self.problems: list[str] = []
        """Things worth a warning (e.g. a malformed state file), collected for the caller."""
        self.requested = False
        """Asked for by name (``--runtimes``). A runtime found by looking around that does not
        answer is routine (a stopped daemon leaves its socket behind): only a requested one
        is worth a warning."""

    def available(self) -> bool:
        """Whether this runtime is present on the host at all."""
        raise NotImplementedError

    def containers(self) -> list[Container]:
        """The running containers; raises :class:`RuntimeUnavailable` when it cannot say."""
        raise NotImplementedError

    def describe(self, id: str, pid: int, state_dir: Path, bundle: str) -> Container | None:
        """The container ``id`` whose init process ``pid`` runc holds before it starts (see
        :mod:`igrun.core.containers.starthold`), if it is one of this runtime's; its name is read
        from
        the runtime's state now, not from what a scan saw. ``state_dir`` is runc's folder
        for it, ``bundle`` its OCI bundle."""
        return None

    def state_dirs(self) -> tuple[Path, ...]:
        """Folders that change when one of its containers is created or removed (one folder
        per container inside them). Discovery watches them to rescan at once, so a container
        is usually known before its first process runs; polling remains the fallback."""
        return ()
