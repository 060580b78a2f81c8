"""`ragdock eval ...`: run a suite against a gateway, apply a gate, score retrieval alone.

ragdock eval SUITE.yaml [--gate GATE.yaml] [--attach]   (short for `ragdock eval run ...`)
ragdock eval gate REPORT.json GATE.yaml                  exit 0 = passed, 1 = failed
ragdock eval retrieval --beir DIR                        retrieval only, in process

`ragdock eval run` is the platform's measurement when it can read the platform's signing key
(RAGDOCK_SIGNING_KEY_FILE, default DATA_DIR/signing.key, the gateway's): it signs the report it
writes, and the registry judges a signed report with its own gate. Without the key the report is
written unsigned: the registry keeps it as evidence, and it cannot promote.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from eval.signing import SigningKey
    from ragdock.contracts.eval_report import EvalReport

app = typer.Typer(help="Evaluate adapters against the base and the previous version; gate them.")


@app.callback()
def _group() -> None:
    """Evaluation suites, gates and retrieval scoring."""


@app.command("run")
def run_command(
    suite_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Suite YAML."),
    out: Path | None = typer.Option(None, help="Report folder (default runs/eval/SUITE-NAME)."),
    gate: Path | None = typer.Option(None, exists=True, help="Apply this gate to the report."),
    attach: bool = typer.Option(
        False,
        help="Attach the gated report to the candidate in the "
        "registry (what `ragdock adapters promote` reads).",
    ),
    gateway: str | None = typer.Option(
        None, help="Gateway URL (default: the suite's, or RAGDOCK_GATEWAY_URL)."
    ),
    candidate: str | None = typer.Option(None, help="Override the suite's candidate."),
    signing_key: Path | None = typer.Option(
        None,
        help="The platform's signing key file (default: the gateway's, RAGDOCK_SIGNING_KEY_FILE "
        "or DATA_DIR/signing.key); the report is written unsigned when it cannot be read.",
    ),
) -> None:
    """Run a suite: every task on the candidate, the base and the previous version."""
    from rich.console import Console

    from eval.gateway import GatewayError
    from eval.runner import build_report, run_tasks, write_outputs, write_predictions
    from eval.suite import SuiteError, load_suite
    from ragdock.progress import progress_bar

    console = Console()
    try:
        suite = load_suite(suite_path)
    except SuiteError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    if candidate:
        suite = suite.model_copy(update={"candidate": candidate})
    url = gateway or os.environ.get("RAGDOCK_GATEWAY_URL") or suite.gateway
    out_dir = out or Path("runs/eval") / suite.name
    key = _platform_key(signing_key, console)  # said before the run, not after it
    with progress_bar(console) as bar:

        def progress(label: str, total: int) -> Callable[[], None]:
            task_id = bar.add_task(label, total=total)
            return lambda: bar.advance(task_id)

        try:
            run = asyncio.run(
                run_tasks(
                    suite,
                    gateway_url=url,
                    api_key=os.environ.get("RAGDOCK_API_KEY"),
                    progress=progress,
                )
            )
        except (SuiteError, GatewayError) as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
    report = build_report(run, suite, suite_path, url)
    if key is not None:
        report = key.sign(report)
    write_outputs(report, out_dir)
    write_predictions(run, out_dir)
    console.print(f"report: {out_dir}/report.md (json, predictions.jsonl, PNG charts beside it)")
    passed = True
    if gate:
        passed = _apply_gate(report, gate, out_dir, console)
    if attach:
        _attach(report, url, console)
    raise typer.Exit(0 if passed else 1)


@app.command("gate")
def gate_command(
    report_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="report.json"),
    gate_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Gate YAML."),
) -> None:
    """Check a report against a gate: explains each rule; exit 0 passed, 1 failed.

    The verdict is written into the report (JSON and Markdown); its signature, if any, still
    holds (it does not cover the gate). The registry reads no report's verdict: it judges a
    signed report with the platform's own gate.
    """
    from rich.console import Console

    from ragdock.contracts.base import ContractError, read_json
    from ragdock.contracts.eval_report import parse_eval_report

    console = Console()
    try:
        report = parse_eval_report(read_json(report_path), source=str(report_path))
    except ContractError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    passed = _apply_gate(report, gate_path, report_path.parent, console)
    raise typer.Exit(0 if passed else 1)


def _platform_key(key_file: Path | None, console: Any) -> SigningKey | None:
    """The platform's signing key (`key_file`, else the settings' `signing_key_file` or its
    default); None, said, when it cannot be read: the report is then written unsigned."""
    from eval.signing import SigningKeyError, read_signing_key
    from ragdock.settings import Settings

    try:
        key = read_signing_key(key_file or Settings.load().signing_key_path)
    except (SigningKeyError, OSError, ValueError) as exc:  # ValueError: the settings' own
        console.print(
            f"[yellow]the report will not be signed[/] ({exc}): the registry keeps an unsigned "
            "report as evidence, and it cannot promote; run where the platform's key is "
            "readable, or pass --signing-key"
        )
        return None
    console.print(f"the report will be signed with the platform's key {key.key_id}")
    return key


def _apply_gate(report: EvalReport, gate_path: Path, out_dir: Path, console: Any) -> bool:
    from rich.table import Table

    from eval.gates import evaluate_gate, load_gate
    from eval.runner import write_outputs
    from eval.suite import SuiteError

    try:
        spec = load_gate(gate_path)
    except SuiteError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    verdict = evaluate_gate(report, spec)
    report.gate = verdict
    write_outputs(report, out_dir)
    table = Table(
        "rule",
        "observed",
        "verdict",
        "why",
        title=f"gate {spec.name}: {'PASSED' if verdict.passed else 'FAILED'}",
    )
    for v in verdict.verdicts:
        mark = "[green]pass[/]" if v.passed else "[red]FAIL[/]"
        table.add_row(v.rule, v.observed, mark, v.why)
    console.print(table)
    return verdict.passed


def _attach(report: EvalReport, url: str, console: Any) -> None:
    import httpx

    record = report.candidate_record
    key = os.environ.get("RAGDOCK_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.put(
        f"{url.rstrip('/')}/v1/adapters/{record.name}/{record.version}/eval-report",
        json=report.as_json(),
        headers=headers,
        timeout=60,
    )
    if response.status_code >= 400:
        console.print(
            f"[red]attaching the report failed: HTTP {response.status_code} "
            f"{response.text[:300]}[/]"
        )
        raise typer.Exit(2)
    console.print(f"attached to {record.name}@{record.version} in the registry")


@app.command("calibrate")
def calibrate_command(
    adapter_dir: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="The trained adapter (its manifest is updated)."
    ),
    candidate: str | None = typer.Option(
        None, help="The same adapter as pushed to the gateway, e.g. grounded@latest."
    ),
    raft: Path = typer.Option(
        Path("runs/raft-squad2"), help="RAFT build folder (its validation articles are used)."
    ),
    corpus: Path | None = typer.Option(
        None, exists=True, help="SQuAD-format file RAFT was built from."
    ),
    refit: bool = typer.Option(
        False, help="Fit again from the rows an earlier run saved (no gateway, no requests)."
    ),
    target_hallucination: float = typer.Option(
        0.08, min=0.0, max=1.0, help="Share of unanswerable questions it may answer."
    ),
    max_false_abstention: float = typer.Option(
        0.33,
        min=0.0,
        max=1.0,
        help="Enforce the threshold only if it refuses at most this share of answerable "
        "validation questions (else the score is reported, not enforced).",
    ),
    top_k: int = typer.Option(4, min=1, max=50, help="Sources per question, as served."),
    max_tokens: int = typer.Option(48, min=1, help="Longest answer."),
    concurrency: int = typer.Option(4, min=1, help="Requests in flight."),
    gateway: str | None = typer.Option(None, help="Gateway URL (default RAGDOCK_GATEWAY_URL)."),
) -> None:
    """Fit when the adapter answers: AUROC of each signal, a combined score and the threshold
    for a target hallucination rate, written into the adapter's manifest (push it again)."""
    from rich.console import Console
    from rich.table import Table

    from eval.calibrate import CURVE_PNG, calibrate
    from eval.calibrate import refit as refit_rows
    from eval.gateway import EvalGateway, GatewayError
    from ragdock.contracts.adapter_manifest import CalibrationBlock
    from ragdock.progress import progress_bar

    console = Console()
    if not refit and (candidate is None or corpus is None):
        console.print("[red]--candidate and --corpus are needed (or --refit)[/]")
        raise typer.Exit(2)
    url = gateway or os.environ.get("RAGDOCK_GATEWAY_URL") or "http://127.0.0.1:8000"
    with progress_bar(console) as bar:

        def progress(label: str, total: int) -> Callable[[], None]:
            task_id = bar.add_task(label, total=total)
            return lambda: bar.advance(task_id)

        async def run() -> CalibrationBlock:
            assert candidate is not None and corpus is not None
            async with EvalGateway(url, os.environ.get("RAGDOCK_API_KEY")) as client:
                return await calibrate(
                    client,
                    model=candidate,
                    raft_dir=raft,
                    corpus=corpus,
                    adapter_dir=adapter_dir,
                    target_hallucination=target_hallucination,
                    max_false_abstention=max_false_abstention,
                    top_k=top_k,
                    max_tokens=max_tokens,
                    concurrency=concurrency,
                    progress=progress,
                )

        try:
            if refit:
                block = refit_rows(
                    adapter_dir,
                    target_hallucination=target_hallucination,
                    max_false_abstention=max_false_abstention,
                )
            else:
                block = asyncio.run(run())
        except (GatewayError, ValueError, FileNotFoundError, KeyError) as exc:
            # ValueError includes ContractError: the manifest is not one this version reads.
            console.print(f"[red]cannot calibrate: {exc}[/]")
            raise typer.Exit(2) from exc
    validation = block.validation
    table = Table("signal", "AUROC (answerable vs not)", "questions", title="answerability signals")
    for name, item in validation["signals"].items():
        value = "n/a" if item["auroc"] is None else f"{item['auroc']:.3f}"
        table.add_row(name, value, str(item["n"]))
    table.add_row("combined (5-fold CV)", f"{validation['combined_auroc_cv']:.3f}",
                  str(validation["questions"]))  # fmt: skip
    console.print(table)
    at = validation["at_threshold"]
    alone = validation["model_alone"]
    console.print(
        f"threshold {block.threshold:.3f} for hallucination <= {block.target_hallucination}:"
        f" validation hallucination {at['hallucination']:.3f}, false abstention "
        f"{at['false_abstention']:.3f} (the model alone: {alone['hallucination']:.3f} / "
        f"{alone['false_abstention']:.3f})"
    )
    if not block.enforced:
        console.print(
            f"[yellow]not enforced[/]: holding hallucination to {block.target_hallucination} "
            f"would refuse {at['false_abstention']:.0%} of answerable validation questions (more "
            f"than {max_false_abstention:.0%}); the gateway reports the score and leaves the "
            "choice to the model unless a request (rag.min_answerability) or collection "
            "(RAGDOCK_RAG_COLLECTION_MIN_ANSWERABILITY) sets a threshold"
        )
    console.print(f"written to {adapter_dir}/manifest.json; curve: {adapter_dir}/{CURVE_PNG}")


@app.command("retrieval")
def retrieval_command(
    beir: Path = typer.Option(..., "--beir", help="BEIR folder, read in place."),
    split: str = typer.Option("test", help="qrels split."),
    sparse: str = typer.Option("edge", help="edge (qdrant-edge Bm25) | ours | ours-nostem."),
    avg_len: float = typer.Option(100.0, help="BM25 assumed average document length."),
    k1: float = typer.Option(1.2, help="BM25 term-frequency saturation."),
    b: float = typer.Option(0.75, help="BM25 length normalization."),
    max_tokens: int = typer.Option(200, help="chunk budget in embedder tokens."),
    overlap: int = typer.Option(32, help="chunk overlap in embedder tokens."),
    sweep: bool = typer.Option(False, help="score a grid of fusion settings for hybrid."),
    cache_dir: Path | None = typer.Option(None, help="embedding cache dir (outside the repo)."),
    max_queries: int | None = typer.Option(None, help="score only the first N queries."),
    json_out: Path | None = typer.Option(None, "--json", help="write the report as JSON."),
) -> None:
    """Recall@1/5/10/100, MRR@10 and nDCG@10 for dense, sparse and hybrid retrieval."""
    from rich.console import Console

    from eval.retrieval_beir import default_sweep, evaluate_beir, reference_fusions, render_table
    from ragdock.progress import progress_bar
    from retrieval.chunking import ChunkingConfig

    console = Console()
    fusions = default_sweep() if sweep else reference_fusions()
    with progress_bar(console, transient=True) as bar:
        task = bar.add_task("ingesting", total=None)
        report = evaluate_beir(
            beir,
            split=split,
            sparse=sparse,
            avg_len=avg_len,
            chunking=ChunkingConfig(max_tokens, overlap),
            fusions=fusions,
            cache_dir=cache_dir,
            max_queries=max_queries,
            progress=lambda chunks, docs: bar.update(task, description=f"ingested {chunks} chunks"),
        )
    console.print(render_table(report))
    console.print(report.settings, report.timings)
    if json_out:
        json_out.write_text(json.dumps(report.as_json(), indent=2) + "\n", encoding="utf-8")


@app.command("calibrate-reader")
def calibrate_reader_command(
    reader_dir: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="A trained reader (its manifest is updated)."
    ),
    target_hallucination: float = typer.Option(
        0.10, min=0.0, max=1.0, help="Share of questions the sources do not answer it may answer."
    ),
    top_k: int = typer.Option(5, min=1, max=50, help="Sources read per question, as served."),
    split: str = typer.Option(
        "calibration",
        help="The manifest's split(s) of articles to fit on, comma-separated (e.g. "
        "calibration,validation: neither is trained on; more questions, a steadier threshold).",
    ),
    retrieval: str = typer.Option(
        "gateway",
        help="gateway: hybrid search over chunks in a throwaway embedded Qdrant, as served; "
        "paragraphs: dense over whole paragraphs (the threshold then does not hold behind the "
        "gateway).",
    ),
) -> None:
    """Fit the reader's answer/abstain decision on its held-out calibration articles: each
    signal's AUROC, a combined probability and its threshold for a target hallucination rate,
    written into the reader's manifest (the gateway applies it)."""
    from rich.console import Console
    from rich.table import Table

    from eval.reader_decision import calibrate_reader
    from ragdock.contracts.reader import read_reader_manifest
    from ragdock.progress import progress_bar
    from retrieval.dense import MiniLMEmbedder
    from training.reader.squad import read_squad

    console = Console()
    manifest = read_reader_manifest(reader_dir)
    titles = []
    for name in (part.strip() for part in split.split(",")):
        found = manifest.data.splits.get(name)
        if not found:
            console.print(f"[red]the reader's manifest has no articles in split {name!r}[/]")
            raise typer.Exit(2)
        titles += found
    if retrieval not in ("gateway", "paragraphs"):
        console.print(f"[red]--retrieval must be gateway or paragraphs, not {retrieval!r}[/]")
        raise typer.Exit(2)
    by_title = {a.title: a for f in manifest.data.files for a in read_squad(Path(f.path))}
    missing = [t for t in titles if t not in by_title]
    if missing:
        console.print(
            f"[red]articles {missing} are not in {[f.path for f in manifest.data.files]}[/]"
        )
        raise typer.Exit(2)
    articles = [by_title[t] for t in titles]
    with progress_bar(console) as bar:
        task = bar.add_task(
            "read calibration questions", total=sum(len(a.questions) for a in articles)
        )
        try:
            decision, _ = calibrate_reader(
                reader_dir, MiniLMEmbedder(), articles, target_hallucination=target_hallucination,
                top_k=top_k, advance=lambda: bar.advance(task), retrieval=retrieval,
            )  # fmt: skip
        except ValueError as exc:
            console.print(f"[red]cannot calibrate: {exc}[/]")
            raise typer.Exit(2) from exc
    table = Table("signal", "AUROC (sources answer vs not)", title=f"reader decision on {titles}")
    for item in decision.auroc:
        table.add_row(item.signal, "n/a" if item.auroc is None else f"{item.auroc:.3f}")
    console.print(table)
    console.print(
        f"threshold {decision.threshold:.3f}: hallucination {decision.hallucination:.3f} "
        f"(target {target_hallucination}), false abstention {decision.false_abstention:.3f} "
        f"on {decision.questions} questions ({decision.answerable} answerable by their sources); "
        f"written to {reader_dir}/manifest.json"
    )
