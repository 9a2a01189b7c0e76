"""Prompt formats against the spec vectors (FORMATS.md 1.3, 2.3, section 8), role checks,
control-tag injection, and the sandbox around a model's own chat template."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import PromptFormatError, UnsafeTemplate
from core.prompts.base import WORD_JOINER
from core.prompts.formats import FORMATS, ModelTemplate, normalise_format, pick_format, render
from core.prompts.template import render_chat_template
from tools.tiny_gguf import LLAMA2_CHAT_TEMPLATE

# Copies of ../shared/specs/vectors, kept with the tests.
VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"

SYSTEM = "You are a helpful assistant."
U1, A1, U2 = "What is the capital of France?", "The capital of France is Paris.", "And of Germany?"
INPUTS = {
    "TV1_single_no_system": [{"role": "user", "content": U1}],
    "TV2_single_with_system": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": U1}],
    "TV3_two_turns_with_system": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": U1},
        {"role": "assistant", "content": A1}, {"role": "user", "content": U2},
    ],
}
# FORMATS.md 2.3 TV1: the Meta reference string (implicit empty system turn), which section 8
# says to follow instead of the HF/Ollama renderings stored in all_vectors.json.
CL70_TV1_REFERENCE = (
    "<s>Source: system <step> Source: user\n\n What is the capital of France? <step> "
    "Source: assistant\nDestination: user\n\n "
)


def vectors() -> dict:
    return json.loads((VECTORS / "all_vectors.json").read_text())


@pytest.mark.parametrize("tv", list(INPUTS))
@pytest.mark.parametrize("fmt,key,column", [
    ("llama2", "llama2", "hf_llama2_chat"),
    ("codellama", "codellama_instruct", "hf_codellama_instruct"),
])
def test_llama2_family_matches_every_vector(tv: str, fmt: str, key: str, column: str) -> None:
    expected = vectors()[key][tv][column]
    assert render(INPUTS[tv], fmt).text == expected


@pytest.mark.parametrize("tv", list(INPUTS))
def test_llama2_ollama_raw_string_is_the_vector_without_leading_bos(tv: str) -> None:
    expected = vectors()["llama2"][tv]["hf_llama2_chat"]
    rendered = render(INPUTS[tv], "llama2", for_ollama=True)
    assert rendered.raw == expected.removeprefix("<s>")
    assert rendered.text == expected


@pytest.mark.parametrize("tv", list(INPUTS))
def test_codellama70b_follows_the_meta_reference(tv: str) -> None:
    expected = CL70_TV1_REFERENCE if tv.startswith("TV1") else vectors()["codellama70b"][tv]["hf_codellama70b"]
    rendered = render(INPUTS[tv], "codellama70b", for_ollama=True)
    assert rendered.text == expected
    assert rendered.raw == expected.removeprefix("<s>")
    assert "<step>" in rendered.stop


def test_codellama70b_segments_encode_like_the_reference() -> None:
    """Token structure of FORMATS.md 2.2: BOS, ' Source: system' (no dummy prefix), <step> ..."""
    segs = render(INPUTS["TV2_single_with_system"], "codellama70b").segments
    assert [(s.kind, s.text) for s in segs] == [
        ("special", "<s>"),
        ("text", " Source: system"), ("text", "\n\n You are a helpful assistant."),
        ("special", "<step>"),
        ("text", " Source: user"), ("text", "\n\n What is the capital of France?"),
        ("special", "<step>"),
        ("text", " Source: assistant\nDestination: user"), ("text", "\n\n "),
    ]
    assert not any(s.dummy_prefix for s in segs if s.kind == "text")


def test_llama2_segments_put_bos_eos_as_tokens_and_text_in_between() -> None:
    segs = render(INPUTS["TV3_two_turns_with_system"], "llama2").segments
    assert [s.kind for s in segs] == ["special", "text", "special", "special", "text"]
    assert [s.text for s in segs if s.kind == "special"] == ["<s>", "</s>", "<s>"]
    assert segs[1].text.endswith("Paris. ")  # Meta's trailing space before EOS


def test_meta_strip_rules() -> None:
    msgs = [{"role": "system", "content": "  sys  "}, {"role": "user", "content": "  hi  "},
            {"role": "assistant", "content": "  yo  "}, {"role": "user", "content": "  again \n"}]
    assert render(msgs, "llama2").text == (
        "<s>[INST] <<SYS>>\n  sys  \n<</SYS>>\n\n  hi [/INST] yo </s><s>[INST] again [/INST]")


@pytest.mark.parametrize("msgs,words", [
    ([], "empty"),
    ([{"role": "assistant", "content": "hi"}], "alternate"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last message"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
      {"role": "user", "content": "c"}], "system"),
    ([{"role": "tool", "content": "a"}], "unknown role"),
    ([{"role": "user"}], "content"),
])
@pytest.mark.parametrize("fmt", ["llama2", "codellama70b"])
def test_bad_conversations_get_a_clear_error(msgs: list, words: str, fmt: str) -> None:
    with pytest.raises(PromptFormatError, match=words):
        render(msgs, fmt)


def test_unknown_format_names_the_choices() -> None:
    with pytest.raises(PromptFormatError, match="llama2, codellama, codellama70b, model"):
        normalise_format("chatml")


# --- control tags in user text -------------------------------------------------------------

LLAMA_TAGS = ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"]
RAW_ONLY = ["<s>", "</s>"]


@pytest.mark.parametrize("tag", LLAMA_TAGS)
def test_meta_tags_in_a_message_are_refused(tag: str) -> None:
    with pytest.raises(PromptFormatError, match="control tag"):
        render([{"role": "user", "content": f"hi {tag} there"}], "llama2")


@pytest.mark.parametrize("tag", RAW_ONLY)
def test_bos_eos_text_is_refused_only_where_it_would_be_parsed(tag: str) -> None:
    msgs = [{"role": "user", "content": f"say {tag} now"}]
    assert tag in render(msgs, "llama2").segments[1].text  # llama.cpp: special=False, inert
    with pytest.raises(PromptFormatError):
        render(msgs, "llama2", for_ollama=True)


# Structural occurrences in a raw prompt of n completed turns + 1 question (llama2).
def _structural(raw: str, tag: str, turns: int, with_system: bool) -> int:
    return {"[INST]": turns + 1, "[/INST]": turns + 1, "<s>": turns, "</s>": turns,
            "<<SYS>>": int(with_system), "<</SYS>>": int(with_system)}[tag]


pieces = st.sampled_from(["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>", "<step>",
                          "[", "]", "<", ">", "/", "INST", "SYS", " ", "\n", "a", "é", "<<", ">>"])
texts = st.lists(pieces, max_size=12).map("".join).filter(lambda t: t.strip() != "")


@settings(max_examples=200, deadline=None)
@given(system=st.one_of(st.none(), texts), turns=st.lists(st.tuples(texts, texts), max_size=3),
       question=texts, fmt=st.sampled_from(["llama2", "codellama70b"]))
def test_defused_messages_never_add_structure(system, turns, question, fmt) -> None:
    msgs = ([{"role": "system", "content": system}] if system is not None else [])
    for u, a in turns:
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": question})
    plain = render([{**m, "content": "x"} for m in msgs], fmt, for_ollama=True).raw
    defused = render(msgs, fmt, tags="defuse", for_ollama=True).raw
    assert plain is not None and defused is not None
    for tag in ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>", "<step>"]:
        assert defused.count(tag) == plain.count(tag), tag
    # and what the user wrote is still all there, give or take invisible joiners
    assert question.strip() in defused.replace(WORD_JOINER, "")


@settings(max_examples=150, deadline=None)
@given(roles=st.lists(st.sampled_from(["system", "user", "assistant"]), min_size=1, max_size=7))
def test_alternation_is_enforced_for_any_role_sequence(roles: list[str]) -> None:
    msgs = [{"role": r, "content": f"m{i}"} for i, r in enumerate(roles)]
    rest = roles[1:] if roles[0] == "system" else roles
    valid = (bool(rest) and all(r == ("user" if i % 2 == 0 else "assistant")
                                for i, r in enumerate(rest)) and rest[-1] == "user")
    for fmt in ("llama2", "codellama70b"):
        if valid:
            text = render(msgs, fmt).text
            assert text.count("<s>") == (len(rest) + 1) // 2 if fmt == "llama2" else 1
        else:
            with pytest.raises(PromptFormatError):
                render(msgs, fmt)


# --- the model's own template --------------------------------------------------------------


@pytest.mark.parametrize("tv", list(INPUTS))
def test_gguf_llama2_template_renders_the_vectors(tv: str) -> None:
    assert render_chat_template(LLAMA2_CHAT_TEMPLATE, INPUTS[tv]) == vectors()["llama2"][tv]["hf_llama2_chat"]


def test_model_format_shows_bos_once_and_tokenizes_the_template_as_markup() -> None:
    tpl = ModelTemplate(LLAMA2_CHAT_TEMPLATE, special_texts=("<unk>", "<s>", "</s>"))
    rendered = render(INPUTS["TV3_two_turns_with_system"], "model", template=tpl)
    assert rendered.text == vectors()["llama2"]["TV3_two_turns_with_system"]["hf_llama2_chat"]
    assert [s.kind for s in rendered.segments] == ["special", "markup"]
    with pytest.raises(PromptFormatError, match="control tag"):
        render([{"role": "user", "content": "a </s> b"}], "model", template=tpl)


def test_template_raise_exception_becomes_a_format_error() -> None:
    with pytest.raises(PromptFormatError, match="roles must alternate"):
        render_chat_template(LLAMA2_CHAT_TEMPLATE, [{"role": "assistant", "content": "x"}])


@pytest.mark.parametrize("source,reason", [
    ("{{ ''.__class__.__mro__ }}", "internals"),
    ("{{ ''.__class__ }}", "internals"),
    ("{{ ''|attr('__cla' ~ 'ss__') }}", "internals"),
    ("{{ messages['__len__'] }}", "internals"),
    ("{{ messages.append(1) }}", "sandbox"),
    ("{% for i in range(200000) %}{% endfor %}", "too many resources"),
    ("{{ 'x' * 100000000 }}", "gigantic"),
    ("{{ 'x'|center(100000000) }}", "characters"),
    ("{{ '{:>999999999}'.format(1) }}", "gigantic"),
    ("{{ 9 ** 9999999 }}", "gigantic"),
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "within"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recurses"),
    ("{% for i in range(99999) %}{{ 'x' * 99999 }}{% endfor %}", "more than"),
    ("{% if %}", "not valid"),
])
def test_hostile_templates_are_refused_with_a_reason(source: str, reason: str) -> None:
    with pytest.raises(UnsafeTemplate, match=reason):
        render_chat_template(source, INPUTS["TV1_single_no_system"], time_limit_s=0.5)


def test_pick_format_from_template_and_name() -> None:
    assert pick_format(name="x", template=LLAMA2_CHAT_TEMPLATE)[0] == "llama2"
    assert pick_format(name="codellama:70b-instruct")[0] == "codellama70b"
    assert pick_format(name="codellama:13b-instruct")[0] == "llama2"
    assert pick_format(name="m", template="{{ 'Source: assistant' }}<step>")[0] == "codellama70b"
    assert pick_format(name="llama3", template="<|start_header_id|>{{ x }}")[0] == "model"
    assert pick_format(name="llama2:7b-chat", template="[INST] <<SYS>>{{ .System }}<</SYS>>")[0] == "llama2"


@pytest.mark.parametrize("name,family,metadata,expected", [
    # base models without a chat template: plain completion, never [INST] tags
    ("Gemma 3 270m gemma-3-270m-q4_k_m", "gemma3", {}, "raw"),
    ("LLaMA v2 llama-2-7b.Q4_K_M", "llama", {}, "raw"),
    ("codellama-7b.Q4_K_M", "llama", {}, "raw"),
    ("codellama-34b-python.Q4_K_M", "llama", {}, "raw"),
    ("codellama-70b-hf.Q4_K_M", "llama", {}, "raw"),
    ("Mistral-7B-Instruct-v0.1", "llama", {}, "raw"),  # not Llama 2: the user picks by hand
    # chat-tuned Llama 2 / Code Llama, by file name or GGUF metadata
    ("LLaMA v2 llama-2-7b-chat.Q4_K_M", "llama", {}, "llama2"),
    ("Llama 2 7B model", "llama", {"general.finetune": "chat"}, "llama2"),
    ("model", "llama", {"general.name": "CodeLlama 13B Instruct"}, "llama2"),
    ("codellama-7b-instruct.Q4_K_M", "llama", {}, "llama2"),
    ("model", "llama", {"general.basename": "CodeLlama", "general.size_label": "70B",
                        "general.finetune": "70b-Instruct"}, "codellama70b"),
])
def test_pick_format_gives_base_models_plain_completion(
        name: str, family: str, metadata: dict, expected: str) -> None:
    fmt, reason = pick_format(name=name, family=family, metadata=metadata)
    assert fmt == expected, reason
    if fmt == "raw":
        assert "base model" in reason and "plain completion" in reason


# --- the raw format (plain completion) -----------------------------------------------------


def test_raw_single_message_is_the_text_as_written_after_the_models_bos() -> None:
    msgs = [{"role": "user", "content": "The capital of France is"}]
    with_bos = render(msgs, "raw", bos="<bos>")
    assert with_bos.text == "<bos>The capital of France is"
    assert [(s.kind, s.text) for s in with_bos.segments] == [
        ("special", "<bos>"), ("text", "The capital of France is")]
    assert with_bos.segments[1].dummy_prefix is None  # as the tokenizer does on its own
    assert with_bos.stop == ()  # the model's EOS is the only stop
    assert render(msgs, "raw").text == "The capital of France is"  # a tokenizer adding no BOS


def test_raw_conversation_is_joined_as_plain_text_with_blank_lines() -> None:
    rendered = render(INPUTS["TV3_two_turns_with_system"], "raw", bos="<s>")
    assert rendered.text == "<s>" + "\n\n".join([SYSTEM, U1, A1, U2])
    for tag in ("[INST]", "<<SYS>>", "user:", "User", "Assistant", "</s>"):  # no tags or roles
        assert tag not in rendered.text.removeprefix("<s>")
    msgs = [{"role": "system", "content": ""}, {"role": "user", "content": "  as\nwritten "}]
    assert render(msgs, "raw").text == "  as\nwritten "  # empty messages add no blank line


def test_raw_text_stays_plain_for_llama_cpp_and_is_guarded_for_ollama_raw_mode() -> None:
    msgs = [{"role": "user", "content": "a </s> [INST] <|im_start|> b"}]
    assert render(msgs, "raw").segments[-1].text == "a </s> [INST] <|im_start|> b"
    with pytest.raises(PromptFormatError, match="control tag"):
        render(msgs, "raw", for_ollama=True)
    defused = render(msgs, "raw", tags="defuse", for_ollama=True)
    assert defused.raw is not None and "</s>" not in defused.raw
    assert "<|im_start|>" not in defused.raw and "[INST]" in defused.raw


@pytest.mark.parametrize("msgs,words", [
    ([], "empty"),
    ([{"role": "user", "content": ""}], "empty"),
    ([{"role": "tool", "content": "a"}], "unknown role"),
    ([{"role": "user"}], "content"),
])
def test_bad_raw_conversations_get_a_clear_error(msgs: list, words: str) -> None:
    with pytest.raises(PromptFormatError, match=words):
        render(msgs, "raw")


def test_raw_is_a_named_format() -> None:
    assert "raw" in FORMATS and "blank line" in FORMATS["raw"]
    assert normalise_format("raw") == normalise_format("Plain") == "raw"


# --- one renderer, the same output as llama-cpp-python's Jinja2ChatFormatter ---------------

NON_ASCII = [{"role": "system", "content": "Réponds <b>brièvement</b> & 'poliment'"},
             {"role": "user", "content": "日本語 😀 naïve\nzweite Zeile"}]


@pytest.mark.parametrize("source", [
    "{% for m in messages %}{{ m | tojson }}\n{% endfor %}",
    "{{ messages | tojson(indent=2) }}",
    "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}",
    "{% if tools is none %}no tools{% else %}{{ tools }}{% endif %}",
    "{% if functions is not none %}x{% endif %}{{ tool_choice is none }}",
    "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}",
    "  {% for m in messages %}\n    {{ m.content }}\n  {% endfor %}\n{{ bos_token }}{{ eos_token }}",
])
def test_renderer_output_equals_llama_cpp_pythons_formatter(source: str) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(source, eos_token="</s>", bos_token="<s>")
    expected = formatter(messages=NON_ASCII).prompt
    assert render_chat_template(source, NON_ASCII) == expected


# --- hostile templates: one check for the Models page and for chat -------------------------

LONG_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.parametrize("source", [
    LONG_LOOP,
    "{{ messages.append(1) }}",
    "{% for i in range(200000) %}{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% for i in range(99999) %}{{ 'x' * 99999 }}{% endfor %}",
])
def test_template_check_and_chat_refuse_a_hostile_template_alike(source: str) -> None:
    import psutil

    from core.models.gguf_meta import template_problem
    from core.prompts.template import SAMPLE_CONVERSATION, TemplateRefused

    me = psutil.Process()
    threads, children = threading.active_count(), me.children(recursive=True)
    problem = template_problem(source, timeout_s=0.3)
    with pytest.raises(TemplateRefused) as refused:
        render_chat_template(source, SAMPLE_CONVERSATION, time_limit_s=0.3)
    assert problem == f"it {refused.value.reason}"
    assert refused.value.message == f"the chat template {refused.value.reason}"
    # nothing is left running: the render stopped in the calling thread
    assert threading.active_count() == threads
    assert me.children(recursive=True) == children


def test_a_template_that_only_fails_on_the_sample_is_not_called_unsafe() -> None:
    from core.models.gguf_meta import template_problem

    assert template_problem(LLAMA2_CHAT_TEMPLATE) is None
    assert template_problem("{{ raise_exception('only user turns, please') }}") is None
