"""ragdock: one CLI and the shared pieces of the platform."""
