"""The simulated Bedrock runtime over real HTTP: SigV4 checked for real, Converse validated as
the service does, ConverseStream framed as the AWS event stream (decoded by botocore)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from .bedrock_wire import ACCESS_KEY, SECRET_KEY, encode_event, exception_event
from .server import RunningSimulator


def _signed(
    url: str, body: bytes, secret: str = SECRET_KEY, key: str = ACCESS_KEY
) -> dict[str, str]:
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"content-type": "application/json"}
    )
    SigV4Auth(Credentials(key, secret), "bedrock", "us-east-1").add_auth(request)
    return dict(request.headers.items())


async def _post(
    client: httpx.AsyncClient,
    running: RunningSimulator,
    model: str,
    action: str,
    body: Any,
    **sign: str,
) -> httpx.Response:
    url = f"{running.base_url('bedrock')}/model/{quote(model, safe='')}/{action}"
    content = orjson.dumps(body)
    return await client.post(url, content=content, headers=_signed(url, content, **sign))


def _converse(*messages: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": list(messages), **extra}


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


def _frames(raw: bytes) -> list[tuple[dict[str, Any], Any]]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return [(m.headers, orjson.loads(m.payload)) for m in buffer]


def test_encoded_frames_decode_with_botocore() -> None:
    raw = encode_event({":event-type": "messageStart", ":message-type": "event"}, b'{"a":1}')
    raw += exception_event("throttlingException", "slow down")
    (first, second) = _frames(raw[:5] + raw[5:])
    assert first == ({":event-type": "messageStart", ":message-type": "event"}, {"a": 1})
    assert second[0][":exception-type"] == "throttlingException"
    assert second[1] == {"message": "slow down"}


async def test_converse_answers_and_counts_like_openai(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    r = await _post(client, running, "amazon.nova-pro-v1:0", "converse", _converse(_user("a b c")))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"]["message"] == {"role": "assistant", "content": [{"text": "Echo: a b c"}]}
    assert body["stopReason"] == "end_turn"
    assert body["usage"] == {"inputTokens": 6, "outputTokens": 4, "totalTokens": 10}


async def test_converse_stream_is_an_aws_event_stream(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    r = await _post(
        client, running, "anthropic.claude-sonnet-5", "converse-stream", _converse(_user("x y"))
    )
    assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
    frames = _frames(r.content)
    kinds = [h[":event-type"] for h, _ in frames]
    assert kinds[0] == "messageStart"
    assert kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(p["delta"]["text"] for h, p in frames if h[":event-type"] == "contentBlockDelta")
    assert text == "Echo: x y"
    assert frames[-1][1]["usage"]["outputTokens"] == 3


async def test_stream_exception_directive(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    body = _converse(_user('a #sim{"stream_exception": "modelStreamErrorException"}'))
    r = await _post(client, running, "amazon.nova-pro-v1:0", "converse-stream", body)
    frames = _frames(r.content)
    assert frames[-1][0][":message-type"] == "exception"
    assert frames[-1][0][":exception-type"] == "modelStreamErrorException"


@pytest.mark.parametrize(
    ("sign", "kind"),
    [
        ({"secret": "wrong"}, "InvalidSignatureException"),
        ({"key": "AKIDSOMEONEELSE"}, "UnrecognizedClientException"),
    ],
)
async def test_signature_is_checked(
    running: RunningSimulator, client: httpx.AsyncClient, sign: dict[str, str], kind: str
) -> None:
    r = await _post(
        client, running, "amazon.nova-pro-v1:0", "converse", _converse(_user("a")), **sign
    )
    assert r.status_code == 403
    assert r.headers["x-amzn-errortype"] == kind


async def test_a_tampered_body_breaks_the_signature(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    url = f"{running.base_url('bedrock')}/model/amazon.nova-pro-v1%3A0/converse"
    headers = _signed(url, orjson.dumps(_converse(_user("a"))))
    r = await client.post(url, content=orjson.dumps(_converse(_user("b"))), headers=headers)
    assert r.status_code == 403
    assert "signature we calculated does not match" in r.json()["message"]


async def test_unsigned_requests_are_refused(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    url = f"{running.base_url('bedrock')}/model/amazon.nova-pro-v1%3A0/converse"
    r = await client.post(url, json=_converse(_user("a")))
    assert r.status_code == 403
    assert r.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"


USE = {"toolUse": {"toolUseId": "tooluse_1", "name": "f", "input": {}}}
RESULT = {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "ok"}]}}
TOOLS = {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "messages field is required"),
        (_converse({"role": "assistant", "content": [{"text": "a"}]}), "start with a user"),
        (_converse(_user("a"), _user("b")), "alternate between user and assistant"),
        (_converse(_user(" ")), "is blank"),
        (
            _converse(
                _user("a"),
                {"role": "assistant", "content": [USE]},
                {"role": "user", "content": [RESULT]},
            ),
            "toolConfig field must be defined",
        ),
        (
            _converse(
                _user("a"),
                {"role": "assistant", "content": [{"text": "no tools"}]},
                {"role": "user", "content": [RESULT]},
                toolConfig=TOOLS,
            ),
            "must answer the toolUse blocks",
        ),
        (_converse(_user("a"), inferenceConfig={"temperature": 1.5}), "between 0 and 1"),
        (_converse(_user("a"), stream=True), "unknown fields: stream"),
        (
            _converse(_user("a"), toolConfig={"tools": [], "toolChoice": {"auto": {}}}),
            "at least one tool",
        ),
    ],
)
async def test_converse_validation(
    running: RunningSimulator, client: httpx.AsyncClient, body: Any, message: str
) -> None:
    r = await _post(client, running, "anthropic.claude-sonnet-5", "converse", body)
    assert r.status_code == 400
    assert r.headers["x-amzn-errortype"] == "ValidationException"
    assert message in r.json()["message"]


async def test_a_tool_round_trip_is_accepted(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    body = _converse(
        _user("go"),
        {"role": "assistant", "content": [USE]},
        {"role": "user", "content": [RESULT]},
        toolConfig=TOOLS,
    )
    r = await _post(client, running, "anthropic.claude-sonnet-5", "converse", body)
    assert r.status_code == 200, r.text
    assert r.json()["output"]["message"]["content"] == [{"text": "Echo: go"}]


async def test_status_directive_is_a_bedrock_error(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    r = await _post(
        client,
        running,
        "amazon.nova-pro-v1:0",
        "converse",
        _converse(_user('a #sim{"status": 429}')),
    )
    assert r.status_code == 429
    assert r.headers["x-amzn-errortype"] == "ThrottlingException"
    assert r.headers["retry-after"] == "1"
    assert set(r.json()) == {"message"}


async def test_titan_and_cohere_embeddings(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    r = await _post(client, running, "amazon.titan-embed-text-v2:0", "invoke", {"inputText": "a b"})
    assert r.status_code == 200, r.text
    assert len(r.json()["embedding"]) == 1024
    assert r.json()["inputTextTokenCount"] == 2
    r = await _post(
        client,
        running,
        "cohere.embed-v4:0",
        "invoke",
        {"texts": ["a", "b c"], "input_type": "search_query", "embedding_types": ["float"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["response_type"] == "embeddings_by_type"
    assert [len(v) for v in r.json()["embeddings"]["float"]] == [1536, 1536]
    assert r.headers["x-amzn-bedrock-input-token-count"] == "3"
    r = await _post(
        client, running, "amazon.titan-embed-text-v2:0", "invoke", {"inputText": "a", "x": 1}
    )
    assert r.status_code == 400
    assert "extraneous key [x]" in r.json()["message"]
