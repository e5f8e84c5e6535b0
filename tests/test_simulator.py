"""The simulated OpenAI-compatible server: content, faults, capacity, counters, CLI."""
from __future__ import annotations

import asyncio
import json
import random
import re
import statistics
import time
import urllib.error
import urllib.request

import jsonschema
import openai
import pytest

from flows.llm import simulator as sim
from flows.llm.simulator import SimulatorConfig, reset, start, stats

CJK = re.compile(r"[\u4e00-\u9fff]")
MODEL = sim.DEFAULT_MODEL

GRADED = {
    "type": "object",
    "$defs": {
        "Constraint": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 40},
                "kind": {"enum": ["content", "format", "style", "length", "situation"]},
                "score": {"type": "integer", "minimum": 0, "maximum": 10},
                "checkable": {"type": "boolean"},
                "weight": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["id", "kind", "score", "checkable", "weight", "note"],
            "additionalProperties": False,
        }
    },
    "properties": {
        "constraints": {"type": "array", "items": {"$ref": "#/$defs/Constraint"},
                        "minItems": 2, "maxItems": 6},
        "dimensions": {"type": "array", "minItems": 3, "maxItems": 5,
                       "items": {"type": "string", "enum": ["a", "b", "c", "d", "e", "f"]}},
        "version": {"const": 2},
        "summary": {"type": "string", "minLength": 5},
    },
    "required": ["constraints", "dimensions", "version", "summary"],
    "additionalProperties": False,
}


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": text}]


def json_schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}


def post(url: str, data: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server():
    with start(SimulatorConfig(seed=1)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="sim", max_retries=0, timeout=10)


# --- content ---------------------------------------------------------------------------------

def test_models(server, client):
    assert [m.id for m in client.models.list().data] == ["simulated-trace"]
    assert server.model == "simulated-trace"


def test_json_schema_dialect_validates(client):
    for i in range(15):
        resp = client.chat.completions.create(
            model=MODEL, messages=user(f"Grade answer number {i} about rivers and bridges"),
            response_format=json_schema_format(GRADED), temperature=0.7)
        choice = resp.choices[0]
        assert choice.finish_reason == "stop" and choice.message.role == "assistant"
        value = json.loads(choice.message.content)
        jsonschema.validate(value, GRADED)
        assert len(value["dimensions"]) >= 3
        assert resp.model == "simulated-trace"
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0


def test_llama_cpp_dialect_validates(client):
    schema = {"type": "object", "properties": {
        "answers": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 2},
        "ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": -5, "maximum": -1}},
        "required": ["answers", "ok", "n"]}
    resp = client.chat.completions.create(
        model=MODEL, messages=user("list two short answers"),
        response_format={"type": "json_object", "schema": schema})
    jsonschema.validate(json.loads(resp.choices[0].message.content), schema)

    bare = client.chat.completions.create(model=MODEL, messages=user("anything at all"),
                                          response_format={"type": "json_object"})
    assert set(json.loads(bare.choices[0].message.content)) == {"result"}


def test_schema_filler_on_tricky_schemas():
    schemas = [
        GRADED,
        {"allOf": [{"$ref": "#/$defs/A"}], "$defs": {"A": {"type": "object", "properties": {
            "x": {"type": ["integer", "null"], "exclusiveMinimum": 3, "maximum": 4}}, "required": ["x"]}}},
        {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
        {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
        {"type": "string", "minLength": 80, "maxLength": 90},
        {"type": "number", "minimum": 0.5, "maximum": 0.6},
        {"type": "object", "required": ["free"]},
        {"oneOf": [{"type": "null"}, {"type": "integer"}]},
        {"type": "array", "items": {"enum": [1, 2]}, "maxItems": 0},
    ]
    config = SimulatorConfig()
    for seed in range(40):
        for schema in schemas:
            rng = random.Random(seed)
            text = sim.TextMaker("some words to build text from 中文" if seed % 2 else "", rng)
            jsonschema.validate(sim.SchemaFiller(schema, text, rng, config).value(schema), schema)


def test_refuses_what_vllm_refuses(client):
    """A schema keyword both of vLLM's grammar backends refuse, and a model the server does not
    serve, get vLLM's status and error body, so a mistake fails the ordinary tests too."""
    schema = {"type": "object", "required": ["tags"], "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "contains": {"type": "string"}}}  # a property named like a keyword is not one
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=user("tags"), response_format=json_schema_format(schema))
    assert refused.value.body == {"message": 'Grammar error: Unimplemented keys: ["uniqueItems"]',
                                  "type": "BadRequestError", "param": None, "code": 400}
    del schema["properties"]["tags"]["uniqueItems"]
    client.chat.completions.create(model=MODEL, messages=user("tags"), response_format=json_schema_format(schema))
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="Qwen2-72B", messages=user("hello"))
    assert unknown.value.body["message"] == f"The model `Qwen2-72B` does not exist. Valid aliases: {MODEL}."


def test_api_key_as_vllm():
    with start(SimulatorConfig(), api_key="sekret-123") as srv:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=srv.base_url, api_key="sekret-123", max_retries=0)
        assert [m.id for m in good.models.list().data] == [MODEL]
        with urllib.request.urlopen(srv.base_url[:-3] + "/health", timeout=5) as resp:  # /health needs no key
            assert resp.status == 200


def test_grade_and_boolean_rates():
    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10},
                                               "ok": {"type": "boolean"}}}
    config = SimulatorConfig(score_ten_rate=0.85, true_rate=0.9)
    scores, oks = [], []
    for i in range(1000):
        body = {"model": "m", "messages": user(f"request {i}"), "response_format": json_schema_format(schema)}
        value = json.loads(sim.make_content(body, config)[0])
        scores.append(value["score"])
        oks.append(value["ok"])
    assert 0.80 < scores.count(10) / 1000 < 0.90
    assert set(scores) - {10} <= set(range(10)) and len(set(scores)) > 5
    assert 0.86 < sum(oks) / 1000 < 0.94


def test_deterministic_per_request(client):
    kwargs = dict(model=MODEL, messages=user("Write about the sea"), temperature=0.8, seed=5)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    again = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == again and "sea" in first.lower()
    others = {client.chat.completions.create(**{**kwargs, "seed": s}).choices[0].message.content
              for s in range(6, 10)}
    assert others - {first}


def test_free_text_follows_language(client):
    zh = client.chat.completions.create(
        model=MODEL, messages=user("请写一篇关于春天的短文，描述花开和鸟鸣。")).choices[0].message.content
    assert len(CJK.findall(zh)) > 0.8 * len(zh.replace("。", "")) > 5
    en = client.chat.completions.create(
        model=MODEL, messages=user("Describe spring with flowers and birds.")).choices[0].message.content
    assert not CJK.search(en) and len(en.split()) >= 10 and en.endswith(".")
    structured = client.chat.completions.create(
        model=MODEL, messages=user("给出三个约束条件"),
        response_format=json_schema_format({"type": "object", "properties": {"t": {"type": "string"}},
                                            "required": ["t"]})).choices[0].message.content
    assert CJK.search(json.loads(structured)["t"])


def test_max_tokens_truncates(client):
    choice = client.chat.completions.create(model=MODEL, messages=user("a long story about cats " * 5),
                                            max_tokens=3).choices[0]
    assert choice.finish_reason == "length" and len(choice.message.content) <= 12


# --- requests, counters ----------------------------------------------------------------------

def test_bad_requests_get_400(server, client):
    url = server.base_url + "/chat/completions"
    for data in (b"not json", b"[]", b'{"model": "m"}', b'{"messages": []}',
                 b'{"messages": [{"content": "hi"}]}', b'{"messages": [{"role": "user", "content": 3}]}',
                 b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}'):
        status, body = post(url, data)
        assert status == 400, data
        assert body["error"]["type"] == "BadRequestError" and body["error"]["code"] == 400 and body["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])


def test_stats_and_reset(server, client):
    reset(server.base_url)
    for i in range(3):
        client.chat.completions.create(model=MODEL, messages=user(f"hello {i}"))
    post(server.base_url + "/chat/completions", b"{}")
    s = stats(server.base_url)
    assert s["requests"] == 4 and s["completed"] == 3
    assert s["by_status"] == {"200": 3, "500": 0, "429": 0, "400": 1}
    assert s["in_flight"] == 0 and s["max_in_flight"] >= 1 and s["hangs"] == 0 and s["malformed"] == 0
    reset(server.base_url)
    s = stats(server.base_url)
    assert s["requests"] == s["completed"] == s["max_in_flight"] == s["queued_max"] == 0
    assert s["by_status"] == {"200": 0, "500": 0, "429": 0}


# --- faults ----------------------------------------------------------------------------------

async def _burst(base_url: str, n: int, timeout: float = 10, same: bool = False) -> list:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sim", max_retries=0, timeout=timeout)
    async with client:
        calls = [client.chat.completions.create(model=MODEL, messages=user("same" if same else f"q {i}"))
                 for i in range(n)]
        return await asyncio.gather(*calls, return_exceptions=True)


def test_error_rates_and_retry_can_succeed():
    with start(SimulatorConfig(error_500_rate=0.3, error_429_rate=0.3, seed=7)) as srv:
        results = asyncio.run(_burst(srv.base_url, 200, same=True))
        n500 = sum(isinstance(r, openai.InternalServerError) for r in results)
        n429 = sum(isinstance(r, openai.RateLimitError) for r in results)
        ok = [r for r in results if not isinstance(r, Exception)]
        assert 40 <= n500 <= 80 and 40 <= n429 <= 80 and len(ok) + n500 + n429 == 200
        assert len({r.choices[0].message.content for r in ok}) == 1  # same request, same answer
        s = stats(srv.base_url)
        assert s["requests"] == 200 and s["completed"] == len(ok)
        assert s["by_status"] == {"200": len(ok), "500": n500, "429": n429}


def test_malformed_only_for_json():
    with start(SimulatorConfig(malformed_rate=1.0)) as srv:
        c = openai.OpenAI(base_url=srv.base_url, api_key="sim", max_retries=0)
        for i in range(5):
            content = c.chat.completions.create(
                model=MODEL, messages=user(f"json please {i}"),
                response_format=json_schema_format(GRADED)).choices[0].message.content
            with pytest.raises(ValueError):
                json.loads(content)
        text = c.chat.completions.create(model=MODEL, messages=user("plain text")).choices[0]
        assert text.finish_reason == "stop" and text.message.content
        assert stats(srv.base_url)["malformed"] == 5


def test_length_rate():
    with start(SimulatorConfig(length_rate=1.0)) as srv:
        c = openai.OpenAI(base_url=srv.base_url, api_key="sim", max_retries=0)
        choice = c.chat.completions.create(model=MODEL, messages=user("json"),
                                           response_format=json_schema_format(GRADED)).choices[0]
        assert choice.finish_reason == "length"
        with pytest.raises(ValueError):
            json.loads(choice.message.content)


def test_capacity_queues_requests():
    with start(SimulatorConfig(capacity=4, latency_mean=0.2)) as srv:
        t0 = time.monotonic()
        results = asyncio.run(_burst(srv.base_url, 16))
        elapsed = time.monotonic() - t0
        assert not [r for r in results if isinstance(r, Exception)]
        assert 0.75 <= elapsed < 5
        s = stats(srv.base_url)
        assert s["max_in_flight"] == 4 and s["queued_max"] >= 8 and s["in_flight"] == 0


def test_hang_times_out_without_blocking_others():
    with start(SimulatorConfig(hang_rate=0.5, seed=3, capacity=2)) as srv:
        t0 = time.monotonic()
        results = asyncio.run(_burst(srv.base_url, 10, timeout=1.0))
        assert time.monotonic() - t0 < 4
        timeouts = sum(isinstance(r, openai.APITimeoutError) for r in results)
        answered = sum(not isinstance(r, Exception) for r in results)
        assert timeouts >= 1 and answered >= 1 and timeouts + answered == 10
        c = openai.OpenAI(base_url=srv.base_url, api_key="sim", max_retries=0, timeout=2)
        assert c.models.list().data
        # the hung requests noticed their clients left: nothing is left sleeping
        deadline = time.monotonic() + 3
        while stats(srv.base_url)["hanging"] and time.monotonic() < deadline:
            time.sleep(0.05)
        s = stats(srv.base_url)
        assert s["hanging"] == 0 and s["hangs"] == timeouts == s["disconnected"]


def test_longtail_latency_keeps_the_mean():
    s = sim.Simulator(SimulatorConfig(latency="longtail", latency_mean=0.5, latency_sigma=1.0))
    draws = [s.draw().latency for _ in range(20000)]
    assert 0.45 < statistics.fmean(draws) < 0.55
    assert statistics.median(draws) < 0.4 and max(draws) > 3  # a long tail


# --- CLI and process -------------------------------------------------------------------------

def test_cli_flags_round_trip():
    config = SimulatorConfig(model="x", latency="longtail", latency_mean=0.5, capacity=3,
                             error_500_rate=0.2, hang_seconds=5, seed=9)
    args, parsed = sim.parse_args(["--host", "127.0.0.1", "--port", "0", *sim.config_to_argv(config)])
    assert parsed == config and args.port == 0
    with pytest.raises(ValueError):
        SimulatorConfig(error_500_rate=0.7, error_429_rate=0.7)


def test_stop_exits_cleanly():
    srv = start(SimulatorConfig(model="other"))
    assert srv.model == "other" and sim.stats(srv.base_url)["requests"] == 0
    srv.stop()
    assert srv.process.returncode == 0
