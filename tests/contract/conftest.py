"""The contract suites run once per backend of the Store port."""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.system import UlidSource
from core.ports import Store
from core.usecases import Deps, Services
from tests.backends import BACKENDS, open_store


class StepClock:
    """A clock that advances one millisecond per reading: deterministic and ordered."""

    def __init__(self) -> None:
        self._ticks = itertools.count()
        self.start = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.start + timedelta(milliseconds=next(self._ticks))


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    backend: str = request.param
    if backend == "postgres":
        request.applymarker(pytest.mark.postgres)
    async with open_store(backend, request, tmp_path) as opened:
        yield opened


@pytest.fixture
def services(store: Store) -> Services:
    return Services(Deps(store, StepClock(), UlidSource(), ReceiverLru(), combiner=Lanes()))
