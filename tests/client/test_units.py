"""The client's small parts, without a server: configuration, backoff, SSE, CLI parsing."""

from __future__ import annotations

import argparse
import pathlib
import random

import pytest
from waypost_client import Config, ConfigError, RetryPolicy
from waypost_client._core import SseParser, retry_after_seconds
from waypost_client.cli import duration, load_items, parser


def test_config_from_arguments_then_environment() -> None:
    env = {"WAYPOST_URL": "https://w.example/", "WAYPOST_API_KEY": "wp_env"}
    assert Config.load(environ=env).url == "https://w.example"
    assert Config.load(environ=env).api_key == "wp_env"
    given = Config.load("http://other:9/", "wp_arg", environ=env)
    assert (given.url, given.api_key) == ("http://other:9", "wp_arg")
    assert Config.load(environ={}).url == "http://127.0.0.1:8042"
    # A URL with credentials: the password is the API key, and it leaves the URL.
    basic = Config.load("https://any:wp_secret@w.example:8443/base", environ={})
    assert basic.api_key == "wp_secret"
    assert basic.url == "https://w.example:8443/base"
    users = Config.load(environ={"WAYPOST_USERNAME": "u", "WAYPOST_PASSWORD": "p",
                                 "WAYPOST_API_KEY": "wp_ignored"})  # fmt: skip
    assert users.api_key is None
    assert users.username == "u"
    with pytest.raises(ConfigError, match="not both"):
        Config.load(api_key="wp_x", username="u", password="p", environ={})
    with pytest.raises(ConfigError, match="password"):
        Config.load(username="u", environ={})
    with pytest.raises(ConfigError, match="http"):
        Config.load("ftp://w.example", environ={})
    assert "wp_" not in repr(basic)


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(first=0.2, longest=10)
    rng = random.Random(1)
    delays = [policy.delay(n, None, rng) for n in range(1, 9)]
    assert all(0 <= d <= min(10, 0.2 * 2 ** (n - 1)) for n, d in enumerate(delays, 1))
    assert all(3 <= policy.delay(1, 3.0, rng) <= 3.6 for _ in range(100))
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0


def test_sse_parser() -> None:
    parser_ = SseParser()
    lines = [": keep-alive", "", "id: 3", 'data: {"a":', "data: 1}", "", "id: 4"]
    events = [e for e in map(parser_.feed, lines) if e is not None]
    assert [(e.id, e.data) for e in events] == [("3", ['{"a":', "1}"])]


def test_cli_durations_and_files(tmp_path: pathlib.Path) -> None:
    assert duration("90") == 90
    assert duration("30m") == 1800
    assert duration("1.5h") == 5400
    assert duration("250ms") == 0.25
    with pytest.raises(argparse.ArgumentTypeError):
        duration("soon")
    folder = tmp_path
    (folder / "one.json").write_text('{"name": "a"}')
    (folder / "many.jsonl").write_text('{"name": "a"}\n\n{"name": "b"}\n')
    (folder / "docs.yaml").write_text("name: a\n---\nname: b\n")
    assert load_items(str(folder / "one.json")) == [{"name": "a"}]
    assert load_items(str(folder / "many.jsonl")) == [{"name": "a"}, {"name": "b"}]
    assert load_items(str(folder / "docs.yaml")) == [{"name": "a"}, {"name": "b"}]
    args = parser().parse_args(["gate", "wait", "--group", "g@1", "--name", "a", "--version",
                                "1", "--release", "r", "--platform-id", "p", "--package", "k",
                                "--timeout", "2m"])  # fmt: skip
    assert args.timeout == 120
    assert args.request_timeout == 30
