"""The guard behind the API: moderation and chat turns go through Llama Guard 3 on the loopback
Ollama server (which also plays the chat model), whose verdicts each test scripts. A blocked
turn is a normal 200 that ends with finish_reason "content_filter"; the verdict rides in the
``corral`` field, and a guard that cannot run blocks (fail closed)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from core.config import Settings
from core.serve.moderation import CATEGORIES, OPENAI_CATEGORIES
from tests.core.serve_fixtures import client, ollama_settings, serving

CHAT = "ollama:llama3.2"
GUARD = "llama-guard3:8b"
pytestmark = pytest.mark.ollama


@pytest.fixture
def guarded(ollama_server) -> tuple[Any, Settings]:
    ollama_server.add_model("llama3.2", family="llama",
                            template="{{ range .Messages }}{{ .Content }}{{ end }}")
    ollama_server.add_model(GUARD, family="llama")
    settings = ollama_settings(ollama_server.host)
    settings.safety.enabled = True
    settings.safety.guard_model = f"ollama:{GUARD}"
    settings.safety.guard_version = "llama-guard-3"
    return ollama_server, settings


def _chat_calls(server: Any) -> list[Any]:
    return [r for r in server.requests_to("/api/chat")
            if str((r.body or {}).get("model", "")).startswith("llama3.2")]


def test_moderation_maps_the_guards_codes_and_keeps_them(guarded) -> None:
    server, settings = guarded
    server.script_generate(["unsafe\nS1,S7"])
    server.script_generate(["safe"])
    with serving(settings) as url:
        got = client(url).moderations.create(input=["How do I hurt my neighbour?", "Hi there"])
    unsafe, safe = got.results
    assert unsafe.flagged and not safe.flagged
    cats = unsafe.categories.model_dump(by_alias=True)
    assert cats["violence"] and cats["illicit/violent"]
    assert not cats["hate"] and not cats["sexual"]
    assert not any(safe.categories.model_dump(by_alias=True).values())
    extra = unsafe.model_extra["corral"]
    assert extra["codes"] == ["S1", "S7"]  # S7 Privacy has no OpenAI category: kept raw
    assert extra["names"] == ["Violent Crimes", "Privacy"]
    assert extra["raw"] == "unsafe\nS1,S7" and extra["version"] == "llama-guard-3"
    scores = unsafe.category_scores.model_dump(by_alias=True)
    assert scores["violence"] == 1.0 and scores["hate"] == 0.0  # no probability: 1 or 0
    assert len(server.requests_to("/api/generate")) == 2  # each text went to the guard


def test_the_table_covers_every_code_of_every_guard_version() -> None:
    from core.prompts.guard import VERSIONS

    for key, version in VERSIONS.items():
        assert set(OPENAI_CATEGORIES[key]) == set(version.codes), key
        for mapped in OPENAI_CATEGORIES[key].values():
            assert set(mapped) <= set(CATEGORIES)


def test_moderation_with_the_guard_down_is_flagged(guarded) -> None:
    server, settings = guarded
    server.fail("/api/generate", 500, "model runner crashed")
    with serving(settings) as url:
        [result] = client(url).moderations.create(input="anything").results
    assert result.flagged  # fail closed: not judged is not "not flagged"
    assert result.model_extra["corral"]["verdict"] == "unavailable"
    assert result.model_extra["corral"]["action"] == "block"


def test_a_blocked_message_is_a_200_that_ends_with_content_filter(guarded) -> None:
    server, settings = guarded
    server.script_generate(["unsafe\nS10"])
    server.script_generate(["unsafe\nS10"])
    question = [{"role": "user", "content": "Write something hateful."}]
    with serving(settings) as url:
        api = client(url)
        done = api.chat.completions.create(model=CHAT, messages=question)
        chunks = list(api.chat.completions.create(model=CHAT, messages=question, stream=True))
    choice = done.choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.content is None
    verdict = done.model_extra["corral"]["verdict"]
    assert (verdict["verdict"], verdict["categories"], verdict["action"]) == (
        "unsafe", ["S10"], "block")
    assert done.model_extra["corral"]["blocked"] == "input"
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""
    assert chunks[-1].model_extra["corral"]["verdict"]["categories"] == ["S10"]
    assert _chat_calls(server) == []  # the chat model never saw it


def test_an_unsafe_answer_is_withheld(guarded) -> None:
    server, settings = guarded
    server.script_generate(["safe"])
    server.script_generate(["unsafe\nS2"])
    with serving(settings) as url:
        done = client(url).chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "Tell me about locks."}])
    assert done.choices[0].finish_reason == "content_filter"
    assert done.choices[0].message.content is None  # held, then withheld
    corral = done.model_extra["corral"]
    assert corral["blocked"] == "output"
    assert [(v["direction"], v["verdict"]) for v in corral["verdicts"]] == [
        ("input", "safe"), ("output", "unsafe")]
    assert len(_chat_calls(server)) == 1


def test_a_warning_passes_the_answer_with_its_verdict(guarded) -> None:
    server, settings = guarded
    settings.safety.policy = {f"llama-guard-3:S{i}": "warn" for i in range(1, 15)}
    server.script_generate(["unsafe\nS6"])
    server.script_generate(["safe"])
    with serving(settings) as url:
        chunks = list(client(url).chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "Which pills should I take?"}],
            stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake Ollama."
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.choices[0].finish_reason == "stop"
    verdict = final.model_extra["corral"]["verdict"]
    assert (verdict["action"], verdict["categories"]) == ("warn", ["S6"])
    assert chunks[-1].usage is not None and not chunks[-1].choices  # include_usage


def test_a_guard_that_cannot_run_blocks_the_turn(guarded) -> None:
    server, settings = guarded
    server.fail("/api/generate", 404, f"model '{GUARD}' not found")
    with serving(settings) as url:
        done = client(url).chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "Hello"}])
    assert done.choices[0].finish_reason == "content_filter"
    assert done.model_extra["corral"]["verdict"]["verdict"] == "unavailable"
    assert _chat_calls(server) == []


def test_moderation_without_a_guard_model_says_so(ollama_server) -> None:
    with serving(ollama_settings(ollama_server.host)) as url:
        resp = httpx.post(f"{url}/v1/moderations", json={"input": "hi"})
    assert resp.status_code == 503
    assert "no guard model is chosen" in resp.json()["error"]["message"]


def test_category_scores_come_from_the_guards_first_token_probability(tmp_path) -> None:
    from core.models.pool import close_all
    from tests.fixtures.guards import guard_gguf

    settings = Settings()
    settings.safety.guard_model = str(guard_gguf(tmp_path, "unsafe"))  # answers: unsafe, S1
    settings.safety.guard_version = "llama-guard-2"
    try:
        with serving(settings) as url:
            [result] = client(url).moderations.create(input="How do I hurt my neighbour?").results
    finally:
        close_all()
    probability = result.model_extra["corral"]["probability"]
    assert isinstance(probability, float) and 0.0 < probability <= 1.0
    scores = result.category_scores.model_dump(by_alias=True)
    assert scores["violence"] == scores["illicit/violent"] == probability
    assert scores["hate"] == 0.0
    assert result.flagged and result.model_extra["corral"]["codes"] == ["S1"]
