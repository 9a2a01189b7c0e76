"""GGUF inspector and the malformed-file suite: inspect and an engine load end in a clear error."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from core.cli import run_subcommand
from core.errors import CorralError, ModelFileDamaged, UnsafeTemplate
from core.models.engine import EngineClient
from core.models.gguf_meta import (
    FILE_TYPES,
    file_type_name,
    format_parameters,
    read_gguf,
    template_problem,
)
from tools.tiny_gguf import make_tiny_gguf

SSTI = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{% endfor %}"


def write_spec_vector(path: Path) -> Path:
    """The FORMATS 6.3 file, written with gguf's GGUFWriter exactly as the spec describes."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test")
    w.add_context_length(4096)
    w.add_block_count(2)
    w.add_file_type(15)
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<s>", "</s>"])
    w.add_chat_template("{{ bos_token }}")
    w.add_tensor("token_embd.weight", np.zeros((3, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def inspect_cli(ref: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_subcommand("models", ["inspect", ref])
    out, err = capsys.readouterr()
    return code, out, err


def engine_load(path: Path) -> CorralError | None:
    engine = EngineClient(path, n_ctx=128, n_threads=1)
    try:
        engine.load()
        return None
    except CorralError as exc:
        return exc
    finally:
        engine.close()


# --- reading good files --------------------------------------------------------------------


def test_spec_vector_reads_as_formats_6_3_says(tmp_path: Path) -> None:
    info = read_gguf(write_spec_vector(tmp_path / "vector.gguf"))
    assert info.file_size == 544
    assert (info.version, info.tensor_count, info.kv_count) == (3, 1, 8)
    assert info.metadata == {
        "general.architecture": "llama", "general.name": "tiny-test",
        "llama.context_length": 4096, "llama.block_count": 2, "general.file_type": 15,
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>"],
        "tokenizer.chat_template": "{{ bos_token }}",
    }
    assert info.data_offset == 480
    assert info.quantization == "Q4_K_M"
    assert info.context_length == 4096 and info.vocab_size == 3


def test_tiny_model_summary(tiny_gguf: Path) -> None:
    s = read_gguf(tiny_gguf).summary()
    assert s["architecture"] == "llama" and s["name"] == "tiny-random-llama"
    assert (s["context_length"], s["embedding_length"], s["block_count"]) == (4096, 64, 2)
    assert (s["head_count"], s["head_count_kv"]) == (4, 4)
    assert s["quantization"] == "F32" and s["tokenizer_model"] == "llama"
    assert s["vocab_size"] == 756 and s["parameter_size"].endswith("K")
    assert s["chat_template"].startswith("{% if messages[0]['role'] == 'system' %}")
    assert template_problem(s["chat_template"]) is None


def test_quantization_names_follow_llama_h() -> None:
    assert file_type_name(15) == "Q4_K_M" and file_type_name(32) == "BF16"
    assert file_type_name(41) == "Q2_0" and file_type_name(1024) == "GUESSED"
    assert file_type_name(99) == "unknown (99)"
    assert len(FILE_TYPES) == 43
    assert format_parameters(7_241_732_096) == "7.2B" and format_parameters(124_439_808) == "124M"


def test_inspect_cli_shows_the_fields(tiny_gguf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = inspect_cli(str(tiny_gguf), capsys)
    assert code == 0, err
    for text in ("architecture:      llama", "context length:    4096",
                 "quantization:      F32", "vocabulary:        756", "chat template:", "[INST]"):
        assert text in out


# --- the malformed-file suite ----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gguf(tmp_path_factory.mktemp("bad") / "good.gguf", n_embd=32, n_ff=64)


def _truncations(size: int, data_offset: int) -> list[int]:
    return [10, 300, data_offset - 40, data_offset + 64, size - 1]


def test_truncated_files_say_how_much_is_present(small_model: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = small_model.read_bytes()
    info = read_gguf(small_model)
    for cut in _truncations(len(data), info.data_offset):
        bad = tmp_path / f"cut-{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileDamaged) as err:
            read_gguf(bad)
        reason = err.value.reason
        assert "incomplete" in reason
        if cut > info.data_offset:
            assert "% present" in reason
        code, _, stderr = inspect_cli(str(bad), capsys)
        assert code == 1 and "incomplete" in stderr and "Traceback" not in stderr
        assert stderr.count("\n") == 1
        loaded = engine_load(bad)
        assert isinstance(loaded, ModelFileDamaged) and "incomplete" in loaded.reason
    present = tmp_path / "half.gguf"
    present.write_bytes(data[: info.data_offset + (len(data) - info.data_offset) // 2])
    with pytest.raises(ModelFileDamaged, match=r"incomplete file, 5\d% present"):
        read_gguf(present)


def test_random_header_byte_flips_never_crash(small_model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = small_model.read_bytes()
    header_end = read_gguf(small_model).data_offset
    rng = random.Random(1234)
    outcomes = {"inspect error": 0, "load error": 0, "loaded": 0}
    for i in range(50):
        pos = rng.randrange(header_end)
        flipped = bytearray(data)
        flipped[pos] ^= rng.randrange(1, 256)
        bad = tmp_path / f"flip-{i}.gguf"
        bad.write_bytes(bytes(flipped))
        try:
            read_gguf(bad)
        except ModelFileDamaged as exc:
            outcomes["inspect error"] += 1
            assert exc.reason
            code, _, stderr = inspect_cli(str(bad), capsys)
            assert code == 1 and stderr.startswith("corral: model file damaged")
        loaded = engine_load(bad)
        if loaded is None:
            outcomes["loaded"] += 1  # a harmless flip (in a name, a score ...)
        else:
            outcomes["load error"] += 1
            assert loaded.sentence() and "Traceback" not in loaded.sentence()
        bad.unlink()
    # The suite must exercise both sides: files refused up front and files llama.cpp sees.
    assert outcomes["inspect error"] >= 10, outcomes
    assert outcomes["load error"] >= outcomes["inspect error"], outcomes


def test_bad_magic_zero_bytes_folder_and_missing(tmp_path: Path, small_model: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "bad-magic.gguf": b"GGML" + small_model.read_bytes()[4:],
        "empty.gguf": b"",
        "text.gguf": b"this is not a model\n" * 20,
    }
    for name, content in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ModelFileDamaged) as err:
            read_gguf(bad)
        assert ("empty" if not content else "not a GGUF file") in err.value.reason
        code, _, stderr = inspect_cli(str(bad), capsys)
        assert code == 1 and stderr.count("\n") == 1
        assert isinstance(engine_load(bad), ModelFileDamaged)
    code, _, stderr = inspect_cli(str(tmp_path / "nothing-here.gguf"), capsys)
    assert code == 1 and "no such model file" in stderr


def test_absurd_counts_are_refused_before_allocating(tmp_path: Path) -> None:
    import struct

    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 2**62)
    (tmp_path / "kv.gguf").write_bytes(header + b"\0" * 64)
    with pytest.raises(ModelFileDamaged, match="metadata entries"):
        read_gguf(tmp_path / "kv.gguf")
    key = b"a.b"
    huge_string = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                   + struct.pack("<IQ", 8, 2**60))
    (tmp_path / "str.gguf").write_bytes(huge_string)
    with pytest.raises(ModelFileDamaged, match="claims"):
        read_gguf(tmp_path / "str.gguf")
    huge_array = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                  + struct.pack("<IIQ", 9, 8, 2**40))
    (tmp_path / "arr.gguf").write_bytes(huge_array)
    with pytest.raises(ModelFileDamaged, match="claims 1099511627776 items"):
        read_gguf(tmp_path / "arr.gguf")
    (tmp_path / "v1.gguf").write_bytes(b"GGUF" + struct.pack("<I", 1) + b"\0" * 40)
    with pytest.raises(ModelFileDamaged, match="version 1"):
        read_gguf(tmp_path / "v1.gguf")


def test_ssti_chat_template_is_refused(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = make_tiny_gguf(tmp_path / "ssti.gguf", chat_template=SSTI, n_embd=32, n_ff=64)
    info = read_gguf(bad)  # the file itself is sound ...
    assert info.chat_template == SSTI
    assert "Python internals" in (template_problem(SSTI) or "")
    code, out, err = inspect_cli(str(bad), capsys)  # ... inspect shows it and says why not
    assert code == 1 and "unsafe" in err and "__class__" in out
    loaded = engine_load(bad)
    assert isinstance(loaded, UnsafeTemplate)
    # Templates that only the sandbox catches at render time
    assert "escape the template sandbox" in (template_problem("{{ messages.append(1) }}") or "")
    assert "too many resources" in (
        template_problem("{% for i in range(200000) %}{% endfor %}") or "")


def test_inspect_json_of_a_copy_with_sha256(tiny_gguf: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib
    import json

    copy = tmp_path / "copy.gguf"
    shutil.copy(tiny_gguf, copy)
    code = run_subcommand("models", ["inspect", str(copy), "--json", "--sha256"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert doc["metadata"]["general.architecture"] == "llama"
    assert doc["array_lengths"]["tokenizer.ggml.tokens"] == 756


def test_a_header_is_read_once_while_the_file_is_unchanged(tmp_path: Path, tiny_gguf: Path) -> None:
    """A job asks for one file's header several times: it is parsed once. A file rewritten in
    place, same size and same mtime (within the clock's tick), is read again, damage and all."""
    import os

    path = tmp_path / "m.gguf"
    shutil.copyfile(tiny_gguf, path)
    first = read_gguf(path)
    assert read_gguf(path) is first
    stat = path.stat()
    data = bytearray(path.read_bytes())
    at = data.index(b"tiny-random-llama")
    data[at:at + 4] = b"TINY"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    renamed = read_gguf(path)
    assert renamed is not first and renamed.metadata["general.name"] == "TINY-random-llama"
    data[:4] = b"GGUX"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ModelFileDamaged, match="not a GGUF file"):
        read_gguf(path)
