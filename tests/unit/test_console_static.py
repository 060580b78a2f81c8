"""The console as files: served by the gateway itself with a strict policy, nothing from another
origin, no markup built from strings, and every module the page imports present."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.routing import APIRoute
from starlette.testclient import TestClient

from server.console import STATIC_DIR
from tests.unit.gateway_app import build_test_app

SOURCES = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())
SCRIPTS = [p for p in SOURCES if p.suffix == ".js"]


def test_the_console_is_served_with_a_strict_content_security_policy(tmp_path: Path) -> None:
    with TestClient(build_test_app(tmp_path)) as client:
        redirect = client.get("/console", follow_redirects=False)
        assert redirect.status_code == 307 and redirect.headers["location"] == "/console/"
        page = client.get("/console/")  # no key: the page holds no data, the API does
        assert page.status_code == 200 and "<title>ragdock console</title>" in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        for script in SCRIPTS:
            served = client.get(f"/console/{script.relative_to(STATIC_DIR).as_posix()}")
            assert served.status_code == 200, script
            assert "javascript" in served.headers["content-type"]
        assert client.get("/console/../server/app.py").status_code == 404


def test_the_console_can_be_turned_off(tmp_path: Path) -> None:
    with TestClient(build_test_app(tmp_path, console=False)) as client:
        assert client.get("/console/").status_code == 404


def test_the_console_adds_no_api_route(tmp_path: Path) -> None:
    # It calls the public API only: nothing under /v1 comes with it.
    app = build_test_app(tmp_path)
    console_routes = [r for r in app.routes if isinstance(r, APIRoute) and "console" in r.path]
    assert [r.path for r in console_routes] == ["/console"]  # the redirect


def test_nothing_is_loaded_from_another_origin_or_inlined() -> None:
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), path
        assert "@import" not in text and "url(http" not in text, path
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in html and " style=" not in html and " on" + "click=" not in html


def test_stored_text_never_becomes_markup() -> None:
    # Document titles, chunk text, adapter names and reports are caller data: the scripts put
    # them on the page as text nodes only.
    for script in SCRIPTS:
        text = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, (script.name, sink)


def test_every_imported_module_ships() -> None:
    for script in SCRIPTS:
        for target in re.findall(r"from \"(\./[^\"]+)\"", script.read_text(encoding="utf-8")):
            assert (script.parent / target).is_file(), (script.name, target)
