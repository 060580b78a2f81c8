"""Credentials out of what ragdock prints: URLs in banners, log lines and error messages.

A URL's userinfo (`postgresql://user:secret@db/ragdock`, `https://token@host`) and the query
parameters that carry secrets (`?password=`, `?api_key=`, `?token=`) are replaced by `****`;
the rest (scheme, user name, host, path) stays, since that is what an operator reads a banner for.
"""

from __future__ import annotations

import logging
import re

MASK = "****"

# scheme://userinfo@ : userinfo is everything up to the last '@' before the host's end.
_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s/?#@]*(?:@[^\s/?#@]*)*)@"
)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|secret|token|access_token|api[_-]?key|apikey|key)=)"
    r"[^&;#\s'\"]*",
    re.IGNORECASE,
)


def _masked_userinfo(match: re.Match[str]) -> str:
    user, colon, _secret = match["userinfo"].partition(":")
    # user:secret keeps the user's name; a lone user part may itself be a token.
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


def mask_credentials(text: str) -> str:
    """`text` with every URL's password (or lone token) and secret query values masked.

    Args:
        text: any text: one URL, a banner line, a log message with URLs in it.

    Returns:
        The same text, credentials replaced by `****`.
    """
    return _QUERY_SECRET.sub(rf"\g<key>{MASK}", _USERINFO.sub(_masked_userinfo, text))


class MaskingFormatter(logging.Formatter):
    """A log formatter whose output (message and traceback alike) has credentials masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_credentials(super().format(record))
