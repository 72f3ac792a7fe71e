"""An async HTTP client for a set of OpenAI-compatible `vllm serve` replicas.

Each server gets at most `concurrency` requests in flight; a request goes to the server with the fewest in
flight (ties: the one that was sent fewer requests), so a slow or busy replica gets less. Connection errors,
timeouts, 5xx and 429 are retried with exponential backoff (429: the server's `Retry-After` when it gives
one), on another server when there is one; after `retries` further attempts the request fails with kind
`server`, which a rerun redoes. Any other 4xx is the request's own fault (e.g. audio the model rejects) and
fails at once with kind `engine`, as the offline engine's refusals do.

The API key is read from an environment variable and sent as a bearer token only; URLs are shown without any
user:password part.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from speechlm_batch.errors import UsageError
from speechlm_batch.server_requests import TRANSCRIPTION_PATH, HttpRequest, Reply, parse_reply
from speechlm_batch.settings import ServerSettings
from speechlm_batch.types import ErrorKind

PROBE_TIMEOUT_S = 10.0  # /v1/models, /version, /openapi.json before the first row
CONNECT_TIMEOUT_S = 10.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
RETRY_AFTER_MAX_S = 30.0
RETRY_STATUS = frozenset({408, 429})  # plus every 5xx
ERROR_BODY_CHARS = 300


class ServerError(UsageError):
    """A server that cannot take this job: bad URL, unreachable, wrong model, refused key. Before any row."""


def normalize_url(url: str) -> str:
    """`http(s)://host[:port][/prefix]` without a trailing `/` or `/v1` (the paths this client adds start there)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(
            f"--server {redact(url)!r} is not an http(s) URL",
            hint="give the server's base URL, e.g. --server http://gpu-node-3:8000",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as e:
        raise ServerError(f"--server {redact(url)!r}: {e}", hint="e.g. --server http://127.0.0.1:8000") from e
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def redact(url: str) -> str:
    """The URL without user:password@ (never shown or written)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def api_key(settings: ServerSettings, environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(settings.api_key_env, "")
    return value or None


def backoff_s(attempt: int, retry_after: str | None = None) -> float:
    """Seconds to wait before retry `attempt` (1-based): the server's Retry-After, else 0.5, 1, 2, ... 8."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), RETRY_AFTER_MAX_S)
        except ValueError:
            pass
    return min(BACKOFF_FIRST_S * 2 ** (attempt - 1), BACKOFF_MAX_S)


@dataclass(frozen=True)
class ServerInfo:
    """What a server said about itself before the first row."""

    url: str  # normalized, as requests are sent
    model: str
    max_model_len: int | None
    version: str | None
    transcription: bool | None  # it has /v1/audio/transcriptions (None: it did not say)

    def describe(self) -> dict[str, Any]:
        return {"url": redact(self.url), "model": self.model, "max_model_len": self.max_model_len,
                "vllm": self.version}


@dataclass(frozen=True)
class Outcome:
    """One request's end: a reply, or an error with its kind; latency of the successful attempt only."""

    reply: Reply | None
    error: str | None = None
    error_kind: ErrorKind | None = None
    latency_s: float | None = None
    attempts: int = 1
    server: str = ""


@dataclass
class _Server:
    url: str
    in_flight: int = 0
    sent: int = 0


@dataclass
class Counters:
    """Totals over the run, for the report's `serving` block."""

    latencies_s: list[float] = field(default_factory=list)
    failed: int = 0
    retries: int = 0
    per_server: dict[str, int] = field(default_factory=dict)


class ServerPool:
    """Requests spread over `urls`, at most `concurrency` in flight on each. Use inside one event loop."""

    def __init__(
        self, urls: Sequence[str], settings: ServerSettings, key: str | None,
        transport: httpx.AsyncBaseTransport | None = None,  # tests hand in an httpx.MockTransport
    ) -> None:
        self.settings = settings
        self._transport = transport
        self.servers = [_Server(u) for u in urls]
        self.counters = Counters(per_server={redact(u): 0 for u in urls})
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._cond: asyncio.Condition | None = None
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> ServerPool:
        seconds = self.settings.request_timeout_s
        timeout = httpx.Timeout(seconds, connect=min(CONNECT_TIMEOUT_S, seconds))
        limits = httpx.Limits(max_connections=self.settings.concurrency * len(self.servers) + len(self.servers))
        self._client = httpx.AsyncClient(
            timeout=timeout, limits=limits, headers=self._headers, transport=self._transport
        )
        self._cond = asyncio.Condition()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def probe(self, model: str) -> list[ServerInfo]:
        """Ask every server for its models before the first row; ServerError names what is wrong."""
        return list(await asyncio.gather(*(self._probe_one(s.url, model) for s in self.servers)))

    async def send(self, request: HttpRequest) -> Outcome:
        """POST `request` to the least-loaded server, retrying as the module docstring says."""
        last, avoid = "", None
        attempts = self.settings.retries + 1
        retry_after: str | None = None
        for attempt in range(attempts):
            if attempt:
                self.counters.retries += 1
                await asyncio.sleep(backoff_s(attempt, retry_after))
            server = await self._acquire(avoid)
            start = time.perf_counter()
            try:
                response = await self._client.post(server.url + request.path, **_body(request))
            except httpx.TimeoutException:
                last, retry_after = f"no answer within {self.settings.request_timeout_s:g} s", None
            except httpx.TransportError as e:
                last, retry_after = f"{type(e).__name__}: {e or 'connection failed'}", None
            else:
                latency = time.perf_counter() - start
                outcome = self._read(request, response, latency, attempt + 1, server.url)
                if outcome is not None:
                    return outcome
                last, retry_after = _status_text(response), response.headers.get("retry-after")
            finally:
                await self._release(server)
            avoid = server
        self.counters.failed += 1
        message = f"{redact(avoid.url) if avoid else 'server'}: {last} (after {attempts} attempt{'s' * (attempts > 1)})"
        return Outcome(None, message, ErrorKind.SERVER, attempts=attempts)

    def _read(
        self, request: HttpRequest, response: httpx.Response, latency: float, attempt: int, url: str
    ) -> Outcome | None:
        """The outcome of an answered attempt; None when it should be retried."""
        if response.status_code >= 500 or response.status_code in RETRY_STATUS:
            return None
        if response.status_code != 200:
            self.counters.failed += 1
            return Outcome(None, f"{redact(url)}: {_status_text(response)}", ErrorKind.ENGINE, attempts=attempt)
        try:
            reply = parse_reply(request.path, response.json())
        except ValueError as e:  # a proxy's HTML page, or another API behind the URL
            self.counters.failed += 1
            return Outcome(None, f"{redact(url)}: {e}", ErrorKind.SERVER, attempts=attempt)
        self.counters.latencies_s.append(latency)
        self.counters.per_server[redact(url)] = self.counters.per_server.get(redact(url), 0) + 1
        return Outcome(reply, latency_s=latency, attempts=attempt, server=redact(url))

    async def _acquire(self, avoid: _Server | None) -> _Server:
        limit = self.settings.concurrency
        async with self._cond:
            def free() -> list[_Server]:
                open_ = [s for s in self.servers if s.in_flight < limit]
                others = [s for s in open_ if s is not avoid]
                return others or open_  # a retry goes elsewhere when another server has room

            await self._cond.wait_for(lambda: bool(free()))
            server = min(free(), key=lambda s: (s.in_flight, s.sent))
            server.in_flight += 1
            server.sent += 1
            return server

    async def _release(self, server: _Server) -> None:
        async with self._cond:
            server.in_flight -= 1
            self._cond.notify_all()

    async def _probe_one(self, url: str, model: str) -> ServerInfo:
        shown = redact(url)
        try:
            response = await self._client.get(url + "/v1/models", timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError as e:
            raise ServerError(
                f"{shown} is unreachable: {type(e).__name__}: {e or 'connection failed'}",
                hint="check the URL and that `vllm serve` is up there (curl URL/v1/models), or use --launch-server",
            ) from e
        if response.status_code in (401, 403):
            raise ServerError(
                f"{shown} refused the API key (HTTP {response.status_code})",
                hint=f"put the server's key in ${self.settings.api_key_env} (--api-key-env names another variable)",
            )
        served = _served_models(response)
        if served is None:
            raise ServerError(
                f"{shown}/v1/models: {_status_text(response)}", hint="is this an OpenAI-compatible server?"
            )
        if model not in served:
            raise ServerError(
                f"{shown} serves {', '.join(sorted(served)) or 'no model'}, not {model!r}",
                hint="--model must be the served model name (vllm serve --served-model-name)",
            )
        return ServerInfo(url, model, served[model], await self._version(url), await self._has_transcription(url))

    async def _version(self, url: str) -> str | None:
        try:
            response = await self._client.get(url + "/version", timeout=PROBE_TIMEOUT_S)
            return str(response.json().get("version")) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None

    async def _has_transcription(self, url: str) -> bool | None:
        """vLLM adds the transcription route only for models that support it; its OpenAPI schema lists it."""
        try:
            response = await self._client.get(url + "/openapi.json", timeout=PROBE_TIMEOUT_S)
            paths = response.json().get("paths") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return None if not isinstance(paths, Mapping) else TRANSCRIPTION_PATH in paths


def _served_models(response: httpx.Response) -> dict[str, int | None] | None:
    """Model id -> max_model_len (vLLM adds it to each model card), or None when this is no /v1/models answer."""
    if response.status_code != 200:
        return None
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        return None
    if not isinstance(data, list):
        return None
    found: dict[str, int | None] = {}
    for card in data:
        if isinstance(card, Mapping) and isinstance(card.get("id"), str):
            length = card.get("max_model_len")
            found[card["id"]] = int(length) if isinstance(length, int) else None
    return found


def _body(request: HttpRequest) -> dict[str, Any]:
    if request.json is not None:
        return {"json": request.json}
    return {"data": dict(request.data), "files": dict(request.files)}


def _status_text(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return f"HTTP {response.status_code}: {text[:ERROR_BODY_CHARS]}" if text else f"HTTP {response.status_code}"
