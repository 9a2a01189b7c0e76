"""Knowledge bases through the API: vector-store search in OpenAI's shape, answers grounded with
the ``corral: {"kb": NAME}`` extension (citations come back), and the history setting."""

from __future__ import annotations

from pathlib import Path

import httpx

from core.chat.store import HistoryStore
from tests.core.serve_fixtures import client, ollama_settings, serving

QUESTION = "How do planets move around the sun?"
PASSAGE = "Planets orbit the sun along elliptical paths."


def test_vector_store_search_returns_the_passage(handbook: Path) -> None:
    with serving(ollama_settings("http://127.0.0.1:9")) as url:
        page = client(url).vector_stores.search(vector_store_id="Handbook", query=QUESTION,
                                                max_num_results=2)
        missing = httpx.post(f"{url}/v1/vector_stores/Nothing/search", json={"query": "x"})
    hits = list(page.data)
    assert 1 <= len(hits) <= 2
    assert hits[0].filename == "guide.pdf" and hits[0].content[0].text == PASSAGE
    assert hits[0].attributes is not None and hits[0].attributes["page"] == 2
    assert 0 < hits[0].score <= 1
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "kb_not_found"


def test_a_grounded_answer_cites_its_passages(handbook: Path, ollama_server) -> None:
    ollama_server.add_model("llama3.2", family="llama",
                            template="{{ range .Messages }}{{ .Content }}{{ end }}")
    with serving(ollama_settings(ollama_server.host)) as url:
        done = client(url).chat.completions.create(
            model="ollama:llama3.2", messages=[{"role": "user", "content": QUESTION}],
            extra_body={"corral": {"kb": "Handbook"}})
    assert done.choices[0].message.content == "Hello from the fake Ollama."
    cites = done.model_extra["corral"]["citations"]
    assert cites[0]["n"] == 1 and cites[0]["file_name"] == "guide.pdf"
    assert cites[0]["text"] == PASSAGE and cites[0]["page"] == 2
    [sent] = ollama_server.requests_to("/api/chat")
    assert PASSAGE in str(sent.body["messages"])  # the model read the passage


def test_history_keeps_api_conversations_only_when_asked(ollama_server) -> None:
    ollama_server.add_model("llama3.2", family="llama",
                            template="{{ range .Messages }}{{ .Content }}{{ end }}")
    settings = ollama_settings(ollama_server.host)
    turns = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "What is a harbor?"}]
    with serving(settings) as url:
        client(url).chat.completions.create(model="ollama:llama3.2", messages=turns)
    assert HistoryStore().conversations() == []
    settings.serve.history = True
    with serving(settings) as url:
        done = client(url).chat.completions.create(model="ollama:llama3.2", messages=turns)
    store = HistoryStore()
    [conv] = store.conversations()
    assert done.model_extra["corral"]["conversation_id"] == conv.id
    assert conv.system == "Be brief." and conv.model == "ollama:llama3.2:latest"
    assert [(m.role, m.content) for m in store.messages(conv.id)] == [
        ("user", "Hi"), ("assistant", "Hello!"), ("user", "What is a harbor?"),
        ("assistant", "Hello from the fake Ollama.")]
