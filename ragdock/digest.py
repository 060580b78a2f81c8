"""The sha256 of a file, as every manifest records it (the model build's files, an adapter's
files and data, an eval suite's pinned data)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20  # read a MiB at a time: a checkpoint never has to fit in memory


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file's bytes.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
