"""A Redis stream per tenant, holding its messages: the `MessageSink` port over Redis.

Each tenant's messages go to the stream `waypost:<tenant slug>:messages`, one entry
per message, in log order. The entry id is `<log position>-0`, so:
- Redis itself refuses an entry at or below the stream's last id: publishing a
  message twice adds it once, whoever publishes (two servers, a restart);
- the stream's last id is where publishing goes on (`last_position`), even after
  old entries were trimmed: nothing else is stored anywhere;
- consumers read with `XREAD` (or consumer groups) from any id: the log position.

Fields: `type` (the CloudEvent's type, to filter on) and `cloudevent` (the message in
structured JSON, `application/cloudevents+json`). Streams are capped at about
`max_length` entries (`MAXLEN ~`): consumers that fall further behind than that
lose the oldest, as with any capped stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio as redis
from redis.exceptions import ResponseError

from core.domain.messages import Positioned, encode_message

__all__ = ["RedisStreams", "stream_key"]

PREFIX: Final = "waypost"
_NO_KEY: Final = "no such key"
_NOT_AFTER: Final = "equal or smaller than the target stream top item"


def stream_key(tenant_slug: str) -> str:
    return f"{PREFIX}:{tenant_slug}:messages"


class RedisStreams:
    """The message sink over one Redis server (`redis://`, `rediss://` or `unix://` URL)."""

    def __init__(self, client: redis.Redis, max_length: int) -> None:
        self._client = client
        self.max_length = max_length

    @classmethod
    def from_url(cls, url: str, max_length: int) -> RedisStreams:
        """Connects lazily: a Redis that is down at start is retried by the publisher."""
        return cls(redis.Redis.from_url(url), max_length)

    async def last_position(self, tenant_slug: str) -> int:
        try:
            info: dict[Any, Any] = await self._client.xinfo_stream(stream_key(tenant_slug))
        except ResponseError as exc:
            if _NO_KEY in str(exc).lower():
                return 0
            raise
        last = info["last-generated-id"]
        text = last.decode() if isinstance(last, bytes) else str(last)
        return int(text.split("-", 1)[0])

    async def publish(self, tenant_slug: str, messages: Sequence[Positioned]) -> None:
        if not messages:
            return
        key = stream_key(tenant_slug)
        pipe = self._client.pipeline(transaction=False)
        for item in messages:
            pipe.xadd(
                key,
                {"type": item.message.type, "cloudevent": encode_message(item.message)},
                id=f"{item.position}-0",
                maxlen=self.max_length,
                approximate=True,
            )
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, ResponseError) and _NOT_AFTER in str(result):
                continue  # there already: another publisher (or this one, before) added it
            if isinstance(result, Exception):
                raise result

    async def close(self) -> None:
        await self._client.aclose()
