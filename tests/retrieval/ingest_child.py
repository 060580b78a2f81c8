"""A process that ingests documents until it is killed, acknowledging each one as the gateway does
(only after `Retriever.ingest` has returned), for the kill -9 durability test.

    python -m tests.retrieval.ingest_child DATA_DIR ACK_FILE START [DATABASE_URL]

The control plane is the embedded SQLite file in DATA_DIR, or the PostgreSQL server at
DATABASE_URL; its lease is `LEASE_S`, short, so the test can wait it out.

Eight document ids are rewritten in turn, so a kill lands as often in a replacement as in an
addition. Each version's text carries its sequence number in every paragraph, so the test can
tell which version a chunk belongs to.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

from retrieval.factory import open_retriever
from retrieval.types import Document

COLLECTION = "kb"
TENANT = "acme"
DOC_IDS = 8
LEASE_S = 1.5
GRACE_S = 0.5


def version_text(doc_id: str, seq: int) -> str:
    """Several chunks' worth of text, every paragraph stamped with the sequence number."""
    paragraphs = [
        f"Sequence {seq}. Paragraph {p} of {doc_id}: "
        + " ".join(f"word{(seq * 31 + p * 7 + w) % 997}" for w in range(60))
        for p in range(6)
    ]
    return "\n\n".join(paragraphs)


def main() -> None:
    data_dir, ack_file, start = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    database_url = sys.argv[4] if len(sys.argv) > 4 else None
    retriever = open_retriever(
        data_dir, database_url=database_url, lease_s=LEASE_S, grace_s=GRACE_S
    )
    retriever.create_collection(COLLECTION)
    with ack_file.open("a") as acks:
        for seq in itertools.count(start):
            doc_id = f"doc-{seq % DOC_IDS}"
            document = Document(doc_id, version_text(doc_id, seq), title=doc_id)
            retriever.ingest(COLLECTION, TENANT, [document])
            # Acknowledged: from here on the client may rely on it, so it must survive.
            acks.write(f"{doc_id} {seq}\n")
            acks.flush()
            os.fsync(acks.fileno())


if __name__ == "__main__":
    main()
