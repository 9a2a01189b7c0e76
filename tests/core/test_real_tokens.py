"""Real vocabularies on the Tokens view and `corral tokens`: SmolLM2 (byte-level BPE, 49,152
tokens) and Gemma 3 (SentencePiece, 262k tokens). On 200 seeded random Unicode strings the ids
equal llama.cpp's own tokenizer and the spans cover the text; `corral prompt --model` counts
with the vocabulary alone and agrees with the chat backend."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from core.analysis.tokens import TokenizedText
from core.cli import run_subcommand

pytestmark = pytest.mark.real_model

#: what users paste: words, whitespace runs, accents, combining marks, CJK, emoji and ZWJ
#: sequences, right-to-left text, digits, punctuation and special-token lookalikes
POOLS: dict[str, list[str]] = {
    "ascii": ["hello", "World", "the", "tokenizer", "x", "API", "don't", "e.g.", "Zebra"],
    "space": [" ", "  ", "    ", "\n", "\n\n", "\t", " \n ", "\r\n", "\u00a0", "\u3000"],
    "accent": ["café", "naïve", "Ångström", "über", "Łódź", "ñ", "façade", "Ærø"],
    "combining": ["e\u0301", "a\u0308\u0301", "n\u0303", "\u0301", "o\u0328\u0304"],
    "cjk": ["日本語", "中文", "한국어", "カタカナ", "漢", "東京は日本の首都です。"],
    "emoji": ["😀", "👋🏽", "🇫🇷", "❤️", "🤖", "🫠"],
    "zwj": ["👨\u200d👩\u200d👧", "🏳\ufe0f\u200d🌈", "\u200d", "👩🏽\u200d💻"],
    "rtl": ["שלום", "مرحبا", "\u202eabc\u202c", "עברית", "سلام"],
    "digits": ["0", "42", "3.14159", "1,000,000", "٣", "２０２４"],
    "punct": [".", ",", "!?", "—", "«»", "()", "<|", "|>", "</s>", "<s>", "[INST]", "<bos>",
              "<|im_start|>", "```", "\\"],
}


def random_texts(n: int, seed: int) -> list[str]:
    """``n`` seeded random strings of 1-12 pieces drawn from ``POOLS``."""
    rng = random.Random(seed)
    kinds = list(POOLS)
    return ["".join(rng.choice(POOLS[rng.choice(kinds)]) for _ in range(rng.randint(1, 12)))
            for _ in range(n)]


def assert_spans_cover(result: TokenizedText, inserted: int) -> None:
    """Span texts rebuild the input in order; the token bytes are the text's bytes (after a
    possible dummy-prefix space), and each span ends at the last character the bytes up to
    its token complete (a byte-fallback piece of a character covers nothing)."""
    text = result.text
    assert result.lossless, text
    assert "".join(s.text for s in result.spans) == text
    data = text.encode("utf-8")
    tokens = result.spans[inserted:]
    joined = b"".join(s.bytes for s in tokens)
    prefix = len(joined) - len(data)
    assert prefix in (0, 1) and joined[prefix:] == data and joined[:prefix] in (b"", b" ")
    pos, done = 0, -prefix
    for s in tokens:
        assert s.start == pos and s.text == text[s.start : s.end]
        done += len(s.bytes)
        assert len(text[: s.end].encode()) <= max(done, 0)
        if s.end < len(text):
            assert len(text[: s.end + 1].encode()) > done
        pos = s.end
    assert pos == len(text)


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def vocab(request: pytest.FixtureRequest) -> Any:
    """(path, Corral's model tokenizer through the vocab engine, llama.cpp in this process)."""
    import llama_cpp

    from core.analysis.token_sources import model_tokenizer
    from core.config import Settings
    from core.models.pool import close_all

    path: Path = request.getfixturevalue(request.param)
    tok = model_tokenizer(str(path), Settings())
    reference = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    yield path, tok, reference
    close_all()


def test_random_unicode_ids_equal_llama_cpp_and_spans_cover_the_text(vocab: Any) -> None:
    path, tok, reference = vocab
    add_bos = tok.add_bos
    assert add_bos == (path.name.startswith("gemma"))  # Gemma adds BOS, SmolLM2 does not
    assert tok.kind == ("sentencepiece" if add_bos else "bpe")
    for text in random_texts(200, seed=12):
        result = tok.tokenize(text)  # one vocabulary engine for all 200
        expected = reference.tokenize(text.encode(), add_bos=add_bos, special=False)
        assert result.ids == expected, text
        assert not any(s.special for s in result.spans[int(add_bos):]), text
        assert_spans_cover(result, int(add_bos))


def test_corral_tokens_cli_gives_llama_cpps_ids(vocab: Any, capsys: pytest.CaptureFixture[str]
                                                ) -> None:
    path, tok, reference = vocab
    for text in random_texts(200, seed=7):  # the same 200-string check, through the command
        assert run_subcommand("tokens", [text, "-t", str(path), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)["tokenizers"][0]
        assert [t["id"] for t in out["tokens"]] == reference.tokenize(
            text.encode(), add_bos=tok.add_bos, special=False)
        assert out["lossless"] and "".join(t["text"] for t in out["tokens"]) == text


def test_corral_tokens_special_reads_a_rendered_prompt_as_the_engine(
        smollm2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import llama_cpp

    from core.models.pool import close_all

    prompt = "<|im_start|>user\nWhat is <|im_end|>?<|im_end|>\n<|im_start|>assistant\n"
    reference = llama_cpp.Llama(model_path=str(smollm2), vocab_only=True, verbose=False)
    try:
        assert run_subcommand("tokens", [prompt, "-t", str(smollm2), "--special", "--json"]) == 0
        parsed = json.loads(capsys.readouterr().out)["tokenizers"][0]
        assert run_subcommand("tokens", [prompt, "-t", str(smollm2), "--json"]) == 0
        plain = json.loads(capsys.readouterr().out)["tokenizers"][0]
    finally:
        close_all()
    ids = [t["id"] for t in parsed["tokens"]]
    assert ids == reference.tokenize(prompt.encode(), add_bos=False, special=True)
    specials = [t for t in parsed["tokens"] if t["special"]]
    assert [t["text"] for t in specials] == ["<|im_start|>", "<|im_end|>", "<|im_end|>",
                                             "<|im_start|>"]
    assert parsed["lossless"] and "".join(t["text"] for t in parsed["tokens"]) == prompt
    # without --special, typed control-token texts stay plain text (as in a chat message)
    assert not any(t["special"] for t in plain["tokens"]) and plain["count"] > parsed["count"]


# --- `corral prompt --model` counts with the vocabulary alone --------------------------------

CONVERSATION = [{"role": "system", "content": "Réponds en une phrase."},
                {"role": "user", "content": "What is the capital of France? 🇫🇷"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of 日本?"}]


def test_prompt_count_reads_the_vocabulary_alone_and_equals_the_chat_backend(
        smollm2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.chat.llama_backend import LlamaCppBackend
    from core.models.pool import close_all, engine_pool
    from core.prompts.base import as_messages

    conv = tmp_path / "conversation.json"
    conv.write_text(json.dumps(CONVERSATION), encoding="utf-8")
    here = str(smollm2.resolve())
    try:
        counts = {}
        for fmt in ("model", "raw"):
            assert run_subcommand("prompt", [str(conv), "-f", fmt, "-m", str(smollm2)]) == 0
            counts[fmt] = json.loads(capsys.readouterr().out)
        # only a vocabulary engine ran: the weights were never loaded
        assert [m.role for m in engine_pool().loaded() if m.path == here] == ["vocab"]
        assert engine_pool().engine(smollm2, role="vocab").options["vocab_only"] is True
        chat = LlamaCppBackend(smollm2, n_ctx=512, n_threads=1)  # loads the weights
        for fmt, out in counts.items():
            prepared = chat.prepare(as_messages(CONVERSATION), fmt, "refuse")
            assert out["tokens"] == prepared.token_count and out["prompt"] == prepared.exact_text
    finally:
        close_all()
    assert counts["model"]["prompt"].startswith("<|im_start|>system\nRéponds")
    assert counts["raw"]["prompt"] == "\n\n".join(m["content"] for m in CONVERSATION)
