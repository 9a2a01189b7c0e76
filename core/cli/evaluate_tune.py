"""`corral evaluate tune --kb NAME`: search chunk size, overlap, embedder and hybrid weight
for a knowledge base by successive halving within a time budget, then top-k; report the best
configuration against the current one, and with --apply make it the knowledge base's."""

from __future__ import annotations

import argparse

from core.cli._common import ProgressBar, add_json_flag, load_settings, print_json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kb", required=True, help="knowledge base to tune")
    parser.add_argument("--budget", type=float, default=300.0, metavar="SECONDS",
                        help="time for the search (default 300)")
    parser.add_argument("--embedders", default="", metavar="SPEC,...",
                        help="other embedders to try besides the knowledge base's own")
    parser.add_argument("--apply", action="store_true",
                        help="make the winner the knowledge base's configuration (a re-index "
                             "into a new collection, swapped in on success)")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from core.errors import CorralError
    from core.evaluate.tune_kb import apply_best, remember_applied, tune_kb
    from core.rag.knowledge_base import open_kb

    if not args.budget > 0:
        raise CorralError("the budget must be a positive number of seconds")
    settings = load_settings()
    kb = open_kb(args.kb, settings=settings)
    bar = ProgressBar("tuning")
    try:
        result = tune_kb(kb, args.embedders.split(","), budget_s=args.budget,
                         progress=bar.update)
        said = apply_best(kb, result, progress=bar.update) if args.apply else ""
    finally:
        bar.close()
        kb.close()
    if said:
        result = remember_applied(args.kb, settings, result, said)
    if args.json:
        print_json(result.to_dict())
        return 0
    b, c = result.best, result.current
    print(f"'{result.kb}': {len(result.trials)} trials in {result.rungs} rungs, "
          f"{result.elapsed_s:.0f} s, on {b.queries} queries from {b.documents} documents")
    print(f"current: {c.config.label()}: nDCG@10 {c.ndcg_at_10:.3f}, "
          f"recall@10 {c.recall_at_10:.3f}")
    print(f"best:    {b.config.label()}: nDCG@10 {b.ndcg_at_10:.3f}, "
          f"recall@10 {b.recall_at_10:.3f} ({result.gain:+.3f})")
    print(f"top-k:   {result.top_k} (recall@{result.top_k} {result.recall_at_k:.3f}, "
          f"recall@20 {result.recall_at_20:.3f})")
    for note in result.notes:
        print(f"note: {note}")
    if result.applied:
        print(f"applied: {result.applied}")
    elif b.config != c.config:
        print(f"apply it with: corral evaluate tune --kb '{result.kb}' --apply")
    return 0
