"""A file's bytes as a `Document`: markdown and text as they are, HTML and PDF extracted in the
bounded child process of `retrieval.untrusted` (a source's files are as untrusted as uploads)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

from retrieval.types import Document, MetadataValue
from retrieval.untrusted import (
    ExtractError,
    ExtractLimits,
    extract_pdf_text,
    html_to_markdown_isolated,
)

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}


class ItemError(ValueError):
    """One item of a source cannot be ingested (the job records it and goes on)."""


def file_document(
    key: str,
    content: bytes,
    *,
    doc_id: str,
    version: str,
    limits: ExtractLimits,
    metadata: Mapping[str, MetadataValue],
) -> Document:
    """The document a source file holds.

    Args:
        key: the file's path relative to its source's folder (its name, suffix and uri).
        content: the file's bytes.
        doc_id: the document's id in the collection.
        version: the content hash (a re-ingest of the same bytes is then a no-op).
        limits: bounds on extraction (time, memory, text size).
        metadata: the document's metadata.

    Raises:
        ItemError: an unsupported suffix, bytes that are not UTF-8, a PDF or HTML file the
            extractor refused, or no text at all.
    """
    path = PurePosixPath(key)
    content_type = CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise ItemError(f"unsupported file type {path.suffix or '(none)'}")
    try:
        if content_type == "application/pdf":
            text, content_type = extract_pdf_text(content, limits), "text/plain"
        else:
            text = content.decode("utf-8")
            if content_type == "text/html":
                text, content_type = html_to_markdown_isolated(text, limits), "text/markdown"
    except ExtractError as exc:
        raise ItemError(f"{type(exc).__name__}: {exc.reason}") from None
    except UnicodeDecodeError:
        raise ItemError("not UTF-8 text") from None
    if not text.strip():
        raise ItemError("no text to index")
    title = first_heading(text) if content_type == "text/markdown" else None
    return Document(
        doc_id=doc_id, text=text, title=title or path.stem, uri=key, version=version,
        content_type=content_type, metadata=dict(metadata),
    )  # fmt: skip


def first_heading(markdown: str) -> str | None:
    """A markdown document's first `# ` heading (its title), if any."""
    for line in markdown.splitlines():
        if line.startswith("# "):
            return line[2:].strip() or None
    return None
