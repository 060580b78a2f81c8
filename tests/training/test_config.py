"""The run configuration: every shipped YAML validates; errors name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.config import ConfigError, TrainConfig, apply_override, load_config, validate_config
from training.reader.config import is_reader_config

# Adapter configs; reader configs (`kind: reader`) are tested in test_reader_data.py.
CONFIGS = sorted(
    p
    for p in (Path(__file__).parents[2] / "training" / "configs").glob("*.yaml")
    if not is_reader_config(p)
)
MINIMAL = {"output_dir": "out", "data": {"train": "train.jsonl"}}


def test_the_expected_configs_ship() -> None:
    names = {p.name for p in CONFIGS}
    assert {
        "gemma3-270m-lora.yaml",
        "gemma3-270m-qlora.yaml",
        "grounded-raft-270m.yaml",
        "gemma4-e4b-lora.yaml",
        "gemma4-26b-a4b-lora.yaml",
        "gemma4-31b-qlora-80gb.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_in_the_repo_loads_and_validates(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    # Every setting in the file is a known field (extra keys are refused), and every line that
    # sets something carries a comment saying what it does.
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"{path.name}: uncommented setting: {line!r}"


def test_qlora_configs_use_nf4_double_quant() -> None:
    for path in CONFIGS:
        config = load_config(path)
        if config.method == "qlora":
            assert (config.quant.quant_type, config.quant.double_quant) == ("nf4", True)


def test_cpu_configs_let_the_machine_choose_the_dtype() -> None:
    # bf16 is ~300x slower than fp32 on CPUs without AVX512_BF16: a CPU recipe must not pin it.
    # On a GPU, auto is bf16 where the GPU supports it: the same configs serve both.
    for path in CONFIGS:
        config = load_config(path)
        assert config.loop.dtype == "auto", path.name
        assert config.quant.compute_dtype == "auto", path.name


def test_gemma4_configs_target_the_language_model_only() -> None:
    for path in CONFIGS:
        if path.name.startswith("gemma4"):
            target = load_config(path).lora.peft_target_modules()
            assert isinstance(target, str) and "language_model" in target


def test_dotted_overrides_are_parsed_as_yaml_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    config = load_config(
        path,
        [
            "optim.lr=1e-3",
            "data.packing=true",
            "lora.target_modules=[q_proj, v_proj]",
            "optim.max_steps=7",
            "loop.resume_from=latest",
        ],
    )
    assert config.optim.lr == pytest.approx(1e-3)
    assert config.data.packing is True
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.optim.max_steps == 7
    assert config.loop.resume_from == Path("latest")


def test_invalid_values_name_the_field() -> None:
    raw = {**MINIMAL, "optim": {"lr": -1}, "lora": {"r": 0}}
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    message = str(info.value)
    assert "optim.lr" in message and "lora.r" in message and "-1" in message


def test_misspelt_keys_are_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match=r"optim\.learning_rate.*check its spelling"):
        validate_config({**MINIMAL, "optim": {"learning_rate": 1e-4}})


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(ConfigError, match=r"data: Field required"):
        validate_config({"output_dir": "x"})


def test_early_stopping_needs_validation_data() -> None:
    with pytest.raises(ConfigError, match="early_stopping_patience needs a validation set"):
        validate_config({**MINIMAL, "loop": {"early_stopping_patience": 2, "eval_every": 5}})


def test_adapters_may_not_target_the_output_head() -> None:
    with pytest.raises(ConfigError, match="vLLM refuses"):
        validate_config({**MINIMAL, "lora": {"target_modules": ["q_proj", "lm_head"]}})


def test_attention_shorthand_expands_to_the_projections() -> None:
    config = validate_config(MINIMAL)
    assert config.lora.peft_target_modules() == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_malformed_override_says_how_to_write_it() -> None:
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        apply_override({}, "optim.lr")
