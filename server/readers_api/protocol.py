"""Request and response models of the reader API (promote, rollback and alias replies are the
adapter API's: `server.adapters_api.protocol`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, StrictStr

from adapters.reader_registry import DEFAULT_READER
from ragdock.contracts.eval_report import GateVerdict
from ragdock.contracts.reader import ReaderManifest


class ReaderPush(BaseModel):
    """Register a reader directory the gateway can read (e.g. on the shared registry volume)."""

    path: StrictStr
    name: StrictStr = DEFAULT_READER
    version: StrictStr | None = None


class ReaderVersionOut(BaseModel):
    name: str
    version: str
    ref: str = Field(description="NAME@VERSION, as RAGDOCK_READER names it.")
    record: dict[str, Any]
    manifest: ReaderManifest | None = Field(
        None, description="The manifest as validated and stored at push (what the gate reads)."
    )
    verdict: GateVerdict = Field(
        description="The reader gate on the stored manifest's figures: the reader's own "
        "training run's, not a measurement by the platform."
    )


class ReaderOut(BaseModel):
    name: str
    versions: list[str]
    aliases: dict[str, str]


class ReaderList(BaseModel):
    object: str = "list"
    data: list[ReaderOut]
