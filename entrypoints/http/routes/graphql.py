"""GraphQL over HTTP: `POST /api/v1/graphql` (and `/api/v1/graphql/query`, EPR's path),
and the GraphiQL page (`GET /api/v1/graphql`) with its assets, served from this
package (no CDN: the page works offline).

The POST route is authenticated, rate limited and bounded like every API route;
it declares no permission of its own (`auth.FIELD_PERMISSIONS`): each field asks
for the one its REST twin asks (entrypoints/http/gql/resolvers.py). The page and
its assets are public: they hold no data, and the page asks for a credential.
"""

from __future__ import annotations

import gzip
import pathlib
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.types import ExceptionHandlersMap, Scope

from entrypoints.http.auth import (
    FIELD_PERMISSIONS,
    PUBLIC,
    authenticated,
    request_context,
    services_of,
)
from entrypoints.http.common import API, problems
from entrypoints.http.gql.context import Context
from entrypoints.http.gql.execution import Endpoint
from entrypoints.http.problems import EXCEPTION_HANDLERS as APP_HANDLERS
from entrypoints.http.problems import UNAVAILABLE_RETRY_AFTER, UNAVAILABLE_TYPE

__all__ = ["ASSETS", "EXCEPTION_HANDLERS", "PATH", "graphiql_handlers", "post_handler"]

PATH: Final = f"{API}/graphql"
ASSETS: Final = f"{PATH}/assets"
JSON: Final = "application/json"
_DIR: Final = pathlib.Path(__file__).resolve().parents[1] / "gql" / "graphiql"
#: The page's scripts and styles: its own files, inline styles (GraphiQL sets them),
#: fonts and images inlined as data: URLs, requests to this server only.
GRAPHIQL_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_MEDIA: Final = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_SCRIPTS: Final = (
    "react-18.3.1.production.min.js",
    "react-dom-18.3.1.production.min.js",
    "graphiql-3.8.3.min.js",
)
_STYLES: Final = ("graphiql-3.8.3.min.css",)
_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Waypost GraphQL</title>
{styles}
{scripts}
<script src="{assets}/start.js" data-endpoint="{endpoint}" defer></script>
</head>
<body><div id="graphiql">Loading GraphiQL...</div></body>
</html>
"""


def post_handler(
    endpoint: Endpoint, paths: Sequence[str], *, lenient: bool, summary: str
) -> HTTPRouteHandler:
    """The POST route at `paths` (relative to its router). `lenient`: EPR's clients' path,
    where unknown input fields in the variables are ignored (see gql.execution)."""

    @post(
        list(paths),
        opt=FIELD_PERMISSIONS,
        status_code=200,
        summary=summary,
        description='A GraphQL request: `{"query", "operationName"?, "variables"?}`. '
        'The answer is `{"data", "errors"?}` with 200, also when a field is refused '
        "(each error says why in `extensions.code`); a body that is no GraphQL request is "
        "a 400; 503 with `Retry-After` when the database could not serve a field. Each field "
        "needs the permission of its REST twin.",
        responses={
            400: ResponseSpec(
                dict[str, Any], description="Not a GraphQL request.", generate_examples=False
            ),
            **problems(401, 403, 413),
        },
        tags=["graphql"],
        # Described by its own schema (introspection, GraphiQL, docs/reference/graphql.md).
        include_in_schema=False,
        name=f"graphql{'-epr' if lenient else ''}-{paths[0]}",
    )
    async def graphql(request: Request[Any, Any, Any], scope: Scope) -> Response[bytes]:
        services = services_of(scope)
        access = authenticated(scope)
        body = await request.body()
        status, answer = await endpoint.run(
            body,
            lambda: Context(services, access, request_context(scope), scope),
            lenient=lenient,
        )
        headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)} if status == 503 else None
        return Response(
            msgspec.json.encode(answer), status_code=status, media_type=JSON, headers=headers
        )

    return graphql


def graphiql_handlers(page_path: str, endpoint_path: str) -> list[HTTPRouteHandler]:
    """The GraphiQL page at `page_path`, sending its requests to `endpoint_path`, and the
    assets (once, under `ASSETS`)."""
    page = _PAGE.format(
        styles="\n".join(f'<link rel="stylesheet" href="{ASSETS}/{n}">' for n in _STYLES),
        scripts="\n".join(f'<script src="{ASSETS}/{n}" defer></script>' for n in _SCRIPTS),
        assets=ASSETS,
        endpoint=endpoint_path,
    )

    @get(
        page_path,
        opt=PUBLIC,
        include_in_schema=False,
        name=f"graphiql-{page_path}",
    )
    async def graphiql() -> Response[str]:
        return Response(
            page,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": GRAPHIQL_CSP, "Cache-Control": "no-cache"},
        )

    return [graphiql]


# --- refusals before GraphQL runs (credential, rate limit, body size), in GraphQL's shape ---------

_HTTP_CODES: Final = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    405: "BAD_REQUEST",
    409: "CONFLICT",
    413: "TOO_LARGE",
    422: "INVALID",
    429: "RATE_LIMITED",
    503: "OVERLOADED",
}


def _graphql_shaped(answer: Response[bytes]) -> Response[bytes]:
    """A problem document answered by the app's handlers, as `{"errors": [...]}` with the
    same status and headers: GraphQL clients read errors there."""
    content = answer.content
    problem: dict[str, Any] = msgspec.json.decode(content) if isinstance(content, bytes) else {}
    status = answer.status_code or 500
    code = _HTTP_CODES.get(status, "INTERNAL")
    if problem.get("type") == UNAVAILABLE_TYPE:  # the database, not this server's load
        code = "UNAVAILABLE"
    extensions: dict[str, Any] = {"code": code}
    if problem.get("error_id"):
        extensions["error_id"] = problem["error_id"]
    if problem.get("errors"):
        extensions["errors"] = problem["errors"]
    body = {"errors": [{"message": problem.get("detail", ""), "extensions": extensions}]}
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}
    return Response(msgspec.json.encode(body), status_code=status, media_type=JSON, headers=headers)


def _reshaped(handler: Callable[[Request[Any, Any, Any], Any], Response[bytes]]) -> Any:
    def reshape(request: Request[Any, Any, Any], exc: Any) -> Response[bytes]:
        return _graphql_shaped(handler(request, exc))

    return reshape


#: The GraphQL router's exception handlers: the app's (the one place that decides status
#: and headers), their bodies in GraphQL's shape.
EXCEPTION_HANDLERS: Final[ExceptionHandlersMap] = {
    cls: _reshaped(handler) for cls, handler in APP_HANDLERS.items()
}


@cache
def _asset(name: str) -> tuple[bytes, bool]:
    """(the file's bytes, whether they are gzipped); KeyError when there is no such asset."""
    known = {*_SCRIPTS, *_STYLES}
    if name == "start.js":
        return (_DIR / name).read_bytes(), False
    if name in known:
        return (_DIR / f"{name}.gz").read_bytes(), True
    raise KeyError(name)


@get(f"{ASSETS}/{{name:str}}", opt=PUBLIC, include_in_schema=False)
async def graphiql_asset(name: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        content, zipped = _asset(name)
    except KeyError:
        raise NotFoundException() from None
    headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
    if zipped:
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
        else:
            content = gzip.decompress(content)
    media = _MEDIA[pathlib.PurePath(name).suffix]
    return Response(content, media_type=media, headers=headers)
