"""The status page (design section 13): GET /ui/ serves one HTML page, its script and its
style sheet from package data (service/ui/), and nothing else.

The page holds a bearer token, so every answer here tells the browser to run and load only
these files (no inline script, no outside origin), never to sniff a type, never to send a
referrer, and never to show the page inside another site's frame. The files are read once,
when the app is built, and served as bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files that change with each release: revalidate rather than keep a stale page.
    "Cache-Control": "no-cache",
}
# The path under /ui/ -> (file in service/ui/, media type).
FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str


def load_assets() -> dict[str, Asset]:
    """The page's files, by their path under /ui/, read from the installed package."""
    folder = files(__package__ or "service").joinpath("ui")
    return {
        path: Asset(folder.joinpath(name).read_bytes(), media_type)
        for path, (name, media_type) in FILES.items()
    }


def routes() -> list[BaseRoute]:
    """GET /ui (a redirect: the page's relative links need the slash), /ui/ and its two
    files; any other path under /ui/ is 404 and any other method 405, with the same headers
    (the routes take every method, so the app's JSON 405 never answers for them)."""
    assets = load_assets()

    async def ui(request: Request) -> Response:
        asset = assets.get(request.path_params["path"])
        if asset is None:
            return PlainTextResponse("Not found", status_code=404, headers=HEADERS)
        return Response(asset.body, media_type=asset.media_type, headers=HEADERS)

    async def ui_redirect(request: Request) -> Response:
        # Relative to /ui, so it holds behind a proxy that mounts the service under a path;
        # the browser keeps the #fragment (workspace and token) across the redirect.
        query = request.url.query
        return RedirectResponse("ui/" + (f"?{query}" if query else ""), 308, HEADERS)

    return [Route("/ui", EveryMethod(ui_redirect)), Route("/ui/{path:path}", EveryMethod(ui))]


class EveryMethod:
    """A GET endpoint as an ASGI app: Starlette's Route hands an ASGI app every method, so
    this answers the others' 405 itself, with the page's headers (for a plain function,
    Route would answer them with the app's JSON 405, without these headers)."""

    def __init__(self, handle: Callable[[Request], Awaitable[Response]]) -> None:
        self.handle = handle
        self.__name__ = handle.__name__  # the `route` label of the latency metric

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in ("GET", "HEAD"):
            response = await self.handle(Request(scope, receive))
        else:
            headers = {**HEADERS, "Allow": "GET, HEAD"}
            response = PlainTextResponse("Method not allowed", status_code=405, headers=headers)
        await response(scope, receive, send)
