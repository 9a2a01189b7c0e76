"""Token ids built segment by segment with the real llama.cpp tokenizer (tiny GGUF, engine child).

The Llama-2 token ids of FORMATS.md 1.3 need a Llama-2 vocabulary, which is not available
here; these tests check the structure instead: one BOS per turn and never two in a row, EOS
only after answers, user text unable to produce special tokens, and segment-wise ids equal to
tokenizing the reference string with special parsing on (FORMATS.md 1.2 / 1.5).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.chat.llama_backend import LlamaCppBackend
from core.errors import PromptFormatError
from core.models.engine import EngineClient
from core.prompts.formats import PromptTokenizer, render
from tests.core.test_chat_prompts import INPUTS
from tools.tiny_gguf import make_tiny_gguf


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    eng = EngineClient(tiny_gguf, n_ctx=512, n_threads=1)
    eng.load()
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def tok(engine) -> PromptTokenizer:
    return PromptTokenizer(engine, engine.load())


@pytest.mark.parametrize("tv", list(INPUTS))
def test_segment_ids_equal_reference_string_tokenized_with_specials(engine, tok, tv) -> None:
    rendered = render(INPUTS[tv], "llama2")
    ids = tok.ids(rendered)
    assert ids == engine.tokenize(rendered.text, add_bos=False, special=True)
    turns = (len(INPUTS[tv]) - (INPUTS[tv][0]["role"] == "system")) // 2
    assert ids[0] == tok.bos and ids[1] != tok.bos
    assert ids.count(tok.bos) == turns + 1 and ids.count(tok.eos) == turns
    # detokenized, each text segment shows SentencePiece's dummy-prefix space after <s>
    assert engine.detokenize(ids, special=True).decode().replace("<s> ", "<s>") == rendered.text


def test_user_text_cannot_make_special_tokens(engine, tok) -> None:
    msgs = [{"role": "user", "content": "a </s><s> b <unk>"}]
    ids = tok.ids(render(msgs, "llama2"))
    assert ids.count(tok.eos) == 0 and ids.count(tok.bos) == 1
    # the naive way (one string, special parsing on) would have injected them
    naive = engine.tokenize(render(msgs, "llama2").text, add_bos=False, special=True)
    assert naive.count(tok.eos) == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(alphabet=st.sampled_from(list("ab </>s[]INST<>\n")), min_size=1,
                              max_size=20).filter(str.strip), min_size=1, max_size=3))
def test_special_tokens_only_where_the_format_puts_them(tok, texts) -> None:
    msgs = []
    for i, t in enumerate(texts):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    if msgs[-1]["role"] != "user":
        msgs.append({"role": "user", "content": "ok"})
    rendered = render(msgs, "llama2", tags="defuse")
    ids = tok.ids(rendered)
    turns = len(msgs) // 2
    assert ids.count(tok.bos) == turns + 1 and ids.count(tok.eos) == turns
    assert ids[:2] != [tok.bos, tok.bos]


def test_codellama70b_needs_a_step_token(tok) -> None:
    with pytest.raises(PromptFormatError, match="<step>"):
        tok.ids(render(INPUTS["TV1_single_no_system"], "codellama70b"))


def test_codellama70b_text_segments_lose_the_dummy_prefix(engine, tok) -> None:
    seg = render(INPUTS["TV1_single_no_system"], "codellama70b").segments[1]
    assert seg.text == " Source: system" and not seg.dummy_prefix
    ids = tok.segment_ids(seg)
    assert engine.detokenize(ids, special=True) == b" Source: system"
    # with the dummy prefix the tokenizer would have produced two leading spaces
    assert engine.detokenize(engine.tokenize(seg.text), special=True).startswith(b"  ")


def test_model_format_through_the_engine_equals_llama2(tiny_gguf) -> None:
    backend = LlamaCppBackend(tiny_gguf, n_ctx=512, n_threads=1)
    msgs = render(INPUTS["TV3_two_turns_with_system"], "llama2")
    assert backend.info().format == "llama2"
    from core.prompts.base import as_messages

    m = as_messages(INPUTS["TV3_two_turns_with_system"])
    own = backend.prepare(m, "model", "refuse")
    assert own.exact_text == msgs.text
    assert own.token_ids == backend.prepare(m, "llama2", "refuse").token_ids


def test_model_format_without_template_is_a_clear_error(tmp_path) -> None:
    path = make_tiny_gguf(tmp_path / "plain.gguf", chat_template=None)
    backend = LlamaCppBackend(path, n_ctx=256, n_threads=1)
    from core.prompts.base import as_messages

    with pytest.raises(PromptFormatError, match="no chat template"):
        backend.prepare(as_messages(INPUTS["TV1_single_no_system"]), "model", "refuse")
    backend.engine.close()
