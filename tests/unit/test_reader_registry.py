"""The reader registry on the real shipped reader (adapters/demo/reader): push checks the
manifest and the weights, labels count up and are never reused, the reader gate decides
promotion on the figures stored at push, rollback and delete keep aliases pointing at live
versions, every change is audited; on both control planes, with crashes at every step of push
and promote, and replicas pushing at once."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import reader_registry
from adapters.errors import (
    AdapterConflictError,
    InvalidNameError,
    PromotionRefusedError,
    ReaderNotFoundError,
    ReaderValidationError,
)
from adapters.reader_registry import DEFAULT_READER, ReaderRegistry
from eval.reader_gate import CALIBRATED, evaluate_reader_gate, load_reader_gate
from eval.suite import SuiteError
from ragdock.contracts.eval_report import GateVerdict
from ragdock.contracts.reader import ReaderManifest, read_reader_manifest
from ragdock.controlplane import ControlPlane, open_control_plane
from server.rag.reading import SHIPPED_READER

GATE = load_reader_gate()


def judge(manifest: ReaderManifest) -> GateVerdict:
    return evaluate_reader_gate(manifest, GATE)


class Crash(BaseException):
    """A simulated crash: not an `Exception`, so only what a real crash undoes is undone."""


def open_readers(root: Path, control: ControlPlane) -> ReaderRegistry:
    return ReaderRegistry(root, control=control, judge=judge)


@pytest.fixture
def control(control_plane_url: str, tmp_path: Path) -> Iterator[ControlPlane]:
    plane = open_control_plane(control_plane_url, tmp_path)
    yield plane
    plane.close()


@pytest.fixture
def readers(tmp_path: Path, control: ControlPlane) -> ReaderRegistry:
    return open_readers(tmp_path / "readers", control)


def variant(tmp_path: Path, name: str, **manifest_changes: object) -> Path:
    """A copy of the shipped reader with top-level manifest fields replaced."""
    directory = tmp_path / name
    shutil.copytree(SHIPPED_READER, directory)
    data = json.loads((directory / "manifest.json").read_text())
    data.update(manifest_changes)
    (directory / "manifest.json").write_text(json.dumps(data))
    return directory


def test_the_shipped_reader_passes_the_shipped_gate() -> None:
    verdict = evaluate_reader_gate(read_reader_manifest(SHIPPED_READER), GATE)
    assert verdict.passed, verdict.failed_rules()
    assert verdict.verdicts[0].rule == CALIBRATED


def test_push_copies_the_reader_and_labels_count_up(readers: ReaderRegistry) -> None:
    first = readers.push(SHIPPED_READER, actor="t/ops")
    assert first.ref == f"{DEFAULT_READER}@v1"
    for name in ("manifest.json", "reader_weights.safetensors", "eval_summary.json", "README.md"):
        assert (first.path / name).read_bytes() == (SHIPPED_READER / name).read_bytes(), name
    assert first.record["weights_sha256"] == read_reader_manifest(SHIPPED_READER).weights.sha256
    assert first.record["pushed_by"] == "t/ops"
    second = readers.push(SHIPPED_READER, actor="t/ops")
    assert second.version == "v2"
    assert [v.version for v in readers.versions(DEFAULT_READER)] == ["v1", "v2"]
    assert readers.names() == [DEFAULT_READER]
    assert readers.manifest(second) == read_reader_manifest(SHIPPED_READER)
    with pytest.raises(AdapterConflictError):
        readers.push(SHIPPED_READER, actor="t/ops", version="v2")
    assert not list((readers.root / DEFAULT_READER).glob(".staging-*"))


def test_push_refuses_weights_that_are_not_the_manifests(
    readers: ReaderRegistry, tmp_path: Path
) -> None:
    tampered = variant(tmp_path, "tampered")
    weights = tampered / "reader_weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ReaderValidationError, match="different runs"):
        readers.push(tampered, actor="t")
    (tampered / "reader_weights.safetensors").unlink()
    with pytest.raises(ReaderValidationError, match="no reader_weights"):
        readers.push(tampered, actor="t")
    (tampered / "manifest.json").write_text("{}")
    with pytest.raises(ReaderValidationError, match="manifest_version"):
        readers.push(tampered, actor="t")
    escaping = variant(tmp_path, "escaping")
    data_ = json.loads((escaping / "manifest.json").read_text())
    data_["weights"]["file"] = "../reader_weights.safetensors"
    (escaping / "manifest.json").write_text(json.dumps(data_))
    with pytest.raises(ReaderValidationError, match="plain file name"):
        readers.push(escaping, actor="t")
    with pytest.raises(InvalidNameError, match="reader name"):
        readers.push(SHIPPED_READER, "Bad/Name", actor="t")
    assert readers.names() == []
    assert not list((readers.root / DEFAULT_READER).glob(".staging-*"))


def test_the_gate_refuses_an_uncalibrated_or_weak_reader_unless_forced(
    readers: ReaderRegistry, tmp_path: Path
) -> None:
    uncalibrated = readers.push(variant(tmp_path, "raw", decision=None), actor="t")
    validation = dict(read_reader_manifest(SHIPPED_READER).validation, auroc_all=0.55)
    weak = readers.push(variant(tmp_path, "weak", validation=validation), actor="t")
    # Without a decision its decision.* rules cannot be checked either: they fail with it.
    assert readers.verdict(uncalibrated).failed_rules()[:2] == [
        CALIBRATED,
        "decision.target_hallucination <= 0.1",
    ]
    assert readers.verdict(weak).failed_rules() == ["validation.auroc_all >= 0.7"]
    for version in (uncalibrated, weak):
        with pytest.raises(PromotionRefusedError, match="reader-default"):
            readers.promote(DEFAULT_READER, version.version, "prod", actor="t/admin")
    assert readers.aliases(DEFAULT_READER) == {}
    readers.promote(DEFAULT_READER, "v2", "prod", actor="p/root", force=True, reason="trial")
    assert readers.resolve(DEFAULT_READER, "prod").version == "v2"
    forced = readers.audit_entries(DEFAULT_READER)[-1]
    assert forced["action"] == "promote" and forced["actor"] == "p/root"
    assert forced["detail"]["forced"] is True and forced["detail"]["reason"] == "trial"
    assert forced["detail"]["failed"] == ["validation.auroc_all >= 0.7"]


def test_the_gate_reads_the_manifest_stored_at_push_not_the_files(
    readers: ReaderRegistry,
) -> None:
    pushed = readers.push(SHIPPED_READER, actor="t")
    # Someone edits the copied manifest on the volume afterwards: the verdict does not move.
    data = json.loads((pushed.path / "manifest.json").read_text())
    data["decision"] = None
    (pushed.path / "manifest.json").write_text(json.dumps(data))
    assert readers.verdict(pushed).passed
    readers.promote(DEFAULT_READER, "v1", "prod", actor="t")


def test_promote_rollback_delete_and_their_audit(readers: ReaderRegistry) -> None:
    for _ in range(3):
        readers.push(SHIPPED_READER, actor="t/ops")
    readers.promote(DEFAULT_READER, "v1", "prod", actor="t/ops")
    readers.promote(DEFAULT_READER, "v3", "prod", actor="t/ops")
    assert readers.aliases(DEFAULT_READER)["prod"] == {"version": "v3", "history": ["v1"]}
    with pytest.raises(AdapterConflictError, match="still served"):
        readers.delete(DEFAULT_READER, "v3", actor="t/ops")
    readers.rollback(DEFAULT_READER, "prod", actor="t/ops")
    assert readers.resolve(DEFAULT_READER, "prod").version == "v1"
    with pytest.raises(AdapterConflictError, match="no earlier version"):
        readers.rollback(DEFAULT_READER, "prod", actor="t/ops")
    with pytest.raises(ReaderNotFoundError):
        readers.rollback(DEFAULT_READER, "canary", actor="t/ops")
    doomed = readers.get(DEFAULT_READER, "v3")
    readers.delete(DEFAULT_READER, "v3", actor="t/ops")
    assert not doomed.path.exists()
    with pytest.raises(ReaderNotFoundError):
        readers.resolve(DEFAULT_READER, "v3")
    with pytest.raises(ReaderNotFoundError):
        readers.promote(DEFAULT_READER, "v3", "prod", actor="t/ops")
    assert readers.push(SHIPPED_READER, actor="t/ops").version == "v4"  # v3 stays taken
    actions = [(e["action"], e["version"], e["alias"]) for e in readers.audit_entries()]
    assert actions == [
        ("push", "v1", None), ("push", "v2", None), ("push", "v3", None),
        ("promote", "v1", "prod"), ("promote", "v3", "prod"), ("rollback", "v1", "prod"),
        ("delete", "v3", None), ("push", "v4", None),
    ]  # fmt: skip
    assert all(e["actor"] == "t/ops" for e in readers.audit_entries())


def test_reader_and_adapter_audit_entries_stay_apart(readers: ReaderRegistry) -> None:
    from adapters.versioning import read_audit

    readers.push(SHIPPED_READER, actor="t")
    assert read_audit(readers.control, "adapter") == []
    assert [e["action"] for e in read_audit(readers.control, "reader")] == ["push"]


PUSH_STEPS = ["copied", "renamed", "recorded"]
PROMOTE_STEPS = ["checked", "aliased"]


@pytest.mark.parametrize("step", PUSH_STEPS + PROMOTE_STEPS)
def test_a_crash_at_any_step_leaves_no_half_done_version(
    step: str, tmp_path: Path, control_plane_url: str
) -> None:
    root = tmp_path / "readers"
    first = open_control_plane(control_plane_url, tmp_path)
    readers = open_readers(root, first)
    readers.push(SHIPPED_READER, actor="t")
    readers.promote(DEFAULT_READER, "v1", "prod", actor="t")
    readers.push(SHIPPED_READER, actor="t")

    def crash(at: str) -> None:
        if at == step:
            raise Crash(at)

    readers.fault = crash
    with pytest.raises(Crash):
        if step in PUSH_STEPS:
            readers.push(SHIPPED_READER, actor="t")
        else:
            readers.promote(DEFAULT_READER, "v2", "prod", actor="t")
    first.close()  # the crashed process is gone; a restarted one opens its own connections

    second = open_control_plane(control_plane_url, tmp_path)
    reopened = open_readers(root, second)
    assert [v.version for v in reopened.versions(DEFAULT_READER)] == ["v1", "v2"]
    assert reopened.resolve(DEFAULT_READER, "prod").version == "v1"
    assert [e["action"] for e in reopened.audit_entries()][-1] == "push"
    # The label the crash did not record is handed out now, over whatever it left behind.
    third = reopened.push(SHIPPED_READER, actor="t")
    assert third.version == "v3"
    assert (third.path / "reader_weights.safetensors").stat().st_size == read_reader_manifest(
        SHIPPED_READER
    ).weights.bytes
    assert not list((root / DEFAULT_READER).glob(".orphan-*"))
    second.close()


def test_an_interrupted_copy_leaves_no_version(
    readers: ReaderRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push that dies while copying the weights (here: the disk fills up) records nothing
    and leaves no files behind."""
    readers.push(SHIPPED_READER, actor="t")

    def half_copy(source: Path, target: Path) -> tuple[str, int]:
        target.write_bytes(source.read_bytes()[:1000])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reader_registry, "_copy_hashed", half_copy)
    with pytest.raises(OSError, match="No space"):
        readers.push(SHIPPED_READER, actor="t")
    monkeypatch.undo()
    assert [v.version for v in readers.versions(DEFAULT_READER)] == ["v1"]
    assert sorted(p.name for p in (readers.root / DEFAULT_READER).iterdir()) == ["v1"]
    assert readers.push(SHIPPED_READER, actor="t").version == "v2"


@pytest.mark.timeout(300)
def test_replicas_pushing_and_promoting_at_once_never_share_a_label(
    tmp_path: Path, control_plane_url: str
) -> None:
    """Three registries (three gateway replicas) over one control plane and one volume."""
    root = tmp_path / "readers"
    planes = [open_control_plane(control_plane_url, tmp_path) for _ in range(3)]
    replicas = [open_readers(root, plane) for plane in planes]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(2):
                pushed = replicas[index].push(SHIPPED_READER, actor=f"r{index}")
                replicas[index].promote(DEFAULT_READER, pushed.version, "prod", actor=f"r{index}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert not errors, errors
    labels = [v.version for v in replicas[0].versions(DEFAULT_READER)]
    assert sorted(labels, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, 7)]
    prod = replicas[1].aliases(DEFAULT_READER)["prod"]
    assert len(prod["history"]) == 5 and prod["version"] in labels
    for label in labels:
        assert (root / DEFAULT_READER / label / "manifest.json").is_file()
    for plane in planes:
        plane.close()


def test_reader_gates_take_plain_thresholds_only(tmp_path: Path) -> None:
    gate = tmp_path / "gate.yaml"
    gate.write_text(
        "name: g\nrules:\n  - {metric: validation.auroc_all, op: '>=', threshold: 0.5, "
        "compare_to: previous}\n"
    )
    with pytest.raises(SuiteError, match="plain thresholds"):
        load_reader_gate(gate)
    gate.write_text("name: g\nrules:\n  - {metric: validation.nothing, op: '>=', threshold: 0}\n")
    verdict = evaluate_reader_gate(read_reader_manifest(SHIPPED_READER), load_reader_gate(gate))
    assert not verdict.passed and "cannot be checked" in verdict.verdicts[-1].why
