"""`ragdock ingest PATH... --collection C`: upload files to a running gateway, with progress.

The gateway owns the vector store (the embedded engine locks its directory), so ingestion goes
through its HTTP API: what is acknowledged is stored, and re-ingesting a file replaces its
document atomically. Directories are walked for .md, .markdown, .txt, .html, .htm and .pdf files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from ragdock.contracts.source_spec import FOLDER_SUFFIXES
from ragdock.progress import progress_bar

SUFFIXES = set(FOLDER_SUFFIXES)  # what a folder source reads, too
console = Console()


def collect(paths: list[Path]) -> list[Path]:
    """Files to ingest: the given files, plus supported files under given directories."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise typer.BadParameter(f"{path} does not exist")
    return found


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Target collection.")],
    gateway: Annotated[
        str, typer.Option(envvar="RAGDOCK_GATEWAY_URL", help="Gateway base URL.")
    ] = "http://127.0.0.1:8000",
    create: Annotated[bool, typer.Option(help="Create the collection if missing.")] = True,
) -> None:
    """Ingest documents into a collection of a running gateway (key: RAGDOCK_API_KEY)."""
    files = collect(paths)
    if not files:
        console.print("[yellow]nothing to ingest[/]")
        raise typer.Exit(1)
    key = os.environ.get("RAGDOCK_API_KEY", "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx.Client(base_url=gateway.rstrip("/"), headers=headers, timeout=600)
    if create:
        http.post("/v1/collections", json={"name": collection})
    totals = {"added": 0, "replaced": 0, "unchanged": 0, "chunks": 0}
    failures: list[str] = []
    with progress_bar(console) as progress:
        task = progress.add_task(f"ingesting into {collection}", total=len(files))
        for path in files:
            progress.update(task, description=f"{path.name[:40]:40}")
            doc_id = str(path.relative_to(path.parent if len(files) == 1 else _common(files)))
            reply = http.post(
                f"/v1/collections/{collection}/documents/upload",
                files=[("files", (path.name, path.read_bytes()))],
                data={"doc_id": doc_id},
            )
            if reply.status_code == 200:
                for name in totals:
                    totals[name] += reply.json()[name]
            else:
                failures.append(f"{path}: {_message(reply)}")
            progress.advance(task)
    console.print(
        f"[green]{len(files) - len(failures)} files[/]: {totals['added']} added, "
        f"{totals['replaced']} replaced, {totals['unchanged']} unchanged, {totals['chunks']} chunks"
    )
    for failure in failures:
        console.print(f"[red]{failure}[/]")
    if failures:
        raise typer.Exit(1)


def _common(files: list[Path]) -> Path:
    return Path(os.path.commonpath([str(f.parent.resolve()) for f in files]))


def _message(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["error"]["message"])
    except (ValueError, KeyError):
        return f"{reply.status_code} {reply.text[:200]}"
