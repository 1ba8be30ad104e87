"""``igrun traceloop`` on real podman containers: what a container did, from its first syscall,
with exact paths, byte counts, return values and exit code; ``--syscall-filters``; a ring that
keeps exactly the last ``--max-syscalls``; a container that stops during the run is printed."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from containerlab import IMAGE, unique
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

from igrun.core.events.syscall_formats import Arg, parse_format, syscall_formats
from igrun.plugins.traceloop import (
    COPY_BUF,
    COPY_BUF_RET,
    COPY_NONE,
    COPY_STR,
    copy_plan,
    go_quote,
    ret_column,
    ret_text,
)
from igrun.testing import IgrunCli

pytestmark = pytest.mark.bpf

EXIT_CODE = 7


def run_container(podman: Podman, name: str, script: str) -> None:  # noqa: F811
    """``sh -c script`` in a new container that exits when it is done (exit code checked)."""
    podman.names.append(name)
    out = podman(
        "run",
        "--pull=never",
        "--network",
        "none",
        "--name",
        name,
        IMAGE,
        "sh",
        "-c",
        script,
        check=False,
    )
    code = podman("inspect", "-f", "{{.State.ExitCode}}", name)
    assert code == str(EXIT_CODE), out


def params(event: dict[str, Any]) -> dict[str, str]:
    """``name: content or value`` of an event's parameters."""
    return {p["name"]: p.get("content", p["value"]) for p in event.get("parameters", [])}


def of_container(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("runtime", {}).get("containerName") == name]


def test_a_container_started_later_is_recorded_from_its_first_syscall(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
) -> None:
    name = unique("igrun-tl")
    mark = unique("written")
    run = igrun_cli.start("traceloop", "-c", name, "-o", "json")
    run_container(podman, name, f"echo -n {mark} > /tmp/out; cat /no/such/file; exit {EXIT_CODE}")
    out, err = run.stop(signal.SIGTERM)
    run.assert_released()
    events = of_container(igrun_cli.events(out), name)
    assert events, err
    # Every syscall since the container's first one, in order: 1, 2, 3, ... none missing.
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["comm"].startswith("runc")
    calls = [(e["syscall"], params(e), e["ret"], e.get("result", 0), e["pid"]) for e in events]
    opens = [
        i for i, c in enumerate(calls) if c[0] == "openat" and c[1]["filename"] == '"/tmp/out"'
    ]
    assert len(opens) == 1
    i = opens[0]
    _, p, ret, retval, pid = calls[i]
    assert (
        p["dfd"] == "AT_FDCWD" and p["flags"] == "O_WRONLY|O_CREAT|O_TRUNC" and p["mode"] == "0666"
    )
    assert ret == str(retval) and retval >= 3
    # The shell moves the file to fd 1 and writes the string there, after the open.
    writes = [c for c in calls[i:] if c[0] == "write" and c[1]["buf"] == f'"{mark}"']
    assert len(writes) == 1
    assert writes[0][1]["count"] == str(len(mark)) and writes[0][2:4] == (str(len(mark)), len(mark))
    assert writes[0][4] == pid
    # cat's failed open: the error in ig's words, and as a number.
    failed = [
        c for c in calls if c[0] in ("open", "openat") and c[1]["filename"] == '"/no/such/file"'
    ]
    assert [(c[2], c[3]) for c in failed] == [("-1 (no such file or directory)", -2)]
    # The container's last syscall: the shell's exit_group with the code, which never returns.
    assert (
        calls[-1][:3] == ("exit_group", {"error_code": str(EXIT_CODE)}, "X") and calls[-1][4] == pid
    )
    assert all(e["runtime"]["containerName"] == name for e in events)


def test_syscall_filters_keep_only_the_named_syscalls(igrun_cli: IgrunCli, podman: Podman) -> None:  # noqa: F811
    name = unique("igrun-tl")
    mark = unique("written")
    run = igrun_cli.start(
        "traceloop", "-c", name, "--syscall-filters", "write,exit_group", "-o", "json"
    )
    run_container(podman, name, f"echo -n {mark} > /tmp/out; exit {EXIT_CODE}")
    out, _ = run.stop()
    events = of_container(igrun_cli.events(out), name)
    assert {e["syscall"] for e in events} == {"write", "exit_group"}
    assert [params(e)["buf"] for e in events if e["syscall"] == "write"][-1] == f'"{mark}"'
    assert params(events[-1]) == {"error_code": str(EXIT_CODE)}


def test_the_ring_keeps_exactly_the_last_n(igrun_cli: IgrunCli, podman: Podman) -> None:  # noqa: F811
    name = unique("igrun-tl")
    keep = 20
    script = "for i in $(seq 1 300); do echo -n x$i > /dev/null; done; echo -n last; exit 7"
    run = igrun_cli.start("traceloop", "-c", name, "--max-syscalls", str(keep), "-o", "json")
    run_container(podman, name, script)
    out, _ = run.stop()
    events = of_container(igrun_cli.events(out), name)
    seqs = [e["seq"] for e in events]
    assert len(events) == keep and seqs == list(range(seqs[-1] - keep + 1, seqs[-1] + 1))
    assert seqs[0] > 300  # the earlier ones were overwritten
    assert events[-1]["syscall"] == "exit_group"
    assert [params(e)["buf"] for e in events if e["syscall"] == "write"][-1] == '"last"'


def test_a_running_container_is_printed_at_the_end(igrun_cli: IgrunCli, podman: Podman) -> None:  # noqa: F811
    c = podman.run(unique("igrun-tl"))
    mark = unique("written")
    run = igrun_cli.start("traceloop", "-c", c.name, "-o", "json", "-t", "3s")
    podman("exec", c.name, "sh", "-c", f"echo -n {mark} > /tmp/x")
    out, _ = run.communicate(30)
    events = of_container(igrun_cli.events(out), c.name)
    writes = [e for e in events if e["syscall"] == "write" and params(e)["buf"] == f'"{mark}"']
    assert len(writes) == 1 and writes[0]["result"] == len(mark)
    assert all(e["mountnsid"] == c.mntns for e in events)  # podman exec enters its namespace


def test_sigusr1_prints_the_rings_and_recording_goes_on(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
) -> None:
    c = podman.run(unique("igrun-tl"))
    first, second = unique("first"), unique("second")
    run = igrun_cli.start("traceloop", "-c", c.name, "-o", "json")
    podman("exec", c.name, "sh", "-c", f"echo -n {first} > /tmp/x")
    run.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while first.encode() not in b"".join(run._out):  # printed while the run goes on
        assert time.monotonic() < deadline, "nothing printed after SIGUSR1"
        time.sleep(0.1)
    podman("exec", c.name, "sh", "-c", f"echo -n {second} > /tmp/x")
    out, _ = run.stop()
    events = of_container(igrun_cli.events(out), c.name)
    written = [params(e)["buf"] for e in events if e["syscall"] == "write"]
    # The first write twice (at SIGUSR1 and at the end), the second once, at the end.
    assert written.count(f'"{first}"') == 2 and written.count(f'"{second}"') == 1
    assert written.index(f'"{second}"') > written.index(f'"{first}"')


def test_an_unknown_syscall_is_refused(igrun_cli: IgrunCli) -> None:
    done = igrun_cli.run("traceloop", "--syscall-filters", "nosuchcall")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("syscall 'nosuchcall' does not exist")


# ---- without BPF: the formats and how values are shown -----------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openat", [COPY_NONE, COPY_STR, COPY_NONE, COPY_NONE]),
        ("write", [COPY_NONE, COPY_BUF, COPY_NONE]),
        ("read", [COPY_NONE, COPY_BUF_RET, COPY_NONE]),
        ("getcwd", [COPY_BUF_RET, COPY_NONE]),
        ("execve", [COPY_STR, COPY_NONE, COPY_NONE]),
        ("mount", [COPY_STR, COPY_STR, COPY_STR, COPY_NONE, COPY_NONE]),
    ],
)
def test_what_is_copied_follows_the_kernels_formats(name: str, expected: list[int]) -> None:
    formats = syscall_formats()
    if not formats:
        pytest.skip("tracefs is not mounted")
    kinds, lens = copy_plan(name, formats[name])
    assert kinds[: len(expected)] == expected
    if COPY_BUF in expected or COPY_BUF_RET in expected:
        i = max(expected)  # the buffer's index is its kind's position
        at = kinds.index(COPY_BUF if COPY_BUF in expected else COPY_BUF_RET)
        assert lens[at] == at + 1, i


def test_a_format_is_parsed_into_arguments() -> None:
    text = (
        "name: sys_enter_openat\nID: 1\nformat:\n"
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n"
        "\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n"
        "\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;\n"
        "\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n"
    )
    assert parse_format(text) == [Arg("int", "dfd"), Arg("const char *", "filename")]


def test_values_are_shown_as_ig_shows_them() -> None:
    assert go_quote(b'a"b\n\x00') == '"a\\"b\\n\\x00"'
    assert ret_text(-2, True, "openat") == "-1 (no such file or directory)"
    assert ret_column("-1 (no such file or directory)") == "-1 (ENOENT)"
    assert ret_text(0, False, "exit_group") == "X"
    assert ret_text(0, False, "wait4") == "unfinished"
