"""Stand-ins for the parts a fast test cannot run: each sits behind the product's own Protocol
and passes the same contract tests as the real part (the real one runs in the full tier).

- `HashingEmbedder` (`embedder.py`): the dense `Embedder` without weights; contract in
  `tests/retrieval/test_embedder_contract.py`.
- `tiny_gemma_config` / `tiny_gemma_checkpoint` (`gemma.py`): a random-init Gemma 3 with the real
  270M's layout at toy sizes, where a test needs a model object or a checkpoint directory;
  contract in `tests/unit/test_tiny_gemma.py`.
- The engine: `tests/unit/fake_engine.py` (the real `EngineClient` over `httpx.MockTransport`).
- The control plane needs no fake: SQLite is the real embedded one (`control_plane_url`'s
  "sqlite" half).
"""

from tests.fakes.embedder import HashingEmbedder
from tests.fakes.gemma import tiny_gemma_checkpoint, tiny_gemma_config

__all__ = ["HashingEmbedder", "tiny_gemma_checkpoint", "tiny_gemma_config"]
