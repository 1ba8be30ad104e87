"""The agent's image (``scripts/build-image.sh``) run by podman as three nodes of one host.

Building the image takes minutes and the Debian archive, so this test takes an image built
beforehand: ``IGRUN_IMAGE=localhost/igrun:latest`` (``scripts/build-image.sh`` prints its
name and size); without it the test is skipped. Each container runs with what a DaemonSet
gives the agent: privileged, the host's pid namespace and network, bpffs and tracefs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from containerlab import needs

from igrun.testing import CliRun, IgrunCli, pins_of, without_ready

pytestmark = pytest.mark.bpf
IMAGE = os.environ.get("IGRUN_IMAGE", "")


@pytest.fixture
def podman_env(tmp_path: Path) -> dict[str, str]:
    if not IMAGE:
        pytest.skip("set IGRUN_IMAGE to an image built by scripts/build-image.sh")
    needs("podman", "runc")
    conf = tmp_path / "containers.conf"
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def _agent_pid(name: str, env: dict[str, str]) -> int:
    out = subprocess.run(
        ["podman", "inspect", "-f", "{{.State.Pid}}", name],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout)


@pytest.fixture
def nodes(
    podman_env: dict[str, str], tmp_path: Path
) -> Iterator[list[tuple[str, str, int, CliRun]]]:
    """Three agents in three containers: (node name, address, agent pid, podman run)."""
    started: list[tuple[str, str, int, CliRun]] = []
    names = []
    try:
        for i in range(3):
            node = f"node-{i}-{uuid.uuid4().hex[:6]}"
            name = f"igrun-test-{node}"
            names.append(name)
            sockets = tmp_path / node
            sockets.mkdir()
            podman = IgrunCli(
                command=(
                    "podman", "run", "--rm", "--name", name, "--privileged", "--pid=host",
                    "--network=host", "-v", "/sys/fs/bpf:/sys/fs/bpf",
                    "-v", "/sys/kernel/tracing:/sys/kernel/tracing",
                    "-v", f"{sockets}:/run/igrun", IMAGE,
                )
            )  # fmt: skip
            run = podman.start(
                "serve", "--listen", "unix:///run/igrun/igrun.sock", "--node-name", node,
                env=podman_env, timeout=60,
            )  # fmt: skip
            address = f"unix://{sockets}/igrun.sock"
            started.append((node, address, _agent_pid(name, podman_env), run))
        yield started
    finally:
        for _, _, pid, run in started:
            _, err = run.stop(signal.SIGINT)
            assert run.returncode == 0, err
            assert pins_of(pid) == []
        for name in names:
            subprocess.run(["podman", "rm", "-f", name], env=podman_env, capture_output=True)


def test_three_agent_containers_through_the_fan_out_client(
    igrun_cli: IgrunCli, nodes: list[tuple[str, str, int, CliRun]]
) -> None:
    addresses = ",".join(address for _, address, _, _ in nodes)
    client = igrun_cli.start("--remote", addresses, "trace", "exec", "--host", "-o", "json")
    for _, _, pid, _ in nodes:
        assert len(pins_of(pid)) == 1  # each container's agent runs the gadget
    marker = f"image-{uuid.uuid4().hex[:10]}"
    pids = []
    for _ in range(3):
        proc = subprocess.Popen(["/bin/true", marker])
        proc.wait()
        pids.append(proc.pid)
    time.sleep(0.5)
    out, err = client.stop(signal.SIGINT)
    assert client.returncode == 0 and without_ready(err) == "", err
    events = [e for e in IgrunCli.events(out) if e.get("args") == ["/bin/true", marker]]
    by_node = {
        node: sorted(e["pid"] for e in events if e["k8s"]["node"] == node) for node, *_ in nodes
    }
    assert by_node == {node: sorted(pids) for node, *_ in nodes}
    deadline = time.monotonic() + 15
    while any(pins_of(pid) for _, _, pid, _ in nodes):  # Ctrl-C ended every remote run
        assert time.monotonic() < deadline, "a container's agent still pins its run"
        time.sleep(0.05)
