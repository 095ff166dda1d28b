"""What the subscription and delivery use cases share: their ports, policies and secrets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from core.domain.breaker import BreakerPolicy
from core.domain.delivery import RetryPolicy
from core.domain.rotation import verifying
from core.domain.signatures import SECRET_BYTES, new_secret
from core.domain.subscriptions import UrlPolicy
from core.ports import (
    DeliveryStore,
    Randomness,
    SecretRecord,
    SecretSealer,
    WebhookSender,
)

__all__ = ["DeliveryDeps", "SigningSecrets"]

#: How long a process signs with the secrets it opened before it reads them again: a
#: rotation made by another process signs here within this time (in this one, at once).
SECRETS_TTL: Final = timedelta(seconds=2)


class SigningSecrets:
    """Each subscription's signing secrets, opened, kept for `SECRETS_TTL`.

    Every version that verifies at the time signs (`core.domain.rotation.verifying`):
    the active one, and during a rotation's grace the one it replaced, newest first.
    Bounded: at most `capacity` subscriptions are kept (the oldest read forgotten)."""

    def __init__(self, sealer: SecretSealer, capacity: int = 10_000) -> None:
        self._sealer = sealer
        self._capacity = capacity
        self._kept: dict[str, tuple[datetime, list[SecretRecord]]] = {}
        self._opened: dict[tuple[str, int], str] = {}

    def fresh(self, subscription_id: str, now: datetime) -> list[SecretRecord] | None:
        kept = self._kept.get(subscription_id)
        if kept is None or now - kept[0] >= SECRETS_TTL:
            return None
        return kept[1]

    def keep(self, subscription_id: str, records: Sequence[SecretRecord], now: datetime) -> None:
        self._kept.pop(subscription_id, None)
        if len(self._kept) >= self._capacity:
            oldest = next(iter(self._kept))
            self.forget(oldest)
        self._kept[subscription_id] = (now, list(records))

    def forget(self, subscription_id: str) -> None:
        self._kept.pop(subscription_id, None)
        for key in [k for k in self._opened if k[0] == subscription_id]:
            del self._opened[key]

    def signing(
        self, subscription_id: str, records: Sequence[SecretRecord], now: datetime
    ) -> list[str]:
        """The secrets that sign at `now`, newest first, opened (once per version)."""
        by_version = {r.version.version: r for r in records}
        found = []
        for version in verifying((r.version for r in records), now):
            key = (subscription_id, version.version)
            secret = self._opened.get(key)
            if secret is None:
                record = by_version[version.version]
                secret = self._sealer.open(
                    record.envelope,
                    tenant_id=record.tenant_id,
                    name=record.name,
                    version=version.version,
                ).decode()
                self._opened[key] = secret
            found.append(secret)
        return found


class DeliveryDeps:
    """The ports and policies of subscriptions and delivery, injected by the composition
    root. `sender` may be None where nothing is delivered (the HTTP app when delivery
    runs in workers: it still creates, replays and redrives)."""

    def __init__(
        self,
        store: DeliveryStore,
        *,
        sealer: SecretSealer,
        randomness: Randomness,
        url_policy: UrlPolicy,
        retry: RetryPolicy,
        sender: WebhookSender | None = None,
        breaker: BreakerPolicy | None = None,
        timeout: timedelta = timedelta(seconds=15),
        ordering_wait: timedelta = timedelta(minutes=10),
        user_agent: str = "Waypost",
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.randomness = randomness
        self.url_policy = url_policy
        self.retry = retry
        self.sender = sender
        self.breaker = breaker or BreakerPolicy()
        self.timeout = timeout
        self.ordering_wait = ordering_wait
        self.user_agent = user_agent
        self.secrets = SigningSecrets(sealer)

    def new_secret(self) -> str:
        return new_secret(self.randomness.token_bytes(SECRET_BYTES))
