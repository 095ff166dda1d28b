"""Load scenarios against a real server: baseline, stress, spike and soak, with plots.

    python bench/scenarios.py [--backends sqlite,postgres] [--scenarios baseline,stress,spike,soak]
                              [--quick] [--baseline-rate auto] [--out DIR] [timing options]

For each backend a real `waypost serve` process on loopback (a fresh database, a tenant,
an API key, a receiver) gets single-event POSTs from an open-loop load generator:
requests are sent at the scheduled rate whatever the server does, and each latency
counts from the moment its request was due (queueing included). The scenarios run one
after another on the same server. `--backends bare` runs them against the bare Litestar
app (bench/bare_app.py), which stores nothing: a control for what the load generator and
the machine alone do to the figures.

- baseline: steady at the baseline rate (`--baseline-rate`; `auto`: a fifth of the
  maximum a short closed loop reaches first) for `--baseline-seconds`.
- stress: the arrival rate grows by `--stress-factor` every `--step-seconds`, from the
  baseline rate, until the p99 of a step passes 100 ms or more than 1% of its requests
  fail (or `--max-steps`): the *knee* is the highest rate that passed both.
- spike: the baseline rate, then 10 times it for `--spike-seconds`, then the baseline
  again: errors and 503s during the spike, and the *recovery time*, from the end of the
  spike until the p99 of half-second windows is back under twice the baseline's p99
  (at least 50 ms) with no errors, for good.
- soak: steady at the baseline rate for `--soak-seconds`, sampling the server's RSS,
  open files and the p99 of the last window every `--sample-seconds`: each must stay
  flat within 10%: after the first window (the warm-up), the median of the samples in
  the last third of the run is compared with that of the first, so that growth shows
  and one window's burst does not. The band (the farthest sample from the median) is
  reported beside it.

Results go to a folder of their own under bench/results/ (git-ignored): results.json,
a PNG plot per backend and scenario (matplotlib), and summary.md, the table printed at
the end. Everything is bounded: every scenario has a duration, stress at most
`--max-steps` steps, the generator at most `--connections` connections and a timeout
per request; loopback only. `--quick` shrinks every duration for a smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib
import msgspec

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (
    TIMED_OUT,
    Process,
    bare_server,
    closed_loop,
    maker,
    no_collector_pauses,
    open_loop,
    percentile,
    pin_cpus,
    soak_flatness,
    waypost_server,
)
from tests.servers import running_postgres

RESULTS = ROOT / "bench" / "results"
SCENARIOS = ("baseline", "stress", "spike", "soak")
KNEE_P99_MS = 100.0
KNEE_ERRORS = 0.01
FLAT = 0.10
SPIKE_FACTOR = 10
WINDOW = 0.5  # seconds: the spike's latency windows
BARE_RECEIVER = "01JBENCH000000000000000000"  # what the bare app is sent (it checks no id)


class Options(msgspec.Struct, kw_only=True):
    baseline_seconds: float = 30.0
    step_seconds: float = 10.0
    max_steps: int = 20
    stress_factor: float = 1.25
    spike_before: float = 10.0
    spike_seconds: float = 30.0
    spike_after: float = 30.0
    soak_seconds: float = 600.0
    sample_seconds: float = 10.0
    connections: int = 300
    timeout: float = 10.0


QUICK = Options(
    baseline_seconds=3,
    step_seconds=2,
    max_steps=6,
    stress_factor=1.6,
    spike_before=2,
    spike_seconds=3,
    spike_after=5,
    soak_seconds=20,
    sample_seconds=2,
    connections=100,
    timeout=5,
)


def _errors(samples: list[tuple[float, float, int]]) -> tuple[int, int]:
    """(requests not answered 2xx, of which 503s)."""
    failed = [status for _, _, status in samples if not 200 <= status < 300]
    return len(failed), sum(1 for status in failed if status == 503)


def _statuses(samples: list[tuple[float, float, int]]) -> dict[str, int]:
    """The failures by status (-1: no answer in time, 0: the connection broke)."""
    found: dict[str, int] = {}
    for _, _, status in samples:
        if not 200 <= status < 300:
            found[str(status)] = found.get(str(status), 0) + 1
    return found


def _latencies(samples: list[tuple[float, float, int]]) -> list[float]:
    return sorted(latency for _, latency, _ in samples)


def _window_stats(
    samples: list[tuple[float, float, int]], width: float, until: float
) -> list[dict[str, float]]:
    """Per window of `width` seconds (by scheduled time): requests, p50, p99, errors, 503s."""
    windows: list[list[tuple[float, float, int]]] = [[] for _ in range(math.ceil(until / width))]
    for sample in samples:
        index = min(int(sample[0] / width), len(windows) - 1)
        windows[index].append(sample)
    stats = []
    for index, window in enumerate(windows):
        latencies = _latencies(window)
        errors, unavailable = _errors(window)
        stats.append(
            {
                "at": index * width,
                "requests": len(window),
                "p50": percentile(latencies, 0.5),
                "p99": percentile(latencies, 0.99),
                "errors": errors,
                "503": unavailable,
            }
        )
    return stats


# --- the scenarios -------------------------------------------------------------------------


async def baseline(port: int, make: Callable[[], bytes], rate: float, o: Options) -> dict:
    with no_collector_pauses():
        run = await open_loop(
            port, make, rate, o.baseline_seconds, o.connections, answer_within=o.timeout
        )
    errors, unavailable = _errors(run.latencies)
    return {
        "offered": rate,
        "achieved": run.rate,
        "p50": run.p50,
        "p99": run.p99,
        "errors": errors,
        "503": unavailable,
        "statuses": _statuses(run.latencies),
        "requests": len(run.latencies),
        "windows": _window_stats(run.latencies, 1.0, o.baseline_seconds),
    }


async def stress(port: int, make: Callable[[], bytes], rate: float, o: Options) -> dict:
    steps = []
    knee = None
    for _ in range(o.max_steps):
        with no_collector_pauses():
            run = await open_loop(
                port, make, rate, o.step_seconds, o.connections, answer_within=o.timeout
            )
        errors, unavailable = _errors(run.latencies)
        share = errors / max(1, len(run.latencies))
        passed = run.p99 <= KNEE_P99_MS and share <= KNEE_ERRORS
        steps.append(
            {"offered": rate, "achieved": run.rate, "p50": run.p50, "p99": run.p99,
             "errors": errors, "503": unavailable, "statuses": _statuses(run.latencies),
             "passed": passed}
        )  # fmt: skip
        print(
            f"#     stress {rate:,.0f}/s: p99 {run.p99:.1f} ms, errors {share:.1%}",
            file=sys.stderr,
            flush=True,
        )
        if not passed:
            break
        knee = steps[-1]
        rate *= o.stress_factor
    return {"steps": steps, "knee": knee, "limit_reached": knee is steps[-1] if steps else False}


async def spike(port: int, make: Callable[[], bytes], rate: float, o: Options) -> dict:
    start, end = o.spike_before, o.spike_before + o.spike_seconds
    total = end + o.spike_after

    def offered(at: float) -> float:
        return rate * SPIKE_FACTOR if start <= at < end else rate

    with no_collector_pauses():
        run = await open_loop(port, make, offered, total, o.connections, answer_within=o.timeout)
    samples = run.latencies
    before = [s for s in samples if s[0] < start]
    during = [s for s in samples if start <= s[0] < end]
    after = [s for s in samples if s[0] >= end]
    calm_p99 = percentile(_latencies(before), 0.99)
    threshold = max(2 * calm_p99, 50.0) if not math.isnan(calm_p99) else 50.0
    windows = _window_stats(samples, WINDOW, total)
    recovered_at = None
    for window in windows:
        if window["at"] < end:
            continue
        calm = window["requests"] == 0 or (window["p99"] <= threshold and not window["errors"])
        if calm and recovered_at is None:
            recovered_at = window["at"]
        elif not calm:
            recovered_at = None
    during_errors, during_503 = _errors(during)
    after_errors, after_503 = _errors(after)
    return {
        "offered": rate,
        "spike_rate": rate * SPIKE_FACTOR,
        "before_p99": calm_p99,
        "during_p50": percentile(_latencies(during), 0.5),
        "during_p99": percentile(_latencies(during), 0.99),
        "during_requests": len(during),
        "during_errors": during_errors,
        "during_503": during_503,
        "during_timeouts": sum(1 for s in during if s[2] == TIMED_OUT),
        "statuses": _statuses(samples),
        "after_errors": after_errors,
        "after_503": after_503,
        "threshold_ms": threshold,
        "recovery_seconds": None if recovered_at is None else recovered_at - end,
        "spike": [start, end],
        "windows": windows,
    }


async def soak(
    port: int, make: Callable[[], bytes], rate: float, o: Options, server: Process
) -> dict:
    samples: list[dict[str, float]] = []
    begun = time.perf_counter()

    async def sampler(load: asyncio.Task[Any]) -> None:
        while True:
            await asyncio.sleep(o.sample_seconds)
            if load.done():  # its connections are closing: not the steady state
                return
            samples.append(
                {"at": time.perf_counter() - begun, "rss": server.rss_bytes(),
                 "open_files": server.open_files(), "cpu": server.cpu_seconds()}
            )  # fmt: skip

    with no_collector_pauses():
        load = asyncio.create_task(
            open_loop(port, make, rate, o.soak_seconds, o.connections, answer_within=o.timeout)
        )
        watcher = asyncio.create_task(sampler(load))
        run = await load
        await watcher
    # the p99 of each sampling window, from the requests scheduled in it
    windows = _window_stats(run.latencies, o.sample_seconds, o.soak_seconds)
    for sample, window in zip(samples, windows, strict=False):
        sample["p99"] = window["p99"]
        sample["requests"] = window["requests"]
    steady = [s for s in samples[1:] if s.get("requests")]  # the first window warms up
    flatness = soak_flatness(steady, o.sample_seconds, o.soak_seconds, FLAT)
    errors, unavailable = _errors(run.latencies)
    return {
        "offered": rate,
        "achieved": run.rate,
        "p50": run.p50,
        "p99": run.p99,
        "errors": errors,
        "503": unavailable,
        "statuses": _statuses(run.latencies),
        "samples": samples,
        "flatness": flatness,
    }


# --- plots ---------------------------------------------------------------------------------


def plot(backend: str, name: str, result: dict, folder: pathlib.Path) -> pathlib.Path:
    """The scenario's figure, as `<backend>-<scenario>.png` in `folder`."""
    fig = {"baseline": _plot_baseline, "stress": _plot_stress, "spike": _plot_spike}.get(
        name, _plot_soak
    )(backend, result)
    fig.tight_layout()
    path = folder / f"{backend}-{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_baseline(backend: str, result: dict) -> Figure:
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    at = [w["at"] for w in result["windows"]]
    ax.plot(at, [w["p50"] for w in result["windows"]], label="p50")
    ax.plot(at, [w["p99"] for w in result["windows"]], label="p99")
    ax.set_ylabel("latency (ms)")
    ax.legend()
    bx.plot(at, [w["requests"] for w in result["windows"]], label="requests/s")
    bx.set_ylabel("requests per second")
    bx.set_xlabel("seconds")
    fig.suptitle(f"{backend}: baseline at {result['offered']:,.0f} requests/s")
    return fig


def _plot_stress(backend: str, result: dict) -> Figure:
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    offered = [s["offered"] for s in result["steps"]]
    ax.plot(offered, [s["p50"] for s in result["steps"]], "o-", label="p50")
    ax.plot(offered, [s["p99"] for s in result["steps"]], "o-", label="p99")
    ax.axhline(KNEE_P99_MS, color="grey", linestyle=":", label=f"{KNEE_P99_MS:.0f} ms")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    bx.plot(offered, [s["achieved"] for s in result["steps"]], "o-", label="achieved")
    bx.plot(offered, offered, ":", color="grey", label="offered")
    bx.set_ylabel("requests per second")
    bx.set_xlabel("offered requests per second")
    if result["knee"] is not None:
        for axis in (ax, bx):
            axis.axvline(result["knee"]["offered"], color="red", linestyle="--", label="knee")
    ax.legend()
    bx.legend()
    fig.suptitle(f"{backend}: stress (knee: p99 > {KNEE_P99_MS:.0f} ms or > 1% errors)")
    return fig


def _plot_spike(backend: str, result: dict) -> Figure:
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    windows = result["windows"]
    at = [w["at"] for w in windows]
    ax.plot(at, [w["p99"] for w in windows], label="p99")
    ax.plot(at, [w["p50"] for w in windows], label="p50")
    ax.axhline(result["threshold_ms"], color="grey", linestyle=":", label="recovered below")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    bx.plot(at, [w["requests"] / WINDOW for w in windows], label="requests/s")
    bx.plot(at, [w["503"] / WINDOW for w in windows], label="503/s")
    bx.plot(at, [(w["errors"] - w["503"]) / WINDOW for w in windows], label="other errors/s")
    bx.set_ylabel("per second (by scheduled time)")
    bx.set_xlabel("seconds")
    for axis in (ax, bx):
        axis.axvspan(*result["spike"], color="orange", alpha=0.15)
    if result["recovery_seconds"] is not None:
        recovered = result["spike"][1] + result["recovery_seconds"]
        ax.axvline(recovered, color="green", linestyle="--", label="recovered")
    ax.legend()
    bx.legend()
    fig.suptitle(f"{backend}: spike to {SPIKE_FACTOR}x the baseline")
    return fig


def _plot_soak(backend: str, result: dict) -> Figure:
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    at = [s["at"] for s in result["samples"]]
    for axis, key, label in zip(
        axes, ("rss", "open_files", "p99"), ("RSS (MiB)", "open files", "p99 (ms)"), strict=True
    ):
        scale = 1 / 2**20 if key == "rss" else 1
        axis.plot(at, [s.get(key, math.nan) * scale for s in result["samples"]], "o-")
        axis.set_ylabel(label)
        flat = result["flatness"].get(key)
        if flat is not None:
            axis.set_title(_flat_text(flat), fontsize=9)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"{backend}: soak at {result['offered']:,.0f} requests/s")
    return fig


# --- the run -------------------------------------------------------------------------------


@contextmanager
def server(backend: str) -> Iterator[tuple[int, Process, str, str]]:
    """`waypost serve` on the backend, or the bare Litestar app ("bare": the control, which
    stores nothing): (port, process, API key, receiver id)."""
    if backend == "bare":
        with bare_server() as (port, proc):
            yield port, proc, "unused", BARE_RECEIVER
        return
    with (
        tempfile.TemporaryDirectory(prefix="waypost-scenarios-") as tmp,
        database(backend, pathlib.Path(tmp)) as url,
        waypost_server(url) as served,
    ):
        yield served


@contextmanager
def database(backend: str, workdir: pathlib.Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'scenarios.db'}"
        return
    with running_postgres() as server:
        yield server.create_database("scenarios")


async def run_backend(backend: str, args: argparse.Namespace, o: Options) -> dict:
    results: dict[str, Any] = {}
    with server(backend) as (port, proc, key, receiver):
        make = maker(receiver, key, 1)
        if args.baseline_rate == "auto":
            with no_collector_pauses():
                most = await closed_loop(port, make, 16, min(5.0, o.baseline_seconds))
            rate = max(10.0, most.rate / 5)
            results["max_closed_loop"] = most.rate
        else:
            rate = float(args.baseline_rate)
        results["baseline_rate"] = rate
        for name in args.scenarios:
            print(f"#   {backend} {name} at {rate:,.0f}/s ...", file=sys.stderr, flush=True)
            if name == "soak":
                results[name] = await soak(port, make, rate, o, proc)
            else:
                results[name] = await {"baseline": baseline, "stress": stress, "spike": spike}[
                    name
                ](port, make, rate, o)
    return results


def _flat_text(flat: dict) -> str:
    """`+1.2% (band 30%): flat`: the drift from the first third to the last, the band."""
    verdict = "flat" if flat["flat"] else "NOT flat"
    return f"{flat['drift']:+.1%} (band {flat['band']:.0%}): {verdict}"


def _which(result: dict) -> str:
    """The failures' statuses, when there were any: ` {"503": 12, "-1": 3}`."""
    return f" {json.dumps(result['statuses'])}" if result.get("statuses") else ""


def summary(all_results: dict[str, dict]) -> list[str]:
    lines = [
        "| backend | scenario | offered req/s | achieved req/s | p50 / p99 ms | errors (503) "
        "| verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for backend, results in all_results.items():
        for name in SCENARIOS:
            r = results.get(name)
            if r is None:
                continue
            if name == "stress":
                knee = r["knee"]
                last = r["steps"][-1]
                verdict = (
                    "no step passed"
                    if knee is None
                    else f"knee at {knee['offered']:,.0f} req/s (p99 {knee['p99']:.1f} ms)"
                    + (" (max steps: not reached)" if r["limit_reached"] else "")
                )
                lines.append(
                    f"| {backend} | stress | up to {last['offered']:,.0f} "
                    f"| {last['achieved']:,.0f} | {last['p50']:.1f} / {last['p99']:.1f} "
                    f"| {last['errors']} ({last['503']}){_which(last)} "
                    f"| {verdict} |"
                )
            elif name == "spike":
                recovery = r["recovery_seconds"]
                verdict = (
                    "did not recover" if recovery is None else f"recovered in {recovery:.1f} s"
                ) + f" (to p99 <= {r['threshold_ms']:.0f} ms)"
                lines.append(
                    f"| {backend} | spike | {r['offered']:,.0f} -> {r['spike_rate']:,.0f} "
                    f"| {r['during_requests'] / max(1e-9, r['spike'][1] - r['spike'][0]):,.0f} "
                    f"| {r['during_p50']:.1f} / {r['during_p99']:.1f} "
                    f"| {r['during_errors']} ({r['during_503']}); after: {r['after_errors']}"
                    f"{_which(r)} "
                    f"| {verdict} |"
                )
            else:
                verdict = ""
                if name == "soak":
                    verdict = ", ".join(
                        f"{key} {_flat_text(flat)}" for key, flat in r["flatness"].items()
                    )
                lines.append(
                    f"| {backend} | {name} | {r['offered']:,.0f} | {r['achieved']:,.0f} "
                    f"| {r['p50']:.1f} / {r['p99']:.1f} | {r['errors']} ({r['503']}){_which(r)} "
                    f"| {verdict} |"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgres",
        help="sqlite, postgres, and bare: the bare Litestar app, a control (e.g. for the "
        "soak's noise at the same --baseline-rate)",
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes: a smoke test")
    parser.add_argument("--baseline-rate", default="auto", help="requests/s, or auto")
    parser.add_argument("--out", help=f"results folder (default: a new one under {RESULTS})")
    defaults = Options()
    for field in msgspec.structs.fields(Options):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=type(getattr(defaults, field.name)),
            help=f"default {getattr(defaults, field.name)} ({getattr(QUICK, field.name)} "
            "with --quick)",
        )
    args = parser.parse_args()
    args.scenarios = [name for name in args.scenarios.split(",") if name]
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    chosen = QUICK if args.quick else defaults
    given = {
        f.name: getattr(args, f.name)
        for f in msgspec.structs.fields(Options)
        if getattr(args, f.name) is not None
    }
    options = msgspec.structs.replace(chosen, **given)
    folder = (
        pathlib.Path(args.out)
        if args.out
        else RESULTS / f"scenarios-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    print(f"# {pin_cpus()}", file=sys.stderr)
    all_results: dict[str, dict] = {}
    for backend in args.backends.split(","):
        print(f"# {backend} ...", file=sys.stderr, flush=True)
        all_results[backend] = asyncio.run(run_backend(backend, args, options))
    plots = [
        plot(backend, name, result, folder)
        for backend, results in all_results.items()
        for name, result in results.items()
        if name in SCENARIOS
    ]
    lines = summary(all_results)
    (folder / "results.json").write_text(
        json.dumps({"options": msgspec.to_builtins(options), "results": all_results}, indent=1)
    )
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\n(results, plots: {folder}; {len(plots)} plots)")


if __name__ == "__main__":
    main()
