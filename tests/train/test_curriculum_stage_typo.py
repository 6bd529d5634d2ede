"""`llm-srt curriculum configs/embedded --stages asr,st` said "no stage config configs/embedded/st.yaml; expected
asr.yaml, st.yaml": the "expected" list repeated the typo."""

from pathlib import Path

import pytest

from llm_srt import cli
from llm_srt.errors import ConfigError
from llm_srt.train import curriculum


def _folder(tmp_path: Path, stems: list[str]) -> Path:
    folder = tmp_path / "cfgs"
    folder.mkdir()
    for stem in stems:
        (folder / f"{stem}.yaml").write_text(f"stage: {stem}\ndata:\n  train: x.jsonl\n")
    (folder / "shipped").mkdir()  # a sub-folder is no stage YAML
    (folder / "notes.txt").write_text("not a stage")
    return folder


def _refusal(items: list[str], stages: list[str] | None) -> str:
    with pytest.raises(ConfigError) as e:
        curriculum.stage_files(items, stages)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_typo_in_stages_names_what_the_folder_holds_and_the_closest(tmp_path, capsys):
    folder = _folder(tmp_path, ["asr", "smt", "srt", "baseline"])
    assert _refusal([str(folder)], ["asr", "st"]) == (
        f"{folder}: no stage config {folder / 'st.yaml'} (did you mean srt or smt?); it holds asr.yaml, "
        "baseline.yaml, smt.yaml, srt.yaml")
    assert _refusal([str(folder)], ["asr", "smt", "st"]) == (  # smt is named already: srt alone is meant
        f"{folder}: no stage config {folder / 'st.yaml'} (did you mean srt?); it holds asr.yaml, baseline.yaml, "
        "smt.yaml, srt.yaml")
    assert cli.main(["curriculum", str(folder), "--stages", "asr,srtt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(did you mean srt?); it holds asr.yaml, baseline.yaml" in err
    assert "expected" not in err


def test_a_stage_with_no_close_match_lists_the_folder_only(tmp_path):
    """No smt.yaml among asr.yaml and srt.yaml: srt (named already, and a stage of its own) is no guess."""
    folder = _folder(tmp_path, ["asr", "srt"])
    assert _refusal([str(folder)], None) == f"{folder}: no stage config {folder / 'smt.yaml'}; it holds asr.yaml, " \
                                           "srt.yaml"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _refusal([str(empty)], ["asr"]) == f"{empty}: no stage config {empty / 'asr.yaml'}; it holds no .yaml file"


def test_a_long_listing_is_cut(tmp_path):
    folder = _folder(tmp_path, ["asr", "smt"] + [f"extra{i:02d}" for i in range(10)])
    message = _refusal([str(folder)], None)
    assert message.endswith("; it holds asr.yaml, extra00.yaml, extra01.yaml, extra02.yaml, extra03.yaml, "
                            "extra04.yaml, extra05.yaml, extra06.yaml, ... (4 more)")
