"""Chunks are measured in MiniLM's own WordPiece tokens: never over the limit, overlapping,
and cut at headings and paragraphs where the text allows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.rag.chunker import Chunker, ChunkParams
from core.rag.embedder import make_embedder
from core.rag.loaders import TextUnit
from tests.fixtures.documents import prose


@pytest.fixture(scope="module")
def minilm():
    return make_embedder("minilm")  # the tokenizer only: the model is not loaded here


def test_long_text_never_exceeds_the_model_limit(minilm) -> None:
    text = "\n\n".join(prose(i, 150) for i in range(8)) + " " + "x" * 3000 + " " + "日本語のテキスト" * 200
    chunks = Chunker(minilm).chunk_units([TextUnit(text)])
    assert len(chunks) > 5
    assert all(minilm.count_tokens(c.text) <= 256 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=0, max_size=3000))
def test_any_text_fits_and_loses_no_words(text: str) -> None:
    emb = make_embedder("minilm")
    chunker = Chunker(emb, ChunkParams(chunk_tokens=48, overlap_tokens=8))
    chunks = chunker.chunk_units([TextUnit(text)])
    assert all(emb.count_tokens(c.text) <= 48 for c in chunks)
    joined = " ".join(c.text for c in chunks)
    for a, b in emb.token_spans(text):
        piece = text[a:b]
        if piece.strip():
            assert piece in joined


def test_consecutive_chunks_of_one_paragraph_overlap(minilm) -> None:
    text = prose(7, 600)  # one long paragraph
    chunks = Chunker(minilm, ChunkParams(chunk_tokens=128, overlap_tokens=24)).chunk_units([TextUnit(text)])
    assert len(chunks) >= 4
    for a, b in zip(chunks, chunks[1:], strict=False):
        tail = a.text[-40:]
        assert tail.split()[-1] in b.text[:300]
        assert minilm.count_tokens(a.text) <= 128


def test_headings_start_new_chunks(minilm) -> None:
    sections = [f"# Section {i}\n\n{prose(i, 70)}" for i in range(6)]
    chunks = Chunker(minilm, ChunkParams(chunk_tokens=128, overlap_tokens=16)).chunk_units(
        [TextUnit("\n\n".join(sections))]
    )
    starts = [c.text for c in chunks if c.text.startswith("# Section")]
    assert len(starts) >= 5  # nearly every section begins its own chunk


def test_pages_keep_their_numbers(minilm) -> None:
    chunks = Chunker(minilm).chunk_units([TextUnit("page one", 1), TextUnit(prose(1, 400), 2)])
    assert chunks[0].page == 1 and {c.page for c in chunks[1:]} == {2}


def test_bad_parameters_are_refused() -> None:
    from core.errors import CorralError

    with pytest.raises(CorralError):
        ChunkParams(chunk_tokens=64, overlap_tokens=40).validate()


def test_every_chunk_knows_where_it_lies_in_its_document(minilm, monkeypatch) -> None:
    """start/end point into LoadedDocument.text: pages joined, long texts cut in segments."""
    import core.rag.chunker as chunker_module
    from core.rag.document import LoadedDocument

    monkeypatch.setattr(chunker_module, "SEGMENT_CHARS", 900)  # several segments per page
    units = [TextUnit("page one", 1), TextUnit(prose(3, 700), 2), TextUnit(("Überall ⌘ " * 90).strip(), 3)]
    doc = LoadedDocument(path=Path("x.pdf"), kind="pdf", units=units)
    chunks = Chunker(minilm, ChunkParams(chunk_tokens=64, overlap_tokens=8)).chunk_units(units)
    assert len(chunks) > 10
    for chunk in chunks:
        assert doc.text[chunk.start : chunk.end] == chunk.text
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].end == len(doc.text)
