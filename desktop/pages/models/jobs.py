"""The Models page's worker jobs: list every model, inspect one, pull, delete, import GGUF
files and compute a file's SHA-256. They run in the thread pool; no widgets here."""

from __future__ import annotations

from typing import Any

from desktop.jobs import Job


def list_job(job: Job, settings: Any) -> Any:
    from core.models.catalog import collect

    return collect(settings)


def inspect_job(job: Job, ref: str, settings: Any) -> dict[str, Any]:
    from core.models.catalog import inspect_model

    return inspect_model(ref, settings)


def pull_job(job: Job, client: Any, name: str) -> str:
    for step in client.pull(name):
        job.check()
        job.progress(step.fraction, step.status)
    return name


def delete_job(job: Job, ref: str, settings: Any) -> str:
    from core.models import library
    from core.models.ollama_client import OllamaClient
    from core.models.refs import parse_ref

    r = parse_ref(ref)
    if r.kind == "ollama":
        OllamaClient.from_settings(settings).delete(r.name)
    else:
        library.forget(r.name)
    return ref


def import_job(job: Job, paths: list[str]) -> tuple[list[Any], list[Any]]:
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
