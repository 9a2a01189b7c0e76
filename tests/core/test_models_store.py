"""Ollama store on disk, model references, imported GGUFs, and the one list of all models."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from core.cli import run_subcommand
from core.config import Settings, data_dir
from core.errors import ModelFileDamaged, ModelNotFound
from core.models import library
from core.models.catalog import collect, inspect_model
from core.models.engine import EngineClient
from core.models.ollama_store import OllamaStore, StoreName, find_store
from core.models.refs import parse_ref, resolve
from tests.fixtures.ollama import FakeOllama, add_store_model
from tools.tiny_gguf import make_tiny_gguf


def settings_for(store: Path | None = None, host: str = "http://127.0.0.1:9") -> Settings:
    s = Settings()
    s.ollama.host = host
    s.ollama.connect_timeout = 2.0
    if store is not None:
        s.ollama.store_dir = str(store)
    return s


# --- the store -------------------------------------------------------------------------------


def test_store_lists_and_resolves_layers(ollama_store: Path, tiny_gguf: Path) -> None:
    store = OllamaStore(ollama_store)
    [model] = store.models()
    assert model.short_name == "tiny:latest" and not model.problems
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert model.gguf_path() == ollama_store / "blobs" / f"sha256-{digest}"
    assert model.text("template") == "[INST] {{ .Prompt }} [/INST]"
    assert model.text("system") == "You are tiny."
    assert json.loads(model.text("params") or "") == {"stop": ["[INST]"], "temperature": 0}
    assert model.family == "llama" and model.quantization == "F32"


def test_store_names_like_ollama(tmp_path: Path, tiny_gguf: Path) -> None:
    for name in ("llama-guard3:8b", "me/mine:v1", "hf.co/user/repo:Q4_K_M"):
        add_store_model(tmp_path, name, tiny_gguf)
    names = sorted(m.short_name for m in OllamaStore(tmp_path).models())
    assert names == ["hf.co/user/repo:Q4_K_M", "llama-guard3:8b", "me/mine:v1"]
    assert StoreName.parse("llama2").relpath() == Path("registry.ollama.ai/library/llama2/latest")
    for bad in ("../etc/passwd", "a/b/c/d/e", "x:..", "..:tag", ""):
        with pytest.raises(ModelNotFound):
            StoreName.parse(bad)


def test_damaged_store_entries_are_reported_never_followed(tmp_path: Path,
                                                           tiny_gguf: Path) -> None:
    root = tmp_path / "store"
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me")
    add_store_model(root, "good", tiny_gguf)
    cases = {}
    # 1. a digest that walks out of the store
    m = add_store_model(root, "escape", tiny_gguf)
    doc = json.loads(m.read_text())
    doc["layers"][0]["digest"] = "sha256:../../secret.txt"
    m.write_text(json.dumps(doc))
    cases["escape"] = "not a sha256 digest"
    # 2. a missing blob
    m = add_store_model(root, "missing", tiny_gguf)
    doc = json.loads(m.read_text())
    doc["layers"][0]["digest"] = "sha256:" + "ab" * 32
    m.write_text(json.dumps(doc))
    cases["missing"] = "missing from the store"
    # 3. a blob whose size differs (an interrupted copy)
    short = tiny_gguf.read_bytes()[:1000]
    m = add_store_model(root, "short", tiny_gguf)
    doc = json.loads(m.read_text())
    hexd = hashlib.sha256(b"short" + short).hexdigest()
    (root / "blobs" / f"sha256-{hexd}").write_bytes(short)
    doc["layers"][0]["digest"] = f"sha256:{hexd}"
    m.write_text(json.dumps(doc))
    cases["short"] = "but the manifest says"
    # 4. a blob that is a link leaving the store
    m = add_store_model(root, "link", tiny_gguf)
    doc = json.loads(m.read_text())
    hexd = "cd" * 32
    os.symlink(secret, root / "blobs" / f"sha256-{hexd}")
    doc["layers"][0].update(digest=f"sha256:{hexd}", size=secret.stat().st_size)
    m.write_text(json.dumps(doc))
    cases["link"] = "link that leaves the store"
    # 5. a manifest that is not JSON
    bad = root / "manifests/registry.ollama.ai/library/garbage/latest"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    cases["garbage"] = "not valid JSON"

    store = OllamaStore(root)
    models = {m.name.model: m for m in store.models()}
    assert not models["good"].problems
    for name, expected in cases.items():
        problems = " ".join(models[name].problems)
        assert expected in problems, (name, problems)
        with pytest.raises(ModelFileDamaged):
            models[name].gguf_path()
        with pytest.raises(ModelFileDamaged):
            resolve(f"store:{name}", settings_for(root))
    assert "do not read me" not in json.dumps([m.problems for m in models.values()])


def test_non_gguf_model_layer_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00" * 64)
    add_store_model(tmp_path / "store", "newformat", weights)
    [model] = OllamaStore(tmp_path / "store").models()
    with pytest.raises(ModelFileDamaged, match="not a single GGUF"):
        model.gguf_path()


def test_find_store_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          ollama_store: Path) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama_store))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    found = find_store()
    assert found is not None and found.root == ollama_store
    other = tmp_path / "configured"
    other.mkdir()
    found = find_store(str(other))
    assert found is not None and found.root == other
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "nowhere"))
    assert find_store() is None


def test_store_model_runs_in_llama_cpp_with_the_server_stopped(ollama_store: Path) -> None:
    server = FakeOllama().start()
    settings = settings_for(ollama_store, host=server.host)
    server.stop()  # Ollama is down: the blob still runs through llama.cpp
    listing = collect(settings)
    assert not listing.ollama_running
    assert any("Ollama is not running at" in n for n in listing.notes)
    [row] = [m for m in listing.models if m.source == "store"]
    assert row.ref == "store:tiny:latest" and row.context_length == 4096 and not row.problem
    resolved = resolve(row.ref, settings)
    assert resolved.kind == "gguf" and resolved.source == "store"
    with EngineClient(resolved.path, n_ctx=128, n_threads=1) as engine:
        info = engine.load()
        assert info["n_ctx_train"] == 4096
        ids = engine.tokenize("hello world", add_bos=True)
        events = list(engine.generate(ids, max_tokens=5, temperature=0.0, seed=1))
    assert events[-1].done and events[-1].completion_tokens == 5
    assert "".join(e.text for e in events).strip()


# --- references ------------------------------------------------------------------------------


def test_parse_ref_forms(tmp_path: Path) -> None:
    assert parse_ref("ollama:llama2:7b").kind == "ollama"
    assert parse_ref("ollama:llama2:7b").name == "llama2:7b"
    assert parse_ref("store:llama-guard3:8b").name == "llama-guard3:8b"
    r = parse_ref("/models/x.gguf")
    assert r.kind == "gguf" and r.path == Path("/models/x.gguf")
    assert parse_ref("gguf:./x.gguf").path == Path("x.gguf")
    r = parse_ref("my-model")
    assert r.kind == "gguf" and r.path is None and r.name == "my-model"
    with pytest.raises(ModelNotFound):
        parse_ref("  ")
    with pytest.raises(ModelNotFound):
        parse_ref("ollama:")


def test_resolve_each_kind(tiny_gguf: Path, ollama_store: Path, tmp_path: Path) -> None:
    s = settings_for(ollama_store, host="0.0.0.0:11434")
    o = resolve("ollama:llama2", s)
    assert (o.kind, o.name, o.host) == ("ollama", "llama2:latest", "http://127.0.0.1:11434")
    g = resolve(str(tiny_gguf), s)
    assert g.kind == "gguf" and g.path == tiny_gguf.resolve()
    library.import_file(tiny_gguf, "tiny-imported")
    i = resolve("tiny-imported", s)
    assert i.source == "imported" and i.path == tiny_gguf.resolve()
    with pytest.raises(ModelNotFound) as err:
        resolve("nothing", s)
    assert "ollama:nothing" in err.value.sentence()
    with pytest.raises(ModelNotFound, match="no model 'ghost:latest'"):
        resolve("store:ghost", s)
    with pytest.raises(ModelNotFound, match="no such model file"):
        resolve(str(tmp_path / "gone.gguf"), s)


# --- imported GGUFs --------------------------------------------------------------------------


def test_import_links_in_place_with_sha256(tiny_gguf: Path, tmp_path: Path) -> None:
    entry = library.import_file(tiny_gguf)
    assert entry.name == "tiny-random-llama"
    assert entry.sha256 == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    doc = json.loads((data_dir() / "models.json").read_text())
    assert doc["models"][0]["path"] == str(tiny_gguf.resolve())
    assert not list(data_dir().glob("*.gguf"))  # linked, not copied
    again = library.import_file(tiny_gguf)  # same path: refreshed, not duplicated
    assert again.name == entry.name and len(library.load()) == 1
    copy = tmp_path / "copy.gguf"
    shutil.copy(tiny_gguf, copy)
    assert library.import_file(copy).name == "tiny-random-llama-2"
    library.forget("tiny-random-llama-2")
    assert copy.exists() and [m.name for m in library.load()] == ["tiny-random-llama"]


def test_import_folder_collects_failures(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    make_tiny_gguf(folder / "a.gguf", name="alpha", n_embd=32, n_ff=64)
    make_tiny_gguf(folder / "sub" / "b.gguf", name="beta", n_embd=32, n_ff=64)
    (folder / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (folder / "notes.txt").write_text("ignored")
    imported, failures = library.import_paths([folder, tmp_path / "missing.gguf"])
    assert sorted(m.name for m in imported) == ["alpha", "beta"]
    reasons = {Path(f.path).name: f.reason for f in failures}
    assert "incomplete" in reasons["broken.gguf"]
    assert reasons["missing.gguf"] == "no such file or folder"
    assert "broken" not in json.dumps([m.to_dict() for m in library.load()])


# --- the one list ----------------------------------------------------------------------------


def test_one_list_from_all_three_sources(ollama_server: FakeOllama, ollama_store: Path,
                                         tiny_gguf: Path) -> None:
    ollama_server.add_model("llama2:7b", parameter_size="6.7B", quantization="Q4_0")
    ollama_server.loaded.append("llama2:7b")
    library.import_file(tiny_gguf, "tiny-file")
    result = collect(settings_for(ollama_store, host=ollama_server.host))
    assert result.ollama_running and not result.notes
    rows = {m.ref: m for m in result.models}
    assert set(rows) == {"ollama:llama2:7b", "store:tiny:latest", "tiny-file"}
    server_row = rows["ollama:llama2:7b"]
    assert (server_row.source, server_row.parameter_size, server_row.quantization) == (
        "ollama", "6.7B", "Q4_0")
    assert server_row.loaded and server_row.context_length == 4096
    file_row = rows["tiny-file"]
    assert file_row.source == "gguf" and file_row.family == "llama"
    assert file_row.context_length == 4096 and file_row.file_size == tiny_gguf.stat().st_size
    assert rows["store:tiny:latest"].source_label == "Ollama store"


def test_cli_list_and_import_and_rm(ollama_server: FakeOllama, tiny_gguf: Path,
                                    capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    s = settings_for(host=ollama_server.host)
    s.save()
    ollama_server.add_model("llama2:7b")
    assert run_subcommand("models", ["import", str(tiny_gguf), "--name", "tiny"]) == 0
    assert "imported tiny" in capsys.readouterr().out
    assert run_subcommand("models", ["list", "--json"]) == 0
    refs = [m["ref"] for m in json.loads(capsys.readouterr().out)["models"]]
    assert refs == ["ollama:llama2:7b", "tiny"]
    assert run_subcommand("models", ["list"]) == 0
    table = capsys.readouterr().out
    assert "Ollama server" in table and "GGUF file" in table
    assert run_subcommand("models", ["rm", "tiny"]) == 1  # no terminal, no --yes
    assert "--yes" in capsys.readouterr().err
    assert run_subcommand("models", ["rm", "tiny", "--yes"]) == 0
    assert tiny_gguf.exists() and library.load() == []
    assert run_subcommand("models", ["rm", "ollama:llama2:7b", "--yes"]) == 0
    assert not ollama_server.has_model("llama2:7b")
    capsys.readouterr()
    assert run_subcommand("models", ["rm", "store:x", "--yes"]) == 1
    assert "never writes into Ollama's store" in capsys.readouterr().err
    assert run_subcommand("models", ["import", str(tmp_path / "no.gguf")]) == 1


def test_cli_pull_json_lines_and_failures(ollama_server: FakeOllama,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    settings_for(host=ollama_server.host).save()
    ollama_server.add_pullable("tiny:1b")
    assert run_subcommand("models", ["pull", "ollama:tiny:1b", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["status"] == "pulling manifest" and lines[-1]["status"] == "success"
    assert lines[-1]["fraction"] == 1.0
    ollama_server.script_pull(drop_after=2)
    assert run_subcommand("models", ["pull", "other"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("corral: pulling other broke off") and err.count("\n") == 1
    assert not ollama_server.has_model("other")
    ollama_server.stop()
    assert run_subcommand("models", ["pull", "other"]) == 1
    assert "Ollama is not running at" in capsys.readouterr().err


def test_inspect_ollama_and_store_models(ollama_server: FakeOllama, ollama_store: Path) -> None:
    ollama_server.add_model("llama2:7b", system="Be brief.")
    s = settings_for(ollama_store, host=ollama_server.host)
    info = inspect_model("ollama:llama2:7b", s)
    assert info["ollama"]["system"] == "Be brief." and "[INST]" in info["ollama"]["template"]
    assert info["summary"]["context_length"] == 4096
    info = inspect_model("store:tiny", s)
    assert info["summary"]["architecture"] == "llama"
    assert info["ollama"]["system"] == "You are tiny."
    assert info["sha256"] and info["template_problem"] is None
