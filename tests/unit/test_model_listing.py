"""`/v1/models` names what each model serves without a path on the server's disk: a chat key
sees version labels where it once saw where the adapter's files live."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from server.model_catalog import shown_root
from tests.unit.gateway_app import CHAT_ONLY_KEY, TEST_API_KEY, build_test_app, gateway_client
from tests.unit.test_adapter_registry import make_adapter


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models-home")


@pytest.fixture(scope="module")
def app(home: Path) -> Iterator[FastAPI]:
    app = build_test_app(home)
    yield app
    app.state.document_service.retriever.close()


def test_no_card_shows_a_server_path(app: FastAPI, home: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "lora")
    files = [("files", (p.name, p.read_bytes())) for p in sorted(adapter.iterdir())]
    ops = gateway_client(app, TEST_API_KEY)
    for _ in range(2):
        reply = ops.post("/v1/adapters/upload", files=files, data={"name": "helper"})
        assert reply.status_code == 201, reply.text
    registry = app.state.adapter_service.registry
    registry.promote("helper", "v2", "prod", actor="test", force=True)
    assert str(registry.root).startswith(str(home))  # so the home's path is what would leak

    chat = gateway_client(app, CHAT_ONLY_KEY)
    listing = chat.get("/v1/models")
    assert listing.status_code == 200
    cards = {card["id"]: card for card in listing.json()["data"]}
    assert {k: (c["root"], c["parent"]) for k, c in cards.items() if k != "gemma"} == {
        "helper@v1": ("helper@v1", "gemma"),
        "helper@v2": ("helper@v2", "gemma"),
        "helper@prod": ("helper@v2", "gemma"),
        "helper": ("helper@v2", "gemma"),
    }
    assert cards["gemma"]["root"] == "gemma-3-270m"
    assert chat.get("/v1/models/helper@v1").json()["root"] == "helper@v1"
    for text in (listing.text, chat.get("/v1/models/helper@v1").text):
        assert str(home) not in text and str(registry.root) not in text


@pytest.mark.parametrize(
    ("root", "shown"),
    [
        ("gemma-3-270m", "gemma-3-270m"),
        ("google/gemma-3-270m", "google/gemma-3-270m"),  # a hub id is no path
        ("/srv/models/gemma-4-E4B-it", "gemma-4-E4B-it"),
        ("/srv/models/gemma-4-E4B-it/", "gemma-4-E4B-it"),
        ("./models/gemma", "gemma"),
        ("~/.cache/ragdock/models/gemma-3-270m", "gemma-3-270m"),
    ],
)
def test_a_base_given_as_a_path_shows_its_name_only(root: str, shown: str) -> None:
    assert shown_root(root) == shown
