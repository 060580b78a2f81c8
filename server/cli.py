"""`ragdock up` (engine + gateway) and `ragdock serve` (gateway only, against an engine URL)."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer
import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from adapters.errors import PromotionRefusedError, RegistryError
from engine.cli import wait_with_progress
from engine.launcher import EngineLaunchSpec, EngineProcess, EngineStartError
from engine.model_build import ModelBuildError, resolve_model_dir
from ragdock.contracts.adapter_manifest import read_adapter_manifest
from ragdock.redact import MaskingFormatter, mask_credentials
from ragdock.settings import Settings
from server.adapters_api.service import AdapterService, actor_id
from server.app import build_app, open_control
from server.auth import PLATFORM, Principal
from server.http_limits import server_config
from server.reader_setup import open_reader_registry, register_shipped_reader

console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (or RAGDOCK_CONFIG).")
]
EngineUrlOption = Annotated[
    str | None,
    typer.Option(help="Use this running vLLM (e.g. a GPU server) instead of starting one."),
]
PortOption = Annotated[int | None, typer.Option(help="Gateway port (RAGDOCK_PORT).")]
HostOption = Annotated[str | None, typer.Option(help="Gateway bind address (RAGDOCK_HOST).")]


def up(
    config: ConfigOption = None,
    engine_url: EngineUrlOption = None,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Build the model if needed, start vLLM, serve the gateway; Ctrl-C stops both."""
    settings = _load(config, engine_url=engine_url, host=host, port=port)
    _refuse_a_second_owner(settings)  # before minutes of engine start, not after
    _register_shipped_reader(settings)  # before the gateway resolves RAGDOCK_READER=auto
    engine: EngineProcess | None = None
    try:
        if settings.engine_url is None:
            model_dir = resolve_model_dir(
                settings.model, settings.home, step=lambda m: console.print(f"  model: {m}")
            )
            engine = EngineProcess(EngineLaunchSpec.from_settings(settings, model_dir))
            engine.start()
            wait_with_progress(engine, settings.engine_startup_timeout_s, console)
        _run_gateway(settings, demo=True)
    except (ModelBuildError, EngineStartError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    finally:
        if engine is not None:
            console.print("stopping the engine")
            engine.stop()


def serve(
    config: ConfigOption = None,
    engine_url: EngineUrlOption = None,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Serve the gateway only, in front of an engine that is already running."""
    settings = _load(config, engine_url=engine_url, host=host, port=port)
    _refuse_a_second_owner(settings)
    _run_gateway(settings, demo=False)


def _refuse_a_second_owner(settings: Settings) -> None:
    """Exit with the reason when another process owns the embedded vector store: the engine
    belongs to one process, and a second gateway over it would corrupt it."""
    if settings.qdrant_url:
        return
    try:
        from retrieval.store import EdgeStore, StoreInUseError
    except ImportError:  # no retrieval extra: no embedded store either
        return
    try:
        EdgeStore(settings.store_dir / "qdrant").close()
    except StoreInUseError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc


def _register_shipped_reader(settings: Settings) -> None:
    """Push the repo's reader into the registry and promote it to `reader@prod` when its gate
    passes (see `register_shipped_reader`); a failure is reported, and `up` goes on."""
    control = open_control(settings)
    try:
        readers = open_reader_registry(settings, control)
        line = register_shipped_reader(readers, actor=actor_id(OPERATOR))
        console.print(f"  reader: {escape(line)}")
    except RegistryError as exc:
        console.print(f"[yellow]shipped reader not registered[/]: {escape(exc.message)}")
    finally:
        control.close()


def _load(config: Path | None, **overrides: object) -> Settings:
    settings = Settings.load(config, **overrides)
    handler = logging.StreamHandler()  # no log line shows a URL's password
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    console.print(Panel("\n".join(settings.describe()), title="ragdock settings", expand=False))
    return settings


def _run_gateway(settings: Settings, *, demo: bool) -> None:
    if not settings.auth_enabled and settings.host != settings.bind_host:
        console.print(
            f"[bold red]No API keys are configured: ignoring host={settings.host} and binding "
            "127.0.0.1 only. Set RAGDOCK_API_KEYS to serve other hosts.[/]"
        )
    app = build_app(settings)
    server = uvicorn.Server(server_config(app, settings))
    announcer = threading.Thread(
        target=_announce, args=(server, settings, demo, app.state.adapter_service), daemon=True
    )
    announcer.start()
    # uvicorn drains in-flight requests on SIGINT/SIGTERM, then re-raises the signal it caught.
    # Turning both into KeyboardInterrupt lets the caller's cleanup (stopping the engine) run.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _announce(
    server: uvicorn.Server, settings: Settings, demo: bool, adapters: AdapterService
) -> None:
    """Once the gateway listens: print how to call it, and (for `up`) one real answer."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.1)
    base = f"http://{settings.bind_host}:{settings.port}"
    key = "$RAGDOCK_API_KEY" if settings.auth_enabled else "none"
    model = settings.served_model_name
    curl = (
        f"curl {base}/v1/chat/completions -H 'Content-Type: application/json' "
        f'-H "Authorization: Bearer {key}" \\\n  -d \''
        + json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
        + "'"
    )
    python = (
        "from openai import OpenAI\n"
        f'client = OpenAI(base_url="{base}/v1", api_key="{key}")\n'
        f'out = client.completions.create(model="{model}", prompt="The capital of France is", '
        "max_tokens=24, temperature=0)\n"
        "print(out.choices[0].text)"
    )
    console.print(
        Panel(
            f"[bold]ragdock gateway[/] listening on [cyan]{base}[/] "
            f"(OpenAI API under {base}/v1, engine {mask_credentials(settings.engine_base_url())})"
            "\n\n"
            f"[bold]curl[/]\n{curl}\n\n[bold]Python (openai)[/]\n{python}\n\n"
            + (f"[bold]Web console[/] {base}/console/\n\n" if settings.console else "")
            + "Ctrl-C stops everything.",
            title="ready",
            expand=False,
        )
    )
    if demo and not settings.auth_enabled:
        _demo_answer(base, model, adapters)


DEMO_COLLECTION = "demo"
DEMO_ADAPTER = "grounded"
COVERED_QUESTION = "Which port does the ragdock gateway listen on by default?"
UNCOVERED_QUESTION = "What is the boiling point of mercury?"


def _demo_answer(base: str, model: str, adapters: AdapterService) -> None:
    """Show real answers through the gateway: a completion, then grounded chat over the demo
    documents (one covered question, one the documents do not cover)."""
    http = httpx.Client(base_url=base, timeout=120)
    prompt = "The capital of France is"
    try:
        reply = http.post(
            "/v1/completions",
            json={"model": model, "prompt": prompt, "max_tokens": 24, "temperature": 0},
        )
        text = reply.json()["choices"][0]["text"]
        console.print(
            f"[bold]first answer through the gateway[/]: {prompt}[green]{escape(text)}[/]"
        )
        if http.get("/v1/collections").status_code != 200:
            return  # retrieval is not installed
        chat_model = _prepare_demo(http, model, adapters)
        for question in (COVERED_QUESTION, UNCOVERED_QUESTION):
            _ask_grounded(http, chat_model, question)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        console.print(f"[yellow]demo request failed: {exc}[/]")


# `up` registers the demo adapter itself, in its own process: without API keys no caller gets
# the admin scope, and the operator starting the gateway is not a caller.
OPERATOR = Principal(name="ragdock-up", tenant="default", scopes=frozenset({PLATFORM}))


def _prepare_demo(http: httpx.Client, base_model: str, adapters: AdapterService) -> str:
    """Ingest the demo documents (idempotent) and register the shipped grounded adapter."""
    http.post("/v1/collections", json={"name": DEMO_COLLECTION})
    docs = sorted((Path(__file__).parents[1] / "ragdock" / "demo_docs").glob("*.md"))
    files = [("files", (p.name, p.read_bytes(), "text/markdown")) for p in docs]
    ingest = http.post(f"/v1/collections/{DEMO_COLLECTION}/documents/upload", files=files)
    ingest.raise_for_status()
    result = ingest.json()
    console.print(
        f"demo collection '{DEMO_COLLECTION}': {len(docs)} documents "
        f"({result['added']} added, {result['unchanged']} unchanged, {result['chunks']} chunks)"
    )
    shipped = Path(__file__).parents[1] / "adapters" / "demo" / DEMO_ADAPTER
    if not (shipped / "adapter_config.json").is_file():
        return base_model
    registry = adapters.registry
    versions = [v.version for v in registry.versions(DEMO_ADAPTER)]
    if not versions or not _serves_shipped(adapters, versions[-1], shipped):
        # Not registered yet, or the repo now ships another one (retrained or recalibrated):
        # push it as a new version, so `up` never keeps serving a stale demo adapter.
        adapters.push_directory(shipped, DEMO_ADAPTER, None, OPERATOR)
        versions = [v.version for v in registry.versions(DEMO_ADAPTER)]
    if "prod" not in registry.aliases(DEMO_ADAPTER):
        # Promotion goes by the platform's verdict on the shipped eval report (unsigned by this
        # platform's key, so unverified): on every start, say why it was refused and serve the
        # version by name, as an operator trying a candidate would.
        try:
            registry.promote(DEMO_ADAPTER, versions[-1], "prod", actor=actor_id(OPERATOR))
        except PromotionRefusedError as exc:
            console.print(f"[yellow]demo adapter not promoted to prod[/]: {escape(exc.message)}")
    if "prod" in registry.aliases(DEMO_ADAPTER):
        return DEMO_ADAPTER
    return f"{DEMO_ADAPTER}@{versions[-1]}"


def _serves_shipped(adapters: AdapterService, version: str, shipped: Path) -> bool:
    """Whether this version of the demo adapter has the shipped manifest."""
    record = adapters.show(DEMO_ADAPTER, version, OPERATOR)
    return record.manifest == read_adapter_manifest(shipped)


def _ask_grounded(http: httpx.Client, model: str, question: str) -> None:
    reply = http.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 48,
            "temperature": 0,
            "rag": {"collection": DEMO_COLLECTION},
        },
    )
    reply.raise_for_status()
    body = reply.json()
    grounding = body["grounding"]
    answer = body["choices"][0]["message"]["content"]
    lines = [
        f"[bold]Q:[/] {escape(question)}",
        f"[bold]A ({model}):[/] [green]{escape(answer.strip())}[/]",
    ]
    for source in body["sources"][:3]:
        lines.append(escape(f"   [{source['index']}] {source['title']} ({source['uri']})"))
    top = grounding["top_score"]
    similarity = "none" if top is None else f"{top:.3f}"
    lines.append(
        f"   grounding: {grounding['status']} ({grounding['reason']}; best source similarity "
        f"{similarity}, gate {grounding['threshold']})"
    )
    decision = grounding.get("answerability") or {}
    if decision.get("score") is not None:
        rule = (
            f"answers at >= {decision['threshold']:.2f}"
            if decision.get("threshold") is not None
            else "calibration not enforced: the model decides"
        )
        lines.append(
            f"   answerability: {decision['score']:.2f} ({rule}; P(abstain) "
            f"{decision['p_abstain']:.2f}, question coverage {decision['question_coverage']:.2f})"
        )
    console.print("\n".join(lines))
