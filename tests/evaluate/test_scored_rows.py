"""`llm-srt evaluate` decodes the rows its scores take: under SRT not the transcript-only (ASR) rows whose language's
SRT rows give the WER/CER, and it names (never drops unsaid) an ASR row of a clip without an SRT row."""

import json

import pytest

import tiny
from llm_srt import device
from llm_srt.audio import write_wav
from llm_srt.data.manifest import Row, write_manifest
from llm_srt.evaluate import run
from llm_srt.evaluate.report import load_results
from llm_srt.evaluate.selection import select_rows, unscored_rows
from llm_srt.model import systems
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.protocol import Output
from llm_srt.prompts import Task

CPU = device.resolve("cpu", "float32")
OPTS = DecodingOptions(max_new_tokens=8)
N_CLIPS = 7  # as a CoVoST 2 test manifest gives them: one ASR row per clip, one SRT row per clip with a translation
NO_TRANSLATION = 6  # the clip whose translation is empty: its ASR row alone


def row(uid: str, audio: str, src: str = "fra", tgt: str = "eng", duration: float = 1.0,
        transcript: str = "un chat") -> Row:
    return Row(id=uid, audio=audio, duration=duration, src_lang=src, transcript=transcript, tgt_lang=tgt,
               translation="a cat" if tgt else "", split="test", corpus="t", sentence_id=uid.split(":")[-1])


def covost_rows(audio: list[str]) -> list[Row]:
    rows = []
    for i, path in enumerate(audio):
        rows.append(row(f"covost2:{i}", path, tgt="", duration=0.5 + 0.1 * i))
        if i != NO_TRANSLATION:
            rows.append(row(f"covost2:{i}:eng", path, duration=0.5 + 0.1 * i))
    return rows


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("covost-like")
    audio = []
    for i in range(N_CLIPS):
        audio.append(str(root / f"c{i}.wav"))
        write_wav(audio[-1], tiny.tone(0.5 + 0.1 * i, 300 + 80 * i, seed=i))
    write_manifest(root / "test.jsonl", covost_rows(audio))
    return root / "test.jsonl"


@pytest.fixture
def gold(monkeypatch):
    """Registers the system 'gold': each item answered with its reference texts; the items it ran in `ran`."""
    ran = []

    class Gold:
        name = "gold"

        def __init__(self, placement):
            self.placement = placement

        def run_batch(self, items, options):
            ran.extend(items)
            return [Output("un chat", "" if it.task is Task.ASR else "a cat") for it in items]

    monkeypatch.setitem(systems.SYSTEMS, "gold", lambda name, placement, **_: Gold(placement))
    return ran


def test_srt_leaves_out_the_asr_rows_its_srt_rows_give_the_transcript_of():
    rows = covost_rows([f"c{i}.wav" for i in range(N_CLIPS)])
    rows.append(row("deu:0", "d.wav", src="deu", tgt=""))  # a language with no SRT row: its ASR row is its WER
    chosen = select_rows(rows, Task.SRT)
    assert [r.id for r in chosen] == [r.id for r in rows if r.tgt_lang] + ["deu:0"]
    assert select_rows(rows, Task.ASR_SMT) == chosen  # it writes the transcript beside the translation too
    assert [r.id for r in unscored_rows(rows, Task.SRT)] == [f"covost2:{NO_TRANSLATION}"]
    for task in (Task.S2TT, Task.SMT):  # no transcript of their own: the ASR rows give it
        assert select_rows(rows, task) == rows and unscored_rows(rows, task) == []
    assert unscored_rows(rows, Task.ASR) == []  # one row per clip, every clip transcribed


def test_an_srt_evaluation_decodes_and_counts_the_rows_it_scores(gold, manifest, tmp_path):
    logged = []
    report = run.evaluate({"gold": "gold"}, manifest, tmp_path, task="srt", options=OPTS, batch_size=4,
                          placement=CPU, log=logged.append)
    n_srt = N_CLIPS - 1
    assert len(gold) == n_srt and {it.task for it in gold} == {Task.SRT}  # no ASR row decoded for no score
    [s] = report.systems
    assert s.n_rows == n_srt and s.failed_summary() == f"failed: 0 of {n_srt}" and s.n_utterances == n_srt
    assert s.asr["fra"].n == n_srt and s.bleu[("fra", "eng")].n == n_srt
    assert len(load_results(tmp_path / "hyps.gold.jsonl")) == n_srt
    lost = f"covost2:{NO_TRANSLATION}"  # not decoded, and said so: in the log and in results.json
    assert logged[0].startswith(f"gold: {n_srt} rows as srt on cpu") and f"{N_CLIPS} transcript-only (ASR) rows " \
        f"not decoded" in logged[0] and f"1 of them of a clip with no srt row, so not scored ({lost})" in logged[0]
    assert any(line.startswith(f"gold: 1 transcript-only row not scored under --task srt") and lost in line
               for line in logged)
    data = json.loads((tmp_path / "results.json").read_text())["systems"]["gold"]
    assert data["n_rows"] == n_srt and data["n_not_scored"] == 1 and data["not_scored"] == [lost]

    report = run.evaluate({"gold": "gold"}, manifest, tmp_path / "asr", task="asr", options=OPTS, batch_size=4,
                          placement=CPU, log=lambda *_: None)
    [s] = report.systems  # --task asr scores that clip: every clip once
    assert s.n_rows == N_CLIPS and s.asr["fra"].n == N_CLIPS and s.not_scored == ()


def test_a_journal_of_a_run_that_decoded_every_asr_row_goes_on_as_that_run_did(gold, manifest, tmp_path,
                                                                               monkeypatch):
    """A run killed before 2026-12-07 journaled groups holding the ASR rows too: a run of today forms other groups,
    so it decoded every row again, unsaid. It goes on from that journal's groups now (the ASR rows among the rows to
    go decoded as that run would have), and its report counts the scored rows alone."""
    monkeypatch.setattr(run, "GROUP_BATCHES", 1)  # groups of 2 rows (batch size 2): 13 rows in 7 groups
    with monkeypatch.context() as old:  # the llm-srt before: every row decoded, its journal settings without a mark
        old.setattr(run, "select_rows", lambda rows, task: rows)
        old.setattr(run, "SCORED_ROWS", {}, raising=False)
        old.setattr(run, "run_system", tiny.StopAt(run.run_system, 3))  # killed after 2 groups
        with pytest.raises(KeyboardInterrupt):
            run.evaluate({"gold": "gold"}, manifest, tmp_path / "r", task="srt", options=OPTS, batch_size=2,
                         placement=CPU, log=lambda *_: None)
    assert len(gold) == 4
    gold.clear()
    logged = []
    report = run.evaluate({"gold": "gold"}, manifest, tmp_path / "r", task="srt", options=OPTS, batch_size=2,
                          placement=CPU, log=logged.append)
    n_srt = N_CLIPS - 1
    assert len(gold) == 2 * N_CLIPS - 1 - 4  # the 4 rows kept, not decoded again
    assert "4 rows decoded by an earlier run kept" in logged[0] and "goes on as that run did" in logged[0]
    [s] = report.systems
    assert s.n_rows == n_srt and s.not_scored == (f"covost2:{NO_TRANSLATION}",)
    assert len(load_results(tmp_path / "r" / "hyps.gold.jsonl")) == n_srt
    assert not (tmp_path / "r" / "partial").exists()  # its work done

    gold.clear()  # a run of today, killed, goes on from its own journal (its mark kept)
    with monkeypatch.context() as killed:
        killed.setattr(run, "run_system", tiny.StopAt(run.run_system, 2))
        with pytest.raises(KeyboardInterrupt):
            run.evaluate({"gold": "gold"}, manifest, tmp_path / "t", task="srt", options=OPTS, batch_size=2,
                         placement=CPU, log=lambda *_: None)
    logged.clear()
    report = run.evaluate({"gold": "gold"}, manifest, tmp_path / "t", task="srt", options=OPTS, batch_size=2,
                          placement=CPU, log=logged.append)
    assert len(gold) == n_srt and "goes on as that run did" not in logged[0]  # 2 kept, 4 decoded now
    assert f"gold: {n_srt} rows as srt" in logged[0] and "2 rows decoded by an earlier run kept" in logged[0]
