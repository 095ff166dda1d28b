"""Application services: load through ports, ask the domain, commit through one transaction."""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from core.domain.rotation import RotationPolicy
from core.ports import (
    BearerSecrets,
    CommitFeed,
    IdentityStore,
    MessageSink,
    PasswordHasher,
    SecretSealer,
    TokenSigner,
)
from core.usecases.artifacts import Artifacts, ArtifactView, GateView
from core.usecases.audit import Auditor
from core.usecases.common import Actor, Deps, RequestContext
from core.usecases.delivery import Announcer, AttemptReport, Deliverer, Dispatcher
from core.usecases.delivery_deps import DeliveryDeps
from core.usecases.events import Events, Recorded
from core.usecases.groups import Groups, GroupStatus
from core.usecases.identity import RECENT_SECONDS, Access, Identity, TokenAnswer
from core.usecases.messages import MessagePage, Messages
from core.usecases.publishing import Publisher
from core.usecases.receivers import Receivers
from core.usecases.replay import Replay, Replayed
from core.usecases.retention import Retention
from core.usecases.secrets import SecretInfo, Secrets
from core.usecases.subscriptions import Subscriptions
from core.usecases.tenants import Tenants


class IdentityDeps:
    """The ports of identity, access and secrets, injected by the composition root."""

    def __init__(
        self,
        store: IdentityStore,
        *,
        hasher: PasswordHasher,
        bearer: BearerSecrets,
        sealer: SecretSealer,
        signer: TokenSigner,
        policy: RotationPolicy,
        recent: timedelta = timedelta(seconds=RECENT_SECONDS),
        audit_retention: timedelta | None = None,
    ) -> None:
        self.store = store
        #: Audit records older than this are deleted (None: kept forever).
        self.audit_retention = audit_retention
        self.hasher = hasher
        self.bearer = bearer
        self.sealer = sealer
        self.signer = signer
        self.policy = policy
        self.recent = recent


class Services:
    """Every use case, built over one set of ports."""

    def __init__(
        self,
        deps: Deps,
        identity: IdentityDeps | None = None,
        sink: MessageSink | None = None,
        delivery: DeliveryDeps | None = None,
        feed: CommitFeed | None = None,
    ) -> None:
        self.deps = deps
        #: Wake-ups on the tenants' commits: what long polls wait on.
        self.feed = feed
        self.tenants = Tenants(deps)
        self.receivers = Receivers(deps)
        self.events = Events(deps)
        self.groups = Groups(deps, feed)
        self.artifacts = Artifacts(deps)
        self.messages = Messages(deps)
        #: Copies the messages to `sink`, when there is one (see `Publisher`).
        self.publisher = None if sink is None else Publisher(deps, self.messages, sink)
        self.replay = Replay(deps)
        self.retention = Retention(deps)
        self.identity_deps = identity
        if identity is not None:
            self._audit: Auditor | None = Auditor(deps, identity.store)
            self._secrets: Secrets | None = Secrets(
                deps,
                identity.store,
                sealer=identity.sealer,
                signer=identity.signer,
                policy=identity.policy,
                audit=self._audit,
            )
            self._identity: Identity | None = Identity(
                deps,
                identity.store,
                hasher=identity.hasher,
                bearer=identity.bearer,
                signer=identity.signer,
                secrets=self._secrets,
                audit=self._audit,
                recent=identity.recent,
                audit_retention=identity.audit_retention,
            )
        else:
            self._audit = self._secrets = self._identity = None
        #: The ports of subscriptions and delivery (the worker builds its loops on them).
        self.delivery_deps = delivery
        self._subscriptions = (
            None if delivery is None else Subscriptions(deps, delivery, self.messages, self._audit)
        )

    @property
    def audit(self) -> Auditor:
        return _given(self._audit)

    @property
    def secrets(self) -> Secrets:
        return _given(self._secrets)

    @property
    def identity(self) -> Identity:
        return _given(self._identity)

    @property
    def subscriptions(self) -> Subscriptions:
        return _given(self._subscriptions)


S = TypeVar("S")


def _given(service: S | None) -> S:
    if service is None:
        raise RuntimeError("these Services were built without the ports this needs")
    return service


__all__ = [
    "Access",
    "Actor",
    "Announcer",
    "ArtifactView",
    "Artifacts",
    "AttemptReport",
    "Auditor",
    "Deliverer",
    "DeliveryDeps",
    "Deps",
    "Dispatcher",
    "Events",
    "GateView",
    "GroupStatus",
    "Groups",
    "Identity",
    "IdentityDeps",
    "MessagePage",
    "Messages",
    "Publisher",
    "Receivers",
    "Recorded",
    "Replay",
    "Replayed",
    "RequestContext",
    "Retention",
    "SecretInfo",
    "Secrets",
    "Services",
    "Subscriptions",
    "Tenants",
    "TokenAnswer",
]
