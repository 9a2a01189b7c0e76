"""The Ollama adapter against the loopback Ollama-protocol server (or a real Ollama).

If CORRAL_TEST_OLLAMA names a real Ollama host, the tests marked ``live`` run against it too
(with its first model, or CORRAL_TEST_OLLAMA_MODEL); scripted failures run only on the fake.
"""

from __future__ import annotations

import os
import threading

import pytest

from core.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ModelNotFound,
    StreamInterrupted,
)
from core.models.ollama_client import OllamaClient
from tests.fixtures.ollama import FakeOllama

pytestmark = pytest.mark.ollama
MODEL = "llama2:7b"
HI = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(params=["fake", "live"])
def target(request: pytest.FixtureRequest, ollama_server: FakeOllama):
    """(client, model name): the fake server, and a real Ollama when CORRAL_TEST_OLLAMA is set."""
    if request.param == "fake":
        ollama_server.add_model(MODEL)
        yield OllamaClient(ollama_server.host, read_timeout=10), MODEL
        return
    host = os.environ.get("CORRAL_TEST_OLLAMA")
    if not host:
        pytest.skip("CORRAL_TEST_OLLAMA is not set")
    client = OllamaClient(host, read_timeout=300)
    names = [m.name for m in client.list()]
    model = os.environ.get("CORRAL_TEST_OLLAMA_MODEL") or (names[0] if names else "")
    if not model:
        pytest.skip("the real Ollama has no model")
    yield client, model


@pytest.fixture
def fake(ollama_server: FakeOllama) -> tuple[OllamaClient, FakeOllama]:
    ollama_server.add_model(MODEL)
    return OllamaClient(ollama_server.host, read_timeout=1.0), ollama_server


# --- every call, working ---------------------------------------------------------------


def test_version_list_show_ps(target) -> None:
    client, model = target
    assert client.version()
    assert client.is_running()
    names = [m.name for m in client.list()]
    assert model in names
    details = client.show(model)
    assert details.template or details.modelfile
    assert details.family
    assert isinstance(client.ps(), list)


def test_chat_streams_text_and_statistics(target) -> None:
    client, model = target
    chunks = list(client.chat(model, HI, {"num_predict": 8, "temperature": 0}))
    assert chunks[-1].done
    assert "".join(c.text for c in chunks).strip()
    assert chunks[-1].eval_count


def test_generate_raw_sends_the_prompt_untouched(target, ollama_server: FakeOllama) -> None:
    client, model = target
    prompt = "[INST] Say hello. [/INST]"
    chunks = list(client.generate_raw(model, prompt, {"num_predict": 8}))
    assert chunks[-1].done and chunks[-1].done_reason in ("stop", "length")
    if client.host == ollama_server.host:
        body = ollama_server.requests_to("/api/generate")[-1].body
        assert body["prompt"] == prompt and body["raw"] is True and body["stream"] is True
        assert "template" not in body and "system" not in body


def test_embed_returns_one_vector_per_text(target) -> None:
    client, model = target
    try:
        vectors = client.embed(model, ["a cat", "a dog"])
    except BackendError:
        pytest.skip("this model does not embed")
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) > 0


def test_pull_reports_progress_by_bytes_and_registers_the_model(fake) -> None:
    client, server = fake
    server.add_pullable("tiny:1b", sizes=(4000, 120))
    steps = list(client.pull("tiny:1b"))
    fractions = [p.fraction for p in steps if p.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(0 < f < 1 for f in fractions)
    assert steps[-1].done and steps[-1].status == "success"
    assert "tiny:1b" in [m.name for m in client.list()]


def test_create_then_delete(fake) -> None:
    client, server = fake
    client.create("strict", MODEL, system="Answer in one word.")
    assert client.show("strict").system == "Answer in one word."
    client.delete("strict")
    assert not server.has_model("strict")
    assert server.requests_to("/api/delete")[-1].method == "DELETE"


def test_ps_reports_loaded_models_with_context(fake) -> None:
    client, server = fake
    server.loaded.append(MODEL)
    loaded = client.ps()
    assert [m.name for m in loaded] == [MODEL]
    assert loaded[0].context_length == 4096


# --- every failure -----------------------------------------------------------------------


def test_server_down_for_plain_and_streaming_calls() -> None:
    server = FakeOllama().start()
    host = server.host
    server.stop()
    client = OllamaClient(host, connect_timeout=2)
    for call in (client.version, client.list, lambda: client.show(MODEL), client.ps,
                 lambda: list(client.chat(MODEL, HI)), lambda: list(client.pull(MODEL)),
                 lambda: list(client.generate_raw(MODEL, "x")), lambda: client.delete(MODEL)):
        with pytest.raises(BackendUnavailable, match="not running at"):
            call()
    assert not client.is_running()


def test_unknown_model_is_model_not_found(fake) -> None:
    client, _ = fake
    with pytest.raises(ModelNotFound, match="no model 'missing:latest'"):
        client.show("missing:latest")
    with pytest.raises(ModelNotFound):
        list(client.chat("missing", HI))
    with pytest.raises(ModelNotFound):
        client.delete("missing")
    with pytest.raises(ModelNotFound, match="library has no model"):
        list(client.pull("missing"))


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_carry_the_status(fake, status: int) -> None:
    client, server = fake
    server.fail("/api/tags", status)
    with pytest.raises(BackendError) as err:
        client.list()
    assert err.value.status == status
    server.script_chat(status=status)
    with pytest.raises(BackendError):
        list(client.chat(MODEL, HI))


def test_error_line_mid_stream_keeps_the_partial_text(fake) -> None:
    client, server = fake
    server.script_chat(["Once", " upon"], error="model runner has unexpectedly stopped")
    got = []
    with pytest.raises(StreamInterrupted, match="unexpectedly stopped") as err:
        for chunk in client.chat(MODEL, HI):
            got.append(chunk.text)
    assert err.value.partial == "Once upon" == "".join(got)


def test_dropped_connection_keeps_the_partial_text(fake) -> None:
    client, server = fake
    server.script_generate(["Hel", "lo"], drop=True)
    with pytest.raises(StreamInterrupted, match="broke off") as err:
        list(client.generate_raw(MODEL, "x"))
    assert err.value.partial == "Hello"


def test_hang_is_a_timeout(fake) -> None:
    client, server = fake
    server.hang("/api/show")
    with pytest.raises(BackendTimeout, match="did not answer"):
        client.show(MODEL)
    server.hang("/api/chat")
    with pytest.raises(BackendTimeout):
        list(client.chat(MODEL, HI))


def test_stall_after_some_text_keeps_it(fake) -> None:
    client, server = fake
    server.script_chat(["still", " here"], hang=True)
    with pytest.raises(StreamInterrupted, match="stopped answering") as err:
        list(client.chat(MODEL, HI))
    assert err.value.partial == "still here"


def test_pull_error_line_and_drop(fake) -> None:
    client, server = fake
    server.script_pull(error="max retries exceeded")
    with pytest.raises(BackendError, match="max retries exceeded"):
        list(client.pull("tiny"))
    server.script_pull(drop_after=2)
    with pytest.raises(StreamInterrupted, match="broke off"):
        list(client.pull("tiny"))
    assert not server.has_model("tiny")


def test_closing_a_pull_cancels_it_and_registers_nothing(fake) -> None:
    client, server = fake
    gate = threading.Event()
    server.script_pull(sizes=(5000,), pause=gate)
    stream = client.pull("big")
    first = next(stream)
    assert first.status == "pulling manifest"
    next(stream)  # the first progress line; the server now waits
    stream.close()
    gate.set()
    assert not server.has_model("big")
    assert "big:latest" not in [m.name for m in client.list()]


def test_connection_closed_before_an_answer_is_a_backend_error(fake) -> None:
    client, server = fake
    server.drop("/api/tags")
    with pytest.raises(BackendError, match="broke off"):
        client.list()


# --- host rules --------------------------------------------------------------------------


@pytest.mark.parametrize(("configured", "env", "expected"), [
    ("", None, "http://127.0.0.1:11434"),
    ("", "0.0.0.0", "http://127.0.0.1:11434"),
    ("", "0.0.0.0:5000", "http://127.0.0.1:5000"),
    ("", "1.2.3.4", "http://1.2.3.4:11434"),
    ("", ":56789", "http://127.0.0.1:56789"),
    ("", "http://1.2.3.4", "http://1.2.3.4:80"),
    ("", "https://1.2.3.4", "https://1.2.3.4:443"),
    ("", "example.com:56789/path/", "http://example.com:56789/path"),
    ("", "[0001:002:003:0004::1]", "http://[0001:002:003:0004::1]:11434"),
    ("10.0.0.2:1234", "1.2.3.4", "http://10.0.0.2:1234"),
    ("http://0.0.0.0:11434", None, "http://127.0.0.1:11434"),
])
def test_host_from_settings_then_env_then_default(monkeypatch: pytest.MonkeyPatch,
                                                  configured: str, env: str | None,
                                                  expected: str) -> None:
    if env is None:
        monkeypatch.delenv("OLLAMA_HOST", raising=False)
    else:
        monkeypatch.setenv("OLLAMA_HOST", env)
    assert OllamaClient(configured or None).host == expected


def test_timeouts_are_always_set(fake) -> None:
    client, _ = fake
    client.version()
    for http in client._clients.values():
        timeout = http._client.timeout
        assert timeout.connect == client.connect_timeout
        assert timeout.read is not None


def test_cancel_from_another_thread_stops_a_waiting_pull(fake) -> None:
    from core.errors import Cancelled

    client, server = fake
    client.read_timeout = 60  # the cancel, not a timeout, must end it
    gate = threading.Event()
    server.script_pull(sizes=(5000,), pause=gate)
    stream = client.pull("big")
    next(stream)
    next(stream)  # the server now waits before the next line
    timer = threading.Timer(0.2, client.cancel)
    timer.start()
    with pytest.raises(Cancelled):
        list(stream)
    timer.join()
    gate.set()
    assert not server.has_model("big")
    assert client.version()  # the client still works afterwards


def test_cancel_cuts_a_request_the_server_has_not_answered(fake) -> None:
    from core.errors import Cancelled

    client, server = fake
    client.read_timeout = 60  # the cancel, not a timeout, must end it
    server.script_chat(["late"], hold=True)  # no headers until the client hangs up
    failed: list[BaseException] = []

    def consume() -> None:
        try:
            list(client.chat(MODEL, HI))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failed.append(exc)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    while not server.requests_to("/api/chat") and reader.is_alive():
        reader.join(0.01)
    client.cancel()
    reader.join(20)
    assert not reader.is_alive() and len(failed) == 1 and isinstance(failed[0], Cancelled)
    assert server.hung_up.wait(20) and server.hangups == ["/api/chat"]
    assert "".join(c.text for c in client.chat(MODEL, HI)) == server.reply  # works after
