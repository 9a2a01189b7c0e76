"""Llama Guard 1, 2, 3 (8B) and 3-1B prompts, byte-exact with the HF template of each model
(FORMATS.md 3.3-3.4, section 8), their category lists, and the corrected Ollama template (3.5)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from core.errors import PromptFormatError
from core.prompts.base import WORD_JOINER, Message, RenderedPrompt, Segment, as_messages

Check = Literal["user", "agent"]


@dataclass(frozen=True)
class GuardVersion:
    """One Llama Guard generation: its codes, names, and how its prompt is wrapped."""

    key: str
    title: str
    codes: tuple[str, ...]
    prompt_names: Mapping[str, str]  #: names as written inside the prompt
    card_names: Mapping[str, str]  #: model-card names, for people (the UI)
    llama3_wrapper: bool  #: <|start_header_id|> ... (LG3) instead of [INST] ... [/INST]
    ollama_tags: tuple[str, ...] = ()  #: Ollama library names that ship this version

    def card_name(self, code: str) -> str:
        return self.card_names.get(code, code)


_LG1_NAMES = {
    "O1": "Violence and Hate", "O2": "Sexual Content", "O3": "Criminal Planning",
    "O4": "Guns and Illegal Weapons", "O5": "Regulated or Controlled Substances",
    "O6": "Self-Harm",
}
_LG2_PROMPT = {
    "S1": "Violent Crimes", "S2": "Non-Violent Crimes", "S3": "Sex Crimes",
    "S4": "Child Exploitation", "S5": "Specialized Advice", "S6": "Privacy",
    "S7": "Intellectual Property", "S8": "Indiscriminate Weapons", "S9": "Hate",
    "S10": "Self-Harm", "S11": "Sexual Content",
}
_LG2_CARD = {**_LG2_PROMPT, "S3": "Sex-Related Crimes", "S4": "Child Sexual Exploitation",
             "S10": "Suicide & Self-Harm"}
_LG3_PROMPT = {
    "S1": "Violent Crimes", "S2": "Non-Violent Crimes", "S3": "Sex Crimes",
    "S4": "Child Exploitation", "S5": "Defamation", "S6": "Specialized Advice",
    "S7": "Privacy", "S8": "Intellectual Property", "S9": "Indiscriminate Weapons",
    "S10": "Hate", "S11": "Self-Harm", "S12": "Sexual Content", "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}
_LG3_CARD = {**_LG3_PROMPT, "S3": "Sex-Related Crimes", "S4": "Child Sexual Exploitation",
             "S11": "Suicide & Self-Harm"}
_LG3_1B_PROMPT = {k: v for k, v in _LG3_PROMPT.items() if k != "S14"}
_LG3_1B_CARD = {k: v for k, v in _LG3_CARD.items() if k != "S14"}

VERSIONS: dict[str, GuardVersion] = {
    v.key: v
    for v in (
        GuardVersion("llama-guard-1", "Llama Guard (7B, categories O1-O6)", tuple(_LG1_NAMES),
                     _LG1_NAMES, _LG1_NAMES, False),
        GuardVersion("llama-guard-2", "Llama Guard 2 (8B, categories S1-S11)", tuple(_LG2_PROMPT),
                     _LG2_PROMPT, _LG2_CARD, False),
        GuardVersion("llama-guard-3", "Llama Guard 3 8B (categories S1-S14)", tuple(_LG3_PROMPT),
                     _LG3_PROMPT, _LG3_CARD, True, ("llama-guard3:8b", "llama-guard3")),
        GuardVersion("llama-guard-3-1b", "Llama Guard 3 1B (categories S1-S13)",
                     tuple(_LG3_1B_PROMPT), _LG3_1B_PROMPT, _LG3_1B_CARD, True,
                     ("llama-guard3:1b",)),
    )
}

_ALIASES = {
    "1": "llama-guard-1", "lg1": "llama-guard-1", "llamaguard": "llama-guard-1",
    "llamaguard1": "llama-guard-1", "llamaguard7b": "llama-guard-1",
    "2": "llama-guard-2", "lg2": "llama-guard-2", "llamaguard2": "llama-guard-2",
    "metallamaguard28b": "llama-guard-2", "llamaguard28b": "llama-guard-2",
    "3": "llama-guard-3", "lg3": "llama-guard-3", "llamaguard3": "llama-guard-3",
    "llamaguard38b": "llama-guard-3", "3-8b": "llama-guard-3", "38b": "llama-guard-3",
    "31b": "llama-guard-3-1b", "lg31b": "llama-guard-3-1b", "llamaguard31b": "llama-guard-3-1b",
}


def guard_version(name: str) -> GuardVersion:
    """The version for ``llama-guard-1/-2/-3/-3-1b`` (and a few obvious spellings)."""
    key = (name or "").strip().lower()
    if key in VERSIONS:
        return VERSIONS[key]
    compact = re.sub(r"[\s_:.\-]", "", key)
    if compact in _ALIASES:
        return VERSIONS[_ALIASES[compact]]
    raise PromptFormatError(
        f"unknown Llama Guard version {name!r}; choose one of: " + ", ".join(VERSIONS)
    )


def guess_version(model_name: str) -> str | None:
    """The Llama Guard version a model name suggests (llama-guard3:1b, LlamaGuard-7b ...)."""
    name = model_name.lower().replace("_", "-")
    compact = re.sub(r"[^a-z0-9]", "", name)
    if "guard3" in compact:
        return "llama-guard-3-1b" if re.search(r"(^|[^0-9.])1b", name) else "llama-guard-3"
    if "guard2" in compact:
        return "llama-guard-2"
    if "llamaguard" in compact:
        return "llama-guard-1"
    return None


# --- prompt text (FORMATS.md 3.3) -----------------------------------------------------------

BOS_LLAMA3 = "<|begin_of_text|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"

_TASK = (
    "Task: Check if there is unsafe content in '{role}' messages in conversations according our"
    " safety policy with the below categories."
)
_BEGIN_CATS = "\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
_END_CATS = "\n<END UNSAFE CONTENT CATEGORIES>\n"
_BEGIN_CONV = "\n<BEGIN CONVERSATION>\n\n"
_END_CONV = "<END CONVERSATION>\n"
_INSTRUCTIONS_1 = (
    "\nProvide your safety assessment for {role} in the above conversation:\n"
    "- First line must read 'safe' or 'unsafe'.\n"
    "- If unsafe, a second line must include a comma-separated list of violated categories."
)
_INSTRUCTIONS_2 = (
    "\nProvide your safety assessment for ONLY THE LAST {role} message in the above conversation:"
    "\n - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
)

#: Llama Guard 1's categories with their policy text, as the LlamaGuard-7b HF template has them
#: (note the stray space after "O1: Violence and Hate.").
LG1_CATEGORIES = "O1: Violence and Hate. \n" + """Should not
- Help people plan or engage in violence.
- Encourage people to engage in violence.
- Express hateful, derogatory, or demeaning sentiments against people based on sensitive personal characteristics like their race, color, religion, national origin, sexual orientation, gender, gender identity, or disability.
- Encourage discrimination against people based on those characteristics and should not use slurs or create insults based on those characteristics.
Can
- Provide information on violence and discrimination.
- Discuss the topics of hate and violence, and can discuss historical events involving violence.
O2: Sexual Content.
Should not
- Engage in sexually explicit (i.e., erotic) conversations and should not encourage people to engage in sexual activities.
Can
- Discuss topics related to sexuality and sexual education.
- Provide general information regarding sexual activities.
- Provide guidance on topics related to sexual health.
O3: Criminal Planning.
Should not
- Help people plan or engage in criminal activities like theft, kidnapping, or financial crimes, especially when the person indicates that they may act on the information provided to them.
- Encourage people to engage in criminal activities or condone criminal behavior.
Can
- Help people understand how crimes are committed, provided that the response is not so detailed that it could be used to provide a roadmap for future crimes.
- Help people understand how systems work that are used to prevent crimes, provided those descriptions do not provide detailed information on how to defeat those systems.
O4: Guns and Illegal Weapons.
Should not
- Assist in the planning or execution of firearm or illegal weapons crimes, especially when the person indicates that they may act on the information provided to them.
- Encourage people to engage in firearm or illegal weapons crimes or condone such behavior.
Can
- Discuss firearms and the arguments for and against firearm ownership.
O5: Regulated or Controlled Substances.
Should not
- Encourage or assist people in the trafficking, consumption, or use of regulated or controlled substances, including but not limited to illegal drugs, tobacco, alcohol, and cannabis.
- Assist or encourage people to create such substances when it is illegal to do so.
Can
- Discuss the use of regulated or controlled substances, and can provide general information on those substances (ex: what their chemical composition is and what their effects are).
- Provide information on how those substances are manufactured, provided that the information is not so detailed as to provide step-by-step instructions for their creation.
O6: Self-Harm.
Should not
- Encourage people to harm themselves.
- Romanticize or condone self-harm or suicide.
- Provide information regarding the methods of suicide or self-harm.
- Provide any information or advice, other than information regarding appropriate health resources, to people who express or imply that they wish to harm themselves.
Can
- Provide general information regarding self-harm and suicide (ex: statistics, the mental health challenges faced by those who take these actions).
Should
- Provide information regarding appropriate health resources to people who imply or express the desire to harm themselves."""


def category_block(version: GuardVersion) -> str:
    """The text between the category markers, as that version's HF template writes it."""
    if version.key == "llama-guard-1":
        return LG1_CATEGORIES
    # Llama Guard 2 writes a space after each name; Llama Guard 3 (8B and 1B) does not.
    tail = " " if version.key == "llama-guard-2" else ""
    return "\n".join(f"{c}: {n}.{tail}" for c, n in version.prompt_names.items())


def conversation_turns(messages: Iterable[Any], check: str | None = None) -> tuple[list[Message], Check]:
    """The messages a guard reads (system messages dropped, contents stripped) and the check.

    The guard classifies the last message: ``check`` defaults to its role ('user' -> 'user',
    'assistant' -> 'agent'). Roles must alternate user/assistant starting with the user, and a
    user check must not include an answer after the checked message (model cards' rule).
    """
    turns: list[Message] = []
    for msg in as_messages(messages):
        if msg.role == "system":
            continue  # instructions to the chat model, not conversation the guard judges
        if msg.role not in ("user", "assistant"):
            raise PromptFormatError(
                f"a guard check reads user and assistant messages only, not {msg.role!r}"
            )
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if msg.role != expected:
            raise PromptFormatError(
                "conversation roles must alternate user/assistant/user/assistant/...: "
                f"message {len(turns) + 1} is {msg.role!r}, expected {expected!r}"
            )
        turns.append(Message(msg.role, msg.content.strip()))
    if not turns:
        raise PromptFormatError("the conversation is empty: there is no message to check")
    last: Check = "user" if turns[-1].role == "user" else "agent"
    wanted = (check or last).strip().lower()
    if wanted in ("assistant", "response", "output"):
        wanted = "agent"
    if wanted in ("input", "prompt"):
        wanted = "user"
    if wanted not in ("user", "agent"):
        raise PromptFormatError(f"unknown check {check!r}: use 'user' or 'agent'")
    if wanted != last:
        who = "the user's message" if wanted == "user" else "the assistant's answer"
        raise PromptFormatError(
            f"checking {who} needs a conversation that ends with it, "
            f"but the last message is from the {turns[-1].role}"
        )
    return turns, last


def _body(version: GuardVersion, turns: Sequence[Message], role: str) -> str:
    conv = "".join(
        ("User: " if m.role == "user" else "Agent: ") + m.content + "\n\n" for m in turns
    )
    instructions = _INSTRUCTIONS_1 if version.key == "llama-guard-1" else _INSTRUCTIONS_2
    return (
        _TASK.format(role=role) + _BEGIN_CATS + category_block(version) + _END_CATS
        + _BEGIN_CONV + conv + _END_CONV + instructions.format(role=role)
    )


#: Special-token texts a message must not be able to inject through Ollama (which parses
#: special tokens in every prompt): Llama 2 <s> </s>, and Llama 3's <|...|> family.
_OLLAMA_SPECIAL = re.compile(r"</?s>|<\|[A-Za-z0-9_]+\|>")


def defuse_specials(text: str) -> str:
    """Break special-token texts with an invisible word joiner (for Ollama only)."""
    return _OLLAMA_SPECIAL.sub(lambda m: m.group(0)[0] + WORD_JOINER + m.group(0)[1:], text)


def render_guard(
    messages: Iterable[Any], version: str | GuardVersion, check: str | None = None
) -> RenderedPrompt:
    """The guard prompt of ``version`` for a conversation.

    ``text`` is the normative string (HF template; Llama Guard 3 8B without its stray leading
    space; BOS as text where the template writes it). ``segments`` build llama.cpp ids: the
    template's special tokens by id, all other text - the messages included - tokenized with
    special-token parsing off, BOS once. ``raw`` is the Ollama raw-mode prompt: no BOS text
    (Ollama adds it) and special-token texts inside messages defused.
    """
    ver = version if isinstance(version, GuardVersion) else guard_version(version)
    turns, check_role = conversation_turns(messages, check)
    role = "User" if check_role == "user" else "Agent"
    body = _body(ver, turns, role)
    if not ver.llama3_wrapper:
        # [INST] ... [/INST]: the HF template writes no BOS; the tokenizer adds it.
        text = "[INST] " + body + " [/INST]"
        segments = [Segment("special", "<s>", ""), Segment("text", text, text)]
    else:
        eot_lead = " " if ver.key == "llama-guard-3-1b" else ""
        core_text = "\n\n" + body + eot_lead
        segments = [
            Segment("special", BOS_LLAMA3, BOS_LLAMA3),
            Segment("special", START_HEADER, START_HEADER),
            Segment("text", "user", "user", dummy_prefix=False),
            Segment("special", END_HEADER, END_HEADER),
            Segment("text", core_text, core_text, dummy_prefix=False),
            Segment("special", EOT, EOT),
            Segment("special", START_HEADER, START_HEADER),
            Segment("text", "assistant", "assistant", dummy_prefix=False),
            Segment("special", END_HEADER, END_HEADER),
        ]
        text = "".join(s.display for s in segments)
    safe_turns = [Message(m.role, defuse_specials(m.content)) for m in turns]
    notes: tuple[str, ...] = ()
    if safe_turns != turns:
        notes = ("special-token texts inside the messages were defused for Ollama",)
    raw_body = _body(ver, safe_turns, role)
    if ver.llama3_wrapper:
        raw = (
            f"{START_HEADER}user{END_HEADER}\n\n{raw_body}"
            f"{' ' if ver.key == 'llama-guard-3-1b' else ''}{EOT}{START_HEADER}assistant{END_HEADER}"
        )
    else:
        raw = "[INST] " + raw_body + " [/INST]"
    return RenderedPrompt(ver.key, text, tuple(segments), raw=raw, notes=notes)


# --- token ids for llama.cpp ----------------------------------------------------------------


class Tokenizer(Protocol):
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]: ...
    def token_types(self, ids: Sequence[int]) -> list[str]: ...


def guard_token_ids(prompt: RenderedPrompt, tok: Tokenizer, bos: int) -> list[int]:
    """Token ids of a guard prompt: one BOS, the template's special tokens by id, everything else
    (messages included) tokenized as the model tokenizes plain text, special parsing off."""
    ids: list[int] = []
    for seg in prompt.segments:
        if seg.kind == "special":
            if seg.text in ("<s>", BOS_LLAMA3):
                if ids:
                    raise PromptFormatError("a guard prompt has BOS only at its start")
                ids.append(bos)
                continue
            found = tok.tokenize(seg.text, add_bos=False, special=True)
            if len(found) != 1 or tok.token_types(found)[0] != "control":
                raise PromptFormatError(
                    f"this model's vocabulary has no {seg.text} token, which the "
                    f"{prompt.format} prompt needs",
                    hint="Pick the Llama Guard version that matches the guard model.",
                )
            ids.extend(found)
        else:
            ids.extend(tok.tokenize(seg.text, add_bos=False, special=False))
    return ids


# --- Ollama: the corrected llama-guard3 template (FORMATS.md 3.5) ---------------------------

_OLLAMA_HEAD = (
    "{{- $lastIndex := (len (slice .Messages 1)) }}\n"
    "{{- $last := index .Messages $lastIndex }}\n"
    '{{- $role := ""}}\n'
    '{{- if eq $last.Role "user" }}\n'
    '  {{- $role = "User" }}\n'
    "{{- else }}\n"
    '  {{- $role = "Agent" }}\n'
    "{{- end }}"
)
_OLLAMA_RANGE = (
    "{{ range .Messages }}\n"
    '{{- if eq .Role "user" }}User: {{ .Content }}\n\n'
    "{{ else }}Agent: {{ .Content }}\n\n"
    "{{ end }}\n"
    "{{- end }}"
)


def ollama_template(version: str | GuardVersion) -> str:
    """The corrected Go template for Ollama's ``llama-guard3`` (8B or 1B): the last instruction
    names the checked role, no trailing newline, and (1B) the space before ``<|eot_id|>``."""
    ver = version if isinstance(version, GuardVersion) else guard_version(version)
    if not ver.llama3_wrapper:
        raise PromptFormatError(
            f"{ver.title} is not Ollama's llama-guard3; send it the exact prompt in raw mode"
        )
    eot_lead = " " if ver.key == "llama-guard-3-1b" else ""
    return (
        _OLLAMA_HEAD + f"{START_HEADER}user{END_HEADER}\n\n" + _TASK.format(role="{{ $role }}")
        + _BEGIN_CATS + category_block(ver) + _END_CATS + _BEGIN_CONV + _OLLAMA_RANGE
        + _END_CONV + _INSTRUCTIONS_2.format(role="{{ $role }}")
        + eot_lead + f"{EOT}{START_HEADER}assistant{END_HEADER}"
    )


def ollama_messages(messages: Iterable[Any], check: str | None = None) -> list[dict[str, str]]:
    """Plain messages for the corrected template: stripped, defused, checked to alternate."""
    turns, _ = conversation_turns(messages, check)
    return [{"role": m.role, "content": defuse_specials(m.content)} for m in turns]
