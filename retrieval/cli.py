"""`ragdock retrieval ...`: manage collections, ingest files, search from the shell.

The embedded store is owned by one process: run these while the gateway is stopped, or point
them at a Qdrant server with --qdrant-url.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

app = typer.Typer(help="Collections, ingestion and search over the retrieval store.")

_TYPES = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
    ".html": "text/html",
    ".htm": "text/html",
}


def _default_dir() -> Path:
    # The same store the gateway uses: RAGDOCK_DATA_DIR, else RAGDOCK_HOME/data.
    if os.environ.get("RAGDOCK_DATA_DIR"):
        return Path(os.environ["RAGDOCK_DATA_DIR"]).expanduser()
    from ragdock.settings import default_home

    home = os.environ.get("RAGDOCK_HOME")
    return (Path(home).expanduser() if home else default_home()) / "data"


DataDir = typer.Option(_default_dir(), "--data-dir", help="store + catalogs (embedded mode).")
QdrantUrl = typer.Option(None, "--qdrant-url", help="a Qdrant server instead of embedded.")
Tenant = typer.Option("default", "--tenant", help="tenant that owns the documents.")


@app.command("collections")
def collections(data_dir: Path = DataDir, qdrant_url: str | None = QdrantUrl) -> None:
    """List collections."""
    from retrieval.factory import open_retriever

    retriever = open_retriever(data_dir, qdrant_url=qdrant_url)
    try:
        for name in retriever.list_collections():
            typer.echo(name)
    finally:
        retriever.close()


@app.command("ingest")
def ingest(
    collection: str,
    paths: list[Path],
    tenant: str = Tenant,
    data_dir: Path = DataDir,
    qdrant_url: str | None = QdrantUrl,
) -> None:
    """Ingest .md/.txt/.html files (doc id = the path as given); creates the collection."""
    from datetime import UTC, datetime

    from ragdock.progress import progress_bar
    from retrieval.factory import open_retriever
    from retrieval.types import Document

    files = [
        p
        for path in paths
        for p in (sorted(path.rglob("*")) if path.is_dir() else [path])
        if p.is_file() and p.suffix.lower() in _TYPES
    ]
    docs = (
        Document(
            str(p),
            p.read_text(encoding="utf-8", errors="replace"),
            title=p.stem,
            uri=p.resolve().as_uri(),
            content_type=_TYPES[p.suffix.lower()],
            updated_at=datetime.fromtimestamp(p.stat().st_mtime, UTC),
        )
        for p in files
    )
    retriever = open_retriever(data_dir, qdrant_url=qdrant_url)
    try:
        retriever.create_collection(collection)
        with progress_bar(transient=True) as bar:
            task = bar.add_task("ingesting", total=None)
            report = retriever.ingest(
                collection, tenant, docs, progress=lambda n: bar.update(task, completed=n)
            )
        typer.echo(f"{len(files)} files: {report}")
    finally:
        retriever.close()


@app.command("search")
def search(
    collection: str,
    query: str,
    tenant: str = Tenant,
    top_k: int = typer.Option(5, "--top-k"),
    mode: str = typer.Option("hybrid", help="hybrid | dense | sparse"),
    data_dir: Path = DataDir,
    qdrant_url: str | None = QdrantUrl,
) -> None:
    """Search a collection and print the hits."""
    from rich.console import Console
    from rich.table import Table

    from retrieval.factory import open_retriever
    from retrieval.types import SearchMode

    retriever = open_retriever(data_dir, qdrant_url=qdrant_url)
    try:
        hits = retriever.search(collection, tenant, query, top_k=top_k, mode=SearchMode(mode))
    finally:
        retriever.close()
    table = Table(title=f"{mode} search: {query}")
    for column in ("score", "doc", "title", "text"):
        table.add_column(column)
    for hit in hits:
        table.add_row(f"{hit.score:.4f}", hit.doc_id, hit.title, hit.text[:120])
    Console().print(table)
