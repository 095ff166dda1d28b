"""The interactive API description at `/schema`, from this process alone (no CDN).

Swagger UI (swagger-ui-dist, vendored with its licence in `apidocs_static/`) is
served from `/schema/assets/...` with a small start-up script of our own, so the
page works on a network without internet access and its CSP needs neither another
host nor `'unsafe-inline'`. Its weight: about 1.9 MB of JavaScript and CSS, 0.5 MB
gzipped (served gzipped to clients that accept it), cached for a year by hash.
"""

from __future__ import annotations

import html
import pathlib
from typing import Any, Final

from litestar import Request, Router
from litestar.openapi.plugins import OpenAPIRenderPlugin

from entrypoints.http.assets import Assets

__all__ = ["ASSETS", "DOCS_PATH", "LocalSwaggerPlugin"]

DOCS_PATH: Final = "/schema"
ASSETS = Assets(
    f"{DOCS_PATH}/assets",
    pathlib.Path(__file__).parent / "apidocs_static",
    [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-init.js",
        "swagger-ui-LICENSE.txt",
        "swagger-ui-NOTICE.txt",
        "swagger-ui-bundle.js.LICENSE.txt",
    ],
)


class LocalSwaggerPlugin(OpenAPIRenderPlugin):
    """Swagger UI over `/schema/openapi.json`, every asset from this server."""

    def __init__(self, path: str = "/") -> None:
        super().__init__(path=path, favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(str(openapi_schema["info"]["title"]))
        spec = html.escape(self.get_openapi_json_route(request))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API</title>
<link rel="stylesheet" href="{ASSETS.url("swagger-ui.css")}">
</head>
<body>
<main id="swagger-ui" data-spec="{spec}"></main>
<script src="{ASSETS.url("swagger-ui-bundle.js")}"></script>
<script src="{ASSETS.url("swagger-init.js")}"></script>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        router.register(ASSETS.handler("api_docs_assets", mount=DOCS_PATH))
