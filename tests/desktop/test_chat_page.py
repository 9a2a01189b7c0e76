"""The Chat page driven as a user would: the tiny GGUF in the engine child and the loopback
Ollama server; stream, Stop, Regenerate, Edit, inspector, the context meter, and history after
a restart. Stop keeps the partial answer without an error, the streamed answer starts on a
line of its own, and a superseded prompt count is never painted."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import Qt

from core.chat.backends import BackendInfo, PreparedPrompt, StreamEvent
from core.errors import StreamInterrupted
from desktop.pages.chat.jobs import BATCH_S, PromptViews
from desktop.pages.chat.page import ChatPage
from tests.desktop.chat_actions import WAIT, ScriptedModel, click_link, open_page, send


def counted(qtbot, page: ChatPage) -> None:
    """Wait until the meter shows the latest count of the draft (and its history)."""
    qtbot.waitUntil(lambda: page.prompt_watch.worker is not None
                    and page.prompt_watch.worker.is_done, timeout=WAIT)


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
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.meter.answer >= 20 or not page.turns.running, timeout=WAIT)
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    stopped = page.store.messages(page.conversation_id)[-1]
    assert stopped.finish_reason == "cancelled" and 20 <= stopped.completion_tokens < 2000
    assert stopped.content and "stopped" in page.transcript.toPlainText()
    assert page.error.text() == ""  # Stop is not an error

    # Regenerate replaces the last answer
    page.params_form.max_tokens.setValue(30)
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        click_link(qtbot, page, "Regenerate")
    last = page.store.messages(page.conversation_id)[-1]
    assert last.id != stopped.id and last.completion_tokens == 30
    assert len(page.store.messages(page.conversation_id)) == 4

    # Edit the first message and resend: what followed is replaced
    click_link(qtbot, page, "Edit")
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


def test_the_meter_counts_the_history_after_a_turn(qtbot, ctx, tiny_gguf) -> None:
    """After a turn the message box is empty; the history is still counted, exactly."""
    page = open_page(qtbot, ctx, str(tiny_gguf))
    page.params_form.max_tokens.setValue(12)
    counted(qtbot, page)
    assert (page.meter.history, page.meter.exact) == (0, True)  # nothing said yet
    assert page.meter.system > 0  # the prompt format's own tokens
    send(qtbot, page, "hello model")
    counted(qtbot, page)
    assert page.input.toPlainText() == ""
    assert page.meter.history > 12 and page.meter.exact
    assert "≈" not in page.meter.text()
    ctx.jobs.wait_all()


def test_during_a_regenerate_the_meter_no_longer_counts_the_answer_it_replaces(
        qtbot, ctx, tiny_gguf) -> None:
    page = open_page(qtbot, ctx, str(tiny_gguf))
    page.params_form.max_tokens.setValue(40)
    page.params_form.temperature.setValue(0.0)
    page.input.setPlainText("hello model")
    page.prompt_watch.refresh()  # now, not 300 ms after the last keystroke
    counted(qtbot, page)
    asked = page.meter.history  # the history with the message, before any answer
    assert asked > 0
    send(qtbot, page, "hello model")
    counted(qtbot, page)
    assert page.meter.history >= asked + 40  # now with the answer
    seen: list[tuple[int, int]] = []
    real = page.meter.set_answer
    page.meter.set_answer = lambda n: (real(n), seen.append((page.meter.history, n)))
    page.params_form.max_tokens.setValue(30)
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        click_link(qtbot, page, "Regenerate")
    streamed = [history for history, answer in seen if answer > 0]
    assert streamed and set(streamed) == {asked}, (streamed, asked)  # the old answer is gone
    counted(qtbot, page)
    assert page.meter.history >= asked + 30
    ctx.jobs.wait_all()


def test_the_context_length_picked_is_what_the_meter_shows(qtbot, ctx, tiny_gguf) -> None:
    """The Context length field re-counts: the model gets the length picked, but never more
    than it was trained on (the tiny model: 4,096)."""
    page = open_page(qtbot, ctx, str(tiny_gguf))
    counted(qtbot, page)
    assert page.meter.trained == 4096
    qtbot.mouseClick(page.params_button, Qt.MouseButton.LeftButton)
    field = page.params_form.context_length
    for typed, length in (("1024", 1024), ("100000", 4096)):
        field.selectAll()
        qtbot.keyClicks(field, typed)
        qtbot.waitUntil(lambda typed=typed: page.meter.requested == int(typed), timeout=WAIT)
        assert page.meter.length == length
    assert page.meter.text().endswith("/ 4,096 tokens (capped at the trained length)")
    assert "you picked 100,000, but the model was trained on 4,096" in page.meter.toolTip()
    field.selectAll()
    qtbot.keyClicks(field, "1024")
    qtbot.waitUntil(lambda: page.meter.length == 1024, timeout=WAIT)
    assert page.meter.text().endswith("/ 1,024 tokens (of 4,096 trained)")
    ctx.jobs.wait_all()


def test_inspector_and_meter_show_the_exact_prompt(qtbot, ctx, tiny_gguf, tmp_path) -> None:
    page = open_page(qtbot, ctx, str(tiny_gguf))
    page.system_edit.setPlainText("Be brief.")
    qtbot.mouseClick(page.inspect_button, Qt.MouseButton.LeftButton)
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
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    assert "Pick a model" in page.error.text()
    page.open_model("/no/such/model.gguf")
    qtbot.waitUntil(lambda: bool(page.error.text()) and "Pick" not in page.error.text(),
                    timeout=WAIT)
    assert "model" in page.error.text().lower()
    page = open_page(qtbot, ctx, str(tiny_gguf))
    page.input.setPlainText("   ")
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
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
    # the model's vocabulary is not at hand (no Ollama store here): the meter says ≈, and why
    counted(qtbot, page)
    assert page.meter.history > 0 and "≈" in page.meter.text()
    assert "estimates" in page.meter.toolTip()
    ollama_server.script_generate(["Part", "ial"], drop=True)
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        click_link(qtbot, page, "Regenerate")
    last = page.store.messages(page.conversation_id)[-1]
    assert last.interrupted and last.content == "Partial"
    assert "Retry" in page.transcript.toPlainText() and page.error.text()
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        click_link(qtbot, page, "Retry")
    assert page.store.messages(page.conversation_id)[-1].content == "Hello from the fake Ollama."
    ctx.jobs.wait_all()


# --- Stop and superseded work, on a scripted model ---------------------------------------------

WORDS = ["Partial ", "answer ", "so ", "far"]


class PausingModel(ScriptedModel):
    """A chat backend that streams WORDS, one batch each, then waits for Stop. Stopped, it ends
    the answer as llama.cpp does (finish reason "cancelled"), or its stream breaks off as a
    dropped connection does (it raises)."""

    def __init__(self, after_stop: str) -> None:
        self.after_stop = after_stop
        self.stopped = threading.Event()

    name = "pausing"


    def stream(self, prompt, params):
        for n, word in enumerate(WORDS, 1):
            yield StreamEvent(text=word, completion_tokens=n)
            time.sleep(2 * BATCH_S)  # each word is sent to the page before the next one
        assert self.stopped.wait(WAIT / 1000), "nobody pressed Stop"
        if self.after_stop == "raises":
            raise StreamInterrupted("the connection dropped")
        yield StreamEvent(done=True, finish_reason="cancelled", completion_tokens=len(WORDS))

    def cancel(self) -> None:
        self.stopped.set()


CUT = "Ollama cut the prompt to fit its context: the start of the conversation was left out."


class EstimatingModel(PausingModel):
    """Counts as Ollama does without the model's vocabulary (estimates), and answers at once,
    with the warning Ollama's cut prompt gives."""

    def __init__(self) -> None:
        super().__init__("finishes")

    def info(self) -> BackendInfo:
        return BackendInfo("ollama", "ollama:estimating", 4096, "llama2", "it is a test", True,
                           exact_counts=False)

    def count(self, messages, fmt, tags) -> int:
        return sum(len(m.content) // 4 + 5 for m in messages)

    def stream(self, prompt, params):
        yield StreamEvent(text="Short answer.", completion_tokens=3)
        yield StreamEvent(done=True, finish_reason="stop", completion_tokens=3, warning=CUT)


def page_on(qtbot, ctx, monkeypatch, backend) -> ChatPage:
    """The Chat page with ``backend`` opened through the model box."""
    import desktop.pages.chat.page as chat_page

    monkeypatch.setattr(chat_page, "open_model_job",
                        lambda job, ref, settings: (backend, backend.info()))
    page = ChatPage(ctx)
    qtbot.addWidget(page)
    page.resize(1200, 800)
    qtbot.keyClicks(page.model_box, "scripted")
    qtbot.keyClick(page.model_box, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: page.backend is backend, timeout=WAIT)
    return page


@pytest.mark.parametrize("after_stop", ["finishes", "raises"])
def test_stop_keeps_the_partial_answer_and_shows_no_error(qtbot, ctx, monkeypatch,
                                                          after_stop) -> None:
    errors: list[str] = []
    ctx.bus.error.connect(errors.append)
    model = PausingModel(after_stop)
    page = page_on(qtbot, ctx, monkeypatch, model)
    page.input.setPlainText("tell me a long story")
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    assert page.turns.running and page.stop_button.isEnabled()
    # the answer is streaming: its first words are on screen, below the message, with
    # "Assistant" on a line of its own
    qtbot.waitUntil(lambda: page.meter.answer >= 2, timeout=WAIT)
    lines = page.transcript.toPlainText().splitlines()
    assert "Assistant" in lines, lines
    at = lines.index("Assistant")
    assert lines[at - 1] == "tell me a long story" and lines[at + 1].startswith("Partial answer")
    with qtbot.waitSignal(page.turn_done, timeout=WAIT):
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    assert model.stopped.is_set()
    # no error anywhere: not under the transcript, not in the status bar
    assert page.error.text() == "" and errors == []
    # the partial answer is stored, all of it (also the words still held back), and shown
    [user, answer] = page.store.messages(page.conversation_id)
    assert user.content == "tell me a long story"
    assert answer.content == "".join(WORDS)
    if after_stop == "finishes":
        assert answer.finish_reason == "cancelled" and not answer.interrupted
    else:
        assert answer.interrupted and "connection dropped" in (answer.error or "")
    shown = page.transcript.toPlainText()
    assert "Partial answer so far" in shown
    assert ("stopped" if after_stop == "finishes" else "interrupted") in shown
    assert page.send_button.isEnabled() and not page.stop_button.isEnabled()
    assert not page.turns.running and page.conversations.list.count() == 1
    ctx.jobs.wait_all()


def test_an_answer_warning_and_estimated_counts_are_shown(qtbot, ctx, monkeypatch) -> None:
    page = page_on(qtbot, ctx, monkeypatch, EstimatingModel())
    send(qtbot, page, "hi")
    lines = page.transcript.toPlainText().splitlines()
    at = lines.index("Short answer.")
    assert lines[at + 1] == f"Warning: {CUT}"  # under the answer, before its stats
    assert "3 tokens" in lines[at + 2]
    counted(qtbot, page)
    assert page.meter.history > 0 and page.meter.text().count("≈") == 3
    assert "estimates" in page.meter.toolTip()
    ctx.jobs.wait_all()


def test_a_superseded_prompt_count_is_never_painted(qtbot, ctx, monkeypatch) -> None:
    import desktop.pages.chat.panels as panels

    gate = threading.Event()

    def views(job, session, draft, upto, kind, want_prompt) -> PromptViews:
        """The count of "slow" takes until the gate opens; any other is quick."""
        if draft == "slow":
            assert gate.wait(WAIT / 1000)
            return PromptViews(900, 1000, True, 4096, 0, PreparedPrompt(None, exact_text="SLOW"),
                               "", kind)
        return PromptViews(7, 10, True, 4096, 0, PreparedPrompt(None, exact_text="FAST"), "",
                           kind)

    monkeypatch.setattr(panels, "prompt_views_job", views)
    page = page_on(qtbot, ctx, monkeypatch, PausingModel("finishes"))
    page.show()
    try:
        qtbot.mouseClick(page.inspect_button, Qt.MouseButton.LeftButton)
        page.input.setPlainText("slow")
        page.prompt_watch.refresh()
        slow = page.prompt_watch.worker
        assert slow is not None
        page.input.setPlainText("fast")  # typed on, before the slow count came back
        page.prompt_watch.refresh()
        qtbot.waitUntil(lambda: "FAST" in page.inspector.view.toPlainText(), timeout=WAIT)
        assert (page.meter.system, page.meter.history) == (7, 10)
        assert slow.job.cancelled and not slow.is_done
    finally:
        gate.set()
    # the slow count ends now, with the older draft: what it found is dropped, never painted
    qtbot.waitUntil(lambda: slow.is_done, timeout=WAIT)  # its outcome reached the GUI thread
    assert "FAST" in page.inspector.view.toPlainText()
    assert "SLOW" not in page.inspector.view.toPlainText()
    assert (page.meter.system, page.meter.history) == (7, 10)
    ctx.jobs.wait_all()


def test_a_long_title_is_elided_with_the_whole_title_in_its_tooltip(qtbot, ctx,
                                                                     monkeypatch) -> None:
    page = page_on(qtbot, ctx, monkeypatch, EstimatingModel())
    page.show()
    qtbot.waitExposed(page)
    long = "Please explain in great detail why the sky over the sea looks like a rainbow"
    send(qtbot, page, long)
    titles = page.conversations.list
    assert titles.count() == 1
    item = titles.item(0)
    assert item.toolTip().startswith(long[:60])  # the stored title, whole
    # no sideways scrolling: the title ends in "…" inside the list
    assert titles.horizontalScrollBar().maximum() == 0
    assert titles.visualItemRect(item).right() <= titles.viewport().width()
    ctx.jobs.wait_all()
