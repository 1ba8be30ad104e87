"""Docker and containerd for real (daemons started by the tests when none runs), and runtimes
that refuse to answer."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from containerlab import IMAGE, Running, marker, needs, stop_and_read, unique, with_arg

from igrun.core.containers.collection import Container, ContainerCollection
from igrun.core.containers.discovery import Discovery
from igrun.core.containers.engines.base import RuntimeClient

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

LOOP = ["sh", "-c", "while true; do sleep 1; done"]
CTR_NAMESPACE = "igrun-test"
CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")


def wait_for(check: list[str], what: str, daemon: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while subprocess.run(check, capture_output=True).returncode != 0:
        if daemon.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def remove_cgroups(name: str) -> None:
    for cgroup in Path("/sys/fs/cgroup").glob(f"*/{name}"):
        for child in sorted(cgroup.rglob("*"), reverse=True):
            if child.is_dir():
                child.rmdir()
        cgroup.rmdir()


# ---- Docker --------------------------------------------------------------------------------


class Docker:
    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["docker", *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    def run(self, name: str) -> Running:
        id = self("run", "-d", "--network", "none", "--name", name, IMAGE, *LOOP)
        return Running(name, id, int(self("inspect", "-f", "{{.State.Pid}}", name)), "docker")


@pytest.fixture(scope="session")
def docker(ctr: Ctr, rootfs_tar: Path) -> Iterator[Docker]:
    """The host's Docker, or a dockerd of our own for the session: on the containerd of
    :func:`ctr`, with its own socket (``DOCKER_HOST``), folders, no iptables and no bridge, so
    whatever a stopped Docker left on the host is not in the way."""
    needs("dockerd", "docker")
    own = None
    saved_host = os.environ.get("DOCKER_HOST")
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        work = Path(tempfile.mkdtemp(prefix="igrun-docker-"))
        os.environ["DOCKER_HOST"] = f"unix://{work / 'docker.sock'}"
        log = work / "dockerd.log"
        own = subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--host", os.environ["DOCKER_HOST"], "--containerd", str(CONTAINERD_SOCKET),
             "--data-root", str(work / "root"), "--exec-root", str(work / "exec"),
             "--pidfile", str(work / "dockerd.pid")],
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(["docker", "version"], "dockerd", own, log)
    d = Docker()
    d("import", "--change", 'CMD ["/bin/sh"]', str(rootfs_tar), IMAGE)
    try:
        yield d
    finally:
        subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True)
        if own is not None:
            own.terminate()
            own.wait(timeout=30)
            remove_cgroups("docker")
            shutil.rmtree(work, ignore_errors=True)
            if saved_host is None:
                del os.environ["DOCKER_HOST"]
            else:
                os.environ["DOCKER_HOST"] = saved_host


@pytest.fixture
def docker_container(docker: Docker) -> Iterator[Running]:
    c = docker.run(unique("igrun-dk"))
    yield c
    subprocess.run(["docker", "rm", "-f", c.name], capture_output=True)


def test_docker_container_is_named(
    igrun_cli: IgrunCli, docker: Docker, docker_container: Running
) -> None:
    mark = marker()
    proc = igrun_cli.start("trace", "exec", "-o", "json", "-r", "docker")
    docker("exec", docker_container.name, "/bin/echo", mark)
    (event,) = with_arg(stop_and_read(igrun_cli, proc), mark)
    digest = event["runtime"].pop("containerImageDigest")
    assert digest.startswith("sha256:")
    assert event["runtime"] == {
        "containerName": docker_container.name,
        "containerId": docker_container.id,
        "runtimeName": "docker",
        "containerImageName": IMAGE,
    }
    assert event["mountnsid"] == docker_container.mntns


def test_list_containers_agrees_with_docker_ps(
    igrun_cli: IgrunCli, docker: Docker, docker_container: Running
) -> None:
    listed = igrun_cli.run("list-containers", "-o", "json", "-r", "docker")
    assert listed.returncode == 0, listed.stderr
    ours = {c["id"]: c for c in map(json.loads, listed.stdout.splitlines())}
    ps = docker("ps", "--no-trunc", "--format", "{{json .}}").splitlines()
    ps = [json.loads(line) for line in ps]
    assert {c["ID"] for c in ps} == set(ours)
    for c in ps:
        assert (ours[c["ID"]]["name"], ours[c["ID"]]["imageName"]) == (c["Names"], c["Image"])
    assert ours[docker_container.id]["pid"] == docker_container.pid
    assert ours[docker_container.id]["cgroupPath"] == f"/docker/{docker_container.id}"


# ---- containerd ----------------------------------------------------------------------------


def oci_archive(rootfs_tar: Path, name: str, out: Path) -> Path:
    """A one-layer OCI image archive of ``rootfs_tar``, as ``ctr images import`` takes it."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    layer = rootfs_tar.read_bytes()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [blob(layer)["digest"]]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **blob(json.dumps(config).encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(layer)}],
    }  # fmt: skip
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       **blob(json.dumps(manifest).encode()),
                       "annotations": {"io.containerd.image.name": name}}],
    }  # fmt: skip
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": json.dumps(index)}
    with tarfile.open(out, "w") as tar:
        files.update((f"blobs/sha256/{d.removeprefix('sha256:')}", b) for d, b in blobs.items())
        for path, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(path)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return out


class Ctr:
    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["ctr", "-n", CTR_NAMESPACE, *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    def run(self, id: str, name: str) -> Running:
        # ctr's stdio stays with the task: do not capture it.
        subprocess.run(
            ["ctr", "-n", CTR_NAMESPACE, "run", "-d", "--label", f"name={name}", IMAGE, id, *LOOP],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
        task = Path("/run/containerd/io.containerd.runtime.v2.task") / CTR_NAMESPACE / id
        return Running(name, id, int((task / "init.pid").read_text()), "containerd")

    def remove(self, id: str) -> None:
        subprocess.run(["ctr", "-n", CTR_NAMESPACE, "task", "kill", "-s", "KILL", id],
                       capture_output=True)  # fmt: skip
        for _ in range(100):
            if "RUNNING" not in self("task", "ls"):
                break
            time.sleep(0.05)
        subprocess.run(["ctr", "-n", CTR_NAMESPACE, "task", "rm", id], capture_output=True)
        subprocess.run(["ctr", "-n", CTR_NAMESPACE, "containers", "rm", id], capture_output=True)


@pytest.fixture(scope="session")
def ctr(rootfs_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctr]:
    """The host's containerd, or one of our own for the session (its CRI plugin off)."""
    needs("containerd", "ctr")
    own = None
    work = tmp_path_factory.mktemp("containerd")
    if subprocess.run(["ctr", "version"], capture_output=True).returncode != 0:
        CONTAINERD_SOCKET.unlink(missing_ok=True)  # left by a containerd that is gone
        config = work / "config.toml"
        config.write_text(
            f'version = 2\nroot = "{work / "root"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        )
        log = work / "containerd.log"
        own = subprocess.Popen(["containerd", "--config", str(config)],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)  # fmt: skip
        wait_for(["ctr", "version"], "containerd", own, log)
    c = Ctr()
    c("images", "import", str(oci_archive(rootfs_tar, IMAGE, work / "image.tar")))
    try:
        yield c
    finally:
        subprocess.run(["ctr", "-n", CTR_NAMESPACE, "images", "rm", "--sync", IMAGE],
                       capture_output=True)  # fmt: skip
        subprocess.run(["ctr", "namespaces", "rm", CTR_NAMESPACE], capture_output=True)
        if own is not None:
            own.terminate()
            own.wait(timeout=30)
        remove_cgroups(CTR_NAMESPACE)


def test_containerd_task_is_named(igrun_cli: IgrunCli, ctr: Ctr) -> None:
    id = unique("igrun-ctr")
    task = ctr.run(id, "web")
    try:
        mark = marker()
        proc = igrun_cli.start(
            "trace", "exec", "-o", "json", "-r", "containerd",
            "--containerd-namespace", CTR_NAMESPACE, "-c", "web",
        )  # fmt: skip
        ctr("task", "exec", "--exec-id", "e1", id, "/bin/echo", mark)
        (event,) = with_arg(stop_and_read(igrun_cli, proc), mark)
        assert event["runtime"]["containerName"] == "web"  # from the task's name label
        assert event["runtime"]["containerId"] == id
        assert event["runtime"]["runtimeName"] == "containerd"
        assert event["mountnsid"] == task.mntns
    finally:
        ctr.remove(id)


# ---- runtimes that do not answer -------------------------------------------------------------


@pytest.fixture
def refusing_socket(tmp_path: Path) -> Iterator[Path]:
    """A Unix socket nobody accepts on: connecting to it is refused."""
    path = tmp_path / "docker.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    yield path
    sock.close()


def test_a_refusing_socket_is_an_error_when_it_is_the_only_runtime(
    igrun_cli: IgrunCli, refusing_socket: Path
) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{refusing_socket}"}
    result = subprocess.run(
        [*igrun_cli.command, "trace", "exec", "-r", "docker", "-t", "1s"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        f"igrun: error: container runtime docker: docker at {refusing_socket}: "
        "[Errno 111] Connection refused\n"
    )


def test_a_refusing_socket_is_a_warning_among_others(
    igrun_cli: IgrunCli, refusing_socket: Path
) -> None:
    needs("runc")
    env = {**os.environ, "DOCKER_HOST": f"unix://{refusing_socket}"}
    result = subprocess.run(
        [*igrun_cli.command, "trace", "exec", "-r", "docker,runc", "-t", "1s", "-o", "json"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "container_discovery" in line]
    assert "runtime=docker" in warning and "Connection refused" in warning


class Broken(RuntimeClient):
    name = "broken"

    def available(self) -> bool:
        return True

    def containers(self) -> list[Container]:
        raise KeyError("surprise")


def test_discovery_survives_a_runtime_that_breaks() -> None:
    discovery = Discovery(ContainerCollection(), [Broken()], interval=0.05)
    discovery.start()
    time.sleep(0.3)  # several rescans, each one failing
    assert discovery._thread is not None and discovery._thread.is_alive()
    discovery.stop()
    assert discovery._warned == {"KeyError: 'surprise'"}  # once, however often it fails


def test_a_refusing_socket_found_by_looking_is_quiet(
    igrun_cli: IgrunCli, refusing_socket: Path
) -> None:
    """A stopped daemon leaves its socket behind: routine, unless the runtime was asked for."""
    env = {**os.environ, "DOCKER_HOST": f"unix://{refusing_socket}"}
    command = [*igrun_cli.command, "trace", "exec", "--host", "-t", "1s", "-o", "json"]
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)
    assert quiet.returncode == 0, quiet.stderr
    assert "Connection refused" not in quiet.stderr
    verbose = subprocess.run([*command, "-v"], capture_output=True, text=True, env=env, timeout=30)
    assert "Connection refused" in verbose.stderr
