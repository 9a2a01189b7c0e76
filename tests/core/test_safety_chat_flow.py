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
from core.safety.verdict import holds_answers

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


# --- order and coverage -------------------------------------------------------------------------

HITS = [
    {"text": "Attack the neighbour with a knife.", "source": "/d/bad.txt", "page": None,
     "chunk_index": 0, "score": 0.8},
    {"text": "Planets orbit the sun.", "source": "/d/guide.pdf", "page": 2, "chunk_index": 1,
     "score": 0.6},
]


def spied(session, calls: list[str]):
    """Record, in order, the guard's checks, the retrieval and the chat model's generation."""
    guard = session.guard
    for name in ("check_input", "check_output", "check_documents"):
        real = getattr(guard, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        setattr(guard, name, spy)
    stream = session.backend.stream

    def generating(*args, **kwargs):
        calls.append("generate")
        return stream(*args, **kwargs)

    session.backend.stream = generating

    def retrieval(question):
        calls.append("retrieve")
        return HITS

    session.retrieval = retrieval
    session.check_documents = True


def test_the_input_check_comes_before_retrieval_and_passages_before_the_prompt(setup):
    server, session = setup
    calls: list[str] = []
    spied(session, calls)
    server.script_generate(["safe"])  # the message
    server.script_generate(["safe"])  # both passages, in one call
    server.script_generate(["safe"])  # the answer
    events = list(session.send("How do planets move?"))
    assert calls == ["check_input", "retrieve", "check_documents", "generate", "check_output"]
    guard_prompts = [r.body["prompt"] for r in server.requests_to("/api/generate")]
    assert len(guard_prompts) == 3  # one guard call for the passages
    assert HITS[0]["text"] in guard_prompts[1] and HITS[1]["text"] in guard_prompts[1]
    assert "Planets orbit the sun." in events[0].prompt.exact_text

    # a blocked message is never used to search the documents
    calls.clear()
    server.script_generate(["unsafe\nS1"])
    assert [e.kind for e in session.send("How do I hurt my neighbour?")][-1] == "blocked"
    assert calls == ["check_input"]


def test_a_flagged_passage_is_withheld_and_listed_and_the_turn_goes_on(setup):
    server, session = setup
    spied(session, [])
    server.script_generate(["safe"])  # the message
    server.script_generate(["unsafe\nS1"])  # the passages together: flagged, so each alone:
    server.script_generate(["unsafe\nS1"])  # the knife
    server.script_generate(["safe"])  # the planets
    server.script_generate(["safe"])  # the answer
    events = list(session.send("How do planets move?"))
    assert events[-1].kind == "finished"
    prompt = events[0].prompt.exact_text
    assert "Planets orbit the sun." in prompt and "knife" not in prompt
    kept, left = events[-1].message.citations
    assert (kept["n"], kept["file_name"]) == (1, "guide.pdf")
    assert left["left_out"] and left["verdict"]["categories"] == ["S1"] and left["text"] == ""
    assert [e.direction for e in reversed(AuditLog().entries())] == [
        "input", "document", "document", "document", "output"]


def test_passages_the_guard_cannot_check_are_withheld_or_warned(setup):
    server, session = setup
    spied(session, [])
    server.script_generate(["safe"])  # the message
    server.fail("/api/generate", 500, "out of memory")  # the passages
    server.script_generate(["safe"])  # the answer
    events = list(session.send("How do planets move?"))
    assert events[-1].kind == "finished"  # a passage never blocks the turn
    assert "Planets" not in events[0].prompt.exact_text
    assert [c["verdict"]["verdict"] for c in events[-1].message.citations] == ["unavailable"] * 2
    from core.chat.hooks import left_out_note, warned_note

    assert "could not check" in left_out_note(events[-1].message.citations[0])
    # with "warn" they enter the prompt, each with its warning
    session.guard.when_unavailable = "warn"
    server.script_generate(["safe"])
    server.fail("/api/generate", 500, "out of memory")
    server.script_generate(["safe"])
    events = list(session.send("And the moon?"))
    assert "Planets orbit the sun." in events[0].prompt.exact_text
    cites = events[-1].message.citations
    assert [c["n"] for c in cites] == [1, 2]
    assert "entered the prompt unchecked" in warned_note(cites[0])


def test_a_partial_answer_from_a_broken_stream_is_checked_before_it_is_kept(setup):
    from core.errors import StreamInterrupted

    server, session = setup
    server.script_generate(["safe"])  # the message
    server.script_chat(["They ", "deserve "], drop=True)  # the chat model breaks off
    server.script_generate(["unsafe\nS10"])  # the partial answer
    seen = []
    with pytest.raises(StreamInterrupted):
        for ev in session.send("Tell me about my neighbours."):
            seen.append(ev)
    assert [e.kind for e in seen][-1] == "verdict" and seen[-1].direction == "output"
    answer = session.history()[-1]
    assert answer.interrupted and answer.content == "They deserve "
    assert answer.verdict["action"] == "block" and answer.verdict["categories"] == ["S10"]
    assert [e.direction for e in AuditLog().entries()] == ["output", "input"]


def test_a_stopped_answer_is_checked_too(setup):
    server, session = setup
    server.script_generate(["safe"])
    server.script_chat(["They ", "deserve "], hang=True)  # ... until the user stops it
    server.script_generate(["unsafe\nS10"])
    events = []
    for ev in session.send("Tell me about my neighbours."):
        events.append(ev)
        if "deserve" in "".join(e.text for e in events if e.kind == "delta"):
            session.cancel()
    final = events[-1].message
    assert (final.finish_reason, final.content) == ("cancelled", "They deserve ")
    assert [e.direction for e in events if e.kind == "verdict"] == ["input", "output"]
    assert final.verdict["action"] == "block" and final.verdict["categories"] == ["S10"]


def test_held_answers_come_only_after_the_check_and_blocked_ones_never(setup):
    server, session = setup
    session.hold = True
    server.script_generate(["safe"])
    server.script_chat(["They ", "deserve ", "nothing."])
    stored_while_streaming = []
    server.script_generate(["unsafe\nS10"])
    events = []
    for ev in session.send("Tell me about my neighbours."):
        events.append(ev)
        if ev.kind == "held":
            stored_while_streaming.append(session.history()[-1].verdict)
    kinds = [e.kind for e in events]
    assert "delta" not in kinds and "held" in kinds
    assert all(e.text == "" for e in events if e.kind == "held")
    assert kinds[-2:] == ["verdict", "finished"]
    # until checked, the stored answer carries a verdict that blocks it (a crash keeps it so)
    assert {v["action"] for v in stored_while_streaming} == {"block"}
    assert events[-1].message.verdict["categories"] == ["S10"]


def test_answers_are_held_by_default_while_a_category_blocks():
    s = Settings().safety
    assert holds_answers(s)  # every category blocks unless told otherwise
    s.policy = {f"llama-guard-3:S{i}": "warn" for i in range(1, 15)}
    assert not holds_answers(s)
    s.answers = "hold"
    assert holds_answers(s)
    s.answers, s.policy = "stream", {}
    assert not holds_answers(s)


def test_old_settings_files_keep_their_choice(corral_home):
    (corral_home / "settings.toml").write_text("[safety]\nfail_closed = false\n")
    assert Settings.load().safety.when_unavailable == "warn"
    (corral_home / "settings.toml").write_text("[safety]\nfail_closed = true\n")
    assert Settings.load().safety.when_unavailable == "block"
    Settings.load().save()
    text = (corral_home / "settings.toml").read_text()
    assert "fail_closed" not in text and 'when_unavailable = "block"' in text


def test_a_partial_answer_of_a_crashed_chat_engine_is_checked(setup, tiny_gguf):
    import os
    import signal

    from core.chat.llama_backend import LlamaCppBackend
    from core.errors import EngineCrashed
    from core.models.pool import close_all

    server, ollama_session = setup
    backend = LlamaCppBackend(tiny_gguf, n_ctx=4096, n_threads=1)
    session = ChatSession(backend, store=HistoryStore(), guard=ollama_session.guard,
                          params=GenerationParams(max_tokens=3000, temperature=0.0))
    server.script_generate(["safe"])
    server.script_generate(["unsafe\nS1"])
    seen = []
    try:
        with pytest.raises(EngineCrashed):
            for ev in session.send("hello model"):
                seen.append(ev)
                if ev.kind == "delta" and [e.kind for e in seen].count("delta") == 2:
                    os.kill(backend.engine.pid, signal.SIGKILL)
    finally:
        close_all()
    assert seen[-1].kind == "verdict" and seen[-1].direction == "output"
    answer = session.history()[-1]
    assert answer.interrupted and answer.content
    assert answer.verdict["action"] == "block" and answer.verdict["categories"] == ["S1"]
