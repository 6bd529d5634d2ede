"""read_stage_rows and DataSection: what a stage's manifests are refused or warned for, before any audio is hashed
or any model loads, and said again in every stage of one process."""

import re
import warnings
from dataclasses import replace

import pytest

from llm_srt.data.manifest import read_manifest, write_manifest
from llm_srt.errors import ConfigError, LLMSRTError, ManifestError
from llm_srt.prompts import Task
from llm_srt.train import data as training_data
from llm_srt.train.config import load_config
from llm_srt.train.data import DataSection


def _rows(setup):
    return read_manifest(setup["manifest"])


def test_every_stage_says_what_it_skipped_not_only_the_first_in_the_process(tiny_setup, tmp_path):
    """The curriculum runs its stages in one process, and the paper's SMT and SRT stages read the same manifest:
    Python's default filter showed each warning once per process, so the SRT stage's skipped rows (a bad row, a
    translation row without the transcript its task reads) and its held-out rows went unsaid."""
    rows = _rows(tiny_setup)
    blank = next(k for k, r in enumerate(rows) if r.tgt_lang)
    manifest = tmp_path / "bad.jsonl"
    write_manifest(manifest, [replace(r, split="test") if k == 0 else replace(r, transcript="") if k == blank else r
                              for k, r in enumerate(rows)])
    manifest.write_text(manifest.read_text() + "{oops\n")
    said = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own (pytest.warns would show every one)
        for stage in ("smt", "srt"):
            cfg = DataSection(train=str(manifest), dev=str(manifest), skip_bad=True, tasks={stage: 1.0})
            training_data.read_stage_rows(cfg, Task(stage), hashes=False)
            said[stage] = sorted(str(w.message).split(": ", 1)[1].split(" (")[0] for w in caught)
            caught.clear()
    assert said["smt"] == sorted(["1 of its rows are marked split test", *["skipped 1 bad rows"] * 2,  # train, dev
                                  *["skipped 1 translation rows without a transcript, which task smt reads"] * 2])
    assert said["srt"] == [line.replace("task smt", "task srt") for line in said["smt"]]


def test_a_translation_row_without_a_transcript_is_named_with_its_line_before_the_audio_is_hashed(
        tiny_setup, tmp_path, monkeypatch):
    """A dev manifest whose translation rows have no transcript stopped an srt stage with "N of the manifest's have
    none", naming no file, once every audio file had been hashed; a training manifest's named data.train's list
    but no line. Both name the manifest and the first such row's line, before the hashing."""
    rows = _rows(tiny_setup)
    first = next(k for k, r in enumerate(rows) if r.tgt_lang)
    blank = tmp_path / "dev.jsonl"
    write_manifest(blank, [replace(r, transcript="") if r.tgt_lang else r for r in rows])
    monkeypatch.setattr(training_data, "content_hashes", lambda audio: pytest.fail("hashed before the refusal"))
    n = sum(1 for r in rows if r.tgt_lang)
    for key, cfg in (("data.dev", DataSection(train=tiny_setup["manifest"], dev=str(blank))),
                     ("data.train", DataSection(train=[tiny_setup["manifest"], str(blank)]))):
        where = re.escape(f"{key} {blank}:{first + 1}")
        with pytest.raises(LLMSRTError, match=rf"^{where}: task srt reads each translation row's transcript, but {n} "
                                              rf"of this manifest's have none \(first: id {rows[first].id}\); fill "
                                              r"them in, skip them \(data.skip_bad=true\), or train s2tt \(speech -> "
                                              r"translation alone\)$"):
            training_data.read_stage_rows(cfg, Task.SRT)
    # s2tt reads no transcript; an asr stage's dev rows are the transcripts'
    monkeypatch.undo()
    training_data.read_stage_rows(DataSection(train=tiny_setup["manifest"], dev=str(blank), tasks={"s2tt": 1.0}),
                                  Task.S2TT, hashes=False)


def test_an_empty_entry_in_the_train_list_is_refused_when_the_config_is_read(tiny_setup):
    """data.train=[$CV, $FLEURS] with one variable unset passed pre-flight and stopped after the model had loaded
    (".: is a directory"); refused as an empty data.dev is."""
    for empty in ("''", '"  "'):
        with pytest.raises(ConfigError, match=r"data.train: entry 2 of 2 is empty \(an unset shell variable\?\); "
                                              r"give the training manifest there, or drop the entry$"):
            load_config(None, [f"data.train=[{tiny_setup['manifest']}, {empty}]"])
    assert load_config(None, [f"data.train=[{tiny_setup['manifest']}]"]).data.manifests == [tiny_setup["manifest"]]
    assert DataSection().manifests == [""]  # unset: data.train's own error, once it is needed


def test_a_text_only_stage_bounds_its_rows_text_whatever_their_durations_say(tiny_setup, tmp_path):
    """An mt stage reads no audio, so its rows' durations may say nothing: their texts are bounded as 30 s of speech
    is (1,800 characters); a speech stage by each row's own duration."""
    rows = _rows(tiny_setup)
    k = next(k for k, r in enumerate(rows) if r.tgt_lang)
    manifest = tmp_path / "long.jsonl"
    for text, refused in (("Wort " * 300, (Task.SRT,)), ("Wort " * 400, (Task.SRT, Task.MT))):
        write_manifest(manifest, [replace(r, translation=text) if i == k else r for i, r in enumerate(rows)])
        for task in (Task.SRT, Task.MT):
            cfg = DataSection(train=str(manifest), tasks={task.value: 1.0})
            if task in refused:
                with pytest.raises(ManifestError, match=rf"long.jsonl:{k + 1}: translation has {len(text):,} "
                                                        "characters, more than "):
                    training_data.read_stage_rows(cfg, task, hashes=False)
            else:
                assert len(training_data.read_stage_rows(cfg, task, hashes=False).train[0]) == len(rows)
