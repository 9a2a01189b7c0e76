"""`corral similarity`: pairwise similarity or distance of sentences under an embedder."""

from __future__ import annotations

import argparse
import sys

from core.cli._common import add_json_flag, load_settings, print_json, read_input

HELP = "similarity matrix of sentences under an embedder (cosine, euclidean, manhattan)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="+", metavar="TEXT",
                        help="sentences to compare; '-' reads one sentence per line from stdin")
    parser.add_argument("--metric", choices=["cosine", "euclidean", "manhattan"], default="cosine",
                        help="cosine similarity (1 = same direction) or a distance (0 = identical)")
    parser.add_argument("--embedder", default="minilm", metavar="REF",
                        help="'minilm' (default), a sentence-transformers folder, ollama:NAME or a .gguf")
    parser.add_argument("--order", choices=["input", "sorted", "clustered"], default="input",
                        help="row order: as given, most central first, or clustered")
    parser.add_argument("--csv", action="store_true", help="print the raw matrix as CSV")
    add_json_flag(parser)


def _texts(items: list[str]) -> list[str]:
    texts: list[str] = []
    for item in items:
        if item == "-":
            texts.extend(line for line in read_input("-").splitlines() if line.strip())
        else:
            texts.append(item)
    return texts


def run(args: argparse.Namespace) -> int:
    from core.analysis.similarity import (
        display_order,
        format_matrix,
        matrix_csv,
        measure,
        reorder,
        similarity_matrix,
    )
    from core.errors import CorralError
    from core.rag.embedder import make_embedder

    texts = _texts(args.texts)
    if not texts:
        raise CorralError("Give at least one sentence to compare")
    embedder = make_embedder(args.embedder, ollama=load_settings().ollama)
    vectors = embedder.embed(texts)
    matrix = similarity_matrix(vectors, args.metric)
    order = display_order(matrix, args.metric, args.order)
    matrix = reorder(matrix, order)
    texts = [texts[i] for i in order]
    if args.json:
        print_json({
            "embedder": embedder.name,
            "metric": args.metric,
            "order": args.order,
            "texts": texts,
            "matrix": matrix.tolist(),
        })
        return 0
    if args.csv:
        sys.stdout.write(matrix_csv(matrix, texts))
        return 0
    m = measure(args.metric)
    closer = "higher is closer" if m.higher_is_closer else "lower is closer"
    sys.stdout.write(f"{m.label} under {embedder.name} ({closer})\n\n")
    sys.stdout.write(format_matrix(matrix, texts) + "\n")
    return 0
