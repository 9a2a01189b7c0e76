"""PyInstaller run-time hook: point core at the fast embedder export the bundle ships.

The bundle has no torch, so it cannot export MiniLM for OpenVINO itself; packaging/build made
the export once and put it in <bundle>/_internal/corral_embedders (see core.rag.export).
"""

import os
import sys

os.environ.setdefault(
    "CORRAL_BUNDLED_EMBEDDERS", os.path.join(getattr(sys, "_MEIPASS", ""), "corral_embedders")
)
