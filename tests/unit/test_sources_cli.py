"""`ragdock sources` against a scripted gateway (`httpx.MockTransport` through the CLI's client
factory): the bodies its flags build, a sync followed to its end, and how errors read."""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from retrieval import sources_cli


class Gateway:
    """Answers each request with the next scripted reply for its method and path, and keeps
    every request it saw."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], list[httpx.Response]] = {}
        self.requests: list[httpx.Request] = []

    def script(self, method: str, path: str, *replies: httpx.Response) -> None:
        self.replies.setdefault((method, path), []).extend(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.replies.get((request.method, request.url.path))
        assert queue, f"unscripted {request.method} {request.url}"
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if (r.method, r.url.path) == (method, path)]


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Gateway:
    scripted = Gateway()
    # the real client (base URL, key header); only its transport is scripted
    client = functools.partial(sources_cli.open_client, transport=httpx.MockTransport(scripted))
    monkeypatch.setattr(sources_cli, "open_client", client)
    monkeypatch.setattr(sources_cli, "console", Console(width=200))
    monkeypatch.setenv("RAGDOCK_API_KEY", "rk-test")
    return scripted


def run(*args: str) -> Result:
    return CliRunner().invoke(sources_cli.app, list(args))


def error(status: int, message: str, code: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}  # fmt: skip
    return httpx.Response(status, json=body)


def job(state: str, seen: int = 0, total: int | None = 3, **counts: int) -> dict[str, Any]:
    ended = state in ("succeeded", "failed", "cancelled")
    return {
        "object": "job", "id": "job-1", "source": "docs", "collection": "handbook",
        "kind": "full", "trigger": "manual", "state": state, "attempts": 1,
        "cancel_requested": False, "created_at": 1000.0,
        "started_at": None if state == "queued" else 1001.0,
        "finished_at": 1003.5 if ended else None,
        "progress": {"total": total, "seen": seen, "added": 0, "updated": 0, "unchanged": 0,
                     "deleted": 0, "failed": 0, "bytes": 0} | counts,
        "rate_per_s": None if state == "queued" else 2.0,
        "eta_s": None if ended or state == "queued" else 1.0,
        "error": None, "errors": [] if ended else None,
    }  # fmt: skip


def source(active: dict[str, Any] | None, kind: str = "folder") -> dict[str, Any]:
    spec = {"kind": "folder", "path": "/srv/docs", "include": ["**/*"], "exclude": []}
    return {
        "object": "source", "id": "docs", "name": "docs", "collection": "handbook",
        "kind": kind, "spec": spec, "interval_s": 3600.0, "created_at": 1000.0,
        "created_by": "acme-etl", "last_success_at": None, "syncs": 0, "last_job": None,
        "active_job": active,
    }  # fmt: skip


def listing(*items: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": list(items)})


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def test_create_folder_sends_the_spec_of_its_flags_and_the_schedule(gateway: Gateway) -> None:
    gateway.script("POST", "/v1/sources", httpx.Response(201, json=source(job("queued"))))
    out = run(
        "create", "docs", "--collection", "handbook", "--folder", "/srv/docs",
        "--include", "**/*.md", "--include", "**/*.pdf", "--exclude", "drafts/**",
        "--interval", "3600", "--no-follow",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    (sent,) = gateway.sent("POST", "/v1/sources")
    assert sent.headers["authorization"] == "Bearer rk-test"
    assert body(sent) == {
        "name": "docs", "collection": "handbook", "sync": True, "interval_s": 3600.0,
        "spec": {"kind": "folder", "path": "/srv/docs", "include": ["**/*.md", "**/*.pdf"],
                 "exclude": ["drafts/**"]},
    }  # fmt: skip
    assert "created source docs (folder -> collection handbook, every 1h00m)" in out.output
    assert "job job-1 queued" in out.output
    assert not gateway.sent("GET", "/v1/jobs/job-1")  # --no-follow: never polled


def test_create_sql_sends_references_and_only_the_columns_given(gateway: Gateway) -> None:
    gateway.script("POST", "/v1/sources", httpx.Response(201, json=source(None, kind="sql")))
    out = run(
        "create", "faq", "-c", "handbook", "--sql-url", "postgresql+psycopg://reader@db/app",
        "--password-env", "RAGDOCK_SECRET_ACME_PG", "--query", "SELECT * FROM faq",
        "--id-column", "faq_id", "--title-column", "", "--metadata-column", "team",
        "--metadata-column", "lang", "--full-every", "5", "--no-sync",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    (sent,) = gateway.sent("POST", "/v1/sources")
    assert body(sent) == {
        "name": "faq", "collection": "handbook", "sync": False,
        "spec": {"kind": "sql", "url": "postgresql+psycopg://reader@db/app",
                 "password_env": "RAGDOCK_SECRET_ACME_PG", "query": "SELECT * FROM faq",
                 "id_column": "faq_id", "title_column": None,
                 "metadata_columns": ["team", "lang"], "full_every": 5},
    }  # fmt: skip


def test_create_sql_by_url_variable(gateway: Gateway) -> None:
    gateway.script("POST", "/v1/sources", httpx.Response(201, json=source(None, kind="sql")))
    out = run("create", "faq", "-c", "kb", "--sql-url-env", "RAGDOCK_SECRET_ACME_DB",
              "--query", "SELECT id, text FROM faq", "--no-sync")  # fmt: skip
    assert out.exit_code == 0, out.output
    assert body(gateway.sent("POST", "/v1/sources")[0])["spec"] == {
        "kind": "sql",
        "url_env": "RAGDOCK_SECRET_ACME_DB",
        "query": "SELECT id, text FROM faq",
    }


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--sql-url", "postgresql://u:hunter2@db/app", "--query", "SELECT 1"],
         "holds a password"),
        (["--folder", "/srv/docs", "--sql-url-env", "DB"], "give --folder PATH, or one of"),
        ([], "give --folder PATH, or one of"),
        (["--folder", "/srv/docs", "--query", "SELECT 1"], "--query is an option of SQL"),
        (["--sql-url-env", "DB", "--include", "*.md", "--query", "SELECT 1"],
         "--include and --exclude are options of folder"),
        (["--sql-url-env", "DB"], "--query: Field required"),
        (["--sql-url-env", "DB", "--sql-url-file", "/run/x", "--query", "q"],
         "give exactly one of url, url_env or url_file"),
        (["--sql-url-env", "DB", "--query", "q", "--id-column", "a;b"], "--id-column:"),
    ],
)  # fmt: skip
def test_create_refuses_a_bad_spec_before_sending_it(
    gateway: Gateway, flags: list[str], says: str
) -> None:
    out = CliRunner().invoke(
        sources_cli.app, ["create", "s", "-c", "kb", *flags], env={"COLUMNS": "300"}
    )
    assert out.exit_code == 2
    assert says in " ".join(out.output.split())
    assert "hunter2" not in out.output
    assert gateway.requests == []


def test_sync_follows_a_job_from_queued_to_succeeded_and_prints_its_counts(
    gateway: Gateway,
) -> None:
    gateway.script("POST", "/v1/sources/docs/sync", httpx.Response(202, json=job("queued")))
    gateway.script(
        "GET", "/v1/jobs/job-1",
        httpx.Response(200, json=job("running", 1, added=1)),
        httpx.Response(200, json=job("running", 2, added=2)),
        httpx.Response(200, json=job("succeeded", 3, added=2, updated=1)),
    )  # fmt: skip
    out = run("sync", "docs", "--poll-interval", "0")
    assert out.exit_code == 0, out.output
    assert body(gateway.sent("POST", "/v1/sources/docs/sync")[0]) == {"full": True}
    assert len(gateway.sent("GET", "/v1/jobs/job-1")) == 3
    assert (
        "succeeded job job-1 (full): 3 seen, 2 added, 1 updated, 0 unchanged, 0 deleted, "
        "0 failed in 2.5s" in out.output
    )
    assert "sync docs succeeded" in out.output  # the bar's last frame
    assert "3/3" in out.output


@pytest.mark.parametrize("state", ["failed", "cancelled"])
def test_a_failed_or_cancelled_sync_exits_1_with_its_errors(gateway: Gateway, state: str) -> None:
    gateway.script("POST", "/v1/sources/docs/sync", httpx.Response(202, json=job("running", 1)))
    ended = job(state, 2, added=1, failed=1) | {
        "error": "the database did not answer" if state == "failed" else None,
        "errors": [{"item": "faq/7", "error": "the text column is empty", "at": 1002.0}],
    }
    gateway.script("GET", "/v1/jobs/job-1", httpx.Response(200, json=ended))
    out = run("sync", "docs", "--incremental", "--poll-interval", "0")
    assert out.exit_code == 1
    assert body(gateway.sent("POST", "/v1/sources/docs/sync")[0]) == {"full": False}
    assert f"{state} job job-1 (full): 2 seen, 1 added" in out.output
    assert "faq/7: the text column is empty" in out.output
    assert ("the database did not answer" in out.output) == (state == "failed")


def test_a_sync_already_active_is_followed_instead(gateway: Gateway) -> None:
    gateway.script(
        "POST", "/v1/sources/docs/sync",
        error(409, "Source 'docs' has a sync queued or running already: job job-7",
              "job_already_active"),
    )  # fmt: skip
    active = job("running", 1) | {"id": "job-7", "trigger": "schedule"}
    gateway.script("GET", "/v1/jobs", listing(active))
    gateway.script(
        "GET", "/v1/jobs/job-7", httpx.Response(200, json=job("succeeded", 3) | {"id": "job-7"})
    )
    out = run("sync", "docs", "--poll-interval", "0")
    assert out.exit_code == 0, out.output
    (asked,) = gateway.sent("GET", "/v1/jobs")
    assert dict(asked.url.params) == {"source": "docs", "state": "running", "limit": "1"}
    assert "docs has a sync running already: following job job-7" in out.output
    assert "succeeded job job-7" in out.output


def test_a_sync_already_active_without_follow_is_the_gateways_error(gateway: Gateway) -> None:
    message = "Source 'docs' has a sync queued or running already: job job-7"
    gateway.script("POST", "/v1/sources/docs/sync", error(409, message, "job_already_active"))
    out = run("sync", "docs", "--no-follow")
    assert out.exit_code == 1
    assert f"409 job_already_active: {message}" in out.output
    assert not gateway.sent("GET", "/v1/jobs")


def test_an_error_reply_prints_the_gateways_message_and_exits_1(gateway: Gateway) -> None:
    gateway.script(
        "GET", "/v1/sources/nope", error(404, "Source 'nope' does not exist", "source_not_found")
    )
    out = run("show", "nope")
    assert out.exit_code == 1
    assert "404 source_not_found: Source 'nope' does not exist" in out.output


def test_an_unreachable_gateway_says_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = functools.partial(sources_cli.open_client, transport=httpx.MockTransport(refused))
    monkeypatch.setattr(sources_cli, "open_client", client)
    monkeypatch.setattr(sources_cli, "console", Console(width=300))
    out = run("list", "--gateway", "http://127.0.0.1:9")
    assert out.exit_code == 2
    assert "cannot reach the gateway at http://127.0.0.1:9" in out.output
    assert "RAGDOCK_GATEWAY_URL" in out.output


def test_list_shows_each_source_with_its_active_job(gateway: Gateway) -> None:
    gateway.script("GET", "/v1/sources", listing(source(job("running", 2, total=40))))
    out = run("list")
    assert out.exit_code == 0, out.output
    (row,) = [line for line in out.output.splitlines() if "docs" in line]
    assert row.split("│")[1:-1] == [
        " docs ",
        " handbook   ",
        " folder ",
        " every 1h00m ",
        " -            ",
        " running 2/40 ",
    ]


def test_jobs_filters_and_cancel_and_delete_use_their_routes(gateway: Gateway) -> None:
    gateway.script("GET", "/v1/jobs", listing(job("failed", 2, added=1, failed=1)))
    cancelling = job("running") | {"cancel_requested": True}
    gateway.script("POST", "/v1/jobs/job-1/cancel", httpx.Response(200, json=cancelling))
    gateway.script("DELETE", "/v1/sources/docs", httpx.Response(204))
    listed = run("jobs", "docs", "--state", "failed")
    assert listed.exit_code == 0, listed.output
    assert dict(gateway.sent("GET", "/v1/jobs")[0].url.params) == {
        "source": "docs",
        "state": "failed",
        "limit": "50",
    }
    (row,) = [line for line in listed.output.splitlines() if "job-1" in line]
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:11] == ["job-1", "docs", "full", "manual", "failed", "2/3", "1", "0", "0", "0",
                          "1"]  # fmt: skip
    assert cells[-1] == "2.5s"  # took: started to finished
    cancelled = run("cancel", "job-1")
    assert cancelled.exit_code == 0
    assert "cancel requested (running): job job-1" in cancelled.output
    deleted = run("delete", "docs")
    assert deleted.exit_code == 0
    assert "deleted source docs" in deleted.output


def test_show_prints_the_spec_by_reference_and_the_jobs(gateway: Gateway) -> None:
    spec = {"kind": "sql", "url": None, "url_env": "RAGDOCK_SECRET_ACME_DB", "url_file": None,
            "password_env": None, "password_file": None, "query": "SELECT * FROM faq"}  # fmt: skip
    shown = source(job("running", 2, total=None), kind="sql") | {
        "spec": spec,
        "last_job": job("succeeded", 3) | {"id": "job-0"},
    }
    gateway.script("GET", "/v1/sources/docs", httpx.Response(200, json=shown))
    out = run("show", "docs")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output[out.output.index("{") : out.output.index("}") + 1]) == {
        "kind": "sql",
        "url_env": "RAGDOCK_SECRET_ACME_DB",
        "query": "SELECT * FROM faq",
    }
    assert "last job:   succeeded full 3/3  job-0" in out.output
    assert "active job: running full 2/?  job-1" in out.output
