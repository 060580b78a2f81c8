"""The tiny random-init Gemma (`tests.fakes.gemma`) has the real Gemma 3 270M's layout, so what
the gateway reads from a checkpoint's config.json (the LoRA-able layers and their shapes, which
the registry checks every adapter against) holds for both: the same contract, on the tiny model
in the fast tier and on the real checkpoint in the full one."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from adapters.errors import AdapterValidationError
from adapters.validation import AdapterLimits, module_shapes_from_config, validate_adapter_dir
from engine.model_build import resolve_model_dir
from ragdock.settings import Settings
from server.base_model import served_module_shapes
from tests.fakes import tiny_gemma_checkpoint
from tests.fakes.gemma import tiny_gemma_model

LORA_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gemma_checkpoint(tmp_path_factory.mktemp("tiny") / "gemma")


@pytest.fixture(params=[pytest.param("tiny"), pytest.param("real", marks=pytest.mark.model)])
def checkpoint(request: pytest.FixtureRequest, tiny_dir: Path) -> Path:
    if request.param == "tiny":
        return tiny_dir
    real: Path = request.getfixturevalue("model_dir")
    return real


def linear_shapes(config: dict[str, Any]) -> dict[str, set[tuple[int, int]]]:
    """(in, out) of every LoRA-able linear layer of the model built from `config`, by module
    name, read off the model object itself (on the meta device: no weights, even for 270M)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    with torch.device("meta"):
        model = Gemma3ForCausalLM(Gemma3TextConfig(**config))
    shapes: dict[str, set[tuple[int, int]]] = {}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and leaf in LORA_MODULES:
            shapes.setdefault(leaf, set()).add((module.in_features, module.out_features))
    return shapes


def lora_dir(directory: Path, shapes: dict[str, tuple[int, int]], rank: int = 4) -> Path:
    """A LoRA adapter on layer 0's modules, laid out as peft saves one."""
    directory.mkdir(parents=True)
    tensors = {}
    for module, (fan_in, fan_out) in shapes.items():
        part = "self_attn" if module.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
        prefix = f"base_model.model.model.layers.0.{part}.{module}"
        tensors[f"{prefix}.lora_A.weight"] = torch.zeros(rank, fan_in)
        tensors[f"{prefix}.lora_B.weight"] = torch.zeros(fan_out, rank)
    save_file(tensors, directory / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 8, "target_modules": sorted(shapes),
              "base_model_name_or_path": "gemma"}  # fmt: skip
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


def test_the_shapes_the_registry_derives_are_the_models_own(checkpoint: Path) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "gemma3_text"
    assert config["architectures"] == ["Gemma3ForCausalLM"]
    derived = module_shapes_from_config(config)
    assert derived is not None and set(derived) == LORA_MODULES
    assert linear_shapes(config) == {module: {shape} for module, shape in derived.items()}
    # The gateway reads the same from the checkpoint directory it is configured with.
    settings = Settings.model_validate({"home": checkpoint.parent, "model": str(checkpoint)})
    assert resolve_model_dir(str(checkpoint), checkpoint.parent) == checkpoint
    assert served_module_shapes(settings) == derived


def test_an_adapter_fits_its_base_and_one_of_another_size_is_refused(
    checkpoint: Path, tmp_path: Path
) -> None:
    shapes = module_shapes_from_config(json.loads((checkpoint / "config.json").read_text()))
    assert shapes is not None
    limits = AdapterLimits(max_rank=16, module_shapes=shapes)
    info = validate_adapter_dir(lora_dir(tmp_path / "fits", shapes), limits)
    assert set(info.target_modules) == LORA_MODULES
    narrow = {**shapes, "q_proj": (shapes["q_proj"][0] // 2, shapes["q_proj"][1])}
    with pytest.raises(AdapterValidationError, match="another size"):
        validate_adapter_dir(lora_dir(tmp_path / "narrow", narrow), limits)


@pytest.mark.model
def test_the_tiny_model_has_the_real_ones_layout(tiny_dir: Path, model_dir: Path) -> None:
    def layout(directory: Path) -> dict[str, Any]:
        config = json.loads((directory / "config.json").read_text())
        keys = ("model_type", "architectures", "hidden_activation", "tie_word_embeddings")
        heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
        return {
            **{key: config.get(key) for key in keys},
            "layer kinds": set(config["layer_types"]),
            "grouped-query attention": kv_heads < heads,
            "head_dim apart from hidden/heads": config["head_dim"] * heads != config["hidden_size"],
        }

    assert layout(tiny_dir) == layout(model_dir)
    with torch.device("meta"):
        tiny = tiny_gemma_model()
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        real = AutoModelForCausalLM.from_config(tiny.config.__class__.from_pretrained(model_dir))

    def names(model: torch.nn.Module) -> set[str]:  # the module names, layer index aside
        return {re.sub(r"\.\d+(\.|$)", r".N\1", n) for n, _ in model.named_modules()}

    assert names(tiny) == names(real)


def test_the_tiny_model_runs_and_is_seeded() -> None:
    ids = torch.tensor([[2, 17, 33, 5]])
    with torch.no_grad():
        first = tiny_gemma_model(seed=3)(ids).logits
        again = tiny_gemma_model(seed=3)(ids).logits
        other = tiny_gemma_model(seed=4)(ids).logits
    assert first.shape == (1, 4, 512) and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.equal(first, other)
