"""`corral guard`: classify a conversation with a Llama Guard model, print a guard prompt, or
scan code for insecure patterns."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.cli._common import add_json_flag, load_settings, print_json, read_input, read_json_input
from core.errors import CorralError

HELP = "check a conversation with Llama Guard, render guard prompts, scan code"

USAGE = """\
corral guard GUARD_REF FILE|- [--check user|agent] [--format VERSION] [--json]
corral guard --render --format VERSION FILE|- [--check user|agent]
corral guard --scan-code FILE|- [--language LANG] [--json]"""

EPILOG = """\
FILE holds a JSON list of {"role", "content"} messages ("-" reads standard input); the check
defaults to the role of the last message. VERSION: llama-guard-1, llama-guard-2,
llama-guard-3, llama-guard-3-1b. GUARD_REF: ollama:NAME, store:NAME, a .gguf path, or an
imported model name."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = USAGE
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("args", nargs="+", metavar="GUARD_REF FILE",
                        help="the guard model and the conversation file (or only FILE)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--render", action="store_true",
                      help="print the guard prompt for FILE without calling a model")
    mode.add_argument("--scan-code", action="store_true",
                      help="scan FILE (Markdown with code blocks, or code) for insecure code")
    parser.add_argument("--format", metavar="VERSION",
                        help="Llama Guard version (default: from the model name or settings)")
    parser.add_argument("--check", choices=("user", "agent"),
                        help="classify the last user message or the last answer")
    parser.add_argument("--language", help="language of FILE for --scan-code (py, js, sh ...)")
    add_json_flag(parser)


def _messages(data: Any) -> list[dict[str, str]]:
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list):
        raise CorralError("the conversation must be a JSON list of {\"role\", \"content\"} "
                          "messages")
    return data


def _render(args: argparse.Namespace) -> int:
    from core.prompts.guard import render_guard

    if len(args.args) != 1:
        raise CorralError("--render takes one FILE (the conversation), not a model")
    if not args.format:
        raise CorralError("--render needs --format VERSION (llama-guard-1, llama-guard-2, "
                          "llama-guard-3, llama-guard-3-1b)")
    messages = _messages(read_json_input(args.args[0]))
    rendered = render_guard(messages, args.format, args.check)
    print_json({"prompt": rendered.text}, lines=args.json)
    return 0


def _scan(args: argparse.Namespace) -> int:
    from core.safety.code_scan import (
        code_blocks,
        guess_language,
        normalise_language,
        scan_code,
        scan_markdown,
    )

    if len(args.args) != 1:
        raise CorralError("--scan-code takes one FILE")
    source = args.args[0]
    text = read_input(source)
    language = args.language
    if language is None and source != "-":
        language = Path(source).suffix.lstrip(".") or None
    markdown = normalise_language(language) is None and bool(code_blocks(text))
    if markdown:
        findings = scan_markdown(text)
    else:
        findings = scan_code(text, normalise_language(language) or guess_language(text))
    if args.json:
        print_json({"findings": [f.to_dict() for f in findings]})
        return 0
    if not findings:
        print("no insecure patterns found")
    for f in findings:
        where = f"block {f.block_index + 1}, " if markdown else ""
        print(f"{where}line {f.line}: [{f.rule_id}] {f.title} - {f.why}")
    return 0


def _classify(args: argparse.Namespace) -> int:
    from core.prompts.guard import guess_version
    from core.safety.guard import GuardService

    if len(args.args) != 2:
        raise CorralError("give the guard model and the conversation file: "
                          "corral guard GUARD_REF FILE|-")
    ref, source = args.args
    messages = _messages(read_json_input(source))
    settings = load_settings()
    version = args.format or guess_version(ref) or settings.safety.guard_version
    service = GuardService(ref, version, policy=settings.safety.policy,
                           fail_closed=settings.safety.fail_closed, settings=settings,
                           audit=settings.safety.audit, ollama_mode=settings.safety.ollama_mode)
    verdict = service.check(messages, args.check, raise_errors=True)
    out = {
        "verdict": verdict.verdict,
        "categories": verdict.categories,
        "raw": verdict.raw,
        "category_names": verdict.category_names,
        "probability": verdict.probability,
        "action": verdict.action,
        "reason": verdict.reason,
        "guard_model": verdict.guard_model,
        "version": verdict.version,
    }
    print_json(out, lines=args.json)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.render:
        return _render(args)
    if args.scan_code:
        return _scan(args)
    return _classify(args)
