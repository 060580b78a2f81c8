"""Registry errors: each names the problem and the fix, and carries the HTTP status it maps to."""

from __future__ import annotations


class RegistryError(Exception):
    status_code = 400
    code = "invalid_adapter"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidNameError(RegistryError):
    code = "invalid_name"


class AdapterValidationError(RegistryError):
    code = "invalid_adapter"


class AdapterNotFoundError(RegistryError):
    status_code = 404
    code = "adapter_not_found"


class AdapterConflictError(RegistryError):
    status_code = 409
    code = "conflict"


class PromotionRefusedError(RegistryError):
    status_code = 409
    code = "gate_not_passed"


class ReportNotVerifiedError(PromotionRefusedError):
    """The version's eval report is not the platform's measurement (unsigned, a signature that
    does not verify, or measured for another version): kept as evidence, it promotes nothing."""

    code = "report_not_verified"


class ReaderValidationError(RegistryError):
    """A reader directory the reader registry refuses: no valid manifest, or weights that are
    not the ones its manifest records."""

    code = "invalid_reader"


class ReaderNotFoundError(RegistryError):
    status_code = 404
    code = "reader_not_found"
