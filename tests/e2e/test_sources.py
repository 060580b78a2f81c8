"""Sources end to end: a folder and a PostgreSQL table, created through `/v1/sources` on the
session's gateway (whose own worker thread runs the jobs, with the real embedder and the
embedded Qdrant engine), synced, changed and synced again; questions through the official
openai client against the real vLLM engine then cite the new text.

The session gateway lets the platform key's tenant ("default") read folders under
`sources/default/` beside its log and secret files under `secrets/default/` (tests/conftest.py):
the PostgreSQL URL, password included, is given by reference to such a file, which this test
writes before it creates the source, and the password shows in no answer and no log line.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest

from engine.launcher import EngineProcess
from tests.hostile import text_pdf
from tests.postgres import fresh_database
from tests.support import TEST_API_KEY, TEST_KEYS_JSON, GatewayProcess, start_gateway

pytestmark = pytest.mark.e2e

TENANT = "default"  # the platform key's
PUMP = (
    "# The Zephyr pump\n\nThe Zephyr pump in building 7 is serviced every {days} days by the "
    "facilities team. Its filter is replaced at each service."
)
PUMP_QUESTION = "How often is the Zephyr pump serviced?"
TOLL = "# The Calder bridge toll\n\nThe Calder bridge toll is {euros} euros for a car."
TOLL_QUESTION = "How much is the Calder bridge toll for a car?"


class Api:
    """The gateway's management routes with the platform key; keeps every reply's text, so the
    test can check that no credential was ever sent back."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.http = httpx.Client(
            base_url=gateway.api_base, headers={"Authorization": f"Bearer {TEST_API_KEY}"},
            timeout=120,
        )  # fmt: skip
        self.replies: list[str] = []

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        reply = self.http.request(method, path, **kwargs)
        self.replies.append(reply.text)
        return reply

    def create(self, name: str, collection: str, spec: dict[str, Any]) -> httpx.Response:
        return self.call(
            "POST", "/sources", json={"name": name, "collection": collection, "spec": spec}
        )

    def wait(self, job_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.call("GET", f"/jobs/{job_id}").json()
            if job["state"] not in ("queued", "running"):
                return dict(job)
            assert time.monotonic() < deadline, f"job {job_id} still {job['state']}: {job}"
            time.sleep(0.25)

    def sync(self, name: str, **body: Any) -> dict[str, Any]:
        reply = self.call("POST", f"/sources/{name}/sync", json=body)
        assert reply.status_code == 202, reply.text
        return self.wait(reply.json()["id"])

    def documents(self, collection: str) -> dict[str, str]:
        """The collection's documents by id, with their text (chunks in order)."""
        listed = self.call("GET", f"/collections/{collection}/documents", params={"limit": 500})
        assert listed.status_code == 200, listed.text
        found = {}
        for doc in listed.json()["data"]:
            detail = self.call("GET", f"/collections/{collection}/documents/{doc['id']}").json()
            assert len(detail["chunks"]) == doc["chunk_count"], doc["id"]
            found[doc["id"]] = "\n".join(chunk["text"] for chunk in detail["chunks"])
        return found


def _counts(job: dict[str, Any]) -> tuple[int, ...]:
    p = job["progress"]
    return (p["added"], p["updated"], p["unchanged"], p["deleted"], p["failed"])


def cited(client: openai.OpenAI, collection: str, question: str) -> list[dict[str, Any]]:
    """The sources a grounded answer cites (the model was asked: not abstained at the gate)."""
    out = client.chat.completions.create(
        model="gemma",
        messages=[{"role": "user", "content": question}],
        max_tokens=24,
        temperature=0,
        extra_body={"rag": {"collection": collection}},
    ).model_dump()
    assert out["grounding"]["reason"] != "retrieval_gate", out["grounding"]
    return list(out["sources"])


@pytest.fixture
def share(gateway: GatewayProcess) -> Path:
    """A folder of this test's own under the tenant's allowed root."""
    folder = gateway.log_file.parent / "sources" / TENANT / f"handbook-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return folder


def test_a_folder_source_follows_its_folder_and_answers_cite_the_new_text(
    gateway: GatewayProcess, client: openai.OpenAI, share: Path
) -> None:
    api = Api(gateway)
    name, collection = share.name, f"kb-{share.name}"
    (share / "ops").mkdir()
    (share / "pump.md").write_text(PUMP.format(days=90))
    (share / "intro.md").write_text("# Intro\n\nThe welcome desk opens at nine.")
    (share / "ops" / "legacy.txt").write_text("The fax machine in room 12 is retired.")
    (share / "manual.pdf").write_bytes(text_pdf("The boiler pressure limit is 3 bar."))

    reply = api.create(name, collection, {"kind": "folder", "path": str(share)})
    assert reply.status_code == 201, reply.text
    job = api.wait(reply.json()["active_job"]["id"])
    assert job["state"] == "succeeded", (job["error"], job["errors"])
    assert job["progress"]["total"] == 4 and _counts(job) == (4, 0, 0, 0, 0)
    texts = api.documents(collection)
    assert set(texts) == {f"{name}/{k}" for k in ("pump.md", "intro.md", "ops/legacy.txt",
                                                  "manual.pdf")}  # fmt: skip
    assert "3 bar" in texts[f"{name}/manual.pdf"]
    sources = cited(client, collection, PUMP_QUESTION)
    assert sources[0]["doc_id"] == f"{name}/pump.md" and "every 90 days" in sources[0]["text"]

    # One edit, one new file, one deletion, one corrupt PDF.
    (share / "pump.md").write_text(PUMP.format(days=30))
    (share / "ops" / "new.md").write_text("# Visitors\n\nVisitors sign in at the north gate.")
    (share / "ops" / "legacy.txt").unlink()
    (share / "broken.pdf").write_bytes(b"%PDF-1.4 junk")
    job = api.sync(name)
    assert job["state"] == "succeeded", (job["error"], job["errors"])
    # (added, updated, unchanged, deleted, failed)
    assert job["progress"]["total"] == 5 and _counts(job) == (1, 1, 2, 1, 1)
    assert [e["item"] for e in job["errors"]] == ["broken.pdf"]
    assert job["errors"][0]["error"]

    # The collection is the folder: its readable files, each at its current version.
    texts = api.documents(collection)
    assert set(texts) == {f"{name}/{k}" for k in ("pump.md", "intro.md", "ops/new.md",
                                                  "manual.pdf")}  # fmt: skip
    assert "every 30 days" in texts[f"{name}/pump.md"]
    assert "north gate" in texts[f"{name}/ops/new.md"]
    shown = api.call("GET", f"/sources/{name}").json()
    assert shown["syncs"] == 2 and shown["last_job"]["id"] == job["id"]

    sources = cited(client, collection, PUMP_QUESTION)
    assert sources[0]["doc_id"] == f"{name}/pump.md" and "every 30 days" in sources[0]["text"]
    assert not any("every 90 days" in s["text"] for s in sources)


@pytest.fixture
def table(postgres_admin_url: str) -> Iterator[tuple[str, str, str]]:
    """A fresh database with an `items` table and a role that may read and write it (so only
    the source's read-only guards stop a write); yields (admin URL, role, password)."""
    url = fresh_database(postgres_admin_url)
    role, password = f"reader_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as conn:  # fmt: skip
        conn.execute(
            "CREATE TABLE items (id integer PRIMARY KEY, title text, text text, "
            "updated_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("CREATE SEQUENCE tickets")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"GRANT ALL ON items, tickets TO {role}")
        for row_id, title, body in [
            (1, "Calder bridge", TOLL.format(euros=4)),
            (2, "Opening hours", "# Opening hours\n\nThe archive opens at eight."),
            (3, "Parking", "# Parking\n\nVisitors park on level two."),
        ]:
            conn.execute("INSERT INTO items (id, title, text) VALUES (%s, %s, %s)",
                         (row_id, title, body))  # fmt: skip
    yield url, role, password


def _pg(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def test_a_postgresql_table_source_follows_its_rows_and_never_shows_its_password(
    gateway: GatewayProcess, client: openai.OpenAI, table: tuple[str, str, str]
) -> None:
    api = Api(gateway)
    admin_url, role, password = table
    tag = uuid.uuid4().hex[:8]
    name, collection = f"rows-{tag}", f"db-{tag}"
    # The whole URL, password included, by reference: a secret file of the tenant's own.
    secrets = gateway.log_file.parent / "secrets" / TENANT
    secrets.mkdir(parents=True, exist_ok=True)
    host_db = admin_url.split("@", 1)[1]
    url_file = secrets / f"{name}.url"
    url_file.write_text(f"postgresql+psycopg://{role}:{password}@{host_db}\n")
    spec = {"kind": "sql", "url_file": str(url_file),
            "query": "SELECT id, title, text, updated_at FROM items"}  # fmt: skip

    # A query that writes is refused when the source is created.
    for query in (
        "DELETE FROM items RETURNING *",
        "WITH gone AS (DELETE FROM items RETURNING *) SELECT * FROM gone",
    ):
        refused = api.create(f"w-{tag}", collection, {**spec, "query": query})
        assert refused.status_code == 400, (query, refused.text)
        assert refused.json()["error"]["code"] == "invalid_source", refused.text
        assert "read-only" in refused.json()["error"]["message"]
    assert api.call("GET", f"/sources/w-{tag}").status_code == 404
    # A write per row: the create-time check runs the query for its first row, so the
    # read-only transaction refuses it there, before any sync.
    per_row = {**spec, "query": "SELECT nextval('tickets') AS id, title, text, updated_at "
               "FROM items"}  # fmt: skip
    created = api.create(f"w-{tag}", collection, per_row)
    assert created.status_code == 400, created.text
    assert created.json()["error"]["code"] == "invalid_source", created.text
    assert "read-only" in created.json()["error"]["message"]
    with _pg(admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (3,)
        assert conn.execute("SELECT last_value, is_called FROM tickets").fetchone() == (1, False)

    reply = api.create(name, collection, spec)
    assert reply.status_code == 201, reply.text
    assert reply.json()["spec"]["url_file"] == str(url_file)
    job = api.wait(reply.json()["active_job"]["id"])
    assert job["state"] == "succeeded", (job["error"], job["errors"])
    assert _counts(job) == (3, 0, 0, 0, 0)
    texts = api.documents(collection)
    assert set(texts) == {f"{name}/1", f"{name}/2", f"{name}/3"}
    sources = cited(client, collection, TOLL_QUESTION)
    assert sources[0]["doc_id"] == f"{name}/1" and "4 euros" in sources[0]["text"]

    # Rows updated and deleted: the next sync follows.
    with _pg(admin_url) as conn:
        conn.execute("UPDATE items SET text = %s, updated_at = now() WHERE id = 1",
                     (TOLL.format(euros=7),))  # fmt: skip
        conn.execute("DELETE FROM items WHERE id = 3")
    job = api.sync(name)
    assert job["state"] == "succeeded", (job["error"], job["errors"])
    assert _counts(job) == (0, 1, 1, 1, 0)
    texts = api.documents(collection)
    assert set(texts) == {f"{name}/1", f"{name}/2"}
    assert "7 euros" in texts[f"{name}/1"]
    sources = cited(client, collection, TOLL_QUESTION)
    assert sources[0]["doc_id"] == f"{name}/1" and "7 euros" in sources[0]["text"]
    assert not any("4 euros" in s["text"] for s in sources)

    # A sync whose database cannot be reached fails with the reason, and no password.
    url_file.write_text(f"postgresql+psycopg://{role}:{password}@{host_db}_gone\n")
    failed = api.sync(name)
    assert failed["state"] == "failed" and "does not exist" in failed["error"], failed
    url_file.write_text(f"postgresql+psycopg://{role}:{password}@{host_db}\n")
    assert api.sync(name)["state"] == "succeeded"

    api.call("GET", "/sources")
    api.call("GET", "/jobs", params={"source": name})
    for text in api.replies:
        assert password not in text
    log = gateway.log()
    assert f"source {name} failed" in log  # the worker logged the failure, masked
    assert password not in log


def test_a_password_in_the_gateways_environment_is_used_and_never_shown(
    engine: EngineProcess, table: tuple[str, str, str], tmp_path: Path
) -> None:
    """The other reference: the URL without its password, the password in a variable of the
    tenant's own (`RAGDOCK_SECRET_DEFAULT_...`), set in the environment of a gateway of this
    test's own (the session gateway's environment is fixed when it starts)."""
    admin_url, role, password = table
    env = {"RAGDOCK_API_KEYS": TEST_KEYS_JSON, "RAGDOCK_LOG_LEVEL": "info",
           "RAGDOCK_SECRET_DEFAULT_PG_PASSWORD": password}  # fmt: skip
    gateway = start_gateway(engine.url, tmp_path / "gateway.log", env)
    try:
        api = Api(gateway)
        url = f"postgresql+psycopg://{role}@{admin_url.split('@', 1)[1]}"
        spec = {"kind": "sql", "url": url, "password_env": "RAGDOCK_SECRET_DEFAULT_PG_PASSWORD",
                "query": "SELECT id, title, text, updated_at FROM items"}  # fmt: skip
        # Another tenant's variable, or one the operator did not name as a secret, is refused.
        for foreign in ("RAGDOCK_SECRET_BETA_PG_PASSWORD", "RAGDOCK_DATABASE_URL"):
            refused = api.create("pg", "rows", {**spec, "password_env": foreign})
            assert refused.status_code == 400, refused.text
            assert "RAGDOCK_SECRET_DEFAULT_" in refused.json()["error"]["message"]
        in_clear = api.create("pg", "rows", {**spec, "url": url.replace("@", f":{password}@")})
        assert in_clear.status_code == 400 and "reference" in in_clear.json()["error"]["message"]

        reply = api.create("pg", "rows", spec)
        assert reply.status_code == 201, reply.text
        assert reply.json()["spec"]["password_env"] == "RAGDOCK_SECRET_DEFAULT_PG_PASSWORD"
        job = api.wait(reply.json()["active_job"]["id"])
        assert job["state"] == "succeeded", (job["error"], job["errors"])
        assert _counts(job) == (3, 0, 0, 0, 0)
        assert set(api.documents("rows")) == {"pg/1", "pg/2", "pg/3"}
        api.call("GET", "/sources/pg")
        api.call("GET", "/jobs")
    finally:
        gateway.stop()
    for text in api.replies:
        assert password not in text
    log = gateway.log()
    assert "job" in log and "claimed" in log  # the info-level log ran the job's lines
    assert password not in log
