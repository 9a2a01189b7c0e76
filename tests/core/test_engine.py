"""The llama.cpp engine child: load, tokenize, stream, embed, and survive crashes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from core.errors import EngineCrashed, ModelFileDamaged
from core.models.engine import EngineClient
from tools.tiny_gguf import build_vocab


@pytest.fixture
def engine(tiny_gguf: Path):
    client = EngineClient(tiny_gguf, n_ctx=256, n_threads=1)
    yield client
    client.close()


def test_load_reports_model_facts(engine: EngineClient) -> None:
    seen: list[float] = []
    info = engine.load(progress=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert info["n_vocab"] == len(build_vocab()[0])
    assert info["bos"] == 1 and info["eos"] == 2
    assert info["n_ctx_train"] == 4096
    assert info["metadata"]["general.name"] == "tiny-random-llama"
    assert "[INST]" in info["chat_template"]
    assert engine.pid is not None and engine.pid != os.getpid()


def test_tokenize_roundtrip_and_special_parsing(engine: EngineClient) -> None:
    ids = engine.tokenize("hello world", add_bos=True)
    assert ids[0] == 1
    assert engine.detokenize(ids[1:]) == b" hello world"  # SentencePiece's dummy-prefix space
    # User text that looks like a control token stays text unless special parsing is asked for.
    assert 2 not in engine.tokenize("</s>", special=False)
    assert engine.tokenize("</s>", special=True)[-1] == 2


def test_token_pieces_and_types_show_bytes_honestly(engine: EngineClient) -> None:
    ids = engine.tokenize("hi é", add_bos=True)
    pieces = engine.token_pieces(ids)
    types = engine.token_types(ids)
    assert pieces[0] == b"<s>" and types[0] == "control"
    assert b"".join(pieces[1:]) == " hi é".encode()
    assert "byte" in types  # 'é' is not in the vocabulary: two byte-fallback tokens


def test_generate_streams_exactly_max_tokens(engine: EngineClient) -> None:
    prompt = engine.tokenize("hello", add_bos=True)
    events = list(engine.generate(prompt, max_tokens=50, temperature=0.0))
    done = events[-1]
    assert done.done and done.finish_reason == "length"
    assert done.completion_tokens == 50
    assert done.prompt_tokens == len(prompt)
    text = "".join(e.text for e in events[:-1])
    assert len(text.split()) >= 10
    # Greedy decoding is deterministic.
    again = "".join(e.text for e in engine.generate(prompt, max_tokens=50, temperature=0.0) if not e.done)
    assert again == text


def test_cancel_stops_generation_and_keeps_text(engine: EngineClient) -> None:
    prompt = engine.tokenize("hello", add_bos=True)
    seen = []
    for event in engine.generate(prompt, max_tokens=200, temperature=0.0):
        if event.done:
            final = event
            break
        seen.append(event.text)
        if len(seen) == 1:
            engine.cancel()
    assert final.finish_reason == "cancelled"
    assert final.completion_tokens < 200
    # The engine is still usable afterwards.
    assert engine.tokenize("ok") != []


def test_next_token_probs_sum_over_vocab(engine: EngineClient) -> None:
    prompt = engine.tokenize("hello", add_bos=True)
    probs = engine.next_token_probs(prompt, [2, 100, 400])
    assert set(probs) == {2, 100, 400}
    assert probs[2] < 1e-6  # EOS is blocked in the tiny model
    assert all(0.0 <= p <= 1.0 for p in probs.values())


@pytest.mark.real_model
def test_next_token_probs_reuse_the_cached_prompt_and_agree_with_a_fresh_read(
        smollm2: Path) -> None:
    """The guard asks for probabilities right after generating from the same prompt: only
    the tokens past the cached prefix are read, and the numbers are a fresh read's."""
    candidates = list(range(0, 49152, 7))
    with EngineClient(smollm2, n_ctx=512, n_threads=1) as engine, \
            EngineClient(smollm2, n_ctx=512, n_threads=1) as fresh:
        prompt = engine.tokenize("The capital of France is a city called", add_bos=False)
        for _ev in engine.generate(prompt, max_tokens=3, temperature=0.0):
            pass
        cases = [prompt, prompt + [314], prompt[:-2], prompt]  # within, past, short of the cache
        reused = [engine.next_token_probs(ids, candidates) for ids in cases]
        for ids, got in zip(cases, reused, strict=True):
            for _ev in fresh.generate(ids[:1], max_tokens=2):  # something else cached first
                pass
            cold = fresh.next_token_probs(ids, candidates)
            top = max(cold, key=cold.__getitem__)
            assert max(got, key=got.__getitem__) == top
            assert got == pytest.approx(cold, rel=2e-2, abs=1e-7)
        assert max(reused[0].values()) != pytest.approx(max(reused[1].values()), rel=1e-2)


def test_embed_returns_vectors(tiny_gguf: Path) -> None:
    with EngineClient(tiny_gguf, n_ctx=256, n_threads=1, embedding=True) as eng:
        vectors = eng.embed(["hello world", "the model"])
    assert len(vectors) == 2 and len(vectors[0]) == 64
    assert vectors[0] != vectors[1]


def test_kill_mid_stream_raises_engine_crashed_then_recovers(engine: EngineClient) -> None:
    prompt = engine.tokenize("hello", add_bos=True)
    received = []
    with pytest.raises(EngineCrashed) as info:
        for event in engine.generate(prompt, max_tokens=5000, temperature=0.0):
            received.append(event.text)
            if len(received) == 2:
                assert engine.pid is not None
                os.kill(engine.pid, signal.SIGKILL)
    assert "SIGKILL" in str(info.value)
    assert info.value.partial == "".join(received)
    # The next request starts a fresh child and reloads the model.
    events = list(engine.generate(prompt, max_tokens=50, temperature=0.0))
    assert events[-1].completion_tokens == 50


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty"), (b"NOTGGUF" * 10, "not a GGUF file"), (b"GGUF\x03\x00\x00\x00", "incomplete file")],
)
def test_damaged_files_are_refused_before_loading(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with EngineClient(path, n_threads=1) as eng, pytest.raises(ModelFileDamaged) as info:
        eng.load()
    assert reason in str(info.value)


def test_truncated_model_costs_a_message_not_the_app(tiny_gguf: Path, tmp_path: Path) -> None:
    data = tiny_gguf.read_bytes()
    path = tmp_path / "half.gguf"
    path.write_bytes(data[: len(data) // 2])
    with EngineClient(path, n_threads=1) as eng, pytest.raises(ModelFileDamaged) as info:
        eng.load()
    assert "llama.cpp could not load it" in str(info.value) or "incomplete" in str(info.value)


def test_generation_stops_on_a_token_id(engine: EngineClient) -> None:
    """Control tokens such as Code Llama 70B's <step> have no text: the stop is by id."""
    prompt = engine.tokenize("hello", add_bos=True)
    n_vocab = engine.load()["n_vocab"]
    probs = engine.next_token_probs(prompt, list(range(n_vocab)))
    first_id = max(probs, key=lambda i: probs[i])  # what greedy decoding emits first
    events = list(engine.generate(prompt, max_tokens=50, temperature=0.0, stop_ids=[first_id]))
    assert events[-1].finish_reason == "stop"
    text = "".join(e.text for e in events if not e.done)
    assert text.encode() == engine.token_pieces([first_id])[0]  # nothing after the stop token


# --- Stop, hangs and the heartbeat --------------------------------------------------------


def test_a_stop_waiting_behind_another_request_ends_at_once_and_only_that_one(
        engine: EngineClient) -> None:
    """Two chats on one model: Stop in the waiting one must not cut the other's answer."""
    from core.models.engine import CancelToken

    prompt = engine.tokenize("hello", add_bos=True)
    order: list[str] = []
    first_started, second_stopped = threading.Event(), threading.Event()
    results: list[str | None] = []

    def first() -> None:
        for ev in engine.generate(prompt, max_tokens=100, temperature=0.0):
            if not ev.done and not first_started.is_set():
                first_started.set()
                second_stopped.wait(timeout=120)  # keep the engine held meanwhile
            if ev.done:
                order.append("first-done")
                results.append(ev.finish_reason)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_started.wait(timeout=120)
        token = CancelToken()
        waiting = engine.generate(prompt, max_tokens=100, temperature=0.0, cancel=token)
        threading.Timer(0.05, token.cancel).start()  # Stop while it waits for the engine
        events = list(waiting)
        order.append("second-done")
        second_stopped.set()
    finally:
        second_stopped.set()
        thread.join(timeout=120)
    assert order == ["second-done", "first-done"]
    assert [e.finish_reason for e in events] == ["cancelled"] and not events[0].text
    assert results == ["length"]


def test_a_cancelled_load_raises_cancelled_and_the_model_loads_later(tiny_gguf: Path) -> None:
    from core.errors import Cancelled

    with EngineClient(tiny_gguf, n_ctx=256, n_threads=1) as eng:
        def stop_when_sent() -> None:
            while not eng._inflight:  # the load request is on its way to the child
                time.sleep(0.001)
            eng.cancel()

        stopper = threading.Thread(target=stop_when_sent)
        stopper.start()
        with pytest.raises(Cancelled, match="loading the model was stopped"):
            eng.load()
        stopper.join()
        assert eng.info is None
        assert eng.load()["n_vocab"] > 0  # a later request loads it


def test_a_child_that_ignores_a_cancel_is_killed_and_the_answer_ends_cancelled(
        engine: EngineClient) -> None:
    prompt = engine.tokenize("hello", add_bos=True)
    received: list[str] = []
    for event in engine.generate(prompt, max_tokens=3000, temperature=0.0):
        if event.done:
            final = event
            break
        received.append(event.text)
        if len(received) == 2:
            assert engine.pid is not None
            os.kill(engine.pid, signal.SIGSTOP)  # frozen: it cannot answer the cancel
            engine.cancel()
    assert final.finish_reason == "cancelled"
    assert not engine.alive  # killed after the grace, not left frozen
    assert list(engine.generate(prompt, max_tokens=5, temperature=0.0))[-1].completion_tokens == 5


def test_a_child_that_stops_answering_is_killed_and_reported(
        engine: EngineClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.models.engine as engine_module
    from core.errors import EngineHung

    monkeypatch.setattr(engine_module, "READ_TIMEOUT_S", 3.0)
    prompt = engine.tokenize("hello", add_bos=True)
    received: list[str] = []
    with pytest.raises(EngineHung) as info:
        for event in engine.generate(prompt, max_tokens=3000, temperature=0.0):
            received.append(event.text)
            if len(received) == 2:
                pid = engine.pid
                assert pid is not None
                os.kill(pid, signal.SIGSTOP)
    assert "stopped answering for 3 s" in info.value.sentence()
    assert info.value.partial == "".join(received)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left stopped
    assert list(engine.generate(prompt, max_tokens=5, temperature=0.0))[-1].completion_tokens == 5


@pytest.fixture(scope="module")
def slow_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random model big enough that reading a 3000-token prompt takes seconds."""
    from tools.tiny_gguf import make_tiny_gguf

    return make_tiny_gguf(tmp_path_factory.mktemp("slow") / "slow.gguf", n_embd=512, n_layer=4,
                          n_head=8, n_ff=2048)


@pytest.fixture
def slow_engine(slow_gguf: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CORRAL_ENGINE_HEARTBEAT_S", "0.2")
    with EngineClient(slow_gguf, n_ctx=4096, n_threads=1) as eng:
        eng.load()
        yield eng


def long_prompt(eng: EngineClient) -> list[int]:
    return eng.tokenize("hello world " * 1500, add_bos=True)[:3000]


def test_a_long_request_keeps_the_child_alive_with_heartbeats(
        slow_engine: EngineClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt that takes longer than the read timeout is not mistaken for a hang."""
    import core.models.engine as engine_module

    monkeypatch.setattr(engine_module, "READ_TIMEOUT_S", 1.0)
    prompt = long_prompt(slow_engine)
    events = list(slow_engine.generate(prompt, max_tokens=2, temperature=0.0))
    assert events[-1].finish_reason == "length" and events[-1].prompt_evaluated == len(prompt)
    assert slow_engine.heartbeats >= 6  # 0.2 s apart: it ran past the 1 s timeout


def test_stop_while_the_prompt_is_read_aborts_llama_cpp(
        slow_engine: EngineClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child itself stops mid-prompt (llama.cpp's abort callback): no kill is needed, the
    model stays loaded, and the prompt was not read to the end first."""
    import core.models.engine as engine_module

    monkeypatch.setattr(engine_module, "CANCEL_GRACE_S", 600.0)  # never the kill fallback
    prompt = long_prompt(slow_engine)
    pid = slow_engine.pid
    stream = slow_engine.generate(prompt, max_tokens=5, temperature=0.0)
    beats = slow_engine.heartbeats

    def stop_after_a_heartbeat() -> None:
        while slow_engine.heartbeats == beats:  # it is reading the prompt now
            time.sleep(0.01)
        slow_engine.cancel()

    stopper = threading.Thread(target=stop_after_a_heartbeat)
    stopper.start()
    events = list(stream)
    stopper.join()
    done = events[-1]
    assert done.finish_reason == "cancelled" and done.completion_tokens == 0
    assert done.prompt_evaluated is not None and done.prompt_evaluated < len(prompt)
    assert slow_engine.pid == pid and slow_engine.info is not None
    again = list(slow_engine.generate(prompt[:50], max_tokens=3, temperature=0.0))
    assert again[-1].finish_reason == "length"


def test_closing_an_idle_engine_never_stops_its_next_child(
        tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.models.engine as engine_module

    monkeypatch.setattr(engine_module, "CANCEL_GRACE_S", 0.01)
    with EngineClient(tiny_gguf, n_ctx=4096, n_threads=1) as eng:
        eng.load()
        eng.close()  # nothing in flight: nothing to cancel, no kill timer left behind
        prompt = eng.tokenize("hello", add_bos=True)
        events = list(eng.generate(prompt, max_tokens=1000, temperature=0.0))
        assert events[-1].finish_reason == "length" and events[-1].completion_tokens == 1000
