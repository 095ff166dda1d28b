"""Typed settings: defaults that need nothing, an optional TOML file, then the environment.

Environment variables are `WAYPOST__SECTION__KEY` (e.g. `WAYPOST__DATABASE__URL`,
`WAYPOST__HTTP__PORT`); top-level keys are `WAYPOST__KEY` (`WAYPOST__MODE`). The
file named by `WAYPOST__CONFIG` (TOML, same sections) is read first; the
environment wins. A bad value stops the start with a message naming the setting.
"""

from __future__ import annotations

import pathlib
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

PREFIX = "WAYPOST__"
CONFIG_VARIABLE = "WAYPOST__CONFIG"


class SettingsError(Exception):
    """A setting is missing, malformed or out of range; the message names it."""


class DatabaseSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: `memory://`, a SQLite path or URL (`sqlite:///./waypost.db`), or a PostgreSQL URL.
    url: str = "sqlite:///./waypost.db"


class HttpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8042
    #: Largest request body of a single-event or other POST (413 above).
    max_body_bytes: int = 1024 * 1024 + 64 * 1024
    #: Largest body of `POST /api/v1/events/batch` (413 above).
    max_batch_body_bytes: int = 16 * 1024 * 1024
    #: Seconds in-flight requests get to finish on SIGTERM.
    shutdown_grace_seconds: float = 30.0


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: `development` applies pending migrations at start; `production` refuses to start.
    mode: Literal["development", "production"] = "development"
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        if not 0 < self.http.port < 65536:
            raise SettingsError(f"http.port must be 1..65535, not {self.http.port}")
        if self.http.max_body_bytes < 1024 or self.http.max_batch_body_bytes < 1024:
            raise SettingsError("http body limits must be at least 1024 bytes")
        if self.http.shutdown_grace_seconds < 0:
            raise SettingsError("http.shutdown_grace_seconds must not be negative")
        scheme = self.database.url.split(":", 1)[0].split("+", 1)[0]
        if scheme not in {"memory", "sqlite", "postgresql", "postgres"}:
            raise SettingsError(
                "database.url must be memory://, a sqlite:/// URL or a postgresql:// URL, "
                f"not {self.database.url!r}"
            )


def _nest(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(PREFIX) or name == CONFIG_VARIABLE:
            continue
        path = [part.lower() for part in name[len(PREFIX) :].split("__")]
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SettingsError(f"{name}: {'.'.join(path[:-1])} is a value, not a section")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise SettingsError(f"{name}: {'.'.join(path)} is a section, not a value")
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from the TOML file named by WAYPOST__CONFIG (if any), then the environment."""
    raw: dict[str, Any] = {}
    config = environ.get(CONFIG_VARIABLE)
    if config:
        path = pathlib.Path(config)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"{CONFIG_VARIABLE}: cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{CONFIG_VARIABLE}: {path} is not valid TOML: {exc}") from None
    raw = _merge(raw, _nest(environ))
    try:
        # strict=False lets environment strings become ints, floats and bools.
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {_env_path(str(exc))}") from None


def _env_path(message: str) -> str:
    """msgspec says `at $.http.port`; users set WAYPOST__HTTP__PORT."""
    if "`$." in message:
        head, _, rest = message.partition("`$.")
        path, _, tail = rest.partition("`")
        name = PREFIX + path.replace(".", "__").upper()
        return f"{head}{name} ({path}){tail}"
    return message
