"""The Chat page driven as a user would: the tiny GGUF in the engine child and the loopback
Ollama server; stream, Stop, Regenerate, Edit, inspector, and history after a restart."""

from __future__ import annotations

import pytest

from desktop.pages.chat.page import ChatPage

WAIT = 60_000


def open_page(qtbot, ctx, ref: str) -> ChatPage:
    page = ChatPage(ctx)
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.open_model(ref)
    qtbot.waitUntil(lambda: page.backend is not None or bool(page.error.text()), timeout=WAIT)
    assert page.backend is not None, page.error.text()
    return page


def send(qtbot, page: ChatPage, text: str) -> None:
    page.input.setPlainText(text)
    page.send()
    assert page.turn is not None
    qtbot.waitUntil(lambda: page.turn is None, timeout=WAIT)


def test_stream_stop_regenerate_and_reopen(qtbot, ctx, tiny_gguf) -> None:
    page = open_page(qtbot, ctx, str(tiny_gguf))
    assert "llama2" in page.format_note.text()
    page.params_form.max_tokens.setValue(200)
    page.params_form.temperature.setValue(0.0)
    send(qtbot, page, "hello model")
    msgs = page.store.messages(page.conversation_id)
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[1].completion_tokens == 200 and msgs[1].content
    shown = page.transcript.toPlainText()
    assert msgs[1].content.split()[0] in shown and "200 tokens" in shown and "tokens/s" in shown
    assert page.input.toPlainText() == ""

    # Stop after 20 tokens keeps what came
    page.params_form.max_tokens.setValue(2000)
    page.input.setPlainText("and now a long one")
    page.send()
    qtbot.waitUntil(lambda: page.meter.answer >= 20 or page.turn is None, timeout=WAIT)
    page.stop()
    qtbot.waitUntil(lambda: page.turn is None, timeout=WAIT)
    stopped = page.store.messages(page.conversation_id)[-1]
    assert stopped.finish_reason == "cancelled" and 20 <= stopped.completion_tokens < 2000
    assert stopped.content and "stopped" in page.transcript.toPlainText()

    # Regenerate replaces the last answer
    page.params_form.max_tokens.setValue(30)
    page.regenerate()
    qtbot.waitUntil(lambda: page.turn is None, timeout=WAIT)
    last = page.store.messages(page.conversation_id)[-1]
    assert last.id != stopped.id and last.completion_tokens == 30
    assert len(page.store.messages(page.conversation_id)) == 4

    # Edit the first message and resend: what followed is replaced
    first = page.store.messages(page.conversation_id)[0]
    page._on_action("edit", first.id, 0)
    assert page.input.toPlainText() == "hello model" and not page.edit_note.isHidden()
    send(qtbot, page, "hello again")
    msgs = page.store.messages(page.conversation_id)
    assert [m.content for m in msgs if m.role == "user"] == ["hello again"]

    # a new window on the same CORRAL_HOME finds the conversation
    cid = page.conversation_id
    again = ChatPage(ctx)
    qtbot.addWidget(again)
    assert again.conversations.list.count() == 1
    again.conversations.list.setCurrentRow(0)
    assert again.conversation_id == cid
    assert msgs[-1].content.split()[0] in again.transcript.toPlainText()
    qtbot.waitUntil(lambda: again.backend is not None, timeout=WAIT)
    ctx.jobs.wait_all()


def test_inspector_and_meter_show_the_exact_prompt(qtbot, ctx, tiny_gguf, tmp_path) -> None:
    page = open_page(qtbot, ctx, str(tiny_gguf))
    page.show()
    page.system_edit.setPlainText("Be brief.")
    page.inspect_button.setChecked(True)
    page.input.setPlainText("what is </s> this")
    qtbot.waitUntil(lambda: "[INST]" in page.inspector.view.toPlainText(), timeout=WAIT)
    text = page.inspector.view.toPlainText()
    assert text.startswith("<s>[INST]") and "<<SYS>>" in text
    assert "tokens by the model's own tokenizer" in page.inspector.summary.text()
    qtbot.waitUntil(lambda: page.meter.history > 0, timeout=WAIT)
    assert page.meter.system > 0 and page.meter.length
    page.grab().save(str(tmp_path / "chat.png"))
    ctx.jobs.wait_all()


def test_empty_and_bad_input_get_sentences(qtbot, ctx, tiny_gguf) -> None:
    page = ChatPage(ctx)
    qtbot.addWidget(page)
    page.input.setPlainText("hi")
    page.send()
    assert "Pick a model" in page.error.text()
    page.open_model("/no/such/model.gguf")
    qtbot.waitUntil(lambda: bool(page.error.text()) and "Pick" not in page.error.text(),
                    timeout=WAIT)
    assert "model" in page.error.text().lower()
    page = open_page(qtbot, ctx, str(tiny_gguf))
    page.input.setPlainText("   ")
    page.send()
    assert "empty" in page.error.text()
    ctx.jobs.wait_all()


@pytest.mark.ollama
def test_chat_through_the_loopback_ollama(qtbot, ctx, ollama_server) -> None:
    ollama_server.add_model("llama2:7b-chat")
    ctx.settings.ollama.host = ollama_server.host
    page = open_page(qtbot, ctx, "ollama:llama2:7b-chat")
    send(qtbot, page, "Hi")
    assert "Hello from the fake Ollama." in page.transcript.toPlainText()
    assert ollama_server.requests_to("/api/generate")[-1].body["prompt"] == "[INST] Hi [/INST]"
    ollama_server.script_generate(["Part", "ial"], drop=True)
    page.regenerate()
    qtbot.waitUntil(lambda: page.turn is None, timeout=WAIT)
    last = page.store.messages(page.conversation_id)[-1]
    assert last.interrupted and last.content == "Partial"
    assert "Retry" in page.transcript.toPlainText() and page.error.text()
    page._on_action("retry", last.id, 0)
    qtbot.waitUntil(lambda: page.turn is None, timeout=WAIT)
    assert page.store.messages(page.conversation_id)[-1].content == "Hello from the fake Ollama."
    ctx.jobs.wait_all()
