"""Fuzz the gateway from its own OpenAPI schema (schemathesis): valid and invalid requests to every
operation, with an admin key so no route stops at the scope check. Two properties must hold:

* no 5xx, and no error event inside a 200 stream;
* every 4xx has OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`.

    python -m eval.perf.fuzz_gateway                      # starts its own engine and gateway
    python -m eval.perf.fuzz_gateway --examples 100       # per operation and mode (default 60)
    python -m eval.perf.fuzz_gateway --gateway-url http://127.0.0.1:8000 --api-key KEY

Generation is capped where a valid request would only burn engine time (`max_tokens` <= 4,
`n` <= 2): the fuzzing is of the gateway's parsing and mapping, not of how long the model talks.
Generation is derandomized (`--seed`), so a run is repeatable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import requests
from hypothesis import HealthCheck, Phase, given, settings
from rich.console import Console

from eval.perf.bench import free_port, print_results, results_table
from server.relay.framing import SEPARATOR, event_data

console = Console(width=150)
_ERROR_FIELDS = {"message", "type", "param", "code"}
_CAPS = {"max_tokens": 4, "max_completion_tokens": 4, "n": 2, "best_of": 2}
SERVED_MODEL = "gemma"
COLLECTION = "fuzz"


@dataclass
class FuzzReport:
    """What a run sent and what came back, per operation."""

    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    def record(self, operation: str, status: int, failure: str | None) -> None:
        self.statuses.setdefault(operation, Counter())[status] += 1
        if failure is not None:
            self.failures.append(failure)


def check_response(status: int, content_type: str, body: bytes) -> str | None:
    """Why a response breaks the two properties, or None when it keeps them."""
    if status >= 500:
        return f"server error {status}: {body[:300]!r}"
    if status == 200 and content_type.startswith("text/event-stream"):
        for event in body.split(SEPARATOR):
            data = event_data(event)
            if isinstance(data, dict) and "error" in data:
                return f"error event inside a 200 stream: {event[:300]!r}"
        return None
    if 400 <= status < 500:
        try:
            parsed = json.loads(body)
        except ValueError:
            return f"{status} body is not JSON: {body[:200]!r}"
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(error, dict) or set(error) != _ERROR_FIELDS or set(parsed) != {"error"}:
            return f"{status} body is not OpenAI's error shape: {body[:300]!r}"
        if not isinstance(error["message"], str) or not error["message"]:
            return f"{status} error without a message: {body[:300]!r}"
    return None


def _cap(case: Any) -> None:
    """Bound the engine work a generated request asks for (it defaults to the whole context)."""
    body = case.body
    if not isinstance(body, dict):
        return
    for name, cap in _CAPS.items():
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            body[name] = cap
    generating = case.path in ("/v1/chat/completions", "/v1/completions")
    if generating and "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = _CAPS["max_tokens"]


def _steer(case: Any) -> None:
    """Point a valid request at things that exist (the served model, the seeded collection), so
    valid requests get past the lookups and through the engine and the store; random names are
    left to the invalid requests, which keep them."""
    body = case.body
    if isinstance(body, dict):
        if "model" in body and case.path in ("/v1/chat/completions", "/v1/completions"):
            body["model"] = SERVED_MODEL
        if "model" in body and case.path == "/v1/embeddings":
            body["model"] = "all-minilm-l6-v2"
        if "collection" in body:
            body["collection"] = COLLECTION
        if isinstance(body.get("rag"), dict):
            body["rag"]["collection"] = COLLECTION
    params = case.path_parameters
    if params and "collection" in params and case.method.upper() != "DELETE":
        params["collection"] = COLLECTION


def seed_collection(base_url: str, api_key: str) -> None:
    """The collection valid requests search: a few real documents."""
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120
    ) as http:
        http.post("/v1/collections", json={"name": COLLECTION}).raise_for_status()
        docs = [
            {"id": "port", "text": "The gateway listens on port 8000 by default."},
            {"id": "engine", "text": "The engine is vLLM serving Gemma with LoRA adapters."},
            {"id": "keys", "text": "API keys carry a tenant and the scopes chat, ingest, admin."},
        ]
        reply = http.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": docs})
        reply.raise_for_status()


def fuzz(
    base_url: str,
    api_key: str,
    *,
    examples: int,
    seed: int = 0,
    timeout_s: float = 120.0,
    progress: bool = False,
) -> FuzzReport:
    """Send `examples` generated requests per operation and per mode (valid, invalid).

    Args:
        base_url: the gateway, e.g. `http://127.0.0.1:8000`.
        api_key: an admin-scoped key (any string when the gateway has no keys).
        examples: requests per operation and generation mode.
        seed: hypothesis seed; the same seed sends the same requests.
        timeout_s: per-request timeout: a request that hangs is a failure too.
        progress: print one line per operation.

    Returns:
        Status counts per operation and the failures found.
    """
    import schemathesis
    from schemathesis import GenerationMode

    spec = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(spec)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {api_key}"}
    report = FuzzReport()
    seed_collection(base_url, api_key)

    def send(label: str, case: Any, steer: bool) -> None:
        _cap(case)
        if steer:
            _steer(case)
        try:
            response = case.call(
                base_url=base_url, session=session, headers=headers, timeout=timeout_s
            )
        except requests.RequestException as exc:
            report.record(label, 0, f"{label}: no response ({exc!r})")
            return
        content_type = response.headers.get("content-type") or [""]  # header -> list of values
        problem = check_response(response.status_code, content_type[0], response.content)
        failure = f"{label}: {problem}\n  {case.as_curl_command()}" if problem else None
        report.record(label, response.status_code, failure)

    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        label = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = _generated(operation.as_strategy(generation_mode=mode), examples, seed)
            steer = mode == GenerationMode.POSITIVE
            run(lambda case, label=label, steer=steer: send(label, case, steer))
        if progress:
            counts = report.statuses.get(label, Counter())
            console.print(f"  {label}: {dict(sorted(counts.items()))}")
    return report


def _generated(strategy: Any, examples: int, seed: int) -> Any:
    """A runner calling `action(case)` for `examples` cases drawn from `strategy`. Failures are
    recorded by the action, never raised, so hypothesis does not stop to shrink them."""

    def run(action: Any) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=seed == 0,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def each(case: Any) -> None:
            action(case)

        # Unsatisfiable: no invalid request exists (an operation without parameters or body).
        with contextlib.suppress(hypothesis.errors.Unsatisfiable):
            (hypothesis.seed(seed)(each) if seed else each)()

    return run


def print_report(report: FuzzReport, seconds: float) -> None:
    table = results_table(
        f"gateway fuzzing: {report.requests} requests in {seconds:.0f} s",
        ("operation", "requests", "2xx", "4xx", "5xx", "statuses"),
    )
    for label, counts in sorted(report.statuses.items()):
        total = sum(counts.values())
        ok = sum(n for s, n in counts.items() if 200 <= s < 300)
        client = sum(n for s, n in counts.items() if 400 <= s < 500)
        server = sum(n for s, n in counts.items() if s >= 500 or s == 0)
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(counts.items()))
        table.add_row(label, str(total), str(ok), str(client), str(server), statuses)
    print_results(console, table)
    console.print(f"failures: {len(report.failures)}")
    for failure in report.failures[:20]:
        console.print(failure, markup=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway-url", help="a running gateway (default: start one)")
    parser.add_argument("--api-key", default="", help="an admin-scoped key of that gateway")
    parser.add_argument("--examples", type=int, default=60, help="per operation and mode")
    parser.add_argument("--seed", type=int, default=0, help="0: derandomized generation")
    args = parser.parse_args()

    with ExitStack() as stack:
        url, key = args.gateway_url, args.api_key
        if url is None:
            url, key = _start_stack(stack)
        started = time.monotonic()
        report = fuzz(url, key, examples=args.examples, seed=args.seed, progress=True)
        print_report(report, time.monotonic() - started)
    sys.exit(1 if report.failures else 0)


def _start_stack(stack: ExitStack) -> tuple[str, str]:
    """The real engine and a gateway with an admin key, in a temporary directory."""
    from engine.launcher import EngineLaunchSpec, EngineProcess
    from engine.model_build import DEFAULT_MODEL, resolve_model_dir
    from ragdock.settings import Settings, default_home
    from server.process import start_gateway

    key = secrets.token_hex(16)  # the fuzzing gateway's one key, allowed everything
    keys = json.dumps([{"key": key, "name": "fuzz", "scopes": ["platform"]}])

    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ragdock-fuzz-")))
    home = default_home()
    model_dir = resolve_model_dir(DEFAULT_MODEL, home, step=console.print)
    spec = EngineLaunchSpec.from_settings(
        Settings.load(None, served_model_name="gemma"),
        model_dir,
        log_file=workdir / "engine.log",
        port=free_port(),
        dtype_cache=home,
    )
    engine = stack.enter_context(EngineProcess(spec))
    console.print("starting the engine ...")
    engine.wait_ready(600)
    gateway = start_gateway(engine.url, workdir / "gateway.log", {"RAGDOCK_API_KEYS": keys})
    stack.callback(gateway.stop)
    return gateway.url, key


if __name__ == "__main__":
    main()
