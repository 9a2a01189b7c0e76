"""`corral kb`: create, list, inspect, tune and remove knowledge bases."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from core.cli._common import add_json_flag, load_settings, print_json

HELP = "create, list, inspect, tune and remove knowledge bases"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a knowledge base")
    create.add_argument("name")
    create.add_argument("--embedder", default="",
                        help="minilm (default), a sentence-transformers folder, ollama:NAME or a .gguf")
    create.add_argument("--embedder-mode", default="", choices=["", "standard", "fast", "fastest"],
                        help="embedder speed mode (default: from settings)")
    create.add_argument("--chunk-tokens", type=int, default=256, help="chunk size in embedder tokens")
    create.add_argument("--overlap", type=int, default=32, help="overlap between chunks in tokens")
    add_json_flag(create)
    lst = sub.add_parser("list", help="list knowledge bases")
    add_json_flag(lst)
    info = sub.add_parser("info", help="show a knowledge base")
    info.add_argument("name")
    add_json_flag(info)
    tune = sub.add_parser("set", help="change how a knowledge base is searched")
    tune.add_argument("name")
    tune.add_argument("--hybrid-weight", type=float, metavar="W",
                      help="how much keywords count against meaning, 0..1 (0.5: equally)")
    tune.add_argument("--top-k", type=int, metavar="K",
                      help="passages chat retrieves per turn from it (0: the chat setting)")
    add_json_flag(tune)
    rm = sub.add_parser("rm", help="remove a knowledge base and its vectors")
    rm.add_argument("name")
    add_json_flag(rm)


def _passages(info: Any) -> str:
    return (f"chat retrieves {info.top_k} passages per turn" if info.top_k
            else "chat retrieves the chat setting's number of passages (documents_k)")


def _describe(info: Any) -> str:
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created)) if info.created else "?"
    lines = [
        f"name:       {info.name}",
        f"embedder:   {info.embedder} ({info.mode} mode, {info.dimension} dimensions)",
        f"chunks:     {info.chunks} from {info.files} files ({info.skipped} skipped)",
        f"chunking:   {info.chunk_tokens} tokens, overlap {info.overlap_tokens}",
        f"search:     hybrid, keyword weight {info.hybrid_weight:g} (0: meaning only, "
        f"1: keywords only); {_passages(info)}",
        f"sources:    {', '.join(info.sources) or '-'}",
        f"watching:   {'yes' if info.watch else 'no'}",
        f"store:      {info.store} (collection {info.collection})",
        f"created:    {created}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from core.errors import CorralError
    from core.rag.chunker import ChunkParams
    from core.rag.knowledge_base import create_kb, list_kbs, open_kb, remove_kb

    settings = load_settings()
    if args.action == "create":
        kb = create_kb(
            args.name, settings=settings, embedder=args.embedder, mode=args.embedder_mode,
            params=ChunkParams(args.chunk_tokens, args.overlap),
            notice=lambda text: print(f"note: {text}", file=sys.stderr),
        )
        info = kb.info()
        kb.close()
        if args.json:
            print_json(info.to_dict())
        else:
            print(f"created knowledge base '{info.name}' ({info.embedder}, {info.mode} mode)")
    elif args.action == "list":
        infos = list_kbs(settings=settings)
        if args.json:
            print_json([i.to_dict() for i in infos])
        elif not infos:
            print("no knowledge bases yet; create one with: corral kb create NAME")
        else:
            width = max(len(i.name) for i in infos)
            for i in infos:
                print(f"{i.name:<{width}}  {i.chunks:>7} chunks  {i.files:>5} files  "
                      f"{i.embedder} ({i.mode})")
    elif args.action == "info":
        kb = open_kb(args.name, settings=settings)
        info = kb.info()
        kb.close()
        print_json(info.to_dict()) if args.json else print(_describe(info))
    elif args.action == "set":
        if args.hybrid_weight is None and args.top_k is None:
            raise CorralError("say what to change: --hybrid-weight W and/or --top-k K")
        kb = open_kb(args.name, settings=settings)
        try:
            if args.hybrid_weight is not None:
                kb.hybrid_weight = args.hybrid_weight
            if args.top_k is not None:
                kb.top_k = args.top_k or None
            info = kb.info()
        finally:
            kb.close()
        if args.json:
            print_json(info.to_dict())
        else:
            print(f"'{info.name}' now searches with keyword weight {info.hybrid_weight:g}; "
                  f"{_passages(info)}")
    elif args.action == "rm":
        remove_kb(args.name, settings=settings)
        if args.json:
            print_json({"removed": args.name})
        else:
            print(f"removed knowledge base '{args.name}'")
    return 0
