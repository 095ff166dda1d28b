"""What the OpenAPI document says that Litestar cannot infer from a handler's signature.

- `Idempotency-Key`: every POST route that honours it (its handler takes the request's
  claim, `entrypoints.http.idempotency.guard`) declares the header
  (`IdempotentOperation`), so a client generated from the document sends it.
- The token and revocation endpoints read their body themselves (form-encoded, as
  OAuth 2.0 clients send it, or JSON): `TokenOperation` and `RevokeOperation` describe
  it in both media types, so "Try it out" on `/schema` can get a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

from core.usecases.identity import GRANT_TYPES

__all__ = [
    "IDEMPOTENCY_KEY",
    "IdempotentOperation",
    "RevokeOperation",
    "TokenOperation",
]

IDEMPOTENCY_KEY: Final = "Idempotency-Key"
_FORM: Final = "application/x-www-form-urlencoded"
_JSON: Final = "application/json"


def _idempotency_parameter() -> Parameter:
    return Parameter(
        name=IDEMPOTENCY_KEY,
        param_in="header",
        required=False,
        description="Up to 255 characters. The same key with the same body replays the first "
        "answer (`Idempotent-Replayed: true`); with another body 422; while the first is "
        "still running 409.",
        schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
    )


@dataclass
class IdempotentOperation(Operation):
    """An operation that accepts `Idempotency-Key`."""

    def __post_init__(self) -> None:
        params = list(self.parameters or [])
        if not any(isinstance(p, Parameter) and p.name == IDEMPOTENCY_KEY for p in params):
            params.append(_idempotency_parameter())
        self.parameters = params


def _text(description: str, *, enum: list[str] | None = None, secret: bool = False) -> Schema:
    return Schema(
        type=OpenAPIType.STRING,
        description=description,
        enum=list(enum) if enum else None,
        format="password" if secret else None,  # type: ignore[arg-type]
    )


def _body(schema: Schema) -> RequestBody:
    return RequestBody(
        required=True,
        description="Form-encoded or JSON, with the same fields.",
        content={_FORM: OpenAPIMediaType(schema=schema), _JSON: OpenAPIMediaType(schema=schema)},
    )


TOKEN_REQUEST: Final = Schema(
    type=OpenAPIType.OBJECT,
    title="TokenRequest",
    required=["grant_type"],
    properties={
        "grant_type": _text("What is exchanged for tokens.", enum=list(GRANT_TYPES)),
        "username": _text("`password` grant: the user's name."),
        "password": _text("`password` grant: the user's password.", secret=True),
        "tenant": _text(
            "`password` grant: the slug of the user's tenant (left out by platform administrators)."
        ),
        "api_key": _text("`api_key` grant: the key (`wp_<prefix>_<secret>`).", secret=True),
        "refresh_token": _text(
            "`refresh_token` grant: the refresh token (used once).", secret=True
        ),
        "scope": _text("Accepted and ignored (OAuth 2.0 clients send it)."),
        "client_id": _text("Accepted and ignored (OAuth 2.0 clients send it)."),
    },
)
REVOKE_REQUEST: Final = Schema(
    type=OpenAPIType.OBJECT,
    title="RevokeRequest",
    required=["token"],
    properties={
        "token": _text("An access token, a refresh token or an API key.", secret=True),
        "token_type_hint": _text("Accepted and ignored (RFC 7009)."),
    },
)


@dataclass
class TokenOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _body(TOKEN_REQUEST)


@dataclass
class RevokeOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _body(REVOKE_REQUEST)
