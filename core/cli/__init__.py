"""The `corral` command: no arguments opens the window; subcommands do the same work headless.

Start-up is kept fast: this module imports only the standard library. Each subcommand lives in
``core/cli/<name>.py`` (``HELP``, ``configure(parser)``, ``run(args) -> int``) and is imported
only when it is the one asked for.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from core import __version__

#: subcommand name -> one line of help (the module is core.cli.<name>)
SUBCOMMANDS: dict[str, str] = {
    "models": "list, inspect, pull, remove and import models",
    "chat": "chat with a model from the terminal",
    "prompt": "print the exact prompt string a format produces",
    "guard": "check a conversation with Llama Guard, render guard prompts, scan code",
    "index": "index files and folders into a knowledge base",
    "search": "search a knowledge base",
    "kb": "create, list, inspect and remove knowledge bases",
    "tokens": "show how tokenizers split a text",
    "similarity": "similarity matrix of sentences under an embedder",
    "quantize": "quantize a model with llama.cpp's quantizer (down to ternary)",
    "merge": "merge models (linear, SLERP, TIES, DARE, pass-through, MoE)",
    "evaluate": "measure embedders, retrieval settings and models on your own data",
    "lab": "word vectors, GloVe, stemming, pooling and a classifier on your own text",
    "serve": "an OpenAI-compatible local API, guarded and grounded",
}

EXIT_ERROR = 1
EXIT_UNAVAILABLE = 2


def _top_parser() -> argparse.ArgumentParser:
    width = max(len(n) for n in SUBCOMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="corral",
        description="Corral: a desktop workbench for running language models locally.\n"
        "Without a subcommand, the window opens.",
        epilog=f"subcommands:\n{listing}\n\n`corral SUBCOMMAND --help` describes each one.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"corral {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--screenshots", metavar="DIR", help="render every page of the window to DIR/<page>.png and exit"
    )
    entry = parser.add_mutually_exclusive_group()
    entry.add_argument("--install-desktop-entry", action="store_true",
                       help="add Corral to your application menu (files under ~/.local/share) and exit")
    entry.add_argument("--remove-desktop-entry", action="store_true",
                       help="take Corral out of your application menu again and exit")
    parser.add_argument("targets", nargs="*", metavar="FILE",
                        help="open the window on Documents, ready to index these files")
    return parser


#: top-level options that take a value (the value is not a subcommand or a file)
_VALUE_OPTIONS = ("--screenshots",)


def _subcommand_index(argv: list[str]) -> int | None:
    """Where the subcommand is: the first positional argument, if it names one. Any other
    positional arguments are files to open (a file called like a subcommand needs ./)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return None
        if arg in _VALUE_OPTIONS:
            i += 2
            continue
        if not arg.startswith("-"):
            return i if arg in SUBCOMMANDS else None
        i += 1
    return None


def _error(message: str) -> None:
    print(f"corral: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, *,
         gui: Callable[[str | None, list[str]], int] | None = None) -> int:
    """Run ``corral``. ``gui(screenshots, files)`` opens the window (``desktop.launcher``
    passes it: core never imports Qt); without it, asking for the window is an error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Split at the subcommand: options before it are global, the rest belongs to it.
    index = _subcommand_index(argv)
    head, rest = (argv, []) if index is None else (argv[: index + 1], argv[index + 1 :])
    parser = _top_parser()
    args = parser.parse_args(head)
    debug = args.debug or "--debug" in rest
    if "--debug" in rest:
        rest.remove("--debug")

    from core.logs import setup_logging

    setup_logging(debug=debug, console=debug)
    if index is not None:
        return run_subcommand(args.targets[0], rest, debug=debug)
    if args.install_desktop_entry or args.remove_desktop_entry:
        if args.targets:
            parser.error("the desktop entry options take no files")
        return _desktop_entry(install=args.install_desktop_entry)
    files = []
    for target in args.targets:
        if not os.path.exists(target):
            parser.error(f"'{target}' is neither a subcommand nor an existing file "
                         "(`corral --help` lists the subcommands)")
        files.append(os.path.abspath(target))
    if gui is None:
        _error("the window is opened by the `corral` command (desktop.launcher).")
        return EXIT_UNAVAILABLE
    return gui(args.screenshots, files)


def _desktop_entry(*, install: bool) -> int:
    from core import desktop_entry
    from core.errors import CorralError

    try:
        report = desktop_entry.install() if install else desktop_entry.remove()
    except CorralError as exc:
        _error(exc.sentence())
        return EXIT_ERROR
    for line in report.lines():
        print(line)
    if install:
        print("Corral is in your application menu.")
    elif not report.removed:
        print("Corral had no menu entry of yours to remove.")
    return 0


def run_subcommand(name: str, argv: list[str], *, debug: bool = False) -> int:
    from core.errors import CorralError

    try:
        module = importlib.import_module(f"core.cli.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"core.cli.{name}":
            raise
        _error(f"'{name}' is not available in this version of Corral yet.")
        return EXIT_UNAVAILABLE
    parser = argparse.ArgumentParser(prog=f"corral {name}", description=module.HELP)
    module.configure(parser)
    # Options may sit between positionals (`corral chat REF --seed 1 "hi"`); argparse can
    # only parse that intermixed when the command has no sub-subcommands.
    has_subparsers = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    sub_args = parser.parse_args(argv) if has_subparsers else parser.parse_intermixed_args(argv)
    sub_args.debug = debug
    try:
        return int(module.run(sub_args) or 0)
    except CorralError as exc:
        logging.getLogger("corral").debug("command failed", exc_info=True)
        if debug:
            raise
        _error(exc.sentence())
        return EXIT_ERROR
    except KeyboardInterrupt:
        _error("interrupted.")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the last net: one line, the traceback in the log
        logging.getLogger("corral").exception("unexpected error in 'corral %s'", name)
        if debug:
            raise
        _error(f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
