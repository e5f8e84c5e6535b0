"""The one LLM client every stage uses.

AsyncOpenAI against one or more replicas of the same model; a bounded number of requests in
flight per endpoint (the least-loaded endpoint gets the next request); tenacity retries with
jittered exponential backoff only for transient failures; structured output in the server's
dialect and parse-and-validate always; finish_reason == "length" is a failure; token usage per
stage; and the persistent request cache in front of it all.
"""
from __future__ import annotations

import asyncio
import heapq
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

import jsonschema
import openai

try:  # the HTTP library the openai SDK is built on: httpx2 from openai 3, httpx before
    import httpx2 as httpx
except ImportError:
    import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from flows.errors import OneLineError
from flows.llm.cache import RequestCache, request_key
from flows.llm.connection import describe
from flows.prompts import Prompt

# How each server family takes a JSON schema (the backend profile picks one).
DIALECTS = ("json_schema", "json_object_schema", "json_object", "none")


class ServerRefused(Exception):
    """The server refuses our requests as such (HTTP 400 other than a too-long context, 401,
    403, 404, or llama.cpp's validation error): the request is wrong for this server, not the
    row, so retrying cannot help and rejecting every row would hide it. The run stops."""

    def __init__(self, base_url: str, exc: openai.APIStatusError, stage: str):
        self.base_url, self.status, self.message, self.stage = base_url, exc.status_code, server_message(exc), stage
        super().__init__(f"the LLM server at {base_url} refused a {stage} request: HTTP {self.status}: {self.message}")


class LLMFailure(OneLineError):
    """A call that did not produce a usable answer; `reason` is a reject reason code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# What an evaluation makes of a failed answer. The model's own failure (too long, empty): the
# instruction was not followed. The server's: nothing is known, so the row is not scored.
MODEL_FAILURES = frozenset({"output_too_long", "empty_output", "context_too_long"})
SERVER_FAILURES = frozenset({"timeout", "connection_error", "rate_limited", "server_error", "server_unreachable",
                             "bad_response"})


class _Unusable(Exception):
    """The server answered, but not with something we can use (retried with another seed)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class LLMCall:
    stage: str
    prompt: Prompt
    schema: dict | None = None
    temperature: float = 0.0
    max_tokens: int = 1024
    seed: int | None = None
    priority: int = 0  # lower goes first when requests wait for a slot


class PrioritySlots:
    """A semaphore whose waiters are served lowest priority value first, then first come.

    The pipeline gives a row's early calls the lowest values: a row that fell behind (a slow or
    retried request) has the most work left, and serving it first keeps the end of a run from
    becoming a few long chains on an idle server.
    """

    def __init__(self, slots: int):
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self._seq = 0

    async def acquire(self, priority: int = 0) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (priority, self._seq, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                self._waiters = [w for w in self._waiters if w[2] is not future]
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # the slot passes straight to the next waiter
                return
        self._free += 1


@dataclass(frozen=True)
class LLMResult:
    content: str
    data: object | None  # parsed JSON when a schema was asked for
    model: str
    usage: dict
    cached: bool


@dataclass
class _Endpoint:
    base_url: str
    client: openai.AsyncOpenAI
    capacity: int
    in_flight: int = 0


@dataclass
class StageUsage:
    requests: int = 0  # calls that reached a server (attempts included)
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests, "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "retries": self.retries, "failures": dict(self.failures),
        }


def rejected_request(exc: BaseException) -> bool:
    """llama-cpp-python answers a request it cannot parse (e.g. the wrong response_format
    dialect) with HTTP 500 and a validation error: retrying can never help."""
    return isinstance(exc, openai.APIStatusError) and "validation error" in str(exc).lower()


def server_message(exc: openai.APIStatusError) -> str:
    """What the server said, from vLLM's {"error": {"message": ...}}, its auth middleware's
    {"error": "Unauthorized"}, FastAPI's {"detail": ...}, or the SDK's own text."""
    body = exc.body  # the SDK keeps the "error" member when there is one
    if isinstance(body, str) and body:
        return body[:300]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            error = error.get("message") or error.get("detail") or error
        if error:
            return str(error)[:300]
    return str(exc.message or exc)[:300]


def is_context_overflow(exc: openai.APIStatusError) -> bool:
    text = str(exc).lower()
    return "context" in text and ("length" in text or "window" in text or "token" in text)


def is_refusal(exc: BaseException) -> bool:
    """A request the server will refuse however often it is sent (see ServerRefused)."""
    if not isinstance(exc, openai.APIStatusError) or isinstance(exc, openai.RateLimitError):
        return False
    if rejected_request(exc):
        return True
    return exc.status_code in (400, 401, 403, 404, 405, 413, 415, 422) and not is_context_overflow(exc)


def is_transient(exc: BaseException) -> bool:
    if rejected_request(exc):
        return False
    if isinstance(exc, (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)):
        return True  # APITimeoutError is an APIConnectionError
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_json(content: str, schema: dict) -> object:
    """Parse a model's JSON answer (tolerating a ``` fence) and validate it against the schema."""
    match = _FENCE.match(content)
    text = match.group(1) if match else content
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Unusable("unparseable_output", f"not JSON ({exc.msg} at char {exc.pos})") from None
    error = jsonschema.exceptions.best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise _Unusable("schema_violation", f"{where}: {error.message[:200]}")
    return data


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    # Building a validator (and checking the schema) costs milliseconds: do it once per schema.
    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def response_format(dialect: str, schema: dict | None) -> dict | None:
    if schema is None or dialect == "none":
        return None
    if dialect == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    if dialect == "json_object_schema":
        return {"type": "json_object", "schema": schema}
    if dialect == "json_object":
        return {"type": "json_object"}
    raise ValueError(f"unknown response-format dialect {dialect!r} (one of {', '.join(DIALECTS)})")


def token_budget_field(dialect: str) -> str:
    """The field that caps the answer's tokens: vLLM and OpenAI (the json_schema dialect) take
    max_completion_tokens and mark max_tokens deprecated; llama.cpp's server and unknown
    servers know only max_tokens."""
    return "max_completion_tokens" if dialect == "json_schema" else "max_tokens"


def http_client(timeout, connections: int):
    """The SDK's HTTP client with one connection per request slot. aiohttp (openai[aiohttp])
    costs about 40% less CPU per request than the default httpx transport, which matters when
    one process keeps a fast server busy; httpcore also scans its whole pool on each request,
    so the SDK's default pool of 1,000 connections is cut to what can be in flight."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    try:
        import aiohttp  # noqa: F401  (the SDK's aiohttp client needs it)
    except ImportError:
        return openai.DefaultAsyncHttpxClient(timeout=timeout, limits=limits)
    return openai.DefaultAioHttpClient(timeout=timeout, limits=limits)


class LLMClient:
    def __init__(
        self,
        base_urls: list[str],
        cache: RequestCache,
        *,
        model: str | None = None,
        dialect: str = "json_schema",
        max_in_flight: int = 64,
        timeout_s: float = 120.0,
        max_attempts: int = 6,
        parse_attempts: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        api_key: str | None = None,
        top_p: float = 1.0,
        sampling_extra: dict | None = None,
    ):
        if not base_urls:
            raise ValueError("no LLM base URL given")
        response_format(dialect, {})  # validates the dialect name
        self.cache = cache
        self.model = model
        self.dialect = dialect
        self.max_attempts = max_attempts
        self.parse_attempts = parse_attempts
        self.backoff_s = backoff_s
        # Sent with every request, so no server default (vLLM's --generation-config auto reads
        # the model's generation_config.json) changes how a build samples.
        # (LLMConfig checks the names of sampling_extra.)
        self.sampling = {"top_p": top_p, **(sampling_extra or {})}
        self.max_backoff_s = max_backoff_s
        self._connect_s, self._timeout_s = min(10.0, timeout_s), timeout_s
        timeout = httpx.Timeout(timeout_s, connect=self._connect_s)
        self._endpoints = [
            _Endpoint(
                base_url=url,
                client=openai.AsyncOpenAI(
                    base_url=url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0,
                    http_client=http_client(timeout, max_in_flight),
                ),
                capacity=max_in_flight,
            )
            for url in base_urls
        ]
        self.slots = max_in_flight * len(self._endpoints)  # requests in flight at most, over all endpoints
        self._slots = PrioritySlots(self.slots)
        self.usage: dict[str, StageUsage] = defaultdict(StageUsage)

    @property
    def base_urls(self) -> list[str]:
        return [e.base_url for e in self._endpoints]

    async def resolve_model(self) -> str:
        """The model as the server names it: the configured one, else the first it lists."""
        if self.model is None:
            try:
                models = await self._endpoints[0].client.models.list()
            except openai.APIError as exc:
                url = self._endpoints[0].base_url
                if isinstance(exc, openai.APIStatusError) and exc.status_code in (401, 403):
                    raise ServerRefused(url, exc, "models") from None  # a key it refuses: no call will pass
                if isinstance(exc, openai.APIStatusError):  # a web server, but not an OpenAI one
                    raise LLMFailure("server_unreachable", f"{url}: HTTP {exc.status_code} ({server_message(exc)}) "
                                                           f"for {url}/models: is this the /v1 URL of an "
                                                           "OpenAI-compatible server?") from None
                raise LLMFailure("server_unreachable", f"{url}: {self._unanswered(exc)[1]}") from None
            ids = [m.id for m in models.data]
            if not ids:
                raise LLMFailure("server_unreachable", f"{self._endpoints[0].base_url} lists no model")
            self.model = ids[0]
        return self.model

    def _unanswered(self, exc: BaseException) -> tuple[str, str]:
        """(reject reason, words) for a request that got no HTTP answer: refused, DNS, TLS, timeout."""
        return describe(exc, self._connect_s, self._timeout_s)

    async def aclose(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.client.close()

    async def chat(self, call: LLMCall, cache: RequestCache | None = None) -> LLMResult:
        """One answer, from `cache` (default: the client's) or the server, which fills it."""
        cache = self.cache if cache is None else cache  # (an empty cache is falsy: it has a length)
        model = await self.resolve_model()
        messages = list(call.prompt.messages)
        key = request_key(
            model=model, messages=messages, temperature=call.temperature,
            max_tokens=call.max_tokens, seed=call.seed, schema=call.schema,
            template=call.prompt.version, sampling=self.sampling,
        )
        usage = self.usage[call.stage]
        hit = cache.get(key)
        if hit is not None:
            usage.cache_hits += 1
            return LLMResult(hit["content"], hit.get("data"), hit["model"], hit["usage"], True)

        last: _Unusable | None = None
        for attempt in range(self.parse_attempts):
            # A retry after an unusable answer varies the seed: at a fixed seed the server
            # would return the same unusable text again.
            seed = None if call.seed is None else call.seed + attempt
            content, served_model, tokens, finish = await self._send(call, model, messages, seed)
            try:
                if finish == "length":
                    raise _Unusable("output_too_long", f"hit max_tokens={call.max_tokens}")
                data = parse_json(content, call.schema) if call.schema is not None else None
                if call.schema is None and not content.strip():
                    raise _Unusable("empty_output", "the server returned no text")
            except _Unusable as exc:
                last = exc
                usage.retries += 1
                continue
            answer = {"content": content, "data": data, "model": served_model, "usage": tokens}
            # on the loop, with no await between the answer and its commit: a run stopped now
            # (cancelled) keeps every answer it has paid for
            cache.put(key, call.stage, model, {"messages": messages, "seed": call.seed}, answer)
            return LLMResult(content, data, served_model, tokens, False)
        usage.failures[last.reason] += 1
        raise LLMFailure(last.reason, str(last))

    async def _send(self, call: LLMCall, model: str, messages: list, seed: int | None):
        usage = self.usage[call.stage]
        body = {"model": model, "messages": messages, "temperature": call.temperature,
                token_budget_field(self.dialect): call.max_tokens, **self.sampling}
        if seed is not None:
            body["seed"] = seed
        fmt = response_format(self.dialect, call.schema)
        if fmt:
            body["response_format"] = fmt
        endpoint = self._endpoints[0]

        async def post():
            nonlocal endpoint
            await self._slots.acquire(call.priority)
            endpoint = min(self._endpoints, key=lambda e: e.in_flight / e.capacity)
            endpoint.in_flight += 1
            usage.requests += 1
            try:
                # The raw POST skips the SDK's per-request transform of typed
                # params (milliseconds of CPU each); errors map to the same types.
                return await endpoint.client.post("/chat/completions", body=body, cast_to=object)
            finally:
                endpoint.in_flight -= 1
                self._slots.release()

        try:
            try:
                resp = await post()
            except Exception as exc:  # noqa: BLE001 - what tenacity would retry goes to it
                if not is_transient(exc) or self.max_attempts == 1:
                    raise
                resp = await self._retry(post, exc, usage)
        except openai.APIConnectionError as exc:  # (a timeout is one too)
            reason, words = self._unanswered(exc)
            usage.failures[reason] += 1
            raise LLMFailure(reason, f"{endpoint.base_url}: {words}") from None
        except openai.RateLimitError as exc:
            raise self._fail(usage, "rate_limited", exc)
        except openai.APIStatusError as exc:
            if is_refusal(exc):
                raise ServerRefused(endpoint.base_url, exc, call.stage) from None
            if exc.status_code >= 500:
                raise self._fail(usage, "server_error", exc)
            if is_context_overflow(exc):
                raise self._fail(usage, "context_too_long", exc)
            raise self._fail(usage, "bad_request", exc)
        try:
            choice = resp["choices"][0]
            content = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._fail(usage, "bad_response", ValueError(f"not a chat completion: {str(resp)[:200]}"))
        reported = resp.get("usage") or {}
        tokens = {"prompt_tokens": reported.get("prompt_tokens") or 0,
                  "completion_tokens": reported.get("completion_tokens") or 0}
        usage.prompt_tokens += tokens["prompt_tokens"]
        usage.completion_tokens += tokens["completion_tokens"]
        return content, resp.get("model") or model, tokens, choice.get("finish_reason")

    async def _retry(self, post, first: Exception, usage: StageUsage):
        """The tries after a first transient failure, by tenacity. Only a failed request builds
        its retry state: that state is a web of references the garbage collector alone frees,
        and one for every request made its full passes long enough to stall the event loop.
        The first failure is replayed as tenacity's first attempt, so the waits and the count of
        attempts are those of one policy over all of them."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_random_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        replay: Exception | None = first
        async for attempt in retrying:
            with attempt:
                if replay is not None:
                    exc, replay = replay, None
                    raise exc
                usage.retries += 1
                return await post()

    @staticmethod
    def _fail(usage: StageUsage, reason: str, exc: Exception) -> LLMFailure:
        usage.failures[reason] += 1
        return LLMFailure(reason, f"{type(exc).__name__}: {str(exc)[:200]}")
