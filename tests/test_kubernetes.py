"""The Kubernetes manifests (deploy/kubernetes): every overlay renders with ``kubectl
kustomize``, validates offline against the Kubernetes API schemas, gives the agent what
:mod:`igrun.core.run.hostneeds` says it needs, and its RBAC only reads pods and namespaces."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from igrun.core.run import hostneeds
from igrun.testing import marker

ROOT = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (ROOT / "overlays").iterdir() if p.is_dir())
TARGETS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]
K8S_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests are for: ``appArmorProfile`` is a field from 1.30."""

kubectl = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(kubectl is None, reason="kubectl (kustomize) not installed")


def render(target: str) -> list[dict[str, Any]]:
    assert kubectl is not None
    done = subprocess.run(
        [kubectl, "kustomize", str(ROOT / target)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, [d["kind"] for d in docs]
    return found[0]


def test_the_overlays_are_the_documented_ones() -> None:
    assert OVERLAYS == ["docker", "metrics-only", "restricted-nodes", "tls"]
    docs = (Path(__file__).resolve().parent.parent / "docs" / "kubernetes.md").read_text()
    for name in OVERLAYS:
        assert f"overlays/{name}" in docs


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_each_overlay_renders_and_validates_offline(target: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = render(target)
    assert {d["kind"] for d in docs} >= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    }
    for doc in docs:
        kv.validate(doc, K8S_VERSION, strict=True)  # raises on an unknown or mistyped field
        if doc["kind"] != "Namespace" and not doc["kind"].startswith("ClusterRole"):
            assert doc["metadata"]["namespace"] == "igrun"


def test_a_mistake_fails_the_validation() -> None:
    """The validation is real: a field the schema lacks is refused."""
    kv = pytest.importorskip("kubernetes_validate")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}
    pod["spec"] = {"containers": [{"name": "c", "image": "i"}], "hostPID": "yes"}
    with pytest.raises(kv.ValidationError):
        kv.validate(pod, K8S_VERSION, strict=True)


def _mounts(target: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """The pod spec, host path -> (mount, volume), and the container."""
    ds = one(render(target), "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    by_path: dict[str, dict[str, Any]] = {}
    for m in container["volumeMounts"]:
        volume = volumes[m["name"]]
        if "hostPath" in volume:
            by_path[volume["hostPath"]["path"]] = {"mount": m, "host": volume["hostPath"]}
    return spec, by_path, container


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_the_daemonset_gives_the_agent_what_it_needs(target: str) -> None:
    spec, by_path, container = _mounts(target)
    assert spec["hostPID"] is hostneeds.HOST_PID is True
    assert spec["serviceAccountName"] == "igrun"
    overlay = target.removeprefix("overlays/")
    for need in hostneeds.HOST_PATHS:
        if need.overlay and need.overlay != overlay:
            assert need.path not in by_path, f"{need.path} belongs to overlays/{need.overlay}"
            continue
        assert need.path in by_path, f"{need.path} ({need.why}) is not mounted"
        got = by_path[need.path]
        assert got["mount"]["mountPath"] == need.path  # igrun reads fixed paths
        assert bool(got["mount"].get("readOnly", False)) is need.read_only, need.path
        assert got["host"]["type"] == need.kind, need.path
    assert set(by_path) <= {n.path for n in hostneeds.HOST_PATHS}, "a mount nobody needs"

    security = container["securityContext"]
    assert set(security["capabilities"]["add"]) == set(hostneeds.CAPABILITIES)
    assert security.get("privileged") is False
    assert "drop" not in security["capabilities"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"

    annotations = one(render(target), "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    ports = {p["containerPort"] for p in container["ports"]}
    assert int(annotations["prometheus.io/port"]) in ports


def test_the_list_covers_the_paths_igrun_reads() -> None:
    """Each host path the container runtimes' readers and the BPF layer open lies under a
    path of the list: a reader added for a new place must add it there too."""
    from igrun.core.bpf import pins
    from igrun.core.containers.engines import containerd, docker, oci, storage

    read = [
        containerd.TASKS,
        containerd.RUNC_STATE,
        docker.SOCKET,
        docker.STATE,
        *oci.RUNC_ROOTS,
        *oci.OTHER_RUNC_ROOTS,
        storage.STORAGE,
        storage.RUN_STORAGE,
        pins.PIN_ROOT,
        Path("/sys/kernel/btf/vmlinux"),
        Path("/sys/kernel/tracing/events"),
        Path("/sys/kernel/debug/tracing/events"),
        Path("/run/crio/crio.sock"),  # /var/run/crio/crio.sock: /var/run is /run
    ]
    places = [Path(n.path) for n in hostneeds.HOST_PATHS]
    for path in read:
        assert any(path == p or p in path.parents for p in places), f"{path} is not mounted"


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_rbac_only_reads_pods_and_namespaces(target: str) -> None:
    docs = render(target)
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
    assert [r["metadata"]["name"] for r in roles] == ["igrun"]
    for rule in roles[0]["rules"]:
        assert rule["apiGroups"] == [""]
        assert set(rule["resources"]) <= {"pods", "namespaces"}
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "igrun",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "igrun", "namespace": "igrun"}
    ]
    assert not [d for d in docs if d["kind"] in ("RoleBinding",)]


@needs_kubectl
def test_overlays_change_what_they_say() -> None:
    _, _, base_container = _mounts("base")
    assert base_container["args"] == ["serve", "--listen", "unix:///run/igrun/igrun.sock"]

    spec, _, container = _mounts("overlays/tls")
    args = container["args"]
    assert args[: len(base_container["args"])] == base_container["args"]
    assert args[3:5] == ["--listen", "0.0.0.0:7443"]
    assert {a.split("=")[0] for a in args[5:]} == {"--tls-cert", "--tls-key", "--tls-ca"}
    secret = next(v for v in spec["volumes"] if v["name"] == "tls")["secret"]
    assert secret["secretName"] == "igrun-tls"
    assert 7443 in {p["containerPort"] for p in container["ports"]}

    spec, _, _ = _mounts("overlays/restricted-nodes")
    assert spec["nodeSelector"]["igrun.io/trace"] == "true"
    assert "tolerations" not in spec

    docs = render("overlays/metrics-only")
    spec, _, container = _mounts("overlays/metrics-only")
    assert container["args"][:3] == ["trace", "exec", "--host"]
    config = one(docs, "ConfigMap")
    volume = next(v for v in spec["volumes"] if v["name"] == "metrics-config")
    assert volume["configMap"]["name"] == config["metadata"]["name"]  # the generated name


@needs_kubectl
@pytest.mark.bpf
def test_the_metrics_only_overlay_runs_as_rendered(tmp_path: Path, igrun_cli: Any) -> None:
    """Its command line and metrics file, taken from the rendering, run here: the exporter
    counts an exec by its comm (on a free port instead of :2223)."""
    docs = render("overlays/metrics-only")
    config = one(docs, "ConfigMap")["data"]["metrics.toml"]
    _, _, container = _mounts("overlays/metrics-only")
    args = list(container["args"])
    (tmp_path / "metrics.toml").write_text(config)
    args[args.index("--metrics-config") + 1] = str(tmp_path / "metrics.toml")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args[args.index("--metrics-listen-address") + 1] = f"127.0.0.1:{port}"
    tag = marker()
    program = tmp_path / tag[:15]
    shutil.copy("/bin/true", program)
    run = igrun_cli.start(*args)
    try:
        subprocess.run([str(program)], check=True)
        deadline = time.monotonic() + 10
        while True:
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            wanted = f'igrun_execs_total{{comm="{tag[:15]}",runtime_container_name=""}} 1.0'
            if wanted in page.decode() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert wanted in page.decode()
    finally:
        out, err = run.stop()
    assert run.returncode == 0, err
    assert out == ""  # -o none: an exporter


CGROUP_PROBE = (
    "import sys; from igrun.core.containers.collection import _cgroup; "
    "print(_cgroup(int(sys.argv[1]))[1])"
)


@needs_kubectl
def test_the_agent_enters_the_hosts_cgroup_namespace(tmp_path: Path) -> None:
    """In a pod's own cgroup namespace another process's cgroup reads ``/../..``: igrun finds
    no cgroup id for it. The DaemonSet's command enters pid 1's; here this test's process
    stands in for the host's pid 1, and a cgroup namespace rooted in a child cgroup for the
    pod's."""
    from igrun.core.containers.collection import _cgroup
    from igrun.core.containers.procfs import cgroup2_root

    _, _, container = _mounts("base")
    command = list(container["command"])
    assert command[-1] == "igrun" and command[0] == "nsenter"
    assert "--cgroup=/proc/1/ns/cgroup" in command
    root = cgroup2_root()
    if root is None or not os.access(root, os.W_OK):
        pytest.skip("no writable cgroup v2 hierarchy")
    tag = marker()
    pod, ctr = root / f"{tag}-pod", root / f"{tag}-ctr"
    pod.mkdir()
    ctr.mkdir()
    target = subprocess.Popen(["sh", "-c", f"echo $$ > {ctr}/cgroup.procs && exec sleep 30"])
    try:
        deadline = time.monotonic() + 10
        while _cgroup(target.pid)[0] != f"/{ctr.name}" and time.monotonic() < deadline:
            time.sleep(0.01)
        want = ctr.stat().st_ino  # a container's cgroup, as igrun maps it on the host
        assert _cgroup(target.pid) == (f"/{ctr.name}", want)
        enter = [
            a.replace("/proc/1/", f"/proc/{os.getpid()}/") for a in command[:-1]
        ]  # nsenter --cgroup=/proc/<this test>/ns/cgroup --
        probe = [sys.executable, "-c", CGROUP_PROBE, str(target.pid)]

        def in_pod(cmd: list[str]) -> int:
            script = f'echo $$ > {pod}/cgroup.procs && exec unshare --cgroup "$@"'
            done = subprocess.run(
                ["sh", "-c", script, "sh", *cmd], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            return int(done.stdout)

        assert in_pod(probe) == 0  # the pod's own namespace: "/../<ctr>", not found
        assert in_pod([*enter, *probe]) == want  # the DaemonSet's command: found
    finally:
        target.kill()
        target.wait()
        pod.rmdir()
        ctr.rmdir()
