"""Llama 2 chat (and Code Llama 7B/13B/34B Instruct) prompts, exactly as Meta's reference builds
them (FORMATS.md 1.1, 2.1): ``<s>[INST] ... [/INST] answer </s>`` per completed turn."""

from __future__ import annotations

from collections.abc import Sequence

from core.prompts.base import Message, RenderedPrompt, Segment, TagPolicy, guard_tags, split_system

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
BOS, EOS = "<s>", "</s>"
#: Meta's SPECIAL_TAGS as Code Llama's reference lists them (Llama 2's list without "<step>"):
#: the format serves both families, and "<step>" is a real token in Code Llama vocabularies.
SPECIAL_TAGS = (B_INST, E_INST, "<<SYS>>", "<</SYS>>", "<step>")
#: Ollama raw mode parses these as tokens, so they are refused there too.
RAW_TAGS = (*SPECIAL_TAGS, BOS, EOS)


def render_llama2(
    messages: Sequence[Message],
    *,
    tags: TagPolicy = "refuse",
    for_ollama: bool = False,
    name: str = "llama2",
) -> RenderedPrompt:
    checked, notes = guard_tags(messages, RAW_TAGS if for_ollama else SPECIAL_TAGS, tags, name)
    system, turns = split_system(checked)
    users = [m.content for m in turns[0::2]]
    answers = [m.content for m in turns[1::2]]
    if system is not None:
        users[0] = B_SYS + system + E_SYS + users[0]
    segments: list[Segment] = []
    for user, answer in zip(users, answers, strict=False):
        body = f"{B_INST} {user.strip()} {E_INST} {answer.strip()} "
        segments += [
            Segment("special", BOS, BOS),
            Segment("text", body, body),
            Segment("special", EOS, EOS),
        ]
    last = f"{B_INST} {users[-1].strip()} {E_INST}"
    segments += [Segment("special", BOS, BOS), Segment("text", last, last)]
    text = "".join(s.display for s in segments)
    raw = text[len(BOS) :] if for_ollama else None
    return RenderedPrompt(name, text, tuple(segments), raw=raw, notes=notes)
