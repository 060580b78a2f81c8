"""The engine and gateway a benchmark measures: given by URL, or started here the way
`ragdock up` starts them (the engine from the same settings and flags, the gateway as a
`ragdock serve` subprocess), and stopped when the benchmark ends."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from engine.launcher import EngineLaunchSpec, EngineProcess
from engine.model_build import resolve_model_dir
from eval.perf.bench import free_port
from ragdock.settings import Settings
from server.process import start_gateway


@dataclass(frozen=True)
class Stack:
    engine_url: str
    gateway_url: str
    gateway_pid: int | None  # None for a gateway given by URL (its CPU is not measured)
    engine_pid: int | None
    dtype: str  # the engine's dtype, as resolved at start ("?" for an engine given by URL)
    workdir: Path


def stack_arguments(description: str) -> argparse.ArgumentParser:
    """A benchmark's parser: `description` (the script's docstring) as its help, and the stack it
    measures, `--engine-url` and `--gateway-url` (both: measure them; neither: start them)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine-url", help="a running engine (with --gateway-url)")
    parser.add_argument("--gateway-url", help="a running gateway in front of it")
    return parser


def model_dir(console: Console) -> Path:
    """The default model's directory (built from its PyPI package on first use)."""
    settings = Settings.load(None)
    return resolve_model_dir(settings.model, settings.home, step=console.print)


@contextmanager
def running_stack(
    console: Console,
    *,
    engine_url: str | None = None,
    gateway_url: str | None = None,
    gateway_env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """Yield the stack to measure; whatever was started here is stopped on exit.

    Args:
        engine_url / gateway_url: measure these instead of starting them (both, or neither).
        gateway_env: settings for a gateway started here (default: keyless, loopback only).
    """
    workdir = Path(tempfile.mkdtemp(prefix="ragdock-bench-"))
    if engine_url and gateway_url:
        yield Stack(engine_url.rstrip("/"), gateway_url.rstrip("/"), None, None, "?", workdir)
        return
    settings = Settings.load(None, engine_port=free_port())
    with ExitStack() as stack:
        spec = EngineLaunchSpec.from_settings(
            settings, model_dir(console), log_file=workdir / "engine.log"
        )
        engine = stack.enter_context(EngineProcess(spec))
        console.print(f"starting the engine ({workdir / 'engine.log'})...")
        engine.wait_ready(settings.engine_startup_timeout_s)
        gateway = start_gateway(
            engine.url, workdir / "gateway.log", {"RAGDOCK_API_KEYS": "", **(gateway_env or {})}
        )
        stack.callback(gateway.stop)
        yield Stack(
            engine.url, gateway.url, gateway.proc.pid, engine.pid, engine.spec.dtype, workdir
        )
