"""`waypost serve`: what it sets up around uvicorn (the server itself runs in tests/e2e)."""

from __future__ import annotations

import gc
import pathlib
import signal
from typing import Any

import pytest
import uvicorn

from adapters.crypto.envelope import generate_master_key
from entrypoints import cli, logs
from entrypoints.settings import DatabaseSettings, LogSettings, SecretsSettings, Settings


class _Marker:
    """A collector-tracked object whose identity the test can look for."""


def test_settle_heap_moves_what_is_alive_out_of_the_collected_generations() -> None:
    marker = _Marker()
    assert any(o is marker for o in gc.get_objects())
    try:
        cli.settle_heap()
        assert gc.get_freeze_count() > 0
        assert not any(o is marker for o in gc.get_objects())  # frozen: never walked again
        made_after = _Marker()
        assert any(o is made_after for o in gc.get_objects())  # new objects are collected
    finally:
        gc.unfreeze()


def test_serve_configures_the_log_and_settles_the_heap_after_start_up(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[Any] = []
    configured: list[LogSettings] = []
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: served.append(self.config.app)
    )
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # keep pytest's own handlers
    # the process's loggers stay as they are for the other tests
    monkeypatch.setattr(logs, "configure", lambda log, stream=None: configured.append(log))
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'waypost.db'}"),
        secrets=SecretsSettings(master_key=generate_master_key()),
        log=LogSettings(format="json"),
    )
    cli._serve(settings, host=None, port=None, workers=None)
    assert configured == [settings.log]
    (app,) = served
    # last: Litestar runs on_startup hooks after the lifespan has opened the services
    assert app.on_startup[-1] is cli.settle_heap
