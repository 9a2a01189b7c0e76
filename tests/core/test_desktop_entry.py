"""The app's identity files and `corral --install-desktop-entry` / `--remove-desktop-entry`:
what lands in the user's XDG data folder, twice over, and never in a system directory.

The shipped and the written entries are checked by desktop-file-validate, the metainfo by
`appstreamcli validate --no-net`, when Debian's tools are installed (desktop-file-utils,
appstream); without them those two tests skip and say which tool is missing.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from core import desktop_entry
from core.cli import main
from core.desktop_entry import APP_ID, ICON_SIZES
from core.errors import DesktopEntryError

RES = desktop_entry.resources_dir()
EXE = Path("/opt/my tools/venv/bin/corral")  # a space: the Exec key must quote it


def _installed_files(home: Path) -> set[Path]:
    return {p for p in home.rglob("*") if p.is_file()}


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_icons_exist_at_every_size() -> None:
    assert (RES / "icons" / "corral.svg").read_text().lstrip().startswith("<?xml")
    for n in ICON_SIZES:
        assert _png_size(RES / "icons" / "hicolor" / f"{n}x{n}" / "apps" / f"{APP_ID}.png") == (n, n)


def test_install_writes_entry_and_icons_then_is_idempotent(tmp_path: Path) -> None:
    home = tmp_path / "data home"
    env = {"XDG_DATA_HOME": str(home)}
    first = desktop_entry.install(EXE, env)
    entry = home / "applications" / f"{APP_ID}.desktop"
    assert entry in first.written and not first.unchanged
    text = entry.read_text()
    assert 'Exec="/opt/my tools/venv/bin/corral" %F' in text
    assert f"TryExec={EXE}" in text and f"Icon={APP_ID}" in text
    for n in ICON_SIZES:
        assert (home / "icons" / "hicolor" / f"{n}x{n}" / "apps" / f"{APP_ID}.png").is_file()
    assert (home / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg").is_file()
    files = _installed_files(home)
    snapshot = {p: p.read_bytes() for p in files}

    second = desktop_entry.install(EXE, env)
    assert not second.written and set(second.unchanged) == set(first.written)
    assert {p: p.read_bytes() for p in _installed_files(home)} == snapshot


def test_remove_takes_out_only_what_install_wrote(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path)}
    other = tmp_path / "applications" / "someone-else.desktop"
    other.parent.mkdir(parents=True)
    other.write_text("[Desktop Entry]\n")
    written = desktop_entry.install(EXE, env).written
    removed = desktop_entry.remove(env).removed
    assert set(removed) == set(written)
    assert not list(tmp_path.rglob(f"{APP_ID}*"))
    assert other.read_text() == "[Desktop Entry]\n"
    assert desktop_entry.remove(env).removed == []  # again: nothing to do, no error


@pytest.mark.parametrize("system", ["/usr/share", "/usr/local/share", "/", "/opt/corral"])
def test_system_directories_are_refused(system: str) -> None:
    before = Path(system, "applications", f"{APP_ID}.desktop").exists()
    with pytest.raises(DesktopEntryError) as err:
        desktop_entry.install(EXE, {"XDG_DATA_HOME": system})
    assert "system directory" in str(err.value) and err.value.hint
    with pytest.raises(DesktopEntryError):
        desktop_entry.remove({"XDG_DATA_HOME": system})
    assert Path(system, "applications", f"{APP_ID}.desktop").exists() == before


def test_a_relative_xdg_data_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert desktop_entry.data_home({"XDG_DATA_HOME": "relative/share"}) == tmp_path / ".local" / "share"
    assert desktop_entry.data_home({}) == tmp_path / ".local" / "share"


def test_cli_flags_install_and_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert main(["--install-desktop-entry"]) == 0
    assert "application menu" in capsys.readouterr().out
    entry = tmp_path / "applications" / f"{APP_ID}.desktop"
    exec_line = next(line for line in entry.read_text().splitlines() if line.startswith("Exec="))
    assert exec_line.split("=", 1)[1].strip('"').split('" ')[0].startswith("/")  # absolute
    assert main(["--remove-desktop-entry"]) == 0
    assert not entry.exists()
    monkeypatch.setenv("XDG_DATA_HOME", "/usr/share")
    assert main(["--install-desktop-entry"]) == 1
    assert "system directory" in capsys.readouterr().err


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: desktop-file-utils / appstream)")
    return path


def test_shipped_and_written_entries_validate(tmp_path: Path) -> None:
    validate = _tool("desktop-file-validate")
    desktop_entry.install(EXE, {"XDG_DATA_HOME": str(tmp_path)})
    for entry in (RES / f"{APP_ID}.desktop", tmp_path / "applications" / f"{APP_ID}.desktop"):
        done = subprocess.run([validate, str(entry)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "error" not in done.stdout, done.stdout + done.stderr


def test_metainfo_validates_and_names_the_repository_screenshots() -> None:
    metainfo = RES / f"{APP_ID}.metainfo.xml"
    urls = re.findall(r"<image>(.*?)</image>", metainfo.read_text())
    assert urls
    for url in urls:
        assert url.startswith("https://")
        assert (RES / "screenshots" / url.rsplit("/", 1)[1]).is_file(), url
    assert '<release version="0.1.0" date="2026-12-04">' in metainfo.read_text()
    appstreamcli = _tool("appstreamcli")
    done = subprocess.run([appstreamcli, "validate", "--no-net", str(metainfo)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_a_wheel_carries_what_the_menu_entry_needs(tmp_path: Path) -> None:
    """`pip install corral` (a wheel, not a checkout) can still add itself to the menu."""
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    names = zipfile.ZipFile(next(tmp_path.glob("corral-*.whl"))).namelist()
    assert "resources/io.github.corral.Corral.desktop" in names
    assert "resources/icons/corral.svg" in names
    assert "resources/icons/hicolor/16x16/apps/io.github.corral.Corral.png" in names
    assert not any("screenshots" in n for n in names)  # the README's pictures stay out
