"""Corral's engine room: model management, prompts, chat, safety, documents, analysis.

Pure Python; nothing here imports Qt or ``desktop`` (an import-linter contract checks it).
Heavy libraries (torch, sentence-transformers, chromadb, llama_cpp) are imported lazily.
"""

__version__ = "0.1.0"
