"""The reader recipe: setup -> train -> save -> cleanup, like the adapter's (`training/recipe.py`).

An explicit loop for the same reasons as there: exact resume (data order a function of (seed,
epoch), every RNG, optimizer and schedule in the checkpoint), dynamic padding with length
buckets, and validation on whole held-out articles with metrics of our own (answerability AUROC
with hard negatives, span F1) rather than a loss, which is what selects the saved weights.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from grounding.reader.batching import collate, epoch_batches
from grounding.reader.model import (
    base_identity,
    base_model_dir,
    batch_logits,
    build_model,
    check_base,
    load_tokenizer,
    load_trained_state,
)
from grounding.reader.windows import Window, WindowSettings, make_windows
from ragdock.compute_dtype import choose_dtype, torch_dtype
from ragdock.contracts.reader import (
    READER_MANIFEST_FILE,
    ReaderDataFile,
    ReaderDataRecord,
    ReaderDecoding,
    ReaderHardware,
    ReaderLoraShape,
    ReaderManifest,
    ReaderParent,
    ReaderThreshold,
    ReaderTraining,
    ReaderWeights,
    read_reader_manifest,
)
from ragdock.digest import sha256_file
from ragdock.progress import progress_bar
from training.artifacts import MetricsLog, library_versions
from training.config import resolve_device
from training.reader import artifacts, checkpoint
from training.reader.checkpoint import ReaderLoopState
from training.reader.config import ReaderConfig
from training.reader.evaluate import EvalSet, evaluate, prepare_eval_set
from training.reader.loss import span_loss, trained_state
from training.reader.squad import Article, SquadError, read_squad, split_articles
from training.reader.windows import build_pairs

CHECKPOINTS = "checkpoints"
WEIGHTS = "reader_weights.safetensors"


@dataclass
class ReaderRunResult:
    """What a finished run reports (the CLI prints it as a table)."""

    output_dir: Path
    steps: int
    best_step: int | None
    select_metric: str
    best_value: float | None
    stopped_early: bool
    seconds_per_step: float
    wall_seconds: float


def default_home() -> Path:
    # As the adapter recipe resolves it (not imported: nothing of Gemma's recipe is needed).
    if os.environ.get("RAGDOCK_HOME"):
        return Path(os.environ["RAGDOCK_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragdock"


class ReaderRecipe:
    """One reader training run, driven by a `ReaderConfig`.

    Args:
        config: the validated configuration.
        home: RAGDOCK_HOME (the dtype probe's cache).
        progress: show a progress bar.
        announce: called with one-line news (dtype, data, evaluations, step lines off a terminal).
    """

    def __init__(
        self,
        config: ReaderConfig,
        *,
        home: Path | None = None,
        progress: bool = True,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.home = home or default_home()
        self.progress = progress
        self.announce = announce or (lambda _: None)
        self.out = config.output_dir
        self.state = ReaderLoopState()
        self.best: dict[str, torch.Tensor] | None = None
        self.stopped_early = False
        self.stop_requested = False  # set by SIGTERM / Ctrl-C: stop after the current step
        self._started = time.monotonic()
        self._metrics: MetricsLog | None = None
        self.model: Any = None

    # ----------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """Read and split the data, tokenize windows, build model, optimizer, schedule; resume.

        Raises:
            SquadError: a data file is not SQuAD-format or the split does not fit the files.
            FileExistsError: output_dir holds a finished reader.
            checkpoint.ResumeError: the newest checkpoint was written under another config.
        """
        from transformers import get_scheduler, set_seed

        cfg = self.config
        if (self.out / READER_MANIFEST_FILE).exists():
            raise FileExistsError(
                f"{self.out} already holds a finished reader; choose another output_dir"
            )
        if cfg.loop.threads:
            torch.set_num_threads(cfg.loop.threads)
        set_seed(cfg.seed)
        self.model_dir = base_model_dir()
        self.tokenizer = load_tokenizer(self.model_dir)
        self.settings = WindowSettings(
            cfg.data.max_seq_len, cfg.data.stride, cfg.data.max_question_tokens
        )
        self._read_data()
        # The data's bytes belong to the run too: a resume over edited files is refused.
        self.fingerprint = {**cfg.fingerprint(), "data_sha256": [f.sha256 for f in self.files]}
        self.steps_per_epoch = len(self._epoch(0))
        self.total_steps = cfg.optim.max_steps or max(
            1, math.ceil(cfg.optim.epochs * self.steps_per_epoch)
        )
        self.announce(
            f"data: {len(self.train_windows)} train windows ({self.steps_per_epoch} steps/epoch), "
            f"{len(self.validation.windows)} validation windows; {self.total_steps} steps"
        )
        self.dtype_choice = choose_dtype(
            cfg.loop.dtype, home=self.home, device=resolve_device(cfg.loop.device)
        )
        self.announce(f"dtype: {self.dtype_choice.describe()}")
        set_seed(cfg.seed)  # the head's init must not depend on how much RNG data prep used
        self.model = build_model(
            self.model_dir,
            method=cfg.method,
            lora=ReaderLoraShape(**cfg.lora.model_dump()) if cfg.method == "lora" else None,
            init_std=cfg.head.init_std,
            dtype=torch_dtype(self.dtype_choice.dtype),
        ).to(resolve_device(cfg.loop.device))
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=cfg.optim.lr)
        self.scheduler = get_scheduler(
            cfg.optim.schedule,
            self.optimizer,
            num_warmup_steps=math.ceil(cfg.optim.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.out.mkdir(parents=True, exist_ok=True)
        found = checkpoint.newest(self.out / CHECKPOINTS)
        if found is not None and cfg.loop.resume == "never":
            raise FileExistsError(
                f"{self.out / CHECKPOINTS} holds checkpoints of an earlier run; resume it with "
                "loop.resume=auto, or delete them to start over"
            )
        self.parent = self._parent() if cfg.init_from else None
        if found is None and self.parent is not None:
            self.announce(
                f"init_from {cfg.init_from}: weights of its step {self.parent.from_step} "
                f"({self.parent.trained_steps} steps trained before this run)"
            )
        if found is not None:
            self.state, self.best = checkpoint.restore(
                found,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                fingerprint=self.fingerprint,
            )
            self.announce(f"resumed from {found} (step {self.state.step}/{self.total_steps})")
        # Rebuilt from the checkpoint's history: steps logged after it do not appear twice.
        self._metrics = MetricsLog(self.out / "metrics.jsonl", append=False)
        for record in self.state.history:
            self._metrics.write(record)

    def _parent(self) -> ReaderParent:
        """Load `init_from`'s weights into the new model (a resume overwrites them) and say
        which reader they were.

        Raises:
            ValueError: the parent was trained with another method.
            ContractError, BaseMismatchError: no reader there, or on another base.
        """
        directory = self.config.init_from
        assert directory is not None
        parent = read_reader_manifest(directory)
        if parent.method != self.config.method:
            raise ValueError(
                f"init_from {directory} is a {parent.method} reader; "
                f"this run is {self.config.method}"
            )
        check_base(parent.base, self.model_dir)
        weights_path = directory / parent.weights.file
        digest = sha256_file(weights_path)
        if digest != parent.weights.sha256:
            raise ValueError(f"{weights_path} does not match its manifest's sha256")
        load_trained_state(
            self.model, load_file(str(weights_path)), from_base=parent.weights.from_base
        )
        earlier = parent.training.init_from.trained_steps if parent.training.init_from else 0
        return ReaderParent(
            weights_sha256=digest,
            from_step=parent.weights.from_step,
            trained_steps=earlier + parent.weights.from_step,
        )

    def _read_data(self) -> None:
        cfg = self.config
        articles: list[Article] = []
        self.files: list[ReaderDataFile] = []
        for path in cfg.data.files:
            found = read_squad(path)
            articles += found
            self.files.append(
                ReaderDataFile(
                    path=str(path),
                    sha256=sha256_file(path),
                    articles=len(found),
                    questions=sum(len(a.questions) for a in found),
                )
            )
        self.splits = split_articles(
            articles, cfg.data.splits.model_dump(), cfg.data.unused_articles
        )
        self.raft_holdout = self._check_raft_holdout()
        pairs = build_pairs(
            self.splits["train"],
            hard_negatives_per_question=cfg.data.hard_negatives,
            max_questions=cfg.data.max_train_questions,
            seed=cfg.seed,
            swapped=cfg.data.swapped_negatives,
        )
        self.train_windows: list[Window] = make_windows(self.tokenizer, pairs, self.settings)
        self.validation = self._eval_set("validation", cfg.eval.max_questions)
        self.counts = {
            "train": {
                "questions": sum(1 for p in pairs if p.kind == "gold"),
                "answerable": sum(1 for p in pairs if p.kind == "gold" and p.question.answerable),
                "hard_negatives": sum(1 for p in pairs if p.kind == "hard_negative"),
                "swapped": sum(1 for p in pairs if p.kind == "swapped"),
                "windows": len(self.train_windows),
                "answer_windows": sum(1 for w in self.train_windows if w.start > 0),
            }
        }

    def _eval_set(self, split: str, max_questions: int | None) -> EvalSet:
        return prepare_eval_set(
            split,
            self.splits[split],
            self.tokenizer,
            self.settings,
            hard_negatives=self.config.eval.hard_negatives,
            max_questions=max_questions,
            seed=self.config.eval.seed,
        )

    def _check_raft_holdout(self) -> ReaderDataFile | None:
        path = self.config.data.raft_holdout
        if path is None:
            return None
        import json

        titles = set()
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                titles.add(str(json.loads(line)["metadata"]["article"]))
        outside = sorted(titles - set(self.config.data.splits.test))
        if outside:
            raise SquadError(
                f"the RAFT holdout {path} asks about {outside}, which are not in data.splits.test;"
                " the adapter's holdout must stay unseen by the reader: move them to test"
            )
        return ReaderDataFile(
            path=str(path), sha256=sha256_file(path), articles=len(titles), questions=0
        )

    def _param_groups(self) -> list[dict[str, Any]]:
        cfg = self.config.optim
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            head = "qa_outputs" in name
            decay = param.ndim >= 2 and "LayerNorm" not in name  # no decay on biases and norms
            groups.setdefault((head, decay), []).append(param)
        return [
            {
                "params": params,
                "lr": (cfg.head_lr or cfg.lr) if head else cfg.lr,
                "weight_decay": cfg.weight_decay if decay else 0.0,
            }
            for (head, decay), params in sorted(groups.items())
        ]

    def _epoch(self, epoch: int) -> list[list[int]]:
        cfg = self.config
        return epoch_batches(
            [len(w) for w in self.train_windows],
            batch_size=cfg.optim.batch_size,
            seed=cfg.seed,
            epoch=epoch,
            bucket_batches=cfg.optim.bucket_batches,
        )

    # ----------------------------------------------------------------------------------- train
    def train(self) -> None:
        """Optimizer steps until max steps/epochs or early stopping; validation and checkpoints."""
        from rich.console import Console

        cfg = self.config
        console = Console(stderr=True)
        lines = not console.is_terminal  # a log file gets a line per print_every steps instead
        self.model.train()
        with progress_bar(console, disable=not self.progress or lines) as bar:
            task = bar.add_task(
                "train reader", total=self.total_steps, completed=self.state.step, info=""
            )
            while self.state.step < self.total_steps and not self.stopped_early:
                batches = self._epoch(self.state.epoch)
                while self.state.batch_in_epoch < len(batches) and (
                    self.state.step < self.total_steps
                ):
                    if self.stop_requested:  # between steps: the state is consistent here
                        self._stop()
                    record = self._step(batches[self.state.batch_in_epoch])
                    info = f"loss {record['loss']:.3f} {record['seconds']:.1f} s/step"
                    bar.update(task, completed=self.state.step, info=info)
                    if lines and self.state.step % cfg.loop.print_every == 0:
                        self.announce(self._step_line(record))
                    if cfg.loop.eval_every and self.state.step % cfg.loop.eval_every == 0:
                        self._evaluate()
                        self.model.train()
                    if cfg.loop.checkpoint_every and (
                        self.state.step % cfg.loop.checkpoint_every == 0 or self.stopped_early
                    ):
                        self.save_checkpoint()
                    if self.stopped_early:
                        break
                if self.state.batch_in_epoch >= len(batches):
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
        if not any(r.get("step") == self.state.step and "eval" in r for r in self.state.history):
            self._evaluate()

    def _stop(self) -> None:
        if self.config.loop.checkpoint_every:
            self.announce(f"stopping: checkpoint {self.save_checkpoint()}")
        raise KeyboardInterrupt

    def _step_line(self, record: dict[str, Any]) -> str:
        recent = [r["loss"] for r in self.state.history if "loss" in r][
            -self.config.loop.print_every :
        ]
        per_step = self.state.train_seconds / max(1, self.state.step)
        left = (self.total_steps - self.state.step) * per_step
        return (
            f"step {record['step']}/{self.total_steps} epoch {record['epoch']:.2f} "
            f"loss {sum(recent) / len(recent):.3f} lr {record['lr']:.2e} "
            f"{record['seconds']:.1f} s/step, ~{left / 3600:.1f} h left"
        )

    def _step(self, indices: list[int]) -> dict[str, Any]:
        cfg = self.config
        started = time.monotonic()
        device = next(self.model.parameters()).device
        batch = collate(self.train_windows, indices, self.tokenizer.pad_token_id).to(device)
        start, end = batch_logits(self.model, batch)
        loss = span_loss(start, end, batch)
        loss.backward()  # type: ignore[no-untyped-call]
        if cfg.optim.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], cfg.optim.max_grad_norm
            )
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.monotonic() - started
        self.state.step += 1
        self.state.batch_in_epoch += 1
        self.state.windows_seen += len(indices)
        self.state.train_seconds += seconds
        record = {
            "step": self.state.step,
            "epoch": round(self.state.epoch + self.state.batch_in_epoch / self.steps_per_epoch, 4),
            "loss": float(loss.detach()),
            "lr": lr,
            "windows": len(indices),
            "tokens": batch.real_tokens,
            "width": int(batch.input_ids.shape[1]),
            "seconds": round(seconds, 3),
        }
        self._log(record)
        return record

    def _evaluate(self) -> dict[str, float | None]:
        cfg = self.config
        started = time.monotonic()
        self.model.eval()
        metrics = evaluate(
            self.model,
            self.validation,
            pad_id=self.tokenizer.pad_token_id,
            batch_size=cfg.eval.batch_size,
            max_answer_tokens=cfg.eval.max_answer_tokens,
        )
        value = metrics.get(cfg.eval.select_metric)
        state = self.state
        improved = value is not None and (
            state.best_value is None or value > state.best_value + cfg.loop.early_stopping_min_delta
        )
        if improved:
            state.best_value, state.best_step = value, state.step
            state.evals_without_improvement = 0
            self.best = trained_state(self.model)
        else:
            state.evals_without_improvement += 1
            patience = cfg.loop.early_stopping_patience
            self.stopped_early = bool(patience) and state.evals_without_improvement >= patience
        seconds = time.monotonic() - started
        self._log(
            {
                "step": state.step,
                "eval": metrics,
                "select": value,
                "best": state.best_value,
                "best_step": state.best_step,
                "seconds": round(seconds, 1),
            }
        )
        shown = ", ".join(
            f"{k} {metrics[k]:.3f}"
            for k in ("auroc_gold", "auroc_hard_negatives", "auroc_all", "forced_f1", "best_f1")
            if metrics.get(k) is not None
        )
        self.announce(
            f"eval step {state.step}: {shown} ({seconds:.0f} s)"
            + (" [best]" if improved else "")
            + (" -> early stop" if self.stopped_early else "")
        )
        return metrics

    def _log(self, record: dict[str, Any]) -> None:
        self.state.history.append(record)
        is_step = "loss" in record
        if self._metrics and (not is_step or record["step"] % self.config.loop.log_every == 0):
            self._metrics.write(record)

    # ------------------------------------------------------------------------ save_checkpoint
    def save_checkpoint(self) -> Path:
        """A resumable checkpoint of the run as it stands."""
        return checkpoint.save(
            self.out / CHECKPOINTS,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            loop=self.state,
            best=self.best,
            fingerprint=self.fingerprint,
            keep=self.config.loop.keep_checkpoints,
        )

    def save_final(self) -> ReaderRunResult:
        """Write the weights (best or last), eval summary, manifest, model card and curve."""
        cfg = self.config
        from_step = self.state.step
        if cfg.loop.save_best and self.best is not None:
            load_trained_state(self.model, self.best)
            from_step = self.state.best_step or self.state.step
        weights, from_base = self._exported_weights()
        save_file(weights, str(self.out / WEIGHTS), metadata={"format": "pt"})
        # Evaluate what is stored: the model takes the exported weights (rounded, base tensors).
        self._restore_base(from_base)
        load_trained_state(self.model, weights, from_base=from_base)
        self.model.eval()
        results: dict[str, Any] = {}
        for split in cfg.eval.final_splits:
            eval_set = self._eval_set(split, cfg.eval.final_max_questions)
            results[split] = evaluate(
                self.model,
                eval_set,
                pad_id=self.tokenizer.pad_token_id,
                batch_size=cfg.eval.batch_size,
                max_answer_tokens=cfg.eval.max_answer_tokens,
            )
            self.counts[split] = {
                "questions": int(results[split]["questions"] or 0),
                "answerable": int(results[split]["answerable"] or 0),
                "hard_negatives": int(results[split]["hard_negatives"] or 0),
                "windows": len(eval_set.windows),
            }
        threshold = self._threshold(results.get("calibration"))
        steps = [r for r in self.state.history if "loss" in r]
        wall = time.monotonic() - self._started
        result = ReaderRunResult(
            output_dir=self.out,
            steps=self.state.step,
            best_step=self.state.best_step,
            select_metric=cfg.eval.select_metric,
            best_value=self.state.best_value,
            stopped_early=self.stopped_early,
            seconds_per_step=self.state.train_seconds / max(1, self.state.step),
            wall_seconds=wall,
        )
        manifest = ReaderManifest(
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            base=base_identity(self.model_dir),
            method=cfg.method,
            lora=ReaderLoraShape(**cfg.lora.model_dump()) if cfg.method == "lora" else None,
            weights=ReaderWeights(
                file=WEIGHTS,
                sha256=sha256_file(self.out / WEIGHTS),
                bytes=(self.out / WEIGHTS).stat().st_size,
                tensors=len(weights),
                from_step=from_step,
                dtype=cfg.export.dtype,
                from_base=from_base,
            ),
            decoding=ReaderDecoding(
                max_seq_len=cfg.data.max_seq_len,
                stride=cfg.data.stride,
                max_question_tokens=cfg.data.max_question_tokens,
                max_answer_tokens=cfg.eval.max_answer_tokens,
            ),
            data=ReaderDataRecord(
                files=self.files,
                splits={k: [a.title for a in v] for k, v in self.splits.items()},
                unused_articles=cfg.data.unused_articles,
                raft_holdout=self.raft_holdout,
                counts=self.counts,
            ),
            seed=cfg.seed,
            config=cfg.model_dump(mode="json"),
            libraries=library_versions(),
            hardware=ReaderHardware(
                device=resolve_device(cfg.loop.device),
                torch_threads=torch.get_num_threads(),
                dtype=self.dtype_choice.record(),
            ),
            training=ReaderTraining(
                steps=self.state.step,
                epochs=round(
                    self.state.epoch + self.state.batch_in_epoch / self.steps_per_epoch, 3
                ),
                first_train_loss=steps[0]["loss"] if steps else None,
                final_train_loss=steps[-1]["loss"] if steps else None,
                select_metric=cfg.eval.select_metric,
                best_value=self.state.best_value,
                best_step=self.state.best_step,
                stopped_early=self.stopped_early,
                windows_seen=self.state.windows_seen,
                train_seconds=round(self.state.train_seconds, 1),
                seconds_per_step=round(result.seconds_per_step, 3),
                wall_seconds=round(wall, 1),
                init_from=self.parent,
            ),
            validation=results.get("validation") or {},
            threshold=threshold,
        )
        artifacts.write_eval_summary(
            self.out / artifacts.EVAL_SUMMARY,
            {"weights_from_step": from_step, "threshold": threshold and threshold.model_dump(),
             "splits": {k: {"articles": [a.title for a in self.splits[k]], **v}
                        for k, v in results.items()}},
        )  # fmt: skip
        artifacts.plot_curve(
            self.state.history,
            self.out / artifacts.CURVE,
            select_metric=cfg.eval.select_metric,
            title=f"reader ({cfg.method}) on {', '.join(p.name for p in cfg.data.files)}",
        )
        artifacts.write_model_card(self.out / "README.md", manifest, results)
        manifest.write(self.out)  # last: its presence marks the run finished
        return result

    def _exported_weights(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The trained tensors as stored: in the export dtype, less those taken from the base."""
        export = self.config.export
        state = trained_state(self.model)
        from_base = [name for name in export.from_base if name in state]
        dtype = torch.float16 if export.dtype == "float16" else torch.float32
        weights = {
            k: v.to(dtype).contiguous().cpu() for k, v in state.items() if k not in from_base
        }
        return weights, from_base

    def _restore_base(self, names: list[str]) -> None:
        """Put the base's values back into the named parameters (as a loaded reader has them)."""
        if not names:
            return
        cfg = self.config
        fresh = dict(
            build_model(
                self.model_dir,
                method=cfg.method,
                lora=ReaderLoraShape(**cfg.lora.model_dump()) if cfg.method == "lora" else None,
                init_std=cfg.head.init_std,
            ).named_parameters()
        )
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name in names:
                params[name].copy_(fresh[name].to(params[name].dtype))

    def _threshold(self, metrics: dict[str, float | None] | None) -> ReaderThreshold | None:
        if not metrics or metrics.get("best_f1_with_negatives_threshold") is None:
            return None
        return ReaderThreshold(
            value=float(metrics["best_f1_with_negatives_threshold"] or 0.0),
            split="calibration",
            articles=[a.title for a in self.splits["calibration"]],
            objective="SQuAD 2.0 F1 over gold paragraphs and hard negatives",
            achieved=float(metrics["best_f1_with_negatives"] or 0.0),
        )

    # ---------------------------------------------------------------------------------- cleanup
    def cleanup(self) -> None:
        """Close the metrics file and drop the model and optimizer."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        self.model = None
        self.optimizer = None  # type: ignore[assignment]


@contextmanager
def _stop_gracefully(recipe: ReaderRecipe) -> Iterator[None]:
    # SIGTERM (`kill PID`, a closing session) and Ctrl-C ask the loop to stop after the current
    # step and leave a checkpoint; a second signal interrupts at once (without one). A signal
    # cannot be handled off the main thread, so there the defaults stay.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        if recipe.stop_requested:
            raise KeyboardInterrupt
        recipe.stop_requested = True
        recipe.announce(f"{signal.Signals(signum).name}: stopping after this step")

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run(
    config: ReaderConfig,
    *,
    home: Path | None = None,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
    finish: bool = False,
) -> ReaderRunResult:
    """setup -> train -> save -> cleanup; a stopped run (Ctrl-C, SIGTERM: after the current step)
    leaves a checkpoint that the same command resumes from.

    With `finish`, the reader is written from the newest checkpoint (its best weights) without
    training further: a long run ended where its validation score says it is good enough.

    Raises:
        KeyboardInterrupt: the run was stopped (its checkpoint written).

    Returns:
        The run's summary (the full record is `output_dir/manifest.json`).
    """
    recipe = ReaderRecipe(config, home=home, progress=progress, announce=announce)
    try:
        with _stop_gracefully(recipe):
            recipe.setup()
            if finish:
                if recipe.state.step == 0:
                    raise FileNotFoundError(
                        f"{config.output_dir} has no checkpoint to finish from; train first"
                    )
            else:
                recipe.train()
            return recipe.save_final()
    finally:
        recipe.cleanup()
