"""`corral FILE...` opens the window with those files; subcommand names stay subcommands."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.cli import main


class FakeWindow:
    def __init__(self) -> None:
        self.calls: list[tuple[str | None, list[str]]] = []

    def __call__(self, screenshots: str | None, files: list[str]) -> int:
        self.calls.append((screenshots, files))
        return 0


def test_files_open_the_window_with_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notes.md").write_text("# notes")
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    gui = FakeWindow()
    assert main(["notes.md", "folder"], gui=gui) == 0
    assert gui.calls == [(None, [str(tmp_path / "notes.md"), str(tmp_path / "folder")])]


def test_no_arguments_open_the_window_without_files() -> None:
    gui = FakeWindow()
    assert main([], gui=gui) == 0
    assert gui.calls == [(None, [])]
    assert main(["--screenshots", "shots"], gui=gui) == 0
    assert gui.calls[-1] == ("shots", [])


def test_a_subcommand_name_is_a_subcommand_even_beside_a_file_of_that_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "prompt").write_text('[{"role": "user", "content": "hi"}]')
    monkeypatch.chdir(tmp_path)
    gui = FakeWindow()
    assert main(["prompt", "prompt", "--format", "llama2"], gui=gui) == 0
    assert gui.calls == [] and "[INST]" in capsys.readouterr().out
    assert main(["./prompt"], gui=gui) == 0  # with a path, it is the file
    assert gui.calls == [(None, [str(tmp_path / "prompt")])]


def test_a_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    gui = FakeWindow()
    with pytest.raises(SystemExit) as done:
        main(["/no/such/notes.md"], gui=gui)
    assert done.value.code == 2 and gui.calls == []
    assert "neither a subcommand nor an existing file" in capsys.readouterr().err
