"""Text extraction from untrusted PDF and HTML in a separate process, bounded in time, pages,
output and memory.

A PDF is a program as much as a document: a decompression bomb expands a few KB into GBs, a
file declares ten thousand pages, a crafted stream keeps pypdf busy for minutes; an HTML page can
nest a million elements. Run in the gateway, any of these holds the GIL or the memory of every
request the replica serves. Here each extraction runs in a child process forked from a small
forkserver (which has imported only pypdf and the HTML converter, not the gateway), under an
address-space limit, killed at its deadline; the caller gets a typed error it can answer with
413 or 422, and the replica stays healthy.
"""

from __future__ import annotations

import io
import multiprocessing
import resource
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any


@dataclass(frozen=True)
class ExtractLimits:
    """What one extraction may use (pages apply to PDF)."""

    max_pages: int = 2000
    max_chars: int = 20_000_000
    timeout_s: float = 30.0
    memory_bytes: int = 1 << 30


class ExtractError(Exception):
    """Base of the extraction errors; `reason` is one line for the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooLargeError(ExtractError):
    """Over a limit: pages, text, memory, or pypdf's own decompression limits (413)."""


class TooSlowError(ExtractError):
    """Not done by the deadline (422: the input is what takes the time)."""


class UnreadableError(ExtractError):
    """Not a PDF pypdf can read (400)."""


_context_lock = threading.Lock()
_context: Any = None


def _forkserver() -> Any:
    # The forkserver starts once, imports pypdf, and forks each child from that clean state:
    # faster than spawning an interpreter per file, and no threads of the gateway are forked.
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["retrieval.untrusted", "retrieval.extract", "pypdf"])
            _context = context
        return _context


def extract_pdf_text(content: bytes, limits: ExtractLimits = ExtractLimits()) -> str:
    """The text of every page, pages separated by blank lines.

    Raises:
        TooLargeError: over a page, output or memory limit (or a decompression bomb).
        TooSlowError: still running at the deadline (the child is killed).
        UnreadableError: not a readable PDF.
    """
    return _isolated("pdf", content, limits)


def html_to_markdown_isolated(html: str, limits: ExtractLimits = ExtractLimits()) -> str:
    """`retrieval.extract.html_to_markdown`, in the bounded child.

    Raises:
        TooLargeError: over the output or memory limit.
        TooSlowError: still running at the deadline.
    """
    return _isolated("html", html.encode("utf-8", "surrogatepass"), limits)


def _isolated(job: str, content: bytes, limits: ExtractLimits) -> str:
    context = _forkserver()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, job, content, limits), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(limits.timeout_s):
            raise TooSlowError(f"text extraction took longer than {limits.timeout_s:g} s")
        try:
            kind, value = receive.recv()
        except EOFError:  # the child died: killed by the memory limit, most likely
            raise TooLargeError(
                f"text extraction needed more than {limits.memory_bytes >> 20} MiB"
            ) from None
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)
        receive.close()
    if kind == "text":
        return str(value)
    raise {"too_large": TooLargeError, "unreadable": UnreadableError}[kind](str(value))


def _child(send: Connection, job: str, content: bytes, limits: ExtractLimits) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    try:
        send.send(_pdf(content, limits) if job == "pdf" else _html(content, limits))
    except MemoryError:
        send.send(
            ("too_large", f"text extraction needed more than {limits.memory_bytes >> 20} MiB")
        )
    finally:
        send.close()


def _html(content: bytes, limits: ExtractLimits) -> tuple[str, str]:
    from retrieval.extract import html_to_markdown

    try:
        text = html_to_markdown(content.decode("utf-8", "surrogatepass"))
    except RecursionError:
        return "unreadable", "not readable HTML (nested too deeply)"
    if len(text) > limits.max_chars:
        return "too_large", f"more than {limits.max_chars} characters of text"
    return "text", text


def _pdf(content: bytes, limits: ExtractLimits) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(content))
        pages = len(reader.pages)
        if pages > limits.max_pages:
            return "too_large", f"{pages} pages; at most {limits.max_pages}"
        parts: list[str] = []
        used = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            used += len(text)
            if used > limits.max_chars:
                return "too_large", f"more than {limits.max_chars} characters of text"
            parts.append(text)
        return "text", "\n\n".join(parts)
    except LimitReachedError as exc:
        return "too_large", f"a stream expands past pypdf's limit ({exc})"
    except (PdfReadError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return "unreadable", f"not a readable PDF ({exc})"
    except RecursionError:
        return "unreadable", "not a readable PDF (nested too deeply)"
