"""Benchmarks of the analysis views (scripts: they print, they assert nothing).

1. Projection + first render of 100,000 384-d points on the corpus map; prints seconds for
   each stage and the ratio of Corral's PCA to scikit-learn's PCA.
   Run: QT_QPA_PLATFORM=offscreen python tests/bench/bench_analysis.py [N]
2. `corral prompt --model` token count on SmolLM2 (target under 1 s): the whole command as a
   user runs it, and the count alone in one process, against llama-cpp-python doing the same
   work (vocabulary-only load, its own template formatter, tokenize) in one process.
   Run: python tests/bench/bench_analysis.py prompt [MODEL.gguf]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def make_vectors(n: int, dim: int = 384, docs: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((docs, dim)).astype(np.float32)
    x = centres[rng.integers(0, docs, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main(n: int = 100_000) -> None:
    from core.analysis.corpus import corpus_from_vectors
    from core.analysis.projection import Projector, nearest_neighbours

    x = make_vectors(n)
    docs = [f"/docs/document-{i % 50}.txt" for i in range(n)]
    corpus = corpus_from_vectors(x, [f"chunk {i}" for i in range(n)], docs)

    t0 = time.perf_counter()
    projector = Projector("pca")
    coords = projector.fit(corpus.vectors)
    t_pca = time.perf_counter() - t0

    from sklearn.decomposition import PCA

    t0 = time.perf_counter()
    PCA(n_components=2, svd_solver="full").fit_transform(x)
    t_raw = time.perf_counter() - t0

    t0 = time.perf_counter()
    hits = nearest_neighbours(x, x[123], k=10)
    t_knn = time.perf_counter() - t0
    assert hits[0].index == 123

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from desktop.pages.embeddings.plots import CorpusMapView

    view = CorpusMapView()
    view.resize(1000, 700)
    view.show()
    t0 = time.perf_counter()
    groups, legend = corpus.document_index()
    names = [f"document-{i % 50}.txt" for i in range(n)]
    view.set_points(coords, groups, legend, corpus.texts, names)
    image = view.grab()  # forces the first full paint
    app.processEvents()
    t_render = time.perf_counter() - t0
    assert not image.isNull()

    t0 = time.perf_counter()
    for _ in range(5):
        view.plot.vb.scaleBy((0.9, 0.9))
        view.grab()
    t_repaint = (time.perf_counter() - t0) / 5

    print(f"points: {n:,} x {x.shape[1]}")
    print(f"PCA (Corral):             {t_pca:7.3f} s")
    print(f"PCA (scikit-learn, full): {t_raw:7.3f} s   ratio Corral/raw = {t_pca / t_raw:.2f}x")
    print(f"top-10 neighbours:        {t_knn:7.3f} s")
    print(f"first render:             {t_render:7.3f} s")
    print(f"projection + first render {t_pca + t_render:7.3f} s")
    print(f"repaint after zoom:       {t_repaint:7.3f} s per frame")
    view.close()


CONVERSATION = [{"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Japan? Answer with the city only, 日本."}]


def raw_count(model: str) -> tuple[int, float]:
    """llama-cpp-python alone: import, vocabulary-only load, its Jinja2ChatFormatter,
    tokenize (Corral pays the import in its engine child, so it is counted here too)."""
    start = time.perf_counter()
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    text_of = llm._model.token_get_text
    formatter = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"],
                                    eos_token=text_of(llm.token_eos()),
                                    bos_token=text_of(llm.token_bos()))
    prompt = formatter(messages=CONVERSATION).prompt
    n = len(llm.tokenize(prompt.encode(), add_bos=False, special=True))
    return n, time.perf_counter() - start


def prompt_count(model: str | None = None) -> None:
    from tools.real_models import smollm2_path

    model = model or str(smollm2_path())
    os.environ.setdefault("CORRAL_HOME", tempfile.mkdtemp(prefix="corral-bench-"))
    conv = Path(tempfile.mkdtemp(prefix="corral-bench-")) / "conversation.json"
    conv.write_text(json.dumps(CONVERSATION), encoding="utf-8")
    args = ["prompt", str(conv), "--format", "model", "--model", model]

    start = time.perf_counter()  # the whole command: Python, the engine child, the count
    done = subprocess.run([sys.executable, "-m", "desktop.launcher", *args], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    t_command = time.perf_counter() - start
    n_command = json.loads(done.stdout)["tokens"]

    from core.cli import run_subcommand
    from core.models.pool import close_all

    start = time.perf_counter()  # in one process: engine child start + vocabulary + count
    with open(os.devnull, "w") as sink:
        stdout, sys.stdout = sys.stdout, sink
        try:
            run_subcommand("prompt", args[1:])
        finally:
            sys.stdout = stdout
    t_corral = time.perf_counter() - start
    close_all()
    n_raw, t_raw = raw_count(model)
    print(f"model: {Path(model).name}; {n_command} tokens (llama-cpp-python: {n_raw})")
    print(f"`corral prompt --model` command:       {t_command:6.3f} s   (target < 1 s)")
    print(f"count in one process (Corral):         {t_corral:6.3f} s")
    print(f"count in one process (llama-cpp-python){t_raw:6.3f} s   "
          f"ratio Corral/raw = {t_corral / t_raw:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "prompt":
        prompt_count(sys.argv[2] if len(sys.argv) > 2 else None)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
