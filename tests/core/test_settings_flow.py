"""Settings flow one way: the CLI (or the window) reads the settings file once and passes the
settings down; core never reads the file itself. So after a broken settings file, every page
runs on the same settings the window holds (the defaults, with one message), instead of some
pages failing on the file while the window runs on defaults."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.cli import EXIT_ERROR, run_subcommand
from core.config import Settings, settings_path
from core.errors import SettingsError

CORE = Path(__file__).resolve().parents[2] / "core"
#: the only places that may read the settings file: its definition, and the CLI's one reader
READERS = {CORE / "config.py", CORE / "cli" / "_common.py"}


@pytest.fixture
def broken_settings(monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file that cannot be read, and Settings.load made to fail loudly if any core
    code below the CLI still reads it."""
    path = settings_path()
    path.write_text("this is [ not toml", encoding="utf-8")
    with pytest.raises(SettingsError):
        Settings.load()

    def refuse(cls: type[Settings], path: Path | None = None) -> Settings:
        raise SettingsError("core read the settings file itself")

    monkeypatch.setattr(Settings, "load", classmethod(refuse))
    return path


def _reads_settings_file(tree: ast.AST) -> list[int]:
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "Settings"]


def test_no_core_module_reads_the_settings_file_below_the_cli() -> None:
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        if path in READERS:
            continue
        lines = _reads_settings_file(ast.parse(path.read_text(encoding="utf-8")))
        offenders += [f"{path.relative_to(CORE.parent)}:{n}" for n in lines]
    assert offenders == []


def test_core_entry_points_run_on_the_settings_they_are_given(broken_settings, tiny_gguf) -> None:
    from core.analysis.corpus import knowledge_base_names, load_corpus
    from core.analysis.token_sources import local_model_refs, open_tokenizer
    from core.chat.llama_backend import LlamaCppBackend
    from core.chat.open import open_backend
    from core.chat.retrieval import open_retrieval
    from core.models.catalog import collect, inspect_model
    from core.models.refs import resolve
    from core.rag.embedder import OllamaEmbedder, make_embedder
    from core.rag.knowledge_base import create_kb, list_kbs, open_kb, remove_kb
    from core.rag.store import close_stores
    from core.safety.guard import GuardService

    settings = Settings()  # what the window runs on after the broken file
    settings.ollama.host = "http://127.0.0.1:9"  # nobody listens there: Ollama is "not running"
    settings.ollama.connect_timeout = 1.0

    listing = collect(settings, server_details=False)
    assert not listing.ollama_running and listing.notes  # a note, not an error
    assert inspect_model(str(tiny_gguf), settings)["path"] == str(tiny_gguf.resolve())
    assert resolve(str(tiny_gguf), settings).path == tiny_gguf.resolve()
    assert resolve("ollama:llama2", settings).host == "http://127.0.0.1:9"
    assert isinstance(open_backend(str(tiny_gguf), settings), LlamaCppBackend)
    assert local_model_refs(settings) == []
    assert open_tokenizer("wordpiece", settings).tokenize("hello world").spans

    guard = GuardService("ollama:llama-guard3:8b", settings=settings, audit=False)
    assert "llama-guard3" in guard.backend.description

    emb = make_embedder("ollama:nomic-embed-text", ollama=settings.ollama)
    assert isinstance(emb, OllamaEmbedder) and emb.host == "http://127.0.0.1:9"

    try:
        kb = create_kb("Notes", settings=settings)
        assert kb.ollama is settings.ollama
        kb.close()
        assert [i.name for i in list_kbs(settings=settings)] == ["Notes"]
        assert knowledge_base_names(settings) == ["Notes"]
        open_kb("Notes", settings=settings).close()
        assert len(load_corpus("Notes", settings=settings)) == 0
        open_retrieval("Notes", settings).close()
        remove_kb("Notes", settings=settings)
        assert list_kbs(settings=settings) == []
    finally:
        close_stores()


def test_the_cli_reads_the_settings_once_and_says_when_they_are_broken(
        corral_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real_load = Settings.load
    reads: list[Path | None] = []

    def counting(cls: type[Settings], path: Path | None = None) -> Settings:
        reads.append(path)
        return real_load(path)

    monkeypatch.setattr(Settings, "load", classmethod(counting))
    from core.rag.store import close_stores

    try:
        assert run_subcommand("kb", ["list"]) == 0
    finally:
        close_stores()
    assert len(reads) == 1

    settings_path().write_text("this is [ not toml", encoding="utf-8")
    capsys.readouterr()
    assert run_subcommand("kb", ["list"]) == EXIT_ERROR
    assert "cannot read settings" in capsys.readouterr().err
