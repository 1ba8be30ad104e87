"""The agent's image (``scripts/build-image.sh``) run by podman as the DaemonSet runs it.

Building the image takes minutes and the Debian archive, so these tests take an image built
beforehand: ``IGRUN_IMAGE=localhost/igrun:latest`` (``scripts/build-image.sh`` prints its
name and size); without it they are skipped. Each container is run from the DaemonSet that
``kubectl kustomize`` renders (:class:`Pod`): its command and arguments, its privileges, its
host paths and host pid namespace, ``NODE_NAME`` from the downward API, its own network
namespace (podman's bridge, as a pod has its own IP), so a change of the manifests is a change
of what these tests run. Containers that podman starts on the host stand for the node's other
pods; the agent names them from the runtimes' state the manifests mount.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from containerlab import IMAGE as BUSYBOX
from containerlab import needs, unique
from promlab import SCRAPE_INTERVAL, prometheus
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)
from test_kubernetes import one, render

from igrun.testing import CliRun, IgrunCli, pins_of, without_ready

pytestmark = pytest.mark.bpf
IMAGE = os.environ.get("IGRUN_IMAGE", "")

SCHEDULING = {
    "serviceAccountName",
    "priorityClassName",
    "terminationGracePeriodSeconds",
    "tolerations",
    "nodeSelector",
}
"""Pod spec fields that only the API server and the scheduler read: nothing to run here."""


@dataclass
class Pod:
    """The DaemonSet's pod as one ``podman run``: ``argv`` up to the image's arguments, and
    ``args``, the container's ``args``. Built from the rendered manifest; a field it cannot
    run as Kubernetes would fails the test (add it here rather than leave it out)."""

    name: str
    node: str
    argv: list[str]
    args: list[str]
    annotations: dict[str, str]
    run_igrun: Path
    """The host folder mounted at ``/run/igrun`` (the agent's socket): the test's own, not
    the host's ``/run/igrun``, so that nodes of one host do not share it."""
    host_network: bool = False
    mounts: dict[str, str] = field(default_factory=dict)
    """Mount path -> what is mounted there (host path or the test's folder), for the docs."""

    @classmethod
    def from_manifest(
        cls, target: str, node: str, folder: Path, without: tuple[str, ...] = ()
    ) -> Pod:
        """The pod of ``target``'s DaemonSet, as node ``node`` (its files in ``folder``);
        ``without`` the mounts at these paths (to show what they are for)."""
        docs = render(target)
        template = one(docs, "DaemonSet")["spec"]["template"]
        spec = template["spec"]
        name = f"igrun-test-{node}"
        argv = ["podman", "run", "--rm", "--pull=never", "--name", name]
        unknown = set(spec) - SCHEDULING - {"hostPID", "hostNetwork", "containers", "volumes"}
        assert not unknown, f"the pod spec's {sorted(unknown)}: run them here too"
        if spec.get("hostPID"):
            argv.append("--pid=host")
        host_network = bool(spec.get("hostNetwork"))
        argv.append("--network=host" if host_network else "--network=bridge")
        (container,) = spec["containers"]
        kept = [m for m in container["volumeMounts"] if m["mountPath"] not in without]
        assert len(kept) == len(container["volumeMounts"]) - len(without), without
        container = {**container, "volumeMounts": kept}
        unknown = set(container) - {
            "name", "image", "imagePullPolicy", "command", "args", "env", "ports",
            "resources", "securityContext", "volumeMounts",
        }  # fmt: skip
        assert not unknown, f"the container's {sorted(unknown)}: run them here too"
        argv += _security(container.get("securityContext", {}))
        memory = container.get("resources", {}).get("limits", {}).get("memory")
        if memory:
            argv.append(f"--memory={_quantity(memory)}")
        for env in container.get("env", []):
            if "value" in env:
                argv += ["-e", f"{env['name']}={env['value']}"]
            else:
                assert env["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}, env
                argv += ["-e", f"{env['name']}={node}"]
        run_igrun = folder / "run-igrun"
        run_igrun.mkdir(parents=True)
        mounts = _mounts(docs, spec, container, folder, run_igrun)
        for path, (source, read_only) in mounts.items():
            argv += ["-v", f"{source}:{path}" + (":ro" if read_only else "")]
        command = list(container.get("command", []))
        if command:
            argv.append(f"--entrypoint={json.dumps(_host_pid_1(command))}")
        argv.append(IMAGE)
        return cls(
            name=name,
            node=node,
            argv=argv,
            args=list(container.get("args", [])),
            annotations=dict(template["metadata"].get("annotations", {})),
            run_igrun=run_igrun,
            host_network=host_network,
            mounts={path: source for path, (source, _) in mounts.items()},
        )

    def start(self, env: dict[str, str]) -> CliRun:
        """Run the pod; return once igrun in it says ``ready``."""
        return IgrunCli(command=tuple(self.argv)).start(*self.args, env=env, timeout=120)

    def inspect(self, env: dict[str, str], template: str) -> str:
        done = subprocess.run(
            ["podman", "inspect", "-f", template, self.name],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.strip()


def _security(context: dict[str, Any]) -> list[str]:
    unknown = set(context) - {
        "privileged", "runAsUser", "capabilities", "seccompProfile", "appArmorProfile",
    }  # fmt: skip
    assert not unknown, f"the securityContext's {sorted(unknown)}: run them here too"
    out = []
    if context.get("privileged"):
        out.append("--privileged")
    if "runAsUser" in context:
        out.append(f"--user={context['runAsUser']}")
    capabilities = context.get("capabilities", {})
    assert set(capabilities) <= {"add", "drop"}, capabilities
    out += [f"--cap-add={c}" for c in capabilities.get("add", [])]
    out += [f"--cap-drop={c}" for c in capabilities.get("drop", [])]
    for key, option in (("seccompProfile", "seccomp"), ("appArmorProfile", "apparmor")):
        kind = context.get(key, {"type": "RuntimeDefault"})["type"]
        assert kind in ("Unconfined", "RuntimeDefault"), f"{key} {kind}: run it here too"
        if kind == "Unconfined":
            out.append(f"--security-opt={option}=unconfined")
    return out


def _quantity(text: str) -> str:
    """A Kubernetes memory quantity as podman's ``--memory`` takes it (``1Gi`` -> ``1g``)."""
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    for suffix, unit in units.items():
        if text.endswith(suffix):
            return text.removesuffix(suffix) + unit
    assert text.isdigit(), f"memory {text}: convert it here too"
    return text


def _mounts(
    docs: list[dict[str, Any]],
    spec: dict[str, Any],
    container: dict[str, Any],
    folder: Path,
    run_igrun: Path,
) -> dict[str, tuple[str, bool]]:
    """Each mount path -> (the host path or folder to bind there, read-only)."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    out: dict[str, tuple[str, bool]] = {}
    for mount in container.get("volumeMounts", []):
        unknown = set(mount) - {"name", "mountPath", "readOnly"}
        assert not unknown, f"volumeMount {mount}: run {sorted(unknown)} here too"
        volume = volumes[mount["name"]]
        path, read_only = mount["mountPath"], bool(mount.get("readOnly", False))
        if "hostPath" in volume:
            host, kind = volume["hostPath"]["path"], volume["hostPath"].get("type", "")
            source = Path(host)
            if host == "/run/igrun":
                source = run_igrun
            elif kind == "DirectoryOrCreate" and not source.exists():
                # the kubelet would make an empty folder on the node: the pod sees the same
                source = folder / "empty" / host.strip("/").replace("/", "-")
                source.mkdir(parents=True)
            elif kind == "Directory":
                assert source.is_dir(), f"hostPath {host} must exist (type Directory)"
            elif kind == "Socket":
                assert source.is_socket(), f"hostPath {host} must be a socket"
            else:
                assert kind in ("DirectoryOrCreate", ""), f"hostPath type {kind}: add it"
            out[path] = (str(source), read_only)
        elif "configMap" in volume:
            (config,) = [
                d
                for d in docs
                if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
            ]
            source = folder / "configmap" / mount["name"]
            source.mkdir(parents=True)
            for key, text in config["data"].items():
                (source / key).write_text(text)
            out[path] = (str(source), read_only)
        else:
            raise AssertionError(f"volume {volume}: run it here too")
    return out


def _host_pid_1(command: list[str]) -> list[str]:
    """The command, with ``/proc/1/`` (the host's init, seen through ``hostPID``) replaced by
    this test's process where the host's init cannot be inspected, as on hosts whose init
    holds capabilities root lacks: this process lives in the host's cgroup namespace too."""
    try:
        os.readlink("/proc/1/ns/cgroup")
    except PermissionError:
        return [a.replace("/proc/1/", f"/proc/{os.getpid()}/") for a in command]
    return command


def marker() -> str:
    return f"image-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def image(podman_env: dict[str, str]) -> dict[str, str]:  # noqa: F811
    """podman's environment, once an image is named (IGRUN_IMAGE)."""
    if not IMAGE:
        pytest.skip("set IGRUN_IMAGE to an image built by scripts/build-image.sh")
    needs("podman", "runc", "kubectl")  # kubectl renders the DaemonSet the pods are run from
    return podman_env


def _stop(pod: Pod, run: CliRun, pid: int, env: dict[str, str]) -> tuple[str, str]:
    """Ctrl-C the pod (podman passes it to igrun): igrun ends with 0, its pins gone."""
    try:
        out, err = run.stop(signal.SIGINT)
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", pod.name], env=env, capture_output=True)
    assert run.returncode == 0, err
    assert pins_of(pid) == []
    return out, err


def test_the_agent_names_the_hosts_podman_containers(
    image: dict[str, str],
    podman: Podman,  # noqa: F811
    igrun_cli: IgrunCli,
    tmp_path: Path,
) -> None:
    """The base DaemonSet's pod, run by podman, serves ``trace exec`` to a client on its
    socket: execs in podman containers of the host (one there before the agent, one started
    while the gadget runs) come back with their names, ids and images, and the node's name."""
    node = unique("node")
    pod = Pod.from_manifest("base", node, tmp_path / node)
    before = podman.run(unique("igrun-before"))
    agent = pod.start(image)
    agent_pid = int(pod.inspect(image, "{{.State.Pid}}"))
    try:
        address = f"unix://{pod.run_igrun}/igrun.sock"
        client = igrun_cli.start("--remote", address, "trace", "exec", "-o", "json")
        assert len(pins_of(agent_pid)) == 1  # the agent in the pod runs the gadget
        after = podman.run(unique("igrun-after"))
        marks = {before.name: marker(), after.name: marker()}
        for box in (before, after):
            podman("exec", box.name, "/bin/echo", marks[box.name])
        host = marker()
        subprocess.run(["/bin/echo", host], check=True, capture_output=True)
        time.sleep(0.5)
        out, err = client.stop(signal.SIGINT)
        assert client.returncode == 0 and without_ready(err) == "", err
    finally:
        _stop(pod, agent, agent_pid, image)
    events = IgrunCli.events(out)
    for box in (before, after):
        (event,) = [e for e in events if e["args"] == ["/bin/echo", marks[box.name]]]
        image_id = podman("inspect", "-f", "{{.Image}}", box.name)
        assert event["runtime"] == {
            "containerName": box.name,
            "containerId": box.id,
            "runtimeName": "podman",
            "containerImageName": BUSYBOX,
            "containerImageDigest": f"sha256:{image_id}",
        }
        assert event["k8s"] == {"node": node}  # NODE_NAME, from the downward API
        assert event["mountnsid"] == box.mntns
    assert [e for e in events if e["args"][1:] == [host]] == []  # containers only


def test_without_the_storage_mount_the_agent_cannot_name_them(
    image: dict[str, str],
    podman: Podman,  # noqa: F811
    igrun_cli: IgrunCli,
    tmp_path: Path,
) -> None:
    """What ``/var/lib/containers`` is for: without it the agent sees a podman container
    only through runc's state, named by its id."""
    node = unique("node")
    pod = Pod.from_manifest("base", node, tmp_path / node, without=("/var/lib/containers",))
    box = podman.run(unique("igrun-unnamed"))
    agent = pod.start(image)
    agent_pid = int(pod.inspect(image, "{{.State.Pid}}"))
    try:
        address = f"unix://{pod.run_igrun}/igrun.sock"
        client = igrun_cli.start("--remote", address, "trace", "exec", "-o", "json")
        mark = marker()
        podman("exec", box.name, "/bin/echo", mark)
        time.sleep(0.5)
        out, err = client.stop(signal.SIGINT)
        assert client.returncode == 0, err
    finally:
        _stop(pod, agent, agent_pid, image)
    (event,) = [e for e in IgrunCli.events(out) if e["args"] == ["/bin/echo", mark]]
    assert event["runtime"] == {
        "containerName": box.id,
        "containerId": box.id,
        "runtimeName": "runc",
    }


def test_the_metrics_only_pod_is_scraped_by_prometheus(
    image: dict[str, str],
    podman: Podman,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The metrics-only overlay's pod, run by podman with its own IP as a pod has: a real
    Prometheus scrapes it where the pod's ``prometheus.io/*`` annotations say (what the
    usual ``kubernetes-pods`` job does) and stores the exact count of a host container's
    execs, labelled with its name."""
    node = unique("node")
    pod = Pod.from_manifest("overlays/metrics-only", node, tmp_path / node)
    assert not pod.host_network
    assert pod.annotations["prometheus.io/scrape"] == "true"
    agent = pod.start(image)
    agent_pid = int(pod.inspect(image, "{{.State.Pid}}"))
    try:
        ip = pod.inspect(image, "{{.NetworkSettings.IPAddress}}")
        target = f"{ip}:{pod.annotations['prometheus.io/port']}"
        with prometheus(
            tmp_path / "prometheus", target, pod.annotations["prometheus.io/path"]
        ) as p:
            box = podman.run(unique("igrun-scraped"))
            execs = 4
            for _ in range(execs):
                podman("exec", box.name, "/bin/echo", "x")
            wanted = f'igrun_execs_total{{comm="echo",runtime_container_name="{box.name}"}}'
            (series,) = p.wait_for(wanted, str(execs))
            time.sleep(3 * SCRAPE_INTERVAL)
            stored = p.values(wanted)
            up = p.values('up{job="igrun"}')
            agent_events = p.values('igrun_events_total{job="igrun"}')
    finally:
        out, _ = _stop(pod, agent, agent_pid, image)
    assert out == ""  # -o none: an exporter
    assert series["metric"] == {
        "__name__": "igrun_execs_total",
        "comm": "echo",
        "runtime_container_name": box.name,
        "instance": target,
        "job": "igrun",
    }
    assert list(stored.values()) == [str(execs)]  # later scrapes: still exactly that
    assert list(up.values()) == ["1"]
    assert int(next(iter(agent_events.values()))) >= execs  # the run's own, every exec


@pytest.fixture
def nodes(image: dict[str, str], tmp_path: Path) -> Iterator[list[tuple[str, str, int, CliRun]]]:
    """Three agents in three pods of the base DaemonSet: (node name, address, agent pid,
    podman run)."""
    started: list[tuple[Pod, str, int, CliRun]] = []
    try:
        for i in range(3):
            node = f"node-{i}-{uuid.uuid4().hex[:6]}"
            pod = Pod.from_manifest("base", node, tmp_path / node)
            run = pod.start(image)
            pid = int(pod.inspect(image, "{{.State.Pid}}"))
            started.append((pod, f"unix://{pod.run_igrun}/igrun.sock", pid, run))
        yield [(pod.node, address, pid, run) for pod, address, pid, run in started]
    finally:
        for pod, _, pid, run in started:
            _stop(pod, run, pid, image)


def test_three_agent_containers_through_the_fan_out_client(
    igrun_cli: IgrunCli, nodes: list[tuple[str, str, int, CliRun]]
) -> None:
    addresses = ",".join(address for _, address, _, _ in nodes)
    client = igrun_cli.start("--remote", addresses, "trace", "exec", "--host", "-o", "json")
    for _, _, pid, _ in nodes:
        assert len(pins_of(pid)) == 1  # each container's agent runs the gadget
    mark = marker()
    pids = []
    for _ in range(3):
        proc = subprocess.Popen(["/bin/true", mark])
        proc.wait()
        pids.append(proc.pid)
    time.sleep(0.5)
    out, err = client.stop(signal.SIGINT)
    assert client.returncode == 0 and without_ready(err) == "", err
    events = [e for e in IgrunCli.events(out) if e.get("args") == ["/bin/true", mark]]
    by_node = {
        node: sorted(e["pid"] for e in events if e["k8s"]["node"] == node) for node, *_ in nodes
    }
    assert by_node == {node: sorted(pids) for node, *_ in nodes}
    deadline = time.monotonic() + 15
    while any(pins_of(pid) for _, _, pid, _ in nodes):  # Ctrl-C ended every remote run
        assert time.monotonic() < deadline, "a container's agent still pins its run"
        time.sleep(0.05)
