"""Typed contracts: what one package writes and another reads, each a pydantic model that IS its
file format (like peft's LoraConfig). Readers and writers both go through these models; a field
that is missing, unknown or of the wrong type fails with a `ContractError` naming the file, the
field and the fix.

- `adapter_manifest`: an adapter's `manifest.json` (training -> registry, gateway, eval).
- `training_history`: a run's `metrics.jsonl` records (training -> registry, console).
- `eval_report`: `report.json` and its gate verdict (eval -> registry).
- `model_build`: a built checkpoint's `ragdock-build.json` (engine -> training, registry).
- `chunk_payload`: a chunk's Qdrant payload (retrieval's writer -> its readers and filters).
"""

from ragdock.contracts.base import Contract, ContractError

__all__ = ["Contract", "ContractError"]
