"""Application services: load through ports, ask the domain, commit through one transaction."""

from __future__ import annotations

from core.usecases.common import Actor, Deps
from core.usecases.events import Events
from core.usecases.groups import Groups, GroupStatus
from core.usecases.receivers import Receivers
from core.usecases.replay import Replay
from core.usecases.tenants import Tenants


class Services:
    """Every use case, built over one set of ports."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.tenants = Tenants(deps)
        self.receivers = Receivers(deps)
        self.events = Events(deps)
        self.groups = Groups(deps)
        self.replay = Replay(deps)


__all__ = [
    "Actor",
    "Deps",
    "Events",
    "GroupStatus",
    "Groups",
    "Receivers",
    "Replay",
    "Services",
    "Tenants",
]
