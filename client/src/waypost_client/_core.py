"""What the sync and async clients share: configuration, calls, retries, auth, SSE.

A `Call` describes one request (method, path, query, body) and how to decode its
answer; the clients only send it. Retries follow `RetryPolicy`; every POST gets an
`Idempotency-Key` made once per call and sent on each of its attempts, so a retry
of a request the server did commit replays the first answer instead of recording
twice.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from waypost_client import __version__
from waypost_client.errors import ApiError, WaypostError, error_for
from waypost_client.models import Token

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8042"
USER_AGENT = f"waypost-client/{__version__}"
IDEMPOTENCY_HEADER = "Idempotency-Key"

#: Methods retried after any connection failure (the request may have been processed:
#: GETs are safe, POSTs carry an Idempotency-Key). PATCH and DELETE are retried only
#: when the request cannot have reached the server (connect errors), or on 429/503.
_REPLAYABLE = frozenset({"GET", "HEAD", "POST"})
_RETRY_STATUSES = frozenset({429, 503})


class ConfigError(WaypostError):
    """The client is not configured well enough to make a request (no URL, two credentials)."""


@dataclass(frozen=True)
class Config:
    """Where the server is and who is asking; `Config.load` fills the gaps from the
    environment (WAYPOST_URL, WAYPOST_API_KEY, WAYPOST_USERNAME, WAYPOST_PASSWORD,
    WAYPOST_TENANT)."""

    url: str = DEFAULT_URL
    api_key: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tenant: str | None = None
    #: A platform administrator acting in a tenant sends `X-Tenant` (API.md).
    act_as: str | None = None
    timeout: float = 30.0

    @classmethod
    def load(
        cls,
        url: str | None = None,
        api_key: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        tenant: str | None = None,
        act_as: str | None = None,
        timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        env = os.environ if environ is None else environ
        url = url or env.get("WAYPOST_URL") or DEFAULT_URL
        # https://any:wp_...@host/: the password is the API key (API.md, Basic credentials).
        parts = urlsplit(url)
        if parts.password and not api_key:
            api_key = parts.password
        if parts.username or parts.password:
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        if urlsplit(url).scheme not in {"http", "https"}:
            raise ConfigError(f"the Waypost URL must be http:// or https://, not {url!r}")
        username = username or env.get("WAYPOST_USERNAME") or None
        password = password or env.get("WAYPOST_PASSWORD") or None
        if not username:
            api_key = api_key or env.get("WAYPOST_API_KEY") or None
        if api_key and username:
            raise ConfigError("give an API key or a username and password, not both")
        if username and not password:
            raise ConfigError("a username needs a password (WAYPOST_PASSWORD)")
        return cls(
            url=url.rstrip("/"),
            api_key=api_key,
            username=username,
            password=password,
            tenant=tenant or env.get("WAYPOST_TENANT") or None,
            act_as=act_as,
            timeout=timeout,
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on connection errors, 429 and 503: exponential backoff with full jitter,
    at least what `Retry-After` asks, all within `budget` seconds (then the last error
    is raised). `attempts` bounds the tries of one call; 1 means no retry."""

    attempts: int = 8
    first: float = 0.2
    longest: float = 10.0
    budget: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
        backoff = rng.uniform(0, min(self.longest, self.first * 2 ** (attempt - 1)))
        if retry_after is not None:
            # Spread callers told the same time: up to 20 % later, never earlier.
            return retry_after + rng.uniform(0, max(0.1, retry_after * 0.2))
        return backoff


NO_RETRY = RetryPolicy(attempts=1)


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds (a number, or an HTTP date), None when absent or nonsense."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer (`decode` gets the JSON body)."""

    method: str
    path: str
    decode: Callable[[Any], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    form: Mapping[str, str] | None = None
    authenticated: bool = True
    headers: Mapping[str, str] | None = None
    #: Whether connection errors, 429 and 503 are retried (not for a readiness probe).
    retry: bool = True
    #: Seconds to wait for the answer beyond the client's timeout (a long poll's `wait`).
    extra_time: float = 0.0


@dataclass(frozen=True)
class PageCall(Generic[T]):
    """A list: GET `path` with `params`, then again with `cursor=next_cursor` until none."""

    path: str
    item: Callable[[Any], T]
    params: Mapping[str, Any] = field(default_factory=dict)


def query(**params: Any) -> dict[str, Any]:
    """Query parameters without the Nones; booleans as `true`/`false`; lists repeated."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            if value:
                out[name] = list(value)
        else:
            out[name] = value
    return out


def body(**fields: Any) -> dict[str, Any]:
    """A JSON body without the fields left at None (the server's defaults apply)."""
    return {name: value for name, value in fields.items() if value is not None}


def data_of(answer: Any) -> Any:
    return answer["data"] if isinstance(answer, dict) and "data" in answer else answer


def decode_answer(response: httpx.Response) -> Any:
    """The JSON of a successful answer (None for an empty one), or raise its ApiError."""
    if response.status_code >= 400:
        raise error_of(response)
    if not response.content:
        return None
    return response.json()


def error_of(response: httpx.Response) -> ApiError:
    try:
        payload = response.json()
    except ValueError:
        payload = {"title": response.reason_phrase, "detail": response.text[:200]}
    return error_for(
        response.status_code,
        payload,
        request_id=response.headers.get("x-request-id"),
        retry_after=retry_after_seconds(response.headers.get("retry-after")),
    )


class Attempts:
    """The retry loop's bookkeeping for one call (shared by the sync and async drivers)."""

    def __init__(self, policy: RetryPolicy, method: str, rng: random.Random) -> None:
        self.policy = policy
        self.method = method
        self.rng = rng
        self.number = 0
        self.deadline = time.monotonic() + policy.budget

    def next_delay_after_error(self, exc: Exception) -> float | None:
        """Seconds to wait before trying again after `exc`, or None to give up."""
        if isinstance(exc, ApiError):
            if exc.status not in _RETRY_STATUSES:
                return None
            retry_after = exc.retry_after
        elif isinstance(exc, httpx.TransportError):
            if self.method not in _REPLAYABLE and not isinstance(
                exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
            ):
                return None
            retry_after = None
        else:
            return None
        if self.number >= self.policy.attempts:
            return None
        delay = self.policy.delay(self.number, retry_after, self.rng)
        if time.monotonic() + delay > self.deadline:
            return None
        return delay


class Credentials:
    """The credential to send: an API key as it is, or an access token obtained with a
    username and password and refreshed before it expires (at 80 % of its life, or 30 s
    before its end, whichever comes first)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.token: Token | None = None
        self._expires_at = 0.0
        self._refresh_at = 0.0

    @property
    def uses_password(self) -> bool:
        return self.config.username is not None

    def header(self) -> dict[str, str]:
        headers = {}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        elif self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.access_token}"
        if self.config.act_as:
            headers["X-Tenant"] = self.config.act_as
        return headers

    def needs_token(self) -> bool:
        return self.uses_password and (self.token is None or time.monotonic() >= self._refresh_at)

    def token_call(self) -> Call[Token]:
        """Refresh when a refresh token is held and the access token is still alive; log in
        with the password otherwise."""
        config = self.config
        if (
            self.token is not None
            and self.token.refresh_token
            and time.monotonic() < (self._expires_at)
        ):
            grant = {"grant_type": "refresh_token", "refresh_token": self.token.refresh_token}
        else:
            grant = body(
                grant_type="password",
                username=config.username,
                password=config.password,
                tenant=config.tenant,
            )
        return Call("POST", "/api/v1/auth/token", _token, json=grant, authenticated=False)

    def login_call(self) -> Call[Token]:
        self.token = None
        return self.token_call()

    def accept(self, token: Token) -> None:
        now = time.monotonic()
        life = max(1, token.expires_in)
        self.token = token
        self._expires_at = now + life
        self._refresh_at = now + min(life * 0.8, max(0.0, life - 30.0))

    def forget(self) -> None:
        self.token = None


def _token(answer: Any) -> Token:
    return Token.from_json(answer)


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def request_headers(call: Call[Any], credentials: Credentials, key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if call.authenticated:
        headers.update(credentials.header())
    if key is not None:
        headers[IDEMPOTENCY_HEADER] = key
    if call.headers:
        headers.update(call.headers)
    return headers


# --- Server-Sent Events ------------------------------------------------------------------


@dataclass
class SseEvent:
    id: str | None = None
    event: str = "message"
    data: list[str] = field(default_factory=list)


def sse_events(lines: Iterable[str], parser: SseParser) -> Iterable[SseEvent]:
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


class SseParser:
    """The text/event-stream format, line by line (WHATWG HTML, "Server-sent events")."""

    def __init__(self) -> None:
        self._current = SseEvent()

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            done, self._current = self._current, SseEvent()
            return done if done.data else None
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._current.data.append(value)
        elif name == "id":
            self._current.id = value
        elif name == "event":
            self._current.event = value
        return None
