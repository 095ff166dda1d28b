"""Developer sessions: `nox -s lint typecheck imports tests` must stay green."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "imports", "tests"]

CODE = ["core", "adapters", "entrypoints", "tests", "bench", "noxfile.py"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", *CODE)
    session.run("ruff", "format", "--check", *CODE)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over core, adapters, entrypoints and tests."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def imports(session: nox.Session) -> None:
    """import-linter: dependencies point inward, the core does no I/O."""
    session.install("-e", ".", "import-linter>=2.1")
    session.run("lint-imports")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, every layer (pass pytest arguments after --)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not part of `tests`): ingest through the use cases against the raw driver."""
    session.install("-e", ".[test]")
    session.run("python", "bench/ingest.py", *session.posargs)


@nox.session
def serve(session: nox.Session) -> None:
    """Run the server on the embedded default (SQLite file ./waypost.db)."""
    session.install("-e", ".")
    session.run("waypost", "serve", *session.posargs)
