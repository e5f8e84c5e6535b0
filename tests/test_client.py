"""The LLM client's pieces that need no server, and its behaviour against the simulator."""
import asyncio

import httpx
import openai
import pytest

from conftest import start_sim
from flows.llm.cache import RequestCache
from flows.llm.client import LLMCall, LLMClient, LLMFailure, _Unusable, is_transient, parse_json, response_format
from flows.llm import simulator
from flows.prompts import PromptLibrary, PromptError, default_library

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 10}}, "required": ["a"]}


def test_parse_json_accepts_fences_and_validates():
    assert parse_json('```json\n{"a": 3}\n```', SCHEMA) == {"a": 3}
    with pytest.raises(_Unusable) as bad:
        parse_json('{"a": 11}', SCHEMA)
    assert bad.value.reason == "schema_violation" and "a" in str(bad.value)
    with pytest.raises(_Unusable) as cut:
        parse_json('{"a": ', SCHEMA)
    assert cut.value.reason == "unparseable_output"


def test_dialects():
    assert response_format("json_schema", SCHEMA)["json_schema"]["schema"] == SCHEMA
    assert response_format("json_object_schema", SCHEMA) == {"type": "json_object", "schema": SCHEMA}
    assert response_format("json_schema", None) is None
    with pytest.raises(ValueError):
        response_format("xml", SCHEMA)


def test_transient_classification():
    req = httpx.Request("POST", "http://x")
    def status(code):
        return openai.APIStatusError("e", response=httpx.Response(code, request=req), body=None)
    assert is_transient(openai.APIConnectionError(request=req))
    assert is_transient(openai.APITimeoutError(request=req))
    assert is_transient(openai.RateLimitError("e", response=httpx.Response(429, request=req), body=None))
    assert is_transient(openai.InternalServerError("e", response=httpx.Response(503, request=req), body=None))
    assert not is_transient(status(400)) and not is_transient(status(404))
    # llama-cpp-python rejects an unknown response_format with a 500 "validation error"
    wrong_dialect = openai.InternalServerError("1 validation error: Input should be 'text' or 'json_object'",
                                               response=httpx.Response(500, request=req), body=None)
    assert not is_transient(wrong_dialect)


def test_prompts_are_sandboxed_and_versioned(tmp_path):
    lib = default_library()
    p = lib.render("respond", instruction="{{ 7*7 }} {% for x in y %}")
    assert p.messages[1]["content"] == "{{ 7*7 }} {% for x in y %}" and len(p.version) == 12
    (tmp_path / "evil.j2").write_text("{% block system %}{{ ''.__class__.__mro__ }}{% endblock %}{% block user %}x{% endblock %}")
    with pytest.raises(PromptError):
        PromptLibrary(tmp_path).render("evil")
    (tmp_path / "a.j2").write_text("{% block system %}s{% endblock %}{% block user %}{{ missing }}{% endblock %}")
    with pytest.raises(PromptError, match="missing"):
        PromptLibrary(tmp_path).render("a")


def call(i=0, schema=SCHEMA):
    prompt = default_library().render("respond", instruction=f"give a number {i}")
    return LLMCall(stage="t", prompt=prompt, schema=schema, temperature=0.0, max_tokens=64, seed=i)


def test_cache_bounds_and_failures(tmp_path):
    async def go(server, cache, n, max_in_flight=4, **kw):
        client = LLMClient([server.base_url], cache, max_in_flight=max_in_flight, backoff_s=0.01, **kw)
        try:
            return await asyncio.gather(*(client.chat(call(i)) for i in range(n)), return_exceptions=True), client
        finally:
            await client.aclose()

    with start_sim(latency_mean=0.05, capacity=64) as server:
        cache = RequestCache(tmp_path / "c.sqlite")
        results, client = asyncio.run(go(server, cache, 20))
        assert all(r.data["a"] in range(11) and not r.cached for r in results)
        stats = simulator.stats(server.base_url)
        assert stats["max_in_flight"] <= 4 and stats["requests"] == 20
        again, client = asyncio.run(go(server, cache, 20))
        assert all(r.cached for r in again) and client.usage["t"].cache_hits == 20
        assert simulator.stats(server.base_url)["requests"] == 20
    with start_sim(malformed_rate=1.0) as server:
        results, client = asyncio.run(go(server, RequestCache(tmp_path / "d.sqlite"), 2, parse_attempts=2))
        assert all(isinstance(r, LLMFailure) and r.reason == "unparseable_output" for r in results)
        assert simulator.stats(server.base_url)["requests"] == 4  # 2 calls x 2 parse attempts
    with start_sim(error_500_rate=1.0) as server:
        results, client = asyncio.run(go(server, RequestCache(tmp_path / "e.sqlite"), 1, max_attempts=3))
        assert isinstance(results[0], LLMFailure) and results[0].reason == "server_error"
        assert simulator.stats(server.base_url)["requests"] == 3


def test_replicas_share_the_load(tmp_path):
    with start_sim(latency_mean=0.05) as a, start_sim(latency_mean=0.05) as b:
        async def go():
            client = LLMClient([a.base_url, b.base_url], RequestCache(tmp_path / "c.sqlite"), max_in_flight=4)
            try:
                await asyncio.gather(*(client.chat(call(i)) for i in range(24)))
            finally:
                await client.aclose()
        asyncio.run(go())
        served = [simulator.stats(s.base_url)["requests"] for s in (a, b)]
    assert sum(served) == 24 and min(served) >= 6


def test_answered_requests_leave_no_garbage_for_the_collector(sim, tmp_path):
    """Garbage in reference cycles waits for the collector's passes, which stop the event loop;
    one cycle per request (tenacity's retry state was one) made them long. A request that is
    answered the first time leaves none; one that is retried may."""
    import gc

    prompts = default_library()
    client = LLMClient([sim.base_url], RequestCache(tmp_path / "c.sqlite"), max_in_flight=8)

    async def ask(n, first):
        await asyncio.gather(*(client.chat(LLMCall(stage="s", prompt=prompts.render("respond", instruction=f"q {i}"),
                                                   seed=i)) for i in range(first, first + n)))

    async def go():
        await ask(8, 0)  # connections opened, the model resolved: one-off state
        gc.collect()
        gc.disable()
        try:
            await ask(200, 100)
            return gc.collect()
        finally:
            gc.enable()
            await client.aclose()

    left = asyncio.run(go())
    assert left < 200, left  # less than one object per request
