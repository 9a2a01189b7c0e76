"""Render the README's screenshots: each main page with real content, offscreen.

A throw-away CORRAL_HOME is filled the way a user would fill it (through `corral`
subcommands: the real SmolLM2-135M-Instruct GGUF imported, the sample corpus indexed, a
two-turn chat with it stored), then the window is opened and each page is driven a little
and grabbed.

Run: QT_QPA_PLATFORM=offscreen python tools/readme_screenshots.py [OUT_DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the checkout's packages come first
SAMPLES = ROOT / "resources" / "samples"
MODEL = "smollm2"
#: Questions the 135M model answers sensibly; greedy decoding makes the answers repeatable.
QUESTIONS = ("Where do llamas live?", "How big do they get?")
GREEDY = ("--temperature", "0", "--seed", "7", "--max-tokens", "120")
#: Lands in the llamas-and-alpacas cluster of the corpus map.
MAP_QUERY = "Why should llamas never be kept alone?"


def corral(*args: str) -> str:
    """Run a `corral` subcommand; its standard output when it asks for --json."""
    capture = "--json" in args
    done = subprocess.run([sys.executable, "-m", "desktop.launcher", *args], check=True,
                          cwd=ROOT, text=True, stdout=subprocess.PIPE if capture else None)
    return done.stdout or ""


def prepare_home() -> None:
    from tools.real_models import smollm2_path

    corral("models", "import", str(smollm2_path()), "--name", MODEL)
    corral("kb", "create", "samples")
    corral("index", str(SAMPLES), "--kb", "samples")
    first = json.loads(corral("chat", MODEL, *GREEDY, "--json", QUESTIONS[0]))
    corral("chat", MODEL, *GREEDY, "--conversation", str(first["conversation_id"]), QUESTIONS[1])


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "resources" / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="corral-demo-"))
    os.environ["CORRAL_HOME"] = str(home)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("CORRAL_ENGINE_THREADS", "1")
    prepare_home()

    from PySide6.QtCore import QEventLoop, QTimer

    from desktop.app import MainWindow, create_app
    from desktop.context import AppContext

    create_app()
    window = MainWindow(AppContext())
    window.resize(1280, 800)
    window.show()

    def settle(ms: int = 400) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def wait_idle(limit_s: float = 120.0) -> None:
        waited = 0.0
        while window.ctx.jobs.running and waited < limit_s:
            settle(200)
            waited += 0.2
        settle(300)

    def shoot(title: str) -> None:
        window.show_page(title)
        settle()
        window.grab().save(str(out / f"{title.lower()}.png"))
        print(out / f"{title.lower()}.png")

    pages = {title: window.page(title) for title in ("Models", "Chat", "Documents", "Tokens", "Embeddings")}
    wait_idle()
    from core.models.pool import engine_pool
    from tools.real_models import smollm2_path

    engine_pool().engine(smollm2_path(), n_ctx=4096).load()  # as opening it in Chat does
    models = pages["Models"]
    models.refresh()  # the table's "Loaded" column and the panel below it
    models.loaded.refresh()
    wait_idle()
    models.select_ref(MODEL)
    wait_idle()
    shoot("Models")

    chat = pages["Chat"]
    chat.conversations.list.setCurrentRow(0)
    wait_idle()
    shoot("Chat")

    docs = pages["Documents"]
    docs.kb_list.setCurrentRow(0)
    wait_idle()
    shoot("Documents")

    tokens = pages["Tokens"]
    tokens.model_ref.setCurrentText(MODEL)
    tokens.text.setPlainText("Hello, wörld! Llamas 🦙 tokenize [INST] differently.")
    tokens.tokenize()
    wait_idle()
    shoot("Tokens")

    emb = pages["Embeddings"]
    emb.set_sentences([
        "A llama is a South American camelid.",
        "Alpacas are kept for their soft fibre.",
        "Ollama serves local models over HTTP.",
        "llama.cpp runs GGUF files on the CPU.",
        "Llama Guard classifies conversations as safe or unsafe.",
        "The weather is sunny today.",
    ])
    emb.compute_matrix()
    wait_idle()
    shoot("Embeddings")
    emb.tabs.setCurrentIndex(1)
    emb.refresh_knowledge_bases()
    wait_idle()
    emb.compute_map()
    wait_idle()
    emb.query.setText(MAP_QUERY)
    emb.find_neighbours()
    wait_idle()
    window.show_page("Embeddings")
    settle()
    window.grab().save(str(out / "corpus-map.png"))
    print(out / "corpus-map.png")

    shoot("Safety")
    shoot("Settings")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
