"""errors.open_regular on a folder: the shell pattern it suggests joins the folder and `*` with one separator, as
given with a trailing slash or without (a folder given as `batch2/` was told "a shell pattern: batch2//*")."""

import os

import pytest

from llm_srt.errors import LLMSRTError, open_regular


@pytest.mark.parametrize("given", ["batch2", "batch2/", "batch2//"])
def test_a_folder_is_told_its_files_pattern_with_one_separator(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "batch2").mkdir()
    with pytest.raises(LLMSRTError) as e:
        open_regular(given, given)
    assert str(e.value) == f"{given}: is a directory, not a file; name the files in it (a shell pattern: batch2/*)"


def test_the_root_folder_is_told_slash_star():
    with pytest.raises(LLMSRTError, match=r"\(a shell pattern: /\*\)$"):
        open_regular(os.sep, os.sep)
