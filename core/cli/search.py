"""`corral search QUERY --kb NAME`: the chunks a knowledge base retrieves for a query, and
(under --json) why each came back: its vector and keyword ranks and the fused score."""

from __future__ import annotations

import argparse
import textwrap

from core.cli._common import add_json_flag, load_settings, print_json

HELP = "search a knowledge base"
MODES = ("hybrid", "vector", "keyword")  # as core.rag.retriever.MODES, without importing it


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query")
    parser.add_argument("--kb", required=True, help="knowledge base to search")
    parser.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="minimum cosine similarity of a hit (default 0)")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="hybrid: vectors and keywords (BM25) fused (default); "
                             "vector or keyword: one side only")
    parser.add_argument("--vector-only", action="store_true", help="the same as --mode vector")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from core.errors import CorralError
    from core.rag.knowledge_base import open_kb
    from core.rag.retriever import Retriever

    mode = args.mode or ("vector" if args.vector_only else "hybrid")
    if args.vector_only and mode != "vector":
        raise CorralError(f"--vector-only contradicts --mode {mode}", hint="Give one of them.")
    kb = open_kb(args.kb, settings=load_settings())
    try:
        hits = Retriever(kb).search(args.query, args.k, threshold=args.threshold, mode=mode)
    finally:
        kb.close()
    if args.json:
        print_json({"query": args.query, "kb": args.kb, "mode": mode,
                    "hits": [h.to_dict() for h in hits]})
        return 0
    if not hits:
        print("no matching chunks")
        return 0
    for n, h in enumerate(hits, 1):
        page = f", page {h.page}" if h.page is not None else ""
        print(f"[{n}] {h.score:.3f}  {h.source}{page}, chunk {h.chunk_index}")
        body = " ".join(h.text.split())
        print(textwrap.indent(textwrap.shorten(body, 400, placeholder=" ..."), "    "))
    return 0
