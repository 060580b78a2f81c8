"""The LoRA / QLoRA fine-tuning recipe: setup -> train -> save_checkpoint -> cleanup.

Why a loop of our own rather than transformers' Trainer: the run must resume bit-for-bit (data
order by (seed, epoch, batch index), every RNG, optimizer and schedule), count real (non-pad)
tokens for throughput, pack with exact attention separation, compute logits only where a label
exists (the assistant reply is a few percent of a grounded prompt, and Gemma's 262k-token output
head would otherwise dominate the step on CPU), and refuse the QLoRA inference-repacking trap.
Each of those is a few lines here and a subclass-and-override in Trainer; the loop is ~150 lines
with nothing between the model and the optimizer, which is also what the throughput benchmark
(`eval/perf/train_throughput.py`) compares against a plain transformers + peft loop.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from ragdock.compute_dtype import choose_dtype
from ragdock.contracts.adapter_manifest import (
    AdapterManifest,
    AdapterShape,
    BaseModelRef,
    DataRecord,
    Hardware,
    Leakage,
    TrainMetrics,
)
from ragdock.contracts.model_build import read_build_manifest
from ragdock.contracts.training_history import METRICS_LOG, EvalRecord, StepRecord
from ragdock.digest import sha256_file
from training import artifacts
from training.batching import Batch
from training.checkpoint import (
    LoopState,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
    trainable_state,
)
from training.config import TrainConfig, resolve_device
from training.dataset import PreparedData, epoch_batches, prepare_data
from training.model import (
    assert_not_repacked,
    label_loss,
    load_peft_model,
    load_tokenizer,
    no_grad_eval,
)
from training.render import stop_token_ids
from training.stopping import update_early_stopping

CHECKPOINTS = "checkpoints"


@dataclass
class RunResult:
    """What a finished run reports."""

    output_dir: Path
    steps: int
    final_train_loss: float | None
    best_eval_loss: float | None
    stopped_early: bool
    tokens_per_second: float
    wall_seconds: float
    dtype: str


def default_home() -> Path:
    """RAGDOCK_HOME, else `$XDG_CACHE_HOME/ragdock` (or `~/.cache/ragdock`), as the server uses.

    Not imported from the server package: training depends on nothing of the gateway.
    """
    if os.environ.get("RAGDOCK_HOME"):
        return Path(os.environ["RAGDOCK_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragdock"


class LoRARecipe:
    """One fine-tuning run of a LoRA (or QLoRA) adapter, driven by a `TrainConfig`.

    Args:
        config: the validated run configuration.
        home: RAGDOCK_HOME, where `gemma-3-270m` is built if missing.
        progress: show a progress bar (rich) on the console.
        announce: called with one-line news of the run (the dtype chosen and why).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        home: Path | None = None,
        progress: bool = True,
        announce: Callable[[str], None] | None = None,
    ):
        self.config = config
        self.home = home or default_home()
        self.progress = progress
        self.announce = announce or (lambda _: None)
        self.out = config.output_dir
        self.state = LoopState()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.stopped_early = False
        self._started = time.monotonic()
        self._metrics: artifacts.MetricsLog | None = None
        self.model: Any = None

    # ----------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """Seed, load the tokenizer, check and tokenize the data, build model and optimizer.

        Data problems surface here, before the model is loaded, so a bad file costs seconds.

        Raises:
            DataError: invalid, duplicated or leaking data.
            FileExistsError: output_dir already holds a finished run and resume is not asked.
        """
        from transformers import get_scheduler, set_seed

        from engine.model_build import resolve_model_dir

        cfg = self.config
        resuming = cfg.loop.resume_from is not None
        if not resuming and (self.out / artifacts.ADAPTER_WEIGHTS).exists():
            raise FileExistsError(
                f"{self.out} already holds an adapter; choose another output_dir or "
                "resume with loop.resume_from=latest"
            )
        if cfg.loop.threads:
            torch.set_num_threads(cfg.loop.threads)
        set_seed(cfg.seed)
        self.model_dir = resolve_model_dir(cfg.model, self.home)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.data: PreparedData = prepare_data(
            cfg.data,
            self.tokenizer,
            seed=cfg.seed,
            stop_ids=stop_token_ids(self.tokenizer, self.model_dir),
        )
        self.batches_per_epoch = len(self._epoch(0))
        steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.optim.grad_accum)
        self.total_steps = cfg.optim.max_steps or max(
            1, math.ceil(cfg.optim.epochs * steps_per_epoch)
        )

        # Resolved on the threads training uses, before the model takes memory and time.
        self.dtype_choice = choose_dtype(
            cfg.loop.dtype, home=self.home, device=resolve_device(cfg.loop.device)
        )
        self.announce(f"dtype: {self.dtype_choice.describe()}")
        set_seed(cfg.seed)  # adapter init must not depend on how much RNG data prep consumed
        self.model = load_peft_model(cfg, self.model_dir, self.dtype_choice.dtype)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        schedule = {"constant": "constant_with_warmup"}.get(cfg.optim.schedule, cfg.optim.schedule)
        self.scheduler = get_scheduler(
            schedule,
            self.optimizer,
            num_warmup_steps=cfg.optim.warmup_steps,
            num_training_steps=self.total_steps,
        )
        self.out.mkdir(parents=True, exist_ok=True)
        if resuming:
            assert cfg.loop.resume_from is not None
            path = resolve_resume(cfg.loop.resume_from, self.out / CHECKPOINTS)
            self.state, self.best_weights = load_checkpoint(
                path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
            )
        # The metrics file is rebuilt from the checkpoint's history, so steps a crashed run logged
        # after its last checkpoint do not appear twice.
        self._metrics = artifacts.MetricsLog(self.out / METRICS_LOG, append=False)
        for record in self.state.history:
            self._metrics.write(record)

    def _epoch(self, epoch: int) -> list[Batch]:
        cfg = self.config
        return epoch_batches(
            self.data.train,
            batch_size=cfg.optim.batch_size,
            packing=cfg.data.packing,
            max_seq_len=cfg.data.max_seq_len,
            pad_id=self.tokenizer.pad_token_id,
            seed=cfg.seed,
            epoch=epoch,
        )

    # ----------------------------------------------------------------------------------- train
    def train(self) -> None:
        """Run optimizer steps until max steps/epochs or early stopping."""
        from ragdock.progress import progress_bar

        cfg = self.config
        assert_not_repacked(self.model)
        self.model.train()
        with progress_bar(disable=not self.progress) as bar:
            task = bar.add_task(
                "[bold]train", total=self.total_steps, completed=self.state.step, info=""
            )
            while self.state.step < self.total_steps and not self.stopped_early:
                batches = self._epoch(self.state.epoch)
                while (
                    self.state.batch_in_epoch < len(batches) and self.state.step < self.total_steps
                ):
                    start = self.state.batch_in_epoch
                    group = batches[start : start + cfg.optim.grad_accum]
                    record = self._step(group)
                    self.state.batch_in_epoch += len(group)
                    bar.update(
                        task,
                        completed=self.state.step,
                        info=f"loss {record['loss']:.3f} {record['tokens_per_s']:.0f} tok/s",
                    )
                    if cfg.loop.eval_every and self.state.step % cfg.loop.eval_every == 0:
                        self._evaluate()
                        if self.stopped_early:
                            break
                    if (
                        cfg.loop.checkpoint_every
                        and self.state.step % cfg.loop.checkpoint_every == 0
                    ):
                        self.save_checkpoint()
                if self.state.batch_in_epoch >= len(batches):
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
        evaluated_last = any(
            r.get("step") == self.state.step and "eval_loss" in r for r in self.state.history
        )
        if self.data.validation and not evaluated_last:
            self._evaluate()

    def _step(self, group: list[Batch]) -> dict[str, Any]:
        cfg = self.config
        started = time.monotonic()
        # Normalise by the label tokens of the whole optimizer step, so gradient accumulation
        # weights every token equally (a per-micro-batch mean would over-weight short replies).
        labels = sum(b.num_label_tokens for b in group)
        loss_sum = 0.0
        for batch in group:
            loss, _ = label_loss(self.model, batch)
            if labels:
                (loss / labels).backward()  # type: ignore[no-untyped-call]
            loss_sum += float(loss.detach())
        if cfg.optim.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], cfg.optim.max_grad_norm
            )
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.monotonic() - started
        tokens = sum(b.real_tokens for b in group)
        self.state.step += 1
        self.state.tokens_seen += tokens
        self.state.train_seconds += seconds
        record = StepRecord(
            step=self.state.step,
            epoch=round(
                self.state.epoch
                + (self.state.batch_in_epoch + len(group)) / max(1, self.batches_per_epoch),
                4,
            ),
            loss=loss_sum / max(1, labels),
            lr=lr,
            tokens=tokens,
            label_tokens=labels,
            tokens_per_s=tokens / seconds if seconds else 0.0,
            seconds=round(seconds, 4),
        ).model_dump()
        self._log(record)
        return record

    def _evaluate(self) -> float:
        cfg = self.config
        batches = epoch_batches(
            self.data.validation,
            batch_size=cfg.optim.batch_size,
            packing=cfg.data.packing,
            max_seq_len=cfg.data.max_seq_len,
            pad_id=self.tokenizer.pad_token_id,
            seed=cfg.seed,
            epoch=0,
            shuffle=False,
        )
        total, count = 0.0, 0
        with no_grad_eval(self.model):
            for batch in batches:
                loss, n = label_loss(self.model, batch)
                total += float(loss)
                count += n
        eval_loss = total / max(1, count)
        improved, self.stopped_early = update_early_stopping(
            self.state,
            eval_loss,
            patience=cfg.loop.early_stopping_patience,
            min_delta=cfg.loop.early_stopping_min_delta,
        )
        if improved:
            self.best_weights = trainable_state(self.model)
        self._log(
            EvalRecord(
                step=self.state.step,
                eval_loss=eval_loss,
                best_eval_loss=self.state.best_eval_loss,
            ).model_dump()
        )
        return eval_loss

    def _log(self, record: dict[str, Any]) -> None:
        # Every record is kept for the plot and for resume; only every log_every-th step is written.
        self.state.history.append(record)
        is_step = "loss" in record
        if self._metrics and (not is_step or record["step"] % self.config.loop.log_every == 0):
            self._metrics.write(record)

    # ------------------------------------------------------------------------ save_checkpoint
    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the run as it stands."""
        return save_checkpoint(
            self.out / CHECKPOINTS,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            loop=self.state,
            best_weights=self.best_weights,
            keep=self.config.loop.keep_checkpoints,
        )

    def save_final(self) -> RunResult:
        """Write the adapter (best or last weights), manifest, model card, metrics and plot."""
        cfg = self.config
        if cfg.loop.save_best and self.best_weights is not None:
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, tensor in self.best_weights.items():
                    params[name].copy_(tensor)
        self.model.save_pretrained(
            str(self.out), safe_serialization=True, save_embedding_layers=False
        )
        artifacts.check_adapter_dir(self.out)
        steps = [r for r in self.state.history if "loss" in r]
        wall = time.monotonic() - self._started
        tokens_per_s = (
            self.state.tokens_seen / self.state.train_seconds if self.state.train_seconds else 0.0
        )
        result = RunResult(
            output_dir=self.out,
            steps=self.state.step,
            final_train_loss=steps[-1]["loss"] if steps else None,
            best_eval_loss=self.state.best_eval_loss,
            stopped_early=self.stopped_early,
            tokens_per_second=tokens_per_s,
            wall_seconds=wall,
            dtype=self.dtype_choice.dtype,
        )
        manifest = self._manifest(result)
        manifest.write(self.out)
        artifacts.plot_loss_curve(
            self.state.history,
            self.out / "loss_curve.png",
            title=f"{cfg.method} r={cfg.lora.r} on {cfg.data.train.name}",
        )
        artifacts.write_model_card(self.out / "README.md", manifest)
        return result

    def _manifest(self, result: RunResult) -> AdapterManifest:
        from engine.model_build import checkpoint_digest

        cfg = self.config
        build = read_build_manifest(self.model_dir)
        model_id = (
            build.model_id
            if build is not None
            else json.loads((self.model_dir / "config.json").read_text()).get("_name_or_path")
        )
        adapter_config = json.loads((self.out / artifacts.ADAPTER_CONFIG).read_text())
        first = next((r["loss"] for r in self.state.history if "loss" in r), None)
        data = self.data
        return AdapterManifest(
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            base_model=BaseModelRef(
                name=cfg.model, id=model_id or cfg.model, digest=checkpoint_digest(self.model_dir)
            ),
            method=cfg.method,
            adapter=AdapterShape(
                r=adapter_config["r"],
                alpha=adapter_config["lora_alpha"],
                target_modules=adapter_config["target_modules"],
                files={
                    name: sha256_file(self.out / name)
                    for name in (artifacts.ADAPTER_CONFIG, artifacts.ADAPTER_WEIGHTS)
                },
                weights_from_step=(
                    self.state.best_step
                    if cfg.loop.save_best and self.best_weights is not None
                    else self.state.step
                ),
            ),
            data=DataRecord(
                files=dict(data.files),
                train_examples=len(data.train),
                validation_examples=len(data.validation),
                duplicates_dropped=data.duplicates_dropped,
                too_long_dropped=(
                    data.train_report.dropped_too_long + data.validation_report.dropped_too_long
                ),
                train_tokens=data.train_report.total_tokens,
                train_label_tokens=data.train_report.label_tokens,
                leakage=Leakage(status=data.leakage.status, **asdict(data.leakage)),
            ),
            seed=cfg.seed,
            config=cfg.model_dump(mode="json"),
            libraries=artifacts.library_versions(),
            hardware=Hardware(
                device=resolve_device(cfg.loop.device),
                torch_threads=torch.get_num_threads(),
                dtype=self.dtype_choice.record(),
            ),
            metrics=TrainMetrics(
                steps=result.steps,
                epochs=round(
                    self.state.epoch + self.state.batch_in_epoch / max(1, self.batches_per_epoch), 3
                ),
                first_train_loss=first,
                final_train_loss=result.final_train_loss,
                best_eval_loss=result.best_eval_loss,
                best_step=self.state.best_step,
                stopped_early=result.stopped_early,
                tokens_seen=self.state.tokens_seen,
                tokens_per_second=round(result.tokens_per_second, 1),
                train_seconds=round(self.state.train_seconds, 1),
                wall_seconds=round(result.wall_seconds, 1),
            ),
        )

    # ---------------------------------------------------------------------------------- cleanup
    def cleanup(self) -> None:
        """Close files and drop the model so its memory is returned before the process moves on."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        self.model = None
        self.optimizer = None  # type: ignore[assignment]


def run(
    config: TrainConfig,
    *,
    home: Path | None = None,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
) -> RunResult:
    """setup -> train -> save -> cleanup, with a checkpoint left behind if training is interrupted.

    Args:
        config: the run.
        home: RAGDOCK_HOME (model builds, the dtype probe's cache).
        progress: show a progress bar.
        announce: called with one-line news of the run (the dtype chosen and why).

    Returns:
        The run's summary (also in `output_dir/manifest.json`).
    """
    recipe = LoRARecipe(config, home=home, progress=progress, announce=announce)
    try:
        recipe.setup()
        try:
            recipe.train()
        except KeyboardInterrupt:
            if config.loop.checkpoint_every:
                recipe.save_checkpoint()
            raise
        return recipe.save_final()
    finally:
        recipe.cleanup()
