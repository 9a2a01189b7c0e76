"""`corral serve` with the official openai client: the model list, embeddings equal to Corral's
embedder, and every way a request can be wrong (token, JSON, model, limits, CORS), answered in
OpenAI's error shape and never with a traceback. Chat here runs on the tiny random GGUF; real
answers are in test_serve_real.py, the guard in test_serve_guard.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import Settings
from core.errors import CorralError
from core.models import library
from core.models.pool import close_all, engine_pool
from core.rag.store import close_stores
from core.serve.runner import ApiServer
from core.serve.shapes import MAX_BODY_BYTES, MAX_COMPLETION_TOKENS
from tests.core.serve_fixtures import client, ollama_settings, serving

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module", autouse=True)
def _engines() -> Iterator[None]:
    yield
    close_all()
    close_stores()


@pytest.fixture
def tiny(tiny_gguf: Path) -> str:
    library.import_file(tiny_gguf, name="tiny")
    return "tiny"


def _error(resp: httpx.Response) -> dict[str, object]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    return dict(body["error"])


def test_models_are_listed_with_source_and_context_length(tiny: str, ollama_server) -> None:
    ollama_server.add_model("llama3.2", family="llama", context_length=131072)
    with serving(ollama_settings(ollama_server.host)) as url:
        models = {m.id: m for m in client(url).models.list().data}
    assert {"tiny", "ollama:llama3.2:latest", "minilm"} <= set(models)
    assert models["tiny"].model_extra["corral"]["source"] == "gguf"
    assert models["tiny"].model_extra["corral"]["context_length"] == 4096
    assert models["ollama:llama3.2:latest"].model_extra["corral"]["source"] == "ollama"
    assert models["ollama:llama3.2:latest"].model_extra["corral"]["context_length"] == 131072
    assert all(m.object == "model" and m.owned_by == "corral" for m in models.values())


def test_a_missing_or_wrong_token_gets_401(tiny: str) -> None:
    with serving(Settings(), token="s3cret-token") as url:
        with pytest.raises(openai.AuthenticationError) as wrong:
            client(url, key="guess").models.list()
        assert wrong.value.status_code == 401
        bare = httpx.get(f"{url}/v1/models")
        assert bare.status_code == 401
        assert _error(bare)["code"] == "invalid_api_key"
        posted = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny",
                                                                "messages": HELLO})
        assert posted.status_code == 401  # checked before the body is even read
        assert [m.id for m in client(url, key="s3cret-token").models.list().data][0]


def test_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_SERVE_TOKEN", "from-env")
    assert ApiServer(Settings(), port=0).token == "from-env"
    assert ApiServer(Settings(), port=0, token="given").token == "given"
    with serving(Settings()) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 401
        ok = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer from-env"})
        assert ok.status_code == 200


def test_any_address_but_loopback_requires_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_SERVE_TOKEN", raising=False)
    with pytest.raises(CorralError, match="requires a token"):
        ApiServer(Settings(), host="0.0.0.0", port=0)
    assert ApiServer(Settings(), host="0.0.0.0", port=0, token="t").token == "t"
    assert ApiServer(Settings(), host="::1", port=0).token == ""  # loopback: no token needed


def test_malformed_json_gets_400(tiny: str) -> None:
    with serving(Settings()) as url:
        for body in (b"{not json", b"", b"\xff\xfe\x00", b"[" * 100000):
            resp = httpx.post(f"{url}/v1/chat/completions", content=body)
            assert resp.status_code == 400, body[:10]
            assert _error(resp)["code"] == "invalid_json"
        resp = httpx.post(f"{url}/v1/chat/completions", json=["a", "list"])
        assert resp.status_code == 400 and "JSON object" in str(_error(resp)["message"])
        resp = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny"})
        assert resp.status_code == 400 and _error(resp)["param"] == "messages"


def test_an_unknown_model_gets_404(tiny: str) -> None:
    with serving(Settings()) as url, pytest.raises(openai.NotFoundError) as err:
        client(url).chat.completions.create(model="no-such-model", messages=HELLO)
    assert err.value.status_code == 404
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found"
    assert "no model called 'no-such-model'" in body["message"]


def test_a_model_field_naming_a_path_is_refused(tiny: str, tiny_gguf: Path) -> None:
    close_all()
    with serving(Settings()) as url:
        api = client(url)
        # even the very file the library holds: a path is never a model field
        for model in (str(tiny_gguf), f"gguf:{tiny_gguf}", "../../etc/passwd", "~/x.gguf"):
            with pytest.raises(openai.BadRequestError) as err:
                api.chat.completions.create(model=model, messages=HELLO, max_tokens=1)
            assert err.value.body["code"] == "model_not_allowed", model  # type: ignore[index]
            with pytest.raises(openai.BadRequestError):
                api.embeddings.create(model=model, input="x")
    assert engine_pool().loaded() == []  # nothing was ever loaded


def test_body_and_max_tokens_have_limits(tiny: str) -> None:
    with serving(Settings()) as url:
        big = json.dumps({"model": "tiny", "messages": [
            {"role": "user", "content": "x" * (MAX_BODY_BYTES + 10)}]})
        resp = httpx.post(f"{url}/v1/chat/completions", content=big)
        assert resp.status_code == 413 and _error(resp)["code"] == "body_too_large"
        api = client(url)
        for field in ("max_tokens", "max_completion_tokens"):
            with pytest.raises(openai.BadRequestError) as err:
                api.chat.completions.create(model="tiny", messages=HELLO,
                                            **{field: MAX_COMPLETION_TOKENS + 1})
            assert err.value.body["param"] == field  # type: ignore[index]
        with pytest.raises(openai.BadRequestError):
            api.chat.completions.create(model="tiny", messages=HELLO, n=2)
        # within the limits the tiny model answers, max_completion_tokens honoured
        done = api.chat.completions.create(model="tiny", messages=HELLO, max_completion_tokens=3,
                                           temperature=0)
        assert done.choices[0].finish_reason == "length"
        assert done.usage is not None and done.usage.completion_tokens == 3


def test_cors_is_off_unless_configured(tiny: str) -> None:
    origin = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    with serving(Settings()) as url:
        pre = httpx.options(f"{url}/v1/chat/completions", headers=origin)
        assert "access-control-allow-origin" not in pre.headers
        got = httpx.get(f"{url}/v1/models", headers=origin)
        assert got.status_code == 200 and "access-control-allow-origin" not in got.headers
    settings = Settings()
    settings.serve.cors_origins = ["http://app.example"]
    with serving(settings) as url:
        pre = httpx.options(f"{url}/v1/chat/completions", headers=origin)
        assert pre.headers.get("access-control-allow-origin") == "http://app.example"
        other = httpx.get(f"{url}/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_embeddings_equal_corrals_embedder_as_floats_and_base64() -> None:
    from core.rag.embedder import shared_embedder

    texts = ["The harbor opens at dawn.", "Violins are carved from spruce."]
    expected = shared_embedder("minilm").embed(texts)
    with serving(Settings()) as url:
        api = client(url)
        as_b64 = api.embeddings.create(model="minilm", input=texts)  # the client's default
        as_float = api.embeddings.create(model="minilm", input=texts, encoding_format="float")
        raw = httpx.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": texts[0],
                                                       "encoding_format": "base64"}).json()
    for got in (as_b64, as_float):
        vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
        assert vectors.shape == (2, 384)
        assert np.array_equal(vectors, expected)  # bit for bit
        assert got.usage.prompt_tokens > 0
    assert isinstance(raw["data"][0]["embedding"], str)


def test_an_unexpected_error_is_a_500_without_its_traceback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from core.serve import services

    def broken(settings: Settings) -> list[dict[str, object]]:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(services, "list_models", broken)
    with serving(Settings()) as url:
        resp = httpx.get(f"{url}/v1/models")
    assert resp.status_code == 500
    error = _error(resp)
    assert error["type"] == "server_error" and "secret" not in resp.text


def test_unknown_routes_and_methods_answer_in_openais_shape() -> None:
    with serving(Settings()) as url:
        assert _error(httpx.get(f"{url}/v1/nothing"))["message"] == "no such route: /v1/nothing"
        resp = httpx.get(f"{url}/v1/chat/completions")
        assert resp.status_code == 405
        _error(resp)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "robot"]) | _json},
    optional={"content": st.text(max_size=30) | _json})
_chat = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["tiny", "nope", "/etc/passwd", "store:none", "gguf:x"]) | _json,
    "messages": st.lists(_message, max_size=3) | _json,
    "max_tokens": st.integers(-5, 3) | _json,
    "temperature": st.floats() | _json, "top_p": st.floats() | _json,
    "stream": st.booleans() | _json, "stop": st.text(max_size=3) | _json,
    "seed": st.integers() | _json, "corral": _json, "stream_options": _json})
_other = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["minilm", "tiny", "nope"]) | _json,
    "input": st.text(max_size=20) | st.lists(st.text(max_size=10), max_size=3) | _json,
    "encoding_format": st.sampled_from(["float", "base64"]) | _json,
    "query": _json, "max_num_results": _json, "dimensions": _json})
_bodies = st.tuples(st.just("/v1/chat/completions"), _chat | _json) | st.tuples(
    st.sampled_from(["/v1/embeddings", "/v1/moderations", "/v1/vector_stores/kb/search"]),
    _other | _json)


def test_random_request_bodies_never_give_a_500(tiny: str) -> None:
    settings = Settings()
    settings.chat.max_tokens = 2  # a body that happens to be valid gets a short answer
    with serving(settings) as url, httpx.Client(base_url=url, timeout=60) as http:

        @given(_bodies)
        @hsettings(max_examples=200, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
        def check(case: tuple[str, object]) -> None:
            path, body = case
            resp = http.post(path, content=json.dumps(body, allow_nan=True))
            assert resp.status_code != 500, (body, resp.text)
            if resp.status_code >= 400:
                _error(resp)

        check()
