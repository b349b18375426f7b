"""`/docs` works on a closed network: the page and every asset it loads come from the
gateway itself (no CDN), with the right content types and a same-origin CSP."""

from __future__ import annotations

import re
from types import SimpleNamespace
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from secumail.api.server import create_app

BASE = "https://gateway.test:8443"


@pytest.fixture(scope="module")
def client() -> TestClient:
    ctx = SimpleNamespace(
        settings=SimpleNamespace(submission=SimpleNamespace(max_message_size=1 << 20))
    )
    return TestClient(create_app(ctx), base_url=BASE)  # type: ignore[arg-type]


def referenced_urls(html: str) -> list[str]:
    """Every URL the page makes a browser load: src/href attributes and the spec url."""
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    urls += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", html)
    return urls


def test_docs_page_references_only_its_own_origin(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = referenced_urls(r.text)
    assert len(urls) >= 4, urls  # style sheet, icon, script, schema
    for url in urls:
        absolute = urljoin(BASE + "/docs", url)
        assert urlsplit(absolute).netloc == "gateway.test:8443", url
    assert "cdn" not in r.text.lower() and "//" not in "".join(urls)


def test_docs_assets_answer_with_their_content_types(client: TestClient) -> None:
    html = client.get("/docs").text
    wanted = {
        ".js": "text/javascript",
        ".css": "text/css",
        ".png": "image/png",
        ".json": "application/json",
    }
    for url in referenced_urls(html):
        r = client.get(url)
        assert r.status_code == 200, url
        kind = wanted[url[url.rindex(".") :]]
        assert r.headers["content-type"].split(";")[0] == kind, (url, r.headers["content-type"])
        assert len(r.content) > 100, url
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text[:2000]
    assert bundle.headers["x-content-type-options"] == "nosniff"


def test_only_the_known_assets_are_served(client: TestClient) -> None:
    for name in ("redoc.standalone.js", "..%2F__init__.py", "core.py", "%2Fetc%2Fpasswd"):
        r = client.get(f"/docs/assets/{name}")
        assert r.status_code == 404, name
        assert r.headers["content-type"].startswith("application/problem+json")


def test_docs_csp_allows_this_origin_only(client: TestClient) -> None:
    r = client.get("/docs")
    directives = [d.strip().partition(" ") for d in r.headers["content-security-policy"].split(";")]
    policy = {name: value for name, _, value in directives}
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    sources = policy["script-src"].split()
    assert sources[0] == "'self'" and "'unsafe-inline'" not in sources
    # the inline start-up script is allowed by its hash, and only it
    assert len(sources) == 2 and sources[1].startswith("'sha256-")
    for directive, value in policy.items():
        assert "http" not in value and "*" not in value, (directive, value)
    assert r.headers["x-frame-options"] == "DENY"
