"""``python -m igrun.core.bpf.buildhelper DIR``: write the wheel that gadget packages build with.

Building a gadget package compiles its BPF C. That takes igrun's BPF headers and its build step
(``igrun.core.bpf.build``, standard library and setuptools only), not igrun itself: requiring
igrun in ``[build-system]`` would install numpy, pydantic and cffi into every build
environment, and fails where no index has igrun. So igrun writes those two parts into a small
wheel, ``igrun_build-<igrun's version>-py3-none-any.whl``, which a gadget's
``[build-system] requires`` names as ``igrun-build`` and pip takes from ``--find-links DIR``.

The wheel is written from the installed igrun, with nothing to build and no index to ask, so it
always holds the headers and the build step of the igrun the gadget will run with.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import io
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from importlib.resources.abc import Traversable
from pathlib import Path

NAME = "igrun_build"
USAGE = "usage: python -m igrun.core.bpf.buildhelper DIR  (writes igrun-build's wheel into DIR)"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed times: the same igrun writes the same wheel


def _headers(folder: Traversable, prefix: str) -> Iterator[tuple[str, bytes]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _headers(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".h"):
            yield f"{prefix}{entry.name}", entry.read_bytes()


def helper_files() -> dict[str, bytes]:
    """The helper's package: the build step as ``igrun_build/__init__.py``, and the headers
    under ``igrun_build/include/`` (where the build step looks first)."""
    step = importlib.resources.files("igrun.core.bpf").joinpath("build.py")
    files = {f"{NAME}/__init__.py": step.read_bytes()}
    include = importlib.resources.files("igrun.plugins").joinpath("include")
    files.update(_headers(include, f"{NAME}/include/"))
    return files


def _metadata(igrun_version: str) -> dict[str, bytes]:
    info = f"{NAME}-{igrun_version}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        "Name: igrun-build\n"
        f"Version: {igrun_version}\n"
        "Summary: Builds igrun gadget packages: igrun's BPF headers and a build step that "
        "compiles BPF C to CO-RE objects\n"
        "License: Apache-2.0\n"
        "Requires-Python: >=3.11\n"
        "Requires-Dist: setuptools>=77\n"
    )
    wheel = (
        "Wheel-Version: 1.0\n"
        f"Generator: igrun {igrun_version}\n"
        "Root-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )
    return {f"{info}/METADATA": metadata.encode(), f"{info}/WHEEL": wheel.encode()}


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def wheel_bytes(igrun_version: str) -> tuple[str, bytes]:
    """The wheel's file name and content."""
    files = {**helper_files(), **_metadata(igrun_version)}
    record_name = f"{NAME}-{igrun_version}.dist-info/RECORD"
    record = "".join(_record_line(n, d) for n, d in files.items()) + f"{record_name},,\n"
    files[record_name] = record.encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            entry = zipfile.ZipInfo(name, _EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    return f"{NAME}-{igrun_version}-py3-none-any.whl", out.getvalue()


def write_wheel(directory: Path) -> Path:
    """Write the helper's wheel into ``directory`` (made if missing); its path."""
    name, data = wheel_bytes(version("igrun"))
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write(f"igrun: error: {USAGE}\n")
        return 2
    try:
        print(write_wheel(Path(args[0])))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        sys.stderr.write(f"igrun: error: cannot write the build helper to {args[0]}: {reason}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
