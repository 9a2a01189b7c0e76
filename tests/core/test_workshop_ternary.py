"""The 1-bit view: BitNet b1.58's absmean rule, a tensor's histogram and reconstruction
error, and a whole model ternarised into the library and measured."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import CorralError
from core.models.gguf_meta import read_gguf
from core.workshop.gguf_rewrite import read_tensor, tensors
from core.workshop.output import models_dir, read_provenance
from core.workshop.ternary import (
    absmean_ternary,
    matrix_names,
    tensor_view,
    ternarise,
    ternarise_model,
    ternary_share,
)
from tools.tiny_gguf import make_tiny_gguf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return make_tiny_gguf(tmp_path_factory.mktemp("ws") / "tiny.gguf")


def test_absmean_rule_matches_bitnet() -> None:
    w = np.array([[0.9, -0.05, 0.3, -2.0], [0.0, 0.1, -0.4, 0.35]], dtype=np.float32)
    t, scale = absmean_ternary(w)
    assert scale == pytest.approx(np.abs(w).mean())  # 0.5125
    # w / 0.5125 = [1.76, -0.10, 0.59, -3.9], [0, 0.20, -0.78, 0.68] -> round, clip
    assert t.tolist() == [[1, 0, 1, -1], [0, 0, -1, 1]]
    assert t.dtype == np.int8
    assert ternarise(w) == pytest.approx(t * scale)


def test_a_tensor_view_shows_histogram_shares_and_error(tiny) -> None:
    name = matrix_names(tiny)[0]
    view = tensor_view(tiny, name, bins=31)
    w = read_tensor(tiny, name)
    assert sum(view.counts) == w.size and len(view.edges) == 32
    assert view.scale == pytest.approx(float(np.abs(w).mean()), rel=1e-5)
    assert sum(view.ternary_shares.values()) == pytest.approx(1.0)
    approx = ternarise(w)
    expected = np.linalg.norm(w - approx) / np.linalg.norm(w)
    assert view.relative_error == pytest.approx(expected, rel=1e-5)
    assert 0.0 < view.relative_error < 1.0


def test_an_unknown_tensor_is_a_clear_error(tiny) -> None:
    with pytest.raises(CorralError, match="no tensor called nope"):
        tensor_view(tiny, "nope")


def test_ternarise_model_writes_ternary_f16_into_the_library(corral_home, tiny) -> None:
    out = ternarise_model(tiny)
    assert out.parent == models_dir() and read_gguf(out).file_type == 1
    kinds = {t.name: t.type_name for t in tensors(out)}
    assert all(kind == ("F16" if "norm" not in name else "F32") for name, kind in kinds.items())
    for name in matrix_names(out):
        values = np.unique(read_tensor(out, name))
        assert len(values) <= 3, f"{name} holds {len(values)} distinct values"
        # ... and they are -scale, 0, +scale of the source tensor (to F16 precision)
        scale = float(np.abs(read_tensor(tiny, name)).mean())
        assert np.allclose(np.abs(values[values != 0]), scale, rtol=1e-3)
    norm = next(n for n in kinds if "norm" in n)
    assert np.array_equal(read_tensor(out, norm), read_tensor(tiny, norm))
    facts = read_provenance(out)
    assert facts is not None and facts["kind"] == "ternarise"


def test_a_float_file_stores_nothing_ternary(tiny) -> None:
    share = ternary_share(tiny)
    assert share.ternary_weights == 0 and share.share == 0.0
    assert share.total_weights == sum(t.n_weights for t in tensors(tiny))
