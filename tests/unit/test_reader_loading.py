"""Which reader a gateway loads: `RAGDOCK_READER` in its forms (none, a directory, NAME@ALIAS,
NAME@VERSION, auto = the registry's reader@prod else the shipped one); `ragdock up`'s
registration of the shipped reader; and `ragdock readers` over the same store, end to end on
the real shipped reader (no engine, no gateway)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from adapters.errors import ReaderNotFoundError
from adapters.reader_registry import DEFAULT_READER, ReaderRegistry
from ragdock.controlplane import ControlPlane
from ragdock.settings import Settings
from ragdock_cli.app import app as ragdock_app
from server import readers_cli
from server.app import open_control
from server.rag.reading import SHIPPED_READER, reader_directory
from server.reader_setup import open_reader_registry, register_shipped_reader

UP = "default/ragdock-up"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a fresh machine: a home of its own (the CLI reads the same environment)."""
    monkeypatch.setenv("RAGDOCK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAGDOCK_CONFIG", raising=False)
    monkeypatch.delenv("RAGDOCK_DATABASE_URL", raising=False)
    monkeypatch.delenv("RAGDOCK_ADAPTERS_DIR", raising=False)
    monkeypatch.delenv("RAGDOCK_DATA_DIR", raising=False)
    return Settings.load()


@pytest.fixture
def control(settings: Settings) -> Iterator[ControlPlane]:
    plane = open_control(settings)
    yield plane
    plane.close()


@pytest.fixture
def readers(settings: Settings, control: ControlPlane) -> ReaderRegistry:
    return open_reader_registry(settings, control)


def test_none_and_a_directory_work_as_before(tmp_path: Path, readers: ReaderRegistry) -> None:
    assert reader_directory("none", readers) is None
    assert reader_directory(str(SHIPPED_READER)) == SHIPPED_READER
    with pytest.raises(FileNotFoundError, match=r"no reader manifest\.json"):
        reader_directory(str(tmp_path))
    # A directory whose name has the registry form is still a directory.
    odd = tmp_path / "reader@prod"
    shutil.copytree(SHIPPED_READER, odd, ignore=shutil.ignore_patterns("*.safetensors"))
    assert reader_directory(str(odd), readers) == odd


def test_auto_is_the_promoted_reader_else_the_shipped_one(readers: ReaderRegistry) -> None:
    assert reader_directory("auto") == SHIPPED_READER
    assert reader_directory("auto", readers) == SHIPPED_READER  # nothing promoted yet
    first = readers.push(SHIPPED_READER, actor="t")
    assert reader_directory("auto", readers) == SHIPPED_READER  # pushed, not promoted
    readers.promote(DEFAULT_READER, first.version, "prod", actor="t")
    assert reader_directory("auto", readers) == first.path
    second = readers.push(SHIPPED_READER, actor="t")
    readers.promote(DEFAULT_READER, second.version, "prod", actor="t")
    assert reader_directory("auto", readers) == second.path
    readers.rollback(DEFAULT_READER, "prod", actor="t")
    assert reader_directory("auto", readers) == first.path


def test_name_at_alias_or_version(readers: ReaderRegistry) -> None:
    pushed = readers.push(SHIPPED_READER, "squad", actor="t")
    readers.promote("squad", pushed.version, "canary", actor="t")
    assert reader_directory("squad@v1", readers) == pushed.path
    assert reader_directory("squad@canary", readers) == pushed.path
    assert (pushed.path / "manifest.json").is_file()
    with pytest.raises(ReaderNotFoundError):
        reader_directory("squad@prod", readers)
    with pytest.raises(ReaderNotFoundError, match="no reader registry"):
        reader_directory("squad@v1")


def test_up_registers_and_promotes_the_shipped_reader_once(readers: ReaderRegistry) -> None:
    line = register_shipped_reader(readers, actor=UP)
    assert "reader@prod -> reader@v1" in line
    assert reader_directory("auto", readers) == readers.get(DEFAULT_READER, "v1").path
    # Every later start finds it there: nothing is copied again.
    assert "is the shipped reader" in register_shipped_reader(readers, actor=UP)
    assert [v.version for v in readers.versions(DEFAULT_READER)] == ["v1"]


def test_up_brings_a_changed_shipped_reader_to_prod_unless_an_operator_chose(
    readers: ReaderRegistry, tmp_path: Path
) -> None:
    register_shipped_reader(readers, actor=UP)
    recalibrated = tmp_path / "recalibrated"
    shutil.copytree(SHIPPED_READER, recalibrated)
    manifest = json.loads((recalibrated / "manifest.json").read_text())
    manifest["decision"]["threshold"] = 0.6
    (recalibrated / "manifest.json").write_text(json.dumps(manifest))
    assert "-> reader@v2" in register_shipped_reader(readers, actor=UP, shipped=recalibrated)
    readers.rollback(DEFAULT_READER, "prod", actor="t/ops")  # an operator's choice: v1
    manifest["decision"]["threshold"] = 0.7
    (recalibrated / "manifest.json").write_text(json.dumps(manifest))
    line = register_shipped_reader(readers, actor=UP, shipped=recalibrated)
    assert "stays v1" in line and "reader@v3" in line
    assert readers.resolve(DEFAULT_READER, "prod").version == "v1"


def test_up_does_not_promote_a_shipped_reader_the_gate_refuses(
    readers: ReaderRegistry, tmp_path: Path
) -> None:
    uncalibrated = tmp_path / "uncalibrated"
    shutil.copytree(SHIPPED_READER, uncalibrated)
    manifest = json.loads((uncalibrated / "manifest.json").read_text())
    manifest["decision"] = None
    (uncalibrated / "manifest.json").write_text(json.dumps(manifest))
    line = register_shipped_reader(readers, actor=UP, shipped=uncalibrated)
    assert "not promoted" in line and "decision is calibrated" in line
    assert readers.aliases(DEFAULT_READER) == {}
    assert reader_directory("auto", readers) == SHIPPED_READER


def run(*args: str) -> Result:
    return CliRunner().invoke(ragdock_app, ["readers", *args])


def test_the_readers_cli_pushes_promotes_and_rolls_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers_cli, "console", Console(width=200))
    for _ in range(2):
        pushed = run("push", str(SHIPPED_READER))
        assert pushed.exit_code == 0, pushed.output
    assert "pushed reader@v2; the reader gate `reader-default` passes" in pushed.output
    assert run("promote", DEFAULT_READER, "v1", "--alias", "prod").exit_code == 0
    promoted = run("promote", DEFAULT_READER, "v2", "--alias", "prod")
    assert "reader@prod -> v2" in promoted.output
    listed = run("list")
    assert "v1, v2" in listed.output and "prod -> v2" in listed.output
    assert "reader@prod -> v1" in run("rollback", DEFAULT_READER, "--alias", "prod").output
    shown = run("show", DEFAULT_READER, "prod")
    assert '"ref": "reader@v1"' in shown.output and "decision is calibrated" in shown.output
    refused = run("delete", DEFAULT_READER, "v1")
    assert refused.exit_code == 1 and "still served" in refused.output
    assert run("delete", DEFAULT_READER, "v2").exit_code == 0
    missing = run("promote", DEFAULT_READER, "v9")
    assert missing.exit_code == 1 and "reader_not_found" in missing.output
    audit = run("audit", DEFAULT_READER)
    assert audit.output.count("local/") >= 6 and "rollback" in audit.output
    # The gateway of these settings loads what the CLI promoted.
    control = open_control(settings)
    try:
        registry = open_reader_registry(settings, control)
        assert reader_directory("auto", registry) == registry.get(DEFAULT_READER, "v1").path
        assert registry.root == settings.home / "adapters" / ".readers"
    finally:
        control.close()


def test_the_cli_refuses_a_gated_promotion_unless_forced(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers_cli, "console", Console(width=200))
    weak = tmp_path / "weak"
    shutil.copytree(SHIPPED_READER, weak)
    manifest = json.loads((weak / "manifest.json").read_text())
    manifest["validation"]["auroc_hard_negatives"] = 0.6
    (weak / "manifest.json").write_text(json.dumps(manifest))
    pushed = run("push", str(weak), "--name", "weak")
    assert "fails (validation.auroc_hard_negatives >= 0.8)" in pushed.output
    refused = run("promote", "weak", "v1")
    assert refused.exit_code == 1 and "gate_not_passed" in refused.output
    forced = run("promote", "weak", "v1", "--force", "--reason", "a trial")
    assert forced.exit_code == 0, forced.output
    assert '"forced": true' in run("audit", "weak").output


@pytest.mark.embedder  # the reader runs on the installed MiniLM weights
def test_the_promoted_copy_loads_as_the_gateway_loads_it(readers: ReaderRegistry) -> None:
    from server.metrics import GatewayMetrics
    from server.rag.reading import SourceReader

    register_shipped_reader(readers, actor=UP)
    directory = reader_directory("auto", readers)
    assert directory is not None and directory != SHIPPED_READER
    loaded = SourceReader.load(directory, GatewayMetrics(), threads=1)
    try:
        assert loaded.calibrated
        chunk = "The ragdock gateway listens on port 8000 by default."
        (evidence,) = loaded.reader.evidence("Which port does the gateway listen on?", [chunk])
        assert "8000" in evidence.text
    finally:
        loaded.close()


def test_a_promotion_or_rollback_reaches_a_running_gateway_and_a_bad_reader_never_does(
    readers: ReaderRegistry,
) -> None:
    from grounding.policy import SourceReaderModel
    from grounding.reader.reader import ReaderLoadError
    from server.metrics import GatewayMetrics
    from server.rag.reader_watch import ReaderWatcher
    from server.rag.reading import SourceReader
    from tests.fakes.reader import PhraseReader

    first = readers.push(SHIPPED_READER, actor="t")
    readers.promote(DEFAULT_READER, first.version, "prod", actor="t")
    broken: set[Path] = set()
    loads: list[Path] = []

    def load(directory: Path) -> SourceReaderModel:
        loads.append(directory)
        if directory in broken:
            raise ReaderLoadError(f"{directory} was modified")
        return PhraseReader([directory.name])

    metrics = GatewayMetrics()
    serving = SourceReader(PhraseReader([first.version]), metrics, first.path)
    watcher = ReaderWatcher("auto", readers, serving, load, metrics)
    assert watcher.check() is None and loads == []  # nothing changed: nothing loaded

    second = readers.push(SHIPPED_READER, actor="t")
    readers.promote(DEFAULT_READER, second.version, "prod", actor="t")
    before = serving.loaded
    assert watcher.check() == second.path
    assert serving.directory == second.path and serving.reader is not before.model
    assert before.directory == first.path  # a read that took the old state keeps it whole

    readers.rollback(DEFAULT_READER, "prod", actor="t")
    assert watcher.check() == first.path and serving.directory == first.path

    third = readers.push(SHIPPED_READER, actor="t")
    broken.add(third.path)
    readers.promote(DEFAULT_READER, third.version, "prod", actor="t")
    assert watcher.check() is None and serving.directory == first.path  # the old one serves
    attempts = len(loads)
    assert watcher.check() is None and len(loads) == attempts  # and it is not retried
    assert metrics.reader_reloads.labels(outcome="loaded")._value.get() == 2
    assert metrics.reader_reloads.labels(outcome="failed")._value.get() == 1
    serving.close()
