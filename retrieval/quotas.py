"""Storage quotas: what one tenant may hold, and how many collections the store may hold.

A collection of the embedded Qdrant engine costs 8 threads and 1 open file while it is open
(measured: `tests/retrieval/test_store_cost.py`), so the collections of all tenants together
are bounded too, or a few thousand creates exhaust the host's threads. Every limit is checked
before any work (no store collection made, no chunk embedded), from the control plane's counts,
so every replica refuses alike. 0 means unlimited.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StorageQuota:
    """The limits (see the settings of the same names)."""

    max_collections: int = 0
    tenant_max_collections: int = 0
    tenant_max_documents: int = 0
    tenant_max_bytes: int = 0

    @property
    def counts_documents(self) -> bool:
        return bool(self.tenant_max_documents or self.tenant_max_bytes)


class QuotaExceededError(Exception):
    """A create or an ingest would take a tenant (or the store) past a limit; nothing was done.

    Args:
        what: the limit, in words ("collections for tenant acme").
        limit: its value.
        setting: the setting that sets it (`RAGDOCK_...`).
        usage: how much is held already, and what the request adds, in words.
    """

    def __init__(self, what: str, limit: int, setting: str, usage: str) -> None:
        self.what, self.limit, self.setting = what, limit, setting
        super().__init__(f"{what}: {limit} ({setting}); {usage}")


def check(what: str, held: int, adds: int, limit: int, setting: str) -> None:
    """Raises QuotaExceededError when `held + adds` is over `limit` (0: unlimited)."""
    if limit and adds > 0 and held + adds > limit:
        raise QuotaExceededError(what, limit, setting, f"{held} held, this request adds {adds}")
