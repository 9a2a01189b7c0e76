"""`corral prompt`: print the exact prompt string a format produces for a JSON conversation,
and with ``--model`` its token count by the model's own vocabulary (no weights loaded)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from core.cli._common import load_settings, print_json, read_json_input
from core.errors import CorralError

if TYPE_CHECKING:
    from core.chat.backends import ChatBackend
    from core.config import Settings

HELP = "print the exact prompt string a format produces"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE|-",
                        help='a JSON list of {"role", "content"} messages ("-": standard input)')
    parser.add_argument("--format", "-f", required=True, metavar="FORMAT",
                        help="llama2, codellama (the same format), codellama70b, model "
                             "(the model's own template; needs --model) or raw (plain "
                             "completion for base models: the text as written)")
    parser.add_argument("--model", "-m", metavar="REF",
                        help="also count tokens with this model's own vocabulary (read alone: "
                             "the weights are not loaded)")
    parser.add_argument("--defuse-tags", action="store_true",
                        help="defuse control tags found in messages instead of refusing them")
    parser.add_argument("--ollama", action="store_true",
                        help="print the Ollama raw-mode string (no leading BOS) instead")
    parser.add_argument("--json", action="store_true", help="(the output is always JSON)")


def _messages(raw: Any) -> list[Any]:
    if isinstance(raw, dict) and isinstance(raw.get("messages"), list):
        raw = raw["messages"]
    if not isinstance(raw, list):
        raise CorralError('the input must be a JSON list of {"role", "content"} messages')
    return raw


def counting_backend(ref: str, settings: Settings) -> ChatBackend:
    """The backend that renders and counts for ``ref``: a GGUF through a vocabulary-only
    engine (tokenizer and template, no weights), or the Ollama server."""
    from pathlib import Path

    from core.chat.llama_backend import LlamaCppBackend
    from core.chat.open import open_backend
    from core.errors import ModelNotFound
    from core.models.pool import engine_pool
    from core.models.refs import parse_ref, resolve

    resolved = resolve(parse_ref(ref), settings)
    if resolved.kind == "ollama":
        return open_backend(ref, settings)
    if resolved.path is None or not Path(resolved.path).exists():
        raise ModelNotFound(f"the model file for {ref!r} is missing: {resolved.path}")
    engine = engine_pool().engine(resolved.path, role="vocab")
    return LlamaCppBackend(resolved.path, engine=engine, display=resolved.display or ref)


def run(args: argparse.Namespace) -> int:
    from core.prompts.base import TagPolicy
    from core.prompts.formats import normalise_format, render

    messages = _messages(read_json_input(args.file))
    fmt = normalise_format(args.format)
    tags: TagPolicy = "defuse" if args.defuse_tags else "refuse"
    if args.model is None:
        if fmt == "model":
            raise CorralError("the 'model' format needs --model REF to read the model's template")
        rendered = render(messages, fmt, tags=tags, for_ollama=args.ollama)
        print_json({"prompt": rendered.raw if args.ollama else rendered.text})
        return 0
    from core.chat.llama_backend import LlamaCppBackend
    from core.chat.ollama_backend import OllamaBackend
    from core.prompts.base import as_messages

    backend = counting_backend(args.model, load_settings())
    msgs = as_messages(messages)
    if isinstance(backend, OllamaBackend) and fmt == "model":
        raise CorralError("Ollama renders its own template for the 'model' format; "
                          "corral prompt cannot show it", hint="Use --format llama2 or codellama70b.")
    prepared = backend.prepare(msgs, fmt, tags)  # type: ignore[arg-type]
    text = prepared.raw if (args.ollama or isinstance(backend, OllamaBackend)) else prepared.exact_text
    out: dict[str, Any] = {"prompt": text, "tokens": prepared.token_count}
    if isinstance(backend, LlamaCppBackend) and getattr(args, "debug", False):
        out["token_ids"] = prepared.token_ids
    print_json(out)
    return 0
