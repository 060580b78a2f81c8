"""Who owns an adapter name is decided in the push's own transaction: two tenants racing to push
the first version of one name never both land in it (on SQLite, and on a real PostgreSQL in the
full tier), through the service the upload route calls."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.errors import AdapterNotFoundError
from adapters.registry import AdapterRegistry
from ragdock.controlplane import ControlPlane, open_control_plane
from server.adapter_loading import ResolverLoader
from server.adapters_api.service import AdapterService
from server.auth import ADMIN, PLATFORM, Principal
from server.errors import PermissionDeniedError
from tests.unit.test_adapter_registry import make_adapter, open_registry

ACME = Principal("acme-admin", "acme", frozenset({ADMIN}))
BETA = Principal("beta-admin", "beta", frozenset({ADMIN}))
OPS = Principal("ops", "ops", frozenset({PLATFORM}))
RUNS = 50


@pytest.fixture
def control(control_plane_url: str, tmp_path: Path) -> Iterator[ControlPlane]:
    plane = open_control_plane(control_plane_url, tmp_path)
    yield plane
    plane.close()


@pytest.fixture
def registry(tmp_path: Path, control: ControlPlane) -> Iterator[AdapterRegistry]:
    registry = open_registry(tmp_path / "registry", control)
    yield registry
    registry.close()


def service_over(registry: AdapterRegistry) -> AdapterService:
    from server.lora_manager import LoraManager

    return AdapterService(registry, LoraManager(ResolverLoader()), max_upload_bytes=1 << 30)


def race(service: AdapterService, adapter: Path, name: str) -> dict[str, str]:
    """Acme and beta push the first version of `name` at once: each tenant's answer (the
    version it got, or the error's class)."""
    start = threading.Barrier(2)
    answers: dict[str, str] = {}

    def push(who: Principal) -> None:
        start.wait()
        try:
            answers[who.tenant] = service.push_directory(adapter, name, None, who).version
        except (AdapterNotFoundError, PermissionDeniedError) as exc:
            answers[who.tenant] = type(exc).__name__
        except BaseException as exc:  # reported with the run
            answers[who.tenant] = repr(exc)

    threads = [threading.Thread(target=push, args=(who,)) for who in (ACME, BETA)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


@pytest.mark.timeout(300)
def test_two_tenants_racing_for_a_new_name_never_share_it(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    service = service_over(registry)
    adapter = make_adapter(tmp_path / "lora")
    wrong: list[str] = []
    for run in range(RUNS):
        name = f"race-{run}"
        answers = race(service, adapter, name)
        owner = (registry.ownership(name) or ("nobody", ""))[0]
        pushers = {v.ref: v.record["pushed_by"] for v in registry.versions(name)}
        # One tenant gets v1; the other is answered as a late pusher would be: the name is
        # another tenant's, so for it the adapter does not exist.
        loser = "beta" if owner == "acme" else "acme"
        if (
            any(not pusher.startswith(f"{owner}/{owner}-") for pusher in pushers.values())
            or answers.get(owner) != "v1"
            or answers.get(loser) != "AdapterNotFoundError"
        ):
            wrong.append(f"run {run}: owner {owner}, versions {pushers}, answers {answers}")
    assert wrong == [], f"{len(wrong)} of {RUNS} runs went wrong:\n" + "\n".join(wrong)


def test_a_late_pusher_is_refused_as_before(registry: AdapterRegistry, tmp_path: Path) -> None:
    service = service_over(registry)
    adapter = make_adapter(tmp_path / "lora")
    assert service.push_directory(adapter, "mine", None, ACME).version == "v1"
    with pytest.raises(AdapterNotFoundError):
        service.push_directory(adapter, "mine", None, BETA)
    assert service.push_directory(adapter, "mine", None, ACME).version == "v2"
    # A shared name: every tenant sees it, only the platform changes it.
    assert service.push_directory(adapter, "common", None, OPS).version == "v1"
    with pytest.raises(PermissionDeniedError):
        service.push_directory(adapter, "common", None, BETA)
    assert service.push_directory(adapter, "common", None, OPS).version == "v2"
    assert [v.record["pushed_by"] for v in registry.versions("mine")] == ["acme/acme-admin"] * 2
    assert registry.ownership("mine") == ("acme", "tenant")
    assert registry.ownership("common") == ("ops", "shared")
