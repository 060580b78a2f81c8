"""The platform's judge of eval reports, from the settings: its signing key and its gate file."""

from __future__ import annotations

import logging

from eval.signing import SigningKeyError, load_or_create_signing_key, read_signing_key
from eval.verdict import PlatformJudge, load_judge
from ragdock.settings import Settings

log = logging.getLogger(__name__)


def platform_judge(settings: Settings) -> PlatformJudge:
    """The judge the adapter registry promotes by.

    The key at the default path is created on first start; a key file the operator names must
    exist. Where the default one cannot be created (a read-only data directory) the gateway
    still starts, logged, and no report verifies: nothing promotes unless a platform admin
    forces it.

    Raises:
        SigningKeyError: the configured `signing_key_file` cannot be read or is too short.
        SuiteError: the configured `promotion_gate` cannot be read or is not a valid gate.
    """
    key = None
    if settings.signing_key_file is not None:
        key = read_signing_key(settings.signing_key_file)
    else:
        try:
            key = load_or_create_signing_key(settings.signing_key_path)
        except SigningKeyError as exc:
            log.warning("%s: no eval report will verify, so none promotes unforced", exc)
    return load_judge(key, settings.promotion_gate)
