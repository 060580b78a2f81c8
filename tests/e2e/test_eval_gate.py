"""`ragdock eval` end to end on the real engine, gateway, embedder and Qdrant: two real adapters
trained by `ragdock train` on RAFT data, one that answers from its sources and one built to fail
(trained to always abstain). The first passes the gate and is promoted; the second is compared
with the first (now `prod`) and the base, fails, and its promotion is refused. `ragdock eval`
signs its reports with the platform's key, and the gateway judges them with its own gate file
(here the suite's gate: the platform's). A suite whose holdout differs from the one recorded at
training time is refused before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from engine.launcher import EngineProcess
from grounding.prompt import DEFAULT_ABSTENTION_MESSAGE
from ragdock.digest import sha256_file
from server.relay.framing import event_data
from tests.contract_samples import platform_env, platform_files
from tests.support import TEST_API_KEY, TEST_KEYS_JSON, GatewayProcess, start_gateway
from tests.training.test_raft import synthetic_squad
from training.cli import app as train_app
from training.raft import RaftOptions, build_raft

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ADAPTER = "evalgate"
GATE = {
    "name": "e2e",
    "rules": [
        # Built to catch the always-abstaining adapter.
        {"metric": "grounding.false_abstention", "op": "<=", "threshold": 0.5},
        # No catastrophic forgetting of general text (generous: a few training steps here).
        {"metric": "forgetting.perplexity_increase", "op": "<=", "threshold": 1.0},
        {
            "metric": "grounding.crag_score",
            "compare_to": "previous",
            "op": ">=",
            "threshold": -0.5,
            "if_missing": "pass",
        },
    ],
}


@pytest.fixture(scope="module")
def gated_gateway(
    engine: EngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway whose own promotion gate is GATE (the session gateway's is the tests' default
    one), with the tests' platform key that `ragdock_eval` signs with."""
    workdir = tmp_path_factory.mktemp("eval-gate-gateway")
    gate = workdir / "promotion-gate.yaml"
    gate.write_text(yaml.safe_dump(GATE))
    env = {"RAGDOCK_API_KEYS": TEST_KEYS_JSON, **platform_env(workdir / "platform"),
           "RAGDOCK_PROMOTION_GATE": str(gate)}  # fmt: skip
    process = start_gateway(engine.url, workdir / "gateway.log", env)
    yield process
    process.stop()


def ref(path: Path) -> dict[str, str]:
    return {"path": str(path), "sha256": sha256_file(path)}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def train(data: Path, holdout: Path, out: Path, steps: int, lr: float) -> Path:
    result = CliRunner().invoke(
        train_app,
        [
            "run",
            str(REPO / "training/configs/gemma3-270m-lora.yaml"),
            f"data.train={data}",
            f"data.holdout={holdout}",
            "data.validation=null",
            f"output_dir={out}",
            f"optim.max_steps={steps}",
            f"optim.lr={lr}",
            "optim.warmup_steps=0",
            "lora.dropout=0",
            "loop.eval_every=0",
            "loop.early_stopping_patience=0",
            "loop.checkpoint_every=0",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """RAFT data from a synthetic SQuAD file, two trained adapters and small general data."""
    root = tmp_path_factory.mktemp("eval-gate")
    corpus = root / "squad.json"
    corpus.write_text(json.dumps(synthetic_squad()))
    raft = root / "raft"
    build_raft(corpus, raft, RaftOptions(distractors=1, p_remove_oracle=0.0, max_tokens=None))
    holdout = raft / "holdout.jsonl"
    rows = [json.loads(line) for line in (raft / "train.jsonl").read_text().splitlines()]
    answering = write_jsonl(
        root / "answering.jsonl", [r for r in rows if r["metadata"]["kind"] == "answerable"]
    )
    abstaining = write_jsonl(
        root / "abstaining.jsonl",
        [
            {
                **r,
                "messages": [
                    *r["messages"][:-1],
                    {"role": "assistant", "content": DEFAULT_ABSTENTION_MESSAGE},
                ],
            }
            for r in rows
        ],
    )
    general = [json.loads(x) for x in (REPO / "eval/data/general_text.jsonl").open()][:4]
    qa = [json.loads(x) for x in (REPO / "eval/data/general_qa.jsonl").open()][:6]
    return {
        "root": root,
        "corpus": corpus,
        "holdout": holdout,
        "text": write_jsonl(root / "text.jsonl", general),
        "qa": write_jsonl(root / "qa.jsonl", qa),
        "answering": train(answering, holdout, root / "answering", steps=8, lr=1e-3),
        "abstaining": train(abstaining, holdout, root / "abstaining", steps=15, lr=2e-3),
    }


def write_suite(ws: dict[str, Path], candidate: str, holdout: Path) -> Path:
    suite = {
        "name": f"e2e-{candidate.replace('@', '-')}",
        "candidate": candidate,
        "alias": "prod",
        "concurrency": 4,
        "bootstrap": {"resamples": 500},
        "holdout": ref(holdout),
        "tasks": [
            {
                "kind": "grounding",
                "holdout": ref(holdout),
                "corpus": ref(ws["corpus"]),
                "collection": "eval-e2e",
                "max_tokens": 24,
                # The gate, not the support check, is under test: the base's unsupported
                # answers stay answers here, so they show the adapter changed the engine's.
                "min_support": 0.0,
            },
            {"kind": "generation", "data": ref(holdout), "max_examples": 4, "max_tokens": 24},
            {"kind": "forgetting", "text": ref(ws["text"]), "qa": ref(ws["qa"])},
        ],
    }
    path = ws["root"] / f"{suite['name']}.yaml"
    path.write_text(yaml.safe_dump(suite))
    (ws["root"] / "gate.yaml").write_text(yaml.safe_dump(GATE))
    return path


def admin_client(gateway: GatewayProcess) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.api_base, timeout=300, headers={"Authorization": f"Bearer {TEST_API_KEY}"}
    )


def push_adapter(admin: httpx.Client, directory: Path, name: str) -> str:
    """Upload a `ragdock train` output directory as is; returns the model name to request."""
    files = [
        ("files", (p.name, p.read_bytes())) for p in sorted(directory.iterdir()) if p.is_file()
    ]
    response = admin.post("/adapters/upload", files=files, data={"name": name})
    assert response.status_code == 201, response.text
    return str(response.json()["model"])


def ragdock_eval(
    suite: Path, gateway: GatewayProcess, out: Path
) -> subprocess.CompletedProcess[str]:
    """The real command line: `ragdock eval SUITE.yaml --gate GATE.yaml --attach`, run as the
    tests' platform (it reads the platform's signing key, so its reports are signed)."""
    key = platform_files(out.parent / "platform")["signing_key_file"]
    env = {**os.environ, "RAGDOCK_API_KEY": TEST_API_KEY, "RAGDOCK_SIGNING_KEY_FILE": str(key)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ragdock_cli",
            "eval",
            str(suite),
            "--gate",
            str(suite.parent / "gate.yaml"),
            "--attach",
            "--gateway",
            gateway.url,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )


def test_gate_promotes_the_answering_adapter_and_refuses_the_abstaining_one(
    workspace: dict[str, Path], gated_gateway: GatewayProcess
) -> None:
    gateway = gated_gateway
    admin = admin_client(gateway)

    def push(directory: Path) -> str:
        return push_adapter(admin, directory, ADAPTER)

    # v1 answers from its sources: no previous version yet, compared with the base only.
    first = push(workspace["answering"])
    out1 = workspace["root"] / "report-v1"
    run1 = ragdock_eval(write_suite(workspace, first, workspace["holdout"]), gateway, out1)
    assert run1.returncode == 0, run1.stdout + run1.stderr
    report1 = json.loads((out1 / "report.json").read_text())
    assert report1["models"]["previous"] is None and report1["models"]["base"]
    assert report1["holdout"]["status"] == "matches the training manifest"
    grounding1 = report1["tasks"]["grounding"]["metrics"]
    assert grounding1["candidate"]["false_abstention"] <= 0.5
    assert set(grounding1) == {"candidate", "base"}
    assert "crag_score" in report1["tasks"]["grounding"]["deltas"]["vs_base"]
    assert report1["tasks"]["forgetting"]["relative"]["perplexity_increase"]["value"] < 1.0
    assert {"exact_match", "rouge_l", "chrf"} <= set(
        report1["tasks"]["generation"]["metrics"]["base"]
    )
    assert report1["gate"]["passed"] is True
    assert report1["signature"]["key_id"]
    assert "will be signed with the platform's key" in run1.stdout
    shown = admin.get(f"/adapters/{ADAPTER}/{report1['candidate_record']['version']}").json()
    assert shown["verdict"]["status"] == "passed", shown["verdict"]
    for name in ("report.md", "grounding.png", "predictions.jsonl"):
        assert (out1 / name).stat().st_size > 0, name
    assert "## grounding (grounding)" in (out1 / "report.md").read_text()
    promoted = admin.post(
        f"/adapters/{ADAPTER}/{report1['candidate_record']['version']}/promote",
        json={"alias": "prod"},
    )
    assert promoted.status_code == 200, promoted.text

    # v2 always abstains: compared with v1 (prod now) and the base, it fails the gate.
    second = push(workspace["abstaining"])
    out2 = workspace["root"] / "report-v2"
    run2 = ragdock_eval(write_suite(workspace, second, workspace["holdout"]), gateway, out2)
    assert run2.returncode == 1, run2.stdout + run2.stderr
    report2 = json.loads((out2 / "report.json").read_text())
    assert report2["models"]["previous"] == first
    grounding2 = report2["tasks"]["grounding"]["metrics"]
    assert grounding2["candidate"]["false_abstention"] == 1.0
    assert grounding2["candidate"]["hallucination"] == 0.0
    assert grounding2["base"]["false_abstention"] < 1.0  # the adapter changed the engine's answers
    failed = [v["rule"] for v in report2["gate"]["verdicts"] if not v["passed"]]
    # Built to fail on abstention; 15 steps at a high rate also cost it general text (forgetting).
    assert "grounding.false_abstention <= 0.5" in failed
    refused = admin.post(
        f"/adapters/{ADAPTER}/{report2['candidate_record']['version']}/promote",
        json={"alias": "prod"},
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "gate_not_passed"
    aliases = admin.get(f"/adapters/{ADAPTER}").json()["aliases"]
    assert aliases["prod"] == report1["candidate_record"]["version"]


def test_a_holdout_other_than_the_training_one_is_refused(
    workspace: dict[str, Path], gateway: GatewayProcess
) -> None:
    changed = workspace["root"] / "holdout-changed.jsonl"
    lines = workspace["holdout"].read_text().splitlines()
    changed.write_text("\n".join(lines[1:]) + "\n")  # one example fewer: another holdout
    candidate = push_adapter(admin_client(gateway), workspace["answering"], f"{ADAPTER}-other")
    suite = write_suite(workspace, candidate, changed)
    run = ragdock_eval(suite, gateway, workspace["root"] / "report-changed")
    assert run.returncode == 2
    assert "holdout mismatch" in run.stdout.replace("\n", " ")
    assert not (workspace["root"] / "report-changed" / "report.json").exists()


def calibration_corpus(root: Path) -> tuple[Path, Path]:
    """A SQuAD-format file whose validation article has 12 answerable and 12 impossible
    questions (calibration needs 10 of each), and the RAFT build record that names it."""
    paragraphs = []
    for p in range(12):
        city, river = f"Calton{p}", f"Rhyne{p}"
        context = f"The river {river} flows through {city}, a market town founded in {1200 + p}."
        paragraphs.append(
            {
                "context": context,
                "qas": [
                    {
                        "id": f"cal{p}a",
                        "question": f"Which town does the river {river} flow through?",
                        "is_impossible": False,
                        "answers": [{"text": city, "answer_start": context.index(city)}],
                    },
                    {
                        "id": f"cal{p}u",
                        "question": f"Which king granted {city} its royal charter?",
                        "is_impossible": True,
                        "answers": [],
                    },
                ],
            }
        )
    corpus = root / "calibration-squad.json"
    corpus.write_text(json.dumps({"data": [{"title": "Calton_rivers", "paragraphs": paragraphs}]}))
    raft = root / "calibration-raft"
    raft.mkdir(exist_ok=True)
    articles = {"train": [], "validation": ["Calton_rivers"], "holdout": []}
    (raft / "raft_build.json").write_text(json.dumps({"articles": articles}))
    return corpus, raft


def test_calibrate_writes_the_threshold_the_gateway_then_applies(
    workspace: dict[str, Path], gateway: GatewayProcess
) -> None:
    import shutil

    admin = admin_client(gateway)
    adapter = workspace["root"] / "calibrated"
    shutil.copytree(workspace["answering"], adapter)
    corpus, raft = calibration_corpus(workspace["root"])
    uncalibrated = push_adapter(admin, adapter, "calibrated")
    env = {**os.environ, "RAGDOCK_API_KEY": TEST_API_KEY}
    run = subprocess.run(
        [sys.executable, "-m", "ragdock_cli", "eval", "calibrate", str(adapter),
         "--candidate", "calibrated@latest", "--corpus", str(corpus), "--raft", str(raft),
         "--target-hallucination", "0.25", "--max-false-abstention", "1.0", "--top-k", "2",
         "--gateway", gateway.url],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "AUROC" in run.stdout and "threshold" in run.stdout
    block = json.loads((adapter / "manifest.json").read_text())["calibration"]
    assert block["features"] == ["abstain_logit", "question_coverage", "top_score"]
    assert block["validation"]["questions"] == 24
    assert block["validation"]["at_threshold"]["hallucination"] <= 0.25
    assert block["enforced"] is True  # any false-abstention rate was allowed
    assert block["fitted"]["model"] == uncalibrated
    assert (adapter / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((adapter / "calibration_rows.jsonl").read_text().splitlines()) == 24

    # Pushed again, the version carries its calibration and the gateway decides with it.
    calibrated = push_adapter(admin, adapter, "calibrated")
    question = "Which town does the river Rhyne3 flow through?"

    def ask(**rag: Any) -> dict[str, Any]:
        reply = admin.post(
            "/chat/completions",
            json={"model": calibrated, "messages": [{"role": "user", "content": question}],
                  "max_tokens": 16, "temperature": 0,
                  "rag": {"collection": "calibration-calton-rivers", **rag}},
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    default = ask()["grounding"]["answerability"]
    assert default["threshold"] == pytest.approx(block["threshold"])
    assert 0.0 <= default["score"] <= 1.0 and default["decision"] in {"answer", "abstain"}
    # A threshold no score reaches: an abstention in the model's place, streamed or not.
    refused = ask(min_answerability=1.0)
    assert refused["grounding"]["reason"] in {"low_answerability", "model_abstained"}
    assert refused["choices"][0]["message"]["content"] == DEFAULT_ABSTENTION_MESSAGE
    events = []
    with admin.stream(
        "POST", "/chat/completions",
        json={"model": calibrated, "messages": [{"role": "user", "content": question}],
              "max_tokens": 16, "stream": True,
              "rag": {"collection": "calibration-calton-rivers", "min_answerability": 1.0}},
    ) as stream:  # fmt: skip
        for line in stream.iter_lines():
            if isinstance(data := event_data(line), dict):
                events.append(data)
    text = "".join(
        (c.get("delta") or {}).get("content") or "" for e in events for c in e.get("choices", [])
    )
    assert text == DEFAULT_ABSTENTION_MESSAGE
    assert events[-1]["grounding"]["status"] == "abstained"
    # A threshold every score reaches: the model is never allowed to abstain.
    answered = ask(min_answerability=0.0, min_support=0.0)
    assert answered["grounding"]["answerability"]["decision"] == "answer"
    assert answered["choices"][0]["message"]["content"] != DEFAULT_ABSTENTION_MESSAGE
    # The uncalibrated version reports the signals and leaves the choice to the model.
    plain = admin.post(
        "/chat/completions",
        json={"model": uncalibrated, "messages": [{"role": "user", "content": question}],
              "max_tokens": 16, "rag": {"collection": "calibration-calton-rivers"}},
    ).json()["grounding"]["answerability"]  # fmt: skip
    assert plain["decision"] == "model" and plain["score"] is None
