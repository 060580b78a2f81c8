"""Registry rules without an engine: names, validation, base match, aliases, gates, audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from adapters.base_match import BaseModelIdentity
from adapters.errors import (
    AdapterConflictError,
    AdapterNotFoundError,
    AdapterValidationError,
    InvalidNameError,
    PromotionRefusedError,
)
from adapters.names import ModelRef, check_alias, check_name
from adapters.registry import AdapterRegistry, gate_verdict
from adapters.validation import AdapterLimits, validate_adapter_dir

BASE = BaseModelIdentity(model_id="google/gemma-3-270m", path="/m/gemma-3-270m", digest="abc")
LAYER = "base_model.model.model.layers.0.self_attn"


def make_adapter(directory: Path, *, rank: int = 8, base: str = "/models/gemma-3-270m") -> Path:
    directory.mkdir(parents=True)
    tensors = {
        f"{LAYER}.q_proj.lora_A.weight": torch.zeros(rank, 640),
        f"{LAYER}.q_proj.lora_B.weight": torch.zeros(1024, rank),
    }
    save_file(tensors, directory / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "base_model_name_or_path": base,
              "target_modules": ["q_proj"]}  # fmt: skip
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture
def registry(tmp_path: Path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "registry", AdapterLimits(max_rank=16), BASE)


def test_validation_reads_rank_and_modules(tmp_path: Path) -> None:
    info = validate_adapter_dir(make_adapter(tmp_path / "a"), AdapterLimits(max_rank=16))
    assert (info.rank, info.target_modules, info.tensors) == (8, ["q_proj"], 2)


def test_size_limit(tmp_path: Path) -> None:
    with pytest.raises(AdapterValidationError, match="limit"):
        validate_adapter_dir(
            make_adapter(tmp_path / "a"), AdapterLimits(max_rank=16, max_bytes=100)
        )


def test_truncated_safetensors_is_refused(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "a")
    (adapter / "adapter_model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(AdapterValidationError, match="not a safetensors file"):
        validate_adapter_dir(adapter, AdapterLimits(max_rank=16))


@pytest.mark.parametrize(
    ("digest", "base", "ok"),
    [
        ("abc", "anything", True),  # the manifest's checksum decides when present
        ("zzz", "/models/gemma-3-270m", False),
        (None, "/elsewhere/gemma-3-270m", True),  # else the base name
        (None, "google/gemma-2-2b", False),
    ],
)
def test_base_model_match(
    registry: AdapterRegistry, tmp_path: Path, digest: str | None, base: str, ok: bool
) -> None:
    adapter = make_adapter(tmp_path / "a", base=base)
    if digest:
        manifest = {"base_model": {"id": "google/gemma-3-270m", "checksum": digest}}
        (adapter / "manifest.json").write_text(json.dumps(manifest))
    if ok:
        assert registry.push(adapter, "x", actor="t").version == "v1"
    else:
        with pytest.raises(AdapterValidationError, match="trained on"):
            registry.push(adapter, "x", actor="t")


def test_versions_number_themselves_and_never_overwrite(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path / "a")
    assert [registry.push(adapter, "x", actor="t").version for _ in range(3)] == ["v1", "v2", "v3"]
    with pytest.raises(AdapterConflictError):
        registry.push(adapter, "x", version="v2", actor="t")
    assert registry.push(adapter, "x", version="2026-11-22", actor="t").version == "2026-11-22"


def test_promote_rollback_delete_rules(registry: AdapterRegistry, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "a")
    for _ in range(2):
        registry.push(adapter, "x", actor="t")
    with pytest.raises(PromotionRefusedError, match="no eval report"):
        registry.promote("x", "v1", "prod", actor="t")
    registry.attach_eval_report("x", "v1", {"gate": {"passed": True}}, actor="t")
    registry.attach_eval_report("x", "v2", {"gate": {"passed": True}}, actor="t")
    registry.promote("x", "v1", "prod", actor="t")
    registry.promote("x", "v2", "prod", actor="t")
    assert registry.resolve("x", "prod").version == "v2"
    with pytest.raises(AdapterConflictError, match="still served"):
        registry.delete("x", "v2", actor="t")
    assert registry.rollback("x", "prod", actor="t")["version"] == "v1"
    registry.delete("x", "v2", actor="t")
    with pytest.raises(AdapterNotFoundError):
        registry.get("x", "v2")
    actions = [e["action"] for e in registry.audit_entries()]
    assert actions == ["push", "push", "eval_report", "eval_report", "promote", "promote",
                       "rollback", "delete"]  # fmt: skip


def test_gate_verdicts() -> None:
    assert gate_verdict(None) == (False, "it has no eval report")
    assert gate_verdict({"gate": {"passed": True}})[0]
    failed = {"gate": {"passed": False, "verdicts": [{"rule": "r1", "passed": False}]}}
    assert gate_verdict(failed) == (False, "its gate failed (r1)")


@pytest.mark.parametrize("bad", ["../x", "X", "a/b", "", "-lead", "a" * 64])
def test_unsafe_names(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        check_name(bad)


def test_aliases_cannot_look_like_versions() -> None:
    with pytest.raises(InvalidNameError):
        check_alias("v2")
    assert check_alias("canary") == "canary"


def test_model_refs() -> None:
    assert ModelRef.parse("grounded") == ModelRef("grounded", None)
    assert ModelRef.parse("grounded@v3") == ModelRef("grounded", "v3")
    assert str(ModelRef.parse("grounded@prod")) == "grounded@prod"
