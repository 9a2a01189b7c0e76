"""`corral evaluate embedders --kb NAME`: MTEB-style scores of embedders on a knowledge
base's own documents (retrieval, reranking, clustering, pair classification, STS), their
costs, and a recommendation. The result is stored with the knowledge base."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli._common import ProgressBar, add_json_flag, load_settings, print_json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kb", required=True, help="knowledge base whose documents are used")
    parser.add_argument("--embedders", default="", metavar="SPEC,...",
                        help="embedders to compare: minilm, minilm:fast, minilm:fastest, "
                             "ollama:NAME, a .gguf file, a sentence-transformers folder "
                             "(default: the knowledge base's own); bm25, tfidf and random "
                             "always run as baselines")
    parser.add_argument("--queries", type=Path, metavar="FILE",
                        help="CSV of labelled queries: query, relevant file or chunk id, grade")
    parser.add_argument("--sts", type=Path, metavar="FILE",
                        help="CSV of STS pairs: text a, text b, similarity score")
    parser.add_argument("--chat-model", type=Path, metavar="GGUF",
                        help="a chat model that also writes questions about sampled chunks")
    parser.add_argument("--questions", type=int, default=20, metavar="N",
                        help="how many questions the chat model writes (default 20)")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from core.errors import CorralError
    from core.evaluate.results import COLUMNS, cell
    from core.evaluate.run import evaluate_kb
    from core.rag.knowledge_base import open_kb

    if args.questions < 1:
        raise CorralError("--questions must be at least 1")
    kb = open_kb(args.kb, settings=load_settings())
    bar = ProgressBar("evaluating")
    try:
        result = evaluate_kb(kb, args.embedders.split(","), labelled=args.queries, sts=args.sts,
                             chat_model=args.chat_model, n_questions=args.questions,
                             progress=bar.update)
    finally:
        bar.close()
        kb.close()
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"'{result.kb}': {result.documents} documents, {result.chunks} chunks, "
          f"{result.queries} queries ({result.labelled_queries} labelled), "
          f"{result.sts_pairs} STS pairs, seed {result.seed}")
    shown = [c for c in COLUMNS if c[0] not in ("error", "max_tokens", "index_bytes")]
    rows = [[title for _f, title in shown]]
    rows += [[(f"{getattr(s, f):,.1f}" if f in ("chunks_per_s", "query_ms")
               else cell(getattr(s, f))) or "-" for f, _t in shown] for s in result.scores]
    widths = [max(len(r[i]) for r in rows) for i in range(len(shown))]
    for r in rows:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                        for i, (v, w) in enumerate(zip(r, widths, strict=True))))
    for note in result.notes:
        print(f"note: {note}")
    if result.recommendation:
        print(f"recommended: {result.recommendation}, because {result.reason}.")
    return 0
