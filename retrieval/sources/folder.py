"""A folder source: the supported files under a directory, filtered by globs."""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from ragdock.contracts.source_spec import FOLDER_SUFFIXES, FolderSpec
from retrieval.sources.files import ItemError, file_document
from retrieval.sources.items import ItemContent, SourceItem
from retrieval.types import Document, MetadataValue
from retrieval.untrusted import ExtractLimits


def glob_match(relative: str, pattern: str) -> bool:
    """`relative` (a posix path) matches `pattern`; `**/` also matches no directory at all."""
    if fnmatch.fnmatchcase(relative, pattern):
        return True
    return pattern.startswith("**/") and fnmatch.fnmatchcase(relative, pattern[3:])


class FolderReader:
    """The files of one folder source, walked in a stable order (sorted, depth first).

    Args:
        root: the folder, already resolved and checked against the allowed roots.
        spec: the source's globs.
        max_bytes: a larger file is recorded as failed, not read.
        limits: PDF and HTML extraction bounds.
        metadata: added to every document (the source's name and the item's key are added).
    """

    def __init__(
        self,
        root: Path,
        spec: FolderSpec,
        *,
        max_bytes: int,
        limits: ExtractLimits,
        metadata: Mapping[str, MetadataValue],
    ) -> None:
        self.root, self.spec = root, spec
        self._max_bytes, self._limits, self._metadata = max_bytes, limits, metadata

    def _wanted(self, relative: str) -> bool:
        if not relative.lower().endswith(FOLDER_SUFFIXES):
            return False
        if not any(glob_match(relative, p) for p in self.spec.include):
            return False
        return not any(glob_match(relative, p) for p in self.spec.exclude)

    def _walk(self) -> Iterator[tuple[str, Path]]:
        for directory, subdirs, files in os.walk(self.root, followlinks=False):
            subdirs.sort()
            for name in sorted(files):
                path = Path(directory) / name
                relative = path.relative_to(self.root).as_posix()
                if self._wanted(relative):
                    yield relative, path

    def count(self, since: object = None) -> int:
        return sum(1 for _ in self._walk())

    def items(self, since: object = None) -> Iterator[SourceItem]:
        for relative, path in self._walk():
            try:
                stat = path.stat()
            except OSError:
                continue  # gone between the listing and now: the next sync will not see it
            yield SourceItem(
                key=relative,
                fingerprint=f"{stat.st_size}:{stat.st_mtime_ns}",
                load=functools.partial(self._load, relative, path),
            )

    def _load(self, relative: str, path: Path) -> ItemContent:
        # A symlink may point anywhere: what it resolves to must still be under the root.
        if not path.resolve().is_relative_to(self.root):
            raise ItemError("a link out of the source's folder")
        try:
            size = path.stat().st_size
            if size > self._max_bytes:
                raise ItemError(f"{size} bytes, over the {self._max_bytes} byte limit")
            content = path.read_bytes()
        except OSError as exc:
            raise ItemError(f"cannot be read ({exc.strerror})") from None
        digest = hashlib.sha256(content).hexdigest()
        metadata = {**self._metadata, "source_id": relative}

        def document(doc_id: str) -> Document:
            return file_document(
                relative, content, doc_id=doc_id, version=digest[:32], limits=self._limits,
                metadata=metadata,
            )  # fmt: skip

        return ItemContent(digest, len(content), document)

    def close(self) -> None:
        pass
