"""The llama.cpp engine child: load, tokenize, stream, embed, and survive crashes."""

from __future__ import annotations

import os
import signal
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
