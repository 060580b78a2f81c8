"""The platform's signature on the reports it measures, and its verdict on them: a signature
survives writing, reading and re-gating the report and breaks on any other change; the key file
is created once, private, whoever starts first; `ragdock eval` signs when it can read the key
and says so when it cannot; the shipped demo report (unsigned) is refused with the reason
`ragdock up` prints."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from adapters.errors import ReportNotVerifiedError
from adapters.registry import AdapterRegistry
from adapters.validation import AdapterLimits
from eval.cli import _platform_key
from eval.cli import app as eval_app
from eval.runner import write_outputs
from eval.signing import (
    SigningKey,
    SigningKeyError,
    canonical_content,
    load_or_create_signing_key,
    read_signing_key,
)
from eval.verdict import DEFAULT_GATE, load_judge
from ragdock.contracts.base import read_json
from ragdock.contracts.eval_report import parse_eval_report
from tests import contract_samples as samples
from tests.eval.test_gates_and_reports import a_report
from tests.unit.test_adapter_registry import BASE, make_adapter

DEMO = Path(__file__).resolve().parents[2] / "adapters/demo/grounded"


def test_a_signature_survives_the_file_and_a_new_gate_but_no_other_change(
    tmp_path: Path,
) -> None:
    report = samples.SIGNING_KEY.sign(a_report())
    write_outputs(report, tmp_path)
    read = parse_eval_report(read_json(tmp_path / "report.json"), source="report.json")
    assert samples.SIGNING_KEY.verifies(read)
    assert canonical_content(read) == canonical_content(report)
    assert "Signed with the platform's key" in (tmp_path / "report.md").read_text()
    # `ragdock eval gate` writes its verdict into the report: the signature still holds.
    gate = tmp_path / "gate.yaml"
    gate.write_text(yaml.safe_dump(samples.PLATFORM_GATE.model_dump(exclude_defaults=True)))
    result = CliRunner().invoke(eval_app, ["gate", str(tmp_path / "report.json"), str(gate)])
    assert result.exit_code == 0, result.output
    regated = parse_eval_report(read_json(tmp_path / "report.json"), source="report.json")
    assert regated.gate is not None and regated.gate.name == samples.PLATFORM_GATE.name
    assert samples.SIGNING_KEY.verifies(regated)
    # Anything else changed, the signature no longer verifies.
    changed = regated.as_json()
    changed["tasks"]["grounding"]["metrics"]["candidate"]["hallucination"] = 0.0
    assert not samples.SIGNING_KEY.verifies(parse_eval_report(changed, source="changed"))
    other = SigningKey(b"another-platform-key-0123456789abcdef")
    assert not other.verifies(regated)
    assert not samples.SIGNING_KEY.verifies(a_report())  # unsigned


def test_an_uploaded_signature_of_any_text_is_refused_not_crashed_on() -> None:
    report = a_report().as_json()
    report["signature"] = {"alg": "hmac-sha256", "key_id": "ключ", "value": "значение"}
    assert not samples.SIGNING_KEY.verifies(parse_eval_report(report, source="upload"))


def test_the_key_file_is_created_once_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "data" / "signing.key"
    keys: list[SigningKey] = []
    threads = [
        threading.Thread(target=lambda: keys.append(load_or_create_signing_key(path)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({k.key_id for k in keys}) == 1  # every starter got the one key that landed
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["signing.key"]  # no staged leftovers
    assert read_signing_key(path).key_id == keys[0].key_id
    assert path.read_text().strip() not in repr(keys[0])


def test_a_short_or_missing_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("too-short\n")
    with pytest.raises(SigningKeyError, match="at least 32 characters"):
        read_signing_key(short)
    with pytest.raises(SigningKeyError, match="cannot read"):
        read_signing_key(tmp_path / "missing.key")


def test_eval_finds_the_platforms_key_or_says_it_will_not_sign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "signing.key"
    key.write_text(samples.SIGNING_SECRET)
    console = Console(record=True, width=200)
    found = _platform_key(key, console)
    assert found is not None and found.key_id == samples.SIGNING_KEY.key_id
    assert f"signed with the platform's key {found.key_id}" in console.export_text()
    # By default the settings' key file: the gateway's (RAGDOCK_SIGNING_KEY_FILE here).
    monkeypatch.setenv("RAGDOCK_SIGNING_KEY_FILE", str(key))
    assert _platform_key(None, console) is not None
    assert _platform_key(tmp_path / "absent.key", console) is None
    said = console.export_text()
    assert "will not be signed" in said and "cannot promote" in said
    assert samples.SIGNING_SECRET not in said


def test_the_shipped_demo_report_is_unverified_and_up_says_why(tmp_path: Path) -> None:
    judge = load_judge(samples.SIGNING_KEY, None)
    assert judge.gate is not None and judge.gate.name == "grounded-default"
    assert DEFAULT_GATE.is_file()
    demo = parse_eval_report(json.loads((DEMO / "eval_report.json").read_text()), source="demo")
    verdict = judge(demo, "grounded", "v1")
    assert verdict.status == "unverified" and "unsigned" in verdict.reason
    # What `ragdock up` does with it: registered, and the refusal it prints names the gate.
    registry = AdapterRegistry(tmp_path / "reg", AdapterLimits(max_rank=16), BASE, judge=judge)
    adapter = make_adapter(tmp_path / "demo")
    (adapter / "eval_report.json").write_text((DEMO / "eval_report.json").read_text())
    assert registry.push(adapter, "grounded", actor="default/ragdock-up").version == "v1"
    with pytest.raises(ReportNotVerifiedError) as refused:
        registry.promote("grounded", "v1", "prod", actor="default/ragdock-up")
    assert "not platform-measured" in refused.value.message and "gate" in refused.value.message
    registry.close()
