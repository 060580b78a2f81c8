"""A reader promoted while the gateway runs is the one that decides its next answers, with no
restart: the real gateway app (in process, no engine: `answer_mode: extract`) on `auto` with the
shipped reader, then a recalibrated copy pushed and promoted in the shared registry as
`ragdock readers` would."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from adapters.reader_registry import DEFAULT_READER
from server.app import open_control
from server.rag.reading import SHIPPED_READER
from server.reader_setup import open_reader_registry
from tests.unit.gateway_app import TEST_API_KEY, build_test_app, gateway_client

pytestmark = pytest.mark.embedder  # the real reader runs on the installed MiniLM weights

CHUNK = "The ragdock gateway listens on port 8000 by default."
QUESTION = "Which port does the gateway listen on?"


def ask(client: TestClient) -> dict[str, Any]:
    body = {
        "model": "gemma",
        "messages": [{"role": "user", "content": QUESTION}],
        "rag": {"collection": "kb", "answer_mode": "extract", "min_score": 0.0},
    }
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    grounding: dict[str, Any] = reply.json()["grounding"]
    return grounding


def test_a_reader_promoted_while_the_gateway_runs_decides_its_next_answers(
    tmp_path: Path,
) -> None:
    app = build_test_app(tmp_path / "home", reader="auto", reader_reload_s=0.2)
    shipped = json.loads((SHIPPED_READER / "manifest.json").read_text())["decision"]["threshold"]
    recalibrated = tmp_path / "recalibrated"
    shutil.copytree(SHIPPED_READER, recalibrated)
    manifest = json.loads((recalibrated / "manifest.json").read_text())
    manifest["decision"]["threshold"] = 0.25
    (recalibrated / "manifest.json").write_text(json.dumps(manifest))

    with gateway_client(app, TEST_API_KEY) as client:
        assert client.post("/v1/collections", json={"name": "kb"}).status_code == 201
        documents = {"documents": [{"id": "port", "text": CHUNK}]}
        assert client.post("/v1/collections/kb/documents", json=documents).status_code == 200
        before = ask(client)
        assert before["reader"]["threshold"] == pytest.approx(shipped)

        settings = app.state.settings
        control = open_control(settings)
        try:
            registry = open_reader_registry(settings, control)
            pushed = registry.push(recalibrated, actor="t/ops")
            registry.promote(DEFAULT_READER, pushed.version, "prod", actor="t/ops")
        finally:
            control.close()

        deadline = time.monotonic() + 60
        after = ask(client)
        while after["reader"]["threshold"] != pytest.approx(0.25) and time.monotonic() < deadline:
            time.sleep(0.5)
            after = ask(client)
        assert after["reader"]["threshold"] == pytest.approx(0.25)
        assert "8000" in after["reader"]["span"]  # the same weights read the same span
        metrics = client.get("/metrics").text
        assert 'ragdock_reader_reloads_total{outcome="loaded"} 1.0' in metrics
