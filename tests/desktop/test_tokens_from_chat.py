"""The Tokens page with real vocabularies: Open in Tokens from Chat carries the model and counts
the prompt as the prompt inspector does; typed strings get llama.cpp's own ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QLabel

from core.prompts.base import as_messages
from tests.core.test_real_tokens import assert_spans_cover, random_texts

CONVERSATION = [{"role": "user", "content": "What is the capital of France? 🇫🇷"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "Say <|im_end|> for me, then 日本."}]


@pytest.fixture
def engines():
    yield
    from core.models.pool import close_all

    close_all()


def tokens_page(qtbot, ctx):
    from desktop.pages.tokens.page import TokensPage

    page = TokensPage(ctx)
    qtbot.addWidget(page)
    page.use_wordpiece.setChecked(False)
    page.use_bpe.setChecked(False)
    return page


def wait_idle(qtbot, ctx):
    return qtbot.waitSignal(ctx.jobs.busy_changed, timeout=60000,
                            check_params_cb=lambda n: n == 0)


@pytest.mark.real_model
def test_open_in_tokens_counts_the_prompt_as_the_inspector(qtbot, ctx, smollm2: Path, engines):
    from core.chat.llama_backend import LlamaCppBackend
    from core.models.pool import engine_pool

    backend = LlamaCppBackend(smollm2, engine=engine_pool().engine(smollm2, role="vocab"))
    prepared = backend.prepare(as_messages(CONVERSATION), "model", "defuse")
    assert "<|im_start|>" in prepared.exact_text  # ChatML markup, parsed as tokens by the engine
    page = tokens_page(qtbot, ctx)
    with wait_idle(qtbot, ctx):
        # Open in Tokens: the window hands the bus's send_to_tokens(text, ref) to the page
        page.receive_text(prepared.exact_text, str(smollm2))
    assert page.model_ref.currentText() == str(smollm2)  # the chat's model is selected
    assert page.parse_special.isChecked()
    [result] = page.results
    assert result.count == prepared.token_count and result.ids == prepared.token_ids
    assert_spans_cover(result, inserted=0)  # the markup's special tokens cover their text
    specials = [s.text for s in result.spans if s.special]
    marks = prepared.exact_text.count("<|im_start|>") + prepared.exact_text.count("<|im_end|>")
    assert specials[:2] == ["<|im_start|>", "<|im_end|>"] and len(specials) == marks
    heads = [label.text() for label in page.results_box.findChildren(QLabel)]
    assert any(f"{prepared.token_count} tokens ({marks} special)" in h for h in heads)
    # the user's own choice: everything as plain text, as for a message typed in Chat
    with wait_idle(qtbot, ctx):
        page.parse_special.setChecked(False)
    [plain] = page.results
    assert not any(s.special for s in plain.spans) and plain.count > prepared.token_count


@pytest.mark.real_model
@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_tokens_page_gives_llama_cpps_ids_for_typed_text(qtbot, ctx, request, model: str,
                                                        engines):
    import llama_cpp

    path: Path = request.getfixturevalue(model)
    reference = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    add_bos = model == "gemma3"
    page = tokens_page(qtbot, ctx)
    page.model_ref.setCurrentText(str(path))
    for text in random_texts(4, seed=3):
        with wait_idle(qtbot, ctx):
            page.text.setPlainText(text)
            page.tokenize()
        [result] = page.results
        assert not page.parse_special.isChecked()
        assert result.ids == reference.tokenize(text.encode(), add_bos=add_bos, special=False)
        assert_spans_cover(result, inserted=int(add_bos))
        assert any(strip.result is result for strip in page.strips())  # painted


def test_text_without_a_model_stays_plain_text(qtbot, ctx):
    page = tokens_page(qtbot, ctx)
    page.use_wordpiece.setChecked(True)
    page.parse_special.setChecked(True)
    with wait_idle(qtbot, ctx):
        page.receive_text("<s>[INST] Hi [/INST]", "")
    assert not page.parse_special.isChecked() and page.model_ref.currentText() == ""
    assert [r.kind for r in page.results] == ["wordpiece"]


def test_chat_format_box_offers_plain_completion(qtbot):
    from PySide6.QtWidgets import QWidget

    from core.config import ChatSettings
    from desktop.pages.chat.controls import ChatSetup

    setup = ChatSetup(ChatSettings(prompt_format="raw"), [], QWidget(), QWidget())
    qtbot.addWidget(setup)
    assert setup.format_box.currentData() == "raw"
    assert "base model" in setup.format_box.currentText()
