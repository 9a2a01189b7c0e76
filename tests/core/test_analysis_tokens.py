"""Token spans for every tokenizer kind on nasty texts: they cover the text, ids match encode."""

from __future__ import annotations

import unicodedata

import pytest

from core.analysis.bpe_steps import CLASSIC_TEXT, apply_merges, bpe_steps, learn_merges
from core.analysis.one_hot import UNKNOWN, one_hot
from core.analysis.tokens import (
    TokenizedText,
    TokenSpan,
    align_pieces,
    bytes_label,
    coverage_groups,
    cut_points,
    differing_cuts,
)

NASTY = [
    "Hello, wörld! 👋",
    "👩‍👩‍👧 family 🇯🇵 flag",
    "東京は日本の首都です。",
    "e\u0301 cafe\u0301 n\u0303o",
    "\tTabbed\tline\n\nnew  paragraph\r\n",
    "   leading spaces",
    "<s> [INST] hi [/INST] </s> <|endoftext|> <0xE6>",
    "[CLS] [SEP] [UNK] [PAD] ##ing",
    "",
    " ",
    "a",
    "mixed ASCII and 😀😀 emoji, ünïcödé",
]

# FORMATS 7.3: Llama 2 vocabulary, "Hello, wörld! 👋", add_bos=True
L2_TEXT = "Hello, wörld! 👋"
L2_IDS = [1, 15043, 29892, 281, 1340, 430, 29991, 29871, 243, 162, 148, 142]
L2_HEX = ["3c733e", "2048656c6c6f", "2c", "2077", "c3b672", "6c64", "21", "20",
          "f0", "9f", "91", "8b"]
L2_EXPECTED = [
    (1, b"", 0, 0), (15043, b" Hello", 0, 5), (29892, b",", 5, 6), (281, b" w", 6, 8),
    (1340, b"\xc3\xb6r", 8, 10), (430, b"ld", 10, 12), (29991, b"!", 12, 13),
    (29871, b" ", 13, 14), (243, b"\xf0", 14, 14), (162, b"\x9f", 14, 14),
    (148, b"\x91", 14, 14), (142, b"\x8b", 14, 15),
]


def assert_covers(result: TokenizedText) -> None:
    """The lossless promise: span texts in order rebuild the input, offsets are consistent."""
    assert result.lossless
    assert "".join(s.text for s in result.spans) == result.text
    pos = 0
    for s in result.spans:
        assert s.start == pos and s.text == result.text[s.start : s.end]
        pos = s.end
    assert pos == len(result.text)


# --- the pure alignment -----------------------------------------------------------------


def test_alignment_matches_the_formats_vector() -> None:
    pieces = [bytes.fromhex(h) for h in L2_HEX]
    spans, lossless = align_pieces(L2_TEXT, L2_IDS, pieces, [True] + [False] * 11)
    assert lossless
    got = [(s.id, b"" if s.special else s.bytes, s.start, s.end) for s in spans]
    assert got == L2_EXPECTED
    assert spans[0].special and spans[0].piece == "<s>"
    assert [s.piece for s in spans[8:]] == ["<0xF0>", "<0x9F>", "<0x91>", "<0x8B>"]
    assert spans[-1].text == "👋"  # the byte that completes the emoji covers it
    assert coverage_groups(spans)[-1] == [8, 9, 10, 11]


def test_partial_utf8_is_shown_as_hex_not_replacement_characters() -> None:
    assert bytes_label(b" \xf0\x9f\x91") == " <0xF0><0x9F><0x91>"
    assert bytes_label(b"\x8b") == "<0x8B>"
    assert bytes_label("wörld".encode()) == "wörld"
    assert "\ufffd" not in bytes_label(b"\xe6\x97")


def test_pieces_that_do_not_rebuild_the_text_are_flagged_not_lossless() -> None:
    text = "naïve café"
    pieces = [b"na", b" \xe2\x96\x85 ", b"ve", b" caf", b"\xc3\xa9"]  # an <unk> in the middle
    spans, lossless = align_pieces(text, [1, 0, 2, 3, 4], pieces, [False] * 5)
    assert not lossless
    assert [s.text for s in spans] == ["na", "ï", "ve", " caf", "é"]


def test_cuts_agree_across_whitespace_conventions() -> None:
    text = "Hello world"
    spm = [TokenSpan(1, "Hello", 0, 5, b" Hello"), TokenSpan(2, " world", 5, 11, b" world")]
    wp = [TokenSpan(1, "Hello", 0, 5, b"hello"), TokenSpan(2, "world", 6, 11, b"world")]
    odd = [TokenSpan(1, "Hel", 0, 3, b"Hel"), TokenSpan(2, "lo world", 3, 11, b"lo world")]
    assert cut_points(text, spm) == cut_points(text, wp) == {6}
    a, b, c = (TokenizedText(n, "x", text, s) for n, s in (("a", spm), ("b", wp), ("c", odd)))
    assert differing_cuts([a, b]) == set()
    assert differing_cuts([a, b, c]) == {3, 6}


# --- a GGUF model's own vocabulary through the engine child ------------------------------


@pytest.fixture(scope="module")
def tiny_vocab(tiny_gguf):
    from core.analysis.token_sources import model_tokenizer
    from core.config import Settings
    from core.models.pool import close_all

    tok = model_tokenizer(str(tiny_gguf), Settings())
    yield tok
    close_all()


@pytest.fixture(scope="module")
def reference_llama(tiny_gguf):
    """llama.cpp in this process, only as the reference the engine child must agree with."""
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(tiny_gguf), vocab_only=True, verbose=False)


@pytest.mark.parametrize("text", NASTY)
def test_model_vocabulary_spans_cover_text_and_ids_match_llama_cpp(
    tiny_vocab, reference_llama, text: str
) -> None:
    result = tiny_vocab.tokenize(text)
    assert result.ids == reference_llama.tokenize(text.encode(), add_bos=True, special=False)
    assert_covers(result)
    assert result.spans[0].special and result.spans[0].id == 1  # BOS, as the model sees it
    content = b"".join(s.bytes for s in result.spans if not s.special)
    assert content in (text.encode(), b" " + text.encode())  # only the dummy-prefix space


def test_model_vocabulary_shows_byte_fallback_honestly(tiny_vocab) -> None:
    result = tiny_vocab.tokenize(L2_TEXT)
    assert result.kind == "sentencepiece"
    emoji = [s for s in result.spans if s.piece.startswith("<0x")][-4:]
    assert [s.piece for s in emoji] == ["<0xF0>", "<0x9F>", "<0x91>", "<0x8B>"]
    assert [(s.start, s.end) for s in emoji] == [(14, 14), (14, 14), (14, 14), (14, 15)]
    assert [s.bytes for s in emoji] == [b"\xf0", b"\x9f", b"\x91", b"\x8b"]
    assert result.spans[1].bytes == b" Hello" and result.spans[1].text == "Hello"


def test_special_token_lookalikes_stay_plain_text_for_the_model(tiny_vocab) -> None:
    result = tiny_vocab.tokenize("</s><s>")
    assert [s.special for s in result.spans] == [True] + [False] * (result.count - 1)
    assert 2 not in result.ids[1:] and 1 not in result.ids[1:]


# --- the embedder's WordPiece -------------------------------------------------------------


@pytest.fixture(scope="module")
def wordpiece():
    from core.analysis.token_sources import WordPieceTokenizer

    return WordPieceTokenizer()


@pytest.fixture(scope="module")
def raw_wordpiece():
    from tokenizers import Tokenizer

    from core.rag.embedder import minilm_path

    return Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))


def _visible(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNPS"


@pytest.mark.parametrize("text", NASTY)
def test_wordpiece_spans_point_into_the_text_and_ids_match_encode(
    wordpiece, raw_wordpiece, text: str
) -> None:
    result = wordpiece.tokenize(text)
    raw_wordpiece.no_truncation()
    raw_wordpiece.no_padding()
    assert result.ids == raw_wordpiece.encode(text).ids
    assert not result.lossless
    covered: set[int] = set()
    last = 0
    for s in result.spans:
        assert s.text == text[s.start : s.end]
        assert s.start >= last or s.special  # in order
        last = max(last, s.start)
        covered.update(range(s.start, s.end))
    assert result.spans[0].piece == "[CLS]" and result.spans[-1].piece == "[SEP]"
    assert result.spans[-1].start == len(text)
    missing = [ch for i, ch in enumerate(text) if _visible(ch) and i not in covered]
    assert missing == []


def test_wordpiece_marks_typed_special_tokens_as_the_embedder_sees_them(wordpiece) -> None:
    result = wordpiece.tokenize("a [SEP] b")
    typed = [s for s in result.spans if s.text == "[SEP]"]
    assert typed and typed[0].special and typed[0].id == result.spans[-1].id


# --- a BPE trained on the user's text ----------------------------------------------------


@pytest.fixture(scope="module")
def trained_bpe():
    from core.analysis.token_sources import TrainedBpeTokenizer

    corpus = [CLASSIC_TEXT, "The quick brown fox jumps over the lazy dog. " * 5] + NASTY
    return TrainedBpeTokenizer.train(corpus, vocab_size=400)


@pytest.mark.parametrize("text", NASTY + ["Unseen: ζωή Ωμέγα, 한국어, 🦙🦙"])
def test_trained_bpe_spans_cover_text_and_ids_match_encode(trained_bpe, text: str) -> None:
    result = trained_bpe.tokenize(text)
    assert result.ids == trained_bpe.tokenizer.encode(text).ids
    assert_covers(result)
    assert b"".join(s.bytes for s in result.spans) == text.encode()


def test_trained_bpe_learns_frequent_words(trained_bpe) -> None:
    result = trained_bpe.tokenize("newest widest")
    assert result.count <= 3  # both words were frequent in the training text
    assert result.chars_per_token >= 13 / 3


# --- the step-by-step trainer and one-hot ---------------------------------------------


def test_bpe_steps_walk_the_classic_example() -> None:
    steps = list(bpe_steps(CLASSIC_TEXT, max_merges=10))
    assert [s.merged for s in steps[:8]] == [
        "es", "est", "est</w>", "lo", "low", "ne", "new", "newest</w>",
    ]
    assert steps[0].count == 9 and steps[0].describe().startswith("Step 1: merge 'e' + 's'")
    assert dict(steps[7].words)[("newest</w>",)] == 6
    assert apply_merges("lowest", learn_merges(CLASSIC_TEXT)) == ["low", "est</w>"]


def test_bpe_steps_stop_when_nothing_repeats() -> None:
    assert list(bpe_steps("abc", max_merges=5)) == []


def test_one_hot_has_one_one_per_row() -> None:
    oh = one_hot("the cat saw the dog")
    assert oh.vocabulary == ["cat", "dog", "saw", "the"]
    assert oh.matrix.shape == (5, 4) and (oh.matrix.sum(axis=1) == 1).all()
    assert (oh.matrix[0] == oh.matrix[3]).all()  # the same word, the same vector
    unk = one_hot("the bird", vocabulary=["the", "cat"])
    assert unk.vocabulary[-1] == UNKNOWN and unk.matrix[1, -1] == 1
