"""What igrun needs of the host when it runs in a container: the one list the Kubernetes
manifests (deploy/kubernetes) are checked against.

A gadget loads BPF programs into the host's kernel, reads the kernel's BTF and tracepoints,
pins maps in the host's bpffs, finds containers through their runtimes' state and sockets,
and reads other processes' ``/proc/<pid>`` entries. In a container each of those is either a
host path mounted at the same place (igrun reads fixed paths, no host-root prefix), the
host's pid namespace (``/proc`` then lists the host's processes), or a capability.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostPath:
    """A host path mounted at the same path in igrun's container."""

    path: str
    why: str
    read_only: bool = True
    kind: str = "Directory"
    """The hostPath ``type``: ``Directory`` must exist (the kernel's own), ``DirectoryOrCreate``
    is made empty where a runtime is absent (igrun then finds nothing there), ``Socket``."""
    overlay: str = ""
    """Mounted by this overlay only (``docker``: a socket that must exist), else by the base."""


HOST_PATHS: tuple[HostPath, ...] = (
    HostPath("/sys/fs/bpf", "bpffs: each run pins its maps and programs here", read_only=False),
    HostPath("/sys/kernel/btf", "the kernel's BTF (vmlinux) for CO-RE relocations"),
    HostPath("/sys/kernel/tracing", "tracefs: the ids and formats of tracepoints"),
    HostPath("/sys/kernel/debug", "debugfs: tracing on kernels that mount tracefs only there"),
    HostPath("/sys/fs/cgroup", "cgroup ids of containers, cgroup programs attach here"),
    HostPath(
        "/run/containerd", "containerd's tasks, runc state and socket", kind="DirectoryOrCreate"
    ),
    HostPath("/run/crio", "CRI-O's socket", kind="DirectoryOrCreate"),
    HostPath("/run/runc", "runc's container state (podman, plain runc)", kind="DirectoryOrCreate"),
    HostPath("/run/crun", "crun's container state", kind="DirectoryOrCreate"),
    HostPath(
        "/run/containers", "podman's and CRI-O's container list (runroot)", kind="DirectoryOrCreate"
    ),
    HostPath(
        "/var/lib/containers",
        "podman's and CRI-O's container names and configs (storage)",
        kind="DirectoryOrCreate",
    ),
    HostPath(
        "/run/igrun",
        "igrun's own: the agent's unix socket, caches of the runs",
        read_only=False,
        kind="DirectoryOrCreate",
    ),
    HostPath("/run/docker.sock", "the Docker Engine API", kind="Socket", overlay="docker"),
    HostPath("/run/docker", "Docker's runc state", overlay="docker"),
)

HOST_PID = True
"""``/proc/<pid>`` of every process on the host: containers' pids, namespaces, cgroups,
command lines and ``/proc/<pid>/root``; and ``/proc/1/ns/net``, the host's network."""

CAPABILITIES: dict[str, str] = {
    "SYS_ADMIN": "bpf() on kernels before 5.8, bpffs pins, fanotify, setns into containers",
    "BPF": "load programs and create maps (5.8+)",
    "PERFMON": "attach to tracepoints and perf events, read kernel memory from BPF (5.8+)",
    "SYS_RESOURCE": "raise RLIMIT_MEMLOCK for maps on kernels that still charge it",
    "NET_ADMIN": "attach cgroup socket programs (trace network)",
    "SYS_PTRACE": "read /proc/<pid>/ns, /proc/<pid>/root and /proc/<pid>/fd of other processes",
}
"""Added to the container's capabilities (the runtime's defaults stay); ``privileged`` is
not needed: it would add every capability and every device of the host."""
