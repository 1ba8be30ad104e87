"""Columns a person reads: errno names where JSON keeps numbers, a mark on arguments the
kernel cut, headers whole. Real programs, real failures, exact cells."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from igrun.core import Schema
from igrun.core.params import Params
from igrun.operators.output import OutputOperator
from igrun.testing import IgrunCli, marker

pytestmark = pytest.mark.bpf


def rows(stdout: str, first: str) -> list[list[str]]:
    """The rows under the header that starts with ``first``, split on blanks."""
    lines = stdout.splitlines()
    assert lines and lines[0].split()[0] == first, stdout
    return [line.split() for line in lines[1:]]


def test_exec_ret_by_name_and_cut_args_marked(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """A failed exec shows RET ENOENT (ig and JSON: -2); an exec with more than 20
    arguments ends its ARGS with `` ...``, as execsnoop."""
    tag = marker()
    missing = str(tmp_path / f"missing-{tag}")
    proc = igrun_cli.start(
        "trace", "exec", "--host", "-F", f"ppid:{os.getpid()}", "-o", "columns=ret,args"
    )
    with pytest.raises(FileNotFoundError):
        subprocess.run([missing])
    many = [f"{tag}-{i}" for i in range(25)]
    subprocess.run(["/bin/true", *many], check=True)
    time.sleep(0.5)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    shown = rows(out, "RET")
    assert ["ENOENT", missing] in shown
    cut = [r for r in shown if r[1] == "/bin/true"]
    assert cut == [["0", "/bin/true", *many[:19], "..."]]
    proc.assert_released()


def test_exec_json_keeps_the_number(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    missing = str(tmp_path / f"missing-{marker()}")
    proc = igrun_cli.start("trace", "exec", "--host", "-F", f"ppid:{os.getpid()}", "-o", "json")
    with pytest.raises(FileNotFoundError):
        subprocess.run([missing])
    time.sleep(0.5)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    mine = [e for e in igrun_cli.events(out) if e["args"] == [missing]]
    assert len(mine) == 1
    assert {k: v for k, v in mine[0].items() if k in ("ret", "retval")} in (
        {"ret": -errno.ENOENT},
        {"retval": -errno.ENOENT},
    )
    assert mine[0]["truncated"] is False
    proc.assert_released()


def test_open_err_by_name(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    missing = str(tmp_path / f"missing-{marker()}")
    locked = tmp_path / "locked"
    locked.write_text("")
    proc = igrun_cli.start(
        "trace", "open", "--host", "-F", f"pid:{os.getpid()}", "-o", "columns=err,path"
    )
    with pytest.raises(FileNotFoundError):
        open(missing)  # noqa: SIM115
    Path(locked).read_text()
    time.sleep(0.5)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    shown = rows(out, "ERR")
    assert ["ENOENT", missing] in shown
    assert ["0", str(locked)] in shown
    proc.assert_released()


def _free_pid() -> int:
    pid = int(Path("/proc/sys/kernel/pid_max").read_text()) - 1
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


def test_signal_ret_by_name(igrun_cli: IgrunCli) -> None:
    nobody = _free_pid()
    proc = igrun_cli.start(
        "trace", "signal", "--host", "-F", f"pid:{os.getpid()}", "-o", "columns=tpid,signal,ret"
    )
    with pytest.raises(ProcessLookupError):
        os.kill(nobody, signal.SIGUSR1)
    time.sleep(0.5)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    assert [str(nobody), "SIGUSR1", "ESRCH"] in rows(out, "TPID")
    proc.assert_released()


def test_headers_are_never_cut_while_there_is_room() -> None:
    """A column narrower than its name widens to the name (``OPERATION``, not ``OPERAT…``,
    in trace tcp); widths shrink below it only on a terminal too narrow for all of them."""
    import io

    import structlog

    from igrun.core import Gadget, GadgetContext
    from igrun.core.run.local import RUNTIME_PARAMS
    from igrun.plugins.trace_tcp import TraceTcp

    fields = [TraceTcp.schema["operation"], TraceTcp.schema["pid"]]
    assert fields[0].width < len("operation")  # the declared width, as ig's
    stream = io.StringIO()
    gadget: type[Gadget] = TraceTcp
    ctx = GadgetContext("t", gadget, Params(()), Params(RUNTIME_PARAMS), {}, structlog.get_logger())
    op = OutputOperator(
        ctx, Params(OutputOperator.params, {"output": "columns=operation,pid"}), stream
    )
    op.pre_run(Schema(fields))
    op.post_run()
    assert stream.getvalue().split() == ["OPERATION", "PID"]


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_fsslower_file_names_cut_by_the_kernel_are_marked(
    igrun_cli: IgrunCli, tmpfs_dir: Path
) -> None:
    """The event holds 31 bytes of a file name, as ig's: a longer name ends with `` ...``,
    one of exactly 31 bytes does not."""
    tag = marker()[:8]
    fits = (tag + "x" * 31)[:31]
    longer = tag + "y" * 40
    proc = igrun_cli.start(
        "trace", "fsslower", "--host", "-f", "tmpfs", "-m", "0", "-F", f"pid:{os.getpid()}",
        "-F", "T:W", "-o", "columns=bytes,file",
    )  # fmt: skip
    for name in (fits, longer):
        (tmpfs_dir / name).write_bytes(b"1234")
    time.sleep(0.5)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    assert rows(out, "BYTES") == [["4", fits], ["4", longer[:31], "..."]]
    proc.assert_released()
