"""`ragdock model ...` and `ragdock engine ...` commands."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from engine.launcher import EngineLaunchSpec, EngineProcess, EngineStartError
from engine.model_build import (
    DEFAULT_MODEL,
    ModelBuildError,
    build_gemma3_270m,
    default_model_dir,
    resolve_model_dir,
    verify_checkpoint,
)
from ragdock.compute_dtype import choose_dtype
from ragdock.settings import Settings

console = Console(stderr=True)


def wait_with_progress(engine: EngineProcess, timeout_s: float, console: Console) -> float:
    """Wait for the engine with a spinner showing elapsed time and its latest log line.

    Raises:
        EngineStartError: as `EngineProcess.wait_ready`.
    """
    with console.status("starting the vLLM engine") as status:

        def tick(elapsed: float, last_line: str) -> None:
            status.update(
                f"starting the vLLM engine ({elapsed:3.0f} s / {timeout_s:.0f} s)  "
                f"[dim]{last_line[-90:]}[/]"
            )

        seconds = engine.wait_ready(timeout_s, on_tick=tick)
    console.print(f"[green]engine ready[/] in {seconds:.0f} s at {engine.url}")
    if engine.dtype_choice is not None:
        console.print(f"  engine dtype: {engine.dtype_choice.describe()}")
    return seconds


model_app = typer.Typer(help="Build and inspect the base model.", no_args_is_help=True)
engine_app = typer.Typer(help="Run the vLLM engine on its own.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (or RAGDOCK_CONFIG).")
]


@model_app.command("build")
def build(
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if a verified build exists.")] = False,
) -> None:
    """Build Gemma 3 270M from its PyPI GGUF package into RAGDOCK_HOME (idempotent)."""
    settings = Settings.load(config)
    out = default_model_dir(settings.home)
    if settings.model != DEFAULT_MODEL:
        path = resolve_model_dir(settings.model, settings.home, build=False)
        console.print(f"[green]model is a checkpoint path, nothing to build:[/] {path}")
        return
    if not force and verify_checkpoint(out):
        console.print(f"[green]verified[/] {out} (sha256 of every file matches its build manifest)")
        return
    started = time.monotonic()
    try:
        with console.status("building") as status:

            def step(message: str) -> None:
                console.print(f"  [dim]{time.monotonic() - started:5.1f}s[/] {message}")
                status.update(message)

            build_gemma3_270m(out, step=step)
    except ModelBuildError as exc:
        console.print(f"[red]build failed:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"[green]built[/] {out} in {time.monotonic() - started:.0f} s")


@engine_app.command("dtype")
def dtype(config: ConfigOption = None) -> None:
    """Print the dtype the engine will compute in here, and the measurement behind it."""
    settings = Settings.load(config)
    try:
        choice = choose_dtype(settings.engine_dtype, home=settings.home)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    print(f"{choice.dtype}\t{choice.describe()}")


@engine_app.command("start")
def start(
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option(help="Engine port (RAGDOCK_ENGINE_PORT).")] = None,
) -> None:
    """Start vLLM with LoRA hot-swap enabled and keep it in the foreground until Ctrl-C."""
    settings = Settings.load(config, engine_port=port)
    try:
        model_dir = resolve_model_dir(settings.model, settings.home, step=console.print)
        engine = EngineProcess(EngineLaunchSpec.from_settings(settings, model_dir))
        engine.start()
        wait_with_progress(engine, settings.engine_startup_timeout_s, console)
    except (ModelBuildError, EngineStartError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"[green]engine ready[/] at {engine.url} (model '{settings.served_model_name}')")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while engine.running():
            time.sleep(1)
        console.print(f"[red]engine exited[/]; log: {engine.spec.log_file}")
    except KeyboardInterrupt:
        console.print("stopping the engine")
    finally:
        engine.stop()
