"""`corral tokens` and `corral similarity` as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.cli import run_subcommand


def test_tokens_json_lists_every_tokenizer_with_exact_bytes(capsys, tiny_gguf) -> None:
    from core.models.pool import close_all

    text = "Hello, wörld! 👋"
    try:
        rc = run_subcommand("tokens", [text, "-t", str(tiny_gguf), "-t", "wordpiece", "-t", "bpe",
                                       "--json"])
    finally:
        close_all()
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    kinds = [t["kind"] for t in out["tokenizers"]]
    assert kinds == ["sentencepiece", "wordpiece", "bpe"]
    llama = out["tokenizers"][0]["tokens"]
    assert set(llama[0]) >= {"id", "text", "start", "end", "bytes", "special"}
    assert llama[0]["special"] and llama[0]["id"] == 1
    assert "".join(t["text"] for t in llama) == text
    assert [t["bytes"] for t in llama[-4:]] == ["f0", "9f", "91", "8b"]
    assert [(t["start"], t["end"]) for t in llama[-4:]] == [(14, 14)] * 3 + [(14, 15)]
    assert out["differing_cuts"]


def test_tokens_text_output_and_bpe_trained_on_a_file(capsys, tmp_path) -> None:
    corpus = tmp_path / "train.txt"
    corpus.write_text("lowest lowest lowest newest newest widest " * 20, encoding="utf-8")
    rc = run_subcommand("tokens", ["lowest newest", "-t", "bpe", "--train", str(corpus)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "BPE trained on your text [bpe]: 2 tokens" in out


def test_tokens_names_a_missing_model_in_one_sentence(capsys) -> None:
    rc = run_subcommand("tokens", ["hi", "-t", "missing-model.gguf"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "no such model file" in err and "Traceback" not in err


@pytest.mark.slow
def test_similarity_json_matrix_is_the_cosine_of_the_embedder_vectors(capsys) -> None:
    from core.rag.embedder import shared_embedder

    texts = ["The cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell sharply."]
    rc = run_subcommand("similarity", [*texts, "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "cosine" and out["texts"] == texts
    v = shared_embedder("minilm").embed(texts).astype(np.float64)
    np.testing.assert_allclose(np.array(out["matrix"]), v @ v.T, atol=1e-5)
    rc = run_subcommand("similarity", [*texts, "--metric", "manhattan", "--csv"])
    assert rc == 0 and capsys.readouterr().out.startswith(",The cat sits on the mat.")


def test_prompt_raw_format_prints_the_text_as_written(capsys, tmp_path) -> None:
    conv = tmp_path / "c.json"
    conv.write_text(json.dumps([{"role": "system", "content": "Notes:"},
                                {"role": "user", "content": "The capital of France is"}]))
    assert run_subcommand("prompt", [str(conv), "--format", "raw"]) == 0
    assert json.loads(capsys.readouterr().out) == {"prompt": "Notes:\n\nThe capital of France is"}
    conv.write_text(json.dumps([{"role": "user", "content": ""}]))
    assert run_subcommand("prompt", [str(conv), "--format", "raw"]) == 1
    err = capsys.readouterr().err
    assert "the conversation is empty" in err and "Traceback" not in err


def test_prompt_count_names_a_missing_model_in_one_sentence(capsys, tmp_path) -> None:
    conv = tmp_path / "c.json"
    conv.write_text(json.dumps([{"role": "user", "content": "hi"}]))
    assert run_subcommand("prompt", [str(conv), "-f", "raw", "-m", "missing-model.gguf"]) == 1
    err = capsys.readouterr().err
    assert "no such model file" in err and len(err.strip().splitlines()) == 1
