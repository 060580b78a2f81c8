"""The Kubernetes overlays, rendered by kustomize (kubectl's) and every resource validated against
the official Kubernetes JSON schemas in strict mode (unknown fields are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_validate import utils as kv

from tests.deploy.support import DEPLOY, KUBERNETES_VERSION, load_yaml_docs, run, tool

OVERLAYS = ("dev", "prod")
Manifest = dict[str, Any]


def _render(path: Path) -> list[Manifest]:
    proc = run(tool("kubectl"), "kustomize", path)
    assert proc.returncode == 0, proc.stderr
    return load_yaml_docs(proc.stdout)


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    return request.param, _render(DEPLOY / "k8s" / "overlays" / request.param)


def _one(docs: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return dict(found)


def _container(workload: Manifest) -> Manifest:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_every_rendered_resource_matches_the_kubernetes_schema(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    assert len(docs) >= 15
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)  # raises ValidationError


def test_the_schema_check_rejects_an_unknown_field(overlay: tuple[str, list[Manifest]]) -> None:
    _, docs = overlay
    gateway = _one(docs, "Deployment", "gateway")
    _container(gateway)["readinessProbe"]["httpGett"] = {"path": "/readyz", "port": 8000}
    with pytest.raises(kv.ValidationError):
        kv.validate(gateway, KUBERNETES_VERSION, strict=True)


def test_vllm_requests_gpus_and_loads_adapters_through_the_filesystem_resolver(
    overlay: tuple[str, list[Manifest]],
) -> None:
    name, docs = overlay
    vllm = _one(docs, "Deployment", "vllm")
    container = _container(vllm)
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus == int(container["resources"]["requests"]["nvidia.com/gpu"]) >= 1
    if name == "prod":
        assert f"--tensor-parallel-size={gpus}" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "--enable-lora" in container["args"]
    env = _env(container)
    assert env["VLLM_PLUGINS"] == "lora_filesystem_resolver"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"  # resolvers are used only then
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert env["VLLM_LORA_RESOLVER_CACHE_DIR"] == mounts["adapters"]["mountPath"] + "/.resolver"
    assert mounts["adapters"]["readOnly"] is True


def test_gateway_and_engine_share_the_adapter_volume_and_model(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    vllm, gateway = _one(docs, "Deployment", "vllm"), _one(docs, "Deployment", "gateway")

    def claim(workload: Manifest, volume: str) -> str:
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        return str(volumes[volume]["persistentVolumeClaim"]["claimName"])

    assert claim(vllm, "adapters") == claim(gateway, "adapters")
    pvc = _one(docs, "PersistentVolumeClaim", claim(gateway, "adapters"))
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    env = _env(_container(gateway))
    assert env["RAGDOCK_ADAPTER_LOADING"] == "resolver"
    # Both read the model name from the one generated ConfigMap (its hashed name included).
    (config_ref,) = _container(vllm)["envFrom"]
    assert env["RAGDOCK_MODEL"]["configMapKeyRef"]["name"] == config_ref["configMapRef"]["name"]
    config = _one(docs, "ConfigMap", config_ref["configMapRef"]["name"])
    assert config["data"]["MODEL"].startswith("google/gemma-4-")
    assert "--model=$(MODEL)" in _container(vllm)["args"]


def test_qdrant_runs_as_a_replicated_cluster_with_persistent_volumes(
    overlay: tuple[str, list[Manifest]],
) -> None:
    name, docs = overlay
    qdrant = _one(docs, "StatefulSet", "qdrant")
    env = _env(_container(qdrant))
    assert env["QDRANT__CLUSTER__ENABLED"] == "true"
    replicas, factor = (
        qdrant["spec"]["replicas"],
        int(env["QDRANT__STORAGE__COLLECTION__REPLICATION_FACTOR"]),
    )
    assert (replicas, factor) == ((3, 2) if name == "prod" else (1, 1))
    assert qdrant["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    headless = _one(docs, "Service", qdrant["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in headless["spec"]["ports"]} >= {6333, 6335}
    assert _env(_container(_one(docs, "Deployment", "gateway")))["RAGDOCK_QDRANT_URL"] == (
        "http://qdrant:6333"
    )


def test_gateway_is_probed_autoscaled_and_protected_from_disruption(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    gateway = _one(docs, "Deployment", "gateway")
    container = _container(gateway)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    hpa = _one(docs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    pdb = _one(docs, "PodDisruptionBudget", "gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert gateway["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_api_keys_come_from_a_secret_generated_only_in_dev(
    overlay: tuple[str, list[Manifest]],
) -> None:
    name, docs = overlay
    ref = _env(_container(_one(docs, "Deployment", "gateway")))["RAGDOCK_API_KEYS"]["secretKeyRef"]
    secrets = [d for d in docs if d["kind"] == "Secret"]
    if name == "prod":
        assert secrets == []  # created by the operator, never committed
        assert ref["name"] == "ragdock-api-keys"
    else:
        assert [s["metadata"]["name"] for s in secrets] == [ref["name"]]
        assert ref["key"] in secrets[0]["data"]


def test_every_service_selects_pods_and_every_workload_is_scraped(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    workloads = [d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}]
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        assert any(selector <= labels.items() for labels in pod_labels), service["metadata"]
    for workload in workloads:
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        ports = {p["containerPort"] for p in _container(workload)["ports"]}
        assert int(annotations["prometheus.io/port"]) in ports
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    (namespace,) = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    assert namespaces == {namespace}
