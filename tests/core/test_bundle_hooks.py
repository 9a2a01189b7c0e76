"""What core does differently in the packaged Corral, which leaves torch out (packaging/).

The bundle ships a read-only 'fast' export of MiniLM and names its folder in
CORRAL_BUNDLED_EMBEDDERS; packaging/smoke_test checks the real bundle end to end.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.errors import FeatureUnavailable
from core.rag import fast_embedder
from core.rag.embedder import SentenceTransformerEmbedder
from core.rag.encoding import minilm_path
from core.rag.export import cache_root, model_fingerprint, variant_dir
from core.rag.fast_embedder import fast_embedder_ready, make_fast_embedder


def _shipped_export(tmp_path: Path) -> Path:
    """A shipped folder holding a damaged 'fast' export of MiniLM (files present, unreadable)."""
    shipped = tmp_path / "shipped"
    target = shipped / model_fingerprint(minilm_path(), tmp_path)[:16] / "fast"
    target.mkdir(parents=True)
    (target / "model.xml").write_text("not a model", encoding="utf-8")
    (target / "model.bin").write_bytes(b"")
    (target / "info.json").write_text(json.dumps({"mode": "fast"}), encoding="utf-8")
    return shipped


def test_a_shipped_export_is_used_before_the_user_cache(
        corral_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = _shipped_export(tmp_path)
    assert not fast_embedder_ready("fast")  # nothing exported in this CORRAL_HOME
    monkeypatch.setenv("CORRAL_BUNDLED_EMBEDDERS", str(shipped))
    found = variant_dir(minilm_path(), "fast")
    assert found.is_relative_to(shipped)
    assert fast_embedder_ready("fast")  # the Documents page starts no export
    # an explicit cache root (the export itself, the tests) is not redirected
    assert variant_dir(minilm_path(), "fast", tmp_path / "cache").is_relative_to(tmp_path / "cache")
    # and a mode the bundle did not ship is looked for in the user's cache
    assert variant_dir(minilm_path(), "fastest").is_relative_to(cache_root())


def test_a_damaged_shipped_export_is_left_alone(
        corral_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    shipped = _shipped_export(tmp_path)
    monkeypatch.setenv("CORRAL_BUNDLED_EMBEDDERS", str(shipped))
    exports: list[Any] = []

    def no_torch_here(*args: Any, **kwargs: Any) -> Path:
        exports.append(kwargs.get("root"))
        raise FeatureUnavailable("exporting the embedder for OpenVINO failed: no torch")

    monkeypatch.setattr(fast_embedder, "prepare", no_torch_here)
    with pytest.raises(FeatureUnavailable, match="no torch"):
        make_fast_embedder(minilm_path(), "fast", name="all-MiniLM-L6-v2", spec="minilm")
    assert exports == [None], "a fresh export into the user's cache is the way out"
    assert sorted(p.name for p in next(shipped.glob("*/fast")).iterdir()) == [
        "info.json", "model.bin", "model.xml"]  # the packaged files are still there
    assert not (shipped / "ov-cache").exists()


def test_without_torch_the_default_embedder_mode_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().embedder.mode == "standard"  # this venv has torch
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    assert Settings().embedder.mode == "fast"
    # a mode the user saved wins over the default
    assert Settings.from_dict({"embedder": {"mode": "standard"}}).embedder.mode == "standard"


def test_the_standard_embedder_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    emb = SentenceTransformerEmbedder(minilm_path(), name="all-MiniLM-L6-v2", spec="minilm")
    with pytest.raises(FeatureUnavailable) as caught:
        emb.embed(["a sentence"])
    assert "needs torch" in caught.value.message
    assert "fast mode" in (caught.value.hint or "")


def test_the_lab_classifier_says_it_needs_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.lab.classify import toy_sentiment, train_embedding_classifier

    texts, labels = toy_sentiment()
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(FeatureUnavailable, match="needs torch"):
        train_embedding_classifier((texts[:8], labels[:8]), (texts[8:12], labels[8:12]))
