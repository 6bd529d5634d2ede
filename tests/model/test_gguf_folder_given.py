"""`llm-srt convert gguf fw-base x/` with fw-base an existing folder said "fw-base: no such GGUF file"."""

import pytest

from llm_srt.errors import LLMSRTError
from llm_srt.model.gguf_llm import convert_gguf


def _refusal(src, dst) -> str:
    with pytest.raises(LLMSRTError) as e:
        convert_gguf(src, dst)
    assert "\n" not in str(e.value)
    assert not dst.exists()
    return str(e.value)


def test_a_folder_given_as_the_gguf_file_is_called_a_folder(tmp_path):
    """A folder is named as a folder, not as a missing file; one that holds a single .gguf names it, one holding
    several counts them, and one holding none says so."""
    folder = tmp_path / "fw-base"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"not gguf")
    assert _refusal(folder, tmp_path / "out") == f"{folder}: a folder, not a GGUF file; it holds no .gguf file; " \
                                                 "give a GGUF file"
    (folder / "gemma-3-270m-Q8_0.GGUF").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    assert _refusal(folder, tmp_path / "out") == (f"{folder}: a folder, not a GGUF file; give the GGUF file it "
                                                  f"holds: {folder / 'gemma-3-270m-Q8_0.GGUF'}")
    (folder / "gemma-3-270m-Q4_K_M.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    assert _refusal(folder, tmp_path / "out") == f"{folder}: a folder, not a GGUF file; give one of its 2 .gguf files"


def test_a_missing_path_is_still_no_such_gguf_file(tmp_path):
    assert _refusal(tmp_path / "gone.gguf", tmp_path / "out") == f"{tmp_path / 'gone.gguf'}: no such GGUF file"
