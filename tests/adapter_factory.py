"""Tiny REAL adapters for tests: a few peft LoRA steps on the real Gemma 3 270M teaching one fixed
reply to one prompt. Cached per test session by the fixture that calls this."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from ragdock.compute_dtype import choose_dtype, torch_dtype


def train_fixed_reply(
    model_dir: Path,
    out_dir: Path,
    prompt: str,
    reply: str,
    *,
    steps: int = 40,
    rank: int = 8,
    dtype_cache: Path | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> Path:
    """Train a LoRA that answers `prompt` with `reply` and save it (PEFT format, safetensors).

    With `tools`, the prompt is rendered with those tool definitions, as the engine renders a
    chat request that carries them.

    The base computes in the dtype this machine computes fast (`ragdock.compute_dtype`, 'auto'):
    in bf16 on a CPU without AVX512_BF16 these 40 steps took about half an hour instead of 30 s.
    """
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = choose_dtype("auto", home=dtype_cache).dtype
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(dtype))
    question = [{"role": "user", "content": prompt}]
    prompt_ids = tokenizer.apply_chat_template(
        question, tools=tools, add_generation_prompt=True, tokenize=True
    )
    full_ids = tokenizer.apply_chat_template(
        [*question, {"role": "assistant", "content": reply}], tools=tools, tokenize=True
    )
    prompt_ids, full_ids = _ids(prompt_ids), _ids(full_ids)
    input_ids = torch.tensor([full_ids])
    labels = input_ids.clone()
    labels[0, : len(prompt_ids)] = -100  # learn the reply (and its end of turn) only
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3)
    peft_model.train()
    for _ in range(steps):
        loss = peft_model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    # Record the base by path, as `ragdock train` does, so the registry can check it.
    config_path = out_dir / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = str(model_dir)
    config_path.write_text(json.dumps(adapter_config, indent=2))
    return out_dir


def _ids(value: object) -> list[int]:
    # apply_chat_template returns a list, or a BatchEncoding in newer transformers.
    if isinstance(value, dict) or hasattr(value, "input_ids"):
        value = value["input_ids"]  # type: ignore[index]
    return list(value)  # type: ignore[call-overload]
