"""`/docs` works on a closed network: the page and every asset it loads come from the
gateway itself (no CDN), with the right content types and a same-origin CSP."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urljoin, urlsplit

import pytest
import uvicorn
from fastapi.testclient import TestClient

from secumail.api.server import create_app
from tests.harness import free_port

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


def test_swagger_ui_renders_in_a_browser_cut_off_from_the_internet(tmp_path: Path) -> None:
    """Headless Chromium, every host but loopback unresolvable (a closed network), the
    page's CSP enforced: Swagger UI still draws the operations from /openapi.json."""
    assert shutil.which("chromium"), "`make test` installs chromium (scripts/ensure-system-deps)"
    ctx = SimpleNamespace(
        settings=SimpleNamespace(submission=SimpleNamespace(max_message_size=1 << 20))
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the API did not start"
            time.sleep(0.05)
        browser = subprocess.run(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                f"--user-data-dir={tmp_path}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--virtual-time-budget=15000", "--dump-dom",
                f"http://127.0.0.1:{port}/docs",
            ],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        server.should_exit = True
        thread.join(10)
    dom = browser.stdout
    assert 'data-path="/v1/messages"' in dom, (browser.returncode, browser.stderr[-2000:])
    assert "Secumail API" in dom
