"""The payload of a chunk's point in Qdrant: written by the retriever at ingest, read back with
every hit, and filtered on by the store (the indexed fields' names are the constants below).

Points written before the control plane carry no `gen` and `seq`; they stay readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from ragdock.contracts.base import Contract, parse

# Payload fields the store filters on (and indexes): the tenant (Qdrant's tenant-optimized
# keyword index), the document and its revision (deletes and the freshness filter), the
# collection generation and staging sequence (see retrieval.freshness), the date and metadata.
TENANT_FIELD = "tenant_id"
DOC_FIELD = "doc_id"
REV_FIELD = "rev"
GEN_FIELD = "gen"
SEQ_FIELD = "seq"
UPDATED_FIELD = "updated_at"
META_FIELD = "meta"
INDEX_FIELD = "index"

Metadata = dict[str, str | int | float | bool]


class ChunkPayload(Contract):
    tenant_id: str
    doc_id: str
    rev: str
    gen: str | None = None
    seq: int | None = None
    chunk_id: str
    version: str
    index: int = Field(ge=0, description="The chunk's position in its document.")
    title: str = ""
    heading_path: list[str] = Field(default_factory=list)
    uri: str = ""
    updated_at: str = ""
    text: str = ""
    meta: Metadata = Field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def read_chunk_payload(payload: Mapping[str, Any], *, point_id: str) -> ChunkPayload:
    """Raises ContractError: the point's payload is not a chunk's (a foreign writer's point)."""
    return parse(
        ChunkPayload,
        payload,
        source=f"the payload of point {point_id}",
        fix="points in a ragdock collection are written by ragdock's ingest only; re-ingest the "
        "document (or drop points another writer added)",
    )
