"""The fast embedder modes (issue 8): same answers as the standard embedder, cached export,
clear fallback. The OpenVINO export runs once per session (shared fixture, ~30-60 s)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import Cancelled, FeatureUnavailable
from core.rag import export
from core.rag.embedder import make_embedder, minilm_path
from core.rag.fast_embedder import (
    FastEmbedder,
    calibration_sample,
    fast_embedder_ready,
    make_fast_embedder,
    prepare_fast_embedder,
)

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "fast_embedder_paragraphs.txt"


def paragraphs() -> list[str]:
    return [p.strip() for p in DATA.read_text(encoding="utf-8").split("\n\n") if p.strip()]


def known_item_query(paragraph: str) -> str:
    """Eight words from the middle of the paragraph's third sentence."""
    words = re.split(r"(?<=[.!?])\s+", paragraph)[2].split()
    return " ".join(words[3:11])


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.sum(a * b, axis=1))


def top_k(vectors: np.ndarray, k: int = 5) -> list[set[int]]:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return [set(np.argsort(-row)[:k].tolist()) for row in sims]


def recall_at(docs: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    hits = [i in np.argsort(-(docs @ q))[:k] for i, q in enumerate(queries)]
    return float(np.mean(hits))


def needs_openvino() -> None:
    pytest.importorskip("openvino", reason="the fast modes need OpenVINO (pip install corral[fast])")
    pytest.importorskip("nncf", reason="the fastest mode needs nncf (pip install corral[fast])")


# --- session fixtures: one export, one standard model -----------------------------------


@pytest.fixture(scope="session")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    needs_openvino()
    root = tmp_path_factory.mktemp("embedder-cache")
    events: list[tuple[float | None, str]] = []
    prepare_fast_embedder("fastest", root=root, progress=lambda f, t: events.append((f, t)))
    return {"root": root, "events": events}


@pytest.fixture(scope="session")
def standard() -> Any:
    return make_embedder("minilm", "standard")


@pytest.fixture(scope="session")
def fast(export_root: dict[str, Any]) -> FastEmbedder:
    return make_fast_embedder(minilm_path(), "fast", name="all-MiniLM-L6-v2", spec="minilm",
                              root=export_root["root"])


@pytest.fixture(scope="session")
def fastest(export_root: dict[str, Any]) -> FastEmbedder:
    return make_fast_embedder(minilm_path(), "fastest", name="all-MiniLM-L6-v2", spec="minilm",
                              root=export_root["root"])


@pytest.fixture(scope="session")
def standard_vectors(standard: Any) -> np.ndarray:
    return np.asarray(standard.embed(paragraphs()))


# --- same answers ---------------------------------------------------------------------------


def test_fast_mode_gives_the_standard_vectors_and_neighbours(fast, standard_vectors):
    vectors = fast.embed(paragraphs())
    assert vectors.dtype == np.float32 and vectors.shape == (50, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosine_rows(vectors, standard_vectors).min() >= 0.999
    same = [a == b for a, b in zip(top_k(vectors), top_k(standard_vectors), strict=True)]
    assert np.mean(same) >= 0.90


def test_fastest_mode_finds_known_items_as_well_as_standard(fastest, standard, standard_vectors):
    queries = [known_item_query(p) for p in paragraphs()]
    want = recall_at(standard_vectors, standard.embed(queries))
    got = recall_at(fastest.embed(paragraphs()), fastest.embed(queries))
    assert want >= 0.8  # the queries are fair: the standard embedder finds most
    assert got >= want - 0.05
    assert cosine_rows(fastest.embed(paragraphs()), standard_vectors).mean() >= 0.99


@pytest.mark.parametrize("mode", ["fast", "fastest"])
def test_a_chunk_alone_equals_the_same_chunk_in_a_batch(mode, request):
    emb = request.getfixturevalue(mode)
    texts = paragraphs()
    in_batch = emb.embed(texts)
    for i in (0, 17, 49):
        alone = emb.embed([texts[i]])
        assert float(alone[0] @ in_batch[i]) >= 0.9999


def test_long_chunks_are_read_to_256_tokens_like_the_standard_embedder(fast, standard):
    # MiniLM's tokenizer.json truncates at 128 tokens; both embedders must read 256
    long_text = " ".join(paragraphs()[:3])
    assert standard.count_tokens(long_text) > 256
    first_128 = long_text[: standard.token_spans(long_text)[125][1]]  # + [CLS] and [SEP]
    assert standard.count_tokens(first_128) == 128
    fast_vecs = fast.embed([long_text, first_128])
    assert cosine_rows(fast_vecs, standard.embed([long_text, first_128])).min() >= 0.999
    assert float(fast_vecs[0] @ fast_vecs[1]) < 0.99  # tokens 129-256 count


def test_fast_embedders_count_tokens_like_the_standard_one(fast, fastest, standard):
    for text in paragraphs()[:5] + ["", "héllo wörld — naïve café"]:
        assert fast.count_tokens(text) == standard.count_tokens(text)
        assert fast.token_spans(text) == standard.token_spans(text)
    assert (fast.max_tokens, fast.dimension, fast.tokenizer_name) == (
        standard.max_tokens, standard.dimension, standard.tokenizer_name)
    assert fast.embed([]).shape == (0, 384)


def test_each_mode_is_recorded_under_its_own_name_and_mode(fast, fastest, standard):
    assert (standard.mode, fast.mode, fastest.mode) == ("standard", "fast", "fastest")
    assert fast.name == standard.name == "all-MiniLM-L6-v2"
    # int8 vectors depend on the calibration: a knowledge base must not mix two of them
    assert re.fullmatch(r"all-MiniLM-L6-v2 int8-[0-9a-f]{8}", fastest.name)
    assert fastest.calibration["source"] == "built-in"


# --- the export and its cache ---------------------------------------------------------------


def test_export_reports_progress_up_to_done(export_root):
    fractions = [f for f, _text in export_root["events"] if f is not None]
    texts = " ".join(t for _f, t in export_root["events"])
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "exporting" in texts and "calibrating int8" in texts


def test_second_start_reuses_the_cached_export(export_root, monkeypatch):
    root = export_root["root"]
    model = export.variant_dir(minilm_path(), "fast", root) / "model.xml"
    before = model.stat().st_mtime_ns

    def no_export(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the export ran again")

    monkeypatch.setattr(export, "_run_child", no_export)
    emb = make_fast_embedder(minilm_path(), "fast", name="all-MiniLM-L6-v2", spec="minilm",
                             root=root)
    assert emb.embed(["cached"]).shape == (1, 384)
    assert model.stat().st_mtime_ns == before
    assert fast_embedder_ready("fast", root=root) and fast_embedder_ready("fastest", root=root)


def test_make_embedder_picks_the_fast_mode_from_the_cache(export_root, corral_home):
    # the default cache lives under CORRAL_HOME; point it at the session's export
    cache = corral_home / "cache"
    cache.mkdir()
    (cache / "embedders").symlink_to(export_root["root"], target_is_directory=True)
    notes: list[str] = []
    emb = make_embedder("minilm", "fast", notice=notes.append)
    assert isinstance(emb, FastEmbedder) and emb.mode == "fast" and not notes


def test_a_damaged_cache_is_exported_again(export_root, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(export_root["root"], root, ignore=shutil.ignore_patterns("fastest", "ov-cache"))
    info = export.variant_dir(minilm_path(), "fast", root) / "info.json"
    info.write_text("{ half a file")
    emb = make_fast_embedder(minilm_path(), "fast", name="all-MiniLM-L6-v2", spec="minilm",
                             root=root)
    assert emb.embed(["works again"]).shape == (1, 384)
    assert json.loads(info.read_text())["mode"] == "fast"


def _model_copy(tmp_path: Path) -> Path:
    """A copy of the bundled model folder (the weights linked, not copied)."""
    src = minilm_path()
    dst = tmp_path / "model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    return dst


def test_a_changed_model_gets_a_new_export(tmp_path):
    folder = _model_copy(tmp_path)
    root = tmp_path / "cache"
    first = export.variant_dir(folder, "fast", root)
    assert export.variant_dir(folder, "fast", root) == first  # remembered, same answer
    (folder / "README.md").write_text("docs do not change the model")
    assert export.variant_dir(folder, "fast", root) == first
    cfg = json.loads((folder / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-6
    (folder / "config.json").write_text(json.dumps(cfg))
    assert export.variant_dir(folder, "fast", root) != first


def test_cancelling_the_export_leaves_no_half_model(tmp_path):
    needs_openvino()
    root = tmp_path / "cache"

    def cancel(_fraction: float | None, _text: str) -> None:
        raise Cancelled("the user cancelled")

    with pytest.raises(Cancelled):
        prepare_fast_embedder("fast", root=root, progress=cancel)
    assert not fast_embedder_ready("fast", root=root)
    leftovers = [p for p in root.rglob("*") if p.name != "fingerprints.json" and p.is_file()]
    assert leftovers == []


# --- falling back ------------------------------------------------------------------------------


def test_without_openvino_corral_says_so_and_uses_the_standard_embedder(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    notes: list[str] = []
    emb = make_embedder("minilm", "fast", notice=notes.append)
    assert emb.mode == "standard" and not isinstance(emb, FastEmbedder)
    assert len(notes) == 1
    assert "OpenVINO is not installed" in notes[0] and "standard embedder" in notes[0]
    with pytest.raises(FeatureUnavailable, match="OpenVINO is not installed"):
        prepare_fast_embedder("fast")


def test_without_nncf_the_fastest_mode_falls_back(monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setitem(sys.modules, "nncf", None)
    notes: list[str] = []
    emb = make_embedder("minilm", "fastest", notice=notes.append)  # empty cache: must export
    assert emb.mode == "standard"
    assert any("nncf" in n and "standard embedder" in n for n in notes)


def test_a_model_the_fast_modes_cannot_reproduce_falls_back(tmp_path):
    pytest.importorskip("openvino")
    folder = _model_copy(tmp_path)
    pooling = folder / "1_Pooling" / "config.json"
    cfg = json.loads(pooling.read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(cfg))
    notes: list[str] = []
    emb = make_embedder(str(folder), "fast", notice=notes.append)
    assert emb.mode == "standard"
    assert any("mean pooling" in n for n in notes)


# --- calibration on the user's documents ----------------------------------------------------------


def test_calibration_sample_comes_from_the_users_documents(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, p in enumerate(paragraphs()[:10]):
        (docs / f"note{i}.txt").write_text(p * 3, encoding="utf-8")
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    sample = calibration_sample([docs], max_passages=20)
    assert 10 <= len(sample) <= 20
    assert all(len(s.split()) >= 10 for s in sample)
    assert any("sourdough" in s.lower() for s in sample)

    from core.rag.export_steps import calibration_passages

    texts, source = calibration_passages(sample * 2)
    assert source == "documents" and len(texts) > len(sample)
    _texts, source = calibration_passages(sample[:3])
    assert source == "documents+built-in"


def test_each_calibration_keeps_its_cache_and_a_repaired_one_keeps_its_name(
        export_root, fastest, tmp_path, corral_home):
    """New knowledge bases get the calibration prepared last; an older one keeps its own, and
    a damaged cache is rebuilt from the kept passages under the same name (no re-index)."""
    from core.rag.knowledge_base import KnowledgeBase
    from core.rag.store import Store

    root = corral_home / "cache" / "embedders"
    shutil.copytree(export_root["root"], root, ignore=shutil.ignore_patterns("ov-cache"))
    built_in = fastest.calibration["id"]
    prepare_fast_embedder("fastest", calibration=paragraphs(), root=root)
    own = make_fast_embedder(minilm_path(), "fastest", name="all-MiniLM-L6-v2", spec="minilm",
                             root=root)
    assert own.calibration["source"] == "documents" and own.calibration["id"] != built_in
    assert own.name != fastest.name

    st = Store(mode="embedded", path=tmp_path / "chroma").open()
    old_kb = KnowledgeBase("older", st, {"corral_embedder": fastest.name, "corral_mode": "fastest",
                                         "corral_embedder_spec": "minilm",
                                         "corral_dimension": 384})
    assert old_kb.embedder().name == fastest.name  # its own calibration, not the newest
    old_kb.close()
    st.close()

    (own.model_dir / "model.bin").unlink()  # a damaged cache (the loaded copy stays mapped)
    again = make_fast_embedder(minilm_path(), "fastest", name="all-MiniLM-L6-v2", spec="minilm",
                               root=root, calibration_id=own.calibration["id"])
    assert again.name == own.name and again.calibration == own.calibration
    assert np.allclose(again.embed(paragraphs()[:3]), own.embed(paragraphs()[:3]), atol=0.02)
    assert export.current_calibration(minilm_path(), root) == own.calibration["id"]
