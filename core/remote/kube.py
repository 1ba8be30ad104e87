"""``kubectl igrun``: find the agent pods through the Kubernetes API, run a gadget on them.

``kubectl-igrun`` (on the PATH, kubectl runs it as ``kubectl igrun``) lists the running pods
of the agent's DaemonSet (namespace ``igrun``, label ``app.kubernetes.io/name=igrun`` by
default) and runs the gadget on each pod's agent (``POD_IP:7443``, mutual TLS), or on those
of ``--node``, as ``igrun --remote`` does. ``kubectl igrun agents`` prints the addresses
found. The API server and credentials come from the pod's service account when run in a
cluster, else from the kubeconfig (``$KUBECONFIG``, ``~/.kube/config``: its current
context's server, CA, and token or client certificate), read with plain HTTPS.
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
from collections.abc import Sequence
from dataclasses import dataclass
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

    def get(self, path: str) -> Any:
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
            with urllib.request.urlopen(request, timeout=10, context=context) as reply:
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
        return ApiServer(
            url=f"https://{host}:{port}",
            token=(SERVICE_ACCOUNT / "token").read_text().strip(),
            ca=SERVICE_ACCOUNT / "ca.crt",
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
    parser.add_argument("command", nargs=argparse.REMAINDER, help="agents | <gadget> [flags]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``kubectl-igrun``: the errors and exit codes of ``igrun``."""
    from igrun.core.cli.remote import RemoteTarget, run_remote_gadget
    from igrun.core.remote.protocol import Tls

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if not args.command:
            raise UsageError("name a gadget (kubectl igrun trace exec) or 'agents'")
        api = api_server(args.kubeconfig, args.context)
        found = agents(api, args.agent_namespace, args.agent_selector, args.agent_port, args.node)
        if args.command == ["agents"]:
            for a in found:
                sys.stdout.write(f"{a.node}\t{a.pod}\t{a.address}\n")
            return 0
        tls = Tls.from_flags(args.tls_cert, args.tls_key, args.tls_ca)
        if tls is None:
            raise UsageError(
                "the agents listen with mutual TLS: give --tls-cert, --tls-key, --tls-ca"
            )
        from igrun.core.plugins import registry

        target = RemoteTarget([a.address for a in found], tls)
        return run_remote_gadget(registry(), target, list(args.command), None)
    except KeyboardInterrupt:
        return 0
    except IgrunError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code
