"""The engine pool: how many models stay in memory, which one goes, and that a busy one never
does; keep-alive; unload; the context length a conversation picks reaching llama.cpp."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.chat.llama_backend import LlamaCppBackend
from core.chat.params import GenerationParams
from core.chat.session import ChatSession
from core.chat.store import HistoryStore
from core.errors import ContextOverflow, EngineBusy
from core.models.engine import EngineClient
from core.models.pool import EnginePool


@pytest.fixture
def models(tiny_gguf: Path, tmp_path: Path) -> list[Path]:
    """Six distinct model files (copies of the tiny model: another path is another model)."""
    paths = []
    for name in "abcdef":
        path = tmp_path / f"model-{name}.gguf"
        shutil.copyfile(tiny_gguf, path)
        paths.append(path)
    return paths


@pytest.fixture
def pool() -> Iterator[EnginePool]:
    p = EnginePool(max_chat=1, keep_alive_s=0)  # 0: no idle expiry unless a test asks for it
    yield p
    p.close_all()


def ask(client: EngineClient, n: int = 3) -> str:
    ids = client.tokenize("hello", add_bos=True)
    return "".join(e.text for e in client.generate(ids, max_tokens=n, temperature=0.0))


def running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def loaded_names(pool: EnginePool) -> set[tuple[str, str]]:
    return {(Path(m.path).name, m.role) for m in pool.loaded()}


def test_one_chat_model_stays_loaded_by_default(pool: EnginePool, models: list[Path]) -> None:
    a, b = pool.engine(models[0]), pool.engine(models[1])
    ask(a)
    pid_a = a.pid
    ask(b)  # beyond the limit: a (idle) is unloaded before b loads
    assert not running(pid_a) and b.alive
    assert loaded_names(pool) == {("model-b.gguf", "chat")}
    ask(a)  # the client a backend still holds loads again, through the same admission
    assert a.alive and not b.alive
    assert len(pool.loaded()) == 1


def test_the_least_recently_used_idle_model_goes(pool: EnginePool, models: list[Path]) -> None:
    pool.configure(max_chat=2, keep_alive_s=0)
    a, b, c = (pool.engine(m) for m in models[:3])
    ask(a)
    ask(b)
    ask(a)  # a is now more recent than b
    ask(c)
    assert loaded_names(pool) == {("model-a.gguf", "chat"), ("model-c.gguf", "chat")}


def test_a_new_context_length_reopens_the_same_engine(pool: EnginePool, models: list[Path]) -> None:
    first = pool.engine(models[0], n_ctx=256)
    assert first.load()["n_ctx"] == 256
    again = pool.engine(models[0], n_ctx=512)
    assert again is first  # one engine per model: an old holder cannot keep a second child
    ask(first)
    assert first.load()["n_ctx"] == 512
    assert len(pool.loaded()) == 1


def test_two_models_stream_at_once_and_the_busy_one_is_unloaded_after(
        pool: EnginePool, models: list[Path]) -> None:
    a, b = pool.engine(models[0]), pool.engine(models[1])
    events: list[str] = []
    a_started, b_answered = threading.Event(), threading.Event()
    a_result: list[str | None] = []

    def stream_a() -> None:
        ids = a.tokenize("hello", add_bos=True)
        for ev in a.generate(ids, max_tokens=300, temperature=0.0):
            if ev.done:
                events.append("a-done")
                a_result.append(ev.finish_reason)
            elif not a_started.is_set():
                events.append("a-first")
                a_started.set()
                b_answered.wait(timeout=120)  # hold a mid-stream until b has answered

    thread = threading.Thread(target=stream_a)
    thread.start()
    try:
        assert a_started.wait(timeout=120)
        pid_a = a.pid
        ids = b.tokenize("hello", add_bos=True)  # b loads beyond the limit while a streams
        for ev in b.generate(ids, max_tokens=5, temperature=0.0):
            if not ev.done and "b-first" not in events:
                events.append("b-first")
                assert a.pid == pid_a and running(pid_a)  # busy: never unloaded mid-answer
                b_answered.set()
    finally:
        b_answered.set()
        thread.join(timeout=120)
    assert events == ["a-first", "b-first", "a-done"]
    assert a_result == ["length"]  # a's answer was not cut
    assert not running(pid_a)  # ... and once it ended, a made room for b
    assert loaded_names(pool) == {("model-b.gguf", "chat")}


def test_guard_has_its_own_slot_and_vocabularies_do_not_count(
        pool: EnginePool, models: list[Path]) -> None:
    chat = pool.engine(models[0])
    ask(chat)
    guard = pool.engine(models[1], role="guard")
    guard.tokenize("x")
    vocabs = [pool.engine(m, role="vocab") for m in models[2:6]]
    for v in vocabs:
        v.tokenize("x")
    assert chat.alive and guard.alive and all(v.alive for v in vocabs)
    assert vocabs[-1].load()["n_ctx"] <= 512 and vocabs[-1].options["vocab_only"]
    # A fifth vocabulary pushes out the least recently used one; a second guard the first.
    fifth = pool.engine(models[0], role="vocab")
    fifth.tokenize("x")
    assert not vocabs[0].alive and all(v.alive for v in vocabs[1:]) and fifth.alive
    other_guard = pool.engine(models[2], role="guard")
    other_guard.tokenize("x")
    assert not guard.alive and other_guard.alive and chat.alive


def test_idle_models_unload_after_the_keep_alive(pool: EnginePool, models: list[Path]) -> None:
    pool.configure(max_chat=1, keep_alive_s=0.3)
    a = pool.engine(models[0])
    ask(a)
    assert a.alive
    assert wait_until(lambda: not a.alive)  # the pool's own timer did it
    assert pool.loaded() == []
    assert ask(a)  # and it comes back on the next request


def test_keep_alive_never_unloads_a_busy_model(pool: EnginePool, models: list[Path]) -> None:
    a = pool.engine(models[0])
    stream = a.generate(a.tokenize("hello", add_bos=True), max_tokens=200, temperature=0.0)
    assert next(stream).text  # mid-answer
    pool.keep_alive_s = 0.001
    a.last_used -= 3600
    pool.sweep()
    assert a.alive
    rest = list(stream)
    assert rest[-1].finish_reason == "length"
    a.last_used -= 3600
    pool.sweep()
    assert not a.alive


def test_a_lower_limit_unloads_the_surplus(pool: EnginePool, models: list[Path]) -> None:
    pool.configure(max_chat=3, keep_alive_s=0)
    a, b, c = (pool.engine(m) for m in models[:3])
    for client in (a, b, c):
        ask(client)
    pool.configure(max_chat=1, keep_alive_s=0)
    assert wait_until(lambda: len(pool.loaded()) == 1)
    assert loaded_names(pool) == {("model-c.gguf", "chat")}


def test_loaded_and_unload(pool: EnginePool, models: list[Path]) -> None:
    a = pool.engine(models[0], n_ctx=256)
    assert pool.loaded() == []
    stream = a.generate(a.tokenize("hello", add_bos=True), max_tokens=100, temperature=0.0)
    next(stream)
    [model] = pool.loaded()
    assert (Path(model.path).name, model.role, model.n_ctx) == ("model-a.gguf", "chat", 256)
    assert model.busy and model.pid == a.pid
    with pytest.raises(EngineBusy) as info:
        pool.unload(models[0])
    assert "in use" in info.value.sentence() and "Stop" in info.value.sentence()
    assert a.alive
    stream.close()  # Stop
    [model] = pool.loaded()
    assert not model.busy and model.idle_s >= 0
    pool.unload(models[0])
    assert pool.loaded() == [] and not a.alive
    assert ask(a)  # a held client reloads on its next request


def test_open_backend_applies_the_pool_settings(tiny_gguf: Path) -> None:
    from core.chat.open import open_backend
    from core.config import Settings
    from core.models.pool import engine_pool

    settings = Settings()
    settings.engine.max_models, settings.engine.keep_alive_s = 3, 42.0
    try:
        open_backend(str(tiny_gguf), settings)
        assert (engine_pool().max_chat, engine_pool().keep_alive_s) == (3, 42.0)
    finally:
        engine_pool().configure(max_chat=1, keep_alive_s=300.0)


# --- the context length a conversation picks ---------------------------------------------


@pytest.fixture
def backend(tiny_gguf: Path) -> Iterator[LlamaCppBackend]:
    engine = EngineClient(tiny_gguf, n_ctx=512, n_threads=1)
    yield LlamaCppBackend(tiny_gguf, n_ctx=512, engine=engine)
    engine.close()


def test_the_chosen_context_length_is_what_llama_cpp_gets(backend: LlamaCppBackend) -> None:
    assert backend.use_context(0) == 512  # 0: the setting
    assert backend.use_context(1024) == 1024
    assert backend.engine.load()["n_ctx"] == 1024  # the child reopened with it
    assert backend.info().context_length == 1024
    # Above the trained length (4096 for the tiny model) it is capped.
    assert backend.use_context(100_000) == 4096
    assert backend.engine.load()["n_ctx"] == 4096


def test_llama_cpp_rounding_never_lets_a_conversation_exceed_its_pick(
        backend: LlamaCppBackend) -> None:
    assert backend.use_context(600) == 600
    assert backend.engine.load()["n_ctx"] >= 600  # llama.cpp rounds up to a multiple of 256


def test_the_overflow_check_uses_the_chosen_length(backend: LlamaCppBackend) -> None:
    session = ChatSession(backend, store=HistoryStore(),
                          params=GenerationParams(max_tokens=200, temperature=0.0,
                                                  context_length=256))
    question = "hello world " * 30
    with pytest.raises(ContextOverflow, match="context holds 256"):
        session.send(question)
    session.params.context_length = 1024
    events = list(session.send(question))
    assert events[-1].message is not None and events[-1].message.completion_tokens == 200
    assert backend.engine.load()["n_ctx"] == 1024


def test_a_model_in_use_across_requests_is_not_unloaded_between_them(
        pool: EnginePool, models: list[Path]) -> None:
    """A measurement is many requests: the model must stay loaded for all of them."""
    a, b = pool.engine(models[0]), pool.engine(models[1])
    with a.in_use():
        ask(a)
        pid = a.pid
        ask(b)  # beyond the limit, between two of a's requests
        assert a.pid == pid
        ask(a)
        assert a.pid == pid  # the same child answered: no reload in the middle
    assert not a.alive and b.alive  # and once it was done, it made room


def test_a_model_with_an_adapter_is_another_engine(pool: EnginePool, tiny_gguf: Path,
                                                   tmp_path: Path) -> None:
    """The same file with and without a LoRA adapter are two models: a chat on the plain one
    must never answer with the adapter that another chat asked for."""
    from tools.tiny_gguf import make_tiny_lora

    adapter = make_tiny_lora(tmp_path / "llama-word.gguf")
    pool.configure(max_chat=2, keep_alive_s=0)
    plain = pool.engine(tiny_gguf)
    adapted = pool.engine(tiny_gguf, lora_path=str(adapter))
    assert adapted is not plain
    assert ask(adapted, 3).split() == ["llama"] * 3
    assert "llama" not in ask(plain, 3).split()
    assert {m.adapter for m in pool.loaded()} == {None, str(adapter)}


def test_chat_serve_and_the_workshop_share_one_pool(corral_home: Path, models: list[Path],
                                                   tmp_path: Path) -> None:
    """One limit for the whole app: a chat, an API request and a Workshop measurement all take
    their engines from the process-wide pool, and a measurement's model is never unloaded in
    the middle of it, whoever else loads a model meanwhile."""
    from core.chat.open import open_backend
    from core.config import Settings
    from core.models.pool import close_all, engine_pool
    from core.serve.chat import ChatService
    from core.workshop.measure import evaluate_models

    settings = Settings()
    settings.engine.max_models, settings.engine.keep_alive_s = 1, 0.0
    settings.engine.n_ctx, settings.engine.n_threads = 256, 1
    params = GenerationParams(max_tokens=2, temperature=0.0)

    def chat_models() -> set[str]:
        return {Path(m.path).name for m in engine_pool().loaded() if m.role == "chat"}

    def turn(backend: object) -> None:
        events = list(ChatSession(backend, store=HistoryStore(":memory:"),  # type: ignore[arg-type]
                                  params=params).send("hello"))
        assert events[-1].message is not None

    a, b, c = models[:3]
    try:
        turn(open_backend(str(a), settings))  # the Chat page
        assert chat_models() == {a.name}
        turn(ChatService(settings, history=False).backend(str(b)))  # corral serve
        assert chat_models() == {b.name}  # the limit counts both: a made room

        seen: list[tuple[set[str], int | None]] = []

        def progress(_fraction: float, _text: str) -> None:
            measured = [m for m in engine_pool().loaded() if Path(m.path) == c.resolve()]
            if measured and measured[0].busy:
                if not seen:
                    turn(open_backend(str(a), settings))  # a chat meanwhile
                seen.append((chat_models(), measured[0].pid))

        text = "the water is long and the day was made of one word " * 12
        evaluate_models([str(c)], text, n_ctx=64, gen_tokens=2, n_threads=1,
                        progress=progress, settings=settings)
        assert len(seen) >= 2 and len({pid for _, pid in seen}) == 1  # never reloaded
        assert all(c.name in names for names, _ in seen)
        assert len(chat_models()) == 1  # once the measurement ended, the limit holds again
    finally:
        close_all()
