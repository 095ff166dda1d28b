"""Background delivery: the loops that run the dispatcher, the deliverers and the announcer.

`waypost worker` runs them on their own (`run_worker`); `waypost serve` runs them inside
the server process unless `delivery.in_process` is false (`delivering`, in the app's
lifespan). Any number of workers and servers may run them on one database: the
dispatcher's checkpoint moves with its deliveries (compare-and-set), claims are leases
with a fence, and an attempt whose lease lapsed is written by nobody but its new holder.

The loops
    - dispatch: a pass over every tenant whose log is ahead of its checkpoint; again at
      once while it made deliveries, else when the commit feed (`Services.feed`,
      `CommitFeed.watch_all`) tells of a commit of any tenant, or after `poll_seconds`.
      The feed hears this process's commits at once, and other processes' too where the
      backend can tell (PostgreSQL: LISTEN/NOTIFY; SQLite: its head poller); a commit
      made during a pass is remembered, so the next wait returns at once.
    - two deliverer pools, one for first attempts and one for retries (a quarter of
      `concurrency`, at least one), so that a target that keeps failing never holds
      back new messages. Each claims as many due deliveries as it has free slots, never
      more than `subscription_concurrency` of one subscription in flight (its breaker
      may allow fewer), and attempts each in a task of its own; idle, it waits for the
      store to say deliveries may be due (made, requeued, enabled: NOTIFY across
      processes on PostgreSQL), for an attempt to end (what waits behind a cap or a
      breaker may go then) or for the next due time, at most `4 * poll_seconds`.
    - housekeeping, every second or so: lapsed leases expire, disables are announced,
      and the counts behind the metrics are read.

Stopping (`stop`): the loops end at once (their work is transactional); attempts in
flight get `timeout_seconds` + 5 s to finish and record, then are cancelled (their
leases lapse and another process, or the next start, attempts them again: at least
once, with the same webhook-id).

A loop that fails (the database went away) logs once, waits (doubling, up to 30 s) and
tries again. Logs never hold a secret or a message body.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from core.domain.delivery import DeliveryEvent
from core.ports import Claimed, Unavailable
from core.usecases import Announcer, AttemptReport, Deliverer, Dispatcher, Services
from entrypoints.delivery_metrics import DeliveryMetrics
from entrypoints.settings import DeliverySettings
from entrypoints.tracing import Tracing

__all__ = ["DeliveryRunner", "delivering", "process_name"]

log = logging.getLogger("waypost.delivery")

MAX_BACKOFF_SECONDS: Final = 30.0
HOUSEKEEPING_SECONDS: Final = 1.0
COUNTS_SECONDS: Final = 5.0
#: Extra time an attempt in flight gets on a graceful stop, beyond the attempt timeout.
STOP_MARGIN_SECONDS: Final = 5.0
#: A lease outlives the attempt's timeout by this much (the finish's write included).
LEASE_MARGIN_SECONDS: Final = 5.0


def process_name() -> str:
    """Who this process is in claims and dispatch leases: host, pid and a random part."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{os.urandom(3).hex()}"


class _Pool:
    """One deliverer pool's slots (first attempts, or retries)."""

    def __init__(self, retries: bool, slots: int) -> None:
        self.retries = retries
        self.slots = slots
        self.busy = 0
        self.freed = anyio.Event()

    def free(self) -> None:
        self.busy -= 1
        self.freed.set()


class DeliveryRunner:
    """The delivery loops of one process over `services` (see the module docstring)."""

    def __init__(
        self,
        services: Services,
        settings: DeliverySettings,
        *,
        name: str | None = None,
        metrics: DeliveryMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        delivery = services.delivery_deps
        if delivery is None or delivery.sender is None:
            raise RuntimeError("delivery needs the Services' delivery ports and a sender")
        self.name = name or process_name()
        deps = services.deps
        self.settings = settings
        self.dispatcher = Dispatcher(deps, delivery, services.messages, name=self.name)
        lease = timedelta(seconds=settings.timeout_seconds + LEASE_MARGIN_SECONDS)
        self.deliverer = Deliverer(deps, delivery, name=self.name, lease=lease)
        self.announcer = Announcer(deps, delivery)
        self.store = delivery.store
        self.metrics = metrics
        #: Each attempt a span in its message's trace, which goes on at the target.
        self.tracing = tracing
        #: What the dispatcher waits on between passes (None: it polls).
        self.feed = services.feed
        retry_slots = max(1, settings.concurrency // 4)
        self._pools = (
            _Pool(False, settings.concurrency - retry_slots),
            _Pool(True, retry_slots),
        )
        self._in_flight: dict[str, int] = {}
        self._stop = anyio.Event()
        self._drained = anyio.Event()
        self._stopped = anyio.Event()
        self._progress = anyio.Event()  # set when an attempt ends
        self._ended = 0  # attempts ended so far
        self._retried = 0  # of them, those that left a retry to make
        self._attempts: TaskGroup | None = None

    # --- running and stopping ------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until `stop`; then let attempts in flight finish (within the grace)."""
        async with anyio.create_task_group() as attempts:
            self._attempts = attempts
            async with anyio.create_task_group() as loops:
                loops.start_soon(self._guarded, "dispatching", self._dispatch)
                loops.start_soon(self._guarded, "housekeeping", self._housekeeping)
                for pool in self._pools:
                    loops.start_soon(self._guarded, "claiming deliveries", self._claim, pool)
                task_status.started()
                await self._stop.wait()
                loops.cancel_scope.cancel()
            grace = self.settings.timeout_seconds + STOP_MARGIN_SECONDS
            with anyio.move_on_after(grace):
                if self._busy():
                    await self._drained.wait()
            if self._busy():
                log.warning(
                    "stopping with attempts still in flight: their leases will lapse and "
                    "they will be attempted again"
                )
            attempts.cancel_scope.cancel()
        log.info("delivery stopped")
        self._stopped.set()

    async def stopped(self) -> None:
        """Return once `run` has stopped (after `stop` and the grace)."""
        await self._stopped.wait()

    def stop(self) -> None:
        self._stop.set()

    def _busy(self) -> bool:
        return any(pool.busy for pool in self._pools)

    async def _guarded(
        self, what: str, loop: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        """Run `loop` for ever: after a failure, log once, back off (doubling) and again."""
        backoff = 0.0
        while True:
            try:
                await loop(*args)
                return
            except Unavailable as exc:  # the store logged the outage, once
                log.debug("delivery: %s waits for the database: %s", what, exc)
            except Exception:
                if backoff == 0.0:
                    log.exception("delivery: %s failed; retrying with backoff", what)
            backoff = min(MAX_BACKOFF_SECONDS, max(0.25, backoff * 2))
            await anyio.sleep(backoff)

    # --- the loops -------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        poll = self.settings.poll_seconds
        if self.feed is None:
            while True:
                if not await self._dispatch_once():
                    await anyio.sleep(poll)
        # Entered before the first pass: a commit during a pass wakes the next wait at once.
        # While no tenant has a subscription, commits have nothing to dispatch: the next
        # look is after `poll_seconds`, not at every commit (a first subscription is
        # dispatched from within a poll of its making; its start is where the log was).
        async with self.feed.watch_all() as commits:
            while True:
                if await self._dispatch_once():
                    continue
                if self.dispatcher.subscribed:
                    await commits.wait(poll)
                else:
                    await anyio.sleep(poll)

    async def _dispatch_once(self) -> int:
        made = await self.dispatcher.dispatch_once()
        if made:
            log.debug("dispatched %d deliveries", made)
        return made

    async def _housekeeping(self) -> None:
        counted_at = -COUNTS_SECONDS
        while True:
            expired = await self.deliverer.expire()
            if expired:
                log.info("%d deliveries whose lease lapsed are due again", expired)
            for subscription in await self.announcer.announce_once():
                log.warning(
                    "subscription %s of tenant %s was disabled: %s",
                    subscription.id,
                    subscription.tenant_id,
                    subscription.disabled_reason,
                )
            now = anyio.current_time()
            if self.metrics is not None and now - counted_at >= COUNTS_SECONDS:
                counted_at = now
                self.metrics.counts = await self.store.counts()
                self.metrics.breakers = self.deliverer.breaker_states()
            await anyio.sleep(HOUSEKEEPING_SECONDS)

    async def _claim(self, pool: _Pool) -> None:
        settings = self.settings
        idle_wait = settings.poll_seconds * 4
        # Claims take a quarter of the slots at a time while attempts are in flight (one
        # claim per attempt would cost a query per delivery), any number when idle.
        batch = max(1, pool.slots // 4)
        while True:
            free = pool.slots - pool.busy
            if free <= 0 or (pool.busy and free < batch):
                pool.freed = anyio.Event()
                await pool.freed.wait()
                continue
            # taken before the claim, so that what happens meanwhile counts
            ended, retried, in_flight = self._ended, self._retried, self._in_flight_total()
            mark = self.store.mark()
            claimed = await self.deliverer.claim(
                limit=free,
                retries=pool.retries,
                in_flight=self._in_flight,
                cap=settings.subscription_concurrency,
            )
            for one in claimed:
                self._start(pool, one)
            if len(claimed) == free:
                continue  # there may be more
            # All that could go now went. Claiming again at once would find nothing (on
            # PostgreSQL after walking the backlog of every subscription at its cap), so
            # idle until the store says deliveries may be due, the next one is due, or:
            # if due ones are held back (a subscription's cap, its breaker), a batch of the
            # attempts in flight ended and made room; for retries, an attempt left one.
            due = await self.deliverer.next_due(pool.retries)
            wait, held = idle_wait, False
            if due is not None:
                until = (due - self.deliverer.now()).total_seconds()
                if until > 0:
                    wait = min(wait, until)
                else:
                    in_flight += len(claimed)
                    held = in_flight > 0
            goal = ended + min(batch, in_flight)

            def ready(held: bool = held, goal: int = goal, retried: int = retried) -> bool:
                return (held and self._ended >= goal) or (pool.retries and self._retried > retried)

            await self._idle(wait, ready, mark)

    def _in_flight_total(self) -> int:
        return sum(pool.busy for pool in self._pools)

    async def _idle(self, seconds: float, ready: Callable[[], bool], mark: int) -> None:
        """Until the store says deliveries may be due since `mark`, `ready()` after an
        attempt ended (at once if either already holds), or `seconds` passed."""
        if ready():
            return

        async def attempts_ended() -> None:
            while not ready():
                await self._progress.wait()

        async with anyio.create_task_group() as waits:

            async def first(wait: Callable[[], Awaitable[object]]) -> None:
                await wait()
                waits.cancel_scope.cancel()

            waits.start_soon(first, lambda: self.store.wait(seconds, mark))
            waits.start_soon(first, attempts_ended)

    def _start(self, pool: _Pool, claimed: Claimed) -> None:
        assert self._attempts is not None
        pool.busy += 1
        subscription = claimed.subscription.id
        self._in_flight[subscription] = self._in_flight.get(subscription, 0) + 1
        self._attempts.start_soon(self._attempt, pool, claimed)

    async def _attempt(self, pool: _Pool, claimed: Claimed) -> None:
        subscription = claimed.subscription.id
        report: AttemptReport | None = None
        try:
            # bounded, so that a hung database never holds a slot for ever (the lease lapses)
            with anyio.move_on_after(self.settings.timeout_seconds + LEASE_MARGIN_SECONDS):
                if self.tracing is None:
                    report = await self.deliverer.attempt(claimed)
                else:
                    with self.tracing.attempt(claimed.delivery) as span:
                        report = await self.deliverer.attempt(claimed, span.headers)
                        span.ended(report)
        except Unavailable as exc:  # the store logged the outage, once
            log.debug(
                "delivery %s: %s; attempted again when its lease lapses", claimed.delivery.id, exc
            )
        except Exception:
            log.exception(
                "delivery %s: the attempt failed inside the registry; it is attempted again "
                "when its lease lapses",
                claimed.delivery.id,
            )
        finally:
            left = self._in_flight[subscription] - 1
            if left:
                self._in_flight[subscription] = left
            else:
                del self._in_flight[subscription]
            pool.free()
            self._ended += 1
            if report is not None and report.applied and report.event == DeliveryEvent.RETRY:
                self._retried += 1
            self._progress.set()
            self._progress = anyio.Event()
            if self._stop.is_set() and not self._busy():
                self._drained.set()
        if report is not None:
            self._report(report)

    def _report(self, report: AttemptReport) -> None:
        if self.metrics is not None:
            self.metrics.observe(report)
        what = report.status_code if report.status_code is not None else report.failure
        fields = (report.delivery_id, report.subscription_id, report.number, what)
        if not report.applied:
            log.info(
                "delivery %s (subscription %s) attempt %d: %s, but its lease was lost: "
                "another process has it",
                *fields,
            )
        elif report.event == DeliveryEvent.SUCCEED:
            log.debug("delivery %s (subscription %s) attempt %d: %s", *fields)
        elif report.event == DeliveryEvent.RETRY:
            log.info(
                "delivery %s (subscription %s) attempt %d failed: %s (%s); next at %s",
                *fields,
                report.error,
                report.next_attempt_at,
            )
        elif report.event == DeliveryEvent.GIVE_UP:
            log.warning(
                "delivery %s (subscription %s) is dead after attempt %d: %s (%s)",
                *fields,
                report.error,
            )
        elif report.event == DeliveryEvent.HOLD:
            log.info(
                "delivery %s (subscription %s) attempt %d: %s; the subscription is "
                "disabled (%s), the delivery waits",
                *fields,
                report.disabled,
            )


@asynccontextmanager
async def delivering(
    services: Services,
    settings: DeliverySettings,
    *,
    metrics: DeliveryMetrics | None = None,
    name: str | None = None,
    tracing: Tracing | None = None,
) -> AsyncIterator[DeliveryRunner]:
    """Run delivery while the block runs; stop it gracefully when the block ends."""
    runner = DeliveryRunner(services, settings, name=name, metrics=metrics, tracing=tracing)
    async with anyio.create_task_group() as tasks:
        await tasks.start(runner.run)
        log.info("delivery started (process %s)", runner.name)
        try:
            yield runner
        finally:
            runner.stop()


async def stop_on_signals(runner: DeliveryRunner) -> None:
    """Stop `runner` at the first SIGTERM or SIGINT (a worker's graceful stop)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: stopping delivery", signal.Signals(signum).name)
            runner.stop()
            return
