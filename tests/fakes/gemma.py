"""A tiny random-init Gemma 3 for tests that need a model object or a checkpoint directory but
not the real 270M weights (torchtune keeps such checkpoints in `tests/assets/`; this one is made
on the spot, in well under a second).

The layout is the real Gemma 3 270M's (model type `gemma3_text`, grouped-query attention with one
KV head, `head_dim` apart from `hidden_size / heads`, sliding and full attention layers, tied
embeddings) at toy sizes, so code that reads layer names and shapes from a config (the adapter
registry's shape check, peft's targeting) sees what it sees on the real model;
`tests/unit/test_tiny_gemma.py` checks that against the real checkpoint's config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The real 270M: hidden 640, 4 heads, 1 KV head, head_dim 256, 2048 intermediate, 18 layers,
# 262144 tokens. Here every size is small, and head_dim * heads != hidden as there.
TINY_SIZES: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "query_pre_attn_scalar": 32,
    "max_position_embeddings": 512,
    "sliding_window": 64,
    "layer_types": ["sliding_attention", "full_attention"],
}


def tiny_gemma_config(**overrides: Any) -> Any:
    """A `Gemma3TextConfig` with the sizes above (`overrides` win)."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**{**TINY_SIZES, **overrides})


def tiny_gemma_model(seed: int = 0, **overrides: Any) -> Any:
    """A `Gemma3ForCausalLM` with random weights (seeded), in float32 and eval mode."""
    import torch
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(seed)
    return Gemma3ForCausalLM(tiny_gemma_config(**overrides)).eval()


def tiny_gemma_checkpoint(directory: Path, seed: int = 0, **overrides: Any) -> Path:
    """Save a tiny model as an HF checkpoint (config.json + model.safetensors) in `directory`.

    Returns:
        `directory`, which `engine.model_build.resolve_model_dir` accepts as a model path.
    """
    model = tiny_gemma_model(seed, **overrides)
    model.config.architectures = ["Gemma3ForCausalLM"]
    model.save_pretrained(directory)
    return directory
