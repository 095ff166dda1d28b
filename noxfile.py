"""Developer sessions: `nox -s lint typecheck imports tests` must stay green."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "imports", "tests"]

CODE = ["core", "adapters", "entrypoints", "tests", "bench", "noxfile.py", "client"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", *CODE)
    session.run("ruff", "format", "--check", *CODE)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over core, adapters, entrypoints and tests, and over the client."""
    session.install("-e", ".[dev]", "./client[yaml]")
    session.run("mypy")
    with session.chdir("client"):
        session.run("mypy")


@nox.session
def imports(session: nox.Session) -> None:
    """import-linter: dependencies point inward, the core does no I/O."""
    session.install("-e", ".", "import-linter>=2.1")
    session.run("lint-imports")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, every layer and the client (pass pytest arguments after --)."""
    session.install("-e", ".[test]", "./client[yaml]")
    session.run("pytest", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not part of `tests`), each against its raw-driver, bare-framework or
    bare-client reference in the same run.

    `nox -s bench` runs them all but the load scenarios (half an hour with the soak) and
    the instruction counts (they need valgrind);
    `nox -s bench -- NAME [options]` runs one with its own options (`nox -s bench -- http
    --seconds 5`, `-- scenarios --quick`). The names are the keys of `scripts` below; each
    script's `--help` says what it measures.
    """
    session.install("-e", ".[bench]", "./client[yaml]")
    scripts = {
        "ingest": "bench/ingest.py",  # the use cases against the raw drivers
        "http": "bench/http_load.py",  # a real server against bare Litestar
        "webhooks": "bench/webhook_sender.py",  # the address guard against bare httpx
        "replay": "bench/replay.py",  # replay against a raw scan of the log
        "tracing": "bench/tracing.py",  # single-event ingest with tracing off and on
        "gate": "bench/gate_latency.py",  # a gate's waiters (SDK, waypostctl) against polling
        "console": "bench/console_events.py",  # the console's events page at 1M events
        "graphql": "bench/graphql_reads.py",  # a GraphQL page against the REST list
        "delivery": "bench/delivery.py",  # worker processes delivering against bare httpx
        "layout": "bench/layout.py",  # the storage layout choices against each other
        "btrees": "bench/btrees.py",  # an event's rows in the database against the bare insert
        # baseline, stress, spike and soak against a real server, with plots (long)
        "scenarios": "bench/scenarios.py",
        # CPU instructions per request (callgrind), a server against bare Litestar; needs
        # valgrind; `--per 100` for batches, `--baseline DIR` for another checkout
        "instructions": "bench/instructions.py",
    }
    args = list(session.posargs)
    if args and args[0] not in scripts:
        session.error(f"options follow a benchmark's name: nox -s bench -- {'|'.join(scripts)} ...")
    chosen = (
        [args.pop(0)]
        if args
        else [name for name in scripts if name not in ("scenarios", "instructions")]
    )
    for name in chosen:
        session.run("python", scripts[name], *args)


@nox.session
def serve(session: nox.Session) -> None:
    """Run the server on the embedded default (SQLite file ./waypost.db)."""
    session.install("-e", ".")
    session.run("waypost", "serve", *session.posargs)
