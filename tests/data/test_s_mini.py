"""A mini build that moves another corpus's files aside says so when it moves them, not only in its last summary."""

import json

import pytest
from test_mini import locale_dir  # noqa: F401 (the fixture: gettext catalogues of a few sentences)

from llm_srt.data import mini
from llm_srt.errors import LLMSRTError

MOVED = ("moved another corpus's files aside: train.jsonl to train.jsonl.stale, summary.json to summary.json.stale "
         "(rename them back, or keep corpora in separate --out folders)")


def test_a_build_stopped_after_moving_files_aside_has_said_where_they_went(locale_dir,  # noqa: F811
                                                                           tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text(json.dumps({"id": "fleurs:1", "corpus": "fleurs"}) + "\n")
    (out / "summary.json").write_text(json.dumps({"written": {"train": 1}}) + "\n")

    def fails(*args, **kwargs):  # the synthesis stops (a voice failing, Ctrl-C): no summary is printed
        raise LLMSRTError("espeak-ng failed")

    monkeypatch.setattr(mini, "_synthesize_until_full", fails)
    with pytest.raises(LLMSRTError, match="espeak-ng failed"):
        mini.build_mini(mini.MiniOptions(out=out, langs=("eng", "deu"), train=2, dev=1, test=1,
                                         locale_dir=locale_dir))
    assert (out / "train.jsonl.stale").is_file() and (out / "summary.json.stale").is_file()
    assert capsys.readouterr().out.splitlines() == [MOVED]


def test_a_whole_build_says_it_when_moving_and_in_its_summary(locale_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text(json.dumps({"id": "fleurs:1", "corpus": "fleurs"}) + "\n")
    (out / "summary.json").write_text(json.dumps({"written": {"train": 1}}) + "\n")
    summary = mini.build_mini(mini.MiniOptions(out=out, langs=("eng", "deu"), train=2, dev=1, test=1,
                                               locale_dir=locale_dir))
    assert MOVED in capsys.readouterr().out and MOVED in summary.lines()
