"""Request and response models of the adapter API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, StrictBool, StrictStr

from ragdock.contracts.adapter_manifest import AdapterManifest
from ragdock.contracts.eval_report import EvalReport, PlatformVerdict
from ragdock.contracts.training_history import HistoryPoint


class PushFromPath(BaseModel):
    """Register an adapter directory the gateway can read (e.g. on the shared registry volume)."""

    name: StrictStr
    path: StrictStr
    version: StrictStr | None = None


class PromoteRequest(BaseModel):
    alias: StrictStr = "prod"
    force: StrictBool = Field(
        False,
        description="Promote whatever the platform's verdict (platform scope only; audited).",
    )
    reason: StrictStr | None = Field(
        None, max_length=500, description="Why, recorded in the audit log (say it with force)."
    )


class RollbackRequest(BaseModel):
    alias: StrictStr = "prod"


class AdapterVersionOut(BaseModel):
    name: str
    version: str
    model: str = Field(description="The model name to request this version by.")
    record: dict[str, Any]
    manifest: AdapterManifest | None = Field(
        None, description="The training manifest (current version; older ones are migrated)."
    )
    eval_report: EvalReport | None = Field(
        None,
        description="The report as attached: evidence. Its `gate` is what its run (or its "
        "uploader) claimed; promotion reads `verdict`.",
    )
    verdict: PlatformVerdict = Field(
        description="The platform's verdict on the report: computed from a report signed with "
        "the platform's key for this version, against the platform's gate file."
    )
    training_history: list[HistoryPoint] | None = Field(
        default=None,
        description="The training run's loss curve from its metrics.jsonl: records of `step` "
        "with `loss` and/or `eval_loss`, every eval point and at most 400 train points (null "
        "when the version has no metrics.jsonl).",
    )


class AdapterOut(BaseModel):
    name: str
    versions: list[str]
    aliases: dict[str, str]


class AdapterList(BaseModel):
    object: str = "list"
    data: list[AdapterOut]


# An alias as promote and rollback leave it; the reader API answers with it too. (A comment,
# not a docstring: pydantic would publish a docstring in the OpenAPI schema.)
class AliasOut(BaseModel):
    name: str
    alias: str
    version: str
    history: list[str]

    @classmethod
    def from_entry(cls, name: str, alias: str, entry: dict[str, Any]) -> AliasOut:
        """From a registry's alias entry ({"version", "history"})."""
        return cls(name=name, alias=alias, version=entry["version"], history=entry["history"])
