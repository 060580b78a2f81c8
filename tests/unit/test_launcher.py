from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from engine import launcher
from engine.launcher import EngineLaunchSpec, EngineProcess, EngineStartError
from ragdock.ports import free_port


def _spec(tmp_path: Path, port: int = 8100) -> EngineLaunchSpec:
    return EngineLaunchSpec(
        model_dir=Path("/models/gemma"),
        served_model_name="gemma",
        log_file=tmp_path / "engine.log",
        port=port,
        extra_args=("--enforce-eager",),
    )


def test_command_enables_lora_and_uses_the_module_entry_point(tmp_path: Path) -> None:
    command = _spec(tmp_path).command(python="py")
    assert command[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(command)
    for flag in (
        "--model /models/gemma",
        "--served-model-name gemma",
        "--enable-lora",
        "--max-lora-rank 16",
        "--max-loras 4",
        "--max-model-len 2048",
        "--port 8100",
        "--enable-auto-tool-choice --tool-call-parser pythonic",
    ):
        assert flag in joined
    assert command[-1] == "--enforce-eager"


def test_environment_turns_on_runtime_lora_and_keeps_user_overrides(tmp_path: Path) -> None:
    env = _spec(tmp_path).environment({"VLLM_CPU_KVCACHE_SPACE": "8", "PATH": "/bin"})
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "8"  # the user's value wins
    assert env["PATH"] == "/bin"


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        engine = EngineProcess(_spec(tmp_path, busy.getsockname()[1]))
        with pytest.raises(EngineStartError, match="already in use"):
            engine.start()
    assert not engine.running()


@pytest.mark.engine  # starts the real vLLM (which exits: no such model)
def test_an_engine_that_dies_reports_its_last_log_lines(tmp_path: Path) -> None:
    # A model directory that does not exist makes the real vLLM exit during start-up.
    spec = EngineLaunchSpec(
        model_dir=tmp_path / "no-such-model",
        served_model_name="gemma",
        log_file=tmp_path / "engine.log",
        port=free_port(),
    )
    engine = EngineProcess(spec)
    engine.start()
    with pytest.raises(EngineStartError, match="exited with code") as caught:
        engine.wait_ready(timeout_s=300)
    assert "last engine log lines" in str(caught.value)
    assert "no-such-model" in str(caught.value)
    engine.stop()


def test_a_cpu_engine_gets_the_cpu_kernel_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launcher, "default_device", lambda: "cpu")
    spec = EngineLaunchSpec(
        model_dir=Path("/m"), served_model_name="gemma", log_file=tmp_path / "engine.log"
    )
    command = spec.command(python="py")
    config = json.loads(command[command.index("--kernel-config") + 1])
    assert config["ir_op_priority"]["rms_norm"][0] == "ragdock_cpu"
    assert json.loads(command[command.index("--compilation-config") + 1]) == {"custom_ops": ["all"]}


@pytest.mark.parametrize(
    ("device", "cpu_kernels", "extra"),
    [
        ("cuda", True, ()),  # a GPU engine compiles its own fused kernels
        ("cpu", False, ()),  # turned off in the settings
        ("cpu", True, ("--compilation-config", "{}")),  # the operator's own flag stands
        ("cpu", True, ("--kernel-config={}",)),
    ],
)
def test_the_cpu_kernel_flags_stay_out_where_they_do_not_belong(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    device: str,
    cpu_kernels: bool,
    extra: tuple[str, ...],
) -> None:
    monkeypatch.setattr(launcher, "default_device", lambda: device)
    spec = EngineLaunchSpec(
        model_dir=Path("/m"),
        served_model_name="gemma",
        log_file=tmp_path / "engine.log",
        cpu_kernels=cpu_kernels,
        extra_args=extra,
    )
    command = spec.command(python="py")
    assert command.count("--kernel-config") + command.count("--compilation-config") == (
        1 if extra[:1] == ("--compilation-config",) else 0
    )


def test_an_empty_tool_parser_leaves_tool_calling_off(tmp_path: Path) -> None:
    spec = EngineLaunchSpec(
        model_dir=Path("/m"), served_model_name="g", log_file=tmp_path / "l", tool_parser=""
    )
    command = spec.command(python="py")
    assert "--enable-auto-tool-choice" not in command and "--tool-call-parser" not in command


def test_without_ragdocks_plugin_the_engine_gets_no_kernel_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # VLLM_PLUGINS naming other plugins only (the LoRA resolver): the RMSNorm provider the
    # kernel config names would not exist in the engine, which would refuse to start.
    monkeypatch.setattr(launcher, "default_device", lambda: "cpu")
    monkeypatch.setenv("VLLM_PLUGINS", "lora_filesystem_resolver")
    spec = EngineLaunchSpec(model_dir=Path("/m"), served_model_name="g", log_file=tmp_path / "l")
    command = spec.command(python="py")
    assert "--kernel-config" not in command and "--compilation-config" in command
    monkeypatch.setenv("VLLM_PLUGINS", "lora_filesystem_resolver, ragdock_cpu")
    assert "--kernel-config" in spec.command(python="py")
