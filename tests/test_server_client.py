"""server_client: URLs, backoff, probing and the retry / spread logic, against httpx.MockTransport servers."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from speechlm_batch import server_client
from speechlm_batch.server_client import ServerError, ServerPool, api_key, backoff_s, normalize_url, redact
from speechlm_batch.server_requests import CHAT_PATH, TRANSCRIPTION_PATH, HttpRequest
from speechlm_batch.settings import ServerSettings
from speechlm_batch.types import ErrorKind

A, B = "http://a:8000", "http://b:8000"
TRANSCRIBE = HttpRequest(TRANSCRIPTION_PATH, data={"model": "m"}, files={"file": ("a.wav", b"RIFF", "audio/wav")})


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(server_client, "BACKOFF_FIRST_S", 0.0)


def run_pool(urls, handler, request=TRANSCRIBE, count=1, key=None, **settings):
    """Send `count` requests through a pool whose servers answer with `handler`; returns outcomes and pool."""
    pool = ServerPool(urls, ServerSettings(**settings), key, transport=httpx.MockTransport(handler))

    async def go():
        async with pool:
            return await asyncio.gather(*(pool.send(request) for _ in range(count)))

    return asyncio.run(go()), pool


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://node:8000", "http://node:8000"),
        ("http://node:8000/", "http://node:8000"),
        ("http://node:8000/v1", "http://node:8000"),
        ("https://lb.example/asr/v1/", "https://lb.example/asr"),
    ],
)
def test_normalize_url(given, expected):
    assert normalize_url(given) == expected


@pytest.mark.parametrize("bad", ["node:8000", "ftp://node", "http://", "http://node:port"])
def test_bad_urls_are_usage_errors(bad):
    with pytest.raises(ServerError):
        normalize_url(bad)


def test_redact_drops_credentials():
    assert redact("http://user:secret@node:8000/v1") == "http://node:8000/v1"
    assert redact("http://node:8000") == "http://node:8000"


def test_api_key_from_named_variable():
    settings = ServerSettings(api_key_env="MY_KEY")
    assert api_key(settings, {"MY_KEY": "k1", "OPENAI_API_KEY": "other"}) == "k1"
    assert api_key(settings, {"MY_KEY": ""}) is None


def test_backoff_grows_caps_and_honours_retry_after(monkeypatch):
    monkeypatch.setattr(server_client, "BACKOFF_FIRST_S", 0.5)
    assert [backoff_s(a) for a in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, server_client.BACKOFF_MAX_S]
    assert backoff_s(1, "3") == 3.0
    assert backoff_s(1, "999") == server_client.RETRY_AFTER_MAX_S
    assert backoff_s(2, "soon") == 1.0


def test_retries_5xx_then_succeeds_and_sends_the_key():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if len(seen) < 3:
            return httpx.Response(503, text="overloaded")
        return httpx.Response(200, json={"text": " hello"})

    (outcome,), pool = run_pool([A], handler, key="sk-test", retries=3)
    assert outcome.reply.text == " hello" and outcome.attempts == 3
    assert seen == ["Bearer sk-test"] * 3
    assert pool.counters.retries == 2 and len(pool.counters.latencies_s) == 1


def test_gives_up_with_kind_server_after_retries():
    calls = []

    def handler(request):
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    (outcome,), pool = run_pool([A], handler, retries=2)
    assert outcome.reply is None and outcome.error_kind is ErrorKind.SERVER
    assert "after 3 attempts" in outcome.error and len(calls) == 3
    assert pool.counters.failed == 1


def test_429_is_retried_but_400_fails_at_once_as_engine():
    answers = iter([httpx.Response(429), httpx.Response(400, json={"error": "bad audio"})])
    (outcome,), _ = run_pool([A], lambda request: next(answers), retries=3)
    assert outcome.error_kind is ErrorKind.ENGINE and "HTTP 400" in outcome.error and outcome.attempts == 2


def test_a_retry_goes_to_the_other_server():
    hosts = []

    def handler(request):
        hosts.append(request.url.host)
        if request.url.host == "a":
            raise httpx.ConnectError("down", request=request)
        return httpx.Response(200, json={"text": "ok"})

    outcomes, _ = run_pool([A, B], handler, count=4, retries=1, concurrency=4)
    assert all(o.reply is not None for o in outcomes)
    assert all(o.server == B for o in outcomes)
    assert hosts.count("a") <= 2  # at most the first pick of each of the two first requests


def test_concurrency_bounds_in_flight_per_server_and_spreads_load():
    in_flight = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}

    async def handler(request):
        host = request.url.host
        in_flight[host] += 1
        peak[host] = max(peak[host], in_flight[host])
        await asyncio.sleep(0.01)
        in_flight[host] -= 1
        return httpx.Response(200, json={"text": "x"})

    outcomes, pool = run_pool([A, B], handler, count=20, concurrency=2)
    assert all(o.reply for o in outcomes)
    assert peak == {"a": 2, "b": 2}
    assert pool.counters.per_server == {A: 10, B: 10}


def test_chat_reply_and_prompt_tokens():
    body = {"choices": [{"message": {"content": "hi there"}}], "usage": {"prompt_tokens": 42}}
    request = HttpRequest(CHAT_PATH, json={"model": "m"})
    seen = []

    def handler(req):
        seen.append(json.loads(req.content))
        return httpx.Response(200, json=body)

    (outcome,), _ = run_pool([A], handler, request=request)
    assert outcome.reply.text == "hi there" and outcome.reply.prompt_tokens == 42 and seen == [{"model": "m"}]


def _probe(handler, model="whisper-base", urls=(A,)):
    pool = ServerPool(list(urls), ServerSettings(), None, transport=httpx.MockTransport(handler))

    async def go():
        async with pool:
            return await pool.probe(model)

    return asyncio.run(go())


def _vllm(request):
    if request.url.path == "/v1/models":
        return httpx.Response(200, json={"data": [{"id": "whisper-base", "max_model_len": 448}]})
    if request.url.path == "/version":
        return httpx.Response(200, json={"version": "0.32.0"})
    if request.url.path == "/openapi.json":
        return httpx.Response(200, json={"paths": {TRANSCRIPTION_PATH: {}, "/health": {}}})
    return httpx.Response(404)


def test_probe_reads_models_version_and_routes():
    (info,) = _probe(_vllm)
    assert (info.model, info.max_model_len, info.version, info.transcription) == ("whisper-base", 448, "0.32.0", True)


def test_probe_wrong_model_names_what_is_served():
    with pytest.raises(ServerError, match="serves whisper-base, not 'whisper-huge'"):
        _probe(_vllm, model="whisper-huge")


def test_probe_unreachable_and_refused_key():
    def down(request):
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ServerError, match="is unreachable"):
        _probe(down)
    with pytest.raises(ServerError, match="refused the API key"):
        _probe(lambda request: httpx.Response(401))
    with pytest.raises(ServerError, match="/v1/models: HTTP 200: <html>proxy") as refused:
        _probe(lambda request: httpx.Response(200, text="<html>proxy</html>"))
    assert "OpenAI-compatible" in refused.value.hint
