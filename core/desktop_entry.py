"""Add Corral to the desktop's application menu for a pip install, or take it out again.

``corral --install-desktop-entry`` writes the freedesktop entry (its ``Exec`` pointing at the
running ``corral``) and the hicolor icons under ``$XDG_DATA_HOME`` (default
``~/.local/share``); ``--remove-desktop-entry`` deletes exactly those files. Both are
idempotent and refuse system directories: a package manager owns those.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import DesktopEntryError

APP_ID = "io.github.corral.Corral"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
#: where a package manager, not a user, installs: never written to by Corral
SYSTEM_PREFIXES = ("/usr", "/etc", "/opt", "/var", "/lib", "/lib32", "/lib64", "/bin", "/sbin",
                   "/boot", "/srv", "/snap", "/nix", "/proc", "/sys", "/dev")
#: characters that make the desktop-entry spec ask for a quoted Exec argument
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


@dataclass
class EntryReport:
    """What an install or a removal did, path by path."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        return ([f"wrote {p}" for p in self.written] + [f"up to date {p}" for p in self.unchanged]
                + [f"removed {p}" for p in self.removed])


def resources_dir() -> Path:
    """The ``resources`` folder beside the ``core`` package (a checkout, an editable install
    or the bundle, which keeps that layout)."""
    return Path(__file__).resolve().parent.parent / "resources"


def data_home(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME``, else ``~/.local/share``; a system directory is refused."""
    env = os.environ if environ is None else environ
    raw = env.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative value is invalid and is to be ignored.
    path = Path(raw) if raw and Path(raw).is_absolute() else Path.home() / ".local" / "share"
    resolved = path.resolve()
    for candidate in {path, resolved}:
        text = str(candidate)
        if text == "/" or any(text == p or text.startswith(p + "/") for p in SYSTEM_PREFIXES):
            raise DesktopEntryError(
                f"{path} is a system directory; Corral installs its menu entry only for you",
                hint="Unset XDG_DATA_HOME or point it into your home folder; "
                     "system-wide menus come with the .deb package.")
    return path


def corral_executable() -> Path:
    """The absolute path of the ``corral`` program now running (the bundle's binary, the
    script that started us, the one beside this Python, else the one on PATH)."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable).absolute()
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "corral" and argv0.is_file():
        return argv0.absolute()
    beside = Path(sys.executable).parent / "corral"  # the script of this Python's environment
    if beside.is_file():
        return beside.absolute()
    found = shutil.which("corral")
    if found:
        return Path(found).absolute()
    raise DesktopEntryError("cannot find the `corral` program to point the menu entry at",
                            hint="Run this from the installed `corral` command.")


def exec_argument(path: Path) -> str:
    """``path`` as the first word of an Exec key (desktop-entry spec: quote and escape)."""
    text = str(path).replace("%", "%%")
    if any(c in _RESERVED for c in text):
        inner = "".join("\\" + c if c in '"`$\\' else c for c in text)
        text = f'"{inner}"'
    return text.replace("\\", "\\\\")  # the string-value escape comes on top


def entry_text(executable: Path, template: Path | None = None) -> str:
    """The desktop entry for ``executable``: the shipped one with Exec and TryExec set."""
    source = template or resources_dir() / f"{APP_ID}.desktop"
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DesktopEntryError(f"cannot read the desktop entry {source}: {exc.strerror}",
                                hint="This Corral was installed without its resources folder.") from None
    out: list[str] = []
    for line in lines:
        if line.startswith(("Exec=", "TryExec=")):
            continue
        out.append(line)
        if line.startswith("Type="):
            out.append(f"TryExec={str(executable).replace(chr(92), chr(92) * 2)}")
            out.append(f"Exec={exec_argument(executable)} %F")
    return "\n".join(out) + "\n"


def _targets(home: Path) -> dict[Path, Path]:
    """Installed path -> shipped source, for the entry and every icon."""
    res = resources_dir()
    icons = res / "icons"
    pairs = {home / "icons" / "hicolor" / f"{n}x{n}" / "apps" / f"{APP_ID}.png":
             icons / "hicolor" / f"{n}x{n}" / "apps" / f"{APP_ID}.png" for n in ICON_SIZES}
    pairs[home / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg"] = icons / "corral.svg"
    return pairs


def _write_if_changed(path: Path, data: bytes, report: EntryReport) -> None:
    if path.is_file() and path.read_bytes() == data:
        report.unchanged.append(path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    report.written.append(path)


def install(executable: Path | None = None, environ: dict[str, str] | None = None) -> EntryReport:
    """Write the menu entry and the icons for the current user; files already right stay."""
    home = data_home(environ)
    exe = executable or corral_executable()
    text = entry_text(exe)
    sources = _targets(home)
    missing = [s for s in sources.values() if not s.is_file()]
    if missing:
        raise DesktopEntryError(f"the icon {missing[0]} is missing",
                                hint="This Corral was installed without its resources folder.")
    report = EntryReport()
    try:
        for target, source in sources.items():
            _write_if_changed(target, source.read_bytes(), report)
        _write_if_changed(home / "applications" / f"{APP_ID}.desktop", text.encode("utf-8"), report)
    except OSError as exc:
        raise DesktopEntryError(f"cannot write under {home}: {exc.strerror or exc}") from None
    _refresh_caches(home)
    return report


def remove(environ: dict[str, str] | None = None) -> EntryReport:
    """Delete the menu entry and the icons ``install`` wrote; nothing else."""
    home = data_home(environ)
    report = EntryReport()
    try:
        for target in [home / "applications" / f"{APP_ID}.desktop", *_targets(home)]:
            if target.is_file() or target.is_symlink():
                target.unlink()
                report.removed.append(target)
    except OSError as exc:
        raise DesktopEntryError(f"cannot remove files under {home}: {exc.strerror or exc}") from None
    if report.removed:
        _refresh_caches(home)
    return report


def _refresh_caches(home: Path) -> None:
    """Tell the desktop about the change where its cache tools exist; their failure is not ours."""
    commands = [["update-desktop-database", "-q", str(home / "applications")]]
    if (home / "icons" / "hicolor" / "index.theme").is_file():
        # Without index.theme the tool refuses; the desktop then reads the folder directly.
        commands.append(["gtk-update-icon-cache", "-q", "-t", "-f", str(home / "icons" / "hicolor")])
    for cmd in commands:
        if shutil.which(cmd[0]) and Path(cmd[-1]).is_dir():
            try:
                subprocess.run(cmd, check=False, timeout=30, capture_output=True)
            except (OSError, subprocess.SubprocessError):
                pass
