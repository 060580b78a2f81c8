"""The Kubernetes overlays, rendered by kustomize (kubectl's) and every resource validated against
the official Kubernetes JSON schemas in strict mode (unknown fields are errors)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def test_secrets_are_generated_only_in_dev(overlay: tuple[str, list[Manifest]]) -> None:
    name, docs = overlay
    env = _env(_container(_one(docs, "Deployment", "gateway")))
    refs = [
        env[var]["secretKeyRef"]
        for var in (
            "RAGDOCK_API_KEYS",
            "RAGDOCK_DATABASE_URL",
            "RAGDOCK_QDRANT_API_KEY",
            "RAGDOCK_ENGINE_API_KEY",
            "RAGDOCK_METRICS_TOKEN",
        )
    ]
    (signing,) = _signing_key_volumes(_one(docs, "Deployment", "gateway"))
    refs.append({"name": signing["secret"]["secretName"], "key": SIGNING_KEY})
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    if name == "prod":
        assert secrets == {}  # created by the operator, never committed
        assert [r["name"] for r in refs] == [
            "ragdock-api-keys", "ragdock-database", "ragdock-backends", "ragdock-backends",
            "ragdock-metrics", "ragdock-signing-key",
        ]  # fmt: skip
    else:
        assert set(secrets) == {r["name"] for r in refs}
        for ref in refs:
            assert ref["key"] in secrets[ref["name"]]["data"]
        assert not any(r.get("optional") for r in refs)  # no silent fallback to embedded SQLite


def _decoded(secret: Manifest) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


# The platform's signing key: one Secret every gateway pod mounts (eval/signing.py).
SIGNING_SECRET, SIGNING_KEY = "ragdock-signing-key", "signing.key"
GATEWAY_UID = 10001  # USER in deploy/Dockerfile, runAsUser/fsGroup in gateway.yaml


def _signing_key_volumes(workload: Manifest) -> list[Manifest]:
    volumes = workload["spec"]["template"]["spec"].get("volumes", [])
    return [
        v for v in volumes if v.get("secret", {}).get("secretName", "").startswith(SIGNING_SECRET)
    ]


def _gateway_containers(docs: list[Manifest]) -> list[tuple[Manifest, Manifest]]:
    """(workload, container) for every container, init containers included, that runs the
    gateway image (`ragdock-gateway`, renamed by prod's `images:`)."""
    found = []
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        if pod is None:
            continue
        for container in pod.get("initContainers", []) + pod["containers"]:
            image = container["image"].split("@")[0].rsplit(":", 1)[0]
            if image.endswith(("ragdock-gateway", "ragdock/gateway")):
                found.append((doc, container))
    return found


def test_every_gateway_mounts_the_one_signing_key(overlay: tuple[str, list[Manifest]]) -> None:
    name, docs = overlay
    gateways = _gateway_containers(docs)
    assert [c["name"] for _, c in gateways] == ["gateway"]  # the replicas of one Deployment
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for workload, container in gateways:
        (volume,) = _signing_key_volumes(workload)
        secret = volume["secret"]
        assert not secret.get("optional")  # a named key file must exist: no per-pod fallback
        (item,) = secret["items"]
        assert item["key"] == SIGNING_KEY
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True
        path = Path(mount["mountPath"]) / item.get("path", item["key"])
        assert _env(container)["RAGDOCK_SIGNING_KEY_FILE"] == str(path)
        # Root's file, group fsGroup: readable by the gateway's user through the group only.
        pod_security = workload["spec"]["template"]["spec"]["securityContext"]
        assert pod_security["runAsUser"] == pod_security["fsGroup"] == GATEWAY_UID
        assert item.get("mode", secret["defaultMode"]) == 0o440
        if name == "prod":
            assert secret["secretName"] == SIGNING_SECRET  # created by the operator
        else:
            assert secret["secretName"].startswith(f"{SIGNING_SECRET}-")  # generated, hashed
            key = _decoded(secrets[secret["secretName"]])[SIGNING_KEY]
            assert len(key.strip()) >= 32  # eval/signing.py refuses a shorter one
    prod = (DEPLOY / "k8s" / "overlays" / "prod" / "kustomization.yaml").read_text()
    assert f"create secret generic {SIGNING_SECRET}" in prod  # documented where prod is set up
    assert f"--from-literal={SIGNING_KEY}=" in prod


def test_postgres_runs_as_a_statefulset_with_its_own_volume(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    postgres = _one(docs, "StatefulSet", "postgres")
    assert postgres["spec"]["replicas"] == 1
    container = _container(postgres)
    assert container["image"].startswith("postgres:16")
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = _env(container)
    # PGDATA is a directory inside the claim's mount (initdb refuses a volume's lost+found).
    assert Path(env["PGDATA"]).parent == Path(mounts[claim["metadata"]["name"]])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready", probe
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert postgres["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    service = _one(docs, "Service", postgres["spec"]["serviceName"])
    assert [p["port"] for p in service["spec"]["ports"]] == [5432]


def test_gateway_reads_the_database_url_the_postgres_password_matches(
    overlay: tuple[str, list[Manifest]],
) -> None:
    name, docs = overlay
    postgres_env = _env(_container(_one(docs, "StatefulSet", "postgres")))
    gateway_env = _env(_container(_one(docs, "Deployment", "gateway")))
    url_ref = gateway_env["RAGDOCK_DATABASE_URL"]["secretKeyRef"]
    password_ref = postgres_env["POSTGRES_PASSWORD"]["secretKeyRef"]
    assert url_ref["name"] == password_ref["name"]  # one Secret: the password is set in one place
    if name == "prod":
        return  # the operator creates the Secret
    values = _decoded(_one(docs, "Secret", url_ref["name"]))
    url = urlsplit(values[url_ref["key"]])
    assert url.scheme == "postgresql+psycopg"  # the driver the image ships
    service = _one(docs, "Service", "postgres")
    assert (url.hostname, url.port) == (service["metadata"]["name"], 5432)
    assert url.username == postgres_env["POSTGRES_USER"]
    assert url.password == values[password_ref["key"]]
    assert url.path == f"/{postgres_env['POSTGRES_DB']}"


def test_only_the_adapter_registry_is_a_shared_volume(overlay: tuple[str, list[Manifest]]) -> None:
    _, docs = overlay
    claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert [c["metadata"]["name"] for c in claims] == ["adapters"]
    gateway = _one(docs, "Deployment", "gateway")
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(gateway)["volumeMounts"]}
    data_dir = _env(_container(gateway))["RAGDOCK_DATA_DIR"]
    assert "emptyDir" in volumes[mounts[data_dir]]  # per-pod scratch: shared state is in PostgreSQL


def test_prod_can_use_an_external_database_instead(tmp_path: Path) -> None:
    prod = (DEPLOY / "k8s" / "overlays" / "prod" / "kustomization.yaml").read_text()
    assert "../../components/external-database" in prod  # documented where it is switched on
    # kustomize loads only relative paths: render a copy with one more overlay on top of prod.
    shutil.copytree(DEPLOY / "k8s", tmp_path / "k8s")
    external = tmp_path / "k8s" / "overlays" / "external"
    external.mkdir()
    (external / "kustomization.yaml").write_text(
        "resources: [../prod]\ncomponents: [../../components/external-database]\n"
    )
    docs = _render(external)
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    # The StatefulSet, its Service and its NetworkPolicy.
    assert not [d for d in docs if d["metadata"]["name"].startswith("postgres")]
    assert len(docs) == len(_render(DEPLOY / "k8s" / "overlays" / "prod")) - 3
    url_ref = _env(_container(_one(docs, "Deployment", "gateway")))["RAGDOCK_DATABASE_URL"]
    assert url_ref["secretKeyRef"] == {"name": "ragdock-database", "key": "RAGDOCK_DATABASE_URL"}


def test_every_service_selects_pods_and_every_workload_is_scraped(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    workloads = [d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}]
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        assert any(selector <= labels.items() for labels in pod_labels), service["metadata"]
    unscraped = set()
    for workload in workloads:
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        if annotations["prometheus.io/scrape"] == "false":
            unscraped.add(workload["metadata"]["name"])
            continue
        assert annotations["prometheus.io/scrape"] == "true"
        ports = {p["containerPort"] for p in _container(workload)["ports"]}
        assert int(annotations["prometheus.io/port"]) in ports
    assert unscraped == {"postgres"}  # exports no Prometheus metrics without an exporter
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    (namespace,) = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    assert namespaces == {namespace}


# The backends' API keys: the variable each backend reads, and the gateway's for the same key.
BACKEND_KEYS = {
    ("StatefulSet", "qdrant"): ("QDRANT__SERVICE__API_KEY", "RAGDOCK_QDRANT_API_KEY"),
    ("Deployment", "vllm"): ("VLLM_API_KEY", "RAGDOCK_ENGINE_API_KEY"),
}


def test_qdrant_and_vllm_require_the_keys_the_gateway_sends(
    overlay: tuple[str, list[Manifest]],
) -> None:
    name, docs = overlay
    gateway_env = _env(_container(_one(docs, "Deployment", "gateway")))
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    keys = set()
    for (kind, workload), (var, gateway_var) in BACKEND_KEYS.items():
        ref = _env(_container(_one(docs, kind, workload)))[var]["secretKeyRef"]
        assert ref == gateway_env[gateway_var]["secretKeyRef"], workload  # same Secret and key
        assert not ref.get("optional"), workload  # no backend without its key
        keys.add(ref["key"])
        if name == "prod":
            assert ref["name"] == "ragdock-backends"  # created by the operator
        else:
            assert ref["name"].startswith("ragdock-backends-")  # generated, hash suffix
            assert _decoded(secrets[ref["name"]])[ref["key"]], workload
    assert keys == {"QDRANT_API_KEY", "VLLM_API_KEY"}  # one key per backend
    vllm = _container(_one(docs, "Deployment", "vllm"))
    assert not any(arg.startswith("--api-key") for arg in vllm["args"])  # not in the pod spec
    # Probes use what the keys leave open: vLLM guards /v1/... only, Qdrant all but these.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"]["path"] == "/health", probe
    qdrant = _container(_one(docs, "StatefulSet", "qdrant"))
    for probe in ("readinessProbe", "livenessProbe"):
        assert qdrant[probe]["httpGet"]["path"] in {"/healthz", "/livez", "/readyz"}, probe


def test_gateway_serves_no_api_docs_and_no_key_names_in_metrics(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    env = _env(_container(_one(docs, "Deployment", "gateway")))
    assert env["RAGDOCK_API_DOCS"] == "false"
    assert env["RAGDOCK_METRICS_KEY_LABELS"] == "false"


ANYWHERE = "anywhere"
PROMETHEUS = "prometheus"  # pods labelled app.kubernetes.io/name=prometheus, in any namespace
# What NetworkPolicies admit to each workload's pods: (source, port).
EXPECTED_INGRESS = {
    "gateway": {(ANYWHERE, 8000)},
    "vllm": {("gateway", 8000), (PROMETHEUS, 8000)},
    "qdrant": {
        ("gateway", 6333), ("gateway", 6334), (PROMETHEUS, 6333),
        ("qdrant", 6333), ("qdrant", 6334), ("qdrant", 6335),
    },
    "postgres": {("gateway", 5432)},
}  # fmt: skip


def _workloads(docs: list[Manifest]) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}}


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # matchExpressions are not evaluated here
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def _source(peer: Manifest, pods: dict[str, dict[str, str]]) -> str:
    """The workload (or Prometheus) a NetworkPolicy peer admits; anything wider fails."""
    assert set(peer) <= {"podSelector", "namespaceSelector"}, peer  # no ipBlock
    if "namespaceSelector" in peer:
        # Other namespaces: only Prometheus, by a label no workload of ragdock carries.
        assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": PROMETHEUS}}
        assert not [n for n, labels in pods.items() if _selects(peer["podSelector"], labels)]
        return PROMETHEUS
    (matched,) = [n for n, labels in pods.items() if _selects(peer["podSelector"], labels)]
    return matched


def _ingress(docs: list[Manifest], workload: Manifest) -> set[tuple[str, int]]:
    pods = {n: w["spec"]["template"]["metadata"]["labels"] for n, w in _workloads(docs).items()}
    labels = workload["spec"]["template"]["metadata"]["labels"]
    named_ports = {p["name"]: p["containerPort"] for p in _container(workload)["ports"]}
    admitted = set()
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        if not _selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            sources = [_source(peer, pods) for peer in rule.get("from", [])] or [ANYWHERE]
            assert rule.get("ports"), policy["metadata"]  # a rule without ports admits them all
            for port in rule["ports"]:
                assert port.get("protocol", "TCP") == "TCP" and "endPort" not in port
                number = named_ports.get(port["port"], port["port"])
                admitted |= {(source, number) for source in sources}
    return admitted


def test_a_default_deny_policy_isolates_every_pod(overlay: tuple[str, list[Manifest]]) -> None:
    _, docs = overlay
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    (deny,) = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress"]
    assert not deny["spec"].get("ingress")
    # Ingress only: egress (DNS, the gateways' connections out) is left alone.
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in policies)
    # Every other policy selects pods that exist.
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in _workloads(docs).values()]
    for policy in policies:
        assert any(_selects(policy["spec"]["podSelector"], labels) for labels in pods)


@pytest.mark.parametrize("backend", ["qdrant", "vllm", "postgres"])
def test_only_the_gateway_reaches_the_backends(
    overlay: tuple[str, list[Manifest]], backend: str
) -> None:
    _, docs = overlay
    workload = _workloads(docs)[backend]
    admitted = _ingress(docs, workload)
    assert admitted == EXPECTED_INGRESS[backend]
    # The gateway reaches every port of the backend's Service (what it connects to).
    service = _one(docs, "Service", backend)
    named_ports = {p["name"]: p["containerPort"] for p in _container(workload)["ports"]}
    for port in service["spec"]["ports"]:
        assert ("gateway", named_ports.get(port["targetPort"], port["targetPort"])) in admitted
    # Anything else is a scrape of the metrics port or (Qdrant) a peer.
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    scraped = {p for s, p in admitted if s == PROMETHEUS}
    if annotations["prometheus.io/scrape"] == "true":
        assert scraped == {int(annotations["prometheus.io/port"])}
    else:
        assert scraped == set()
    assert {s for s, _ in admitted} <= {"gateway", PROMETHEUS, backend}
    peers = {p for s, p in admitted if s == backend}
    assert peers == ({6333, 6334, 6335} if backend == "qdrant" else set())


def test_the_gateway_api_is_open_to_clients(overlay: tuple[str, list[Manifest]]) -> None:
    _, docs = overlay
    gateway = _workloads(docs)["gateway"]
    assert _ingress(docs, gateway) == EXPECTED_INGRESS["gateway"]
    service = _one(docs, "Service", "gateway")
    assert [p["port"] for p in service["spec"]["ports"]] == [8000]
