"""The foundation: the `corral` command's help, settings, logging (its subprocess tests are in
tests/integration/test_launcher.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.cli import SUBCOMMANDS, main
from core.config import Settings, atomic_write_text, data_dir, settings_path
from core.errors import SettingsError
from core.models.ollama_host import resolve_host


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("corral 0.")


def test_settings_roundtrip_and_atomic_save(corral_home: Path) -> None:
    s = Settings()
    s.ollama.host = "example.org:1234"
    s.safety.policy = {"S1": "block", "S10": "warn"}
    path = s.save()
    assert path == settings_path() and path.parent == corral_home
    loaded = Settings.load()
    assert loaded.ollama.host == "example.org:1234"
    assert loaded.safety.policy == {"S1": "block", "S10": "warn"}
    assert "schema_version = 1" in path.read_text()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".settings.toml.")]


def test_broken_or_future_settings_give_a_clear_error(corral_home: Path) -> None:
    settings_path().write_text("this is [ not toml")
    with pytest.raises(SettingsError, match="cannot read settings"):
        Settings.load()
    settings_path().write_text("schema_version = 99\n")
    with pytest.raises(SettingsError, match="newer"):
        Settings.load()
    settings_path().write_text("[engine]\nn_ctx = 'big'\n")
    with pytest.raises(SettingsError, match="engine.n_ctx"):
        Settings.load()


def test_unknown_keys_are_ignored_and_missing_ones_default(corral_home: Path) -> None:
    settings_path().write_text("schema_version = 1\nfuture_thing = 3\n[chat]\ntemperature = 1\n")
    s = Settings.load()
    assert s.chat.temperature == 1.0 and s.chat.max_tokens == 512


def test_corral_home_relocates_all_data(corral_home: Path) -> None:
    assert data_dir() == corral_home


def test_atomic_write_keeps_old_content_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("", "http://127.0.0.1:11434"),
        ("1.2.3.4", "http://1.2.3.4:11434"),
        (":56789", "http://127.0.0.1:56789"),
        ("http://1.2.3.4", "http://1.2.3.4:80"),
        ("https://1.2.3.4", "https://1.2.3.4:443"),
        ("example.com:56789/path/", "http://example.com:56789/path"),
        ("[0001:002:003:0004::1]", "http://[0001:002:003:0004::1]:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:9999", "http://127.0.0.1:9999"),
        ('"localhost:1"', "http://localhost:1"),
    ],
)
def test_ollama_host_rules(raw: str, expected: str) -> None:
    assert resolve_host(raw) == expected


def test_ollama_host_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:7777")
    assert resolve_host("") == "http://127.0.0.1:7777"
    assert resolve_host("10.1.1.1") == "http://10.1.1.1:11434"  # settings win


def test_logging_writes_under_data_dir(corral_home: Path) -> None:
    from core.logs import log_dir

    assert log_dir() == corral_home / "logs"
