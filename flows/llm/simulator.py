"""A simulated OpenAI-compatible chat server: the project's test double and dry-run backend.

A real HTTP server (Starlette + uvicorn) that answers /v1/chat/completions with content that is
deterministic from the request and, when a JSON response_format carries a schema, valid against
it. Knobs add what a real server does to a pipeline: latency (constant or long-tailed), a
bounded number of requests in service (the rest queue, like vLLM), HTTP 500/429, hangs,
malformed JSON and truncated ("length") answers. Fault draws come from one seeded stream shared
by the whole server, so a retry of the same request can succeed.

    python -m flows.llm.simulator --port 8000 --latency longtail --latency-mean 0.5 \
        --capacity 64 --error-500-rate 0.05 --hang-rate 0.01

Tests use `start(SimulatorConfig(...))`, which runs that command as a subprocess, and the
`stats()` / `reset()` helpers for the counters at /sim/stats and /sim/reset.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from flows.llm import vllm
from flows.llm.running import RunningServer, free_port, server_root, stop_process, wait_until_ready

DEFAULT_MODEL = "simulated-trace"


@dataclass
class SimulatorConfig:
    model: str = DEFAULT_MODEL
    seed: int = 0
    latency: str = "constant"  # "constant" or "longtail" (lognormal with the same mean)
    latency_mean: float = 0.0  # seconds
    latency_sigma: float = 1.0  # lognormal sigma, for "longtail"
    capacity: int = 64  # requests in service at once; the rest wait in a queue
    error_500_rate: float = 0.0
    error_429_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 3600.0
    malformed_rate: float = 0.0  # only applies when a JSON response_format was asked
    length_rate: float = 0.0  # finish_reason "length", content truncated
    score_ten_rate: float = 0.85  # P(10) for an integer field with minimum 0, maximum 10
    true_rate: float = 0.9  # P(true) for a boolean field
    any_of: str = "first"  # anyOf/oneOf: "first" option (e.g. null where null comes first) or "random"
    record: str = ""  # append every chat request body to this JSON-lines file (the vLLM contract test reads it)
    refuse_all: int = 0  # answer every chat request with this status (e.g. 400) and vLLM's error body

    def __post_init__(self) -> None:
        if self.any_of not in ("first", "random"):
            raise ValueError(f"any_of must be 'first' or 'random', not {self.any_of!r}")
        if self.latency not in ("constant", "longtail"):
            raise ValueError(f"latency must be 'constant' or 'longtail', not {self.latency!r}")
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        rates = ("error_500_rate", "error_429_rate", "hang_rate", "malformed_rate", "length_rate",
                 "score_ten_rate", "true_rate")
        for name in rates:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.error_500_rate + self.error_429_rate + self.hang_rate > 1.0:
            raise ValueError("error_500_rate + error_429_rate + hang_rate must not exceed 1")


# ---------------------------------------------------------------------------------------------
# Content: deterministic from the request
# ---------------------------------------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_FALLBACK_WORDS = ("answer", "response", "the", "instruction", "follows", "each", "constraint",
                   "clearly", "and", "completely")
_FALLBACK_CJK = "根据指令要求给出完整清晰的回答"


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


_DELIMITED = re.compile(r"<<<\n?(.*?)\n?>>>", re.S)  # the material a template puts between <<< and >>>


class TextMaker:
    """Short text built from the words of the last user message (CJK in, CJK out). Where the
    message delimits its material (a seed, an instruction) with <<< >>>, the language is the
    material's, as a model that answers in the language of what it rewrites."""

    def __init__(self, source: str, rng: random.Random):
        self.rng = rng
        delimited = "\n".join(_DELIMITED.findall(source))
        basis = delimited if delimited.strip() else source
        cjk_basis = _CJK.findall(basis)
        self.chinese = bool(cjk_basis) and 3 * len(cjk_basis) >= sum(len(w) for w in _LATIN_WORD.findall(basis))
        cjk = _CJK.findall(source)
        if self.chinese:
            self.chars = cjk
        else:
            words = [w.lower() for w in _LATIN_WORD.findall(source)]
            self.words = words or list(_FALLBACK_WORDS)

    def excerpt(self) -> str:
        """1-4 words (2-6 characters in Chinese) that stand together in the message, for a field
        the schema says is copied from it (a phrase a rule check looks for)."""
        units = self.chars if self.chinese else self.words
        n = self.rng.randint(2, 6) if self.chinese else self.rng.randint(1, 4)
        start = self.rng.randrange(max(1, len(units) - n + 1))
        return ("" if self.chinese else " ").join(units[start:start + n])

    def phrase(self, n_min: int = 4, n_max: int = 12) -> str:
        n = self.rng.randint(n_min, n_max)
        if self.chinese:
            # n "words" of 1-3 characters, taken from a random spot in the message
            out = []
            for _ in range(n):
                start = self.rng.randrange(len(self.chars))
                out.append("".join(self.chars[start:start + self.rng.randint(1, 3)]))
            return "".join(out)
        return " ".join(self.rng.choice(self.words) for _ in range(n))

    def sentence(self) -> str:
        text = self.phrase(6, 14)
        if self.chinese:
            return text + "。"
        return text[:1].upper() + text[1:] + "."

    def paragraph(self) -> str:
        sep = "" if self.chinese else " "
        return sep.join(self.sentence() for _ in range(self.rng.randint(2, 4)))

    def string(self, min_length: int = 0, max_length: int | None = None) -> str:
        text = self.phrase()
        pad = (_FALLBACK_CJK if self.chinese else " " + " ".join(_FALLBACK_WORDS))
        while len(text) < min_length:
            text += pad
        if max_length is not None and len(text) > max_length:
            text = text[:max_length].rstrip() if max_length else ""
            if len(text) < min_length:  # rstrip went too far
                text = text.ljust(min_length, "x")
        return text


class SchemaFiller:
    """A value that validates against a JSON schema (the subset structured output uses)."""

    def __init__(self, root: Any, text: TextMaker, rng: random.Random, config: SimulatorConfig):
        self.root, self.text, self.rng, self.config = root, text, rng, config

    def resolve(self, schema: Any, seen: int = 0) -> Any:
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            if not ref.startswith("#"):
                raise ValueError(f"only local $ref is supported, not {ref!r}")
            target: Any = self.root
            for part in [p for p in ref[1:].split("/") if p]:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target[int(part)] if isinstance(target, list) else target[part]
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, dict) else target
            seen += 1
        return schema

    def value(self, schema: Any, depth: int = 0) -> Any:
        schema = self.resolve(schema)
        if schema is True or not isinstance(schema, dict) or depth > 16:
            return self.text.string()
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                options = schema[key]
                pick = self.rng.choice(options) if self.config.any_of == "random" else options[0]
                return self.value(pick, depth + 1)
        if schema.get("allOf"):
            merged: dict = {}
            for part in [self.resolve(p) for p in schema["allOf"]] + [schema]:
                if isinstance(part, dict):
                    props = {**merged.get("properties", {}), **part.get("properties", {})}
                    required = merged.get("required", []) + part.get("required", [])
                    merged.update({k: v for k, v in part.items() if k != "allOf"})
                    merged["properties"], merged["required"] = props, required
            return self.value(merged, depth + 1)

        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = ("object" if "properties" in schema else "array" if "items" in schema
                    else "string")
        return getattr(self, "_" + kind, self._string)(schema, depth)

    def _object(self, schema: dict, depth: int) -> dict:
        props = dict(schema.get("properties", {}))
        for name in schema.get("required", []):
            props.setdefault(name, {"type": "string"})
        return {name: self.value(sub, depth + 1) for name, sub in props.items()}

    def _array(self, schema: dict, depth: int) -> list:
        raw_items = schema.get("items")
        prefix = schema.get("prefixItems") or (raw_items if isinstance(raw_items, list) else [])
        items = raw_items if isinstance(raw_items, dict) else {}
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        n_lo = max(lo, 1) if hi is None else min(max(lo, 1), hi)
        n_hi = n_lo + 3 if hi is None else min(hi, n_lo + 3)
        n = self.rng.randint(n_lo, n_hi)
        n = max(n, len(prefix)) if hi is None else min(max(n, len(prefix)), hi)
        if raw_items is False:  # only the prefixItems are allowed
            n = min(n, len(prefix))
        # (no uniqueItems: the server refuses it, as vLLM does; see refusal())
        return [self.value(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(n)]

    def _bounds(self, schema: dict, step: float) -> tuple[float, float]:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if ex_lo is True and lo is not None:  # draft 4 spelling
            lo += step
        elif isinstance(ex_lo, (int, float)) and not isinstance(ex_lo, bool):
            lo = max(lo, ex_lo + step) if lo is not None else ex_lo + step
        if ex_hi is True and hi is not None:
            hi -= step
        elif isinstance(ex_hi, (int, float)) and not isinstance(ex_hi, bool):
            hi = min(hi, ex_hi - step) if hi is not None else ex_hi - step
        if lo is None:
            lo = 0 if hi is None or hi >= 0 else hi - 100
        if hi is None:
            hi = lo + 100
        return lo, hi

    def _integer(self, schema: dict, depth: int) -> int:
        if schema.get("minimum") == 0 and schema.get("maximum") == 10:  # a 0-10 grade
            return 10 if self.rng.random() < self.config.score_ten_rate else self.rng.randint(0, 9)
        lo, hi = self._bounds(schema, 1)
        return self.rng.randint(math.ceil(lo), math.floor(hi))

    def _number(self, schema: dict, depth: int) -> float:
        lo, hi = self._bounds(schema, 1e-6)
        value = round(self.rng.uniform(lo, hi), 3)
        return min(max(value, lo), hi)

    def _boolean(self, schema: dict, depth: int) -> bool:
        return self.rng.random() < self.config.true_rate

    def _null(self, schema: dict, depth: int) -> None:
        return None

    def _string(self, schema: dict, depth: int) -> str:
        if "copied from" in schema.get("description", "").lower():
            return self.text.excerpt()
        return self.text.string(schema.get("minLength", 0), schema.get("maxLength"))


def content_seed(body: dict, config: SimulatorConfig) -> int:
    """A seed from everything that shapes the answer (not from transport options)."""
    shaping = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "user")}
    blob = json.dumps([config.seed, shaping], sort_keys=True, ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:8], "big")


def json_schema_of(response_format: dict | None) -> tuple[bool, Any]:
    """(wants JSON, schema or None) for both dialects of response_format."""
    if not response_format:
        return False, None
    kind = response_format.get("type")
    if kind == "json_schema":
        return True, (response_format.get("json_schema") or {}).get("schema")
    if kind == "json_object":
        return True, response_format.get("schema")
    return False, None


def make_content(body: dict, config: SimulatorConfig) -> tuple[str, bool]:
    """(content, is_json): the deterministic answer to a validated request."""
    rng = random.Random(content_seed(body, config))
    messages = body["messages"]
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
    text = TextMaker(_message_text(last_user), rng)
    wants_json, schema = json_schema_of(body.get("response_format"))
    if not wants_json:
        return text.paragraph(), False
    if schema is None:
        value: Any = {"result": text.string()}
    else:
        value = SchemaFiller(schema, text, rng, config).value(schema)
    return json.dumps(value, ensure_ascii=False), True


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

def _error(status: int, message: str, kind: str, code: str | int | None = None, param: str | None = None
           ) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        status_code=status,
    )


def refusal(body: dict, model: str) -> JSONResponse | None:
    """What vLLM answers a request it will never serve, in its error body: an unknown model
    (404), a JSON schema with keywords its structured-output backends refuse (400)."""
    if body.get("model") is not None and body["model"] != model:
        return _error(404, f"The model `{body['model']}` does not exist. Valid aliases: {model}.",
                      "NotFoundError", 404, "model")
    _, schema = json_schema_of(body.get("response_format"))
    refused = vllm.refused_keywords(schema) if schema else []
    if refused:
        return _error(400, vllm.grammar_error(refused), "BadRequestError", 400)
    return None


def validate(body: Any) -> str | None:
    """The reason a chat request is bad, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return f"messages[{i}] must be an object with a string 'role'"
        if m["role"] not in ("system", "developer", "user", "assistant", "tool"):
            return f"messages[{i}].role {m['role']!r} is not a known role"
        content = m.get("content")
        if not isinstance(content, (str, list)) and not (m["role"] == "assistant" and content is None):
            return f"messages[{i}] must have a string or list 'content'"
    if body.get("stream"):
        return "the simulator does not support stream=true"
    rf = body.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            return "'response_format.type' must be one of text, json_object, json_schema"
        if rf["type"] == "json_schema" and not isinstance((rf.get("json_schema") or {}).get("schema"), dict):
            return "'response_format.json_schema.schema' must be an object"
        if rf["type"] == "json_object" and rf.get("schema") is not None and not isinstance(rf["schema"], dict):
            return "'response_format.schema' must be an object"
    return None


@dataclass
class _Faults:
    kind: str  # "ok", "500", "429" or "hang"
    malformed: bool
    length: bool
    latency: float


class Simulator:
    """State behind the routes: config, the shared fault stream, the queue, the counters."""

    def __init__(self, config: SimulatorConfig):
        self.config = config
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._slots: asyncio.Semaphore | None = None
        self.reset()

    def reset(self) -> None:
        kept = getattr(self, "counters", {})
        self.counters: dict[str, Any] = {
            "requests": 0, "completed": 0, "by_status": {"200": 0, "500": 0, "429": 0},
            "hangs": 0, "malformed": 0, "length": 0, "disconnected": 0,
            "service_seconds": 0.0,  # latency spent holding a slot: the work a perfect client schedules
            "first_request_at": None, "last_answer_at": None,  # epoch seconds: the busy window
            # slot-seconds in service in each second from the first request on: divided by the
            # capacity, how full the server was over time (a dip shows where a client stalled)
            "service_profile": [],
            # gauges describe requests still in the server, so a reset keeps them
            "in_flight": kept.get("in_flight", 0), "queued": kept.get("queued", 0),
            "hanging": kept.get("hanging", 0),
            "max_in_flight": kept.get("in_flight", 0), "queued_max": kept.get("queued", 0),
        }

    def draw(self) -> _Faults:
        c = self.config
        with self._lock:  # one stream, drawn in arrival order
            u, m, l, z = (self._rng.random(), self._rng.random(), self._rng.random(),
                          self._rng.gauss(0.0, 1.0))
        if u < c.error_500_rate:
            kind = "500"
        elif u < c.error_500_rate + c.error_429_rate:
            kind = "429"
        elif u < c.error_500_rate + c.error_429_rate + c.hang_rate:
            kind = "hang"
        else:
            kind = "ok"
        if c.latency_mean <= 0:
            latency = 0.0
        elif c.latency == "constant":
            latency = c.latency_mean
        else:
            mu = math.log(c.latency_mean) - c.latency_sigma ** 2 / 2
            latency = math.exp(mu + c.latency_sigma * z)
        return _Faults(kind, m < c.malformed_rate, l < c.length_rate, latency)

    def _status(self, response: JSONResponse) -> JSONResponse:
        key = str(response.status_code)
        self.counters["by_status"][key] = self.counters["by_status"].get(key, 0) + 1
        if response.status_code == 200:
            self.counters["completed"] += 1
        self.counters["last_answer_at"] = time.time()
        return response

    async def chat(self, request: Request) -> JSONResponse:
        self.counters["requests"] += 1
        self.counters["first_request_at"] = self.counters["first_request_at"] or time.time()
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return self._status(_error(400, "request body is not valid JSON", "BadRequestError", 400))
        if self.config.record:
            with self._lock, open(self.config.record, "a", encoding="utf-8") as log:
                log.write(json.dumps(body, ensure_ascii=False) + "\n")
        if self.config.refuse_all:
            return self._status(_error(self.config.refuse_all, "Simulated refusal of every request",
                                       "BadRequestError", self.config.refuse_all))
        problem = validate(body)
        if problem:
            return self._status(_error(400, problem, "BadRequestError", 400))
        refused = refusal(body, self.config.model)
        if refused is not None:
            return self._status(refused)

        faults = self.draw()
        if faults.kind == "429":  # a rate limiter answers before the queue
            return self._status(_error(429, "Simulated rate limit: too many requests",
                                       "rate_limit_error", "rate_limit_exceeded"))
        if faults.kind == "hang":
            self.counters["hangs"] += 1
            self.counters["hanging"] += 1
            try:
                left = await _sleep_unless_disconnected(request, self.config.hang_seconds)
            finally:
                self.counters["hanging"] -= 1
            if left:
                self.counters["disconnected"] += 1
                return JSONResponse({}, status_code=499)  # nobody reads it

        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.capacity)
        c = self.counters
        c["queued"] += 1
        c["queued_max"] = max(c["queued_max"], c["queued"])
        try:
            await self._slots.acquire()
        finally:
            c["queued"] -= 1
        served_from = time.time()
        try:
            c["in_flight"] += 1
            c["max_in_flight"] = max(c["max_in_flight"], c["in_flight"])
            if await _sleep_unless_disconnected(request, faults.latency):
                c["disconnected"] += 1
                return JSONResponse({}, status_code=499)
            c["service_seconds"] += faults.latency
            if faults.kind == "500":
                return self._status(_error(500, "Simulated internal server error", "server_error"))
            return self._status(JSONResponse(self.completion(body, faults)))
        finally:
            c["in_flight"] -= 1
            self._slots.release()
            self._in_service(served_from, time.time())

    def _in_service(self, start: float, end: float) -> None:
        """Adds a request's time holding a slot to the seconds it spans."""
        profile, origin = self.counters["service_profile"], self.counters["first_request_at"]
        if origin is None:  # counters reset while it was in service
            return
        start = max(start, origin)
        second = int(start - origin)
        while start < end:
            upto = min(end, origin + second + 1)
            if len(profile) <= second:
                profile.extend([0.0] * (second + 1 - len(profile)))
            profile[second] += upto - start
            start, second = upto, second + 1

    def completion(self, body: dict, faults: _Faults) -> dict:
        content, is_json = make_content(body, self.config)
        finish = "stop"
        if faults.malformed and is_json:
            self.counters["malformed"] += 1
            content = _break_json(content)
        if faults.length:
            self.counters["length"] += 1
            content, finish = content[: max(1, len(content) // 2)], "length"
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0 and len(content) > 4 * max_tokens:
            content, finish = content[: 4 * max_tokens], "length"
        prompt_chars = sum(len(_message_text(m)) for m in body["messages"])
        prompt_tokens, completion_tokens = max(1, prompt_chars // 4), max(1, len(content) // 4)
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.config.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def _break_json(text: str) -> str:
    broken = text[: len(text) // 2]
    try:
        json.loads(broken)
    except ValueError:
        return broken
    return "{" + broken  # e.g. half of "12345" is still JSON


async def _sleep_unless_disconnected(request: Request, seconds: float) -> bool:
    """Sleep, but stop early when the client goes away; True if it went away."""
    if seconds <= 0:
        return False

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({watcher}, timeout=seconds)
        return watcher in done
    finally:
        watcher.cancel()


def build_app(config: SimulatorConfig | None = None) -> Starlette:
    config = config or SimulatorConfig()
    sim = Simulator(config)

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": config.model, "object": "model", "created": 0, "owned_by": "trace-build-simulator"}]})

    async def sim_stats(request: Request) -> JSONResponse:
        return JSONResponse(sim.counters)

    async def sim_reset(request: Request) -> JSONResponse:
        sim.reset()
        return JSONResponse(sim.counters)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    key = os.environ.get(vllm.API_KEY_ENV)

    def guarded(route):
        """As vLLM's --api-key: /v1 wants 'Authorization: Bearer KEY' and answers 401 without it."""
        if not key:
            return route

        async def check(request: Request) -> JSONResponse:
            if request.headers.get("authorization") != f"Bearer {key}":
                return JSONResponse({"error": "Unauthorized"}, status_code=401)
            return await route(request)
        return check

    app = Starlette(routes=[
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/chat/completions", guarded(sim.chat), methods=["POST"]),
        Route("/sim/stats", sim_stats, methods=["GET"]),
        Route("/sim/reset", sim_reset, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])
    app.state.simulator = sim
    return app


# ---------------------------------------------------------------------------------------------
# Launching and helpers
# ---------------------------------------------------------------------------------------------

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_to_argv(config: SimulatorConfig) -> list[str]:
    return [arg for f in fields(config) for arg in (_flag(f.name), str(getattr(config, f.name)))]


def start(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0,
          ready_timeout: float = 30.0, api_key: str | None = None) -> RunningServer:
    """Run the simulator as a subprocess and wait until it answers; stop() it when done. With
    an API key it wants that key on /v1, as vLLM does (passed in its environment, never argv)."""
    config = config or SimulatorConfig()
    port = port or free_port(host)
    repo_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH")) if p)
    env.pop(vllm.API_KEY_ENV, None)
    if api_key:
        env[vllm.API_KEY_ENV] = api_key
    cmd = [sys.executable, "-m", "flows.llm.simulator", "--host", host, "--port", str(port),
           "--parent-pid", str(os.getpid()), *config_to_argv(config)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    base_url = f"http://{host}:{port}/v1"
    try:
        wait_until_ready(base_url, ready_timeout, lambda: proc.poll() is None, "LLM simulator",
                         api_key=api_key, health="/health")
    except BaseException:
        stop_process(proc, grace=2.0)
        raise
    return RunningServer(base_url=base_url, model=config.model, process=proc)


def stats(base_url: str) -> dict:
    """The counters of the simulator behind base_url (which ends with /v1)."""
    with urllib.request.urlopen(server_root(base_url) + "/sim/stats", timeout=5) as resp:
        return json.loads(resp.read().decode("utf-8"))


def reset(base_url: str) -> None:
    """Zero the simulator's counters."""
    req = urllib.request.Request(server_root(base_url) + "/sim/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, SimulatorConfig]:
    parser = argparse.ArgumentParser(prog="python -m flows.llm.simulator",
                                     description="Simulated OpenAI-compatible chat server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process (our parent) goes away")
    defaults = SimulatorConfig()
    for f in fields(SimulatorConfig):
        default = getattr(defaults, f.name)
        kwargs: dict[str, Any] = {"type": type(default), "default": default}
        if f.name == "latency":
            kwargs["choices"] = ["constant", "longtail"]
        if f.name == "any_of":
            kwargs["choices"] = ["first", "random"]
        parser.add_argument(_flag(f.name), **kwargs)
    args = parser.parse_args(argv)
    config = SimulatorConfig(**{f.name: getattr(args, f.name) for f in fields(SimulatorConfig)})
    return args, config


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args, config = parse_args(argv)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"simulator: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        build_app(config), log_level="warning", access_log=False, timeout_graceful_shutdown=2,
        lifespan="off"))

    if args.parent_pid:
        def watch_parent() -> None:
            while not server.should_exit:
                if os.getppid() != args.parent_pid:
                    server.should_exit = True
                time.sleep(1.0)
        threading.Thread(target=watch_parent, daemon=True).start()

    # uvicorn shuts down gracefully on SIGTERM / SIGINT, then re-raises the signal to the
    # handler it found; this one makes that a clean exit (status 0).
    def stop(signum, frame) -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    print(f"simulator serving model {config.model} at http://{args.host}:{port}/v1", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
