"""`corral evaluate SUBJECT ...`: measure on the user's own data.

Each subject lives in its own module (``core/cli/evaluate_<subject>.py``, with the same
``configure(parser)`` / ``run(args)`` pair as a subcommand) and is imported only when asked
for or when ``--help`` lists it.
"""

from __future__ import annotations

import argparse
import importlib

HELP = "measure embedders, retrieval settings and models on your own data"

#: subject -> (module, one line of help)
SUBJECTS: dict[str, tuple[str, str]] = {
    "embedders": ("core.cli.evaluate_embedders",
                  "MTEB-style scores of embedders on a knowledge base"),
    "tune": ("core.cli.evaluate_tune",
             "search chunk size, overlap, hybrid weight and top-k for a knowledge base"),
    "models": ("core.cli.evaluate_models",
               "perplexity, KL divergence, top-token agreement and speed of models"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="subject", required=True, metavar="SUBJECT")
    for name, (module, text) in SUBJECTS.items():
        child = sub.add_parser(name, help=text, description=text)
        try:
            importlib.import_module(module).configure(child)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            child.set_defaults(unavailable=True)


def run(args: argparse.Namespace) -> int:
    from core.errors import FeatureUnavailable

    if getattr(args, "unavailable", False):
        raise FeatureUnavailable(f"'corral evaluate {args.subject}' is not in this version yet")
    return int(importlib.import_module(SUBJECTS[args.subject][0]).run(args) or 0)
