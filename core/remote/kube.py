"""``kubectl igrun``: find the agent pods through the Kubernetes API, run a gadget on them.

``kubectl-igrun`` (on the PATH, kubectl runs it as ``kubectl igrun``) lists the running pods
of the agent's DaemonSet (namespace ``igrun``, label ``app.kubernetes.io/name=igrun`` by
default) and runs the gadget on each pod's agent (``POD_IP:7443``, mutual TLS), or on those
of ``--node``, as ``igrun --remote`` does. ``kubectl igrun agents`` prints the addresses
found. The API server and credentials come from the pod's service account when run in a
cluster, else from the kubeconfig (``$KUBECONFIG``, ``~/.kube/config``: its current
context's server, CA, and token or client certificate), read with plain HTTPS.

The gadget's ``kubectl gadget`` selectors become the container selection of every agent's run
(:func:`k8s_selection`): ``-n/--namespace`` (default: the context's namespace, else
``default``), ``-A/--all-namespaces``, ``-p/--podname``, ``-l/--selector key=value[,...]``
and ``-c/--containername`` (the name in the pod's spec).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import json
import os
import ssl
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igrun.core.errors import EnvironmentProblem, IgrunError, UsageError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_NAMESPACE = "igrun"
DEFAULT_SELECTOR = "app.kubernetes.io/name=igrun"
DEFAULT_PORT = 7443
PROG = "kubectl igrun"


@dataclass(frozen=True)
class ApiServer:
    """Where the API is and how to authenticate to it."""

    url: str
    token: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False
    namespace: str = "default"
    """The namespace of the kubeconfig's context (the pod's own in a cluster): what
    ``-n`` defaults to."""

    def get(self, path: str, timeout: float = 10.0) -> Any:
        request = urllib.request.Request(self.url.rstrip("/") + path)
        request.add_header("Accept", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        context = None
        if self.url.startswith("https:"):
            context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
            if self.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.cert and self.key:
                context.load_cert_chain(str(self.cert), str(self.key))
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as exc:
            raise EnvironmentProblem(
                f"the API server refused {path}: {exc.code} {exc.reason}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise EnvironmentProblem(f"cannot reach the API server {self.url}: {exc}") from None


def _data_file(data: str, suffix: str) -> Path:
    """A kubeconfig's inline ``*-data`` (base64 PEM) as a file, for the ssl module."""
    handle = tempfile.NamedTemporaryFile("wb", suffix=suffix, delete=False)  # noqa: SIM115
    atexit.register(os.unlink, handle.name)  # removed again as the command ends
    with handle:
        handle.write(base64.b64decode(data))
    return Path(handle.name)


def _path(entry: dict[str, Any], key: str, base: Path) -> Path | None:
    if entry.get(f"{key}-data"):
        return _data_file(entry[f"{key}-data"], ".pem")
    if entry.get(key):
        return base / str(entry[key])
    return None


def from_kubeconfig(path: Path, context: str | None = None) -> ApiServer:
    """The API server of the kubeconfig's current (or named) context."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise EnvironmentProblem(f"cannot read the kubeconfig {path}: {exc}") from None
    name = context or config.get("current-context")

    def named(kind: str, wanted: str | None) -> dict[str, Any]:
        for item in config.get(f"{kind}s") or []:
            if item.get("name") == wanted:
                return dict(item.get(kind) or {})
        raise EnvironmentProblem(f"kubeconfig {path}: no {kind} named {wanted!r}")

    ctx = named("context", name)
    cluster = named("cluster", ctx.get("cluster"))
    user = named("user", ctx.get("user")) if ctx.get("user") else {}
    base = path.parent
    return ApiServer(
        url=cluster["server"],
        namespace=str(ctx.get("namespace") or "default"),
        token=user.get("token"),
        ca=_path(cluster, "certificate-authority", base),
        cert=_path(user, "client-certificate", base),
        key=_path(user, "client-key", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def api_server(kubeconfig: str | None = None, context: str | None = None) -> ApiServer:
    """In a pod: its service account; else the kubeconfig."""
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if kubeconfig is None and host and port and (SERVICE_ACCOUNT / "token").is_file():
        namespace = SERVICE_ACCOUNT / "namespace"
        return ApiServer(
            url=f"https://{host}:{port}",
            token=(SERVICE_ACCOUNT / "token").read_text().strip(),
            ca=SERVICE_ACCOUNT / "ca.crt",
            namespace=namespace.read_text().strip() if namespace.is_file() else "default",
        )
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = Path(kubeconfig or env or Path.home() / ".kube" / "config")
    return from_kubeconfig(path, context)


@dataclass(frozen=True)
class Agent:
    node: str
    pod: str
    address: str


def agents(
    api: ApiServer,
    namespace: str = DEFAULT_NAMESPACE,
    selector: str = DEFAULT_SELECTOR,
    port: int = DEFAULT_PORT,
    nodes: Sequence[str] = (),
) -> list[Agent]:
    """The running agent pods (one per node), sorted by node; only ``nodes`` when given."""
    query = urllib.parse.urlencode({"labelSelector": selector})
    pods = api.get(f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/pods?{query}")
    found = []
    for pod in pods.get("items") or []:
        status, spec = pod.get("status") or {}, pod.get("spec") or {}
        ip, node = status.get("podIP"), spec.get("nodeName")
        if status.get("phase") != "Running" or not ip or not node:
            continue
        if nodes and node not in nodes:
            continue
        host = f"[{ip}]" if ":" in ip else ip
        found.append(Agent(node, pod["metadata"]["name"], f"{host}:{port}"))
    missing = sorted(set(nodes) - {a.node for a in found})
    if missing:
        raise UsageError(f"no running agent on node {', '.join(missing)}")
    if not found:
        raise EnvironmentProblem(
            f"no running agent pod in namespace {namespace!r} with labels {selector!r}"
        )
    return sorted(found, key=lambda a: a.node)


SELECTION_KEY = "operator.containers."


def k8s_selection(
    namespace: str | None = None,
    pods: Sequence[str] = (),
    labels: Sequence[str] | Mapping[str, str] = (),
    containers: Sequence[str] = (),
) -> dict[str, str]:
    """The params that select containers by their pod on every agent, for
    :func:`~igrun.core.remote.fan_out` and ``run_remote``: ``namespace`` (None: all), pod
    names, pod labels (``{"app": "cart"}`` or ``["app=cart"]``: a pod must have all) and
    container names of the pod's spec. A bad label raises :class:`UsageError`."""
    from igrun.core.containers.collection import parse_label_selector

    items = [f"{k}={v}" for k, v in labels.items()] if isinstance(labels, Mapping) else labels
    try:
        parse_label_selector(items)
    except ValueError as exc:
        raise UsageError(f"--selector: {exc}") from None
    out = {}
    for key, values in (
        ("k8s-namespace", [namespace] if namespace else []),
        ("k8s-podname", list(pods)),
        ("k8s-selector", list(items)),
        ("k8s-containername", list(containers)),
    ):
        if values:
            out[SELECTION_KEY + key] = ",".join(values)
    return out


@dataclass
class Selectors:
    """``kubectl gadget``'s selector flags, as given on a command line."""

    namespace: str | None = None
    all_namespaces: bool = False
    pods: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)


_SELECTOR_FLAGS = {
    "-n": "namespace",
    "--namespace": "namespace",
    "-p": "pods",
    "--podname": "pods",
    "-l": "labels",
    "--selector": "labels",
    "-c": "containers",
    "--containername": "containers",
    "--node": "nodes",
}


def take_selectors(args: Sequence[str]) -> tuple[Selectors, list[str]]:
    """The selector flags among a gadget's (``trace exec -n shop -l app=cart``; ``-nshop``
    and ``--namespace=shop`` too), and the rest of the arguments."""
    found, rest = Selectors(), []
    items = list(args)
    while items:
        arg = items.pop(0)
        if arg in ("-A", "--all-namespaces"):
            found.all_namespaces = True
            continue
        flag, value = arg, None
        if arg.startswith("--") and "=" in arg:
            flag, _, value = arg.partition("=")
        elif len(arg) > 2 and arg[:2] in _SELECTOR_FLAGS and not arg.startswith("--"):
            flag, value = arg[:2], arg[2:]
        if flag not in _SELECTOR_FLAGS:
            rest.append(arg)
            continue
        if value is None:
            if not items:
                raise UsageError(f"{flag} needs a value")
            value = items.pop(0)
        if not value.strip():
            raise UsageError(f"{flag}: empty value")
        if _SELECTOR_FLAGS[flag] == "namespace":
            found.namespace = value
        else:
            items_given = value.split(",")
            if any(not v.strip() for v in items_given):
                raise UsageError(f"{flag}: empty item in {value!r}")
            getattr(found, _SELECTOR_FLAGS[flag]).extend(items_given)
    return found, rest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run an igrun gadget on the agents of a Kubernetes cluster, one stream "
        "of every node's events (see docs/agent.md).",
    )
    parser.add_argument("--kubeconfig", help="default $KUBECONFIG, else ~/.kube/config")
    parser.add_argument("--context", help="the kubeconfig's context (default: current)")
    parser.add_argument("--agent-namespace", default=DEFAULT_NAMESPACE)
    parser.add_argument("--agent-selector", default=DEFAULT_SELECTOR)
    parser.add_argument("--agent-port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--node", action="append", default=[], help="only this node (repeat)")
    parser.add_argument("--tls-cert", required=False)
    parser.add_argument("--tls-key", required=False)
    parser.add_argument("--tls-ca", required=False)
    chosen = parser.add_argument_group(
        "pods to trace (before the gadget's name or among its flags, as kubectl gadget's)"
    )
    chosen.add_argument("-n", "--namespace", help="default: the context's, else 'default'")
    chosen.add_argument("-A", "--all-namespaces", action="store_true")
    chosen.add_argument("-p", "--podname", help="pod names (comma-separated)")
    chosen.add_argument("-l", "--selector", help="pod labels: key=value[,key=value,...]")
    chosen.add_argument("-c", "--containername", help="container names in the pod's spec")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="agents | <gadget> [flags]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``kubectl-igrun``: the errors and exit codes of ``igrun``."""
    from igrun.core.cli.remote import RemoteTarget, run_remote_gadget
    from igrun.core.remote.protocol import Tls

    given = list(sys.argv[1:] if argv is None else argv)
    try:
        chosen, given = take_selectors(given)  # before the gadget's name or among its flags
    except IgrunError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code
    args = _parser().parse_args(given)
    command = list(args.command)
    try:
        if not command:
            raise UsageError("name a gadget (kubectl igrun trace exec) or 'agents'")
        selection = k8s_selection(None, chosen.pods, chosen.labels, chosen.containers)
        api = api_server(args.kubeconfig, args.context)
        nodes = [*args.node, *chosen.nodes]
        found = agents(api, args.agent_namespace, args.agent_selector, args.agent_port, nodes)
        if command == ["agents"]:
            for a in found:
                sys.stdout.write(f"{a.node}\t{a.pod}\t{a.address}\n")
            return 0
        tls = Tls.from_flags(args.tls_cert, args.tls_key, args.tls_ca)
        if tls is None:
            raise UsageError(
                "the agents listen with mutual TLS: give --tls-cert, --tls-key, --tls-ca"
            )
        if not chosen.all_namespaces:
            selection.update(k8s_selection(chosen.namespace or api.namespace))
        from igrun.core.plugins import registry

        target = RemoteTarget([a.address for a in found], tls)
        flags = [f"--{k.removeprefix(SELECTION_KEY)}={v}" for k, v in selection.items()]
        return run_remote_gadget(registry(), target, [*command, *flags], None)
    except KeyboardInterrupt:
        return 0
    except IgrunError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code
