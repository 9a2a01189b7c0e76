"""What every page shares: settings, the job runner, a signal bus, and error reporting.

The context owns the one ``Settings`` of the window: pages read it from here and pass it into
core calls, so every page runs on the same values (the defaults, after a broken file)."""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QObject, Signal

from core.config import Settings, settings_path
from core.errors import CorralError, SettingsError
from desktop.jobs import JobRunner

log = logging.getLogger("corral.desktop")


class Bus(QObject):
    """Cross-page signals: one page asks, another answers."""

    open_chat = Signal(str)  # a model reference
    send_to_tokens = Signal(str, str)  # a text (e.g. a rendered prompt), its model ref or ''
    settings_changed = Signal()
    models_changed = Signal()
    knowledge_bases_changed = Signal()
    status_message = Signal(str, int)  # text, milliseconds (0: until replaced)
    error = Signal(str)  # a sentence for people


class AppContext(QObject):
    def __init__(self, settings: Settings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bus = Bus(self)
        self.jobs = JobRunner(parent=self, on_error=self.show_error)
        self.settings_error: str | None = None
        if settings is None:
            try:
                settings = Settings.load()
            except SettingsError as exc:
                # Keep working on defaults, say so, and never overwrite the user's file.
                self.settings_error = exc.sentence()
                settings = Settings()
        self.settings = settings
        from core.models.pool import use_settings

        use_settings(settings)  # the engine pool's limit and keep-alive, before any model opens

    def save_settings(self) -> str | None:
        """Write the settings file: None when written, else the sentence that says why not
        (also shown in the status bar)."""
        if self.settings_error:
            # Never overwrite a file the user may want to mend by hand.
            return self.show_error(
                f"Settings not saved: {settings_path()} could not be read, and Corral does "
                "not overwrite it. Fix or remove that file, then restart Corral.")
        try:
            self.settings.save()
        except OSError as exc:
            return self.show_error(f"Settings not saved: {exc.strerror or exc} "
                                   f"({settings_path()}).")
        self.bus.settings_changed.emit()
        return None

    def show_error(self, exc: BaseException | str) -> str:
        """Turn an exception into a sentence, show it in the status bar, return it."""
        sentence = describe_error(exc)
        self.bus.error.emit(sentence)
        return sentence

    def status(self, text: str, ms: int = 4000) -> None:
        self.bus.status_message.emit(text, ms)


def describe_error(exc: BaseException | str | Any) -> str:
    """One sentence for people: typed errors speak for themselves, others are summarised."""
    if isinstance(exc, str):
        return exc
    if isinstance(exc, CorralError):
        return exc.sentence()
    if isinstance(exc, MemoryError):
        return "Out of memory. Close other programs or try a smaller model."
    if isinstance(exc, OSError):
        return f"File or system error: {exc.strerror or exc}."
    log.error("unexpected error shown to the user", exc_info=exc if isinstance(exc, BaseException) else None)
    return f"Unexpected error: {type(exc).__name__}: {exc}. The log has details."
