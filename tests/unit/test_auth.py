from __future__ import annotations

import pytest

from ragdock.settings import ApiKey
from server.auth import ANONYMOUS, KeyRing, Principal, require_scope
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


def test_no_keys_means_anonymous_without_admin() -> None:
    anonymous = KeyRing([]).authenticate(None)
    assert anonymous is ANONYMOUS
    assert anonymous.can("chat") and anonymous.can("ingest")
    assert not anonymous.can("admin") and not anonymous.can("platform")


def test_broader_scopes_imply_narrower_ones_and_a_bare_key_only_chats() -> None:
    def principal(scopes: list[str] | None) -> Principal:
        raw: dict[str, object] = {"key": KEY}
        if scopes is not None:
            raw["scopes"] = scopes
        return KeyRing([ApiKey.model_validate(raw)]).authenticate(f"Bearer {KEY}")

    assert principal(None).granted == {"chat"}
    assert principal(["ingest"]).granted == {"ingest"}
    assert principal(["admin"]).granted == {"admin", "ingest", "chat"}
    assert principal(["platform"]).granted == {"platform", "admin", "ingest", "chat", "metrics"}
    assert principal(["metrics"]).granted == {"metrics"}


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
