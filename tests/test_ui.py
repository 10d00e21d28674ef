"""The status page's routes over real HTTP, without a browser: the security headers on every
answer, the redirect, 404 and 405, the files served as they are in the package, and what the
files themselves may not contain (inline script or style, handlers, outside origins, HTML
parsing of values). tests/test_ui_browser.py runs the page itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from yarl import URL

import service

from .conftest import Server

UI = Path(service.__file__).resolve().parent / "ui"
# Written out here rather than imported, so a change in service/ui.py must show up here.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
FILES = {
    "/ui/": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/style.css": ("style.css", "text/css; charset=utf-8"),
}
UNKNOWN = ["/ui/index.html", "/ui/nope", "/ui/app.js/x", "/ui/ui.py", "/ui/%2e%2e/ui.py"]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The page's routes never touch the store: SQLite alone."""
    return f"sqlite:///{tmp_path}/template-sync.db"


async def get(server: Server, path: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    url = URL(server.base_url + path, encoded=True)  # as written: no ".." folded away
    async with server.session.request(method, url, allow_redirects=False) as response:
        return response.status, await response.read(), dict(response.headers)


def assert_secured(headers: dict[str, str]) -> None:
    assert {name: headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS


@pytest.mark.parametrize("path", list(FILES))
async def test_each_file_is_served_as_in_the_package_with_the_headers(
    server: Server, path: str
) -> None:
    name, media_type = FILES[path]
    status, body, headers = await get(server, path)
    assert (status, headers["Content-Type"]) == (200, media_type)
    assert body == (UI / name).read_bytes()
    assert_secured(headers)
    status, body, headers = await get(server, path, "HEAD")
    assert (status, body) == (200, b"")
    assert_secured(headers)


async def test_ui_without_the_slash_redirects_and_keeps_the_query(server: Server) -> None:
    for path, location in [("/ui", "ui/"), ("/ui?x=1", "ui/?x=1")]:
        status, _, headers = await get(server, path)
        assert (status, headers["Location"]) == (308, location)
        assert_secured(headers)
    async with server.session.get(server.base_url + "/ui") as followed:
        assert (followed.status, str(followed.url)) == (200, server.base_url + "/ui/")


@pytest.mark.parametrize("path", UNKNOWN)
async def test_other_paths_under_ui_are_404_with_the_headers(server: Server, path: str) -> None:
    status, body, headers = await get(server, path)
    assert (status, body) == (404, b"Not found")
    assert_secured(headers)


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/app.js"])
async def test_other_methods_are_405_with_the_headers(server: Server, path: str) -> None:
    status, _, headers = await get(server, path, "POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert_secured(headers)


class Markup(HTMLParser):
    """What the page's HTML asks the browser to run or load."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def test_the_html_has_no_inline_script_style_or_handler() -> None:
    markup = Markup()
    markup.feed((UI / "index.html").read_text())
    scripts = [attrs for tag, attrs in markup.tags if tag == "script"]
    assert scripts == [{"src": "app.js", "defer": None}] and markup.script_text.strip() == ""
    assert "style" not in [tag for tag, _ in markup.tags]
    attributes = [name for _, attrs in markup.tags for name in attrs]
    assert "style" not in attributes
    assert not [name for name in attributes if name.startswith("on")]
    links = [attrs.get("src") or attrs.get("href") for _, attrs in markup.tags]
    links = [link for link in links if link is not None]
    assert sorted(links) == ["app.js", "data:,", "style.css"]  # the page's own files only


def test_nothing_refers_to_an_outside_origin() -> None:
    for name in ("index.html", "app.js", "style.css"):
        text = (UI / name).read_text()
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), name
        assert "@import" not in text and "url(" not in text, name


def test_the_script_never_parses_values_as_html() -> None:
    script = (UI / "app.js").read_text()
    sinks = ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
             "new Function", "createContextualFragment", "javascript:"]  # fmt: skip
    for sink in sinks:
        assert sink not in script, sink
    # The token leaves the tab only in an Authorization header: never in a URL or a log.
    assert "console." not in script and "localStorage" not in script
    assert re.findall(r"session\.token", script) and "?token" not in script
