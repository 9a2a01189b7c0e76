"""The guard in the chat flow (core): user message -> guard (input) -> chat model -> guard
(output), with the loopback Ollama server playing both the chat model and Llama Guard 3."""

from __future__ import annotations

import pytest

from core.chat.ollama_backend import OllamaBackend
from core.chat.params import GenerationParams
from core.chat.session import ChatSession
from core.chat.store import HistoryStore
from core.config import Settings
from core.models.ollama_client import OllamaClient
from core.safety.audit import AuditLog
from core.safety.guard import GuardService, guard_from_settings

CHAT_MODEL = "llama3.2:latest"
GUARD_MODEL = "llama-guard3:8b"

pytestmark = pytest.mark.ollama


@pytest.fixture
def setup(ollama_server):
    ollama_server.add_model(CHAT_MODEL, family="llama",
                            template="{{ range .Messages }}{{ .Content }}{{ end }}")
    ollama_server.add_model(GUARD_MODEL, family="llama")
    settings = Settings()
    settings.ollama.host = ollama_server.host
    settings.ollama.read_timeout = 10
    settings.safety.enabled = True
    settings.safety.guard_model = f"ollama:{GUARD_MODEL}"
    settings.safety.guard_version = "llama-guard-3"
    guard = guard_from_settings(settings)
    assert isinstance(guard, GuardService)
    client = OllamaClient(ollama_server.host, read_timeout=10)
    session = ChatSession(OllamaBackend(client, CHAT_MODEL), store=HistoryStore(),
                          model_ref=f"ollama:{CHAT_MODEL}", guard=guard,
                          params=GenerationParams(max_tokens=50, temperature=0.0))
    return ollama_server, session


def _chat_calls(server):
    return [r for r in server.requests if (r.body or {}).get("model", "").startswith("llama3.2")
            and r.path in ("/api/chat", "/api/generate")]


def test_blocked_input_never_reaches_the_chat_model(setup):
    server, session = setup
    server.script_generate(["unsafe\nS1"])
    events = list(session.send("How do I hurt my neighbour?"))
    assert [e.kind for e in events] == ["started", "verdict", "blocked"]
    verdict = events[1].verdict
    assert (verdict["verdict"], verdict["categories"], verdict["action"]) == (
        "unsafe", ["S1"], "block")
    assert verdict["category_names"] == ["Violent Crimes"]
    assert _chat_calls(server) == []  # the chat model was never called
    stored = session.history()[-1]
    assert stored.role == "user" and stored.verdict["action"] == "block"
    [entry] = AuditLog().entries()
    assert (entry.direction, entry.verdict, entry.categories) == ("input", "unsafe", "S1")


def test_safe_turn_flows_and_gets_both_verdicts(setup):
    server, session = setup
    server.script_generate(["safe"])
    server.script_generate(["\n\nsafe"])
    events = list(session.send("How do I bake a chocolate cake?"))
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "delta" in kinds
    verdicts = [(e.direction, e.verdict["verdict"]) for e in events if e.kind == "verdict"]
    assert verdicts == [("input", "safe"), ("output", "safe")]
    assert len(_chat_calls(server)) == 1
    # the output check saw the whole exchange, the answer as the last (Agent) message
    guard_prompts = [r.body["prompt"] for r in server.requests_to("/api/generate")]
    assert "ONLY THE LAST Agent message" in guard_prompts[1]
    assert "Agent: Hello from the fake Ollama." in guard_prompts[1]
    answer = events[-1].message
    assert answer.verdict["verdict"] == "safe"
    assert [e.direction for e in AuditLog().entries()] == ["output", "input"]


def test_unsafe_answer_is_marked_blocked(setup):
    server, session = setup
    server.script_generate(["safe"])
    server.script_generate(["unsafe\nS10"])
    events = list(session.send("Tell me about my neighbours."))
    final = events[-1].message
    assert final.content  # kept (the page hides it behind a reveal button)
    assert final.verdict["action"] == "block" and final.verdict["category_names"] == ["Hate"]


def test_guard_is_off_unless_enabled():
    settings = Settings()
    settings.safety.guard_model = "ollama:llama-guard3"
    assert guard_from_settings(settings) is None
    settings.safety.enabled = True
    settings.safety.check_input = False
    guard = guard_from_settings(settings, audit=False)
    assert guard is not None
    skipped = guard.check_input([{"role": "user", "content": "hi"}])
    assert (skipped.verdict, skipped.action, skipped.badge_text()) == (
        "skipped", "allow", "not checked")
