"""``python -m igrun.core.bpf.buildhelper DIR``: the ``igrun-build`` wheel gadget packages build
with.

It must hold exactly igrun's build step and BPF headers, be a wheel pip accepts (hashes in
RECORD), be the same bytes each time, and report bad input in one line.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEADERS = REPO / "plugins" / "include"
HELPER = [sys.executable, "-m", "igrun.core.bpf.buildhelper"]


def write(directory: Path) -> Path:
    run = subprocess.run([*HELPER, str(directory)], capture_output=True, text=True, check=True)
    assert run.stderr == ""
    return Path(run.stdout.strip())


def test_the_wheel_holds_the_build_step_and_the_headers(tmp_path: Path) -> None:
    wheel = write(tmp_path / "wheels")  # made when missing
    igrun_version = version("igrun")
    assert wheel == tmp_path / "wheels" / f"igrun_build-{igrun_version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    headers = {
        f"igrun_build/include/{p.relative_to(HEADERS)}": p.read_bytes()
        for p in sorted(HEADERS.rglob("*.h"))
    }
    assert len(headers) >= 6
    info = f"igrun_build-{igrun_version}.dist-info"
    assert sorted(files) == sorted(
        [
            "igrun_build/__init__.py",
            *headers,
            f"{info}/METADATA",
            f"{info}/WHEEL",
            f"{info}/RECORD",
        ]
    )
    assert files["igrun_build/__init__.py"] == (REPO / "core" / "bpf" / "build.py").read_bytes()
    assert {name: files[name] for name in headers} == headers
    metadata = files[f"{info}/METADATA"].decode().splitlines()
    assert "Name: igrun-build" in metadata
    assert f"Version: {igrun_version}" in metadata
    assert [line for line in metadata if line.startswith("Requires-Dist:")] == [
        "Requires-Dist: setuptools>=77"  # nothing of igrun's own dependencies
    ]
    assert "Tag: py3-none-any" in files[f"{info}/WHEEL"].decode().splitlines()
    record = files[f"{info}/RECORD"].decode().splitlines()
    assert record[-1] == f"{info}/RECORD,,"
    for line in record[:-1]:
        name, digest, size = line.split(",")
        data = files[name]
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        assert (digest, int(size)) == (f"sha256={expected.decode()}", len(data))
    assert len(record) == len(files)


def test_the_same_igrun_writes_the_same_bytes(tmp_path: Path) -> None:
    first = write(tmp_path / "a").read_bytes()
    second = write(tmp_path / "b")
    assert second.read_bytes() == first
    assert write(tmp_path / "b") == second  # written again over itself
    assert [p.name for p in (tmp_path / "b").iterdir()] == [second.name]  # no temporary left


def test_the_build_step_finds_the_headers_it_ships_with(tmp_path: Path) -> None:
    """Unpacked as pip installs it, ``igrun_build`` compiles against its own headers."""
    with zipfile.ZipFile(write(tmp_path / "wheels")) as archive:
        archive.extractall(tmp_path / "site")
    probe = "import igrun_build; print(igrun_build.include_dir())"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"{tmp_path / 'site' / 'igrun_build' / 'include'}\n"


def test_bad_input_is_one_line() -> None:
    for args, code, message in [
        ([], 2, "usage: python -m igrun.core.bpf.buildhelper DIR"),
        (["a", "b"], 2, "usage: python -m igrun.core.bpf.buildhelper DIR"),
        (["--wheel-dir"], 2, "usage: python -m igrun.core.bpf.buildhelper DIR"),
        (
            ["/proc/self/igrun-wheels"],
            1,
            "cannot write the build helper to /proc/self/igrun-wheels: No such file or directory",
        ),
    ]:
        run = subprocess.run([*HELPER, *args], capture_output=True, text=True)
        assert run.returncode == code, args
        assert run.stdout == ""
        (line,) = run.stderr.splitlines()
        assert line.startswith("igrun: error: ") and message in line, line


def test_igruns_own_objects_come_from_the_build_folder() -> None:
    """igrun's own build writes no object next to its sources: the installed package's objects
    are in the build folder (a strict editable install links there) or in site-packages."""
    from igrun.core.plugins import PluginRegistry

    objects = []
    for gadget in PluginRegistry().gadgets().values():
        name = getattr(gadget, "bpf_object", None)
        if name is None or not gadget.__module__.startswith("igrun.plugins."):
            continue
        resource = importlib.resources.files(gadget.__module__) / name
        assert resource.is_file(), resource
        objects.append(Path(str(resource)).resolve())
    assert len(objects) >= 12
    assert not [p for p in objects if p.is_relative_to(REPO / "plugins")]
