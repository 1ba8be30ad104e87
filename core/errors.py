"""One exception tree for everything igrun reports to a user.

The launcher turns an :class:`IgrunError` into one line on stderr and an exit code:
:attr:`IgrunError.exit_code` is 2 for usage and configuration mistakes, 1 for runtime failures.
"""

from __future__ import annotations


class IgrunError(Exception):
    """Base of every error igrun reports as one clear line."""

    exit_code = 1


class UsageError(IgrunError):
    """The command line or a config file asks for something that does not exist or fit."""

    exit_code = 2


class ParamError(UsageError):
    """A parameter value failed validation; the message names the parameter."""


class MissingColumn(ParamError):
    """A param names a column the events do not have (where it is checked); :attr:`column` is
    the name given and :attr:`what` the user's expression (``filter "pidd:1"``)."""

    def __init__(self, message: str, column: str, what: str) -> None:
        super().__init__(message)
        self.column = column
        self.what = what


class GadgetNotFound(UsageError):
    """No installed gadget has that name; the message suggests the closest ones."""


class PluginError(IgrunError):
    """A plugin could not be loaded or registered something invalid."""


class EnvironmentProblem(IgrunError):
    """The host cannot run gadgets as it is: not root, no bpffs, no BTF, a runtime or a
    device that is not there."""


class RunError(IgrunError):
    """The run failed while it ran, for a reason the user can act on (a file it reads went
    away, a service it talks to refused): one line, exit code 1."""


class OutputError(IgrunError):
    """Writing the output failed (a full disk, an I/O error): the run ends and cleans up."""


class OutputClosed(IgrunError):
    """Whoever read stdout went away (``| head``): every run ends, quietly, exit code 0,
    as a pipeline's writer does."""

    exit_code = 0


def output_failed(exc: OSError) -> OutputError | OutputClosed:
    """What a failed write to the output means for the run (from the ``OSError``)."""
    import errno

    if exc.errno == errno.EPIPE:
        return OutputClosed("output closed")
    return OutputError(f"writing output: {exc.strerror or exc}")


class BpfError(IgrunError):
    """A libbpf or kernel call failed.

    ``errno`` is the positive error number; ``log`` holds the relevant verifier log lines when
    the kernel rejected a program, so the message can show why.
    """

    def __init__(self, message: str, errno: int = 0, log: list[str] | None = None) -> None:
        self.errno = errno
        self.log = log or []
        detail = f"{message}: {_strerror(errno)}" if errno else message
        if self.log:
            detail += "\n" + "\n".join("  " + line for line in self.log)
        super().__init__(detail)


def _strerror(errno: int) -> str:
    import os

    return f"{os.strerror(errno)} (errno {errno})"
