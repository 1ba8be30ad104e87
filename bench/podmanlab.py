"""podman for the benchmarks: the settings this kind of host needs, and the busybox image.

The benchmarks that run a workload in a real container use rootful podman with runc (crun
cannot start containers on a host whose cgroups are not set up for it) and limits root may
set; the image is a busybox root file system imported once (the tests import the same one).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

IMAGE = "localhost/igrun-test-busybox:latest"
BUSYBOX = Path("/bin/busybox")


def podman_env(folder: Path) -> dict[str, str]:
    """The environment for podman commands, with a ``containers.conf`` written in ``folder``."""
    conf = folder / "containers.conf"
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def ensure_image(env: dict[str, str]) -> None:
    """Import :data:`IMAGE` from the host's static busybox unless podman has it."""
    known = subprocess.run(["podman", "image", "exists", IMAGE], env=env, capture_output=True)
    if known.returncode == 0:
        return
    if not BUSYBOX.exists():
        sys.exit(f"{BUSYBOX} is missing: apt-get install busybox-static")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "run"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in applets.stdout.split():
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n")):  # fmt: skip
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        ["podman", "import", "--change", 'CMD ["/bin/sh"]', "-", IMAGE],
        input=archive.getvalue(), env=env, check=True, capture_output=True,
    )  # fmt: skip


def host_mounts(*folders: Path) -> list[str]:
    """``-v`` arguments that let a busybox container run the host's programs (this Python
    among them) and see ``folders`` at their own paths: /usr and the library folders
    read-only, the interpreter's and the virtual environment's prefixes read-only, and
    ``folders`` writable."""
    mounts = ["/usr:/usr:ro"]
    mounts += [f"{d}:{d}:ro" for d in ("/lib", "/lib64") if Path(d).is_dir()]
    prefixes = {Path(p).resolve() for p in (sys.base_prefix, sys.prefix)}
    prefixes |= {Path(__file__).resolve().parent.parent}  # the source tree (the bench)
    mounts += [f"{p}:{p}:ro" for p in sorted(prefixes) if not str(p).startswith("/usr")]
    mounts += [f"{f}:{f}" for f in folders]
    return [a for m in mounts for a in ("-v", m)]
