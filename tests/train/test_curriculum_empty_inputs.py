"""Curriculum inputs an unset shell variable leaves empty are refused, not read as "not given"."""

import pytest

from llm_srt import cli

from .test_curriculum import _stage_folder


@pytest.mark.parametrize("given", ["", "  "])
def test_an_empty_stages_option_is_refused_not_read_as_every_stage(tmp_path, capsys, given):
    """`llm-srt curriculum cfg --stages "$STAGES"` with STAGES unset trained asr, smt and srt and exited 0."""
    folder = _stage_folder(tmp_path)
    assert cli.main(["curriculum", str(folder), "--stages", given, "--out-root", str(tmp_path / "R")]) == 2
    err = capsys.readouterr().err
    assert err == ("llm-srt curriculum: error: --stages is empty (an unset shell variable?); name the stages, e.g. "
                   "--stages smt,srt, or leave the option out to run them all\n")
    assert not (tmp_path / "R").exists()


def test_an_empty_stage_override_names_its_stage(tmp_path, capsys):
    """`srt:model.lora=` was refused as "override 'model.lora=': ...", the stage the user wrote left out."""
    folder = _stage_folder(tmp_path)
    assert cli.main(["curriculum", str(folder), "srt:model.lora=", "--out-root", str(tmp_path / "R")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"llm-srt curriculum: error: stage srt ({folder / 'srt.yaml'}): override 'model.lora=': "
                          "model.lora is empty"), err
    assert err.count("\n") == 1
    assert not (tmp_path / "R").exists()
