"""Adapters on the live engine: push, serve without restart, promote/rollback, hot-swap under load,
refusal of invalid adapters, LRU eviction, audit log and per-adapter metrics. Real adapters, trained
with peft on the real Gemma 3 270M by the `trained_adapters` fixture."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from safetensors.torch import load_file, save_file

from tests import contract_samples as samples
from tests.conftest import ALPHA_REPLY, BRAVO_REPLY, WHO
from tests.support import CHAT_ONLY_KEY, TEST_API_KEY, GatewayProcess, gateway_metrics

pytestmark = pytest.mark.e2e


def passing(name: str, version: str) -> dict[str, Any]:
    """A report the platform measured (signed) for name@version, passing the platform's gate."""
    return samples.eval_report(True, name=name, version=version, rule="test")


class Admin:
    """The admin API, as the CLI calls it."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.http = httpx.Client(
            base_url=gateway.api_base,
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
            timeout=120,
        )

    def push(self, directory: Path, name: str, version: str | None = None) -> httpx.Response:
        files = [
            ("files", (p.name, p.read_bytes())) for p in sorted(directory.iterdir()) if p.is_file()
        ]
        data = {"name": name, **({"version": version} if version else {})}
        return self.http.post("/adapters/upload", files=files, data=data)

    def report(self, name: str, version: str, report: dict[str, Any]) -> httpx.Response:
        return self.http.put(f"/adapters/{name}/{version}/eval-report", json=report)

    def promote(
        self, name: str, version: str, alias: str = "prod", force: bool = False
    ) -> httpx.Response:
        return self.http.post(
            f"/adapters/{name}/{version}/promote", json={"alias": alias, "force": force}
        )

    def rollback(self, name: str, alias: str = "prod") -> httpx.Response:
        return self.http.post(f"/adapters/{name}/rollback", json={"alias": alias})

    def ready(self, directory: Path, name: str, version: str) -> None:
        """Push with a passing eval report, ready to promote."""
        assert self.push(directory, name, version).status_code == 201
        assert self.report(name, version, passing(name, version)).status_code == 200


@pytest.fixture
def admin(gateway: GatewayProcess) -> Admin:
    return Admin(gateway)


def ask(client: openai.OpenAI, model: str) -> str:
    out = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": WHO}], max_tokens=16, temperature=0
    )
    return out.choices[0].message.content or ""


def metric(gateway: GatewayProcess, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = gateway_metrics(gateway.url)
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_pushed_adapter_answers_as_trained_and_the_base_is_unchanged(
    client: openai.OpenAI, admin: Admin, trained_adapters: dict[str, Path]
) -> None:
    base_before = ask(client, "gemma")
    reply = admin.push(trained_adapters["alpha"], "alpha")
    assert reply.status_code == 201, reply.text
    assert reply.json()["model"] == "alpha@v1"
    assert ask(client, "alpha@v1") == ALPHA_REPLY
    assert ask(client, "gemma") == base_before != ALPHA_REPLY
    ids = {m.id: m for m in client.models.list().data}
    assert ids["alpha@v1"].parent == "gemma"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError):
        ask(client, "alpha")  # no `prod` alias yet


def test_base_and_two_adapters_in_one_concurrent_batch(
    client: openai.OpenAI, admin: Admin, trained_adapters: dict[str, Path]
) -> None:
    admin.push(trained_adapters["alpha"], "mix-a")
    admin.push(trained_adapters["bravo"], "mix-b")
    expected = {"mix-a@v1": ALPHA_REPLY, "mix-b@v1": BRAVO_REPLY, "gemma": ask(client, "gemma")}
    models = list(expected) * 3
    with ThreadPoolExecutor(len(models)) as pool:
        answers = list(pool.map(lambda m: ask(client, m), models))
    assert answers == [expected[m] for m in models]


def test_base_requests_get_no_adapter_when_every_engine_slot_is_full(
    client: openai.OpenAI, admin: Admin, trained_adapters: dict[str, Path]
) -> None:
    # vLLM's own CPU LoRA kernels index the slots with -1 for "no adapter" and so give base
    # requests the adapter in the last slot, once all slots (max_loras = 4) are taken and the
    # batch mixes base and adapter requests. engine/cpu_lora.py leaves base tokens alone.
    models = []
    for i in range(4):
        admin.push(trained_adapters["alpha" if i % 2 == 0 else "bravo"], "full", f"v{i + 1}")
        models.append(f"full@v{i + 1}")
    expected = {m: ALPHA_REPLY if i % 2 == 0 else BRAVO_REPLY for i, m in enumerate(models)}
    for model in models:  # fills the four slots
        assert ask(client, model) == expected[model]
    expected["gemma"] = ask(client, "gemma")
    batch = ["gemma", *models, "gemma"] * 2
    with ThreadPoolExecutor(len(batch)) as pool:
        answers = list(pool.map(lambda m: ask(client, m), batch))
    assert answers == [expected[m] for m in batch]


def test_concurrent_first_requests_trigger_one_load(
    client: openai.OpenAI, admin: Admin, gateway: GatewayProcess, trained_adapters: dict[str, Path]
) -> None:
    admin.push(trained_adapters["bravo"], "once")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: ask(client, "once@v1"), range(6)))
    assert answers == [BRAVO_REPLY] * 6
    assert metric(gateway, "ragdock_adapter_loads_total", adapter="once@v1", result="success") == 1


def test_promotion_needs_a_passing_gate_and_force_is_audited(
    client: openai.OpenAI, admin: Admin, trained_adapters: dict[str, Path]
) -> None:
    admin.push(trained_adapters["alpha"], "gated")
    refused = admin.promote("gated", "v1")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "gate_not_passed"
    # Its own gate says passed; its metrics (measured by the platform) fail the platform's.
    admin.report("gated", "v1", samples.eval_report(True, name="gated", measured=False))
    refused = admin.promote("gated", "v1")
    assert (
        refused.status_code == 409 and "perplexity_increase" in refused.json()["error"]["message"]
    )
    # A report the platform did not measure is evidence only.
    admin.report("gated", "v1", samples.eval_report(True, name="gated", signed=False))
    refused = admin.promote("gated", "v1")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "report_not_verified"
    with pytest.raises(openai.NotFoundError):
        ask(client, "gated")
    forced = admin.promote("gated", "v1", force=True)  # the test key is a platform key
    assert forced.status_code == 200
    assert ask(client, "gated") == ALPHA_REPLY
    audit = admin.http.get("/adapters/gated/audit").json()
    assert [e["action"] for e in audit] == ["push", "eval_report", "eval_report", "promote"]
    assert audit[-1]["detail"]["forced"] is True and audit[-1]["actor"] == "default/admin"


def test_promote_and_rollback_move_the_alias_and_the_answer(
    client: openai.OpenAI, admin: Admin, trained_adapters: dict[str, Path]
) -> None:
    admin.ready(trained_adapters["alpha"], "flip", "v1")
    admin.ready(trained_adapters["bravo"], "flip", "v2")
    assert admin.promote("flip", "v1").json()["version"] == "v1"
    assert ask(client, "flip") == ALPHA_REPLY
    assert admin.promote("flip", "v2").json()["history"] == ["v1"]
    assert ask(client, "flip") == BRAVO_REPLY
    assert ask(client, "flip@prod") == BRAVO_REPLY
    assert admin.rollback("flip").json()["version"] == "v1"
    assert ask(client, "flip") == ALPHA_REPLY
    assert admin.rollback("flip").status_code == 409  # nothing earlier
    deleted = admin.http.delete("/adapters/flip/v1")
    assert deleted.status_code == 409  # prod points at it
    assert admin.http.delete("/adapters/flip/v2").status_code == 204
    actions = [e["action"] for e in admin.http.get("/adapters/flip/audit").json()]
    assert actions.count("promote") == 2 and "rollback" in actions and actions[-1] == "delete"


def test_swapping_under_a_steady_stream_of_requests_loses_none(
    client: openai.OpenAI, admin: Admin, trained_adapters: dict[str, Path]
) -> None:
    admin.ready(trained_adapters["alpha"], "live", "v1")
    admin.ready(trained_adapters["bravo"], "live", "v2")
    admin.promote("live", "v1")
    stop = threading.Event()
    answers: list[str] = []
    errors: list[Exception] = []

    def steady() -> None:
        while not stop.is_set():
            try:
                stream = client.chat.completions.create(
                    model="live", messages=[{"role": "user", "content": WHO}],
                    max_tokens=16, temperature=0, stream=True,
                )  # fmt: skip
                answers.append(
                    "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
                )
            except Exception as exc:  # every failure is a test failure
                errors.append(exc)

    workers = [threading.Thread(target=steady) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for version in ("v2", "v1", "v2"):
            while len(answers) < 3 * (1 + ("v2", "v1", "v2").index(version)):
                stop.wait(0.2)
            assert admin.promote("live", version).status_code == 200
        target = len(answers) + 3
        while len(answers) < target:
            stop.wait(0.2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=120)
    assert not errors
    assert set(answers) <= {ALPHA_REPLY, BRAVO_REPLY}
    assert answers[-1] == BRAVO_REPLY and ALPHA_REPLY in answers


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_config(directory: Path, **changes: Any) -> None:
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _edit_tensors(directory: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = directory / "adapter_model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def _narrow_lora_a(tensors: dict[str, Any]) -> None:
    for key in list(tensors):
        if "lora_A" in key:
            tensors[key] = tensors[key][:, :7].contiguous()  # no longer fits the base's layers


def _add_lm_head(tensors: dict[str, Any]) -> None:
    any_tensor = next(iter(tensors.values()))
    tensors["base_model.model.lm_head.weight"] = any_tensor.clone()


def _rename_to_unsupported(tensors: dict[str, Any]) -> None:
    key = next(iter(tensors))
    tensors[key.replace("q_proj", "rotary_proj").replace("v_proj", "rotary_proj")] = tensors.pop(
        key
    )


INVALID: dict[str, tuple[Callable[[Path], None], str]] = {
    "pickle": (lambda d: (d / "adapter_model.bin").write_bytes(b"\x80\x04pickle"), "pickle"),
    "config-not-json": (
        lambda d: (d / "adapter_config.json").write_text("{oops"),
        "does not parse",
    ),
    "rank-too-high": (lambda d: _edit_config(d, r=64), "max rank 16"),
    "modules-to-save": (lambda d: _edit_config(d, modules_to_save=["lm_head"]), "modules_to_save"),
    "lm-head-weights": (lambda d: _edit_tensors(d, _add_lm_head), "lm_head"),
    "unsupported-module": (lambda d: _edit_tensors(d, _rename_to_unsupported), "not supported"),
    "other-base": (
        lambda d: _edit_config(d, base_model_name_or_path="google/gemma-2-9b"),
        "trained on",
    ),
    "no-weights": (lambda d: (d / "adapter_model.safetensors").unlink(), "missing"),
    # vLLM would load this and answer garbage: the registry checks shapes against the base.
    "wrong-shape": (lambda d: _edit_tensors(d, _narrow_lora_a), "another size"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_adapters_are_refused_and_serving_goes_on(
    case: str,
    client: openai.OpenAI,
    admin: Admin,
    trained_adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    if admin.push(trained_adapters["alpha"], "steady", "v1").status_code == 201:
        admin.report("steady", "v1", passing("steady", "v1"))
        admin.promote("steady", "v1")
    damage, message = INVALID[case]
    bad = _copy(trained_adapters["bravo"], tmp_path / case)
    damage(bad)
    reply = admin.push(bad, "steady")
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert ask(client, "steady") == ALPHA_REPLY


@pytest.mark.parametrize("name", ["../escape", "UPPER", "a/b", ".hidden", ""])
def test_unsafe_names_are_refused(
    name: str, admin: Admin, trained_adapters: dict[str, Path]
) -> None:
    reply = admin.push(trained_adapters["alpha"], name)
    assert reply.status_code in {400, 422} and "error" in reply.json()


def test_a_version_the_engine_refuses_never_displaces_the_serving_one(
    client: openai.OpenAI, admin: Admin, trained_adapters: dict[str, Path],
    gateway: GatewayProcess,
) -> None:  # fmt: skip
    admin.ready(trained_adapters["alpha"], "safe", "v1")
    admin.promote("safe", "v1")
    admin.ready(trained_adapters["bravo"], "safe", "v2")
    # The registry accepted v2; then its weights are damaged on the volume (a storage fault).
    # The volume is the session gateway's RAGDOCK_ADAPTERS_DIR (/v1/models shows no paths).
    adapters_dir = gateway.log_file.parent / "adapters"
    weights = adapters_dir / "safe" / "v2" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    refused = admin.promote("safe", "v2")
    assert refused.status_code >= 500 and refused.json()["error"]["code"] == "adapter_load_failed"
    assert admin.http.get("/adapters/safe").json()["aliases"] == {"prod": "v1"}
    assert ask(client, "safe") == ALPHA_REPLY


def test_least_recently_used_adapters_are_unloaded_past_max_loras(
    client: openai.OpenAI, admin: Admin, gateway: GatewayProcess, trained_adapters: dict[str, Path]
) -> None:
    for i in range(6):  # the engine holds 4
        admin.push(trained_adapters["alpha" if i % 2 == 0 else "bravo"], "lru", f"v{i + 1}")
    for i in range(6):
        assert ask(client, f"lru@v{i + 1}") == (ALPHA_REPLY if i % 2 == 0 else BRAVO_REPLY)
    assert metric(gateway, "ragdock_adapters_loaded") <= 4
    assert metric(gateway, "ragdock_adapter_unloads_total", adapter="lru@v1") == 1
    assert ask(client, "lru@v1") == ALPHA_REPLY  # evicted, loaded again on demand


def test_metrics_are_per_adapter(
    client: openai.OpenAI, admin: Admin, gateway: GatewayProcess, trained_adapters: dict[str, Path]
) -> None:
    admin.push(trained_adapters["bravo"], "metered")
    before = metric(gateway, "ragdock_completion_tokens_total", model="metered@v1")
    assert ask(client, "metered@v1") == BRAVO_REPLY
    list(client.chat.completions.create(
        model="metered@v1", messages=[{"role": "user", "content": WHO}], max_tokens=16,
        temperature=0, stream=True,
    ))  # fmt: skip
    assert metric(gateway, "ragdock_completion_tokens_total", model="metered@v1") > before + 10
    assert metric(gateway, "ragdock_requests_total", model="metered@v1", status="200") == 2
    assert metric(gateway, "ragdock_time_to_first_token_seconds_count", model="metered@v1") == 1
    assert metric(gateway, "ragdock_requests_in_flight", model="metered@v1") == 0


def test_admin_routes_need_the_admin_scope(gateway: GatewayProcess) -> None:
    app = openai.OpenAI(base_url=gateway.api_base, api_key=CHAT_ONLY_KEY, max_retries=0)
    assert ask(app, "gemma")  # the chat scope is enough to chat...
    with pytest.raises(openai.PermissionDeniedError) as caught:  # ...not to administer
        app.get("/adapters", cast_to=object)
    assert caught.value.body["code"] == "missing_scope"
    wrong = httpx.get(f"{gateway.api_base}/adapters", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
