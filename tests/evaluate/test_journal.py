"""`llm-srt evaluate` goes on from the rows a killed run decoded (evaluate/journal.py)."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

import tiny
from llm_srt import cli, device
from llm_srt.audio import write_wav
from llm_srt.data.manifest import Row, read_manifest, write_manifest
from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import journal, run
from llm_srt.model import systems
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.protocol import CANNOT_RUN, Output
from llm_srt.prompts import Task

CPU = device.resolve("cpu", "float32")
OPTS = DecodingOptions(max_new_tokens=8)
N_CLIPS = 4
N_ROWS = 3 * N_CLIPS  # each clip: eng->deu, deu->eng, fra ASR (a language without SRT rows: decoded under srt)
SRC = Path(run.__file__).resolve().parents[2]  # the llm_srt package's parent: the subprocess imports this copy


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("journal-data")
    rows = []
    for i in range(N_CLIPS):
        path = root / f"c{i}.wav"
        seconds = 0.6 + 0.2 * i
        write_wav(path, tiny.tone(seconds, 300 + 150 * i, seed=i))
        for tgt, src in (("deu", "eng"), ("eng", "deu"), ("", "fra")):
            rows.append(Row(id=f"{i}-{src}{tgt}", audio=str(path), duration=seconds, src_lang=src,
                            transcript="a cat\u2028sat" if i == 0 else "a cat sat", tgt_lang=tgt,
                            translation="die Katze" if tgt else "",
                            split="test", corpus="t", sentence_id=str(i)))
    write_manifest(root / "test.jsonl", rows)
    return root / "test.jsonl"


class Counting:
    """A system whose outputs follow from each item alone (its length and languages); it records every item it
    runs, fails the items of `fail_size` samples, and stops the process (KeyboardInterrupt, as a Ctrl-C or a kill
    would) when it is handed batch number `stop_at` (1-based)."""

    def __init__(self, placement, state):
        self.name, self.placement, self.state = "counting", placement, state

    def run_batch(self, items, options):
        self.state["batches"] += 1
        if self.state["batches"] == self.state["stop_at"]:
            raise KeyboardInterrupt
        if any(it.audio is not None and it.audio.size == self.state["fail_size"] for it in items):
            raise RuntimeError("this clip fails")
        self.state["items"] += [(it.audio.size, it.src, it.tgt) for it in items]
        return [Output(error=f"{CANNOT_RUN}no {it.tgt} here") if it.tgt == self.state.get("decline", "-") else
                Output(f"heard {it.audio.size} {it.src}", "" if it.task is Task.ASR else f"{it.tgt} {it.audio.size}")
                for it in items]

    def detect_language(self, audio):
        return "eng"


@pytest.fixture
def counting(monkeypatch):
    """The system name 'counting'; groups of one batch of one row, so the journal grows row by row. (Clip 0's
    transcript holds a line separator, U+2028, that JSON writes as it is.)"""
    state = {"batches": 0, "stop_at": None, "fail_size": None, "items": []}
    monkeypatch.setitem(systems.SYSTEMS, "counting", lambda name, placement, **_: Counting(placement, state))
    monkeypatch.setattr(run, "GROUP_BATCHES", 1)
    return state


def evaluate(manifest, out, log=lambda *_: None, batch_size=1, **kwargs):
    return run.evaluate({"c": "counting"}, manifest, out, task="srt", options=kwargs.pop("options", OPTS),
                        batch_size=batch_size, placement=CPU, log=log, significance=0, **kwargs)


def journal_rows(out: Path, stem: str = "c.hyps") -> list[dict]:
    return [json.loads(line) for f in sorted((out / run.PARTIAL).glob(f"{stem}.rank*.jsonl"))
            for line in lines(f)[1:]]


def lines(path: Path) -> list[str]:
    """A JSONL file's lines (not splitlines(): clip 0's texts hold U+2028, which JSON writes as it is)."""
    return path.read_text().split("\n")[:-1]


def test_a_killed_evaluation_goes_on_from_the_rows_it_decoded(counting, manifest, tmp_path):
    evaluate(manifest, tmp_path / "whole")  # the reference: one run, never stopped
    assert not (tmp_path / "whole" / run.PARTIAL).exists()  # its journal removed once the report was written
    counting.update(batches=0, items=[], stop_at=6)
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    kept = journal_rows(tmp_path / "r")
    assert [k["result"]["id"] for k in kept] == [r.id for r in read_manifest(manifest)[:5]]  # 5 groups finished
    counting.update(batches=0, items=[], stop_at=None)
    logged = []
    evaluate(manifest, tmp_path / "r", log=logged.append)
    assert len(counting["items"]) == N_ROWS - 5  # only the rows not kept were decoded
    assert f"c: {N_ROWS} rows as srt on cpu float32; 5 rows decoded by an earlier run kept" in logged[0]
    for name in ("hyps.c.jsonl", "results.json", "report.md"):
        assert (tmp_path / "r" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert not (tmp_path / "r" / run.PARTIAL).exists()


def _a_killed_run_whose_journal_lacks(field: str, counting, manifest, out) -> tuple[list[str], list[str]]:
    """An evaluation into `out` killed after 6 items, its journal's rows then written again without the result's
    `field` (as a version before that field wrote them); the counter reset for the run that goes on. Returns the
    rows as written and as rewritten."""
    counting.update(batches=0, items=[], stop_at=6)
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, out)
    [journal_file] = (out / run.PARTIAL).glob("c.hyps.rank*.jsonl")
    head, *kept = lines(journal_file)
    old = [json.dumps({**k, "result": {f: v for f, v in k["result"].items() if f != field}}, ensure_ascii=False)
           for k in map(json.loads, kept)]
    journal_file.write_text("\n".join([head, *old]) + "\n")
    counting.update(batches=0, items=[], stop_at=None)
    return kept, old


def test_rows_kept_by_a_journal_without_sentence_ids_get_their_rows_sentence(counting, manifest, tmp_path):
    """A journal written before results recorded the manifest's sentence id (the paired tests' unit) goes on
    into the report an uninterrupted run writes: each kept row gets its row's sentence id back."""
    evaluate(manifest, tmp_path / "whole")
    kept, old = _a_killed_run_whose_journal_lacks("sentence", counting, manifest, tmp_path / "r")
    assert all('"sentence"' not in line for line in old) and '"sentence"' in kept[0]
    evaluate(manifest, tmp_path / "r")
    assert len(counting["items"]) == N_ROWS - 5
    assert (tmp_path / "r" / "hyps.c.jsonl").read_text() == (tmp_path / "whole" / "hyps.c.jsonl").read_text()


def test_rows_cut_at_their_token_cap_stay_counted_through_a_kill(counting, manifest, tmp_path, monkeypatch):
    """Output.capped goes into the journal with its row and back: a run gone on from a killed one counts the rows
    cut at their token cap as the uninterrupted run does; a journal line written before the flag reads as not
    capped."""
    real = Counting.run_batch
    monkeypatch.setattr(Counting, "run_batch", lambda self, items, options: [
        replace(o, capped=it.tgt == "deu") for it, o in zip(items, real(self, items, options))])
    evaluate(manifest, tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())["systems"]["c"]
    assert whole["n_capped"] == N_CLIPS  # the eng->deu rows
    counting.update(batches=0, items=[], stop_at=6)
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    assert [k["result"]["capped"] for k in journal_rows(tmp_path / "r")] == [True, False, False, True, False]
    counting.update(batches=0, items=[], stop_at=None)
    evaluate(manifest, tmp_path / "r")
    for name in ("hyps.c.jsonl", "results.json", "report.md"):
        assert (tmp_path / "r" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    _a_killed_run_whose_journal_lacks("capped", counting, manifest, tmp_path / "old")
    evaluate(manifest, tmp_path / "old")
    assert len(counting["items"]) == N_ROWS - 5  # the old lines were kept, not decoded again
    assert json.loads((tmp_path / "old" / "results.json").read_text())["systems"]["c"]["n_capped"] == N_CLIPS - 2


def test_failed_and_edited_rows_are_decoded_again_and_a_cut_line_is_skipped(counting, manifest, tmp_path):
    rows = read_manifest(manifest)
    counting.update(stop_at=7, fail_size=int(0.6 * 16000))  # clip 0's rows fail
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    kept = journal_rows(tmp_path / "r")
    assert [k["result"]["error"] is not None for k in kept] == [True] * 3 + [False] * 3
    own = tmp_path / "r" / run.PARTIAL / "c.hyps.rank0.jsonl"
    with open(own, "a") as f:
        f.write('{"row": "cut by a kill", "res')  # a line a SIGKILL cut short
    edited = manifest.parent / "edited.jsonl"  # beside it: its audio paths are the manifest's (`row_digest`)
    write_manifest(edited, [replace(r, translation="der Hund") if r.id == "1-engdeu" else r for r in rows])
    counting.update(batches=0, items=[], stop_at=5, fail_size=None)
    with pytest.raises(KeyboardInterrupt):  # stopped again after 4 more rows: clip 0's three and the edited one
        evaluate(edited, tmp_path / "r")
    assert counting["items"] == [(int(0.6 * 16000), "eng", "deu"), (int(0.6 * 16000), "deu", "eng"),
                                 (int(0.6 * 16000), "fra", None), (int(0.8 * 16000), "eng", "deu")]
    written = lines(own)
    assert written[-5] == '{"row": "cut by a kill", "res' and all(json.loads(x) for x in written[-4:])
    counting.update(batches=0, items=[], stop_at=None)
    report = evaluate(edited, tmp_path / "r")
    assert len(counting["items"]) == N_ROWS - 6  # none of the six kept rows again
    assert report.systems[0].failed_summary() == f"failed: 0 of {N_ROWS}"
    assert json.loads((tmp_path / "r" / "hyps.c.jsonl").read_text().split("\n")[3])["ref_translation"] == "der Hund"


def test_rows_a_system_cannot_run_are_kept_and_not_decoded_again_on_every_resume(counting, manifest, tmp_path):
    """The whisper system fails every row into a target other than English, the same every time (CANNOT_RUN): a
    killed evaluation keeps those rows, as it keeps good ones; before, every group holding one was decoded again, and
    a many-to-many whisper run started over."""
    counting.update(stop_at=7, decline="deu")
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    kept = journal_rows(tmp_path / "r")
    assert sum(k["result"]["error"] is not None for k in kept) == 2 and len(kept) == 6
    counting.update(batches=0, items=[], stop_at=None)
    report = evaluate(manifest, tmp_path / "r")
    assert len(counting["items"]) == N_ROWS - 6
    assert report.systems[0].failed_summary().startswith(f"failed: {N_CLIPS} of {N_ROWS}")


def test_other_settings_are_refused_in_one_line_and_restart_decodes_every_row(counting, manifest, tmp_path):
    counting["stop_at"] = 4
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    counting.update(batches=0, items=[], stop_at=None)
    with pytest.raises(LLMSRTError) as e:
        evaluate(manifest, tmp_path / "r", options=replace(OPTS, max_new_tokens=9))
    assert str(e.value) == (
        f"{tmp_path / 'r' / run.PARTIAL / 'c.hyps.rank0.jsonl'}: rows an earlier run decoded with other settings "
        "(decoding.max_new_tokens: 8 -> 9); run with those settings to go on from them, give another --out, or "
        "--restart to decode every row again")
    assert counting["batches"] == 0  # refused before any decoding
    (tmp_path / "r" / run.PARTIAL / "c.hyps.rank3.jsonl").write_text(  # a rank no process of this run is
        (tmp_path / "r" / run.PARTIAL / "c.hyps.rank0.jsonl").read_text())
    counting["stop_at"] = 3
    with pytest.raises(KeyboardInterrupt):  # the restarted run is stopped too, after 2 rows
        evaluate(manifest, tmp_path / "r", options=replace(OPTS, max_new_tokens=9), restart=True)
    assert sorted(f.name for f in (tmp_path / "r" / run.PARTIAL).iterdir()) == ["c.hyps.rank0.jsonl"]
    assert len(journal_rows(tmp_path / "r")) == 2  # the earlier settings' rows are gone
    counting.update(batches=0, items=[], stop_at=None)
    evaluate(manifest, tmp_path / "r", options=replace(OPTS, max_new_tokens=9))  # goes on from the restart
    assert len(counting["items"]) == N_ROWS - 2
    assert not (tmp_path / "r" / run.PARTIAL).exists()


def test_a_group_cut_short_keeps_its_batches_run_and_the_resume_batches_the_rest_as_the_uninterrupted_run(
        counting, manifest, tmp_path, monkeypatch):
    """Outputs that depend on their batch (as bfloat16 and int8 ones may), groups of 4 rows in batches of 2, a kill
    at the second group's second batch: the group's first batch is kept (a group was journaled whole, so a stop lost
    every row of the group it cut), and the resume runs the group's other 2 rows in one batch, as the uninterrupted
    run did: the report is that run's. A batch whose lines a kill cut short is none of it: its group runs whole."""
    monkeypatch.setattr(run, "GROUP_BATCHES", 2)  # groups of 4 rows in batches of 2
    original = Counting.run_batch

    def batch_dependent(self, items, options):
        sizes = [it.audio.size for it in items]
        return [Output(o.transcript, o.translation + f" beside {sum(sizes) - it.audio.size}") if o.translation
                else o for it, o in zip(items, original(self, items, options))]

    monkeypatch.setattr(Counting, "run_batch", batch_dependent)
    evaluate(manifest, tmp_path / "whole", batch_size=2)
    counting.update(batches=0, items=[], stop_at=4)  # the second group's second batch
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r", batch_size=2)
    assert len(journal_rows(tmp_path / "r")) == 4 + 2
    shutil.copytree(tmp_path / "r", tmp_path / "cut")
    counting.update(batches=0, items=[], stop_at=None)
    evaluate(manifest, tmp_path / "r", batch_size=2)
    assert len(counting["items"]) == N_ROWS - 6  # the cut group's 2 rows not run, then the 4 of the last group
    own = tmp_path / "cut" / run.PARTIAL / "c.hyps.rank0.jsonl"
    own.write_text("".join(line + "\n" for line in lines(own)[:-1]))  # as if the kill had come in its last write
    counting.update(batches=0, items=[])
    evaluate(manifest, tmp_path / "cut", batch_size=2)
    assert len(counting["items"]) == N_ROWS - 4  # the cut group again (4 rows), then the last group
    for out in ("r", "cut"):
        for name in ("hyps.c.jsonl", "results.json", "report.md"):
            assert (tmp_path / out / name).read_text() == (tmp_path / "whole" / name).read_text(), (out, name)


def test_rows_kept_from_other_groups_are_run_again_when_the_manifest_changed(counting, manifest, tmp_path,
                                                                             monkeypatch):
    """A row left out of the manifest shifts every later group: a new group whose rows the journal held from other
    groups (other batches) was taken as decoded, so the report was no uninterrupted run's when outputs depend on
    their batch (bfloat16, int8)."""
    original = Counting.run_batch

    def batch_dependent(self, items, options):
        sizes = [it.audio.size for it in items]
        return [Output(o.transcript, o.translation + f" beside {sum(sizes) - it.audio.size}") if o.translation
                else o for it, o in zip(items, original(self, items, options))]

    monkeypatch.setattr(Counting, "run_batch", batch_dependent)
    counting["stop_at"] = 4  # groups of 2 rows (a batch each): 3 kept, [0e 0d] [1e 1d] [2e 2d]
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r", batch_size=2)
    fewer = tmp_path / "fewer.jsonl"
    write_manifest(fewer, read_manifest(manifest)[1:])  # clip 0's eng->deu row left out: [0d 1e] [1d 2e] ...
    counting.update(batches=0, items=[], stop_at=None, fail_size=12800)  # clip 1 (kept from the first run) fails
    evaluate(fewer, tmp_path / "r", batch_size=2)
    assert len(counting["items"]) == N_ROWS - 1 - 3  # every group again (clip 1's three rows failed)
    evaluate(fewer, tmp_path / "fresh", batch_size=2)
    for name in ("hyps.c.jsonl", "report.md"):
        assert (tmp_path / "r" / name).read_text() == (tmp_path / "fresh" / name).read_text(), name
    # its rows' results from the other groups are not this run's: the failure in their new group stands
    assert [json.loads(line)["error"] is not None for line in lines(tmp_path / "r" / "hyps.c.jsonl")
            if json.loads(line)["id"].startswith("1-")] == [True] * 3


def test_another_batch_size_or_number_of_processes_is_another_setting(counting, manifest, tmp_path, monkeypatch):
    counting["stop_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    with pytest.raises(LLMSRTError, match=r"\(layout.batch_size: 1 -> 2; layout.group_rows: 1 -> 2\)"):
        evaluate(manifest, tmp_path / "r", batch_size=2)
    monkeypatch.setattr(run, "world", lambda: (0, 2))  # rank 0 of two processes, without a process group (two
    monkeypatch.setattr(run, "rank_group", contextlib.nullcontext)  # ranks: test_a_resume_with_another_number_...)
    monkeypatch.setattr(run, "from_rank0", lambda fn, rank, size, group=None: fn())
    monkeypatch.setattr(run, "on_every_rank", lambda fn, rank, size, group=None, **_: fn())
    with pytest.raises(LLMSRTError, match=r"\(layout.world_size: 1 -> 2\)"):
        evaluate(manifest, tmp_path / "r")
    assert counting["batches"] == 3  # two rows, then the stop: none since


def test_a_later_error_never_replaces_a_kept_result(counting, manifest, tmp_path):
    counting["stop_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    own = tmp_path / "r" / run.PARTIAL / "c.hyps.rank0.jsonl"
    first = json.loads(own.read_text().split("\n")[1])
    with open(own, "a") as f:
        f.write(json.dumps({"row": first["row"], "result": {**first["result"], "error": "late"}}) + "\n")
    counting.update(batches=0, items=[], stop_at=None)
    evaluate(manifest, tmp_path / "r")
    assert len(counting["items"]) == N_ROWS - 2


def test_a_group_run_again_for_a_failed_row_keeps_the_result_of_a_row_that_fails_now(counting, manifest, tmp_path):
    """A group holding a failed row is decoded again whole: a row of it that succeeded before and fails this time
    (out of memory beside the other) keeps its result. Before, the report counted it failed."""
    clip = [int((0.6 + 0.2 * i) * 16000) for i in range(N_CLIPS)]  # samples of each clip
    counting.update(stop_at=7, fail_size=clip[0])  # groups of two rows; the third group's first batch is a kill
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r", batch_size=2)
    assert [(k["result"]["id"], k["result"]["error"] is None) for k in journal_rows(tmp_path / "r")] == [
        ("0-engdeu", False), ("0-deueng", False), ("0-fra", False), ("1-engdeu", True)]
    counting.update(batches=0, items=[], stop_at=None, fail_size=clip[1])  # now clip 1's rows fail, clip 0's not
    report = evaluate(manifest, tmp_path / "r", batch_size=2)
    hyps = {h["id"]: h for h in map(json.loads, lines(tmp_path / "r" / "hyps.c.jsonl"))}
    assert hyps["0-fra"]["error"] is None and hyps["1-engdeu"]["error"] is None  # the second group's rows
    assert hyps["1-engdeu"]["hyp_translation"] == f"deu {clip[1]}"  # from the first run
    assert {i for i, h in hyps.items() if h["error"]} == {"1-deueng", "1-fra"}  # never decoded but now
    assert report.systems[0].failed_summary().startswith(f"failed: 2 of {N_ROWS}")


def test_the_same_manifest_reached_by_another_path_or_copied_keeps_its_rows(counting, manifest, tmp_path,
                                                                           monkeypatch):
    """A row's digest holds its audio path as the manifest gives it (from the manifest's folder), not as read: a killed
    run resumed with the manifest given by its absolute path instead of a relative one, or with the data copied to a
    requeued job's node-local scratch, kept none of the killed run's rows ("0 rows decoded by an earlier run kept")."""
    evaluate(manifest, tmp_path / "whole")
    monkeypatch.chdir(manifest.parent.parent)
    counting.update(batches=0, items=[], stop_at=6)  # 5 rows kept
    with pytest.raises(KeyboardInterrupt):
        evaluate(Path(manifest.parent.name) / manifest.name, tmp_path / "r")
    counting.update(batches=0, items=[], stop_at=4)  # the absolute path: 3 rows more, then killed again
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    assert counting["items"] == [(int(0.8 * 16000), "fra", None), (int(1.0 * 16000), "eng", "deu"),
                                 (int(1.0 * 16000), "deu", "eng")]  # rows 6 to 8, not row 1 again
    scratch = tmp_path / "scratch"  # the data set copied (times kept, as cp -p and shutil.copytree keep them)
    shutil.copytree(manifest.parent, scratch, ignore=shutil.ignore_patterns("edited.jsonl"))
    counting.update(batches=0, items=[], stop_at=None)
    logged = []
    evaluate(scratch / manifest.name, tmp_path / "r", log=logged.append)
    assert len(counting["items"]) == N_ROWS - 8
    assert f"; 8 rows decoded by an earlier run kept ({tmp_path / 'r' / run.PARTIAL}), 4 to go" in logged[0]
    assert (tmp_path / "r" / "hyps.c.jsonl").read_text() == (tmp_path / "whole" / "hyps.c.jsonl").read_text()
    assert not (tmp_path / "r" / run.PARTIAL).exists()  # every row of the journal is this run's: removed


def test_a_manifest_of_absolute_audio_paths_copied_alone_keeps_its_rows(counting, manifest, tmp_path):
    """A manifest whose audio paths are absolute, under its own folder, copied without its audio to node-local scratch:
    its paths from the manifest's folder changed (from `c0.wav` to an absolute path), and the resume decoded every row
    again. Each row is kept by any of three forms of its audio path (`journal.row_digests`), the absolute one here."""
    data = tmp_path / "data"
    shutil.copytree(manifest.parent, data, ignore=shutil.ignore_patterns("*.jsonl"))
    (data / "test.jsonl").write_text("".join(  # absolute paths, as a user's own manifest may write them
        json.dumps(vars(replace(r, audio=str(data / Path(r.audio).name)))) + "\n" for r in read_manifest(manifest)))
    counting.update(batches=0, items=[], stop_at=6)
    with pytest.raises(KeyboardInterrupt):
        evaluate(data / "test.jsonl", tmp_path / "r")
    (tmp_path / "scratch").mkdir()
    shutil.copy(data / "test.jsonl", tmp_path / "scratch" / "test.jsonl")
    counting.update(batches=0, items=[], stop_at=None)
    logged = []
    evaluate(tmp_path / "scratch" / "test.jsonl", tmp_path / "r", log=logged.append)
    assert len(counting["items"]) == N_ROWS - 5 and "; 5 rows decoded by an earlier run kept" in logged[0]
    assert not (tmp_path / "r" / run.PARTIAL).exists()  # its rows all this run's, by another form: removed


def test_a_journal_written_before_the_audio_path_forms_keeps_its_rows(counting, manifest, tmp_path):
    """A journal of the version before 2026-12-07 holds each row by one digest, of the audio path as read: its rows
    are kept (they were dropped unsaid, the journal then left behind as holding rows this run did not decode)."""
    counting.update(batches=0, items=[], stop_at=6)
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    [own] = (tmp_path / "r" / run.PARTIAL).glob("c.hyps.rank*.jsonl")
    rows = {r.id: r for r in read_manifest(manifest)}
    old = lines(own)[:1]
    for line in lines(own)[1:]:  # the earlier version's line: the digest as read, its group as it was made then
        entry = json.loads(line)
        entry.pop("forms", None)
        entry["row"] = journal.row_digest(rows[entry["result"]["id"]])
        entry["group"] = None
        old.append(json.dumps(entry, ensure_ascii=False))
    own.write_text("".join(f"{line}\n" for line in old))
    counting.update(batches=0, items=[], stop_at=None)
    logged = []
    evaluate(manifest, tmp_path / "r", log=logged.append)
    assert len(counting["items"]) == N_ROWS - 5 and "; 5 rows decoded by an earlier run kept" in logged[0]
    assert not (tmp_path / "r" / run.PARTIAL).exists()


def test_a_row_whose_audio_could_not_be_read_runs_again(counting, manifest, tmp_path, monkeypatch):
    """A file that is there but failed to read (a network disk's passing I/O error) was kept as failed while it stayed
    as it was, so every resume scored it as an empty hypothesis: it runs again."""
    from llm_srt import infer
    from llm_srt.errors import AudioError

    real, flaky = infer.load_audio, [True]

    def load(source, *args, **kwargs):
        if flaky[0] and str(source).endswith("c0.wav"):
            raise AudioError(f"{source}: cannot read it (Input/output error)")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(infer, "load_audio", load)
    counting.update(batches=0, items=[], stop_at=4)
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r", skip_bad=True)
    flaky[0] = False  # the disk is back
    counting.update(batches=0, items=[], stop_at=None)
    report = evaluate(manifest, tmp_path / "r", skip_bad=True)
    assert report.systems[0].failed_summary() == f"failed: 0 of {N_ROWS}"


def test_a_row_whose_audio_is_missing_is_kept_until_its_file_changes(counting, manifest, tmp_path):
    """Under --skip-bad a row whose audio is missing fails before any batch, the same way every time: it was
    retryable, so each resume decoded its whole group again (1% such rows at the default batch size: ~72% of the
    groups). It is kept now while its file is still missing; once the file is there its group runs again."""
    gone = tmp_path / "gone.wav"
    rows = [replace(r, audio=str(gone)) if r.id == "0-deueng" else r for r in read_manifest(manifest)]
    write_manifest(tmp_path / "missing.jsonl", rows)
    counting["stop_at"] = 3  # groups of 2 rows: [0-engdeu, 0-deueng] (one batch: the missing row never reaches the
    with pytest.raises(KeyboardInterrupt):  # system), [0-fra, 1-engdeu], then the kill
        evaluate(tmp_path / "missing.jsonl", tmp_path / "r", batch_size=2, skip_bad=True)
    assert [(k["result"]["id"], k.get("audio")) for k in journal_rows(tmp_path / "r")][:2] == [
        ("0-engdeu", None), ("0-deueng", "missing")]
    counting.update(batches=0, items=[], stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tmp_path / "missing.jsonl", tmp_path / "r", batch_size=2, skip_bad=True)
    assert counting["items"] == [(int(0.8 * 16000), "deu", "eng"), (int(0.8 * 16000), "fra", None)]  # group 3 only
    shutil.copy(rows[0].audio, gone)  # the file is there now
    counting.update(batches=0, items=[], stop_at=None)
    report = evaluate(tmp_path / "missing.jsonl", tmp_path / "r", batch_size=2, skip_bad=True)
    assert len(counting["items"]) == 2 + N_ROWS - 6  # group 1 again (both rows: one batch), then groups 4 to 6
    assert report.systems[0].failed_summary() == f"failed: 0 of {N_ROWS}"


def test_an_smt_clip_over_the_window_is_kept_until_its_file_changes(counting, manifest, tmp_path):
    """An SMT row whose clip is over 30 s fails before any batch, by its content, the same way every time: kept while
    its file is as it was (the journal's rule for a missing file once dropped it, and each resume decoded its group
    again); a file cut to fit runs again."""
    long = tmp_path / "long.wav"
    write_wav(long, tiny.tone(31.0, 300, seed=9))
    rows = [replace(r, audio=str(long), duration=31.0) if r.id == "0-deueng" else r for r in read_manifest(manifest)]
    write_manifest(tmp_path / "m.jsonl", rows)

    def smt(**kwargs):
        return run.evaluate({"c": "counting"}, tmp_path / "m.jsonl", tmp_path / "r", task="smt", options=OPTS,
                            batch_size=2, placement=CPU, log=lambda *_: None, significance=0, skip_bad=True,
                            **kwargs)

    counting["stop_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        smt()
    counting.update(batches=0, items=[], stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        smt()
    assert counting["items"] == [(int(0.8 * 16000), "deu", "eng"), (int(0.8 * 16000), "fra", None)]  # group 3 only
    write_wav(long, tiny.tone(20.0, 300, seed=9))  # cut to fit: its group runs again
    counting.update(batches=0, items=[], stop_at=None)
    report = smt()
    assert {(20 * 16000, "deu", "eng"), (int(0.6 * 16000), "eng", "deu")} <= set(counting["items"])  # group 1
    assert report.systems[0].failed_summary() == f"failed: 0 of {N_ROWS}"


def test_an_out_that_takes_no_writes_is_refused_before_any_model_loads(counting, manifest, tmp_path, monkeypatch):
    """A read-only or full --out was found once the model had loaded and a group had decoded: a traceback from the
    journal's first write (EROFS), or hyps.*.jsonl cut to 0 bytes (ENOSPC)."""
    import errno

    out = tmp_path / "r"
    out.mkdir()
    loaded = []
    factory = systems.SYSTEMS["counting"]
    monkeypatch.setitem(systems.SYSTEMS, "counting", lambda *a, **k: loaded.append(a) or factory(*a, **k))
    real_mkdir, real_open = Path.mkdir, os.open
    for code, partial_there in ((errno.EROFS, False), (errno.ENOSPC, True)):
        def refuse(path):
            if Path(path).is_relative_to(out) and Path(path) != out:
                raise OSError(code, os.strerror(code), str(path))

        with monkeypatch.context() as m:
            m.setattr(Path, "mkdir", lambda self, *a, **k: refuse(self) or real_mkdir(self, *a, **k))
            m.setattr(os, "open", lambda path, flags, *a, **k: (flags & (os.O_WRONLY | os.O_RDWR) and refuse(path))
                      or real_open(path, flags, *a, **k))
            with pytest.raises(LLMSRTError) as e:
                evaluate(manifest, out)
        assert str(e.value) == f"--out {out}: cannot write there ({os.strerror(code)}); choose another --out"
        assert loaded == [] and counting["batches"] == 0
        (out / run.PARTIAL).mkdir(exist_ok=True)  # a resumed run's folder is there: the write in it is tried
    assert [p.name for p in out.rglob("*")] == [run.PARTIAL]  # nothing left of the test writes


def test_a_full_disk_is_one_line_that_keeps_the_decoded_rows(counting, manifest, tmp_path, monkeypatch):
    """ENOSPC in a journal's write was a traceback; in hyps.*.jsonl's it left the file cut to 0 bytes. Now each is
    one line naming the file, saying the decoded rows are kept in OUT/partial; hyps files are written whole or not at
    all, and the same command goes on from the journal."""
    import errno
    import tempfile

    from llm_srt import paths

    real_open, appended = open, []

    def full_after_two(path, mode="r", *a, **k):
        if "a" in mode and Path(path).parent.name == run.PARTIAL:
            appended.append(path)
            if len(appended) > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode, *a, **k)

    with monkeypatch.context() as m, pytest.raises(LLMSRTError) as e:
        m.setattr(journal, "open", full_after_two, raising=False)
        evaluate(manifest, tmp_path / "r")
    partial = tmp_path / "r" / run.PARTIAL
    assert str(e.value) == (f"{partial / 'c.hyps.rank0.jsonl'}: cannot write a decoded row there (No space left on "
                            f"device); 2 decoded rows are kept in {partial}: make room (or make it writable) "
                            "and run the same command again to go on from them")
    counting.update(items=[])
    evaluate(manifest, tmp_path / "r")  # goes on from the two rows, and writes the report
    assert len(counting["items"]) == N_ROWS - 2
    hyps = (tmp_path / "r" / "hyps.c.jsonl").read_text()
    real_mkstemp, real_fdopen, full = tempfile.mkstemp, os.fdopen, set()

    def on_full_disk(*a, **k):  # hyps.c.jsonl's temporary file: ENOSPC at its first write
        fd, name = real_mkstemp(*a, **k)
        if Path(name).name.startswith(".hyps.c.jsonl."):
            full.add(fd)
        return fd, name

    def no_space(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        if fd in full:
            full.discard(fd)
            f.write = no_space
        return f

    monkeypatch.setattr(paths.tempfile, "mkstemp", on_full_disk)
    monkeypatch.setattr(paths.os, "fdopen", fdopen)
    counting.update(batches=0, items=[], stop_at=6)
    with pytest.raises(KeyboardInterrupt):  # a journal to write the report from
        evaluate(manifest, tmp_path / "r")
    counting.update(stop_at=None)
    with pytest.raises(LLMSRTError) as e:
        evaluate(manifest, tmp_path / "r")
    assert str(e.value) == (f"{tmp_path / 'r' / 'hyps.c.jsonl'}: cannot write (No space left on device); the decoded "
                            f"rows are kept in {partial}: make room (or make it writable) and run the same command "
                            "again to write the report from them")
    assert (tmp_path / "r" / "hyps.c.jsonl").read_text() == hyps  # the earlier file, whole
    assert [f.name for f in partial.iterdir()] == ["c.hyps.rank0.jsonl"]
    assert [f.name for f in (tmp_path / "r").iterdir() if f.name.startswith(".")] == []  # no temporary file left


def test_a_run_without_with_mt_keeps_the_text_mt_journal_a_killed_with_mt_run_left(counting, manifest, tmp_path,
                                                                                  monkeypatch):
    """A killed --with-mt run, then a quick report without --with-mt, removed every kind of journal, the text MT's
    too, though it had not opened it: --with-mt again decoded all the text MT anew. Then the speech rows' journal
    went alone: --with-mt decoded every row again; both stay now."""
    original = Counting.run_batch

    def with_text(self, items, options):  # text MT items (no audio): their own outputs, counted apart
        if any(it.audio is not None for it in items):
            return original(self, items, options)
        self.state["batches"] += 1
        if self.state["batches"] == self.state["stop_at"]:
            raise KeyboardInterrupt
        self.state["mt"] += [(it.src, it.tgt) for it in items]
        return [Output("", f"{it.tgt} {it.transcript}") for it in items]

    monkeypatch.setattr(Counting, "run_batch", with_text)
    counting.update(mt=[], stop_at=N_ROWS + 4)  # every row, then 3 of the 8 text MT rows
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r", with_mt=True)
    assert len(journal_rows(tmp_path / "r", "c.mt")) == 3
    counting.update(batches=0, items=[], mt=[], stop_at=None)
    logged = []
    evaluate(manifest, tmp_path / "r", log=logged.append)
    assert counting["items"] == [] and len(journal_rows(tmp_path / "r")) == N_ROWS
    assert len(journal_rows(tmp_path / "r", "c.mt")) == 3
    assert f"c: kept its text-MT journal in {tmp_path / 'r' / run.PARTIAL} (of a killed --with-mt run), and its " \
        "decoded rows beside it" in "\n".join(logged)
    evaluate(manifest, tmp_path / "r", with_mt=True)
    assert counting["items"] == [] and len(counting["mt"]) == 2 * N_CLIPS - 3  # both go on: no speech row again
    assert not (tmp_path / "r" / run.PARTIAL).exists()


def _resume_rank(rank: int, world: int, port: int, manifest: str, out: str) -> None:
    """One torchrun rank (its environment set by hand) of `evaluate` with the counting system; what it said, the
    systems it loaded and the batches it ran go to OUT/rank<R>.json."""
    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    state = {"batches": 0, "stop_at": None, "fail_size": None, "items": [], "loaded": 0}
    systems.SYSTEMS["counting"] = lambda name, placement, **_: (state.update(loaded=1), Counting(placement, state))[1]
    run.GROUP_BATCHES = 1
    run.GATHER_TIMEOUT = timedelta(seconds=60)  # a rank left waiting on one that stopped fails in a minute
    try:
        evaluate(Path(manifest), Path(out))
        said = None
    except Exception as e:  # noqa: BLE001  what the user reads, compared across the ranks
        said = f"{type(e).__name__}: {e}"
    Path(out, f"rank{rank}.json").write_text(json.dumps({"said": said, "loaded": state["loaded"],
                                                         "batches": state["batches"]}))


@pytest.mark.slow  # torchrun, 17 s; make test: test_another_batch_size_or_number_of_processes_is_another_setting
@pytest.mark.long(17)
def test_a_resume_with_another_number_of_processes_is_refused_by_every_rank_before_any_decodes(
        counting, manifest, tmp_path):
    """A journal of one process, resumed by two: rank 0's journal is of other settings, rank 1 has none. Before,
    rank 0 stopped at once while rank 1 loaded the model, decoded its whole shard (hours at paper scale), wrote a
    journal of the new settings, and failed only when it handed its rows to rank 0."""
    import socket

    import torch.multiprocessing as mp

    counting["stop_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    own = tmp_path / "r" / run.PARTIAL / "c.hyps.rank0.jsonl"
    before = own.read_text()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_resume_rank, args=(2, port, str(manifest), str(tmp_path / "r")), nprocs=2, join=True)
    said = [json.loads((tmp_path / "r" / f"rank{k}.json").read_text()) for k in range(2)]
    assert said[0]["said"] == said[1]["said"] == (
        f"LLMSRTError: {own}: rows an earlier run decoded with other settings (layout.world_size: 1 -> 2); run with "
        "those settings to go on from them, give another --out, or --restart to decode every row again")
    assert [(s["loaded"], s["batches"]) for s in said] == [(0, 0), (0, 0)]  # no rank loaded the model
    assert own.read_text() == before and not (tmp_path / "r" / run.PARTIAL / "c.hyps.rank1.jsonl").exists()


def test_a_first_line_cut_by_a_kill_is_written_again(counting, manifest, tmp_path):
    own = tmp_path / "r" / run.PARTIAL / "c.hyps.rank0.jsonl"
    own.parent.mkdir(parents=True)
    own.write_text('{"journal": 1, "sett')
    counting["stop_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    assert len(journal_rows(tmp_path / "r")) == 2
    counting.update(batches=0, items=[], stop_at=None)
    evaluate(manifest, tmp_path / "r")
    assert len(counting["items"]) == N_ROWS - 2


def test_a_run_of_fewer_rows_keeps_the_journal_and_same_named_systems_are_refused(counting, manifest, tmp_path):
    counting["stop_at"] = 5
    with pytest.raises(KeyboardInterrupt):
        evaluate(manifest, tmp_path / "r")
    counting.update(batches=0, items=[], stop_at=None)
    logged = []
    evaluate(manifest, tmp_path / "r", limit=2, log=logged.append)
    assert len(counting["items"]) == 0  # its two rows were kept
    assert "c: kept its journals in" in "\n".join(logged)  # rows 3 and 4 are still there for the whole run
    counting.update(items=[])
    evaluate(manifest, tmp_path / "r")
    assert len(counting["items"]) == N_ROWS - 4 and not (tmp_path / "r" / run.PARTIAL).exists()
    with pytest.raises(LLMSRTError, match="the names 'a/b' and 'a_b' would write the same files"):
        run.evaluate({"a/b": "counting", "a_b": "counting"}, manifest, tmp_path / "s", placement=CPU)
    assert counting["batches"] == N_ROWS - 4  # refused before any decoding


def test_a_retrained_model_folder_is_another_setting(manifest, tmp_path, monkeypatch):
    model = tiny.speech_llm_folder(tmp_path / "model")
    stopping = tiny.StopAt(run.run_system, 2)  # a kill after the first group
    monkeypatch.setattr(run, "run_system", stopping)
    monkeypatch.setattr(run, "GROUP_BATCHES", 2)
    with pytest.raises(KeyboardInterrupt):
        run.evaluate({"tiny": str(model)}, manifest, tmp_path / "r", task="srt", options=OPTS, batch_size=2,
                     placement=CPU, log=lambda *_: None)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "note": "retrained"}))
    with pytest.raises(LLMSRTError, match=r"other settings \(model.config.json: "):
        run.evaluate({"tiny": str(model)}, manifest, tmp_path / "r", task="srt", options=OPTS, batch_size=2,
                     placement=CPU, log=lambda *_: None)
    (model / "config.json").write_text(json.dumps(config))  # as it was: the journal's settings again
    weights = Path(config["llm"]) / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # the base LLM replaced
    with pytest.raises(LLMSRTError, match=r"other settings \(model.base.llm.model.safetensors: "):
        run.evaluate({"tiny": str(model)}, manifest, tmp_path / "r", task="srt", options=OPTS, batch_size=2,
                     placement=CPU, log=lambda *_: None)


def test_a_model_folder_is_known_by_its_config_and_weights(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "adapter.safetensors").write_bytes(b"\0" * 100)
    (model / "notes.txt").write_text("what I tried")  # not read by the loader: not part of the model
    (model / "sub").mkdir()
    before = journal.model_files(str(model))
    assert set(before) == {"config.json", "adapter.safetensors", "base"} and len(before["config.json"]) == 64
    assert before["base"] == {}  # a config naming no base models
    (model / "adapter.safetensors").write_bytes(b"\1" * 100)  # retrained into the same folder
    [changed] = journal.differences(before, journal.model_files(str(model)))
    assert changed == (f'adapter.safetensors: "{before["adapter.safetensors"][:59]}... -> '
                       f'"{journal.model_files(str(model))["adapter.safetensors"][:59]}...')
    other = tmp_path / "whisper"  # a baseline's folder: its files' sizes and times, not their bytes
    other.mkdir()
    (other / "model.bin").write_bytes(b"\0" * 10)
    assert journal.model_files(str(other)) == {"model.bin": f"10:{(other / 'model.bin').stat().st_mtime_ns}"}
    assert journal.model_files("cascade") == "cascade"
    (model / "config.json").write_text(json.dumps({"encoder": "../whisper", "llm": "/nowhere/llm"}))
    assert journal.model_files(str(model))["base"] == {  # a relative path: from the checkpoint, as the loader
        "encoder": journal.model_files(str(other)), "llm": "/nowhere/llm"}  # reads it; no folder: the name
    llm = tmp_path / "llm"  # a Hugging Face folder (config.json, weights) given as --llm, --model-llm: its bytes are
    shutil.copytree(model, llm)  # not read either (Qwen2.5-32B: 64 GB, on every rank, at each start)
    known = journal.settings("cascade", str(other), str(llm), {}, 8, 128, 1)
    assert known["llm"] == journal._stats(llm) and known["whisper"] == journal._stats(other)
    long = "/scratch/users/someone/models/whisper-large-v3"
    [moved] = journal.differences({"whisper": long + "-a"}, {"whisper": long + "-b"})
    assert moved == 'whisper: ...ls/whisper-large-v3-a" -> ...ls/whisper-large-v3-b"'  # where they differ


KILLED = """
import sys, time
from llm_srt import cli, infer
from llm_srt.evaluate import run
run.GROUP_BATCHES = 1  # with --batch-size 1 every row its own group: the journal grows row by row
run_items = infer.run_items
def slow(*args, **kwargs):  # slow enough for the kill to land in the middle
    time.sleep(float(sys.argv[1]))
    return run_items(*args, **kwargs)
infer.run_items = slow
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.slow  # a real process killed (35 s); make test: the journal tests above, in one process
@pytest.mark.long(25)
def test_evaluate_killed_with_sigkill_then_run_again_writes_the_uninterrupted_report(manifest, tmp_path):
    model = tiny.speech_llm_folder(tmp_path / "model")
    args = ["evaluate", "--model", f"tiny={model}", "--manifest", str(manifest), "--task", "srt", "--batch-size",
            "1", "--max-new-tokens", "6", "--device", "cpu", "--dtype", "float32", "--with-mt"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    own = tmp_path / "r" / run.PARTIAL / "tiny.mt.rank0.jsonl"  # killed in the text MT, after the rows
    proc = subprocess.Popen([sys.executable, "-c", KILLED, "0.4", *args, "--out", str(tmp_path / "r")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (own.is_file() and len(lines(own)) >= 3) and proc.poll() is None:
        assert time.monotonic() < deadline, "no row was journaled in 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stderr.read()[-2000:]
    kept = len(lines(own)) - 1
    assert 2 <= kept < 2 * N_CLIPS  # of the 8 rows with a target
    done = subprocess.run([sys.executable, "-c", KILLED, "0", *args, "--out", str(tmp_path / "r")], env=env,
                          capture_output=True, text=True, timeout=300)  # the same groups, at full speed
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = re.search(r"tiny: 12 rows as srt on cpu float32; (\d+) rows decoded by an earlier run kept", done.stdout)
    assert resumed and int(resumed[1]) >= N_ROWS + kept, done.stdout  # every row, and the text MT done
    assert cli.main([*args, "--out", str(tmp_path / "whole")]) == 0
    for name in ("hyps.tiny.jsonl", "mt.tiny.jsonl", "results.json", "report.md"):
        assert (tmp_path / "r" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert not (tmp_path / "r" / run.PARTIAL).exists()
