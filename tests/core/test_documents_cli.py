"""`corral kb`, `corral index` and `corral search` as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main
from core.rag.store import close_stores
from tests.fixtures.documents import WEIGHT_QUERY, make_pdf, write_corpus, write_weight_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _close_stores(store_settings):
    """Every command runs against an embedded store and against a `chroma run` server."""
    yield
    close_stores()


def test_kb_index_search_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    write_corpus(docs, n_files=1, words=80)
    make_pdf(docs / "guide.pdf", ["Cover page.", "Planets orbit the sun along elliptical paths."])
    (docs / "locked.pdf").write_bytes(make_pdf(tmp_path / "l.pdf", ["x"], password="pw").read_bytes())

    assert main(["kb", "create", "Guides"]) == 0
    assert "created knowledge base 'Guides'" in capsys.readouterr().out

    assert main(["index", str(docs), "--kb", "Guides", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    files = {Path(r["path"]).name: r for r in lines if r["event"] == "file"}
    assert files["locked.pdf"]["status"] == "skipped" and files["locked.pdf"]["reason"] == "encrypted PDF"
    assert files["guide.pdf"]["status"] == "indexed" and files["guide.pdf"]["chunks"] == 2
    assert lines[-1]["event"] == "done" and lines[-1]["indexed"] == 2

    assert main(["search", "how do planets move", "--kb", "Guides", "-k", "2", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert Path(hit["source"]).name == "guide.pdf" and hit["page"] == 2
    assert set(hit) >= {"text", "source", "page", "chunk_index", "score"}

    assert main(["search", "how do planets move", "--kb", "Guides", "-k", "1"]) == 0
    assert "guide.pdf, page 2, chunk 1" in capsys.readouterr().out

    assert main(["kb", "info", "Guides", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["files"] == 2 and info["embedder"] == "all-MiniLM-L6-v2"

    assert main(["kb", "rm", "Guides"]) == 0
    capsys.readouterr()
    assert main(["search", "x", "--kb", "Guides"]) == 1
    assert "no knowledge base called 'Guides'" in capsys.readouterr().err


def test_index_creates_a_missing_kb_and_prints_a_summary(tmp_path: Path, capsys) -> None:
    write_corpus(tmp_path / "d", n_files=1, words=50)
    assert main(["index", str(tmp_path / "d"), "--kb", "quick"]) == 0
    out = capsys.readouterr()
    assert "indexed 1 files" in out.out and "created knowledge base 'quick'" in out.err
    assert main(["kb", "list"]) == 0
    assert capsys.readouterr().out.startswith("quick")


def test_kb_set_hybrid_weight_changes_how_search_ranks(tmp_path: Path, capsys) -> None:
    """The nearest passage in meaning and the best keyword match differ here: the weight
    decides which comes first."""
    docs = write_weight_corpus(tmp_path / "d")
    assert main(["index", str(docs), "--kb", "weights"]) == 0
    capsys.readouterr()

    def first_hit(weight: str) -> dict:
        assert main(["kb", "set", "weights", "--hybrid-weight", weight, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["hybrid_weight"] == float(weight)
        assert main(["search", WEIGHT_QUERY, "--kb", "weights", "-k", "3",
                     "--json"]) == 0
        return json.loads(capsys.readouterr().out)["hits"][0]

    assert Path(first_hit("0")["source"]).name == "animals.txt"  # meaning only
    assert Path(first_hit("1")["source"]).name == "kitchen.txt"  # keywords only
    assert main(["kb", "info", "weights"]) == 0
    assert "keyword weight 1 (0: meaning only, 1: keywords only)" in capsys.readouterr().out
    assert main(["kb", "set", "weights", "--hybrid-weight", "1.5"]) == 1
    assert "between 0 and 1" in capsys.readouterr().err


def test_kb_set_top_k_is_what_chat_retrieves(tmp_path: Path, capsys) -> None:
    from core.chat.retrieval import open_retrieval
    from core.cli._common import load_settings

    docs = tmp_path / "d"
    docs.mkdir()
    for n in range(4):
        (docs / f"note{n}.txt").write_text(f"Note {n}: llamas hum softly when they are calm.")
    assert main(["index", str(docs), "--kb", "notes"]) == 0
    capsys.readouterr()
    settings = load_settings()  # the store this test runs against
    settings.chat.documents_k = 2

    def passages() -> int:
        """How many passages a chat turn gets (there are more than enough to find)."""
        retrieval = open_retrieval("notes", settings)
        try:
            assert len(retrieval("calm llamas")) == retrieval.k
            return retrieval.k
        finally:
            retrieval.close()

    assert passages() == 2  # not tuned: the chat setting decides
    assert main(["kb", "set", "notes", "--top-k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top_k"] == 3
    assert passages() == 3
    assert main(["kb", "info", "notes"]) == 0
    assert "chat retrieves 3 passages per turn" in capsys.readouterr().out
    assert main(["kb", "set", "notes", "--top-k", "0"]) == 0  # back to the chat setting
    assert passages() == 2
    assert main(["kb", "set", "notes", "--top-k", "51"]) == 1
    assert "between 1 and 50" in capsys.readouterr().err
    assert main(["kb", "set", "notes"]) == 1
    assert "say what to change" in capsys.readouterr().err

