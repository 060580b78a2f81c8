"""The console's Sources page in a real headless Chromium against a real gateway (its own sync
worker, embedder and embedded Qdrant; no engine: syncing needs none): a folder source's running
job with its progress and failed items, its counts once it ends, Sync now, Cancel, and a refused
second sync shown as the API words it. RAGDOCK_CONSOLE_SCREENSHOTS=docs refreshes the README's
screenshot of the page.

To hold a job at "running" for as long as the test looks at it, the folder holds a named pipe
(`gate.md`) between its files: the worker's read of it blocks, like a read from a slow share,
until the test writes the file's text into it. The items before it are committed by then (one
per batch), so the job reports them, its rate and its time left."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.console.browser import Console, headless_chromium
from tests.support import GatewayProcess, free_port, start_gateway

REPO = Path(__file__).resolve().parents[2]
ACME_KEY = "acme-ingest-0123456789ab"
BETA_KEY = "beta-ingest-0123456789ab"
CHAT_KEY = "acme-chat-0123456789abcd"
MAX_BYTES = 4096
ROW = 'tr[data-source="handbook"]'
GATE_TEXT = "# Gate\n\nThe gate opened at noon and let the sync through.\n"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<root>/acme/handbook`: six notes, one file over the size limit, the gate, two more notes
    (ten items, in the worker's sorted order); `<root>/beta/notes`: another tenant's."""
    root = tmp_path_factory.mktemp("sources")
    handbook = root / "acme" / "handbook"
    handbook.mkdir(parents=True)
    (handbook / "big.md").write_text("# Big\n\n" + "A page of minutes. " * 400)
    for i in range(1, 7):
        note = f"# Note {i}\n\nThe relay in bay {i} is checked every {i * 7} days.\n"
        (handbook / f"doc-{i:02}.md").write_text(note)
    os.mkfifo(handbook / "gate.md")
    for name in ("late-1.md", "late-2.md"):
        (handbook / name).write_text(f"# {name}\n\nWritten after the gate.\n")
    notes = root / "beta" / "notes"
    notes.mkdir(parents=True)
    (notes / "beta-only.md").write_text("# Beta's note\n\nOnly beta reads this.\n")
    return root


def open_gate(fifo: Path, timeout_s: float = 60.0) -> bool:
    """Let the worker's blocked read of `fifo` through: write its text, then close (its EOF).
    Returns False when no reader came within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:  # a non-blocking open for writing fails (ENXIO) until a reader has the pipe open
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
    try:
        os.write(fd, GATE_TEXT.encode())
    finally:
        os.close(fd)
    return True


def new_gate(folders: Path) -> Path:
    """A fresh pipe at the gate's path: a new mtime, so the next sync reads it again."""
    gate = folders / "acme" / "handbook" / "gate.md"
    gate.unlink()
    os.mkfifo(gate)
    return gate


@pytest.fixture(scope="module")
def gateway(folders: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("sources-gateway")
    keys = [
        {"key": ACME_KEY, "name": "acme-ops", "tenant": "acme", "scopes": ["chat", "ingest"]},
        {"key": BETA_KEY, "name": "beta-ops", "tenant": "beta", "scopes": ["chat", "ingest"]},
        {"key": CHAT_KEY, "name": "acme-app", "tenant": "acme", "scopes": ["chat"]},
    ]
    env = {
        "RAGDOCK_API_KEYS": json.dumps(keys),
        "RAGDOCK_SOURCE_ROOTS": str(folders / "{tenant}"),
        "RAGDOCK_SOURCE_BATCH_SIZE": "1",  # every item its own commit: progress item by item
        "RAGDOCK_MAX_DOCUMENT_BYTES": str(MAX_BYTES),
    }
    process = start_gateway(f"http://127.0.0.1:{free_port()}", workdir / "gateway.log", env)
    yield process
    # A test that failed may leave the worker blocked on the gate: let it through to stop.
    with contextlib.suppress(OSError):
        open_gate(folders / "acme" / "handbook" / "gate.md", timeout_s=0)
    process.stop()


def api(gateway: GatewayProcess, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.api_base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


@pytest.fixture(scope="module")
def sources(gateway: GatewayProcess, folders: Path) -> None:
    """acme's handbook (its first sync queued at once) and beta's notes, through the API."""
    for key, name, folder in (
        (BETA_KEY, "beta-notes", folders / "beta" / "notes"),
        (ACME_KEY, "handbook", folders / "acme" / "handbook"),
    ):
        body = {
            "name": name, "collection": name, "interval_s": 3600,
            "spec": {"kind": "folder", "path": str(folder)},
        }  # fmt: skip
        created = api(gateway, key).post("/sources", json=body)
        assert created.status_code == 201, created.text


@pytest.fixture(scope="module")
def console(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with headless_chromium(tmp_path_factory.mktemp("downloads")) as driver:
        yield Console(driver, gateway.url)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("RAGDOCK_CONSOLE_SCREENSHOTS")
    return (REPO / wanted) if wanted else tmp_path_factory.mktemp("screenshots")


def test_a_running_sync_shows_its_progress_and_failed_items_then_its_counts(
    console: Console, sources: None, gateway: GatewayProcess, folders: Path, shots: Path
) -> None:
    console.sign_in(ACME_KEY)
    console.open("sources")
    # Held at the gate: big.md (failed) and six notes seen of ten items.
    console.wait_text(f"{ROW} .current-job", "7 / 10")
    assert "running" in console.find(f"{ROW} .current-job").text
    bar = console.find(f"{ROW} progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("7", "10")
    figures = console.find(f"{ROW} .progress-figures").text
    assert "items/s" in figures and "left" in figures, figures
    assert "6 added" in console.find(f"{ROW} .current-job .counts").text
    assert "never synced" in console.find(f"{ROW} .last-sync").text
    errors = console.wait_text('#source-errors [data-source="handbook"]', "big.md")
    assert "1 item(s) failed" in errors.text and "(running)" in errors.text
    assert f"over the {MAX_BYTES} byte limit" in errors.text, errors.text
    assert not console.find(f"{ROW} button[data-action=sync]").is_enabled()
    assert console.find(f"{ROW} button[data-action=cancel]").is_displayed()
    # Only this tenant's sources: beta's exists, and is not on acme's page.
    assert "beta-notes" not in console.find("main").text
    console.screenshot(shots / "console-sources.png")

    assert open_gate(folders / "acme" / "handbook" / "gate.md")
    last = console.wait_text(f"{ROW} .last-sync", "succeeded")
    assert "9 added" in last.text and "1 failed" in last.text, last.text
    assert console.find(f"{ROW} .current-job").text == "\u2013"  # an en dash: no job now
    assert not console.all(f"{ROW} progress")
    assert console.find(f"{ROW} button[data-action=sync]").is_enabled()
    assert "(succeeded)" in console.find('#source-errors [data-source="handbook"]').text
    listed = api(gateway, ACME_KEY).get("/sources/handbook").json()
    assert listed["last_job"]["progress"]["added"] == 9 and listed["syncs"] == 1


def test_sync_now_cancel_and_a_refused_second_sync(
    console: Console, sources: None, gateway: GatewayProcess, folders: Path
) -> None:
    gate = new_gate(folders)
    console.sign_in(ACME_KEY)
    console.open("sources")
    console.wait_text(f"{ROW} .last-sync", "succeeded")
    console.find(f"{ROW} button[data-action=sync]").click()
    console.wait_text(f"{ROW} .current-job", "7 / 10")  # the notes are unchanged; the gate holds
    console.find(f"{ROW} button[data-action=cancel]").click()
    console.wait_text(f"{ROW} .current-job", "cancelling")
    assert not console.all(f"{ROW} button[data-action=cancel]")
    assert open_gate(gate)
    last = console.wait_text(f"{ROW} .last-sync", "cancelled")
    assert "last success" in last.text and "7 unchanged" in last.text, last.text

    # A sync started elsewhere (here: the API) while the page still shows none: Sync now is
    # refused with the API's own message, and the page then shows that job.
    gate = new_gate(folders)
    console.open("sources")
    console.wait_text(f"{ROW} .last-sync", "cancelled")
    client = api(gateway, ACME_KEY)
    started = client.post("/sources/handbook/sync", json={"full": True})
    assert started.status_code == 202, started.text
    console.find(f"{ROW} button[data-action=sync]").click()
    refusal = console.wait_text("#sources-status [role=alert]", "job_already_active")
    again = client.post("/sources/handbook/sync", json={"full": True}).json()["error"]
    assert refusal.text == f"{again['message']} ({again['code']})"
    console.find(f"{ROW} button[data-action=cancel]")
    assert open_gate(gate)
    console.wait_text(f"{ROW} .last-sync", "succeeded")
    job = client.get(f"/jobs/{started.json()['id']}").json()
    assert job["state"] == "succeeded" and job["errors"][0]["item"] == "big.md"


def test_every_control_is_labelled_and_the_heading_has_focus(
    console: Console, sources: None
) -> None:
    console.sign_in(ACME_KEY)
    console.open("sources")
    console.find(f"{ROW} button[data-action=sync]")
    unlabelled = console.driver.execute_script("""
      return [...document.querySelectorAll('main input, main select, main button, main progress')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !el.textContent.trim())
        .map(el => el.outerHTML.slice(0, 80));""")
    assert unlabelled == []
    assert console.driver.switch_to.active_element.tag_name == "h1"


def test_a_key_without_ingest_sees_no_sources(console: Console, sources: None) -> None:
    console.sign_in(CHAT_KEY)
    assert not console.find("#nav a[data-page=sources]").is_displayed()
    console.open("sources")
    assert "'ingest' scope" in console.find("main").text
    assert not console.all("#sources")
