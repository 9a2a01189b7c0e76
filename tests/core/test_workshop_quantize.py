"""Quantize through llama.cpp's quantizer in a child process: results land in the library with
provenance, and every fault (damaged file, unreadable tensor type, full disk, cancel) leaves
no partial file behind."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.cli import main
from core.errors import (
    Cancelled,
    CorralError,
    ModelFileDamaged,
    NotEnoughSpace,
    UnreadableTensorType,
)
from core.models import library
from core.models.gguf_meta import read_gguf
from core.workshop.output import check_free_space, library_output, models_dir, read_provenance
from core.workshop.quantize import quantize
from tools.tiny_gguf import make_tiny_gguf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gguf(tmp_path_factory.mktemp("ws") / "tiny.gguf")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


# --- output: temporary file, atomic rename, registration -------------------------------------


def test_free_space_is_checked_before_anything_is_written(corral_home, tmp_path) -> None:
    with pytest.raises(NotEnoughSpace, match="not enough free space in .*need .*have"):
        check_free_space(tmp_path, 1 << 62)
    body_ran = False
    with pytest.raises(NotEnoughSpace), library_output(
            None, default_name="x.gguf", need_bytes=1 << 62, provenance={}):
        body_ran = True
    assert not body_ran and list(models_dir().iterdir()) == []


def test_a_failed_write_leaves_nothing(corral_home) -> None:
    with pytest.raises(RuntimeError), library_output(
            None, default_name="x.gguf", need_bytes=0, provenance={}) as tmp:
        tmp.write_bytes(b"GGUF half")
        raise RuntimeError("boom")
    assert list(models_dir().iterdir()) == []


def test_an_existing_output_is_never_overwritten(corral_home, tiny, tmp_path) -> None:
    out = tmp_path / "taken.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(CorralError, match="exists already"):
        quantize(tiny, "Q8_0", out, n_threads=1)
    assert out.read_bytes() == b"precious"


def test_quantize_registers_the_result_with_provenance(corral_home, tiny) -> None:
    steps: list[float] = []
    result = quantize(tiny, "q8_0", progress=lambda f, _t: steps.append(f), n_threads=1)
    out = Path(result.path)
    assert out.parent == models_dir() and out.name == "tiny.Q8_0.gguf"
    assert read_gguf(out).file_type == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    assert result.type == "Q8_0" and not result.via_f16 and result.note == ""
    assert result.tensor_types["Q8_0"] > 0 and steps[-1] == 1.0
    entry = next(m for m in library.load() if Path(m.path) == out)
    facts = read_provenance(out)
    assert facts is not None
    assert facts["source_sha256"] == library.sha256_file(tiny)
    assert facts["type"] == "Q8_0" and facts["parents"] == [str(tiny)]
    assert facts["output_sha256"] == entry.sha256 and facts["date"].startswith("20")
    assert _leftovers(models_dir()) == []


def test_shapes_that_do_not_fit_fall_back_and_are_named(corral_home, tiny) -> None:
    # The tiny model's rows are 64 wide; Q4_K's blocks hold 256 weights.
    result = quantize(tiny, "Q4_K_M", n_threads=1)
    assert result.fallbacks, "llama.cpp moved tensors to another type; the result must say so"
    fb = result.fallbacks[0]
    assert fb.wanted.startswith("Q") and fb.used != fb.wanted and "64" in fb.reason


def test_a_quantized_source_goes_through_f16_and_says_why(corral_home, tiny, tmp_path) -> None:
    q8 = quantize(tiny, "Q8_0", tmp_path / "q8.gguf", n_threads=1)
    again = quantize(q8.path, "Q4_0", tmp_path / "q4.gguf", n_threads=1)
    assert again.via_f16 and "F16" in again.note and "Q8_0" in again.note
    assert read_gguf(again.path).file_type == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".gguf") == [
        "q4.gguf", "q8.gguf"]  # the F16 copy is gone


# --- faults --------------------------------------------------------------------------------


def test_a_damaged_gguf_is_refused_by_the_cli(corral_home, tiny, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(tiny.read_bytes()[: 200_000])  # truncated download
    assert main(["quantize", str(bad), "--type", "Q8_0"]) == 1
    err = capsys.readouterr().err
    assert "damaged" in err and "bad.gguf" in err
    assert list(models_dir().iterdir()) == []
    with pytest.raises(ModelFileDamaged):
        quantize(bad, "Q8_0")


def test_an_unreadable_tensor_type_is_refused(corral_home, tmp_path, capsys) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 292), dtype=np.uint8),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_K)  # gguf cannot dequantize Q8_K
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnreadableTensorType, match="Q8_K"):
        quantize(path, "Q4_0")
    assert main(["quantize", str(path), "--type", "Q4_0"]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert list(models_dir().iterdir()) == []


def test_an_unknown_type_is_a_usage_error(tiny, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["quantize", str(tiny), "--type", "Q7_Z"])
    assert caught.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_a_full_disk_says_so_and_leaves_no_partial_file(corral_home, tiny, tmp_path) -> None:
    # A file-size limit in a child Python stands in for a full disk.
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        from core.cli import main
        sys.exit(main(["quantize", {str(tiny)!r}, "--type", "Q8_0", "--out", {str(tmp_path)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "disk is full (or a file-size limit was hit)" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.real_model
def test_cancel_mid_write_kills_the_quantizer_and_leaves_nothing(corral_home, smollm2) -> None:
    seen: list[list[str]] = []

    def progress(fraction: float, text: str) -> None:
        if text.startswith("quantizing to Q8_0: tensor 100/"):  # llama.cpp writes now
            seen.append([n for n in _leftovers(models_dir()) if not n.endswith(".f16")])
            raise Cancelled()

    with pytest.raises(Cancelled):
        quantize(smollm2, "Q8_0", progress=progress, n_threads=1)
    assert seen and any(".partial-" in name for name in seen[0])
    assert list(models_dir().iterdir()) == []
    assert not any(Path(m.path).parent == models_dir() for m in library.load())


def test_cli_json_reports_the_result(corral_home, tiny, capsys) -> None:
    assert main(["quantize", str(tiny), "--type", "TQ2_0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["type"] == "TQ2_0" and Path(out["path"]).is_file()
    # 64- and 128-wide rows do not fit TQ2_0's 256-weight blocks: the matrices fell back.
    assert any(f["wanted"] == "TQ2_0" for f in out["fallbacks"])
    assert all(f["used"] != f["wanted"] for f in out["fallbacks"])
    assert "TQ2_0" not in out["tensor_types"]


@pytest.mark.real_model
def test_ctrl_c_in_the_cli_kills_the_quantizer_and_leaves_nothing(corral_home, smollm2) -> None:
    """Ctrl-C reaches `corral quantize` only (the quantizer runs in its own session): it must
    stop the quantizer too, delete the partial file and say so."""
    import os
    import signal
    import time

    import psutil

    code = (f"import sys; from core.cli import main; "
            f"sys.exit(main(['quantize', {str(smollm2)!r}, '--type', 'Q8_0', '--threads', '1']))")
    cli = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
    out = models_dir()
    quantizer: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and cli.poll() is None:
        quantizer = [p for p in psutil.Process(cli.pid).children(recursive=True)
                     if "core.workshop.quantize_child" in " ".join(p.cmdline())]
        if quantizer and [n for n in _leftovers(out) if not n.endswith(".f16")]:
            break  # llama.cpp is writing the output
        time.sleep(0.05)
    assert quantizer, "the quantizer never started"
    cli.send_signal(signal.SIGINT)
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == 130 and "interrupted" in err
    assert not quantizer[0].is_running() or quantizer[0].status() == psutil.STATUS_ZOMBIE
    assert list(out.iterdir()) == []
    assert not any(Path(m.path).parent == out for m in library.load())
