"""Delivery's Prometheus metrics, as one collector that the app's registry (GET /metrics of
`waypost serve`) or a worker's own registry takes.

- `waypost_deliveries_total{outcome}`: attempts and hand-backs by what they came to:
  `succeeded`, `retried`, `dead`, `held` (the subscription was disabled), `released`
  (handed back unattempted), `lost` (the claim no longer held: nothing was written).
- `waypost_delivery_attempt_duration_seconds{result}`: each attempt, by `success`,
  `gone`, `throttled`, `failed`.
- `waypost_delivery_lag_seconds{stage}`: from the message's commit to its first attempt
  (`first_attempt`) and to the attempt that succeeded (`success`).
- `waypost_deliveries_by_status{status}`: pending, delivering and dead deliveries, every tenant's,
  and `waypost_subscriptions_disabled`: read from the store every few seconds.
- `waypost_delivery_breakers{state}`: subscriptions whose breaker in this process is
  closed (with failures counted), open or half-open.

No label names a tenant, a subscription or anything in one.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.domain.breaker import BreakerState
from core.domain.delivery import DeliveryEvent
from core.ports import DeliveryCounts
from core.usecases import AttemptReport

__all__ = ["DeliveryMetrics"]

_OUTCOMES = {
    DeliveryEvent.SUCCEED: "succeeded",
    DeliveryEvent.RETRY: "retried",
    DeliveryEvent.GIVE_UP: "dead",
    DeliveryEvent.HOLD: "held",
    DeliveryEvent.RELEASE: "released",
}
_DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LAGS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
         3600.0, 21600.0, 86400.0, 259200.0)  # fmt: skip


class DeliveryMetrics(Collector):
    def __init__(self) -> None:
        self.deliveries = Counter(
            "waypost_deliveries",
            "Delivery attempts and hand-backs, by what they came to.",
            ("outcome",),
            registry=None,
        )
        self.duration = Histogram(
            "waypost_delivery_attempt_duration_seconds",
            "Time of each delivery attempt (connect, send, answer), by its result.",
            ("result",),
            registry=None,
            buckets=_DURATIONS,
        )
        self.lag = Histogram(
            "waypost_delivery_lag_seconds",
            "Time from a message's commit to its first delivery attempt, and to its success.",
            ("stage",),
            registry=None,
            buckets=_LAGS,
        )
        self.counts = DeliveryCounts(pending=0, delivering=0, dead=0, disabled_subscriptions=0)
        self.breakers: dict[BreakerState, int] = dict.fromkeys(BreakerState, 0)

    def observe(self, report: AttemptReport) -> None:
        outcome = _OUTCOMES[report.event] if report.applied else "lost"
        self.deliveries.labels(outcome).inc()
        if report.verdict is None:
            return
        self.duration.labels(str(report.verdict)).observe(report.duration_ms / 1000)
        if report.number == 1:
            self.lag.labels("first_attempt").observe(max(0.0, report.lag_seconds))
        if report.event == DeliveryEvent.SUCCEED and report.applied:
            self.lag.labels("success").observe(max(0.0, report.lag_seconds))

    def collect(self) -> Iterator[Metric]:
        yield from self.deliveries.collect()
        yield from self.duration.collect()
        yield from self.lag.collect()
        statuses = GaugeMetricFamily(
            "waypost_deliveries_by_status",
            "Deliveries by status, every tenant's (refreshed every few seconds).",
            labels=("status",),
        )
        counts = self.counts
        for status, value in (
            ("pending", counts.pending),
            ("delivering", counts.delivering),
            ("dead", counts.dead),
        ):
            statuses.add_metric((status,), value)
        yield statuses
        yield GaugeMetricFamily(
            "waypost_subscriptions_disabled",
            "Subscriptions that are disabled (by people or by the registry).",
            counts.disabled_subscriptions,
        )
        breakers = GaugeMetricFamily(
            "waypost_delivery_breakers",
            "Subscriptions whose circuit breaker in this process is in each state "
            "(closed: with failures counted).",
            labels=("state",),
        )
        for state, value in self.breakers.items():
            breakers.add_metric((str(state),), value)
        yield breakers
