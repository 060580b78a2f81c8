"""No password of a URL reaches the settings banner, a log line or an engine error's message."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from ragdock.redact import MaskingFormatter, mask_credentials
from ragdock.settings import Settings
from server.engine_client import EngineClient
from server.errors import EngineUnavailableError

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"postgresql+psycopg://ragdock:{SECRET}@db:5432/ragdock",
         "postgresql+psycopg://ragdock:****@db:5432/ragdock"),
        (f"https://{SECRET}@qdrant.internal:6333", "https://****@qdrant.internal:6333"),
        (f"http://user:{SECRET}@gpu:8000/v1 and http://other:{SECRET}@x/",
         "http://user:****@gpu:8000/v1 and http://other:****@x/"),
        (f"postgresql://u:p@ss{SECRET}@db/x", "postgresql://u:****@db/x"),  # '@' in the secret
        (f"postgresql://db/x?user=u&password={SECRET}&sslmode=require",
         "postgresql://db/x?user=u&password=****&sslmode=require"),
        (f"https://q:6333/?api_key={SECRET}", "https://q:6333/?api_key=****"),
        # Nothing to mask: left exactly as it was.
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
        ("sqlite:////home/me/.cache/ragdock/data/control.sqlite",
         "sqlite:////home/me/.cache/ragdock/data/control.sqlite"),
        ("mail bob@example.com about http://gpu:8000/x?y=a@b",
         "mail bob@example.com about http://gpu:8000/x?y=a@b"),
    ],
)  # fmt: skip
def test_mask_credentials(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


def test_the_settings_banner_shows_urls_without_their_passwords() -> None:
    settings = Settings.load(
        None,
        database_url=f"postgresql+psycopg://ragdock:{SECRET}@db:5432/ragdock",
        engine_url=f"http://vllm:{SECRET}@gpu:8000",
        qdrant_url=f"https://admin:{SECRET}@qdrant:6333",
    )
    banner = "\n".join(settings.describe())
    assert SECRET not in banner
    assert "database_url = postgresql+psycopg://ragdock:****@db:5432/ragdock" in banner
    assert "engine_url = http://vllm:****@gpu:8000" in banner
    assert "qdrant_url = https://admin:****@qdrant:6333" in banner


def test_log_lines_and_their_tracebacks_are_masked() -> None:
    formatter = MaskingFormatter("%(levelname)s %(message)s")
    url = f"postgresql://ragdock:{SECRET}@db/ragdock"
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError as exc:
        record = logging.LogRecord(
            "ragdock", logging.WARNING, __file__, 1, "opening %s", (url,), (type(exc), exc, None)
        )
    line = formatter.format(record)
    assert SECRET not in line
    assert "opening postgresql://ragdock:****@db/ragdock" in line
    assert "cannot reach postgresql://ragdock:****@db/ragdock" in line


def test_an_unreachable_engine_is_reported_without_its_password() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    engine = EngineClient(
        f"http://vllm:{SECRET}@gpu:8000", connect_timeout_s=1, read_timeout_s=1,
        max_connections=1, retry_after_s=1, transport=httpx.MockTransport(refuse),
    )  # fmt: skip

    async def ask() -> str:
        try:
            await engine.get_json("/v1/models", timeout_s=1)
        except EngineUnavailableError as exc:
            return exc.message
        finally:
            await engine.aclose()
        raise AssertionError("the engine answered")

    message = asyncio.run(ask())
    assert SECRET not in message and "http://vllm:****@gpu:8000" in message
