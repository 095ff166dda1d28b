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
    """Benchmarks (not part of `tests`), each against its raw-driver and bare-framework references.

    `nox -s bench` runs ingest through the use cases (bench/ingest.py) and HTTP load on a
    real server process (bench/http_load.py). One at a time, with its own options:
    `nox -s bench -- ingest --large 10000`, `-- http --seconds 5 --baseline DIR`,
    `-- scenarios [--quick]` (baseline, stress, spike and soak with plots,
    bench/scenarios.py), `-- layout` (the storage layout choices, bench/layout.py).
    """
    session.install("-e", ".[bench]")
    scripts = {
        "ingest": "bench/ingest.py",
        "http": "bench/http_load.py",
        "scenarios": "bench/scenarios.py",
        "layout": "bench/layout.py",
    }
    args = list(session.posargs)
    if args and args[0] not in scripts:
        session.error(f"options follow a benchmark's name: nox -s bench -- {'|'.join(scripts)} ...")
    chosen = [args.pop(0)] if args else ["ingest", "http"]
    for name in chosen:
        session.run("python", scripts[name], *args)


@nox.session
def serve(session: nox.Session) -> None:
    """Run the server on the embedded default (SQLite file ./waypost.db)."""
    session.install("-e", ".")
    session.run("waypost", "serve", *session.posargs)
