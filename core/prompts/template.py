"""Render a model's own chat template (GGUF ``tokenizer.chat_template``) safely: the one
renderer behind chat, the prompt inspector and the template check of the Models page.

Model files are untrusted (CVE-2024-34359, FORMATS.md 6.5): templates run in Jinja's
``ImmutableSandboxedEnvironment`` set up as llama-cpp-python's ``Jinja2ChatFormatter`` sets it
up (trim_blocks, lstrip_blocks, loop controls, the ``{% generation %}`` tag, its ``tojson``,
``strftime_now``, and ``tools``/``functions`` given as None), so a template's output is the
same byte for byte. Corral adds what the sandbox lacks: a refusal of templates that reach for
Python internals, a time limit (checked by a tracer in the calling thread, so nothing is left
running), an output size limit, and caps on the operations that allocate huge strings.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from types import FrameType
from typing import Any

from core.errors import PromptFormatError, UnsafeTemplate

MAX_TEMPLATE_CHARS = 256 * 1024
MAX_OUTPUT_CHARS = 1024 * 1024
TIME_LIMIT_S = 2.0
_MAX_WIDTH = 100_000  # padding/width arguments a template may ask for
_BIG_FORMAT_WIDTH = re.compile(r"\d{6,}")


#: what to do instead of using a refused template
REFUSED_HINT = "Pick the llama2, codellama70b or raw prompt format instead of the model's own."


class TemplateRefused(UnsafeTemplate):
    """A refused template, with the bare ``reason`` (``recurses without end``) so that both
    "the chat template recurses ..." and the Models page's "it recurses ..." can say it."""

    def __init__(self, reason: str, *, hint: str | None = REFUSED_HINT) -> None:
        super().__init__(f"the chat template {reason}", hint=hint)
        self.reason = reason


class _TemplateRaised(Exception):
    """raise_exception() called by the template itself (e.g. roles do not alternate)."""


class _TemplateTimeout(Exception):
    pass


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(str(fmt))


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' and llama-cpp-python's ``tojson``: plain json.dumps, no HTML escaping."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _capped(name: str, func: Any) -> Any:
    def wrapper(value: Any, *args: Any, **kwargs: Any) -> Any:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > _MAX_WIDTH:
                raise TemplateRefused(f"asks the '{name}' filter for {arg} characters")
        return func(value, *args, **kwargs)

    return wrapper


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTags(jinja2.ext.Extension):
        """HF's ``{% generation %}...{% endgeneration %}`` marks: the text passes through."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    class LimitedSandbox(ImmutableSandboxedEnvironment):  # type: ignore[misc]
        intercepted_binops = frozenset(["*", "**", "%"])

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    sized = isinstance(seq, (str, list, tuple)) and isinstance(n, int)
                    if sized and len(seq) * n > MAX_OUTPUT_CHARS:
                        raise TemplateRefused("builds a gigantic string")
            elif operator == "**":
                if isinstance(right, (int, float)) and abs(right) > 1000:
                    raise TemplateRefused("computes a gigantic number")
            elif operator == "%" and isinstance(left, str) and _BIG_FORMAT_WIDTH.search(left):
                raise TemplateRefused("formats with a gigantic width")
            return super().call_binop(context, operator, left, right)

        def wrap_str_format(self, value: Any) -> Any:
            owner = getattr(value, "__self__", None)
            if isinstance(owner, str) and _BIG_FORMAT_WIDTH.search(owner):
                raise TemplateRefused("formats with a gigantic width")
            return super().wrap_str_format(value)

    env = LimitedSandbox(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationTags, jinja2.ext.loopcontrols],
    )
    for name in ("center", "indent", "wordwrap", "truncate"):
        env.filters[name] = _capped(name, env.filters[name])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env


def _private_names(source: str) -> list[str]:
    """Attribute names starting with '_' the template reaches for (the classic SSTI path)."""
    from jinja2 import nodes

    env = _environment()
    try:
        tree = env.parse(source)
    except Exception as exc:  # jinja2.TemplateSyntaxError and friends
        raise TemplateRefused(f"is not valid Jinja ({exc})") from None
    found: list[str] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Const)):
        name: Any = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            arg = node.args[0]
            name = arg.value if isinstance(arg, nodes.Const) else "(computed name)"
        elif isinstance(node, nodes.Const) and isinstance(node.value, str):
            name = node.value if node.value.startswith("__") else None
        if isinstance(name, str) and name.startswith("_") or name == "(computed name)":
            found.append(str(name))
    return sorted(set(found))


@lru_cache(maxsize=16)
def compile_template(source: str) -> Any:
    """Check and compile a chat template; UnsafeTemplate with the reason if it is refused."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateRefused(f"is {len(source)} characters long, more than Corral accepts")
    private = _private_names(source)
    if private:
        raise TemplateRefused(
            "reaches into Python internals (" + ", ".join(repr(p) for p in private)
            + "), a known way to attack the app that renders it"
        )
    return _environment().from_string(source)


#: the conversation ``template_problem`` renders a model's template with
SAMPLE_CONVERSATION: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi"},
    {"role": "user", "content": "How are you?"},
)


def render_chat_template(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    add_generation_prompt: bool = True,
    extra: Mapping[str, Any] | None = None,
    time_limit_s: float = TIME_LIMIT_S,
    max_chars: int = MAX_OUTPUT_CHARS,
) -> str:
    """The template's output for ``messages``, within time and size limits: what
    llama-cpp-python's Jinja2ChatFormatter gives for the same template and tokens.

    Raises TemplateRefused (an UnsafeTemplate) for a hostile template, PromptFormatError for
    one that fails on this conversation (``raise_exception``, a missing key ...)."""
    from jinja2.exceptions import SecurityError, TemplateError

    template = compile_template(source)
    context: dict[str, Any] = {
        "messages": [dict(m) for m in messages],
        "bos_token": bos_token,
        "eos_token": eos_token,
        "add_generation_prompt": add_generation_prompt,
        # llama-cpp-python passes these as None: "{% if tools is none %}" must agree
        "functions": None, "function_call": None, "tools": None, "tool_choice": None,
        **(extra or {}),
    }
    deadline = time.monotonic() + time_limit_s
    ticks = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal ticks
        ticks += 1
        if ticks & 0x3F == 0 and time.monotonic() > deadline:
            raise _TemplateTimeout()
        return tracer

    parts: list[str] = []
    size = 0
    previous = sys.gettrace()
    sys.settrace(tracer)  # this thread only: the render stops here, nothing is left running
    try:
        for chunk in template.generate(**context):
            size += len(chunk)
            if size > max_chars:
                raise TemplateRefused(f"produced more than {max_chars} characters")
            parts.append(chunk)
    except _TemplateRaised as exc:
        raise PromptFormatError(f"the model's chat template refused the conversation: {exc}") from None
    except _TemplateTimeout:
        raise TemplateRefused(f"did not finish within {time_limit_s:g} s") from None
    except SecurityError as exc:
        raise TemplateRefused(f"tries to escape the template sandbox ({exc})") from None
    except RecursionError:
        raise TemplateRefused("recurses without end") from None
    except (OverflowError, MemoryError) as exc:
        raise TemplateRefused(
            f"tries to use too many resources ({type(exc).__name__}: {exc})") from None
    except TemplateError as exc:
        raise PromptFormatError(f"the model's chat template failed: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as exc:
        raise PromptFormatError(f"the model's chat template failed: {exc}") from None
    finally:
        sys.settrace(previous)
    return "".join(parts)


def refusal_reason(source: str, *, time_limit_s: float = TIME_LIMIT_S) -> str | None:
    """Why Corral refuses a template, as a bare reason ("recurses without end"), or None.

    The template is rendered with ``SAMPLE_CONVERSATION`` by ``render_chat_template`` (the
    same sandbox and limits as chat, in the calling thread). A template that merely fails on
    that conversation (``raise_exception`` ...) is not refused: it may suit other ones."""
    try:
        render_chat_template(source, SAMPLE_CONVERSATION, time_limit_s=time_limit_s)
    except TemplateRefused as exc:
        return exc.reason
    except PromptFormatError:  # it fails on this conversation only: not a security problem
        pass
    return None
