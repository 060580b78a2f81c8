"""The whole product, once, as a user drives it: the session tests/e2e/test_no_egress.py runs in
a loopback-only network namespace under strace.

    python -m tests.egress_session WORKDIR

`ragdock up` (with an admin key), then through its gateway: `ragdock ingest` of the demo
documents, a grounded question answered by the shipped grounded adapter, the web console's page,
a two-step `ragdock train`, the trained adapter pushed and `ragdock eval` run on it; then Ctrl-C.
What each step returned is written to WORKDIR/session.json (a `SessionRecord`) for the test to
judge; a failing step stops the session there and its traceback is recorded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import yaml

from server.cli import COVERED_QUESTION
from tests.e2e.test_eval_gate import push_adapter, ref, write_jsonl
from tests.support import ADMIN_KEY_JSON, TEST_API_KEY, free_port, wait_http_ok
from tests.training.conftest import FACTS

REPO = Path(__file__).resolve().parents[1]
DEMO_DOCS = REPO / "ragdock" / "demo_docs"
SHIPPED_ADAPTER = REPO / "adapters" / "demo" / "grounded"
TRAIN_CONFIG = REPO / "training" / "configs" / "gemma3-270m-lora.yaml"
COLLECTION = "egress"
TRAINED = "egress"
UP_TIMEOUT_S = 600
STEP_TIMEOUT_S = 600
TAIL = 4000  # characters of a command's output kept in the record


@dataclass
class SessionRecord:
    """What the session saw, step by step (empty where a step did not run)."""

    driver_pid: int = 0
    gateway_port: int = 0
    engine_port: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall time
    error: str | None = None  # the traceback of the step that failed
    up_output: str = ""
    up_exit: int | None = None
    orphans: list[str] = field(default_factory=list)  # processes `up` left behind
    ingest_exit: int | None = None
    ingest_output: str = ""
    documents: dict[str, int] = field(default_factory=dict)  # doc id -> chunks, as listed
    answer: str = ""
    answer_sources: list[str] = field(default_factory=list)  # "[1] title (uri)"
    grounding: dict[str, Any] = field(default_factory=dict)
    console: dict[str, int] = field(default_factory=dict)  # path -> HTTP status
    console_html: str = ""
    train_exit: int | None = None
    train_output: str = ""
    adapter_files: list[str] = field(default_factory=list)
    eval_exit: int | None = None
    eval_output: str = ""
    eval_report: dict[str, Any] = field(default_factory=dict)  # report.json as written

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> SessionRecord:
        return cls(**json.loads(path.read_text()))


def ragdock(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the `ragdock` command line as a user would, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "ragdock_cli", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=STEP_TIMEOUT_S,
    )  # fmt: skip


def output(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stdout + done.stderr)[-TAIL:]


class Session:
    """The steps, over one `ragdock up` (started by `run`)."""

    def __init__(self, workdir: Path, record: SessionRecord) -> None:
        self.workdir = workdir
        self.record = record
        self.url = f"http://127.0.0.1:{record.gateway_port}"
        self.env = {
            **os.environ,
            "RAGDOCK_ENGINE_PORT": str(record.engine_port),
            "RAGDOCK_API_KEYS": ADMIN_KEY_JSON,
            "RAGDOCK_API_KEY": TEST_API_KEY,  # what `ragdock ingest` and `ragdock eval` send
            "RAGDOCK_DATA_DIR": str(workdir / "data"),
            "RAGDOCK_ADAPTERS_DIR": str(workdir / "adapters"),
            "COLUMNS": "200",
        }
        self.admin = httpx.Client(
            base_url=f"{self.url}/v1",
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
            timeout=STEP_TIMEOUT_S,
        )

    def ingest(self) -> None:
        done = ragdock("ingest", str(DEMO_DOCS), "--collection", COLLECTION,
                       "--gateway", self.url, env=self.env)  # fmt: skip
        self.record.ingest_exit, self.record.ingest_output = done.returncode, output(done)
        listed = self.admin.get(f"/collections/{COLLECTION}/documents")
        listed.raise_for_status()
        self.record.documents = {d["id"]: d["chunk_count"] for d in listed.json()["data"]}

    def ask(self) -> None:
        """The demo's covered question, answered by the shipped grounded adapter (as `up`
        without keys shows it), through the official openai client."""
        model = push_adapter(self.admin, SHIPPED_ADAPTER, "grounded")
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=TEST_API_KEY, max_retries=0)
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": COVERED_QUESTION}],
            max_tokens=48,
            temperature=0,
            extra_body={"rag": {"collection": COLLECTION}},
        ).model_dump()
        self.record.answer = reply["choices"][0]["message"]["content"]
        self.record.answer_sources = [
            f"[{s['index']}] {s['title']} ({s['uri']})" for s in reply["sources"]
        ]
        self.record.grounding = reply["grounding"]

    def console(self) -> None:
        """The console's page and the files it loads (all from the gateway itself)."""
        for path in ("/console/", "/console/console.css", "/console/js/app.js"):
            reply = httpx.get(f"{self.url}{path}", timeout=30)
            self.record.console[path] = reply.status_code
            if path == "/console/":
                self.record.console_html = reply.text

    def train(self) -> None:
        """Two optimizer steps of the default LoRA recipe on three facts; the fourth is the
        frozen holdout."""
        data = write_jsonl(self.workdir / "train.jsonl", FACTS[:3])
        holdout = write_jsonl(self.workdir / "holdout.jsonl", FACTS[3:])
        out = self.workdir / "trained"
        done = ragdock(
            "train", str(TRAIN_CONFIG), f"data.train={data}", f"data.holdout={holdout}",
            "data.validation=null", f"output_dir={out}", "optim.max_steps=2",
            "optim.warmup_steps=0", "loop.eval_every=0", "loop.early_stopping_patience=0",
            "loop.checkpoint_every=0", "--no-progress", env=self.env,
        )  # fmt: skip
        self.record.train_exit, self.record.train_output = done.returncode, output(done)
        if out.is_dir():
            self.record.adapter_files = sorted(p.name for p in out.iterdir())

    def evaluate(self) -> None:
        """Push the trained adapter and run a one-example generation suite on it (the
        candidate and the base; no previous version yet)."""
        model = push_adapter(self.admin, self.workdir / "trained", TRAINED)
        holdout = self.workdir / "holdout.jsonl"
        suite = {
            "name": "no-egress",
            "candidate": model,
            "bootstrap": {"resamples": 100},
            "holdout": ref(holdout),
            "tasks": [
                {"kind": "generation", "data": ref(holdout), "max_examples": 1, "max_tokens": 16}
            ],
        }
        suite_path = self.workdir / "suite.yaml"
        suite_path.write_text(yaml.safe_dump(suite))
        out = self.workdir / "eval"
        done = ragdock("eval", str(suite_path), "--gateway", self.url, "--out", str(out),
                       env=self.env)  # fmt: skip
        self.record.eval_exit, self.record.eval_output = done.returncode, output(done)
        if (out / "report.json").is_file():
            self.record.eval_report = json.loads((out / "report.json").read_text())


def run(workdir: Path) -> SessionRecord:
    """Start `ragdock up`, run every step against it, stop it with Ctrl-C."""
    record = SessionRecord(os.getpid(), free_port(), free_port())
    session = Session(workdir, record)
    up_log = workdir / "up.log"
    with up_log.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "ragdock_cli", "up", "--port", str(record.gateway_port)],
            stdout=log, stderr=subprocess.STDOUT, env=session.env, cwd=REPO,
        )  # fmt: skip
    steps: list[tuple[str, Callable[[], None]]] = [
        ("up", lambda: wait_http_ok(f"{session.url}/healthz", UP_TIMEOUT_S, up)),
        ("ingest", session.ingest),
        ("grounded answer", session.ask),
        ("console", session.console),
        ("train", session.train),
        ("eval", session.evaluate),
    ]
    try:
        for name, step in steps:
            started = time.monotonic()
            step()
            record.seconds[name] = round(time.monotonic() - started, 1)
    except Exception:
        record.error = traceback.format_exc()
    finally:
        started = time.monotonic()
        family = psutil.Process(up.pid).children(recursive=True) if up.poll() is None else []
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=90)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        _, alive = psutil.wait_procs(family, timeout=30)
        for process in alive:
            record.orphans.append(" ".join(process.cmdline()))
            process.kill()
        record.up_exit = up.returncode
        record.up_output = up_log.read_text(errors="replace")[-TAIL:]
        record.seconds["stop"] = round(time.monotonic() - started, 1)
    return record


def main() -> None:
    workdir = Path(sys.argv[1])
    run(workdir).write(workdir / "session.json")


if __name__ == "__main__":
    main()
