"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``."""

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite against a fresh install (BPF tests need root)."""
    session.install("-e", ".[dev]", "--config-settings", "editable_mode=strict")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on core/ (configured in pyproject.toml)."""
    session.install("-e", ".[dev]", "--config-settings", "editable_mode=strict")
    session.run("mypy", "core")
