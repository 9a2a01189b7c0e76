"""Split a Markdown answer into prose and fenced code blocks (for rendering and copy buttons).

Works on partial text too: an unclosed fence is a code block that is still growing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\n]*)$")


@dataclass(frozen=True)
class Block:
    kind: str  #: 'text' or 'code'
    text: str
    language: str = ""
    closed: bool = True


def split_blocks(markdown: str) -> list[Block]:
    blocks: list[Block] = []
    prose: list[str] = []
    code: list[str] = []
    fence = ""
    language = ""
    for line in markdown.split("\n"):
        if not fence:
            m = _FENCE.match(line)
            if m:
                if prose:
                    blocks.append(Block("text", "\n".join(prose)))
                    prose = []
                fence, language, code = m.group(1), m.group(2).strip(), []
            else:
                prose.append(line)
            continue
        stripped = line.strip()
        if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
            blocks.append(Block("code", "\n".join(code), language))
            fence = ""
        else:
            code.append(line)
    if fence:
        blocks.append(Block("code", "\n".join(code), language, closed=False))
    elif prose and "\n".join(prose).strip():
        blocks.append(Block("text", "\n".join(prose)))
    return [b for b in blocks if b.kind == "code" or b.text.strip()]
