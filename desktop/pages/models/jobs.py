"""The Models page's worker jobs: list every model, inspect one, pull, delete, import GGUF
files and compute a file's SHA-256. They run in the thread pool; no widgets here."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

from desktop.jobs import Job

if TYPE_CHECKING:  # imported for real inside the jobs, so the window opens before they load
    from core.config import Settings
    from core.models.catalog import ModelList
    from core.models.library import ImportedModel, ImportFailure
    from core.models.ollama_client import OllamaClient
    from core.models.pool import LoadedModel, Role


def list_job(job: Job, settings: Settings) -> ModelList:
    from core.models.catalog import collect

    return collect(settings)


def inspect_job(job: Job, ref: str, settings: Settings) -> dict[str, Any]:
    from core.models.catalog import inspect_model

    return inspect_model(ref, settings)


def pull_job(job: Job, client: OllamaClient, name: str) -> str:
    """Pull ``name``; the page's cancel interrupts the stream through ``client.cancel``."""
    for step in client.pull(name):
        job.check()
        job.progress(step.fraction, step.status)
    return name


def delete_job(job: Job, ref: str, settings: Settings) -> str:
    from core.models import library
    from core.models.ollama_client import OllamaClient
    from core.models.refs import parse_ref

    r = parse_ref(ref)
    if r.kind == "ollama":
        OllamaClient.from_settings(settings).delete(r.name)
    else:
        library.forget(r.name)
    return ref


def import_job(job: Job, paths: list[str]) -> tuple[list[ImportedModel], list[ImportFailure]]:
    from core.models import library

    def progress(fraction: float, text: str) -> None:
        job.check()
        job.progress(fraction, text)

    return library.import_paths(paths, None, progress)


def sha256_job(job: Job, path: str) -> str:
    from core.models.gguf_meta import sha256_file

    def progress(done: int, total: int) -> None:
        job.check()
        job.progress(done / total if total else 1.0, "computing SHA-256")

    return sha256_file(path, progress)


def loaded_job(job: Job) -> list[LoadedModel]:
    """The engines whose child process is running now. None when no engine was ever asked for:
    the pool is then not even imported, and is not imported just to look (a module another
    thread is importing has no ``engine_pool`` yet, and has loaded nothing either)."""
    engine_pool = getattr(sys.modules.get("core.models.pool"), "engine_pool", None)
    return list(engine_pool().loaded()) if engine_pool is not None else []


def unload_job(job: Job, model: LoadedModel) -> LoadedModel:
    """Stop ``model``'s engine child; the pool refuses (EngineBusy) while it is generating."""
    from core.models.pool import engine_pool

    engine_pool().unload(model.path, role=cast("Role", model.role))
    return model
