"""A new user's small handbook (a markdown table, an HTML list, a PDF, written for this test) asked
one question per fact stated in prose through the shipped reader, the real engine, embedder and
Qdrant: each is answered with the fact and the citation of the document that states it, streamed
and not; questions the handbook does not answer are abstained on, one of them a near miss on its
table. (A fact held only in a table row is not answered yet: see FACTS.)"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from engine.launcher import EngineProcess
from server.rag.reading import SHIPPED_READER
from tests.e2e.test_rag import _tiny_pdf
from tests.support import TEST_API_KEY, TEST_KEYS_JSON, GatewayProcess, start_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PUMPS = """# Pump maintenance

| Pump | Service interval | Owner |
| --- | --- | --- |
| P-101 | every 90 days | facilities |
| P-205 | every 30 days | operations |
"""
BADGES = (
    b"<html><body><h1>Badges</h1><ul>"
    b"<li>The badge office opens at 8:30 am on weekdays.</li>"
    b"<li>Visitor badges expire after 12 hours.</li>"
    b"</ul></body></html>"
)
GENERATOR = "The emergency generator is tested on the first Monday of each month."
# (question, words the answer must hold, the document that states it). Not yet here: "How often
# is pump P-101 serviced?", whose fact is a row of the markdown table. The reader reads the
# table row by row and picks that row's "every 90 days" (margin +0.54; `python -m
# eval.perf.reader_tables`), but the decision, fitted on SQuAD where the top similarity weighs
# most, gave it 0.56 against its 0.618 threshold here (2026-12-02). The near miss below, about a
# pump the table lacks, gets a row's cell at margin +0.10, nearly as high: lowering the
# threshold would invent for it.
FACTS = [
    ("When does the badge office open?", "8:30", "badges"),
    ("When do visitor badges expire?", "12 hours", "badges"),
    ("When is the emergency generator tested?", "first Monday", "generator"),
]


@pytest.fixture(scope="module")
def shipped_gateway(
    engine: EngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    assert (SHIPPED_READER / "manifest.json").is_file()  # the demo's reader ships in the repo
    workdir = tmp_path_factory.mktemp("handbook")
    env = {"RAGDOCK_API_KEYS": TEST_KEYS_JSON, "RAGDOCK_READER": "auto"}
    process = start_gateway(engine.url, workdir / "gateway.log", env)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def handbook(shipped_gateway: GatewayProcess) -> str:
    http = httpx.Client(base_url=shipped_gateway.api_base, timeout=300,
                        headers={"Authorization": f"Bearer {TEST_API_KEY}"})  # fmt: skip
    name = f"handbook-{uuid.uuid4().hex[:8]}"
    assert http.post("/collections", json={"name": name}).status_code == 201
    files = [
        ("files", ("pumps.md", PUMPS.encode(), "text/markdown")),
        ("files", ("badges.html", BADGES, "text/html")),
        ("files", ("generator.pdf", _tiny_pdf(GENERATOR), "application/pdf")),
    ]
    reply = http.post(f"/collections/{name}/documents/upload", files=files)
    assert reply.status_code == 200 and reply.json()["added"] == 3, reply.text
    return name


@pytest.fixture
def client(shipped_gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=shipped_gateway.api_base, api_key=TEST_API_KEY, max_retries=0)


def answer(client: openai.OpenAI, collection: str, question: str, stream: bool) -> Any:
    """(text, grounding, sources) of a grounded answer."""
    request: dict[str, Any] = {
        "model": "gemma",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 32,
        "temperature": 0,
        "extra_body": {"rag": {"collection": collection}},
    }
    if not stream:
        reply = client.chat.completions.create(**request)
        extra = reply.model_extra or {}
        return reply.choices[0].message.content or "", extra["grounding"], extra["sources"]
    chunks = list(client.chat.completions.create(stream=True, **request))
    extras = [c.model_extra or {} for c in chunks]
    sources = next(e["sources"] for e in extras if "sources" in e)
    grounding = next(e["grounding"] for e in extras if "grounding" in e)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, grounding, sources


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("question", "fact", "doc_id"), FACTS, ids=[f[2] + f[1] for f in FACTS])
def test_every_stated_fact_is_answered_with_its_citation(
    client: openai.OpenAI, handbook: str, question: str, fact: str, doc_id: str, stream: bool
) -> None:
    text, grounding, sources = answer(client, handbook, question, stream)
    assert grounding["status"] == "answered", (question, text, grounding)
    assert fact.lower() in text.lower(), (question, text)
    cited = [int(n) for n in re.findall(r"\[(\d+)\]", text)]
    by_number = {s["index"]: s for s in sources}
    assert cited and all(by_number[n]["doc_id"] == doc_id for n in cited), (text, sources)


UNANSWERED = [
    "Who repairs the elevator in building 4?",
    "How often is pump P-300 serviced?",  # a near miss: the table lists P-101 and P-205
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("question", UNANSWERED, ids=["uncovered", "near-miss"])
def test_a_question_the_handbook_does_not_answer_is_abstained_on(
    client: openai.OpenAI, handbook: str, question: str, stream: bool
) -> None:
    text, grounding, _ = answer(client, handbook, question, stream)
    assert grounding["status"] == "abstained", (text, grounding)
    assert text.startswith("I don't know")
