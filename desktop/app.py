"""The main window: a left navigation over the pages, a status bar, remembered geometry.

Pages are built when first shown; none of them may import torch, sentence-transformers,
chromadb or llama_cpp at import time, so the window appears before those load. What one page
asks of another (open a model in Chat, a text in Tokens) goes through the window, which builds
the other page first.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QIcon
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from core import __version__
from desktop.context import AppContext
from desktop.status import StatusBar
from desktop.style import STYLE_SHEET

log = logging.getLogger("corral.desktop")

#: title -> (module, class, what the page is for: shown while it cannot load)
PAGES: list[tuple[str, str, str, str]] = [
    ("Models", "desktop.pages.models.page", "ModelsPage", "Every model you have, in one table."),
    ("Chat", "desktop.pages.chat.page", "ChatPage", "Talk with a local model."),
    ("Documents", "desktop.pages.documents.page", "DocumentsPage", "Knowledge bases for grounded chat."),
    ("Tokens", "desktop.pages.tokens.page", "TokensPage", "How tokenizers split your text."),
    ("Embeddings", "desktop.pages.embeddings.page", "EmbeddingsPage", "Similarity and corpus maps."),
    ("Workshop", "desktop.pages.workshop.page", "WorkshopPage", "Quantize and merge models, and measure the cost."),
    ("Lab", "desktop.pages.lab.page", "LabPage", "Word vectors to sentence embeddings, on your text."),
    ("Safety", "desktop.pages.safety.page", "SafetyPage", "Llama Guard checks and the audit log."),
    ("Settings", "desktop.pages.settings.page", "SettingsPage", "Hosts, stores and defaults."),
]


PAGES_TITLES = [title for title, *_ in PAGES]


class PlaceholderPage(QWidget):
    """Shown when a page's module is missing or failed to build: says so, plainly."""

    def __init__(self, title: str, purpose: str, reason: str, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        head = QLabel(f"<h2>{title}</h2><p>{purpose}</p>")
        head.setAlignment(Qt.AlignmentFlag.AlignCenter)
        note = QLabel(reason)
        note.setObjectName("emptyState")
        note.setWordWrap(True)
        note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(head)
        layout.addWidget(note)
        layout.addStretch(2)


class MainWindow(QMainWindow):
    def __init__(self, ctx: AppContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.setWindowTitle(f"Corral {__version__}")
        self.setMinimumSize(900, 600)
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setFixedWidth(150)
        self.stack = QStackedWidget()
        # Pages are built when first shown: the window appears without importing what the
        # other pages need (pyqtgraph, numpy, chromadb ...).
        self._specs = {title: (module, cls, purpose) for title, module, cls, purpose in PAGES}
        self._built: dict[str, QWidget] = {}
        for title in self._specs:
            self.stack.addWidget(QWidget())
            QListWidgetItem(title, self.nav)
        self.nav.currentRowChanged.connect(lambda row: self._show_row(row))
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        rail = QWidget()
        rail.setObjectName("rail")
        rail.setStyleSheet("#rail { background: #263238; } #rail QPushButton { color: #b0bec5; "
                           "border: none; padding: 10px 16px; text-align: left; }")
        column = QVBoxLayout(rail)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.nav, 1)
        self.about_button = QPushButton("About Corral")
        self.about_button.clicked.connect(self.show_about)
        column.addWidget(self.about_button)
        row.addWidget(rail)
        row.addWidget(self.stack, 1)
        self._files_dialog: QWidget | None = None
        self.setCentralWidget(central)
        self.status = StatusBar(ctx, self)
        self.setStatusBar(self.status)
        # Requests for another page go through the window, which builds that page first: a
        # page never shown yet has no connections of its own to hear them.
        ctx.bus.open_chat.connect(self.open_chat)
        ctx.bus.send_to_tokens.connect(self.send_to_tokens)
        self._restore_geometry()
        # Background jobs the first page asks for wait until the window has painted once.
        ctx.jobs.hold()
        last = ctx.settings.ui.last_page
        self.show_page(last if last in self._specs else "Models")
        QTimer.singleShot(0, ctx.jobs.release)
        if ctx.settings_error:
            QTimer.singleShot(0, lambda: ctx.show_error(ctx.settings_error or ""))

    def _build_page(self, title: str, module: str, cls: str, purpose: str) -> QWidget:
        try:
            page_cls = getattr(importlib.import_module(module), cls)
            page: QWidget = page_cls(self.ctx)
            return page
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                log.exception("page %s failed to import", title)
                return PlaceholderPage(title, purpose, f"This page could not load: {exc}.")
            return PlaceholderPage(title, purpose, "This page is not part of this build yet.")
        except Exception as exc:
            log.exception("page %s failed to build", title)
            return PlaceholderPage(title, purpose, f"This page could not load: {exc}. The log has details.")

    def page(self, title: str) -> QWidget:
        """The page called ``title``, built now if it has not been shown yet."""
        page = self._built.get(title)
        if page is None:
            module, cls, purpose = self._specs[title]
            page = self._built[title] = self._build_page(title, module, cls, purpose)
            index = list(self._specs).index(title)
            old = self.stack.widget(index)
            self.stack.insertWidget(index, page)
            if old is not None:
                self.stack.removeWidget(old)
                old.deleteLater()
        return page

    @property
    def pages(self) -> dict[str, QWidget]:
        """The pages built so far (every page once each has been shown)."""
        return dict(self._built)

    def _show_row(self, row: int) -> None:
        if row >= 0:
            self.page(list(self._specs)[row])
            self.stack.setCurrentIndex(row)

    def show_page(self, title: str) -> None:
        self.nav.setCurrentRow(list(self._specs).index(title))

    def open_chat(self, ref: str) -> None:
        """Show the Chat page with model ``ref`` ("Chat with it")."""
        self.show_page("Chat")
        open_model = getattr(self.page("Chat"), "open_model", None)
        if callable(open_model):  # not a placeholder
            open_model(ref)

    def send_to_tokens(self, text: str, ref: str) -> None:
        """Show the Tokens page on ``text``, tokenized for model ``ref`` ("Open in Tokens")."""
        self.show_page("Tokens")
        receive_text = getattr(self.page("Tokens"), "receive_text", None)
        if callable(receive_text):
            receive_text(text, ref)

    def open_files(self, files: list[str]) -> None:
        """Come to the front on Documents with ``files`` ready to index (`corral FILE...`)."""
        from desktop.open_files import offer_files

        if self.isMinimized():
            self.showNormal()
        self.raise_()
        self.activateWindow()
        if files:
            self.show_page("Documents")
            self._files_dialog = offer_files(self.page("Documents"), files, self._files_dialog)

    def show_about(self) -> None:
        from desktop.about import AboutDialog

        dialog = AboutDialog(app_icon(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    @property
    def current_page(self) -> str:
        return list(self._specs)[self.stack.currentIndex()]

    def _restore_geometry(self) -> None:
        raw = self.ctx.settings.ui.geometry
        if raw and self.restoreGeometry(QByteArray.fromBase64(raw.encode("ascii"))):
            return
        self.resize(1200, 780)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt name)
        ui = self.ctx.settings.ui
        ui.geometry = bytes(self.saveGeometry().toBase64().data()).decode("ascii")
        ui.last_page = self.current_page
        self.ctx.save_settings()
        self.ctx.jobs.cancel_all()
        for page in self._built.values():
            shutdown = getattr(page, "shutdown", None)
            if callable(shutdown):
                shutdown()
        self.ctx.jobs.wait_all(10000)
        super().closeEvent(event)


def install_crash_hook(window: MainWindow | None = None) -> None:
    """Uncaught exceptions: log the traceback, show a sentence, keep the app running."""

    def show(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log.error("uncaught exception:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
        from desktop.context import describe_error

        sentence = describe_error(exc)
        app = QApplication.instance()
        if app is None or threading.current_thread() is not threading.main_thread():
            return
        box = QMessageBox(window)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Something went wrong")
        box.setText(sentence)
        box.setInformativeText("Corral keeps running. The full report is in the log.")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    sys.excepthook = show
    threading.excepthook = lambda a: show(a.exc_type, a.exc_value or Exception(), a.exc_traceback)


def create_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        app = QApplication(argv or sys.argv[:1])
    from desktop import gc_guard

    gc_guard.install(app)
    app.setApplicationName("Corral")
    app.setApplicationVersion(__version__)
    app.setStyleSheet(STYLE_SHEET)
    app.setDesktopFileName("io.github.corral.Corral")  # Wayland's app id: the menu entry
    app.setWindowIcon(app_icon())
    return app


def app_icon() -> QIcon:
    """Corral's icon: the hicolor PNGs for small sizes, the SVG for the rest."""
    icons = Path(__file__).resolve().parent.parent / "resources" / "icons"
    icon = QIcon()
    for png in sorted(icons.glob("hicolor/*/apps/io.github.corral.Corral.png")):
        icon.addFile(str(png))
    if (icons / "corral.svg").is_file():
        icon.addFile(str(icons / "corral.svg"))
    return icon


def save_screenshots(window: MainWindow, directory: str | Path) -> list[Path]:
    """Render the window on each page to DIR/<page>.png."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance()
    written = []
    for title in PAGES_TITLES:
        window.show_page(title)
        for _ in range(3):
            if app is not None:
                app.processEvents()
        path = out / f"{title.lower()}.png"
        window.grab().save(str(path))
        written.append(path)
    return written


def run_gui(screenshots: str | None = None, files: list[str] | None = None) -> int:
    app = create_app()
    server = None
    if not screenshots:  # a window already open on this data folder takes the files
        from core.config import data_dir
        from desktop.single_instance import hand_over_or_serve

        server = hand_over_or_serve(data_dir(), files or [], app)
        if server is None:
            return 0
    ctx = AppContext()
    window = MainWindow(ctx)
    install_crash_hook(window)
    if server is not None:
        server.files_received.connect(window.open_files)
    if files:
        QTimer.singleShot(0, lambda: window.open_files(files))
    if screenshots:
        window.resize(1280, 800)
        window.show()
        for path in save_screenshots(window, screenshots):
            print(path)
        window.close()
        return 0
    window.show()
    return int(app.exec())
