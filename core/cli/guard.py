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
corral guard --scan-code FILE|- [--language LANG] [--budget SECONDS] [--json]"""

EPILOG = """\
FILE holds a JSON list of {"role", "content"} messages ("-" reads standard input); the check
defaults to the role of the last message. VERSION: llama-guard-1, llama-guard-2,
llama-guard-3, llama-guard-3-1b. GUARD_REF: ollama:NAME, store:NAME, a .gguf path, or an
imported model name.

--scan-code checks every fenced block of a Markdown FILE (or FILE as code in LANG: python,
javascript, c, cpp, java, csharp, php, rust, shell, sql; also kotlin, swift, ruby,
objective_c, xml) with CodeShield's rules and Corral's own, offline. Exit status 0: the scan
ran to the end (findings or not); 3: it is incomplete (semgrep missing, failed or ran past
the budget), and what it found so far is still printed."""


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
    parser.add_argument("--language", metavar="LANG",
                        help="language of FILE for --scan-code (python, java, cpp ...)")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="time budget of --scan-code (default 20)")
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
        DEFAULT_BUDGET_S,
        LANGUAGES,
        MORE_LANGUAGES,
        code_blocks,
        guess_language,
        normalise_language,
        scan_code,
        scan_markdown,
    )

    if len(args.args) != 1:
        raise CorralError("--scan-code takes one FILE")
    source = args.args[0]
    language = args.language
    if language is not None and normalise_language(language) is None:
        raise CorralError(f"the code scan does not know the language {language!r}",
                          hint="Use one of: " + ", ".join(LANGUAGES + MORE_LANGUAGES) + ".")
    text = read_input(source)
    if language is None and source != "-":
        language = normalise_language(Path(source).suffix.lstrip("."))
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET_S
    markdown = language is None and bool(code_blocks(text))
    if markdown:
        result = scan_markdown(text, budget_s=budget)
    else:
        result = scan_code(text, normalise_language(language) or guess_language(text),
                           budget_s=budget)
    if args.json:
        print_json(result.to_dict())
    else:
        for f in result:
            where = f"block {f.block_index + 1}, " if markdown else ""
            print(f"{where}line {f.line}: [{f.rule_id}] {f.cwe or 'no CWE'} {f.title} - {f.why}")
        print(result.summary())
    return 0 if result.complete else 3


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
    s = settings.safety
    service = GuardService(ref, version, policy=s.policy, when_unavailable=s.when_unavailable,
                           settings=settings, audit=s.audit, ollama_mode=s.ollama_mode,
                           timeout_s=s.timeout_s)
    if service.audit is not None:
        service.audit.check_writable()  # a check that cannot be recorded is not run
    verdict = service.check(messages, args.check, raise_errors=True)
    if verdict.verdict == "unavailable":  # it ran, but its record could not be written
        raise CorralError(verdict.reason, hint=verdict.hint)
    out = {
        "verdict": verdict.verdict,
        "categories": verdict.categories,
        "raw": verdict.raw,
        "category_names": verdict.category_names,
        "probability": verdict.probability,
        "action": verdict.action,
        "reason": verdict.reason,
        "explanation": verdict.explanation(),
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
