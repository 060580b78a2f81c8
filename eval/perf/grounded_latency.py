"""How long a grounded answer takes: the RAG chat path through the gateway, side by side with the
same kind of final prompts sent straight to the engine.

    python -m eval.perf.grounded_latency                  # starts its own engine and gateway
    python -m eval.perf.grounded_latency --engine-url http://127.0.0.1:8100 \
        --gateway-url http://127.0.0.1:8000 [--api-key KEY]

The corpus is a public SQuAD 2.0 slice (each paragraph a document; `--squad`), or any JSONL of
{"id", "title", "text"} documents with a JSONL of {"question"} lines (`--docs`, `--questions`).
Each request retrieves `--top-k` sources (a ~900-token prompt for SQuAD paragraphs) and generates
exactly `--max-tokens` tokens (greedy, `ignore_eos`), streamed with usage.

Direct prompts are built from `/v1/retrieve`, which runs the chat's own search, and the same
`grounded_conversation` the gateway sends, so both paths prefill the same kind of prompt. Every
question is asked once in the whole run: a prompt the engine saw before would be served from its
prefix cache, and the comparison would measure the cache. Paths alternate batch by batch so
machine noise hits both alike. Reported per concurrency: p50/p95 latency, p50 time to first
token, prefill tokens/s (prompt tokens over time to first token, at 1 in flight), the ratio
gateway/direct, and prefill as a share of the model-shaped matmul roofline (eval/perf/machine.py).

With `--compare-reader READER_DIR` the two paths are instead two gateways in front of the same
engine, one with the grounding reader (`RAGDOCK_READER=READER_DIR`) and one without
(`RAGDOCK_READER=none`), each with the collection ingested: the ratio is what reading the sources
costs a grounded answer (the reader runs while the engine prefills; a stream it grounds is held
until the answer is whole, so its time to first token is its latency). Both are asked with the
retrieval gate and the answer threshold at 0, so every request is generated on both paths.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from eval.perf.bench import nearest_rank, print_results, read_stream, results_table
from eval.perf.machine import Roofline, measure_roofline
from eval.perf.stack import Stack, model_dir, running_stack, stack_arguments
from ragdock.settings import Settings
from server.process import start_gateway
from server.rag.grounding import grounded_conversation
from server.rag.protocol import Source

console = Console(width=160)
COLLECTION = "grounded-latency"
DEFAULT_SQUAD = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "squad2-public"


@dataclass(frozen=True)
class Sample:
    """One streamed request."""

    latency: float
    ttft: float
    prompt_tokens: int
    completion_tokens: int
    abstained: bool = False


@dataclass(frozen=True)
class Question:
    text: str
    direct_messages: list[dict[str, Any]] | None = None  # filled in for the direct path


def squad_corpus(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """SQuAD paragraphs as documents, and the answerable questions, interleaved across
    articles so that any prefix of the list covers the whole corpus."""
    file = path if path.is_file() else next(path.glob("*.json"))
    articles = json.loads(file.read_text())["data"]
    documents, per_article = [], []
    for a, article in enumerate(articles):
        questions = []
        for p, paragraph in enumerate(article["paragraphs"]):
            title = article["title"].replace("_", " ")
            documents.append({"id": f"{a}-{p}", "title": title, "text": paragraph["context"]})
            questions += [q["question"] for q in paragraph["qas"] if not q.get("is_impossible")]
        per_article.append(questions)
    mixed = [q for group in itertools.zip_longest(*per_article) for q in group if q]
    return documents, mixed


def jsonl_corpus(docs: Path, questions: Path) -> tuple[list[dict[str, str]], list[str]]:
    rows = [json.loads(line) for line in docs.read_text().splitlines() if line.strip()]
    documents = [
        {"id": str(r["id"]), "title": str(r.get("title", "")), "text": str(r["text"])} for r in rows
    ]
    asked = [json.loads(line)["question"] for line in questions.read_text().splitlines() if line]
    return documents, asked


async def ingest(client: httpx.AsyncClient, documents: list[dict[str, str]]) -> None:
    await client.post("/v1/collections", json={"name": COLLECTION})
    for start in range(0, len(documents), 200):
        reply = await client.post(
            f"/v1/collections/{COLLECTION}/documents",
            json={"documents": documents[start : start + 200]},
            timeout=600,
        )
        reply.raise_for_status()
        console.print(f"ingested {min(start + 200, len(documents))}/{len(documents)} documents")


async def direct_messages(
    client: httpx.AsyncClient, question: str, top_k: int, abstention: str
) -> list[dict[str, Any]]:
    """The conversation the gateway would forward for `question` (retrieval only, no engine)."""
    reply = await client.post(
        "/v1/retrieve", json={"collection": COLLECTION, "query": question, "top_k": top_k}
    )
    reply.raise_for_status()
    sources = [Source(**s) for s in reply.json()["data"]]
    return grounded_conversation([{"role": "user", "content": question}], sources, abstention)


def chat_body(args: argparse.Namespace, question: Question, through_gateway: bool) -> bytes:
    body: dict[str, Any] = {
        "model": args.model,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if through_gateway:
        body["messages"] = [{"role": "user", "content": question.text}]
        body["rag"] = {"collection": COLLECTION, "top_k": args.top_k}
        if args.compare_reader:
            # Both gateways generate for every question: left to its decision, the reader's
            # abstains before the engine on most of them and the ratio would time abstention.
            body["rag"].update(min_score=0.0, min_answerability=0.0)
    else:
        body["messages"] = question.direct_messages
    return json.dumps(body).encode()


async def one_request(client: httpx.AsyncClient, body: bytes) -> Sample:
    started = time.perf_counter()
    async with client.stream(
        "POST", "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    ) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"{reply.status_code}: {(await reply.aread())[:300]!r}")
        read = await read_stream(reply, started)
    usage = read.usage
    return Sample(
        latency=read.seconds,
        ttft=read.seconds if read.ttft is None else read.ttft,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        abstained=any((c.get("grounding") or {}).get("status") == "abstained" for c in read.chunks),
    )


async def batch(
    client: httpx.AsyncClient, bodies: Sequence[bytes], concurrency: int
) -> tuple[list[Sample], float]:
    """Send `bodies` with `concurrency` in flight; the samples and the batch's wall time."""
    pending = iter(bodies)
    samples: list[Sample] = []

    async def worker() -> None:
        for body in pending:
            samples.append(await one_request(client, body))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


@dataclass
class PathResult:
    samples: list[Sample]
    seconds: float = 0.0

    @property
    def answered(self) -> list[Sample]:
        return [s for s in self.samples if not s.abstained]

    def p50(self) -> float:
        return nearest_rank([s.latency for s in self.samples], 0.5)

    def prefill_tokens_per_s(self) -> float:
        return statistics.median(s.prompt_tokens / s.ttft for s in self.answered)

    def output_tokens_per_s(self) -> float:
        return sum(s.completion_tokens for s in self.samples) / self.seconds


async def measure(
    args: argparse.Namespace,
    stack: Stack,
    roofline: Roofline | None,
    reader_gateway_url: str | None = None,
) -> None:
    settings = Settings.load(None)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=64)
    gateway = httpx.AsyncClient(
        base_url=stack.gateway_url, headers=headers, timeout=600, limits=limits
    )
    engine = httpx.AsyncClient(base_url=stack.engine_url, timeout=600, limits=limits)
    names = ("direct", "gateway")
    if reader_gateway_url is not None:
        # Both paths through a gateway: "direct" is the one without a reader.
        engine = gateway
        gateway = httpx.AsyncClient(
            base_url=reader_gateway_url, headers=headers, timeout=600, limits=limits
        )
        names = ("no reader", "reader")
    if args.docs:
        documents, questions = jsonl_corpus(args.docs, args.questions)
    else:
        documents, questions = squad_corpus(args.squad)
    if not args.skip_ingest:
        await ingest(gateway, documents[: args.max_docs])
        if reader_gateway_url is not None:
            await ingest(engine, documents[: args.max_docs])
    needed = sum(max(c * args.per_slot, c) * 2 * args.reps for c in args.concurrency) + 4
    if len(questions) < needed:
        raise SystemExit(f"{needed} distinct questions needed, the corpus has {len(questions)}")
    pool: Iterator[str] = iter(questions)

    async def take(count: int, direct: bool) -> list[Question]:
        texts = [next(pool) for _ in range(count)]
        if not direct or reader_gateway_url is not None:
            return [Question(t) for t in texts]
        messages = await asyncio.gather(
            *(direct_messages(gateway, t, args.top_k, settings.abstention_message) for t in texts)
        )
        return [Question(t, m) for t, m in zip(texts, messages, strict=True)]

    # Warm both paths (first-request costs, kernel warm-up) on questions used nowhere else.
    for direct in (True, False):
        warm = await take(2, direct)
        through = not direct or reader_gateway_url is not None
        await batch(engine if direct else gateway, [chat_body(args, q, through) for q in warm], 1)

    rows = []
    for concurrency in args.concurrency:
        count = max(concurrency * args.per_slot, concurrency)
        results = {"direct": PathResult([]), "gateway": PathResult([])}
        for rep in range(args.reps):
            order = ("direct", "gateway") if rep % 2 == 0 else ("gateway", "direct")
            for path in order:
                questions_now = await take(count, path == "direct")
                through = path == "gateway" or reader_gateway_url is not None
                bodies = [chat_body(args, q, through) for q in questions_now]
                client = engine if path == "direct" else gateway
                samples, seconds = await batch(client, bodies, concurrency)
                results[path].samples += samples
                results[path].seconds += seconds
        rows.append((concurrency, results))
        console.print(
            f"measured x{concurrency}: p50 latency {names[0]} {results['direct'].p50():.2f} s, "
            f"{names[1]} {results['gateway'].p50():.2f} s"
        )
    await gateway.aclose()
    await engine.aclose()
    print_table(args, stack, roofline, rows, names)


def print_table(
    args: argparse.Namespace,
    stack: Stack,
    roofline: Roofline | None,
    rows: list[tuple[int, dict[str, PathResult]]],
    names: tuple[str, str] = ("direct", "gateway"),
) -> None:
    table = results_table(
        f"grounded answers: top_k {args.top_k}, {args.max_tokens} tokens out, streamed",
        ("in flight", "path", "requests", "prompt tok (mean)", "p50 s", "p95 s", "p50 TTFT s",
         "prefill tok/s", "prefill / roofline", "out tok/s", "abstained"),
    )  # fmt: skip
    for concurrency, results in rows:
        for path, result in results.items():
            answered = result.answered
            prefill = result.prefill_tokens_per_s() if answered else 0.0
            table.add_row(
                str(concurrency),
                names[0] if path == "direct" else names[1],
                str(len(result.samples)),
                f"{statistics.mean(s.prompt_tokens for s in result.samples):.0f}",
                f"{nearest_rank([s.latency for s in result.samples], 0.5):.2f}",
                f"{nearest_rank([s.latency for s in result.samples], 0.95):.2f}",
                f"{nearest_rank([s.ttft for s in answered], 0.5):.2f}" if answered else "-",
                f"{prefill:.0f}" if concurrency == 1 else "-",
                f"{prefill / roofline.prefill_tokens_per_s:.0%}"
                if roofline and concurrency == 1 and answered
                else "-",
                f"{result.output_tokens_per_s():.1f}",
                str(len(result.samples) - len(answered)),
            )
    ratios = []
    for concurrency, results in rows:
        d, g = results["direct"], results["gateway"]
        ratio = f"{names[1]}/{names[0]}"
        line = (
            f"x{concurrency}: {ratio} p50 latency {g.p50() / d.p50():.3f}, "
            f"output throughput {g.output_tokens_per_s() / d.output_tokens_per_s():.3f}"
        )
        if g.answered and d.answered:
            both = nearest_rank([s.latency for s in g.answered], 0.5) / nearest_rank(
                [s.latency for s in d.answered], 0.5
            )
            line += f", p50 latency of answered requests {both:.3f}"
        ratios.append(line)
    notes = [roofline.describe()] if roofline else []
    print_results(console, table, stack.dtype, notes=notes, summary=ratios)


def main() -> None:
    parser = stack_arguments(__doc__)
    parser.add_argument("--api-key", help="for a gateway given by URL (ingest and chat scopes)")
    parser.add_argument("--model", default="gemma")
    parser.add_argument("--squad", type=Path, default=DEFAULT_SQUAD)
    parser.add_argument("--docs", type=Path, help="JSONL of {id, title, text} (with --questions)")
    parser.add_argument("--questions", type=Path, help="JSONL of {question}")
    parser.add_argument("--max-docs", type=int, default=420)
    parser.add_argument("--skip-ingest", action="store_true", help="the collection is filled")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--per-slot", type=int, default=2, help="requests per in-flight slot")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-roofline", action="store_true")
    parser.add_argument(
        "--compare-reader", type=Path, help="a reader directory: gateway with it vs without"
    )
    args = parser.parse_args()
    if bool(args.docs) != bool(args.questions):
        parser.error("--docs and --questions go together")

    roofline = None
    env = {"RAGDOCK_READER": "none"} if args.compare_reader else None
    with running_stack(
        console, engine_url=args.engine_url, gateway_url=args.gateway_url, gateway_env=env
    ) as stack:
        if not args.no_roofline and stack.dtype != "?":
            # Probed between start-up and the first request: the engine is idle then.
            roofline = measure_roofline(model_dir(console), stack.dtype)
        if args.compare_reader is None:
            asyncio.run(measure(args, stack, roofline))
            return
        reader_env = {"RAGDOCK_API_KEYS": "", "RAGDOCK_READER": str(args.compare_reader)}
        reader = start_gateway(stack.engine_url, stack.workdir / "reader-gateway.log", reader_env)
        try:
            asyncio.run(measure(args, stack, roofline, reader.url))
        finally:
            reader.stop()


if __name__ == "__main__":
    main()
