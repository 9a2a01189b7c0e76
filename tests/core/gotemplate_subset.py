"""A tiny interpreter for the Go text/template subset the llama-guard3 templates use, so tests can
render Corral's corrected Ollama template without an Ollama server.

Supported: text, ``{{-``/``-}}`` trimming, ``$v := expr``, ``$v = expr``, ``if``/``else``/``end``,
``range .Messages``, field access (``.Messages``, ``.Role``, ``$last.Role``) and the functions
``len``, ``slice``, ``index``, ``eq``. Anything else raises, so a template change is noticed.
"""

from __future__ import annotations

import re
from typing import Any

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


def _lex(template: str) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        items.append(("text", text))
        items.append(("action", m.group(2).strip()))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = template[pos:]
    items.append(("text", tail.lstrip() if trim_next else tail))
    return items


def _parse(items: list[tuple[str, str]], i: int = 0, stop: tuple[str, ...] = ()) -> tuple[list[Any], int, str]:
    nodes: list[Any] = []
    while i < len(items):
        kind, value = items[i]
        i += 1
        if kind == "text":
            nodes.append(("text", value))
        elif value in stop:
            return nodes, i, value
        elif value.startswith("if "):
            body, i, ended = _parse(items, i, ("else", "end"))
            other: list[Any] = []
            if ended == "else":
                other, i, _ = _parse(items, i, ("end",))
            nodes.append(("if", value[3:], body, other))
        elif value.startswith("range "):
            body, i, _ = _parse(items, i, ("end",))
            nodes.append(("range", value[6:], body))
        else:
            nodes.append(("action", value))
    return nodes, i, ""


def _tokens(expr: str) -> list[str]:
    return re.findall(r'\(|\)|"[^"]*"|[^\s()]+', expr)


def _eval(tokens: list[str], env: dict[str, Any], dot: Any) -> Any:
    def atom(pos: int) -> tuple[Any, int]:
        tok = tokens[pos]
        if tok == "(":
            val, pos = call(pos + 1)
            assert tokens[pos] == ")"
            return val, pos + 1
        if tok.startswith('"'):
            return tok[1:-1], pos + 1
        if tok.isdigit():
            return int(tok), pos + 1
        if tok.startswith("$"):
            name, _, field = tok.partition(".")
            val = env[name]
            return (val[field.lower()] if field else val), pos + 1
        if tok.startswith("."):
            return dot[tok[1:].lower()], pos + 1
        raise ValueError(f"unsupported token {tok!r}")

    def call(pos: int) -> tuple[Any, int]:
        tok = tokens[pos]
        funcs = {"len": 1, "slice": 2, "index": 2, "eq": 2}
        if tok in funcs:
            args = []
            pos += 1
            for _ in range(funcs[tok]):
                val, pos = atom(pos)
                args.append(val)
            if tok == "len":
                return len(args[0]), pos
            if tok == "slice":
                return args[0][args[1]:], pos
            if tok == "index":
                return args[0][args[1]], pos
            return args[0] == args[1], pos
        return atom(pos)

    value, end = call(0)
    assert end == len(tokens), tokens
    return value


def _run(nodes: list[Any], env: dict[str, Any], dot: Any, out: list[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "if":
            branch = node[2] if _eval(_tokens(node[1]), env, dot) else node[3]
            _run(branch, env, dot, out)
        elif node[0] == "range":
            for item in _eval(_tokens(node[1]), env, dot):
                _run(node[2], env, item, out)
        else:
            m = re.fullmatch(r"(\$\w+)\s*(:=|=)\s*(.+)", node[1], re.S)
            if m:
                env[m.group(1)] = _eval(_tokens(m.group(3)), env, dot)
            else:
                out.append(str(_eval(_tokens(node[1]), env, dot)))


def render(template: str, messages: list[dict[str, str]]) -> str:
    nodes, _, _ = _parse(_lex(template))
    root = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    out: list[str] = []
    _run(nodes, {}, root, out)
    return "".join(out)
