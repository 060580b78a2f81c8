"""Hostile adapter files get an OpenAI-shaped 400 naming the problem, never a 500: each case
uploads one damaged file beside otherwise good ones through the real upload route."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from tests.unit.gateway_app import TEST_API_KEY, build_test_app, gateway_client
from tests.unit.test_adapter_registry import LAYER, make_adapter

WEIGHTS = "adapter_model.safetensors"
A, B = f"{LAYER}.q_proj.lora_A.weight", f"{LAYER}.q_proj.lora_B.weight"
A_BYTES, B_BYTES = 8 * 640 * 4, 1024 * 8 * 4  # F32 [8, 640] and [1024, 8]
DEEP = 100_000  # far past the depth Python's JSON parser recurses to


def good_header() -> dict[str, Any]:
    return {
        A: {"dtype": "F32", "shape": [8, 640], "data_offsets": [0, A_BYTES]},
        B: {"dtype": "F32", "shape": [1024, 8], "data_offsets": [A_BYTES, A_BYTES + B_BYTES]},
    }


def safetensors(header: dict[str, Any] | bytes, *, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    prefix = struct.pack("<Q", len(raw) if length is None else length)
    return prefix + raw + bytes(A_BYTES + B_BYTES)


def with_entry(name: str, entry: object) -> bytes:
    return safetensors({**good_header(), name: entry})


def changed(tensor: str, **fields: object) -> bytes:
    header = good_header()
    header[tensor] = {**header[tensor], **fields}
    return safetensors(header)


def config(**fields: object) -> bytes:
    base = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
            "base_model_name_or_path": "/models/gemma-3-270m"}  # fmt: skip
    return json.dumps({**base, **fields}).encode()


# (case, file replaced or added, its bytes, a word the message must contain)
CASES: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("header nested deep", WEIGHTS, lambda: safetensors(b"[" * DEEP + b"]" * DEEP), "deep"),
    ("tensor nested deep", WEIGHTS,
     lambda: safetensors(b'{"x": ' + b"[" * DEEP + b"]" * DEEP + b"}"), "deep"),
    ("tensor entry a number", WEIGHTS, lambda: with_entry(f"{LAYER}.k_proj.lora_A.weight", 5),
     "not an object"),
    ("tensor entry a list", WEIGHTS, lambda: with_entry(A, [1, 2]), "not an object"),
    ("tensor entry a string", WEIGHTS, lambda: with_entry(A, "F32"), "not an object"),
    ("header a list", WEIGHTS, lambda: safetensors(b"[]"), "safetensors"),
    ("header length 2**63", WEIGHTS, lambda: safetensors(good_header(), length=2**63), "header"),
    ("header longer than the file", WEIGHTS, lambda: safetensors(good_header(), length=10**6),
     "header"),
    ("header not UTF-8", WEIGHTS, lambda: safetensors(b"\xff\xfe{}"), "safetensors"),
    ("unknown dtype", WEIGHTS, lambda: changed(A, dtype="F33"), "dtype"),
    ("dtype not a string", WEIGHTS, lambda: changed(A, dtype={"x": 1}), "dtype"),
    ("shape a number", WEIGHTS, lambda: changed(A, shape=8), "shape"),
    ("negative dimension", WEIGHTS, lambda: changed(A, shape=[-8, 640]), "shape"),
    ("dimension a string", WEIGHTS, lambda: changed(A, shape=["8", 640]), "shape"),
    ("offsets past the file", WEIGHTS, lambda: changed(A, data_offsets=[0, 10**9]),
     "data_offsets"),
    ("offsets reversed", WEIGHTS, lambda: changed(A, data_offsets=[A_BYTES, 0]),
     "data_offsets"),
    ("offsets missing", WEIGHTS, lambda: changed(A, data_offsets=None), "data_offsets"),
    ("offsets not the shape's size", WEIGHTS, lambda: changed(A, shape=[16, 640]), "data bytes"),
    ("metadata not strings", WEIGHTS,
     lambda: safetensors({"__metadata__": {"format": 1}, **good_header()}), "__metadata__"),
    ("config nested deep", "adapter_config.json", lambda: b"[" * DEEP + b"]" * DEEP, "deep"),
    ("config not UTF-8", "adapter_config.json", lambda: b"\xff\xfe", "parse"),
    ("rank_pattern a list", "adapter_config.json", lambda: config(rank_pattern=[4]),
     "rank_pattern"),
    ("rank_pattern of strings", "adapter_config.json",
     lambda: config(rank_pattern={"q_proj": "4"}), "rank_pattern"),
    ("lora_alpha a string", "adapter_config.json", lambda: config(lora_alpha="x"), "lora_alpha"),
    ("r a boolean", "adapter_config.json", lambda: config(r=True), "r must"),
    ("manifest nested deep", "manifest.json", lambda: b"[" * DEEP + b"]" * DEEP, "deep"),
    ("eval report nested deep", "eval_report.json", lambda: b"[" * DEEP + b"]" * DEEP, "deep"),
    ("eval report not UTF-8", "eval_report.json", lambda: b"\xff\xfe", "parse"),
]  # fmt: skip


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    app = build_test_app(tmp_path_factory.mktemp("adapter-files"))
    yield app
    app.state.document_service.retriever.close()


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    adapter = make_adapter(tmp_path_factory.mktemp("good") / "lora")
    return {p.name: p.read_bytes() for p in adapter.iterdir()}


def upload(app: FastAPI, name: str, files: dict[str, bytes]) -> Any:
    parts = [("files", (filename, content)) for filename, content in sorted(files.items())]
    return gateway_client(app, TEST_API_KEY).post(
        "/v1/adapters/upload", files=parts, data={"name": name}
    )


def test_the_good_files_are_accepted(app: FastAPI, good_files: dict[str, bytes]) -> None:
    reply = upload(app, "good", {**good_files, WEIGHTS: safetensors(good_header())})
    assert reply.status_code == 201, reply.text


@pytest.mark.parametrize(("case", "filename", "content", "word"), CASES, ids=[c[0] for c in CASES])
def test_a_malformed_file_is_a_400_naming_it(
    app: FastAPI,
    good_files: dict[str, bytes],
    case: str,
    filename: str,
    content: Callable[[], bytes],
    word: str,
) -> None:
    reply = upload(app, "bad", {**good_files, filename: content()})
    assert reply.status_code == 400, (case, reply.status_code, reply.text[:300])
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert word in error["message"], error["message"]
    assert len(error["message"]) < 600, "the message must not echo the hostile file"
