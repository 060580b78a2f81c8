"""Retrieval and grounding end to end: documents ingested over HTTP into the real embedded Qdrant
engine with the real embedder, questions asked through the official openai client against the
real vLLM engine."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import openai
import pytest

from engine.launcher import EngineProcess
from eval.perf.bench import metric_total
from tests.support import BETA_KEY, TEST_API_KEY, GatewayProcess

pytestmark = pytest.mark.e2e

PUMP = (
    "# The Zephyr pump\n\nThe Zephyr pump in building 7 is serviced every 90 days by the "
    "facilities team. Its filter is replaced at each service."
)
PUMP_CHANGED = PUMP.replace("every 90 days", "every 30 days")
LIBRARY = "# Library hours\n\nThe north campus library opens at 8 am and closes at 10 pm."
PUMP_QUESTION = "How often is the Zephyr pump serviced?"
OFF_TOPIC = "What is the boiling point of mercury?"


class Docs:
    def __init__(self, gateway: GatewayProcess, key: str = TEST_API_KEY) -> None:
        self.http = httpx.Client(
            base_url=gateway.api_base, headers={"Authorization": f"Bearer {key}"}, timeout=300
        )

    def put(self, collection: str, **doc: Any) -> dict[str, Any]:
        reply = self.http.post(f"/collections/{collection}/documents", json={"documents": [doc]})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


@pytest.fixture
def collection(gateway: GatewayProcess) -> str:
    name = f"kb-{uuid.uuid4().hex[:8]}"
    assert Docs(gateway).http.post("/collections", json={"name": name}).status_code == 201
    return name


def grounded(client: openai.OpenAI, collection: str, question: str, **rag: Any) -> Any:
    return client.chat.completions.create(
        model="gemma",
        messages=[{"role": "user", "content": question}],
        max_tokens=24,
        temperature=0,
        extra_body={"rag": {"collection": collection, **rag}},
    )


def requests_served(engine: EngineProcess) -> float:
    return metric_total(engine.url, "vllm:request_success_total")


def test_covered_question_gets_sources_with_the_answer(
    client: openai.OpenAI, gateway: GatewayProcess, collection: str
) -> None:
    docs = Docs(gateway)
    docs.put(collection, id="pump", text=PUMP, uri="kb://pump")
    docs.put(collection, id="library", text=LIBRARY)
    out = grounded(client, collection, PUMP_QUESTION).model_dump()
    sources = out["sources"]
    assert sources[0]["doc_id"] == "pump" and "every 90 days" in sources[0]["text"]
    assert sources[0]["index"] == 1 and sources[0]["uri"] == "kb://pump"
    grounding = out["grounding"]
    assert grounding["top_score"] >= grounding["threshold"]
    # The base model is not trained to cite; what matters here is that the model was asked.
    assert grounding["reason"] != "retrieval_gate"
    assert out["usage"]["prompt_tokens"] > 50  # the sources went into the prompt


def test_uncovered_question_abstains_without_calling_the_engine(
    client: openai.OpenAI, gateway: GatewayProcess, engine: EngineProcess, collection: str
) -> None:
    Docs(gateway).put(collection, id="pump", text=PUMP)
    before = requests_served(engine)
    out = grounded(client, collection, OFF_TOPIC).model_dump()
    assert out["choices"][0]["message"]["content"] == "I don't know based on the provided sources."
    assert out["grounding"]["status"] == "abstained"
    assert out["grounding"]["reason"] == "retrieval_gate"
    assert out["grounding"]["top_score"] < out["grounding"]["threshold"]
    assert requests_served(engine) == before


def test_grounded_stream_carries_sources_and_grounding_chunks(
    client: openai.OpenAI, gateway: GatewayProcess, collection: str
) -> None:
    Docs(gateway).put(collection, id="pump", text=PUMP)
    stream = client.chat.completions.create(
        model="gemma",
        messages=[{"role": "user", "content": PUMP_QUESTION}],
        max_tokens=16,
        temperature=0,
        stream=True,
        extra_body={"rag": {"collection": collection}},
    )
    chunks = [chunk.model_dump() for chunk in stream]
    assert chunks[0]["choices"] == [] and chunks[0]["sources"][0]["doc_id"] == "pump"
    assert chunks[-1]["choices"] == [] and chunks[-1]["grounding"]["status"] in {
        "answered",
        "abstained",
    }
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text
    abstained = list(
        client.chat.completions.create(
            model="gemma", messages=[{"role": "user", "content": OFF_TOPIC}], stream=True,
            extra_body={"rag": {"collection": collection}},
        )
    )  # fmt: skip
    assert abstained[-1].model_dump()["grounding"]["reason"] == "retrieval_gate"


def test_reingest_replaces_the_fact_and_delete_leads_to_abstention(
    client: openai.OpenAI, gateway: GatewayProcess, collection: str
) -> None:
    docs = Docs(gateway)
    assert docs.put(collection, id="pump", text=PUMP)["added"] == 1
    assert docs.put(collection, id="pump", text=PUMP)["unchanged"] == 1  # idempotent
    assert docs.put(collection, id="pump", text=PUMP_CHANGED)["replaced"] == 1
    texts = [s["text"] for s in grounded(client, collection, PUMP_QUESTION).model_dump()["sources"]]
    assert any("every 30 days" in t for t in texts)
    assert not any("every 90 days" in t for t in texts)
    listing = docs.http.get(f"/collections/{collection}/documents").json()
    assert [(d["id"], d["chunk_count"]) for d in listing["data"]] == [("pump", 1)]
    assert docs.http.delete(f"/collections/{collection}/documents/pump").status_code == 204
    assert docs.http.get(f"/collections/{collection}/documents/pump").status_code == 404
    out = grounded(client, collection, PUMP_QUESTION).model_dump()
    assert out["sources"] == [] and out["grounding"]["status"] == "abstained"


def test_a_tenant_never_sees_another_tenants_chunks(
    client: openai.OpenAI, gateway: GatewayProcess, collection: str
) -> None:
    Docs(gateway).put(collection, id="pump", text=PUMP)  # tenant "default"
    beta_docs = Docs(gateway, BETA_KEY)
    # Another tenant's collection does not exist for beta until beta creates the name too.
    assert beta_docs.http.post("/collections", json={"name": collection}).status_code == 201
    beta_docs.put(collection, id="library", text=LIBRARY)
    beta = openai.OpenAI(base_url=gateway.api_base, api_key=BETA_KEY, max_retries=0)
    seen_by_beta = grounded(beta, collection, PUMP_QUESTION).model_dump()["sources"]
    assert all(s["doc_id"] == "library" for s in seen_by_beta)
    seen_by_default = grounded(client, collection, "When does the library open?").model_dump()
    assert all(s["doc_id"] == "pump" for s in seen_by_default["sources"])
    assert beta_docs.http.get(f"/collections/{collection}/documents/pump").status_code == 404
    retrieved = beta_docs.http.post(
        "/retrieve", json={"collection": collection, "query": PUMP_QUESTION, "top_k": 10}
    ).json()
    assert {s["doc_id"] for s in retrieved["data"]} <= {"library"}


def test_file_uploads_markdown_html_pdf(gateway: GatewayProcess, collection: str) -> None:
    docs = Docs(gateway)
    html = b"<html><body><h1>Ferry</h1><p>The ferry leaves at 7:15 from pier 3.</p></body></html>"
    files = [
        ("files", ("pump.md", PUMP.encode(), "text/markdown")),
        ("files", ("ferry.html", html, "text/html")),
        (
            "files",
            ("bakery.pdf", _tiny_pdf("The bakery sells rye bread on Tuesdays."), "application/pdf"),
        ),
    ]
    reply = docs.http.post(f"/collections/{collection}/documents/upload", files=files)
    assert reply.status_code == 200, reply.text
    assert reply.json()["added"] == 3
    found = docs.http.post(
        "/retrieve", json={"collection": collection, "query": "When is rye bread sold?"}
    ).json()
    assert found["data"][0]["doc_id"] == "bakery" and "rye bread" in found["data"][0]["text"]
    ferry = docs.http.get(f"/collections/{collection}/documents/ferry").json()
    assert "7:15" in ferry["chunks"][0]["text"] and "<p>" not in ferry["chunks"][0]["text"]


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        ([("files", ("x.exe", b"MZ", "application/octet-stream"))], 400, None),
        ([("files", ("bad.pdf", b"%PDF-1.4 not really", "application/pdf"))], 400, None),
        ([("files", ("big.txt", b"a" * (11 * 2**20), "text/plain"))], 413, "payload_too_large"),
    ],
)
def test_bad_files_are_clear_4xx(
    gateway: GatewayProcess, collection: str, files: list[Any], status: int, code: str | None
) -> None:
    reply = Docs(gateway).http.post(f"/collections/{collection}/documents/upload", files=files)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["message"] and (code is None or error["code"] == code)


def test_missing_collection_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        grounded(client, "no-such-collection", PUMP_QUESTION)
    assert caught.value.body["code"] == "collection_not_found"
    with pytest.raises(openai.BadRequestError):
        grounded(client, "", PUMP_QUESTION)


def test_embeddings_in_openai_shape(client: openai.OpenAI) -> None:
    out = client.embeddings.create(model="all-minilm-l6-v2", input=["first text", "second text"])
    assert [d.index for d in out.data] == [0, 1]
    assert len(out.data[0].embedding) == 384
    assert abs(sum(x * x for x in out.data[0].embedding) - 1) < 1e-3
    assert out.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")


def _tiny_pdf(text: str) -> bytes:
    """A one-page PDF with one line of text, written by hand (no PDF library needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out


def test_rag_on_for_a_model_in_config(engine: EngineProcess, tmp_path: Any) -> None:
    """`rag_models` switches retrieval on for a model name without any request field."""
    from tests.support import start_gateway

    env = {
        "RAGDOCK_API_KEYS": json.dumps([{"key": TEST_API_KEY, "scopes": ["admin"]}]),
        "RAGDOCK_RAG_MODELS": json.dumps({"gemma": {"collection": "handbook"}}),
    }
    gateway = start_gateway(engine.url, tmp_path / "gw.log", env)
    try:
        docs = Docs(gateway)
        docs.http.post("/collections", json={"name": "handbook"})
        docs.put("handbook", id="pump", text=PUMP)
        plain = openai.OpenAI(base_url=gateway.api_base, api_key=TEST_API_KEY, max_retries=0)
        out = plain.chat.completions.create(
            model="gemma", messages=[{"role": "user", "content": OFF_TOPIC}], max_tokens=8
        ).model_dump()
        assert out["grounding"]["reason"] == "retrieval_gate"
    finally:
        gateway.stop()
