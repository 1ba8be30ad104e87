"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``bench``,
``topbench``, ``profilebench``, ``soak``, ``asan``."""

import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


def _dev_requirement(name: str) -> str:
    """The pinned requirement of the dev extras, so that lint runs the version CI runs."""
    project = tomllib.loads(Path(__file__).with_name("pyproject.toml").read_text())["project"]
    (requirement,) = [
        r for r in project["optional-dependencies"]["dev"] if r.split("==")[0].strip() == name
    ]
    return str(requirement)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite against a fresh install (BPF tests need root)."""
    session.install("-e", ".[dev]", "--config-settings", "editable_mode=strict")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install(_dev_requirement("ruff"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on core/, operators/, plugins/ and testing/ (configured in pyproject.toml)."""
    session.install("-e", ".[dev]", "--config-settings", "editable_mode=strict")
    session.run("mypy", "core", "operators", "plugins", "testing")


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate docs/gadgets.md from the gadgets (a test fails when it is stale)."""
    session.install("-e", ".", "--config-settings", "editable_mode=strict")
    with open("docs/gadgets.md", "w") as out:
        session.run("python", "-m", "igrun.core.cli.reference", stdout=out)


@nox.session
def bench(session: nox.Session) -> None:
    """The throughput benchmark (root): writes bench/results/<time>.json and .md.

    ``nox -s bench -- --rates 1000000 --only ring`` narrows the matrix; see bench/run.py.
    ``nox -s bench -- --contention 1`` runs trace open/exec against opensnoop/execsnoop with
    every CPU busy instead (bench/contention.py).
    igrun is byte-compiled first, as scripts/install.sh does: startup is measured as users
    have it, not with every module compiled at each launch (PYTHONDONTWRITEBYTECODE)."""
    session.install("-e", ".", "--config-settings", "editable_mode=strict")
    session.run("python", "-c", COMPILE_IGRUN)
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def startup(session: nox.Session) -> None:
    """Launch to first captured event of every ``trace`` gadget, against execsnoop and
    opensnoop in the same runs (root): bench/results/startup-<time>.json and a table.
    ``nox -s startup -- --runs 3 --only exec,open,execsnoop`` narrows it, ``-- --containers``
    measures igrun's default, only containers, with the trigger in a podman container
    (bench/startbench.py). Byte-compiled first, as for ``bench``."""
    session.install("-e", ".", "--config-settings", "editable_mode=strict")
    session.run("python", "-c", COMPILE_IGRUN)
    session.run("python", "bench/startbench.py", *session.posargs)


@nox.session
def topbench(session: nox.Session) -> None:
    """One interval of a top gadget with 100,000 distinct keys (root): wall and CPU time per
    interval, syscalls to drain the map; bench/results/top-<time>.json and a table.
    ``nox -s topbench -- --keys 10000 --intervals 5`` changes the load (bench/topbench.py)."""
    session.install("-e", ".", "--config-settings", "editable_mode=strict")
    session.run("python", "-c", COMPILE_IGRUN)
    session.run("python", "bench/topbench.py", *session.posargs)


@nox.session
def profilebench(session: nox.Session) -> None:
    """What ``profile cpu`` costs at 49 Hz on every busy CPU (igrun's CPU time and the BPF
    program's run time, root) and how fast it names 10,000 distinct stacks;
    bench/results/profile-<time>.json and a table (bench/profilebench.py)."""
    session.install("-e", ".", "--config-settings", "editable_mode=strict")
    session.run("python", "-c", COMPILE_IGRUN)
    session.run("python", "bench/profilebench.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """igrun trace exec and trace open for 30 minutes under exec and open storms with every
    CPU busy, beside execsnoop and opensnoop (root; not in the default run): resident memory
    over time, events seen against made, losses. ``nox -s soak -- --minutes 2`` is short."""
    session.install("-e", ".", "--config-settings", "editable_mode=strict")
    session.run("python", "-c", COMPILE_IGRUN)
    session.run("python", "bench/soak.py", *session.posargs)


COMPILE_IGRUN = """
import compileall, igrun
for folder in igrun.__path__:
    compileall.compile_dir(folder, quiet=1)
"""


ASAN_TESTS = (
    "tests/test_boundary.py",
    "tests/test_jsonlines.py",
    "tests/test_columnlines.py",
    "tests/test_libbpf.py",
    "tests/test_objectrun.py",
    "tests/test_btf_hostile.py",
)

BUILD_ASAN = """
import shutil, sys, sysconfig
from pathlib import Path
sys.path.insert(0, "csrc")
import build, igrun.core
name, source, ext, kw = build.ffibuilder._assigned_source
kw = dict(kw)
flags = ["-fsanitize=address", "-fno-omit-frame-pointer"]
kw["extra_compile_args"] = [*kw["extra_compile_args"], *flags]
kw["extra_link_args"] = [*kw.get("extra_link_args", []), "-fsanitize=address"]
build.ffibuilder._assigned_source = (name, source, ext, kw)
built = build.ffibuilder.compile(tmpdir=sys.argv[1])
# The interpreter's own suffix is found before abi3: this copy is the one imported.
target = Path(igrun.core.__path__[0]) / ("_libbpf" + sysconfig.get_config_var("EXT_SUFFIX"))
shutil.copy(built, target)
print("AddressSanitizer build:", target)
"""


@nox.session
def asan(session: nox.Session) -> None:
    """The tests of the Python/C boundary against the C extension built with AddressSanitizer
    (root, not in the default run): a read or write out of bounds in csrc/ stops the test with
    a report instead of passing by luck. ``nox -s asan -- tests/test_jsonlines.py`` narrows it.
    The session's own install (not editable) gets the instrumented build."""
    session.install(".[dev]")
    session.run("python", "-c", BUILD_ASAN, session.create_tmp())
    libasan = session.run("gcc", "-print-file-name=libasan.so", silent=True, external=True)
    assert isinstance(libasan, str)
    session.run(
        "pytest",
        "-p",
        "no:cacheprovider",
        *(session.posargs or ASAN_TESTS),
        env={"LD_PRELOAD": libasan.strip(), "ASAN_OPTIONS": "detect_leaks=0"},
    )
