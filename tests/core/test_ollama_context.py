"""Ollama's context, as the user meets it: num_ctx is always sent, counts use the model's own
vocabulary when its blob is in the local store (else marked estimates with a margin), a prompt
that does not fit is refused before Ollama can cut it, a prompt Ollama did cut is warned about
(stored and printed), and Stop closes the connection even before Ollama has answered."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core.chat.llama_backend import LlamaCppBackend
from core.chat.ollama_backend import OllamaBackend, estimate_tokens
from core.chat.open import open_backend
from core.chat.params import GenerationParams
from core.chat.session import ChatSession
from core.chat.store import HistoryStore
from core.config import Settings
from core.errors import ContextOverflow
from core.models.ollama_client import OllamaClient
from core.prompts.base import Message
from tests.fixtures.ollama import FakeOllama, add_store_model, manifest_digest

pytestmark = pytest.mark.ollama
MODEL = "llama2:7b-chat"
CHATML = ("{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
          "<|im_start|>assistant\n")
TURNS = [Message("system", "You answer briefly."), Message("user", "What is a llama?"),
         Message("assistant", "A South American camelid, kept for wool and as a pack animal."),
         Message("user", "And how long do llamas live, roughly, in years?")]


def settings_for(server: FakeOllama, store: Path | None = None, n_ctx: int = 3000) -> Settings:
    settings = Settings()
    settings.ollama.host = server.host
    settings.ollama.read_timeout = 30
    settings.ollama.store_dir = str(store) if store else ""
    settings.engine.n_ctx = n_ctx
    return settings


def params(**kw: Any) -> GenerationParams:
    return GenerationParams(**{"max_tokens": 16, "temperature": 0.0, **kw})


def session_for(backend: Any, **kw: Any) -> ChatSession:
    return ChatSession(backend, store=HistoryStore(), model_ref="m", **kw)


def served_from_store(server: FakeOllama, root: Path, name: str, gguf: Path, **kw: Any) -> None:
    """``name`` in the store at ``root`` and on the server, as the same model (digest)."""
    manifest = add_store_model(root, name, gguf)
    server.add_model(name, digest=manifest_digest(manifest), **kw)


# --- num_ctx ----------------------------------------------------------------------------------


def test_num_ctx_is_always_sent_and_never_past_the_trained_length(ollama_server) -> None:
    ollama_server.add_model(MODEL, context_length=4096)
    backend = open_backend(f"ollama:{MODEL}", settings_for(ollama_server, n_ctx=3000))
    sent = []
    for picked, fmt in ((0, "auto"), (8192, "auto"), (1024, "auto"), (0, "model")):
        session = session_for(backend, params=params(context_length=picked), fmt=fmt)
        list(session.send("Hi"))
        path = "/api/chat" if fmt == "model" else "/api/generate"
        sent.append(ollama_server.requests_to(path)[-1].body["options"]["num_ctx"])
        assert backend.use_context(picked) == sent[-1]
    # the default (the engine setting), the trained length instead of more, the user's pick
    assert sent == [3000, 4096, 1024, 3000]


# --- counting -------------------------------------------------------------------------------


def test_without_the_vocabulary_counts_are_estimates_and_overflow_is_refused(
        ollama_server) -> None:
    ollama_server.add_model(MODEL)
    backend = open_backend(f"ollama:{MODEL}", settings_for(ollama_server))
    assert backend.info().exact_counts is False  # the meter shows ≈
    long = "Tell me everything about llamas and their wool, please. " * 12  # ~170 real tokens
    for fmt in ("llama2", "model"):
        assert backend.count([Message("user", long)], fmt, "refuse") > 180
        session = session_for(backend, params=params(context_length=256, max_tokens=64),
                              fmt=fmt)
        with pytest.raises(ContextOverflow, match="needs about"):
            list(session.send(long))
    assert ollama_server.requests_to("/api/generate") == []  # Ollama never got it to cut
    assert ollama_server.requests_to("/api/chat") == []
    fits = session_for(backend, params=params(context_length=256, max_tokens=64))
    assert list(fits.send("Hi"))[-1].message.content == "Hello from the fake Ollama."


@pytest.mark.real_model
def test_estimate_is_at_least_the_count_of_real_vocabularies(smollm2, gemma3) -> None:
    from core.models.pool import engine_pool

    texts = ["The quick brown fox jumps over the lazy dog. " * 4,
             "def f(x):\n    return {str(i): v * 2 for i, v in enumerate(x)}\n" * 3,
             "3.14159265358979323846 2.71828182845904523536",
             "本地语言模型在你自己的电脑上运行，没有任何数据离开这台机器。",
             "Локальные модели работают на вашем компьютере. 🙂🚀"]
    for path in (smollm2, gemma3):
        vocab = engine_pool().engine(path, role="vocab")
        for text in texts:
            assert estimate_tokens(text) >= len(vocab.tokenize(text, add_bos=False))


def test_counts_use_the_models_own_vocabulary_from_the_store(ollama_server, tiny_gguf,
                                                              tmp_path) -> None:
    root = tmp_path / "models"
    served_from_store(ollama_server, root, "tiny", tiny_gguf)
    backend = open_backend("ollama:tiny", settings_for(ollama_server, root))
    assert backend.info().exact_counts is True
    truth = LlamaCppBackend(tiny_gguf, n_ctx=512, n_threads=1)
    assert backend.count(TURNS, "llama2", "refuse") == truth.count(TURNS, "llama2", "refuse")
    prepared = backend.prepare(TURNS, "llama2", "refuse")
    assert prepared.token_count == len(truth.prepare(TURNS, "llama2", "refuse").token_ids or [])
    # the same name on the server but another model: its vocabulary is not borrowed
    ollama_server.add_model("tiny", digest="0" * 64)
    other = open_backend("ollama:tiny", settings_for(ollama_server, root))
    assert other.info().exact_counts is False


@pytest.mark.real_model
def test_model_format_count_bounds_the_real_chatml_prompt(ollama_server, smollm2,
                                                          tmp_path) -> None:
    from core.models.pool import engine_pool

    root = tmp_path / "models"
    served_from_store(ollama_server, root, "smollm2", smollm2, template=CHATML,
                      context_length=8192)
    backend = open_backend("ollama:smollm2", settings_for(ollama_server, root))
    counted = backend.count(TURNS, "model", "refuse")
    vocab = engine_pool().engine(smollm2, role="vocab")
    truth = LlamaCppBackend(smollm2, engine=vocab).count(TURNS, "model", "refuse")
    assert truth <= counted <= truth + 8 * len(TURNS) + 16 + 4


# --- a cut prompt is warned about ---------------------------------------------------------------


def test_a_prompt_ollama_cut_is_warned_stored_and_printed(ollama_server, monkeypatch,
                                                          capsys) -> None:
    ollama_server.add_model(MODEL)
    backend = open_backend(f"ollama:{MODEL}", settings_for(ollama_server))
    session = session_for(backend, params=params(context_length=512))
    assert list(session.send("Hi"))[-1].message.warning == ""  # read 12 of 512: fine
    ollama_server.script_generate(["Hi"], prompt_eval_count=512)  # the runner's cut to num_ctx
    final = list(session.send("Hi again"))[-1].message
    assert "Ollama cut the prompt" in final.warning and "512" in final.warning
    assert session.store.message(final.id).warning == final.warning
    from core.cli import main

    monkeypatch.setenv("OLLAMA_HOST", ollama_server.host)
    ollama_server.script_generate(["Hi"], prompt_eval_count=512)
    assert main(["chat", f"ollama:{MODEL}", "--ctx", "512", "-n", "16", "hi"]) == 0
    assert "warning: Ollama cut the prompt" in capsys.readouterr().err


def test_with_the_vocabulary_a_count_below_the_prompt_is_warned(ollama_server, tiny_gguf,
                                                               tmp_path) -> None:
    root = tmp_path / "models"
    served_from_store(ollama_server, root, "tiny", tiny_gguf, template=CHATML)
    backend = open_backend("ollama:tiny", settings_for(ollama_server, root))
    raw = session_for(backend, params=params(), fmt="llama2", system="Be brief.")
    exact = backend.count([Message("system", "Be brief."), Message("user", "hello model")],
                          "llama2", "refuse")
    ollama_server.script_generate(["ok"], prompt_eval_count=exact)
    assert list(raw.send("hello model"))[-1].message.warning == ""
    ollama_server.script_generate(["ok"], prompt_eval_count=exact - 10)
    assert "at least" in list(raw.send("hello model"))[-1].message.warning
    # /api/chat: Ollama left out the oldest messages, so it read fewer than they hold
    chat = session_for(backend, params=params(), fmt="model")
    ollama_server.script_chat(["ok"], prompt_eval_count=3)
    assert "Ollama cut the prompt" in list(chat.send("hello model " * 20))[-1].message.warning
    # an Ollama before 0.4 left cached tokens out of the count: no warning from it
    ollama_server.version = "0.3.14"
    old = open_backend("ollama:tiny", settings_for(ollama_server, root))
    ollama_server.script_chat(["ok"], prompt_eval_count=3)
    assert list(session_for(old, fmt="model").send("hello model " * 20))[-1].message.warning == ""


# --- Stop -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,path", [("llama2", "/api/generate"), ("model", "/api/chat")])
def test_stop_closes_the_connection_while_ollama_reads_the_prompt(ollama_server, fmt,
                                                                  path) -> None:
    ollama_server.add_model(MODEL)
    (ollama_server.script_chat if fmt == "model" else ollama_server.script_generate)(
        ["late"], hold=True)  # no answer, not even headers, until the client hangs up
    session = session_for(OllamaBackend(OllamaClient(ollama_server.host, read_timeout=60),
                                        MODEL), params=params(), fmt=fmt)
    events: list[Any] = []
    turn = threading.Thread(target=lambda: events.extend(session.send("Hi")), daemon=True)
    turn.start()
    deadline = time.monotonic() + 30
    while not ollama_server.requests_to(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ollama_server.requests_to(path), "the request never reached the server"
    session.cancel()
    turn.join(timeout=20)
    assert not turn.is_alive(), "Stop did not end the answer while Ollama was silent"
    assert ollama_server.hung_up.wait(20) and path in ollama_server.hangups
    final = events[-1].message
    assert final.finish_reason == "cancelled" and not final.interrupted and not final.streaming
    # the backend still works for the next turn
    assert list(session.send("Hi"))[-1].message.content == "Hello from the fake Ollama."
