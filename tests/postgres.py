"""The throwaway PostgreSQL server the control-plane tests run against (see its module)."""

from ragdock.controlplane.throwaway import fresh_database, throwaway_cluster

__all__ = ["fresh_database", "throwaway_cluster"]
