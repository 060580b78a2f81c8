from __future__ import annotations

import pytest

from ragdock.settings import ApiKey
from server.auth import ANONYMOUS, KeyRing, require_scope
from server.errors import AuthenticationError, PermissionDeniedError

KEY = "k-0123456789abcdef0123"


def _ring() -> KeyRing:
    return KeyRing(
        [
            ApiKey.model_validate(
                {"key": KEY, "name": "app", "tenant": "acme", "scopes": ["chat"]}
            ),
            ApiKey.model_validate({"key": KEY + "x", "name": "ops"}),
        ]
    )


def test_no_keys_means_anonymous_with_all_scopes() -> None:
    assert KeyRing([]).authenticate(None) is ANONYMOUS


def test_the_right_key_maps_to_its_principal() -> None:
    principal = _ring().authenticate(f"Bearer {KEY}")
    assert (principal.name, principal.tenant) == ("app", "acme")
    assert _ring().authenticate(f"bearer {KEY}x").name == "ops"


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", f"Basic {KEY}", f"Bearer {KEY[:-1]}", KEY]
)
def test_missing_or_wrong_keys_are_refused(header: str | None) -> None:
    with pytest.raises(AuthenticationError) as caught:
        _ring().authenticate(header)
    assert caught.value.status_code == 401


def test_scopes_are_enforced() -> None:
    principal = _ring().authenticate(f"Bearer {KEY}")
    require_scope(principal, "chat")
    with pytest.raises(PermissionDeniedError):
        require_scope(principal, "admin")
