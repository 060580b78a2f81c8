"""The web console in a real headless Chromium against the real stack (vLLM engine with Gemma 3
270M, gateway, embedder, embedded Qdrant): what a user sees and what the console may do.

Adapters: the shipped grounded-answering adapter (its real eval report failed its gate) and one
trained here by `ragdock train` and scored by `ragdock eval` against a gate it passes. Set
RAGDOCK_CONSOLE_SCREENSHOTS=docs to refresh the README's screenshots from this run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from engine.launcher import EngineProcess
from server.cli import COVERED_QUESTION, UNCOVERED_QUESTION
from tests.console.browser import Console, headless_chromium
from tests.e2e.test_eval_gate import (
    admin_client,
    push_adapter,
    ragdock_eval,
    ref,
    train,
    write_jsonl,
)
from tests.support import CHAT_ONLY_KEY, TEST_API_KEY, GatewayProcess, start_gateway
from tests.training.test_raft import synthetic_squad
from training.raft import RaftOptions, build_raft

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
COLLECTION = "console-demo"
FAILED = "console-grounded"  # the shipped demo adapter: its gate failed
PASSING = "console-answering"


@pytest.fixture(scope="module")
def stack(gateway: GatewayProcess) -> dict[str, str]:
    """The demo documents in a collection and the shipped adapter registered, through the API."""
    admin = admin_client(gateway)
    assert admin.post("/collections", json={"name": COLLECTION}).status_code in (201, 409)
    docs = sorted((REPO / "ragdock/demo_docs").glob("*.md"))
    files = [("files", (p.name, p.read_bytes(), "text/markdown")) for p in docs]
    ingest = admin.post(f"/collections/{COLLECTION}/documents/upload", files=files)
    assert ingest.status_code == 200, ingest.text
    model = push_adapter(admin, REPO / "adapters/demo/grounded", FAILED)
    return {"failed_model": model, "failed_version": model.split("@")[1]}


@pytest.fixture(scope="module")
def passing_adapter(
    gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A real `ragdock train` adapter (a few steps) whose real `ragdock eval` report passes a
    forgetting gate, attached by the command's --attach."""
    root = tmp_path_factory.mktemp("console-adapter")
    corpus = root / "squad.json"
    corpus.write_text(json.dumps(synthetic_squad()))
    raft = root / "raft"
    build_raft(corpus, raft, RaftOptions(distractors=1, p_remove_oracle=0.0, max_tokens=None))
    rows = [json.loads(line) for line in (raft / "train.jsonl").read_text().splitlines()]
    data = write_jsonl(root / "train.jsonl", rows)
    adapter = train(data, raft / "holdout.jsonl", root / "adapter", steps=6, lr=5e-4)
    model = push_adapter(admin_client(gateway), adapter, PASSING)
    general = [json.loads(x) for x in (REPO / "eval/data/general_text.jsonl").open()][:4]
    qa = [json.loads(x) for x in (REPO / "eval/data/general_qa.jsonl").open()][:6]
    suite = {
        "name": "console-forgetting",
        "candidate": model,
        "alias": "prod",
        "bootstrap": {"resamples": 200},
        "tasks": [
            {
                "kind": "forgetting",
                "text": ref(write_jsonl(root / "text.jsonl", general)),
                "qa": ref(write_jsonl(root / "qa.jsonl", qa)),
            }
        ],
    }
    suite_path = root / "suite.yaml"
    suite_path.write_text(yaml.safe_dump(suite))
    gate = {
        "name": "console",
        "rules": [{"metric": "forgetting.perplexity_increase", "op": "<=", "threshold": 1.0}],
    }
    (root / "gate.yaml").write_text(yaml.safe_dump(gate))
    run = ragdock_eval(suite_path, gateway, root / "report")
    assert run.returncode == 0, run.stdout + run.stderr
    return {"model": model, "version": model.split("@")[1]}


@pytest.fixture(scope="module")
def console(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with headless_chromium(tmp_path_factory.mktemp("downloads")) as driver:
        yield Console(driver, gateway.url)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("RAGDOCK_CONSOLE_SCREENSHOTS")
    return (REPO / wanted) if wanted else tmp_path_factory.mktemp("screenshots")


DROP_FILE_JS = """
  const files = new DataTransfer();
  files.items.add(new File([arguments[0]], arguments[1], {type: "text/markdown"}));
  document.getElementById("dropzone").dispatchEvent(
    new DragEvent("drop", {dataTransfer: files, bubbles: true, cancelable: true}));
"""


def ask(console: Console, model: str, question: str) -> None:
    console.open("chat")
    Select(console.find("#chat-model")).select_by_value(model)
    collection = console.find("#chat-collection")
    collection.clear()
    collection.send_keys(COLLECTION)
    console.find("#chat-question").send_keys(question)
    console.find("#chat-send").click()
    console.find("#chat-status")


def test_a_covered_question_is_answered_with_its_cited_source(
    console: Console, stack: dict[str, str], shots: Path
) -> None:
    console.sign_in(TEST_API_KEY)
    ask(console, stack["failed_model"], COVERED_QUESTION)
    assert console.find("#chat-status").text == "answered"
    assert "reason: cited" in console.find("#chat-verdict").text
    answer = console.find("#chat-answer").text
    assert "8000" in answer and "[1]" in answer, answer
    first = console.all("#chat-source-list > li summary")[0]
    assert first.text.startswith("[1] ") and "gateway" in first.text.lower(), first.text
    console.find("#chat-answer button.cite").click()  # the answer's [1] opens source 1
    assert "8000" in console.all("#chat-source-list > li pre")[0].text
    curl = console.find("#chat-curl").text
    assert stack["failed_model"] in curl and '"collection": "console-demo"' in curl
    python = console.find("#chat-python").text
    assert 'extra_body={"rag": {"collection": "console-demo"' in python
    assert TEST_API_KEY not in curl + python  # the snippet names the key, never shows it
    console.screenshot(shots / "console-chat.png")


def test_an_uncovered_question_abstains(console: Console, stack: dict[str, str]) -> None:
    console.sign_in(TEST_API_KEY)
    ask(console, stack["failed_model"], UNCOVERED_QUESTION)
    assert console.find("#chat-status").text == "abstained"
    assert "reason: retrieval_gate" in console.find("#chat-verdict").text
    assert "I don't know" in console.find("#chat-answer").text


def test_an_uploaded_markdown_file_is_found_by_search(
    console: Console, stack: dict[str, str], shots: Path, tmp_path: Path
) -> None:
    note = tmp_path / "zephyr-relay.md"
    note.write_text(
        "# Zephyr relay upkeep\n\nThe Zephyr relay is serviced every 45 days by the night crew, "
        "who replace its quartz filters and log the work in the blue ledger.\n"
    )
    console.sign_in(TEST_API_KEY)
    console.open("documents")
    console.button(COLLECTION).click()
    console.find("#documents[aria-busy=false]")
    console.wait_text("#documents h2", f"Documents in {COLLECTION}")
    console.find("#upload-files").send_keys(str(note))
    console.wait_text("#upload-status", "1 added")
    console.wait_text("#document-list table", "zephyr-relay")
    # Dropped on the drop zone, as a file dragged from the desktop arrives (a DataTransfer).
    console.driver.execute_script(
        DROP_FILE_JS, "# Dropped note\n\nIt came by drag and drop.", "dropped-note.md"
    )
    console.wait_text("#document-list table", "dropped-note")
    query = console.find("#search-query")
    query.send_keys("How often is the Zephyr relay serviced?")
    query.submit()
    table = console.wait_text("#search-results table", "Zephyr relay upkeep")
    headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    assert headers == ["chunk", "hybrid score (rank)", "dense score (rank)", "sparse score (rank)"]
    top = table.find_elements(By.CSS_SELECTOR, "tbody tr")[0]
    assert "Zephyr relay upkeep" in top.text
    hybrid, dense, sparse = [td.text for td in top.find_elements(By.CSS_SELECTOR, "td")]
    assert hybrid.endswith("(#1)"), hybrid
    assert "\u2013" not in (dense, sparse), (dense, sparse)  # an en dash: not in that top k
    assert "passes" in console.find("#search-gate").text
    console.screenshot(shots / "console-documents.png")


def test_promoting_an_adapter_whose_gate_failed_is_refused_with_the_failing_rule(
    console: Console, stack: dict[str, str], gateway: GatewayProcess, shots: Path
) -> None:
    console.sign_in(TEST_API_KEY)
    console.open(f"adapters/{FAILED}/{stack['failed_version']}")
    # Its shipped report is unsigned: the platform has not measured it, whatever it claims.
    assert console.find("#gate-status").text == "unverified"
    assert "claimed by the report" in console.find("#gate").text
    assert "grounding.false_abstention <= 0.33" in console.find("#gate").text
    console.find("#promote-button").click()
    refusal = console.wait_text("#promote-result [role=alert]", "cannot be promoted")
    assert "grounding.false_abstention <= 0.33" in console.find("#failing-rules").text
    api = admin_client(gateway).post(
        f"/adapters/{FAILED}/{stack['failed_version']}/promote", json={"alias": "prod"}
    )
    assert api.status_code == 409
    error = api.json()["error"]
    assert refusal.text == f"{error['message']} ({error['code']})"  # exactly as the API says
    assert "prod" not in admin_client(gateway).get(f"/adapters/{FAILED}").json()["aliases"]
    console.screenshot(shots / "console-adapter-refused.png")


def test_promoting_an_adapter_that_passed_moves_v1_models(
    console: Console, passing_adapter: dict[str, str], gateway: GatewayProcess, shots: Path
) -> None:
    models = openai.OpenAI(base_url=gateway.api_base, api_key=TEST_API_KEY, max_retries=0)
    assert PASSING not in {m.id for m in models.models.list()}
    console.sign_in(TEST_API_KEY)
    console.open(f"adapters/{PASSING}/{passing_adapter['version']}")
    assert console.find("#gate-status").text == "passed"
    assert "forgetting.perplexity_increase" in console.find("#platform-gate").text
    assert console.all("section[aria-label=Manifest] svg.chart"), "the loss curve is drawn"
    console.find("#promote-button").click()
    console.wait_text("#promote-result", f"Promoted: {PASSING}:prod → {passing_adapter['version']}")
    served = {m.id for m in models.models.list()}
    assert {PASSING, f"{PASSING}@prod"} <= served
    assert "promote" in console.find("#audit-log").text
    console.screenshot(shots / "console-adapter-promoted.png")


def test_the_health_page_shows_the_engine_and_the_last_minute(
    console: Console, stack: dict[str, str], gateway: GatewayProcess, shots: Path
) -> None:
    asked = admin_client(gateway).post(
        "/chat/completions",
        json={
            "model": "gemma",
            "messages": [{"role": "user", "content": UNCOVERED_QUESTION}],
            "max_tokens": 8,
            "rag": {"collection": COLLECTION},
        },
    )
    assert asked.json()["grounding"]["status"] == "abstained"
    console.sign_in(TEST_API_KEY)
    console.open("health")
    assert console.find("#engine-state .stat").text == "ready"
    rate = console.find("#abstention-rate").text
    assert "%" in rate and "grounded answers" in rate, rate
    assert "retrieval_gate" in console.find("#health table").text
    console.screenshot(shots / "console-health.png")


def test_a_chat_only_key_sees_no_admin_controls_and_the_api_refuses_them(
    console: Console, stack: dict[str, str], gateway: GatewayProcess
) -> None:
    console.sign_in(CHAT_ONLY_KEY)
    assert "chat" in console.find("#who").text and "admin" not in console.find("#who").text
    adapters_link = console.find("#nav a[data-page=adapters]")
    assert not adapters_link.is_displayed()
    console.open(f"adapters/{FAILED}/{stack['failed_version']}")
    assert "'admin' key" in console.find("main").text
    assert not console.all("#promote-button") and not console.all("#adapter-list")
    console.open("documents")
    assert "lacks the 'ingest' scope" in console.find("#collections").text
    assert not console.all("#upload-files") and not console.all("button.danger")
    chat_only = httpx.Client(
        base_url=gateway.api_base, headers={"Authorization": f"Bearer {CHAT_ONLY_KEY}"}
    )
    for method, path, body in (
        ("GET", "/adapters", None),
        ("POST", f"/adapters/{FAILED}/{stack['failed_version']}/promote", {"alias": "prod"}),
        ("POST", f"/adapters/{FAILED}/rollback", {"alias": "prod"}),
        ("POST", f"/collections/{COLLECTION}/documents", {"documents": [{"id": "x", "text": "y"}]}),
        ("DELETE", f"/collections/{COLLECTION}", None),
    ):
        refused = chat_only.request(method, path, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["error"]["code"] == "missing_scope"


def test_every_control_is_labelled_and_reachable_by_keyboard(
    console: Console, stack: dict[str, str]
) -> None:
    console.sign_in(TEST_API_KEY)
    unlabelled_js = """
      return [...document.querySelectorAll('main input, main select, main textarea, main button')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !el.textContent.trim())
        .map(el => el.outerHTML.slice(0, 80));"""
    for page in ("chat", "documents", f"adapters/{FAILED}/{stack['failed_version']}", "health"):
        console.open(page)
        console.find("main h1")
        assert console.driver.execute_script(unlabelled_js) == [], page
        # The page's heading has focus after navigation, so a screen reader starts there.
        focused = console.driver.switch_to.active_element
        assert focused.tag_name in ("h1", "h2"), (page, focused.tag_name)
    # Tab order: the skip link first, then the page links; from the page's heading, the next Tab
    # reaches its first control.
    tabbable_js = """
      return [...document.querySelectorAll('a[href], button, input, select, textarea')]
        .filter(el => !el.disabled && el.offsetParent !== null && el.tabIndex >= 0)
        .map(el => el.textContent.trim() || el.id);"""
    console.open("chat")
    assert console.driver.execute_script(tabbable_js)[:3] == [
        "Skip to content",
        "Chat",
        "Documents",
    ]
    ActionChains(console.driver).send_keys(Keys.TAB).perform()
    assert console.driver.switch_to.active_element.get_attribute("id") == "chat-model"


def test_without_keys_the_console_is_the_anonymous_loopback_caller(
    console: Console, engine: EngineProcess, tmp_path: Path
) -> None:
    # What `ragdock up` serves: no keys, loopback only; chat and documents, no administration.
    keyless = start_gateway(engine.url, tmp_path / "keyless.log", {"RAGDOCK_API_KEYS": ""})
    signed_in_gateway = console.base_url
    try:
        console.base_url = keyless.url
        console.open("documents")
        assert "no API keys configured" in console.find("#who").text
        assert not console.all("#api-key")  # nothing to sign in with
        assert not console.find("#nav a[data-page=adapters]").is_displayed()
        console.find("#new-collection").send_keys("keyless-notes")
        console.button("Create").click()
        console.wait_text("#documents h2", "Documents in keyless-notes")
        console.open("adapters")
        assert "set RAGDOCK_API_KEYS" in console.find("main").text
        console.open("chat")
        models = [o.text for o in console.all("#chat-model option")]
        assert models == ["gemma"]
    finally:
        console.base_url = signed_in_gateway
        keyless.stop()
