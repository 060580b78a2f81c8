"""The platform's signing key, and the signature that marks an eval report as the platform's own
measurement.

`ragdock eval` signs the report it writes when it can read the key (`RAGDOCK_SIGNING_KEY_FILE`,
default `DATA_DIR/signing.key`); the gateway verifies the signature of every report attached to an
adapter version, and judges only signed ones (`eval.verdict`). The signature is HMAC-SHA256 over
the report's canonical content: its JSON without `gate` and `signature`, keys sorted, no
whitespace. The gate is left out so that `ragdock eval gate` can judge a signed report again
without breaking its signature (and because no reader takes a verdict from a report anyway).

The key file holds a secret of at least 32 characters (the gateway writes 64 hex digits, mode
0600, on its first start). The key is never logged or returned: only its id (the first 16 hex
digits of its sha256) is written beside a signature, to say which key signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import uuid
from pathlib import Path

from ragdock.contracts.eval_report import EvalReport, ReportSignature

log = logging.getLogger(__name__)

MIN_SECRET_CHARS = 32
# The parts of a report that its signature does not cover.
UNSIGNED_FIELDS = ("gate", "signature")


class SigningKeyError(ValueError):
    """The key file cannot be read or created, or holds too short a secret."""


class SigningKey:
    """An HMAC-SHA256 key. Its repr shows the id only, so it never reaches a log by accident."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            raise SigningKeyError(
                f"a signing key needs at least {MIN_SECRET_CHARS} characters; generate one with: "
                "python -c 'import secrets; print(secrets.token_hex(32))'"
            )
        self._secret = secret
        self.key_id = hashlib.sha256(secret).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"

    def _mac(self, report: EvalReport) -> str:
        return hmac.new(self._secret, canonical_content(report), hashlib.sha256).hexdigest()

    def sign(self, report: EvalReport) -> EvalReport:
        """A copy of `report` carrying this key's signature."""
        signature = ReportSignature(key_id=self.key_id, value=self._mac(report))
        return report.model_copy(update={"signature": signature})

    def verifies(self, report: EvalReport) -> bool:
        """Whether `report` carries this key's signature over its present content."""
        signature = report.signature
        if signature is None:
            return False
        # As bytes: compare_digest refuses str that is not ASCII, and these come from uploads.
        if not hmac.compare_digest(signature.key_id.encode(), self.key_id.encode()):
            return False
        return hmac.compare_digest(signature.value.encode(), self._mac(report).encode())


def canonical_content(report: EvalReport) -> bytes:
    """The bytes a signature covers: the report's JSON without `gate` and `signature`, with
    sorted keys and no whitespace (the same bytes after any number of parse/dump round trips)."""
    data = {k: v for k, v in report.as_json().items() if k not in UNSIGNED_FIELDS}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def read_signing_key(path: Path) -> SigningKey:
    """The key in `path` (its text, stripped of surrounding whitespace).

    Raises:
        SigningKeyError: the file cannot be read, or its secret is too short.
    """
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc.strerror}") from None
    try:
        key = SigningKey(secret)
    except SigningKeyError as exc:
        raise SigningKeyError(f"{path}: {exc}") from None
    try:
        if path.stat().st_mode & 0o077:
            log.warning("signing key %s is readable by others than its owner: chmod 600 it", path)
    except OSError:  # gone since: the key was read, and that is what counts
        pass
    return key


def load_or_create_signing_key(path: Path) -> SigningKey:
    """The key in `path`, created there (64 random hex digits, mode 0600) if it does not exist.

    Two processes starting at once both end up with the one key that landed first: the new key
    is written to a private file and linked into place, which fails if `path` exists by then.

    Raises:
        SigningKeyError: the key cannot be read or created.
    """
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(staged, path)
                    log.info("created the platform's signing key %s", path)
                except FileExistsError:  # another process created it first: use that one
                    pass
            finally:
                staged.unlink(missing_ok=True)
        except OSError as exc:
            raise SigningKeyError(
                f"cannot create the signing key {path}: {exc.strerror}; set "
                "RAGDOCK_SIGNING_KEY_FILE to a key file this process can read"
            ) from None
    return read_signing_key(path)
