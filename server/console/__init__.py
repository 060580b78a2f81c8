"""The web console: static files (HTML, CSS, ES modules) the gateway serves at `/console`.

Nothing here is an API: the page calls the same public `/v1/` routes as any client, with the key
its user types in, so it can show or do nothing that key could not do with curl. There is no build
step and no CDN; every file ships in the package and works offline.

The pages render what callers stored (document titles and text, adapter names, eval reports) as
text only, never as markup, and the strict Content-Security-Policy below backs that up: the page
may load scripts and styles from this origin alone, so an injected tag could run nothing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"
MOUNT_PATH = "/console"

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # The page holds an API key in its session: never cache it in shared proxies, and revalidate
    # so an upgraded gateway serves its own console, not a stale copy.
    "cache-control": "no-cache",
}


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every response of the static app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_console(app: FastAPI) -> None:
    """Serve the console at `/console/` (and redirect `/console` there)."""

    @app.get(MOUNT_PATH, include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse(f"{MOUNT_PATH}/")

    app.mount(
        MOUNT_PATH,
        _SecurityHeaders(StaticFiles(directory=STATIC_DIR, html=True)),
        name="console",
    )
