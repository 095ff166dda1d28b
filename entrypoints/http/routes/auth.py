"""The token endpoint, revocation and the public keys: the routes that need no bearer token.

`POST /api/v1/auth/token` and `POST /api/v1/auth/revoke` take their credential in
the body (form-encoded, as OAuth 2.0 clients send it, or JSON); their answers are
never cached and never replayed for an Idempotency-Key (they carry credentials).
`GET /.well-known/jwks.json` is public.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import Scope

from core.domain.commands import RevokeToken, TokenRequest
from core.domain.errors import FieldError
from core.usecases import TokenAnswer
from entrypoints.http.auth import PUBLIC, request_context, services_of
from entrypoints.http.bodies import decode, shape_error
from entrypoints.http.common import API, problems
from entrypoints.http.openapi import RevokeOperation, TokenOperation
from entrypoints.http.problems import BadRequest

PATH = f"{API}/auth"
JWKS_PATH = "/.well-known/jwks.json"
MAX_FORM_FIELDS: Final = 20
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
JWKS_MAX_AGE: Final = 300

C = TypeVar("C")
_token_decoder = msgspec.json.Decoder(TokenRequest)
_revoke_decoder = msgspec.json.Decoder(RevokeToken)

_FORM_OR_JSON = (
    "Form-encoded (`application/x-www-form-urlencoded`, as OAuth 2.0 clients send it) "
    "or JSON, with the same fields."
)


class JwkSet(msgspec.Struct):
    keys: list[dict[str, str]]


async def _command(
    request: Request[Any, Any, Any], decoder: msgspec.json.Decoder[C], kind: type[C]
) -> C:
    body = await request.body()
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return decode(decoder, body)
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(
            "The form is malformed.", [FieldError("", "not application/x-www-form-urlencoded")]
        ) from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise BadRequest("The form is malformed.", [FieldError(name, "is given twice")])
        fields[name] = value
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        raise shape_error(exc) from None


@post(
    "/token",
    opt=PUBLIC,
    summary="Get an access token",
    description="`grant_type=password` (`username`, `password`, and `tenant`: the slug of "
    "the user's tenant, left out by platform administrators), `api_key` (`api_key`) or "
    "`refresh_token` (`refresh_token`: each is used once and answered with a new one; "
    f"one used again revokes its whole family). {_FORM_OR_JSON}",
    status_code=200,
    responses=problems(400, 401, 413, 422),
    operation_class=TokenOperation,
)
async def token(*, request: Request[Any, Any, Any]) -> Response[TokenAnswer]:
    services = services_of(request.scope)
    ctx = request_context(request.scope)
    grant = await _command(request, _token_decoder, TokenRequest)
    answer = await services.identity.grant(grant, ctx)
    return Response(answer, status_code=200, headers=NO_STORE)


@post(
    "/revoke",
    opt=PUBLIC,
    summary="Revoke a token",
    description="An access token (by its id, until it expires), a refresh token (its whole "
    "family) or an API key. Whoever holds a token may revoke it; an unknown or invalid "
    f"token is answered the same (RFC 7009). {_FORM_OR_JSON}",
    status_code=200,
    responses={200: ResponseSpec(None, description="Revoked (or nothing to revoke).")}
    | problems(400, 413),
    operation_class=RevokeOperation,
)
async def revoke(*, request: Request[Any, Any, Any]) -> Response[None]:
    services = services_of(request.scope)
    ctx = request_context(request.scope)
    command = await _command(request, _revoke_decoder, RevokeToken)
    await services.identity.revoke(command.token, ctx)
    return Response(None, status_code=200, headers=NO_STORE)


@get(
    JWKS_PATH,
    opt=PUBLIC,
    summary="The public keys that verify access tokens",
    description="The signing key, the keys still verifying after a rotation, and the keys "
    "about to sign (RFC 7517). Refetch when a token names a `kid` not in the set.",
    tags=["identity"],
)
async def jwks(*, scope: Scope) -> Response[JwkSet]:
    services = services_of(scope)
    found = services.identity.jwks()
    return Response(
        JwkSet(keys=found["keys"]),
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"},
    )


HANDLERS = [token, revoke]
PUBLIC_HANDLERS = [jwks]
