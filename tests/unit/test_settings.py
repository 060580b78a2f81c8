from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ragdock.settings import Settings

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


def test_defaults_bind_loopback_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGDOCK_API_KEYS", raising=False)
    settings = Settings.load(host="0.0.0.0")
    assert not settings.auth_enabled
    assert settings.bind_host == "127.0.0.1"


def test_keys_from_env_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGDOCK_API_KEYS", f"{KEY_A}, {KEY_B}")
    settings = Settings.load(host="0.0.0.0")
    assert [k.key.get_secret_value() for k in settings.api_keys] == [KEY_A, KEY_B]
    assert settings.api_keys[0].scopes == {"chat"}  # least privilege unless configured
    assert settings.bind_host == "0.0.0.0"


def test_keys_from_env_json_with_tenant_and_scopes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RAGDOCK_API_KEYS",
        f'[{{"key": "{KEY_A}", "name": "app", "tenant": "acme", "scopes": ["chat"]}}]',
    )
    (key,) = Settings.load().api_keys
    assert (key.name, key.tenant, key.scopes) == ("app", "acme", frozenset({"chat"}))


@pytest.mark.parametrize("bad", ["changeme", "short", "secret"])
def test_placeholder_or_short_keys_are_refused(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGDOCK_API_KEYS", bad)
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings.load()


def test_unknown_scope_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGDOCK_API_KEYS", f'[{{"key": "{KEY_A}", "scopes": ["root"]}}]')
    with pytest.raises(ValidationError, match="unknown scopes"):
        Settings.load()


def test_precedence_flags_over_env_over_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "ragdock.yaml"
    config.write_text("port: 9001\nengine_port: 9101\nserved_model_name: from-yaml\n")
    monkeypatch.setenv("RAGDOCK_ENGINE_PORT", "9201")
    settings = Settings.load(config, port=9301)
    assert settings.port == 9301  # flag
    assert settings.engine_port == 9201  # env beats YAML
    assert settings.served_model_name == "from-yaml"  # YAML beats default


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Settings.load(tmp_path / "nope.yaml")


def test_unknown_setting_in_yaml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "ragdock.yaml"
    config.write_text("prot: 9001\n")
    with pytest.raises(ValidationError, match="prot"):
        Settings.load(config)


def test_describe_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGDOCK_API_KEYS", KEY_A)
    monkeypatch.setenv("RAGDOCK_ENGINE_API_KEY", KEY_B)
    text = "\n".join(Settings.load().describe())
    assert KEY_A not in text and KEY_B not in text
    assert "engine_api_key = ****" in text


def test_engine_url_defaults_to_the_started_engine() -> None:
    settings = Settings.load(engine_port=8123)
    assert settings.engine_base_url() == "http://127.0.0.1:8123"
    assert Settings.load(engine_url="http://gpu:8000/").engine_base_url() == "http://gpu:8000"
