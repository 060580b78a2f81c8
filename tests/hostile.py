"""Hostile inputs, built at test time: nothing binary is committed."""

from __future__ import annotations

import io
import zlib


def pdf_with_stream(stream: bytes, *, compressed: bool = True) -> bytes:
    """A one-page PDF whose content stream is `stream` (Flate-compressed when asked)."""
    data = zlib.compress(stream, 9) if compressed else stream
    filters = b"/Filter /FlateDecode " if compressed else b""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< " + filters + b"/Length " + str(len(data)).encode() + b" >>\nstream\n" + data
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]  # fmt: skip
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def text_pdf(text: str) -> bytes:
    """A readable one-page PDF showing `text`."""
    return pdf_with_stream(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())


def decompression_bomb(expanded_mb: int = 100) -> bytes:
    """A PDF of a few hundred KB whose content stream expands to `expanded_mb` MB."""
    return pdf_with_stream(b" " * (expanded_mb << 20))


def many_pages(pages: int) -> bytes:
    """A PDF declaring `pages` blank pages (small: the pages share nothing heavy)."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=72, height=72)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def redos_heading(spaces: int) -> str:
    """The markdown heading line that backtracked cubically in the old heading pattern."""
    return "# a" + " " * spaces + "z"
