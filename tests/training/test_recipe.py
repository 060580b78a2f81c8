"""The recipe on the real Gemma 3 270M: loss falls, resume is exact, outputs are servable."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from adapters.base_match import BaseModelIdentity
from adapters.errors import AdapterValidationError
from adapters.registry import AdapterRegistry
from adapters.validation import AdapterLimits
from engine.model_build import build_manifest_digest, checkpoint_digest
from eval.calibrate import write_calibration
from eval.runner import candidate_manifest
from grounding.answerability import Calibration
from ragdock.contracts.adapter_manifest import read_adapter_manifest
from ragdock.digest import sha256_file
from tests.training.conftest import FACTS, JsonlWriter, chat
from training.cli import app
from training.config import load_config
from training.recipe import run

CONFIGS = Path(__file__).parents[2] / "training" / "configs"
# Shared by every run here: tiny data, no validation unless a test asks for it.
QUIET = [
    "data.validation=null",
    "data.holdout=null",
    "optim.warmup_steps=0",
    "lora.dropout=0",
    "loop.eval_every=0",
    "loop.early_stopping_patience=0",
    "loop.checkpoint_every=0",
]


def losses(out: Path, key: str = "loss") -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r[key] for r in map(json.loads, lines) if key in r]


def base_model_loss(model_dir: Path, tokenizer: Any, records: list[dict[str, Any]]) -> float:
    """The untrained model's mean loss on the assistant tokens, computed by transformers itself."""
    from transformers import AutoModelForCausalLM

    from training.batching import pad_batch
    from training.data import parse_record
    from training.render import stop_token_ids, tokenize_chat

    stops = stop_token_ids(tokenizer, model_dir)
    items = [tokenize_chat(parse_record(r, "x", None), tokenizer, stops) for r in records]  # type: ignore[arg-type, union-attr]
    batch = pad_batch(items, tokenizer.pad_token_id)
    labels = torch.full_like(batch.input_ids, -100)
    for row, item in enumerate(items):
        labels[row, : len(item.labels)] = torch.tensor(item.labels)
    # float32: bf16 matmuls are emulated (~300x slower) on CPUs without AVX512_BF16
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels)
    return float(out.loss)


def test_lora_overfits_four_examples_and_writes_a_servable_adapter(
    tmp_path: Path, write_jsonl: JsonlWriter, model_dir: Path, tokenizer: Any
) -> None:
    train = write_jsonl("facts.jsonl", FACTS)
    out = tmp_path / "lora"
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(CONFIGS / "gemma3-270m-lora.yaml"),
            f"data.train={train}",
            f"output_dir={out}",
            "optim.max_steps=15",
            "optim.lr=1e-3",
            *QUIET,
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    curve = losses(out)
    assert len(curve) == 15
    # Step 1 sees all four examples with a zero-initialised adapter: it must equal the base
    # model's own loss on the assistant tokens (a check on masking and loss normalisation).
    assert curve[0] == pytest.approx(base_model_loss(model_dir, tokenizer, FACTS), rel=0.02)
    # Pinned behaviour (this config, seed 0): 4.38 -> 0.34 over 15 steps; allow for CPU kernels.
    assert curve[-1] < 0.2 * curve[0]
    assert sum(b < a for a, b in itertools.pairwise(curve)) >= 12

    # The output directory is self-contained and what vLLM accepts: LoRA tensors only.
    files = {p.name for p in out.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
        "README.md",
        "metrics.jsonl",
        "loss_curve.png",
    } <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as handle:
        names = list(handle.keys())
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert not any("lm_head" in n or "embed" in n for n in names)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["modules_to_save"] is None
    assert sorted(adapter_config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]

    manifest = read_adapter_manifest(out)
    assert manifest is not None and manifest.manifest_version == 2
    assert manifest.base_model.digest == checkpoint_digest(model_dir)
    assert manifest.base_model.id == "google/gemma-3-270m"
    assert manifest.data.files["train"].sha256 == sha256_file(train)
    assert manifest.metrics.steps == 15 and manifest.seed == 0
    assert manifest.metrics.final_train_loss == pytest.approx(curve[-1])
    assert manifest.libraries["peft"] and manifest.libraries["transformers"]
    assert manifest.metrics.tokens_per_second > 0
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    read_back_through_every_consumer(out, model_dir, tmp_path)


def read_back_through_every_consumer(out: Path, model_dir: Path, tmp_path: Path) -> None:
    """The manifest the training code wrote, as the registry (with its base match against the
    served checkpoint), the gateway's calibration and the eval runner read it."""
    rows = [
        {"answerable": i % 2 == 0, "p_abstain": 0.2 if i % 2 == 0 else 0.8,
         "question_coverage": 0.5, "top_score": 0.6, "model_abstained": i % 2 == 1}
        for i in range(40)
    ]  # fmt: skip
    write_calibration(
        out, rows, model="lora@v1", articles=["A"], corpus=Path("c.json"), top_k=2,
        target_hallucination=0.2, max_false_abstention=1.0,
    )  # fmt: skip
    written = read_adapter_manifest(out)
    assert written is not None and written.calibration is not None
    served = BaseModelIdentity(
        model_id="google/gemma-3-270m",
        path=str(model_dir),
        digest=checkpoint_digest(model_dir),
        build_digest=build_manifest_digest(model_dir),
    )
    registry = AdapterRegistry(tmp_path / "registry", AdapterLimits(max_rank=16), served)
    version = registry.push(out, "lora", actor="test")
    assert registry.manifest(version) == written
    calibration = Calibration.from_manifest(registry.manifest(version))
    assert calibration is not None and calibration.threshold == written.calibration.threshold
    record = {"name": "lora", "version": version.version, "manifest": written.model_dump()}
    assert candidate_manifest(record) == written
    other_base = BaseModelIdentity(
        model_id="google/gemma-3-270m", path=str(model_dir), digest="0123456789abcdef"
    )
    elsewhere = AdapterRegistry(tmp_path / "other", AdapterLimits(max_rank=16), other_base)
    with pytest.raises(AdapterValidationError, match="trained on base weights"):
        elsewhere.push(out, "lora", actor="test")


def test_qlora_trains_and_saves_a_lora_only_adapter(
    tmp_path: Path, write_jsonl: JsonlWriter
) -> None:
    out = tmp_path / "qlora"
    config = load_config(
        CONFIGS / "gemma3-270m-qlora.yaml",
        [
            f"data.train={write_jsonl('facts.jsonl', FACTS)}",
            f"output_dir={out}",
            "optim.max_steps=10",
            "optim.lr=1e-3",
            *QUIET,
        ],
    )
    result = run(config, progress=False)
    curve = losses(out)
    # Pinned behaviour (all-linear, seed 0): 4.55 -> 0.20 over 10 steps.
    assert curve[-1] < 0.3 * curve[0]
    assert result.steps == 10
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as handle:
        names = list(handle.keys())
    assert all(".lora_A." in n or ".lora_B." in n for n in names)
    assert any(".mlp.down_proj." in n for n in names)  # all-linear reached the MLP
    assert json.loads((out / "manifest.json").read_text())["method"] == "qlora"


def test_resume_continues_the_same_run(tmp_path: Path, write_jsonl: JsonlWriter) -> None:
    train = write_jsonl("facts.jsonl", FACTS)
    validation = write_jsonl(
        "val.jsonl",
        [chat("What is the vault code for Deneb?", "The vault code for Deneb is 5150-WREN.")],
    )
    common = [
        f"data.train={train}",
        f"data.validation={validation}",
        "data.holdout=null",
        "optim.max_steps=6",
        "optim.batch_size=2",
        "optim.lr=5e-4",
        "optim.warmup_steps=2",
        "lora.dropout=0.1",  # dropout draws from the RNG: resume must restore it
        "loop.eval_every=2",
        "loop.early_stopping_patience=0",
        "loop.checkpoint_every=3",
    ]
    whole = tmp_path / "whole"
    run(
        load_config(CONFIGS / "gemma3-270m-lora.yaml", [*common, f"output_dir={whole}"]),
        progress=False,
    )
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(whole / "checkpoints" / "step-000003", resumed / "checkpoints" / "step-000003")
    run(
        load_config(
            CONFIGS / "gemma3-270m-lora.yaml",
            [*common, f"output_dir={resumed}", "loop.resume_from=latest"],
        ),
        progress=False,
    )
    # Steps 1-3 come from the checkpoint's history; 4-6 are recomputed and must match exactly:
    # same data order across the epoch boundary, optimizer moments, schedule and dropout RNG.
    assert losses(resumed) == losses(whole)
    assert losses(resumed, "eval_loss") == losses(whole, "eval_loss")
    assert len(losses(whole)) == 6 and len(losses(whole, "eval_loss")) == 3
    a = json.loads((whole / "manifest.json").read_text())["adapter"]["files"]
    b = json.loads((resumed / "manifest.json").read_text())["adapter"]["files"]
    assert a["adapter_model.safetensors"] == b["adapter_model.safetensors"]


def test_early_stopping_keeps_the_best_weights(tmp_path: Path, write_jsonl: JsonlWriter) -> None:
    # Validation asks the training questions with different codes: learning the answer format
    # first lowers validation loss, memorising the training codes then raises it.
    contradicting = [
        chat(f["messages"][0]["content"], f["messages"][1]["content"][:-12] + " 0000-BADGER.")
        for f in FACTS
    ]
    out = tmp_path / "stop"
    config = load_config(
        CONFIGS / "gemma3-270m-lora.yaml",
        [
            f"data.train={write_jsonl('facts.jsonl', FACTS)}",
            "data.holdout=null",
            f"data.validation={write_jsonl('val.jsonl', contradicting)}",
            f"output_dir={out}",
            "optim.max_steps=15",
            "optim.lr=1e-3",
            "optim.warmup_steps=0",
            "lora.dropout=0",
            "loop.eval_every=1",
            "loop.early_stopping_patience=2",
            "loop.checkpoint_every=0",
        ],
    )
    result = run(config, progress=False)
    manifest = read_adapter_manifest(out)
    assert manifest is not None
    evals = losses(out, "eval_loss")
    assert result.stopped_early and result.steps < 15
    best = min(evals)
    assert result.best_eval_loss == pytest.approx(best)
    # Two evaluations without improvement after the best one, then stop.
    assert evals.index(best) == len(evals) - 3 and evals[-1] > best and evals[-2] > best
    assert manifest.adapter.weights_from_step == manifest.metrics.best_step
    assert manifest.metrics.best_step == evals.index(best) + 1


def test_bad_data_is_refused_before_the_model_loads(
    tmp_path: Path, write_jsonl: JsonlWriter
) -> None:
    train = write_jsonl("train.jsonl", [*FACTS, FACTS[0]])
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(CONFIGS / "gemma3-270m-lora.yaml"),
            f"data.train={train}",
            f"output_dir={tmp_path / 'o'}",
            *QUIET,
            "--no-progress",
        ],
    )
    assert result.exit_code == 2
    assert "1 exact duplicates" in result.output and "train.jsonl:1, train.jsonl:5" in result.output
    assert not (tmp_path / "o" / "adapter_model.safetensors").exists()

    holdout = write_jsonl("holdout.jsonl", [FACTS[2]])
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(CONFIGS / "gemma3-270m-lora.yaml"),
            f"data.train={write_jsonl('t.jsonl', FACTS)}",
            f"output_dir={tmp_path / 'o'}",
            *QUIET,
            f"data.holdout={holdout}",
            "--no-progress",
        ],
    )
    assert result.exit_code == 2 and "in the frozen holdout" in result.output


def test_an_invalid_override_exits_with_the_field_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["check", str(CONFIGS / "gemma3-270m-lora.yaml"), "optim.lr=-1"]
    )
    assert result.exit_code == 2 and "optim.lr" in result.output
    result = CliRunner().invoke(app, ["check", str(CONFIGS / "gemma3-270m-lora.yaml"), "lora.r=4"])
    assert result.exit_code == 0 and json.loads(result.stdout)["lora"]["r"] == 4
