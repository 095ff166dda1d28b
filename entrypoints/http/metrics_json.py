"""Metrics as JSON, for dashboards and people: `/api/v1/metrics`, `/summary`, `/{name}`.

One source of truth: every answer is read from the same `CollectorRegistry` that
`GET /metrics` exposes (`entrypoints.http.metrics.Metrics`), at the moment of the request.

- `/api/v1/metrics`: every metric family with its samples.
- `/api/v1/metrics/{name}`: one family, by its name (`waypost_http_requests`) or by one
  of its samples' (`waypost_http_requests_total`).
- `/api/v1/metrics/summary`: what a person asks first. Rates and latency percentiles are
  over a recent window: each read of the metrics (a Prometheus scrape, a summary) keeps
  a snapshot of the counters and histograms, and the summary compares now with the
  oldest snapshot of the last `WINDOW_SECONDS` (without one, with the process's start).
  The percentiles are interpolated from the histogram's buckets, the way Prometheus's
  `histogram_quantile` does, over every route but the long-lived message streams.

Who may read them: platform administrators (the permission `metrics:read`), and only
from `metrics.allowed_networks` when it is set (like `GET /metrics`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
from litestar import Request, get
from litestar.params import FromPath
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from core.domain.access import Permission
from core.domain.errors import Forbidden, NotFound
from entrypoints.http.auth import client_address, requires
from entrypoints.http.common import API, problems

__all__ = ["HANDLERS", "PATH", "Snapshots", "histogram_quantile", "summarize"]

PATH: Final = f"{API}/metrics"
#: The window of the summary's rates and percentiles.
WINDOW_SECONDS: Final = 60.0
#: Snapshots kept at most (one per read, at least `_EVERY` seconds apart).
_KEPT: Final = 64
_EVERY: Final = 1.0
#: Routes whose requests last as long as a client listens: not latency.
LONG_LIVED: Final = frozenset({f"{API}/messages"})
QUANTILES: Final = (0.5, 0.95, 0.99)

REQUESTS: Final = "waypost_http_requests_total"
DURATION: Final = "waypost_http_request_duration_seconds_bucket"
EVENTS: Final = "waypost_events_recorded_total"
COMPLETIONS: Final = "waypost_group_completions_total"
IN_FLIGHT: Final = "waypost_http_requests_in_flight"
#: The delivery metrics (webhooks), when this server delivers: by outcome, and lag.
DELIVERIES: Final = "waypost_deliveries_total"
DELIVERY_LAG: Final = "waypost_delivery_lag_seconds_bucket"


# --- views ---------------------------------------------------------------------------------


class SampleView(msgspec.Struct, kw_only=True):
    name: str
    labels: dict[str, str]
    value: float | None  # None: NaN (JSON has no NaN)


class FamilyView(msgspec.Struct, kw_only=True):
    name: str
    type: str
    help: str
    samples: list[SampleView]


class FamiliesData(msgspec.Struct):
    data: list[FamilyView]


class FamilyData(msgspec.Struct):
    data: FamilyView


class Rate(msgspec.Struct, kw_only=True):
    total: float
    per_second: float


class RequestsView(msgspec.Struct, kw_only=True):
    total: float
    per_second: float
    #: Answers 5xx among all answers of the window (0..1; null: no request).
    error_rate: float | None
    #: Answers 4xx among all answers of the window (0..1; null: no request).
    client_error_rate: float | None
    in_flight: float


class Percentiles(msgspec.Struct, kw_only=True):
    p50: float | None
    p95: float | None
    p99: float | None


class DeliveriesView(msgspec.Struct, kw_only=True):
    #: Attempts of the window by outcome (`succeeded`, `failed`, `dead`, ...).
    by_outcome: dict[str, float]
    #: From a message's commit to its delivery, in seconds.
    lag_seconds: Percentiles


class SummaryView(msgspec.Struct, kw_only=True):
    #: Seconds the rates and percentiles are computed over (ending now).
    window_seconds: float
    requests: RequestsView
    #: Request durations of the window, in seconds (every route but the message streams).
    latency_seconds: Percentiles
    events_recorded: Rate
    gates_fired: Rate
    #: null while this server delivers no webhooks.
    deliveries: DeliveriesView | None


class SummaryData(msgspec.Struct):
    data: SummaryView


# --- reading the registry --------------------------------------------------------------------

Key = tuple[str, tuple[tuple[str, str], ...]]


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def family_view(family: Metric) -> FamilyView:
    return FamilyView(
        name=family.name,
        type=family.type,
        help=family.documentation,
        samples=[
            SampleView(name=s.name, labels=dict(s.labels), value=_number(s.value))
            for s in family.samples
        ],
    )


def values(registry: CollectorRegistry) -> dict[Key, float]:
    """Every sample of the registry, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
    }


def _sum(samples: dict[Key, float], name: str, **where: str) -> float:
    total = 0.0
    for (found, labels), value in samples.items():
        if found == name and all(dict(labels).get(k) == v for k, v in where.items()):
            total += value
    return total


class Snapshots:
    """Recent readings of the registry, for rates over a window (bounded, monotonic time)."""

    def __init__(self, started: float) -> None:
        #: (monotonic time, samples); the first is the process's start, with nothing counted.
        self._taken: deque[tuple[float, dict[Key, float]]] = deque(maxlen=_KEPT)
        self._start: tuple[float, dict[Key, float]] = (started, {})

    def take(self, now: float, samples: dict[Key, float]) -> None:
        if not self._taken or now - self._taken[-1][0] >= _EVERY:
            self._taken.append((now, samples))

    def base(self, now: float) -> tuple[float, dict[Key, float]]:
        """The oldest reading of the last `WINDOW_SECONDS` older than `_EVERY`, else the start."""
        for taken in self._taken:
            if now - WINDOW_SECONDS <= taken[0] <= now - _EVERY:
                return taken
        return self._start


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative (upper bound, count) buckets, +Inf last, interpolated
    linearly inside its bucket as Prometheus does; None without observations. In the +Inf
    bucket it is the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower  # pragma: no cover - the +Inf bucket holds every observation


def _buckets(
    now: dict[Key, float], then: dict[Key, float], name: str, skip: frozenset[str] = frozenset()
) -> list[tuple[float, float]]:
    """The histogram `name`'s buckets summed over its series (but `skip`ped routes), as
    the increase from `then` to `now`."""
    by_bound: dict[float, float] = {}
    for key, value in now.items():
        found, labels = key
        if found != name:
            continue
        named = dict(labels)
        if named.get("route") in skip:
            continue
        bound = float(named["le"])
        by_bound[bound] = by_bound.get(bound, 0.0) + value - then.get(key, 0.0)
    return sorted(by_bound.items())


def _percentiles(buckets: list[tuple[float, float]]) -> Percentiles:
    p50, p95, p99 = (histogram_quantile(q, buckets) for q in QUANTILES)
    return Percentiles(p50=p50, p95=p95, p99=p99)


def summarize(now: dict[Key, float], then: dict[Key, float], seconds: float) -> SummaryView:
    """The summary of what changed from `then` to `now`, `seconds` apart."""
    seconds = max(seconds, 1e-9)

    def increase(name: str, **where: str) -> float:
        return max(0.0, _sum(now, name, **where) - _sum(then, name, **where))

    def status_class(first: str) -> float:
        return sum(
            max(0.0, value - then.get(key, 0.0))
            for key, value in now.items()
            if key[0] == REQUESTS and dict(key[1]).get("status", "").startswith(first)
        )

    answered = increase(REQUESTS)
    events, fired = increase(EVENTS), increase(COMPLETIONS)
    deliveries = None
    if any(key[0] == DELIVERIES for key in now):
        outcomes: dict[str, float] = {}
        for key, value in now.items():
            if key[0] == DELIVERIES:
                outcome = dict(key[1]).get("outcome", "unknown")
                outcomes[outcome] = outcomes.get(outcome, 0.0) + value - then.get(key, 0.0)
        deliveries = DeliveriesView(
            by_outcome=outcomes, lag_seconds=_percentiles(_buckets(now, then, DELIVERY_LAG))
        )
    return SummaryView(
        window_seconds=round(seconds, 3),
        requests=RequestsView(
            total=answered,
            per_second=answered / seconds,
            error_rate=status_class("5") / answered if answered else None,
            client_error_rate=status_class("4") / answered if answered else None,
            in_flight=_sum(now, IN_FLIGHT),
        ),
        latency_seconds=_percentiles(_buckets(now, then, DURATION, LONG_LIVED)),
        events_recorded=Rate(total=_sum(now, EVENTS), per_second=events / seconds),
        gates_fired=Rate(total=_sum(now, COMPLETIONS), per_second=fired / seconds),
        deliveries=deliveries,
    )


# --- routes ------------------------------------------------------------------------------------


def _metrics(request: Request[Any, Any, Any]) -> Any:
    from entrypoints.http.metrics import metrics_of  # noqa: PLC0415 - metrics imports this

    metrics = metrics_of(request.scope)
    if metrics is None:  # pragma: no cover - the routes exist only with the metrics
        raise NotFound("The metrics are switched off.")
    if metrics.readers is not None and not metrics.readers.allows(client_address(request.scope)):
        raise Forbidden(None, "The metrics may not be read from this address.")
    return metrics


_DOC: Final = "Platform administrators, from `metrics.allowed_networks` when it is set."


@get(
    "/",
    opt=requires(Permission.METRICS_READ),
    summary="Every metric, as JSON",
    description=f"The registry behind `GET /metrics`: each family with its samples. {_DOC}",
    responses=problems(401, 403),
    sync_to_thread=False,
)
def all_metrics(request: Request[Any, Any, Any]) -> FamiliesData:
    metrics = _metrics(request)
    families = list(metrics.registry.collect())
    metrics.remember(_flatten(families))
    return FamiliesData([family_view(f) for f in families])


@get(
    "/summary",
    opt=requires(Permission.METRICS_READ),
    summary="Request rate, errors, latency percentiles, events, gates, deliveries",
    description="Rates and percentiles over the last minute (or since the start). " + _DOC,
    responses=problems(401, 403),
    sync_to_thread=False,
)
def summary(request: Request[Any, Any, Any]) -> SummaryData:
    metrics = _metrics(request)
    now = time.monotonic()
    samples = values(metrics.registry)
    since, base = metrics.snapshots.base(now)
    metrics.remember(samples, now)
    return SummaryData(summarize(samples, base, now - since))


@get(
    "/{name:str}",
    opt=requires(Permission.METRICS_READ),
    summary="One metric, as JSON",
    description="By the family's name (`waypost_http_requests`) or a sample's "
    f"(`waypost_http_requests_total`). {_DOC}",
    responses=problems(401, 403, 404),
    sync_to_thread=False,
)
def one_metric(request: Request[Any, Any, Any], name: FromPath[str]) -> FamilyData:
    metrics = _metrics(request)
    for family in metrics.registry.collect():
        if family.name == name or any(s.name == name for s in family.samples):
            return FamilyData(family_view(family))
    raise NotFound(f"No metric {name}.")


def _flatten(families: Iterable[Metric]) -> dict[Key, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


HANDLERS = [summary, all_metrics, one_metric]
