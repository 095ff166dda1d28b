"""Static files served by the process itself (the console's, the API page's): no other host.

Each file is read once per process, with its gzip form and a short content hash.
Pages link to `<prefix>/<hash>/<name>`: such a URL never changes meaning, so it is
cached for a year (`immutable`); a new release has new hashes. A URL with another
hash (a page from before an upgrade) still gets the current file, cached briefly.
A client that accepts gzip gets the gzip form (`Vary: Accept-Encoding`).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import pathlib
from collections.abc import Iterable
from typing import Final

import msgspec
from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

__all__ = ["Asset", "Assets"]

IMMUTABLE: Final = "public, max-age=31536000, immutable"
BRIEF: Final = "public, max-age=300"
_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    body: bytes
    gzipped: bytes
    media_type: str
    version: str


def _load(path: pathlib.Path) -> Asset:
    body = path.read_bytes()
    media_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    return Asset(
        name=path.name,
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        media_type=media_type or "application/octet-stream",
        version=hashlib.sha256(body).hexdigest()[:12],
    )


class Assets:
    """The files of one directory, served under `prefix` (only those named: nothing else)."""

    def __init__(self, prefix: str, directory: pathlib.Path, names: Iterable[str]) -> None:
        self.prefix = prefix.rstrip("/")
        self.files = {name: _load(directory / name) for name in names}

    def url(self, name: str) -> str:
        """Where a page links to `name` (a KeyError for a file that is not served)."""
        return f"{self.prefix}/{self.files[name].version}/{name}"

    def handler(self, name: str, *, mount: str = "") -> HTTPRouteHandler:
        """The public route that serves the files (no credential: they hold no data), for a
        router mounted at `mount` (a part of `prefix`)."""
        files = self.files
        assert self.prefix.startswith(mount), (self.prefix, mount)

        @get(
            f"{self.prefix[len(mount) :]}/{{version:str}}/{{file:str}}",
            include_in_schema=False,
            sync_to_thread=False,
            name=name,
        )
        def serve(version: FromPath[str], file: FromPath[str], request: Request) -> Response[bytes]:  # type: ignore[type-arg]
            asset = files.get(file)
            if asset is None:
                raise NotFoundException
            headers = {
                "Cache-Control": IMMUTABLE if version == asset.version else BRIEF,
                "ETag": f'"{asset.version}"',
                "Vary": "Accept-Encoding",
            }
            if request.headers.get("if-none-match") == f'"{asset.version}"':
                return Response(b"", status_code=304, headers=headers)
            accepts = request.headers.get("accept-encoding", "")
            if "gzip" in accepts.lower():
                headers["Content-Encoding"] = "gzip"
                return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
            return Response(asset.body, media_type=asset.media_type, headers=headers)

        return serve
