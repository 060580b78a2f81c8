from __future__ import annotations

import json

from server.engine_client import EngineReply
from server.relay.engine_call import engine_error_response


def test_vllm_error_is_rewritten_in_openai_shape() -> None:
    vllm_body = {
        "error": {
            "message": "max_tokens too big",
            "type": "BadRequestError",
            "param": "max_tokens",
            "code": 400,
        }
    }
    reply = engine_error_response(
        EngineReply(400, json.dumps(vllm_body).encode(), "application/json")
    )
    assert reply.status_code == 400
    assert json.loads(reply.body) == {
        "error": {
            "message": "max_tokens too big",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": None,
        }
    }


def test_non_json_engine_error_is_wrapped() -> None:
    reply = engine_error_response(EngineReply(502, b"<html>bad gateway</html>", "text/html"))
    error = json.loads(reply.body)["error"]
    assert reply.status_code == 502
    assert error["type"] == "server_error"
    assert "bad gateway" in error["message"]
