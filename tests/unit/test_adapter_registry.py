"""Registry rules without an engine: names, validation, base match, aliases, the platform's
verdicts, audit; on both control planes (SQLite and a real PostgreSQL server), with crashes at
every step of push and promote, and several registry instances racing each other."""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
import traceback
from collections.abc import Iterator
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
    ReportNotVerifiedError,
)
from adapters.names import ModelRef, check_alias, check_name
from adapters.registry import AdapterRegistry
from adapters.validation import AdapterLimits, validate_adapter_dir
from ragdock.controlplane import ControlPlane, open_control_plane
from tests import contract_samples as samples

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


class Crash(BaseException):
    """A simulated crash: not an `Exception`, so only what a real crash undoes is undone."""


def open_registry(root: Path, control: ControlPlane | None = None) -> AdapterRegistry:
    """A registry that judges as the tests' platform does (`samples.JUDGE`)."""
    return AdapterRegistry(
        root, AdapterLimits(max_rank=16), BASE, control=control, engine_base_name="/m/gemma",
        judge=samples.JUDGE,
    )  # fmt: skip


@pytest.fixture
def control(control_plane_url: str, tmp_path: Path) -> Iterator[ControlPlane]:
    plane = open_control_plane(control_plane_url, tmp_path)
    yield plane
    plane.close()


@pytest.fixture
def registry(tmp_path: Path, control: ControlPlane) -> AdapterRegistry:
    return open_registry(tmp_path / "registry", control)


def assert_consistent(registry: AdapterRegistry) -> None:
    """Readable, every listed version has its files, every alias points at a listed version."""
    for name in registry.names():
        labels = {v.version for v in registry.versions(name)}
        for version in registry.versions(name):
            assert (version.path / "adapter_model.safetensors").is_file(), version.ref
            view = registry.root / ".resolver" / version.ref / "adapter_model.safetensors"
            assert view.is_file(), f"{version.ref} has no resolver view"
        for alias, entry in registry.aliases(name).items():
            assert entry["version"] in labels, f"{name}@{alias} -> missing {entry['version']}"
            assert registry.resolve(name, alias).version == entry["version"]


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
        ("abc", "anything", True),  # the manifest's weights digest decides when present
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
        samples.adapter_manifest(digest=digest).write(adapter)
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
    registry.attach_eval_report("x", "v1", samples.eval_report(True), actor="t")
    registry.attach_eval_report("x", "v2", samples.eval_report(True, version="v2"), actor="t")
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


def test_a_registry_without_a_judge_promotes_nothing_unforced(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "registry", AdapterLimits(max_rank=16), BASE)
    registry.push(make_adapter(tmp_path / "a"), "x", actor="t")
    registry.attach_eval_report("x", "v1", samples.eval_report(True), actor="t")
    assert registry.verdict(registry.get("x", "v1")).status == "unverified"
    with pytest.raises(ReportNotVerifiedError, match="no platform key"):
        registry.promote("x", "v1", "prod", actor="t")
    registry.promote("x", "v1", "prod", actor="t", force=True)
    assert registry.resolve("x", "prod").version == "v1"


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


def test_labels_are_never_reused_and_rollback_never_lands_on_a_deleted_version(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path / "a")
    for _ in range(3):
        registry.push(adapter, "x", actor="t")
    for version in ("v1", "v2"):
        registry.attach_eval_report("x", version, samples.eval_report(version=version), actor="t")
    registry.promote("x", "v1", "prod", actor="t")
    registry.promote("x", "v2", "prod", actor="t")
    registry.promote("x", "v1", "canary", actor="t")
    registry.promote("x", "v3", "canary", actor="t", force=True)
    registry.delete("x", "v1", actor="t")  # no alias points at v1 now, but histories do
    with pytest.raises(AdapterConflictError, match="deleted"):
        registry.rollback("x", "prod", actor="t")
    assert registry.resolve("x", "prod").version == "v2"
    registry.promote("x", "v2", "canary", actor="t")
    registry.delete("x", "v3", actor="t")  # the newest: its label must not come back
    assert registry.push(adapter, "x", actor="t").version == "v4"
    for label in ("v1", "v3"):
        with pytest.raises(AdapterConflictError, match="never reused"):
            registry.push(adapter, "x", version=label, actor="t")
    assert [v.version for v in registry.versions("x")] == ["v2", "v4"]
    assert_consistent(registry)


def test_an_eval_report_shipped_with_the_adapter_is_attached(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    adapter = make_adapter(tmp_path / "a")
    (adapter / "eval_report.json").write_text(json.dumps(samples.eval_report(True)))
    pushed = registry.push(adapter, "x", actor="t")
    report = registry.eval_report(pushed)
    assert report is not None and report.as_json() == samples.eval_report(True)
    registry.promote("x", "v1", "prod", actor="t")


PUSH_STEPS = ["copied", "renamed", "published", "recorded"]
PROMOTE_STEPS = ["checked", "aliased"]


@pytest.mark.parametrize("step", PUSH_STEPS + PROMOTE_STEPS)
def test_a_crash_at_any_step_of_push_or_promote_leaves_the_registry_consistent(
    step: str, tmp_path: Path, control_plane_url: str
) -> None:
    root = tmp_path / "registry"
    adapter = make_adapter(tmp_path / "a")
    first = open_control_plane(control_plane_url, tmp_path)
    registry = open_registry(root, first)
    registry.push(adapter, "x", actor="t")
    registry.attach_eval_report("x", "v1", samples.eval_report(True), actor="t")
    registry.promote("x", "v1", "prod", actor="t")
    registry.push(adapter, "x", actor="t")
    registry.attach_eval_report("x", "v2", samples.eval_report(version="v2"), actor="t")

    def crash(at: str) -> None:
        if at == step:
            raise Crash(at)

    registry.fault = crash
    with pytest.raises(Crash):
        if step in PUSH_STEPS:
            registry.push(adapter, "x", actor="t")
        else:
            registry.promote("x", "v2", "prod", actor="t")
    first.close()  # the crashed process is gone; a restarted one opens its own connections

    second = open_control_plane(control_plane_url, tmp_path)
    reopened = open_registry(root, second)
    assert_consistent(reopened)
    # Nothing half-done is visible: the crashed step rolled back with its transaction.
    assert [v.version for v in reopened.versions("x")] == ["v1", "v2"]
    assert reopened.resolve("x", "prod").version == "v1"
    assert [e["action"] for e in reopened.audit_entries("x")][-1] == "eval_report"
    # And the registry keeps working: the label the crash did not record is handed out now.
    assert reopened.push(adapter, "x", actor="t").version == "v3"
    reopened.promote("x", "v2", "prod", actor="t")
    assert_consistent(reopened)
    assert not list((root / "x").glob(".orphan-*"))
    second.close()


@pytest.mark.timeout(300)
def test_replicas_racing_promote_delete_and_rollback_never_leave_an_alias_dangling(
    tmp_path: Path, control_plane_url: str
) -> None:
    """Three registry instances (each with its own connections, as three gateway replicas)
    over one control plane and one adapter directory, for a bounded time."""
    root = tmp_path / "registry"
    adapter = make_adapter(tmp_path / "a")
    planes = [open_control_plane(control_plane_url, tmp_path) for _ in range(3)]
    replicas = [open_registry(root, plane) for plane in planes]
    for _ in range(4):
        version = replicas[0].push(adapter, "x", actor="seed").version
        report = samples.eval_report(version=version)
        replicas[0].attach_eval_report("x", version, report, actor="seed")
    deadline = time.monotonic() + 6.0
    errors: list[BaseException] = []
    dangling: list[str] = []
    counts = {"ok": 0, "refused": 0}

    def work(index: int) -> None:
        registry, rng = replicas[index], random.Random(index)
        try:
            while time.monotonic() < deadline:
                labels = [v.version for v in registry.versions("x")]
                action = rng.choice(["promote", "promote", "delete", "rollback", "push"])
                try:
                    if action == "promote" and labels:
                        alias = rng.choice(["prod", "canary"])
                        registry.promote("x", rng.choice(labels), alias, actor=f"r{index}")
                    elif action == "delete" and labels:
                        registry.delete("x", rng.choice(labels), actor=f"r{index}")
                    elif action == "rollback":
                        registry.rollback("x", rng.choice(["prod", "canary"]), actor=f"r{index}")
                    else:
                        pushed = registry.push(adapter, "x", actor=f"r{index}")
                        report = samples.eval_report(version=pushed.version)
                        registry.attach_eval_report("x", pushed.version, report, actor=f"r{index}")
                    counts["ok"] += 1
                except (AdapterConflictError, AdapterNotFoundError, PromotionRefusedError):
                    # A rule refused it (e.g. promoting a version pushed a moment ago, before
                    # its report was attached): the race was lost cleanly.
                    counts["refused"] += 1
                current = {v.version for v in registry.versions("x")}
                for alias, entry in registry.aliases("x").items():
                    # An alias read after the versions may point at one pushed since: only a
                    # version that is gone from the store counts as dangling.
                    if entry["version"] not in current:
                        try:
                            registry.get("x", entry["version"])
                        except AdapterNotFoundError:
                            dangling.append(f"{alias} -> {entry['version']}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, "".join(traceback.format_exception(errors[0]))
    assert dangling == []
    assert counts["ok"] > 20 and counts["refused"] > 0, counts
    for registry in replicas:
        assert_consistent(registry)
    labels = [e["version"] for e in replicas[0].audit_entries("x") if e["action"] == "push"]
    assert len(labels) == len(set(labels)), "a label was handed out twice"
    for plane in planes:
        plane.close()


def test_a_file_only_registry_is_imported_with_its_aliases_and_audit_log(
    tmp_path: Path, control: ControlPlane
) -> None:
    root = tmp_path / "registry"
    adapter = make_adapter(tmp_path / "a")
    for label in ("v1", "v2"):
        target = root / "old" / label
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(adapter, target)
        (target / "registry.json").write_text(json.dumps({"pushed_at": 1.0, "rank": 8}))
    (root / "old" / "v2" / "eval_report.json").write_text(json.dumps(samples.eval_report(True)))
    (root / "old" / "aliases.json").write_text(
        json.dumps({"prod": {"version": "v2", "history": ["v1"]}})
    )
    entry = {"time": "t", "actor": "a", "action": "push", "name": "old", "version": "v1"}
    (root / "audit.log").write_text(json.dumps(entry) + "\n")
    registry = open_registry(root, control)
    assert [v.version for v in registry.versions("old")] == ["v1", "v2"]
    assert registry.resolve("old", "prod").version == "v2"
    assert registry.rollback("old", "prod", actor="t")["version"] == "v1"
    assert registry.audit_entries("old")[0]["actor"] == "a"
    assert registry.push(adapter, "old", actor="t").version == "v3"
    assert open_registry(root, control).aliases("old")["prod"]["version"] == "v1"  # no re-import
