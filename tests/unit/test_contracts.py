"""The typed contracts between packages: old files still load, misspelt and missing fields fail
naming the file, the field and the fix, the base-model digest check runs, and one manifest reads
the same through every consumer (registry, gateway calibration, eval runner, base match)."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path

import pytest

from adapters.base_match import BaseModelIdentity, check_base_model
from adapters.errors import AdapterValidationError
from adapters.registry import AdapterRegistry
from adapters.validation import AdapterLimits
from eval.runner import candidate_manifest, check_holdout
from eval.suite import load_suite
from grounding.answerability import Calibration
from ragdock.contracts.adapter_manifest import (
    CalibrationBlock,
    parse_adapter_manifest,
    read_adapter_manifest,
)
from ragdock.contracts.base import ContractError
from ragdock.contracts.chunk_payload import ChunkPayload, read_chunk_payload
from ragdock.contracts.eval_report import parse_eval_report
from ragdock.contracts.model_build import BuildManifest, BuildSource
from retrieval.store import base as store_base
from tests import contract_samples as samples
from tests.unit.test_adapter_registry import make_adapter

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "adapters/demo/grounded"
SERVED = BaseModelIdentity(
    model_id="google/gemma-3-270m", path="/m/gemma-3-270m", digest="abc", build_digest="b1"
)


def _v1_manifest() -> dict[str, object]:
    """The demo adapter's manifest as it shipped before contracts (version 1), from git."""
    shown = subprocess.run(
        ["git", "show", "8221b96:adapters/demo/grounded/manifest.json"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if shown.returncode == 0:
        data: dict[str, object] = json.loads(shown.stdout)
        return data
    # A shallow clone without that commit: the same shape, rebuilt from today's file.
    data = json.loads((DEMO / "manifest.json").read_text())
    old_digest = data["base_model"]["build_digest"]
    data["base_model"] = {"name": "gemma-3-270m", "id": "google/gemma-3-270m", "digest": old_digest}
    data["manifest_version"] = 1
    del data["hardware"]["dtype"]
    return data


def test_a_manifest_from_before_contracts_loads_migrated() -> None:
    old = _v1_manifest()
    assert old["manifest_version"] == 1
    manifest = parse_adapter_manifest(old, source="old/manifest.json")
    assert manifest.manifest_version == 2
    assert manifest.base_model.digest is None  # v1's digest hashed the build manifest...
    assert manifest.base_model.build_digest == "008fb2e4ec646e2e"  # ...and is kept as such
    assert manifest.calibration is not None and manifest.calibration.fitted is not None
    assert manifest.data.files["holdout"].examples == 682


def test_the_shipped_demo_files_are_current() -> None:
    manifest = read_adapter_manifest(DEMO)
    assert manifest is not None and manifest.base_model.digest
    report = parse_eval_report(json.loads((DEMO / "eval_report.json").read_text()), source="demo")
    assert report.gate is not None and report.gate.name == "grounded-default"


def test_a_misspelt_field_names_the_file_the_field_and_the_fix(tmp_path: Path) -> None:
    data = samples.adapter_manifest().model_dump(mode="json")
    data["base_model"]["digst"] = data["base_model"].pop("digest")
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ContractError) as caught:
        read_adapter_manifest(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "manifest.json") in message
    assert "`base_model.digst`" in message and "did you mean `digest`?" in message
    assert "Fix:" in message and "ragdock train" in message


def test_a_missing_field_and_an_unknown_version_are_refused() -> None:
    data = samples.adapter_manifest().model_dump(mode="json")
    del data["metrics"]["steps"]
    with pytest.raises(ContractError, match=r"`metrics.steps`: is required but missing"):
        parse_adapter_manifest(data, source="m.json")
    with pytest.raises(ContractError, match=r"`manifest_version`: 9 is not a version"):
        parse_adapter_manifest({**data, "manifest_version": 9}, source="m.json")
    with pytest.raises(ContractError, match="is not a JSON object"):
        parse_adapter_manifest([1, 2], source="m.json")


def test_an_adapter_trained_on_other_base_weights_is_refused() -> None:
    config = {"base_model_name_or_path": "google/gemma-3-270m"}  # the same name...
    other = samples.adapter_manifest(digest="not-abc")  # ...another checkpoint of it
    with pytest.raises(AdapterValidationError, match="trained on base weights not-abc"):
        check_base_model(config, other, SERVED)
    check_base_model(config, samples.adapter_manifest(digest="abc"), SERVED)


def test_a_version_1_manifest_is_matched_by_build_digest_then_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    v1 = _v1_manifest()
    v1["base_model"] = {"name": "gemma-3-270m", "id": "google/gemma-3-270m", "digest": "b1"}
    same_build = parse_adapter_manifest(v1, source="v1")
    check_base_model({}, same_build, SERVED)  # no name needed: the build digest matches
    v1["base_model"] = {"name": "gemma-3-270m", "id": "google/gemma-3-270m", "digest": "b0"}
    refreshed = parse_adapter_manifest(v1, source="v1")
    with caplog.at_level(logging.WARNING):
        check_base_model({"base_model_name_or_path": "/x/gemma-3-270m"}, refreshed, SERVED)
    assert "checked by name only" in caplog.text
    with pytest.raises(AdapterValidationError, match="trained on 'google/gemma-2-2b'"):
        check_base_model({"base_model_name_or_path": "google/gemma-2-2b"}, refreshed, SERVED)


def test_one_manifest_reads_the_same_through_every_consumer(tmp_path: Path) -> None:
    holdout = tmp_path / "holdout.jsonl"
    holdout.write_text('{"id": 1}\n')
    digest = hashlib.sha256(holdout.read_bytes()).hexdigest()
    block = CalibrationBlock(
        features=["top_score"], weights=[2.0], bias=-1.0, threshold=0.6,
        target_hallucination=0.1, validation={"questions": 10},
    )  # fmt: skip
    written = samples.adapter_manifest(digest="abc", holdout_sha256=digest, calibration=block)
    adapter = make_adapter(tmp_path / "adapter")
    written.write(adapter)

    registry = AdapterRegistry(tmp_path / "registry", AdapterLimits(max_rank=16), SERVED)
    version = registry.push(adapter, "roundtrip", actor="t")  # base match: digest "abc"
    stored = registry.manifest(version)
    assert stored == written
    calibration = Calibration.from_manifest(stored)  # what the gateway decides with
    assert calibration is not None and calibration.threshold == 0.6
    assert calibration.features == ("top_score",)
    # The eval runner reads it from the gateway's JSON record of the version.
    record = {"name": "roundtrip", "version": "v1", "manifest": stored.model_dump(mode="json")}
    assert candidate_manifest(record) == written
    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(json.dumps({
        "name": "t", "candidate": "roundtrip@v1",
        "holdout": {"path": str(holdout), "sha256": digest},
        "tasks": [{"kind": "forgetting", "text": {"path": str(holdout), "sha256": digest},
                   "qa": {"path": str(holdout), "sha256": digest}}],
    }))  # fmt: skip
    checked = check_holdout(load_suite(suite_path), candidate_manifest(record))
    assert checked is not None and checked["status"] == "matches the training manifest"


def test_a_pushed_manifest_that_breaks_its_contract_is_a_400(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter")
    (adapter / "manifest.json").write_text(json.dumps({"manifest_version": 2, "kind": "x"}))
    registry = AdapterRegistry(tmp_path / "registry", AdapterLimits(max_rank=16), SERVED)
    with pytest.raises(AdapterValidationError, match=r"manifest\.json: field `kind`") as caught:
        registry.push(adapter, "bad", actor="t")
    assert caught.value.param == "manifest"


def test_a_bare_gate_is_no_eval_report() -> None:
    with pytest.raises(ContractError, match=r"`suite`: is required but missing"):
        parse_eval_report({"gate": {"passed": True}}, source="upload")


def test_the_store_filters_on_fields_of_the_chunk_payload() -> None:
    names = set(ChunkPayload.model_fields)
    for constant in ("TENANT_FIELD", "DOC_FIELD", "REV_FIELD", "GEN_FIELD", "SEQ_FIELD",
                     "UPDATED_FIELD", "META_FIELD"):  # fmt: skip
        assert getattr(store_base, constant) in names


def test_a_chunk_payload_round_trips_and_a_foreign_one_is_named() -> None:
    payload = ChunkPayload(
        tenant_id="t", doc_id="d", rev="r", chunk_id="c", version="1", index=0, text="x"
    ).to_payload()
    assert read_chunk_payload(payload, point_id="p").text == "x"
    legacy = {k: v for k, v in payload.items() if k not in ("gen", "seq")}
    assert read_chunk_payload(legacy, point_id="p").gen is None  # before the control plane
    with pytest.raises(ContractError, match=r"payload of point p: field `txt`"):
        read_chunk_payload({**payload, "txt": "y"}, point_id="p")


def test_the_weights_digest_ignores_a_refreshed_chat_template() -> None:
    files = {"config.json": "1", "model.safetensors": "2", "tokenizer_config.json": "3"}
    source = BuildSource(package="p", version="1", gguf_sha256="0")
    build = BuildManifest(
        builder_version=1, model_id="m", source=source, dtype="bfloat16", build_seconds=1,
        files=files,
    )  # fmt: skip
    refreshed = build.model_copy(update={"files": {**files, "tokenizer_config.json": "4"}})
    other = build.model_copy(update={"files": {**files, "model.safetensors": "5"}})
    assert build.weights_digest() == refreshed.weights_digest() != other.weights_digest()


def test_the_shipped_reader_is_typed_whole_and_calibrated() -> None:
    from ragdock.contracts.reader import read_reader_manifest
    from ragdock.digest import sha256_file

    shipped = REPO / "adapters/demo/reader"
    manifest = read_reader_manifest(shipped)
    assert sha256_file(shipped / manifest.weights.file) == manifest.weights.sha256
    assert manifest.weights.dtype == "float16" and manifest.weights.from_base
    decision = manifest.decision
    assert decision is not None and decision.hallucination <= decision.target_hallucination
    splits = manifest.data.splits
    assert not set(splits["train"]) & (set(splits["test"]) | set(splits["calibration"]))
