"""The compose file, rendered and validated by Docker Compose itself (`config`, no engine needed),
and the gateway's Dockerfile, linted by hadolint."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.support import DEPLOY, run, tool

COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yml"
REQUIRED_ENV = {
    "RAGDOCK_API_KEYS": "k" * 32,
    "RAGDOCK_POSTGRES_PASSWORD": "d" * 24,
    "RAGDOCK_QDRANT_API_KEY": "q" * 32,
    "RAGDOCK_ENGINE_API_KEY": "e" * 32,
    "RAGDOCK_METRICS_TOKEN": "m" * 32,
    "RAGDOCK_SIGNING_KEY": "s" * 64,
    "GRAFANA_ADMIN_PASSWORD": "p" * 16,
}


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run(tool("docker-compose"), "-f", COMPOSE_FILE, "config", "--format", "json", env=env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **REQUIRED_ENV}
    proc = _config(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Warnings go to stderr: the gateway's signing-key secret sets uid/gid/mode, which Compose
    # applies to an environment-sourced secret but warns about as if it were a file: one.
    for line in proc.stderr.splitlines():
        assert "is not supported outside Swarm mode" in line, proc.stderr
        assert "secrets.ragdock_signing_key." in line, proc.stderr
    rendered: dict[str, Any] = json.loads(proc.stdout)
    return rendered


def test_compose_runs_the_whole_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "vllm", "gateway", "qdrant", "postgres", "prometheus", "grafana",
    }  # fmt: skip
    assert compose["services"]["vllm"]["image"].startswith("vllm/vllm-openai:v")


@pytest.mark.parametrize(
    "missing",
    [
        "RAGDOCK_API_KEYS",
        "RAGDOCK_POSTGRES_PASSWORD",
        "RAGDOCK_QDRANT_API_KEY",
        "RAGDOCK_ENGINE_API_KEY",
        "RAGDOCK_METRICS_TOKEN",
    ],
)
def test_compose_refuses_to_start_without_a_secret(missing: str) -> None:
    env = {"PATH": os.environ["PATH"], **REQUIRED_ENV}
    del env[missing]
    proc = _config(env)
    assert proc.returncode != 0
    assert missing in proc.stdout + proc.stderr


def test_gateway_keeps_its_control_plane_in_the_postgres_service(compose: dict[str, Any]) -> None:
    postgres, gateway = compose["services"]["postgres"], compose["services"]["gateway"]
    assert postgres["image"].startswith("postgres:16")
    assert "ports" not in postgres  # reachable by the gateway only, not from the host
    pg_env = postgres["environment"]
    assert pg_env["POSTGRES_PASSWORD"] == REQUIRED_ENV["RAGDOCK_POSTGRES_PASSWORD"]
    # The data directory is on a named volume, so it survives `docker compose down`.
    (data,) = postgres["volumes"]
    assert (data["type"], data["target"]) == ("volume", "/var/lib/postgresql/data")
    assert data["source"] in compose["volumes"]
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"] and "127.0.0.1" in test
    # The gateway runs the migrations at start: it waits until PostgreSQL accepts connections.
    assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = urlsplit(gateway["environment"]["RAGDOCK_DATABASE_URL"])
    assert url.scheme == "postgresql+psycopg"  # the driver the image ships
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert url.username == pg_env["POSTGRES_USER"]
    assert url.password == pg_env["POSTGRES_PASSWORD"]
    assert url.path == f"/{pg_env['POSTGRES_DB']}"


def test_only_the_gateway_and_the_dashboards_are_published_on_the_host(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"gateway", "grafana", "prometheus"}
    for backend in ("vllm", "qdrant", "postgres"):
        assert not services[backend].get("ports"), backend
        assert services[backend].get("network_mode") != "host", backend


def test_qdrant_and_vllm_require_the_keys_the_gateway_sends(compose: dict[str, Any]) -> None:
    services = compose["services"]
    qdrant, vllm = services["qdrant"]["environment"], services["vllm"]["environment"]
    gateway = services["gateway"]["environment"]
    qdrant_key, engine_key = (
        REQUIRED_ENV["RAGDOCK_QDRANT_API_KEY"],
        REQUIRED_ENV["RAGDOCK_ENGINE_API_KEY"],
    )
    assert qdrant["QDRANT__SERVICE__API_KEY"] == gateway["RAGDOCK_QDRANT_API_KEY"] == qdrant_key
    assert vllm["VLLM_API_KEY"] == gateway["RAGDOCK_ENGINE_API_KEY"] == engine_key
    # Not on vLLM's command line, where `ps` and `docker inspect` would show it.
    assert not any(arg.startswith("--api-key") for arg in services["vllm"]["command"])
    # The healthcheck stays on /health, which vLLM leaves open (the key guards /v1/... only).
    assert "http://127.0.0.1:8000/health'" in " ".join(services["vllm"]["healthcheck"]["test"])


def test_prometheus_scrapes_qdrant_with_its_key(compose: dict[str, Any]) -> None:
    # Qdrant's /metrics needs the key: a compose secret from the same variable, at the path
    # prometheus.yml reads.
    assert compose["secrets"]["qdrant_api_key"]["environment"] == "RAGDOCK_QDRANT_API_KEY"
    secrets = {s["source"]: s for s in compose["services"]["prometheus"]["secrets"]}
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (qdrant,) = [job for job in config["scrape_configs"] if job["job_name"] == "qdrant"]
    assert qdrant["authorization"]["credentials_file"] == secrets["qdrant_api_key"]["target"]
    assert qdrant["static_configs"] == [{"targets": ["qdrant:6333"]}]


def test_prometheus_scrapes_the_gateway_with_the_metrics_token(compose: dict[str, Any]) -> None:
    # The gateway's /metrics names every tenant's collections, adapters and keys: it takes the
    # token the gateway reads, which Prometheus gets as a secret from the same variable.
    assert compose["secrets"]["ragdock_metrics_token"]["environment"] == "RAGDOCK_METRICS_TOKEN"
    gateway_env = compose["services"]["gateway"]["environment"]
    assert gateway_env["RAGDOCK_METRICS_TOKEN"] == REQUIRED_ENV["RAGDOCK_METRICS_TOKEN"]
    secrets = {s["source"]: s for s in compose["services"]["prometheus"]["secrets"]}
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (gateway,) = [job for job in config["scrape_configs"] if job["job_name"] == "gateway"]
    token_file = secrets["ragdock_metrics_token"]["target"]
    assert gateway["authorization"]["credentials_file"] == token_file
    assert gateway["static_configs"] == [{"targets": ["gateway:8000"]}]


def test_gateway_reads_the_platform_signing_key_from_a_secret(compose: dict[str, Any]) -> None:
    # Promotion trusts only eval reports signed with this key: every gateway service reads the
    # one secret (not a key each would create under its /data), given by the operator.
    gateways = {
        name: service
        for name, service in compose["services"].items()
        if service["image"].startswith("ragdock-gateway:")
    }
    assert set(gateways) == {"gateway"}
    assert compose["secrets"]["ragdock_signing_key"]["environment"] == "RAGDOCK_SIGNING_KEY"
    for name, gateway in gateways.items():
        (secret,) = [s for s in gateway["secrets"] if s["source"] == "ragdock_signing_key"]
        assert gateway["environment"]["RAGDOCK_SIGNING_KEY_FILE"] == secret["target"], name
        # The image's user owns it and alone reads it (eval/signing.py warns otherwise).
        (user,) = re.findall(r"^USER\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
        assert f"{secret['uid']}:{secret['gid']}" == user, name
        assert int(secret["mode"], 8) == 0o400, name
        # The key itself is in no environment variable (`docker inspect` would show it).
        assert REQUIRED_ENV["RAGDOCK_SIGNING_KEY"] not in gateway["environment"].values(), name


def test_gateway_serves_no_api_docs_and_no_key_names_in_metrics(compose: dict[str, Any]) -> None:
    env = compose["services"]["gateway"]["environment"]
    assert env["RAGDOCK_API_DOCS"] == "false"
    assert env["RAGDOCK_METRICS_KEY_LABELS"] == "false"


def test_vllm_serves_lora_with_runtime_updates_on_a_gpu(compose: dict[str, Any]) -> None:
    vllm = compose["services"]["vllm"]
    args = vllm["command"]
    assert "--enable-lora" in args
    assert any(a.startswith("--max-lora-rank=") for a in args)
    assert any(a.startswith("--max-loras=") for a in args)
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert vllm["environment"]["VLLM_PLUGINS"] == "lora_filesystem_resolver"
    (device,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]


def test_gateway_and_engine_agree_on_model_rank_and_adapters(compose: dict[str, Any]) -> None:
    vllm, gateway = compose["services"]["vllm"], compose["services"]["gateway"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in vllm["command"] if "=" in a)
    env = gateway["environment"]
    # vLLM's filesystem resolver refuses an adapter whose base model is not the engine's --model.
    assert env["RAGDOCK_MODEL"] == flags["model"]
    assert env["RAGDOCK_ENGINE_MAX_LORA_RANK"] == flags["max-lora-rank"]
    assert env["RAGDOCK_ENGINE_URL"] == "http://vllm:8000"
    assert env["RAGDOCK_QDRANT_URL"] == "http://qdrant:6333"
    mounts = {
        s: {m["target"]: m for m in compose["services"][s]["volumes"]} for s in compose["services"]
    }
    assert mounts["vllm"]["/adapters"]["source"] == mounts["gateway"]["/adapters"]["source"]
    assert mounts["vllm"]["/adapters"]["read_only"] is True
    assert not mounts["gateway"]["/adapters"].get("read_only", False)
    assert (
        vllm["environment"]["VLLM_LORA_RESOLVER_CACHE_DIR"]
        == f"{env['RAGDOCK_ADAPTERS_DIR']}/.resolver"
    )
    assert mounts["qdrant"]["/qdrant/storage"]["type"] == "volume"


def test_prometheus_and_grafana_mount_files_that_exist(compose: dict[str, Any]) -> None:
    binds = [
        Path(m["source"])
        for service in ("prometheus", "grafana")
        for m in compose["services"][service]["volumes"]
        if m["type"] == "bind"
    ]
    assert len(binds) == 4
    for source in binds:
        assert source.exists(), source
        assert DEPLOY in source.parents


def test_dockerfile_passes_hadolint() -> None:
    proc = run(tool("hadolint"), DEPLOY / "Dockerfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install fastapi\n")
    proc = run(tool("hadolint"), bad)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # the :latest tag


def test_dockerfile_runs_unprivileged_with_a_health_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert user.split(":")[0] not in {"root", "0"}
    (health,) = re.findall(r"^HEALTHCHECK .*(?:\n\s+.*)*", text, flags=re.M)
    assert "/healthz" in health
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for path in source.split():
            assert (DEPLOY.parent / path).exists(), f"COPY {path}: not in the repository"
