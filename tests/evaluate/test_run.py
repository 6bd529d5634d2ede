"""`llm-srt evaluate` on tiny random models: shards, failed rows, mixed batches, --task smt/asr, --with-mt, torchrun."""

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import sacrebleu
import torch

import tiny
from llm_srt import cli, device
from llm_srt.audio import write_wav
from llm_srt.data.manifest import Row, read_manifest, write_manifest
from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import compare, run
from llm_srt.evaluate.report import UtteranceResult, load_results
from llm_srt.infer import SpeechTranslator
from llm_srt.model import systems, whisper_system
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.protocol import Item, Output
from llm_srt.model.systems import TextMTSystem, load_system
from llm_srt.prompts import Task

OPTS = DecodingOptions(max_new_tokens=8)
CPU = device.resolve("cpu", "float32")
CLIPS = [(0.7, 300), (1.6, 650), (1.1, 900), (0.9, 450), (1.3, 800), (0.8, 550)]  # (seconds, Hz) of each test clip;
#   6 sentences: the fewest a paired test runs on (significance.MIN_SENTENCES)
N = len(CLIPS)
N_ROWS = 3 * N + 1
N_SRT = 2 * N + 1  # the rows --task srt decodes: not the eng ASR rows, whose transcripts the eng->deu rows give
GOLD_DEU = "die Katze sitzt auf der Matte"  # every deu reference of the test manifest
SRC = Path(run.__file__).resolve().parents[2]  # the llm_srt package's parent: subprocesses import this copy


def row(uid: str, audio: str, src: str, tgt: str, duration: float = 1.0, transcript: str = "a cat sat",
        translation: str = GOLD_DEU) -> Row:
    return Row(id=uid, audio=audio, duration=duration, src_lang=src, transcript=transcript, tgt_lang=tgt,
               translation=translation if tgt else "", split="test", corpus="t", sentence_id=uid.split("-")[0])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny.speech_llm_folder(tmp_path_factory.mktemp("eval-model"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """N clips x (eng->deu, deu->eng, eng ASR), plus one eng->zho row without a transcript: N_ROWS rows."""
    root = tmp_path_factory.mktemp("eval-data")
    rows = []
    for i, (sec, f) in enumerate(CLIPS):
        path = root / f"c{i}.wav"
        write_wav(path, tiny.tone(sec, f, seed=i))
        rows += [row(f"{i}-ed", str(path), "eng", "deu", sec), row(f"{i}-de", str(path), "deu", "eng", sec),
                 row(f"{i}-asr", str(path), "eng", "", sec)]
    rows.append(row("9-ez", str(root / "c0.wav"), "eng", "zho", 0.7, transcript="", translation="猫"))
    write_manifest(root / "test.jsonl", rows)
    return root / "test.jsonl"


class Oracle:
    """A system that answers each item with its gold texts (the manifest's: transcript "a cat sat", translation
    GOLD_DEU into deu), records every batch it is handed and, like a GPU running out of memory, raises
    torch.cuda.OutOfMemoryError for any batch holding an item whose source language is `fail_src`, or whose audio
    is clip `fail_clip`'s."""

    def __init__(self, placement, fail_src: str | None = None, fail_clip: int | None = None):
        self.name, self.placement, self.fail_src = "oracle", placement, fail_src
        self.fail_samples = None if fail_clip is None else int(CLIPS[fail_clip][0] * 16000)
        self.batches: list[list[Item]] = []

    def run_batch(self, items, options) -> list[Output]:
        self.batches.append(list(items))
        if any(it.src == self.fail_src or it.audio is not None and it.audio.size == self.fail_samples
               for it in items):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [Output("a cat sat", "" if it.task is Task.ASR else GOLD_DEU if it.tgt == "deu" else "a cat sat")
                for it in items]

    def detect_language(self, audio):
        return "eng"


@pytest.fixture
def oracle(monkeypatch):
    """Registers the system name 'flaky': an Oracle with every batch holding a source language `fail_src` (default
    deu), or clip `fail_clip`'s audio (default none), out of memory. Returns {"fail_src": ..., "fail_clip": ...,
    "made": [the systems built]}."""
    state = {"fail_src": "deu", "fail_clip": None, "made": []}

    def build(name, placement, **_):
        state["made"].append(Oracle(placement, fail_src=state["fail_src"], fail_clip=state["fail_clip"]))
        return state["made"][-1]

    monkeypatch.setitem(systems.SYSTEMS, "flaky", build)
    return state


def test_shard_deals_similar_audio_to_every_rank():
    rows = [row(f"{i}", "a.wav", "eng", "deu", duration=d) for i, d in enumerate([9.0, 1.0, 4.0, 4.5, 2.0, 8.0,
                                                                                   3.0, 0.5, 7.0, 6.0, 5.0])]
    shards = [run.shard(rows, k, 3) for k in range(3)]
    ids = [r.id for s in shards for r in s]
    assert sorted(ids, key=int) == [r.id for r in rows] and len(set(ids)) == len(rows)  # each row exactly once
    for s in shards:
        assert [r.id for r in s] == sorted((r.id for r in s), key=int)  # manifest order within a shard
    audio = [sum(r.duration for r in s) for s in shards]
    assert max(audio) - min(audio) <= 1.0, audio  # 50 s dealt as 17 / 16.5 / 16.5, not by row count
    assert sorted(len(s) for s in shards) == [3, 4, 4]  # a strided rows[k::3] would deal 22.5 s and 8.5 s)
    assert run.shard(rows, 0, 1) == rows and run.shard(rows[:1], 1, 2) == []


def test_asr_task_transcribes_each_clip_once():
    rows = [row("1-ed", "a.wav", "eng", "deu"), row("1-ez", "a.wav", "eng", "zho"), row("1-asr", "a.wav", "eng", ""),
            row("2-ed", "b.wav", "eng", "deu")]
    assert [r.id for r in run.select_rows(rows, Task.ASR)] == ["1-asr", "2-ed"]  # a clip's ASR row where it has one
    assert run.select_rows(rows, Task.SRT) == [rows[0], rows[1], rows[3]]  # 1-ed gives 1-asr's transcript
    assert run.row_task(rows[0], Task.ASR) is Task.ASR and run.row_task(rows[2], Task.SMT) is Task.ASR
    assert run.row_task(rows[0], Task.SMT) is Task.SMT


def test_failed_rows_are_empty_hypotheses_and_counted(oracle, manifest, tmp_path):
    oracle["fail_clip"] = 1
    report = run.evaluate({"flaky": "flaky"}, manifest, tmp_path, task="srt", options=OPTS, batch_size=4,
                          placement=CPU, log=lambda *_: None)
    [system] = oracle["made"]
    # mixed-language batches: the system saw eng->deu, deu->eng and ASR rows side by side, not one pair per call
    assert any(len({(it.src, it.tgt, it.task) for it in b}) > 1 for b in system.batches)
    [s] = report.systems
    hyps = load_results(tmp_path / "hyps.flaky.jsonl")
    assert [h.id for h in hyps] == [r.id for r in read_manifest(manifest) if not r.is_asr]
    failed = {h.id for h in hyps if h.error}
    # every deu-source row failed, and every row of clip 1: each alone (a failed batch is retried down to single
    # rows), the rows beside them ran; the zho row has no transcript, which SRT does not need: it ran
    assert failed == {h.id for h in hyps if h.src == "deu" or h.id.startswith("1-")} and "9-ez" not in failed
    assert all(h.error.startswith("OutOfMemoryError: CUDA out of memory") for h in hyps if h.id in failed)
    assert s.failed_by_direction()[("deu", "eng")] == N and s.rows[("deu", "eng")] == N
    assert s.failed_summary() == f"failed: {len(failed)} of {N_SRT}"
    # BLEU: each failed row an empty hypothesis against its reference, as sacrebleu scores it
    assert s.bleu[("deu", "eng")].n == N and s.bleu[("deu", "eng")].score == 0.0
    ed = [h for h in hyps if (h.src, h.tgt) == ("eng", "deu")]
    n_failed = sum(h.id in failed for h in ed)
    assert 0 < n_failed < N and 0 < s.bleu[("eng", "deu")].score < 100
    assert s.bleu[("eng", "deu")].score == pytest.approx(sacrebleu.corpus_bleu(
        ["" if h.error else h.hyp_translation for h in ed], [[GOLD_DEU] * N]).score)
    assert s.asr["deu"].score == 100.0  # every deu transcript empty: all words deleted
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["systems"]["flaky"]["failed_by_direction"]["deu-eng"] == {"failed": N, "of": N}
    md = (tmp_path / "report.md").read_text()
    assert f"| {len(failed)} of {N_SRT} |" in md and f"| flaky | {n_failed} of {N} | {N} of {N} |" in md
    assert "| flaky | 0-de | deu→eng | OutOfMemoryError: CUDA out of memory." in md


def test_main_exit_code_and_device_options(oracle, manifest, tmp_path, capsys):
    args = ["evaluate", "--model", "flaky", "--manifest", str(manifest), "--out", str(tmp_path / "r"),
            "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "8", "--task", "s2tt", "--limit", "6",
            "--batch-size", "1"]
    assert cli.main([*args, "--no-repeat-ngram", "3"]) == 0
    out = capsys.readouterr().out
    assert "flaky: 6 rows as s2tt on cpu float32" in out and "failed: 2 of 6" in out
    assert oracle["made"][0].placement == CPU
    decoding = json.loads((tmp_path / "r" / "results.json").read_text())["decoding"]  # how it ran, for the record
    assert decoding == {"tasks": {"flaky": "s2tt"}, "beam_size": 1, "max_new_tokens": 8, "no_repeat_ngram_size": 3,
                        "repetition_penalty": 1.0, "force_srt_tags": True, "device": "cpu", "dtype": "float32",
                        "world_size": 1}
    assert ("Decoded here: flaky as s2tt; beam_size 1, max_new_tokens 8, no_repeat_ngram_size 3"
            in (tmp_path / "r" / "report.md").read_text())
    oracle["fail_src"] = "eng"  # with the deu rows left out, every row fails
    write_manifest(tmp_path / "eng.jsonl", [replace(r, src_lang="eng", tgt_lang=r.src_lang if r.tgt_lang == "eng"
                                                    else r.tgt_lang) for r in read_manifest(manifest)[:2]])
    args[args.index("--manifest") + 1] = str(tmp_path / "eng.jsonl")
    assert cli.main(args) == 1  # not one row could be translated
    assert "failed: 2 of 2" in capsys.readouterr().out


def test_smt_translates_the_gold_transcript(model_dir, manifest, tmp_path):
    report = run.evaluate({"tiny": str(model_dir)}, manifest, tmp_path, task="smt", options=OPTS, batch_size=4,
                          placement=CPU, log=lambda *_: None)
    hyps = {h.id: h for h in load_results(tmp_path / "hyps.tiny.jsonl")}
    assert hyps["1-ed"].task == "smt" and hyps["1-ed"].hyp_transcript is None and hyps["1-ed"].error is None
    assert hyps["1-asr"].task == "asr" and hyps["1-asr"].hyp_transcript is not None  # a row without a target
    assert "needs a transcript" in hyps["9-ez"].error  # SMT needs the gold transcript: counted, not dropped
    # the speech model was given the transcript: its output is the SMT prompt's, not the S2TT one's
    system = load_system(model_dir, CPU)
    clip = tiny.tone(1.6, 650, seed=1)
    [smt] = system.run_batch([Item(clip, "eng", "deu", Task.SMT, "a cat sat")], OPTS)
    [s2tt] = system.run_batch([Item(clip, "eng", "deu", Task.S2TT)], OPTS)
    assert smt.translation != s2tt.translation  # the tiny model reads its prompt (a test of the test)
    [res] = SpeechTranslator(system).translate([str(manifest.parent / "c1.wav")], "eng", "deu", task="smt",
                                               options=OPTS, transcripts=["a cat sat"])
    assert hyps["1-ed"].hyp_translation == res.translation
    s = report.systems[0]
    assert set(s.asr) == {"eng"} and s.asr["eng"].n == N  # WER from the ASR rows only, never the given transcripts
    assert s.failed_summary() == f"failed: 1 of {N_ROWS}"


def test_an_smt_stage_model_runs_its_asr_then_its_smt(model_dir, manifest, tmp_path):
    """The paper's "w/o SRT" ablation: a model whose last stage was SMT runs --task asr+smt under auto; each row
    with a target holds the model's own transcript (scored by WER) and its SMT from it (by BLEU)."""
    smt_model = tmp_path / "smt-model"
    smt_model.mkdir()
    for f in model_dir.iterdir():
        (smt_model / f.name).symlink_to(f)
    (smt_model / "train_config.json").write_text(json.dumps({"data": {"tasks": {"smt": 0.8, "asr": 0.2}}}))
    assert run.model_task(str(smt_model)) is Task.ASR_SMT and run.model_task(str(model_dir)) is Task.SRT
    report = run.evaluate({"w/o SRT": str(smt_model)}, manifest, tmp_path / "r", options=OPTS, batch_size=4,
                          placement=CPU, log=lambda *_: None)
    hyps = {h.id: h for h in load_results(tmp_path / "r" / "hyps.w_o SRT.jsonl")}
    assert {h.task for h in hyps.values()} == {"asr+smt"} and len(hyps) == N_SRT  # no eng ASR row: 1-ed gives it
    system = load_system(model_dir, CPU)
    clip = tiny.tone(1.6, 650, seed=1)
    [heard] = system.run_batch([Item(clip, "eng", None, Task.ASR)], OPTS)
    [smt] = system.run_batch([Item(clip, "eng", "deu", Task.SMT, heard.transcript)], OPTS)
    assert (hyps["1-ed"].hyp_transcript, hyps["1-ed"].hyp_translation) == (heard.transcript, smt.translation)
    assert hyps["9-ez"].error is None  # no gold transcript needed, unlike --task smt
    s = report.systems[0]
    assert s.asr["eng"].n == N and s.asr["deu"].n == N  # the asr+smt rows' transcripts are scored (not the clips'
    #   ASR rows beside them: one task's WER)
    assert report.decoding["tasks"] == {"w/o SRT": "asr+smt"}


def test_each_system_gives_its_memory_back_before_the_next(oracle, manifest, tmp_path, monkeypatch):
    """After each decoded system, its models (and the Whisper kept for language ID) are let go and the GPU's cached
    blocks freed, before the next system or COMET loads on the same GPU."""
    order = []
    monkeypatch.setattr(whisper_system, "release_models", lambda device: order.append(("release", device)))
    real = systems.load_system
    monkeypatch.setattr(systems, "load_system", lambda spec, *a, **k: order.append(("load", spec)) or real(spec, *a,
                                                                                                          **k))
    run.evaluate({"a": "flaky", "b": "flaky"}, manifest, tmp_path, options=OPTS, batch_size=4, placement=CPU,
                 log=lambda *_: None, significance=0)
    assert order == [("load", "flaky"), ("release", CPU.device)] * 2


def test_asr_task(model_dir, manifest, tmp_path):
    report = run.evaluate({"tiny": str(model_dir)}, manifest, tmp_path, task="asr", options=OPTS, batch_size=4,
                          placement=CPU, log=lambda *_: None)
    hyps = load_results(tmp_path / "hyps.tiny.jsonl")
    # one row per (clip, language): N clips in eng and deu
    assert len(hyps) == 2 * N and {h.task for h in hyps} == {"asr"} and {(h.src, h.tgt) for h in hyps} == {
        ("eng", "eng"), ("deu", "deu")}
    s = report.systems[0]
    assert s.bleu == {} and set(s.asr) == {"eng", "deu"} and s.asr["eng"].n == N


@pytest.mark.parametrize("prompt", ["tags", "auto"])
def test_with_mt_scores_the_models_own_llm(model_dir, manifest, tmp_path, prompt):
    """--mt-prompt tags: the model's own MT prompt (the transcript and its tags); auto, for a model without LoRA
    (its LLM the frozen base LLM, which never saw the tags without speech): a translation instruction, as to a plain
    LLM (it ran the tags, which measured no MT of the paper's Figure 3 models)."""
    report = run.evaluate({"tiny": str(model_dir)}, manifest, tmp_path, task="srt", options=OPTS, batch_size=4,
                          with_mt=True, placement=CPU, log=lambda *_: None, mt_prompt=prompt)
    mt = {h.id: h for h in load_results(tmp_path / "mt.tiny.jsonl")}
    assert len(mt) == 2 * N + 1 and all(h.task == "mt" for h in mt.values())  # every row with a target; no ASR rows
    assert "transcript" in mt["9-ez"].error
    system = load_system(model_dir, CPU)
    assert system.model.config.lora is None
    if prompt == "auto":
        system = TextMTSystem.of_speech_llm(system.model)
    [out] = system.run_batch([Item(None, "deu", "eng", Task.MT, "a cat sat")], OPTS)
    assert mt["2-de"].hyp_translation == out.translation and out.translation  # the tiny model's own LLM
    [s] = report.systems
    assert s.mt is not None and s.mt.failed_summary() == f"failed: 1 of {2 * N + 1}"
    assert (tmp_path / "mt_vs_s2tt.png").is_file()
    assert "## Text MT vs speech translation" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["decoding"]["mt_prompt"] == prompt


def test_mt_prompt_auto_keeps_the_tags_for_a_model_with_lora(tmp_path):
    from llm_srt.evaluate.models import mt_system
    from llm_srt.model.llm import LoraOptions

    system = systems.SpeechLLMSystem(tiny.speech_llm(tmp_path, lora=LoraOptions(r=4, alpha=8, dropout=0.0)))
    assert mt_system(system, "auto") is system and mt_system(system, "tags") is system
    assert isinstance(mt_system(system, "instruction"), TextMTSystem)
    baseline = object()  # a baseline (cascade, mt) translates as it does
    assert mt_system(baseline, "instruction") is baseline
    with pytest.raises(LLMSRTError, match=r"--mt-prompt both: use one of auto, tags, instruction"):
        mt_system(system, "both")


def test_the_mt_journal_holds_the_prompt_only_where_it_is_not_the_models_own_tags(model_dir, manifest, tmp_path,
                                                                                 monkeypatch):
    """A killed --with-mt run's text-MT journal of the tags prompt (every one written before --mt-prompt) was
    refused under any option ("mt_prompt: null -> auto"), so only --restart went on, decoding every row again: the
    journal's settings hold the prompt only where it is the instruction, which gives other rows."""
    from llm_srt.evaluate.models import MT_PROMPTS, mt_prompt_used

    plain, lora = tmp_path / "plain", tmp_path / "lora"
    for folder, config in ((plain, {"lora": None}), (lora, {"lora": {"r": 8}})):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"encoder": "e", "llm": "l", "adapter": "linear", **config}))
    assert MT_PROMPTS == ("auto", "tags", "instruction")
    assert [mt_prompt_used(str(plain), p) for p in MT_PROMPTS] == ["instruction", None, "instruction"]
    assert [mt_prompt_used(str(lora), p) for p in MT_PROMPTS] == [None, None, "instruction"]
    assert mt_prompt_used("cascade", "instruction") is None  # a baseline translates as it does
    monkeypatch.setattr(run, "GROUP_BATCHES", 1)
    calls, real, stop_at = [], run.run_text_mt, [2]

    def killed(system, rows, *args, **kwargs):
        calls.append(len(rows))
        if len(calls) == stop_at[0]:
            raise KeyboardInterrupt
        return real(system, rows, *args, **kwargs)

    monkeypatch.setattr(run, "run_text_mt", killed)
    kwargs = dict(task="srt", options=OPTS, batch_size=1, with_mt=True, placement=CPU, log=lambda *_: None,
                  significance=0)
    with pytest.raises(KeyboardInterrupt):
        run.evaluate({"tiny": str(model_dir)}, manifest, tmp_path / "r", mt_prompt="tags", **kwargs)
    with pytest.raises(LLMSRTError, match=r"tiny.mt.rank0.jsonl: rows an earlier run decoded with other settings "
                                          r"\(mt_prompt: null -> \"instruction\"\)"):
        run.evaluate({"tiny": str(model_dir)}, manifest, tmp_path / "r", mt_prompt="auto", **kwargs)
    calls.clear()
    stop_at[0] = None
    run.evaluate({"tiny": str(model_dir)}, manifest, tmp_path / "r", mt_prompt="tags", **kwargs)
    assert len(calls) == 2 * N  # the text MT goes on: all rows but the one kept (2 N + 1 with a target)


def test_with_mt_on_a_baseline_uses_the_chosen_llm(manifest, tmp_path):
    llm = tiny.llm_dir(tmp_path, init_std=0.3)
    report = run.evaluate({"mt": "mt"}, manifest, tmp_path / "r", task="smt", options=OPTS, batch_size=4,
                          with_mt=True, placement=CPU, llm=str(llm), log=lambda *_: None)
    [s] = report.systems
    hyps = {h.id: h for h in load_results(tmp_path / "r" / "hyps.mt.jsonl")}
    mt = {h.id: h for h in load_results(tmp_path / "r" / "mt.mt.jsonl")}
    # the text-MT system given the gold transcript answers the same with or without the audio
    assert hyps["2-ed"].error is None and hyps["2-ed"].hyp_translation == mt["2-ed"].hyp_translation
    # failed: the ASR rows (the text-MT system has no audio model) and the row without a transcript
    assert [h.error is not None for h in hyps.values()].count(True) == N + 1
    assert s.mt.failed_summary() == f"failed: 1 of {2 * N + 1}"


def test_with_mt_under_the_asr_task_translates_every_direction_of_a_clip(oracle, tmp_path):
    """--task asr transcribes each clip once, but its text MT took only that clip's first row: the eng->zho rows of
    an eng->deu, eng->zho manifest got none, unsaid."""
    oracle["fail_src"] = None
    rows = []
    for i, (sec, f) in enumerate(CLIPS[:2]):
        path = tmp_path / f"c{i}.wav"
        write_wav(path, tiny.tone(sec, f, seed=i))
        rows += [row(f"{i}-ed", str(path), "eng", "deu", sec),
                 row(f"{i}-ez", str(path), "eng", "zho", sec, translation="猫"),
                 row(f"{i}-asr", str(path), "eng", "", sec)]
    write_manifest(tmp_path / "two.jsonl", rows)
    report = run.evaluate({"flaky": "flaky"}, tmp_path / "two.jsonl", tmp_path / "r", task="asr", options=OPTS,
                          batch_size=4, with_mt=True, placement=CPU, log=lambda *_: None)
    assert [h.id for h in load_results(tmp_path / "r" / "hyps.flaky.jsonl")] == ["0-asr", "1-asr"]  # each clip once
    mt = load_results(tmp_path / "r" / "mt.flaky.jsonl")
    assert [h.id for h in mt] == ["0-ed", "0-ez", "1-ed", "1-ez"]  # one per translation row, in manifest order
    assert {(h.src, h.tgt) for h in mt} == {("eng", "deu"), ("eng", "zho")} and not any(h.error for h in mt)
    assert report.systems[0].mt.n_rows == 4


@pytest.mark.long(19)
def test_torchrun_two_ranks_merge_to_the_one_process_report(model_dir, manifest, tmp_path):
    common = ["--model", f"tiny={model_dir}", "--manifest", str(manifest), "--task", "srt", "--batch-size", "1",
              "--max-new-tokens", "8", "--device", "cpu", "--with-mt"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "llm_srt.cli", "evaluate", *common, "--out", str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = run.select_rows(read_manifest(manifest), Task.SRT)  # not the eng ASR rows: no score takes them
    for k in range(2):  # each rank ran its length-bucketed shard of them
        assert f"tiny: {len(run.shard(rows, k, 2))} rows as srt on cpu float32 (rank {k} of 2)" in done.stdout
    assert cli.main(["evaluate", *common, "--out", str(tmp_path / "one")]) == 0
    for name in ("hyps.tiny.jsonl", "mt.tiny.jsonl"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    # the reports the same but for the number of processes they record (float32: outputs do not depend on it)
    two, one = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("two", "one"))
    assert two["decoding"].pop("world_size") == 2 and one["decoding"].pop("world_size") == 1 and two == one
    assert ((tmp_path / "two" / "report.md").read_text().replace(", world_size 2", ", world_size 1")
            == (tmp_path / "one" / "report.md").read_text())
    assert not list((tmp_path / "two").glob("*rank*"))


def test_the_ranks_group_connects_in_minutes_and_waits_for_slow_ranks_in_hours(monkeypatch):
    """evaluate's ranks connect within CONNECT_TIMEOUT (gloo connects every pair of ranks as a group is made: a
    misrouted node hung for GATHER_TIMEOUT, 12 h, before failing); the hand-overs, which wait for a slower rank's
    shard or rank 0's COMET, go through a second group of GATHER_TIMEOUT."""
    import torch.distributed as dist

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: calls.append(("made", timeout)))
    monkeypatch.setattr(dist, "new_group", lambda backend, timeout: calls.append(("group", timeout)) or "long")
    monkeypatch.setattr(dist, "destroy_process_group", lambda group=None: calls.append(("ended", group)))
    monkeypatch.setattr(dist, "gather_object", lambda part, parts, dst, group: calls.append(("gathered", group)))
    with run.rank_group():
        run.gather("rows", 1, 2)
    assert calls == [("made", run.CONNECT_TIMEOUT), ("group", run.GATHER_TIMEOUT), ("gathered", "long"),
                     ("ended", None)]  # the group it made, with every other


def _two_ranks(monkeypatch):
    """A torchrun of two ranks outside torchelastic, its process group and its long-timeout group ("long") faked."""
    import torch.distributed as dist

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: None)
    monkeypatch.setattr(dist, "new_group", lambda backend, timeout: "long")
    monkeypatch.setattr(dist, "destroy_process_group", lambda group=None: None)


def test_under_torchrun_every_rank_stops_on_rank_0s_comet_refusal(oracle, manifest, tmp_path, monkeypatch):
    """Rank 0 alone checked the COMET environment and stopped on its one line; the other ranks went on to the first
    hand-over, which broke as rank 0 exited: a gloo "Connection closed by peer" traceback on each. Rank 0 now hands
    its refusal to every rank (in `rank_group`'s group), and each stops on the same line before any model loads."""
    import torch.distributed as dist

    from llm_srt.evaluate.comet import CometOptions

    sent = []
    _two_ranks(monkeypatch)
    comet = CometOptions(python=str(tmp_path / "no-python"))
    said = f"--comet-python {tmp_path / 'no-python'}: no such file"
    for rank in (0, 1):
        def broadcast(box, src, group):  # rank 0 sends its (result, error, kind); the others receive rank 0's
            assert src == 0 and group == "long"
            if rank == 0:
                sent.append(box[0][1])
            else:
                box[0] = (None, sent[0], LLMSRTError)
        monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
        monkeypatch.setenv("RANK", str(rank))
        with pytest.raises(LLMSRTError, match=re.escape(said)):
            run.evaluate({"flaky": "flaky"}, manifest, tmp_path / "o", task="srt", options=OPTS, placement=CPU,
                         log=lambda *_: None, comet=comet)
        assert len(sent) == 1 and sent[0].startswith(said)  # rank 0 handed its refusal on
    assert oracle["made"] == []


def test_under_torchrun_a_check_of_a_nodes_own_disk_stops_every_rank_on_the_same_line(model_dir, manifest, tmp_path,
                                                                                        monkeypatch):
    """check_models, the results files and the --out checks ran on each rank alone before the first hand-over: a
    model folder missing on one node's disk (an --out that is a file there) stopped that rank alone, and the others
    died in the hand-over on a gloo traceback each. Every rank now hands its refusal on (`on_every_rank`), and each
    stops on the failing rank's line before any hand-over; a results file, read by rank 0 alone, is not looked for
    on the other ranks' disks."""
    import torch.distributed as dist

    said: dict[int, str | None] = {0: None}  # what each rank handed on
    _two_ranks(monkeypatch)

    class HandedOver(Exception):
        """The first hand-over of rows (where a rank that had stopped alone broke the others' gloo connection)."""

    def handed_over(box, src, group):
        raise HandedOver

    monkeypatch.setattr(dist, "broadcast_object_list", handed_over)
    for rank, model in ((1, tmp_path / "not-on-this-node"), (0, model_dir)):  # rank 1's node lacks the folder
        def all_gather(out, obj, group, rank=rank):
            assert group == "long"
            said[rank] = obj
            out[:] = [said.get(k) for k in range(2)]
        monkeypatch.setattr(dist, "all_gather_object", all_gather)
        monkeypatch.setenv("RANK", str(rank))
        with pytest.raises(LLMSRTError, match=r"^(rank 1: )?--model tiny: .*not-on-this-node is neither a baseline"):
            run.evaluate({"tiny": str(model)}, manifest, tmp_path / "o", task="srt", options=OPTS, placement=CPU,
                         log=lambda *_: None)
        assert (said.get(rank, "no hand-over") or "--model tiny: ").startswith("--model tiny: ")  # handed on, heard
    assert said[1] is not None and not (tmp_path / "o").exists()
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj, group: out.__setitem__(slice(None), [None, None]))
    monkeypatch.setenv("RANK", "1")  # a results file on rank 0's disk alone: rank 1 goes on to the hand-over
    with pytest.raises(HandedOver):
        run.evaluate({"old": str(tmp_path / "only-on-node-0" / "hyps.old.jsonl"), "tiny": str(model_dir)}, manifest,
                     tmp_path / "o", task="srt", options=OPTS, placement=CPU, log=lambda *_: None)


def test_a_torchrun_rank_watches_its_launcher_in_one_process_too(monkeypatch):
    """`torchrun --nproc_per_node 1 -m llm_srt.cli evaluate`: rank_group returned at world size 1 before starting the
    watch on the launcher, so the rank decoded on after torchrun's SIGKILL, holding the GPU."""
    from types import SimpleNamespace

    from llm_srt import ranks

    started = []
    monkeypatch.setattr(ranks, "threading", SimpleNamespace(Thread=lambda target, name, daemon: SimpleNamespace(
        start=lambda: started.append(name))))
    monkeypatch.setattr(ranks, "_watching", [])
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    with run.rank_group():
        assert started == ["llm-srt-launcher-watch"] and ranks._watching == [os.getppid()]


def test_every_process_makes_its_own_gpu_the_current_one(oracle, manifest, tmp_path, monkeypatch):
    """What runs on the current GPU (CUDA graphs of --compile, library helpers) must run on the rank's own, not on
    cuda:0 for every rank; and in one process on --device cuda:N's (it was left on cuda:0 until 2026-12-05)."""
    import contextlib

    made_current = []
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    monkeypatch.setattr(run, "rank_group", contextlib.nullcontext)  # no process group: stopped before any

    def stop(*args, **kwargs):  # the first collective, rank 0 reading the manifest
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "from_rank0", stop)
    monkeypatch.setattr(run, "on_every_rank", lambda fn, *args, **kwargs: fn())  # each rank's disk checked: agreed
    gpu1, gpu2 = (device.Placement(torch.device("cuda", i), torch.bfloat16) for i in (1, 2))
    for world, placement in (((1, 2), gpu1), ((0, 1), gpu2), ((1, 2), CPU), ((0, 1), CPU)):
        monkeypatch.setattr(run, "world", lambda: world)
        with pytest.raises(KeyboardInterrupt):
            run.evaluate({"a": "flaky"}, manifest, tmp_path, placement=placement, significance=0)
    assert made_current == [torch.device("cuda", 1), torch.device("cuda", 2)]


def _evaluate_rank(rank: int, world: int, port: int, model_dir: str, manifest: str, out: str, case: str) -> None:
    """One torchrun rank (its environment set by hand) of `run.evaluate`. "skip": rank 1's node cannot read the
    first row's audio (with --skip-bad, its own reading would drop that row); "keep": the journals are not
    removed (a run to build on); "stale": rank 1's hyps journal holds one more row than this run decodes; "nodes":
    each rank's --out on its own node's disk (the same path, another folder here)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if case == "nodes":
        out = str(Path(out) / f"node{rank}")
    if case == "skip" and rank == 1:
        real = run.read_manifest
        run.read_manifest = lambda *a, **k: real(*a, **k)[1:]
    if case == "keep":
        run.remove_journals = lambda *a, **k: None
    if case == "stale" and rank == 1:
        path = Path(out) / run.PARTIAL / "tiny.hyps.rank1.jsonl"
        last = json.loads(path.read_text().splitlines()[-1])
        with open(path, "a") as fh:
            fh.write(json.dumps({**last, "row": "0" * 24, "forms": [["1" * 24, None], ["2" * 24, None]],
                                 "batch": ["stale", 1]}) + "\n")  # (a batch of its own: one line of `last`'s would
            #   cut that batch short, read back as none of its rows); a row of another manifest: each form of its audio
            #   path another digest, `journal.row_digests`
    run.evaluate({"tiny": model_dir}, manifest, out, task="srt", options=OPTS, batch_size=1, skip_bad=True,
                 placement=CPU, log=lambda *_: None)


@pytest.mark.slow  # four 2-rank runs (78 s); make test: test_torchrun_two_ranks_merge_to_the_one_process_report
@pytest.mark.long(20)
def test_every_rank_decodes_the_rows_rank_0_read_and_journals_go_only_when_every_rank_is_done(
        model_dir, manifest, tmp_path):
    """Under torchrun rank 0 reads the manifest and every rank shards its rows: a rank that read fewer (a file its
    node cannot read, --skip-bad) would decode some rows twice and others never. The journals are removed only when
    no rank's journal holds rows this run did not decode, by
    every node on its own disk."""
    import socket

    import torch.multiprocessing as mp

    def spawn(out, case):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        mp.spawn(_evaluate_rank, args=(2, port, str(model_dir), str(manifest), str(out), case), nprocs=2, join=True)

    spawn(tmp_path / "two", "skip")
    run.evaluate({"tiny": str(model_dir)}, manifest, tmp_path / "one", task="srt", options=OPTS, batch_size=1,
                 placement=CPU, log=lambda *_: None)
    two, one = (load_results(tmp_path / d / "hyps.tiny.jsonl") for d in ("two", "one"))
    assert [r.id for r in two] == [r.id for r in one] and len(one) == N_SRT  # each scored row once, none missing
    spawn(tmp_path / "kept", "keep")
    assert len(list((tmp_path / "kept" / run.PARTIAL).glob("tiny.hyps.rank*.jsonl"))) == 2
    spawn(tmp_path / "kept", "stale")
    assert len(list((tmp_path / "kept" / run.PARTIAL).glob("tiny.hyps.rank*.jsonl"))) == 2  # rank 1's extra row
    spawn(tmp_path / "nodes", "nodes")  # each node removes its own ranks' journals once rank 0 has written
    assert (tmp_path / "nodes" / "node0" / "results.json").is_file()
    assert not (tmp_path / "nodes" / "node0" / run.PARTIAL).exists()
    assert not (tmp_path / "nodes" / "node1" / run.PARTIAL).exists()


def test_bfloat16_on_the_cpu(model_dir, manifest, tmp_path, monkeypatch):
    """The GPU's default dtype, on the CPU: the speech model loads in bfloat16 and every row runs."""
    loaded = []
    real = systems.load_system
    monkeypatch.setattr(systems, "load_system", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    assert cli.main(["evaluate", "--model", f"tiny={model_dir}", "--manifest", str(manifest), "--out", str(tmp_path),
                     "--device", "cpu", "--dtype", "bfloat16", "--max-new-tokens", "8", "--task", "s2tt"]) == 0
    [system] = loaded
    assert system.placement == device.resolve("cpu", "bfloat16")
    assert next(system.model.llm.parameters()).dtype == torch.bfloat16
    data = json.loads((tmp_path / "results.json").read_text())["systems"]["tiny"]
    assert data["n_failed"] == 0 and data["n_rows"] == N_ROWS


@pytest.mark.cuda
def test_on_cuda_in_bfloat16(model_dir, manifest, tmp_path):
    report = run.evaluate({"tiny": str(model_dir)}, manifest, tmp_path, task="srt", options=OPTS, batch_size=4,
                          with_mt=True, placement=device.resolve("cuda", "bfloat16"), log=print)
    [s] = report.systems
    assert s.failed_summary() == f"failed: 0 of {N_ROWS}" and set(s.bleu) == {("eng", "deu"), ("deu", "eng"),
                                                                               ("eng", "zho")}
    assert [r.id for r in s.mt.failed] == ["9-ez"]  # the row without a transcript; every other MT row ran on the GPU


def test_cascade_runs_the_chosen_whisper_and_llm_and_its_llm_is_the_mt(manifest, tmp_path):

    whisper, llm = tiny.whisper_lid_dir(tmp_path), tiny.llm_dir(tmp_path, init_std=0.3)
    assert cli.main(["evaluate", "--model", "cascade", "--manifest", str(manifest), "--out", str(tmp_path / "r"),
                     "--task", "srt", "--max-new-tokens", "8", "--batch-size", "4", "--with-mt", "--device", "cpu",
                     "--whisper", str(whisper), "--llm", str(llm)]) == 0
    data = json.loads((tmp_path / "r" / "results.json").read_text())["systems"]["cascade"]
    hyps = {h.id: h for h in load_results(tmp_path / "r" / "hyps.cascade.jsonl")}
    mt = {h.id: h for h in load_results(tmp_path / "r" / "mt.cascade.jsonl")}
    cascade = load_system("cascade", CPU, whisper=str(whisper), llm=str(llm))
    [heard] = cascade.asr.decode([tiny.tone(1.6, 650, seed=1)], ["eng"], "transcribe", OPTS)
    assert heard and hyps["1-ed"].hyp_transcript == heard  # --whisper's model heard it
    [gold] = cascade.mt.translate(["a cat sat"], ["deu"], ["eng"], OPTS)
    assert mt["1-de"].hyp_translation == gold and mt["1-de"].error is None  # --llm's model translated the gold text
    assert (data["n_failed"], data["n_rows"]) == (0, N_SRT) and (data["mt"]["n_failed"], data["mt"]["n_rows"]) == (
        1, 2 * N + 1)


def test_several_systems_are_compared_with_the_first(oracle, manifest, tmp_path, monkeypatch):
    oracle["fail_clip"] = 2  # flaky loses clip 2's eng rows too (its deu rows score nothing either way)
    monkeypatch.setitem(systems.SYSTEMS, "gold", lambda name, placement, **_: Oracle(placement))
    report = run.evaluate({"flaky": "flaky", "gold": "gold"}, manifest, tmp_path, task="srt", options=OPTS,
                          batch_size=4, placement=CPU, log=lambda *_: None, significance=200)
    [(name, first, c)] = report.comparisons
    assert (name, first) == ("gold", "flaky") and c.samples == 200
    from llm_srt.evaluate.significance import paired_bootstrap
    again = paired_bootstrap(load_results(tmp_path / "hyps.gold.jsonl"), load_results(tmp_path / "hyps.flaky.jsonl"),
                             samples=200)
    assert again == c and c.delta > 0  # the gold system lost no rows
    assert json.loads((tmp_path / "results.json").read_text())["systems"]["gold"]["significance"]["resamples"] == 200
    # transcripts too, per source language: flaky lost every deu row (empty transcripts), gold none
    by_lang = {lang: (name, vs, c) for name, vs, lang, c in report.transcript_comparisons}
    assert set(by_lang) == {"eng", "deu"} and all(v[:2] == ("gold", "flaky") for v in by_lang.values())
    deu = by_lang["deu"][2]
    # every clip's reference transcript is "a cat sat", but each clip is its own sentence in the manifest: the
    # units are the manifest's sentences, as the BLEU test's (one clip's rows in several targets stay one)
    assert (deu.a, deu.b, deu.sentences) == (0.0, 100.0, len({r.sentence_id for r in read_manifest(manifest)
                                                                if r.src_lang == "deu"}))
    assert deu.verdict(higher_is_better=False) == "holds"
    scores = {s.name: s.asr for s in report.systems}
    assert (by_lang["eng"][2].a, by_lang["eng"][2].b) == pytest.approx((scores["gold"]["eng"].score,
                                                                        scores["flaky"]["eng"].score))
    none = run.evaluate({"flaky": "flaky", "gold": "gold"}, manifest, tmp_path / "n", task="srt", options=OPTS,
                        batch_size=4, placement=CPU, log=lambda *_: None, significance=0)
    assert none.comparisons == () and none.transcript_comparisons == ()
    lines = []  # several systems on ASR rows only: WER per system and its test, no BLEU test (it used to stop)
    asr = run.evaluate({"flaky": "flaky", "gold": "gold"}, manifest, tmp_path / "a", task="asr", options=OPTS,
                       batch_size=4, placement=CPU, log=lines.append, significance=200)
    assert asr.comparisons == () and all(s.asr for s in asr.systems) and not asr.directions
    assert "no rows with a reference translation: no paired BLEU test between the systems" in lines
    assert [(n, vs, lang) for n, vs, lang, _ in asr.transcript_comparisons] == [("gold", "flaky", "deu"),
                                                                              ("gold", "flaky", "eng")]
    #   (in the order of the rows run: clip 0's deu->eng row, then its eng ASR row)
    assert "transcript WER / CER, lower is better" in "\n".join(lines)
    three = run.evaluate({"flaky": "flaky", "gold": "gold", "gold2": "gold"}, manifest, tmp_path / "3", task="asr",
                         options=OPTS, batch_size=4, placement=CPU, log=lambda *_: None, significance=200)
    assert [(n, vs, lang) for n, vs, lang, _ in three.transcript_comparisons] == [
        ("gold", "flaky", "deu"), ("gold2", "flaky", "deu"), ("gold", "flaky", "eng"), ("gold2", "flaky", "eng")]
    loaded = []  # too few resamples is an error before any system is loaded or decoded, not after
    monkeypatch.setitem(systems.SYSTEMS, "gold", lambda name, placement, **_: loaded.append(name) or Oracle(placement))
    with pytest.raises(LLMSRTError, match="at least 20 are needed"):
        run.evaluate({"flaky": "flaky", "gold": "gold"}, manifest, tmp_path / "f", task="srt", options=OPTS,
                     batch_size=4, placement=CPU, log=lambda *_: None, significance=5)
    assert loaded == [] and not (tmp_path / "f").exists()


def test_transcripts_are_compared_with_the_first_system_that_wrote_them():
    """A direct S2TT system first writes no transcripts: the WER tests take the first that does. A system that
    transcribed other rows is left out, and why is kept in the report, never an error at the end of a long
    evaluation."""
    from llm_srt.evaluate.report import build_report

    def rows(hyp, n=6, transcribe=True):
        return [UtteranceResult(f"{i}", "eng", "deu", hyp if transcribe else None, "eine Katze",
                                f"a cat number {i} sat", "eine Katze", task="srt" if transcribe else "s2tt")
                for i in range(n)]

    systems = {"direct": rows("", transcribe=False), "a": rows("a cat sat"), "b": rows("a cat number sat"),
               "c": rows("a cat", n=5)}
    report = compare.compare_systems(build_report(systems), {k: [v] for k, v in systems.items()}, 100)
    found = report.transcript_comparisons
    assert [(n, vs, lang) for n, vs, lang, _ in found] == [("b", "a", "eng")]
    assert found[0][3].delta < 0 and found[0][3].sentences == 6
    assert [(n, vs) for n, vs, _ in report.comparisons] == [("a", "direct"), ("b", "direct")]
    assert report.untested_lines == [
        "no paired BLEU test of c against direct: the two systems were not run on the same test rows (1 differ, e.g. "
        "'5'); compare results of one evaluation",
        "no paired eng transcript test of c against a: the two systems did not transcribe the same test rows "
        "(1 differ, e.g. '5'); compare results of one evaluation"]


def test_a_one_sentence_evaluation_keeps_its_report_without_paired_tests():
    """Too few test sentences for any test (here one: every resample the same): each paired test (BLEU,
    transcripts, COMET) is recorded as not possible, and the report is kept, never lost at the end of the
    evaluation."""
    from llm_srt.evaluate.report import build_report

    def rows(hyp, comet):
        return [UtteranceResult("0", "eng", "deu", hyp, "eine Katze", "a cat sat", "eine Katze", task="srt",
                                comet=comet)]

    systems = {"a": rows("a cat sat", 80.0), "b": rows("a dog", 40.0)}
    report = compare.compare_systems(build_report(systems), {k: [v] for k, v in systems.items()}, 100, scored=systems)
    lines = report.untested_lines
    assert not report.comparisons and not report.transcript_comparisons and not report.comet_comparisons
    assert [line.split(":")[0] for line in lines] == ["no paired BLEU test of b against a",
                                                       "no paired eng transcript test of b against a",
                                                       "no paired COMET test of b against a"]
    assert all("at least 6 test sentences to draw from, not 1" in line for line in lines)


def test_systems_of_several_runs_are_pooled_and_tested_run_by_run(tmp_path):
    """--model NAME=RUN1.jsonl,RUN2.jsonl: one system of two runs (e.g. two training seeds), scored on both runs'
    hypotheses together and tested against another two-run system with `paired_bootstrap_runs`; a one-run system
    cannot be paired with it, which the report says, not an error."""
    from llm_srt.evaluate.significance import paired_bootstrap_runs, paired_error_rates_runs

    def write(name, keep):
        words = [[f"s{i}", *(f"w{j}" for j in range(8))] for i in range(12)]  # sentence i: 9 words
        rows = [UtteranceResult(f"{i}", "eng", "deu", " ".join(w[:keep(i)]), " ".join(w[1:keep(i)]), " ".join(w),
                                " ".join(w[1:]), task="srt") for i, w in enumerate(words)]
        path = tmp_path / f"hyps.{name}.jsonl"
        path.write_text("".join(json.dumps(vars(r)) + "\n" for r in rows))
        return str(path)

    a = [write("a1", lambda i: 8 - i % 3), write("a2", lambda i: 8 - i % 2)]
    b = [write("b1", lambda i: 8 - i % 4), write("b2", lambda i: 6)]
    lines = []
    models = run.parse_models([f"A={','.join(a)}", ",".join(b), write("c", lambda i: 7)])
    assert list(models) == ["A", "b1", "c"]  # a list of files is named after its first, as one file is
    report = run.evaluate(models, None, tmp_path / "r", log=lines.append, significance=100)
    [(name, vs, c)] = report.comparisons
    runs = [[load_results(p) for p in paths] for paths in (b, a)]
    assert (name, vs) == ("b1", "A") and c == paired_bootstrap_runs(*runs, samples=100)
    [(name, vs, lang, t)] = report.transcript_comparisons
    assert t == paired_error_rates_runs(*runs, samples=100)["eng"] and t.sentences == 12
    assert "no paired BLEU test of c against A: 1 runs against 2 (runs are paired one to one)" in report.untested_lines
    assert "no paired BLEU test of c against A: 1 runs" in "\n".join(lines)  # printed under the tables
    assert not report.other_rows  # the same rows, in two runs or one
    assert report.systems[0].n_rows == 24  # both runs' rows, pooled
    assert report.systems[0].average() == pytest.approx(c.b)


def test_results_files_are_scored_again_without_decoding(oracle, manifest, tmp_path, monkeypatch):
    """--model NAME=hyps.NAME.jsonl: an earlier evaluation's results, read and compared, not run (no manifest
    needed), in the order given, beside systems that are run."""
    monkeypatch.setitem(systems.SYSTEMS, "gold", lambda name, placement, **_: Oracle(placement))
    first = run.evaluate({"flaky": "flaky", "gold": "gold"}, manifest, tmp_path / "a", task="srt", options=OPTS,
                         batch_size=4, placement=CPU, log=lambda *_: None, significance=200)
    made = len(oracle["made"])
    again = run.evaluate(run.parse_models([str(tmp_path / "a" / "hyps.flaky.jsonl"),
                                           f"gold={tmp_path / 'a' / 'hyps.gold.jsonl'}"]),
                         None, tmp_path / "b", options=OPTS, placement=CPU, log=lambda *_: None, significance=200)
    assert len(oracle["made"]) == made  # nothing was loaded or run
    assert again.comparisons == first.comparisons and again.transcript_comparisons == first.transcript_comparisons
    assert first.decoding["tasks"] == {"flaky": "srt", "gold": "srt"} and again.decoding is None  # none decoded
    assert "decoding" not in json.loads((tmp_path / "b" / "results.json").read_text())
    assert [s.name for s in again.systems] == ["flaky", "gold"] and (tmp_path / "b" / "hyps.gold.jsonl").is_file()
    mixed = run.evaluate({"gold": str(tmp_path / "a" / "hyps.gold.jsonl"), "flaky": "flaky"}, manifest,
                         tmp_path / "c", task="srt", options=OPTS, batch_size=4, placement=CPU, log=lambda *_: None,
                         significance=200)
    assert len(oracle["made"]) == made + 1 and [s.name for s in mixed.systems] == ["gold", "flaky"]
    assert mixed.decoding["tasks"] == {"flaky": "srt"}  # the file's system ran as its own report says
    [(name, vs, c)] = mixed.comparisons
    assert (name, vs) == ("flaky", "gold") and c.delta == -first.comparisons[0][2].delta
    with pytest.raises(LLMSRTError, match="--manifest is needed to run flaky"):
        run.evaluate({"gold": str(tmp_path / "a" / "hyps.gold.jsonl"), "flaky": "flaky"}, None, tmp_path / "d",
                     placement=CPU, log=lambda *_: None)
    with pytest.raises(LLMSRTError, match="no such results file"):
        run.evaluate({"x": str(tmp_path / "missing.jsonl")}, None, tmp_path / "e", placement=CPU, log=print)


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_1_and_an_out_that_is_a_file_are_errors_before_decoding(limit, oracle, manifest, tmp_path):
    """--limit 0 scored every row and --limit -1 all but the last, without a word; --out naming a file was a
    traceback (FileExistsError)."""
    with pytest.raises(LLMSRTError, match=f"--limit {limit}: give the number of rows to score, 1 or more"):
        run.evaluate({"flaky": "flaky"}, manifest, tmp_path / "o", task="srt", options=OPTS, limit=limit,
                     placement=CPU, log=lambda *_: None)
    (tmp_path / "report.txt").write_text("x")
    with pytest.raises(LLMSRTError, match="--out .*report.txt: a file, not a folder"):
        run.evaluate({"flaky": "flaky"}, manifest, tmp_path / "report.txt", task="srt", options=OPTS,
                     placement=CPU, log=lambda *_: None)
    assert oracle["made"] == [] and not (tmp_path / "o").exists()
    one = run.evaluate({"flaky": "flaky"}, manifest, tmp_path / "one", task="srt", options=OPTS, limit=1,
                       placement=CPU, log=lambda *_: None)
    assert one.systems[0].n_rows == 1


@pytest.mark.parametrize("batch_size", ["0", "-2"])
def test_a_batch_size_below_1_is_a_one_line_error_before_any_model_loads(batch_size, oracle, manifest, tmp_path,
                                                                         capsys):
    """--batch-size 0 was a traceback (ValueError in `groups`); -2 loaded the model, decoded nothing and died with
    a KeyError."""
    assert cli.main(["evaluate", "--model", "flaky", "--manifest", str(manifest), "--out", str(tmp_path / "o"),
                     "--device", "cpu", "--batch-size", batch_size]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"llm-srt evaluate: error: --batch-size {batch_size}: ") and err.count("\n") == 1
    assert oracle["made"] == [] and not (tmp_path / "o").exists()


def test_an_out_holding_a_results_file_a_model_reads_is_refused_before_decoding(oracle, manifest, tmp_path):
    """--out the folder of a --model's results file: evaluate rewrote the file it read (its COMET scores dropped;
    several runs pooled into it under ids '1/...', so the same command scored other rows the next time), and a
    decoded system of that name wrote over it. Refused, before any decoding, the file byte for byte as it was."""
    out = tmp_path / "r"
    run.evaluate({"flaky": "flaky"}, manifest, out, task="srt", options=OPTS, batch_size=4, placement=CPU,
                 log=lambda *_: None, significance=0)
    made = len(oracle["made"])
    rows = "".join(json.dumps(vars(replace(r, comet=0.5))) + "\n" for r in load_results(out / "hyps.flaky.jsonl"))
    inputs = {"hyps": out / "hyps.flaky.jsonl", "mt": out / "mt.flaky.jsonl", "seed2": tmp_path / "seed2.jsonl",
              "journal": out / run.PARTIAL / "flaky.hyps.rank0.jsonl"}
    inputs["journal"].parent.mkdir()
    for path in inputs.values():
        path.write_text(rows)
    (tmp_path / "link").symlink_to(out)
    cases = [({"flaky": str(inputs["hyps"])}, out, False),  # read, then rewritten without its COMET scores
             ({"flaky": f"{inputs['hyps']},{inputs['seed2']}"}, out, False),  # rewritten with both runs pooled
             ({"flaky": str(inputs["hyps"])}, tmp_path / "link", False),  # the same folder by another path
             ({"flaky": "flaky", "old": str(inputs["hyps"])}, out, False),  # decoded over the file "old" reads
             ({"flaky": "flaky", "old": str(inputs["mt"])}, out, True),  # --with-mt writes mt.flaky.jsonl
             ({"flaky": "flaky", "old": str(inputs["journal"])}, out, False)]  # a journal, removed at the end
    for models, where, with_mt in cases:
        read = next(p for p in inputs.values() if str(p) in models.get("old", models["flaky"]))
        with pytest.raises(LLMSRTError, match=rf"^--out {re.escape(str(where))}: this evaluation writes \S+, "
                                              rf"which --model {'old' if 'old' in models else 'flaky'} reads; "
                                              "give another --out$"):
            run.evaluate(models, manifest, where, task="srt", options=OPTS, batch_size=4, placement=CPU,
                         with_mt=with_mt, log=lambda *_: None, significance=0)
        assert read.read_text() == rows, models
    assert len(oracle["made"]) == made  # nothing was loaded or run
    assert all(path.read_text() == rows for path in inputs.values())
    again = run.evaluate({"flaky": f"{inputs['hyps']},{inputs['seed2']}"}, None, tmp_path / "other",
                         log=lambda *_: None, significance=0)  # another --out: scored, the inputs left as they were
    assert again.systems[0].n_rows == 2 * N_SRT and inputs["hyps"].read_text() == rows
    run.evaluate({"flaky": "flaky", "old": str(inputs["hyps"])}, manifest, tmp_path / "other", task="srt",
                 options=OPTS, batch_size=4, placement=CPU, log=lambda *_: None, significance=0)
    assert len(oracle["made"]) == made + 1  # a decoded system writing no file another reads runs as before


def test_a_model_path_with_an_equals_sign_is_a_path(tmp_path, monkeypatch):
    """`runs/lr=1e-4/srt/final` was read as NAME=PATH ({'runs/lr': '1e-4/srt/final'}): text before the first '='
    names the system only when it has no path separator, and a spec that is an existing path is that path."""
    monkeypatch.chdir(tmp_path)
    assert run.parse_models(["runs/lr=1e-4/srt/final"]) == {"srt": "runs/lr=1e-4/srt/final"}
    assert run.parse_models(["a=runs/lr=1e-4/srt/final"]) == {"a": "runs/lr=1e-4/srt/final"}
    assert run.parse_models(["r/lr=1/hyps.x.jsonl,r/lr=2/hyps.x.jsonl"]) == {"x": "r/lr=1/hyps.x.jsonl,"
                                                                                   "r/lr=2/hyps.x.jsonl"}
    assert run.parse_models(["lr=1e-4"]) == {"lr": "1e-4"}  # no such folder here: NAME=PATH
    (tmp_path / "lr=1e-4").mkdir()
    assert run.parse_models(["lr=1e-4"]) == {"lr=1e-4": "lr=1e-4"}  # the folder here
    assert run.parse_models(["cur=runs/a/final", "cascade"]) == {"cur": "runs/a/final", "cascade": "cascade"}
    # a name may hold '/' (README's "w/o SRT"), there or not yet; files named with '=' here are paths
    assert run.parse_models(["w/o SRT=runs/embedded/smt/final"]) == {"w/o SRT": "runs/embedded/smt/final"}
    (tmp_path / "runs" / "b").mkdir(parents=True)
    assert run.parse_models(["w/o SMT=runs/b", "x/y=cascade"]) == {"w/o SMT": "runs/b", "x/y": "cascade"}
    for name in ("lr=1.jsonl", "lr=2.jsonl"):
        (tmp_path / name).write_text("")
    assert run.parse_models(["lr=1.jsonl,lr=2.jsonl"]) == {"lr=1": "lr=1.jsonl,lr=2.jsonl"}
    assert run.parse_models(["a=lr=1.jsonl,lr=2.jsonl"]) == {"a": "lr=1.jsonl,lr=2.jsonl"}


def test_a_results_file_with_an_unknown_language_is_refused_before_decoding(oracle, manifest, tmp_path):
    """A hand-made results file's source "en" (for "eng") made its WER/CER vanish from the report without a word."""
    rows = [UtteranceResult(f"r{i}", "en", "deu", "this is bad", "das ist gut", "this is good", "das ist gut",
                            task="srt") for i in range(3)]
    path = tmp_path / "hyps.hand.jsonl"
    path.write_text("".join(json.dumps(vars(r)) + "\n" for r in rows))
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(path))}: row 'r0': unknown language code 'en': "):
        run.evaluate({"flaky": "flaky", "hand": str(path)}, manifest, tmp_path / "o", task="srt", options=OPTS,
                     placement=CPU, log=lambda *_: None)
    assert oracle["made"] == []


def test_an_empty_results_file_is_refused_before_decoding(oracle, manifest, tmp_path, capsys):
    """An empty hyps file (a wrong path's, one cut to nothing) was scored as a system of no rows: alone, a report
    of "failed: 0 of 0" and exit status 1 with nothing said; beside a decoded system, its tests left out."""
    good = tmp_path / "hyps.good.jsonl"
    good.write_text(json.dumps(vars(UtteranceResult("r0", "eng", "deu", None, "das", None, "das"))) + "\n")
    empty = tmp_path / "hyps.empty.jsonl"
    empty.write_text("\n")
    for models in ({"empty": str(empty)}, {"flaky": "flaky", "empty": str(empty)},
                   {"runs": f"{good},{empty}"}):
        with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(empty))}: no result rows in it \(an empty file\)"):
            run.evaluate(models, manifest, tmp_path / "o", task="srt", options=OPTS, placement=CPU,
                         log=lambda *_: None)
    assert oracle["made"] == [] and not (tmp_path / "o").exists()
    assert cli.main(["evaluate", "--model", str(empty), "--out", str(tmp_path / "o")]) != 0
    assert "no result rows" in capsys.readouterr().err


def test_comet_runs_where_evaluate_was_told_to():
    """`evaluate --device cpu --comet` on a GPU host ran COMET on the GPU (the bridge takes one whenever it sees
    CUDA): a CPU placement now gives COMET no GPU unless --comet-gpus asks for some; cuda:N, that GPU alone."""
    from llm_srt.evaluate.comet import CometOptions

    gpu3 = device.Placement(torch.device("cuda", 3), torch.bfloat16)
    assert run.comet_options(CometOptions(), CPU) == CometOptions(gpus=0)
    assert run.comet_options(CometOptions(gpus=1), CPU) == CometOptions(gpus=1)  # asked for: kept
    assert run.comet_options(CometOptions(), gpu3) == CometOptions(device="cuda:3")
    assert run.comet_options(CometOptions(gpus=1), gpu3) == CometOptions(gpus=1, device="cuda:3")


def test_a_paired_test_of_rows_scored_against_other_references_is_left_out_with_why():
    """Each system is scored against its own rows' references: hyps files written before and after the references
    were fixed gave confident BLEU, WER and COMET verdicts on nothing. Each such test is logged and left out now;
    the report keeps every system's scores and says why."""
    from llm_srt.evaluate.report import build_report

    def rows(hyp, ref_transcript="a cat sat", ref_translation="eine Katze", comet=0.5):
        return [UtteranceResult(f"{i}", "eng", "deu", f"{hyp} {i}", f"{hyp} {i}", f"{ref_transcript} {i}",
                                f"{ref_translation} {i}", task="srt", comet=comet + i / 100, sentence=f"{i}")
                for i in range(8)]

    systems = {"a": rows("eine Katze"), "b": rows("a cat sat", ref_transcript="a cat sat fixed",
                                                  ref_translation="a cat sat")}
    report = compare.compare_systems(build_report(systems), {k: [v] for k, v in systems.items()}, 100, scored=systems)
    lines = report.untested_lines
    assert not report.comparisons and not report.transcript_comparisons and not report.comet_comparisons
    assert [line.split(": the")[0] for line in lines] == ["no paired BLEU test of b against a",
                                                          "no paired eng transcript test of b against a",
                                                          "no paired COMET test of b against a"]
    assert all("not scored against the same references (row '0': the reference " in line for line in lines)
    assert "transcript differs" in lines[1] and "translation differs" in lines[2]
    same = {"a": systems["a"], "b": rows("a cat sat")}
    report = compare.compare_systems(build_report(same), {k: [v] for k, v in same.items()}, 100, scored=same)
    assert len(report.comparisons) == len(report.transcript_comparisons) == len(report.comet_comparisons) == 1


def test_systems_scored_on_other_rows_are_marked_and_their_left_out_test_says_why(tmp_path):
    """Two results files on other rows of the same directions (B lacks half of fra->deu) were tables side by side
    with nothing marked (A over 24 rows, B over 18), and the paired test they cannot have was in the log alone: B's
    BLEU is marked "(other rows)" with a line naming the direction, and the test left out is named with why, in the
    terminal table, report.md and results.json; A, and a system on A's rows, are not marked."""
    def write(name, rows):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(vars(r)) + "\n" for r in rows))
        return str(path)

    ref = "die Katze sitzt heute auf der Matte"
    rows = [UtteranceResult(f"{i}-{src}", src, "deu", None, ref if i % 2 else "der Hund sitzt auf der Matte", None,
                            ref, task="s2tt", sentence=f"{i}") for i in range(12) for src in ("eng", "fra")]
    fewer = [r for r in rows if r.src == "eng" or int(r.sentence) < 6]
    lines = []
    report = run.evaluate({"A": write("A", rows), "B": write("B", fewer), "C": write("C", rows)}, None,
                          tmp_path / "out", log=lines.append, significance=100)
    assert report.other_rows == {"B": {("fra", "deu"): 6}}
    assert [(name, vs) for name, vs, _ in report.comparisons] == [("C", "A")]
    why = "no paired BLEU test of B against A: the two systems were not run on the same test rows (6 differ"
    table = "\n".join(lines)
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    for text in (table, md):
        assert "Paired tests left out" in text and why in text.split("Paired tests left out")[1]
        assert "B was scored on other rows than A in fra→deu (6 rows in only one of them)" in text
    summary = {line.split(" | ")[0]: line.split(" | ")[1] for line in md.split("\n\n")[1].splitlines()[2:]}
    avg = {s.name: f"{s.average():.1f}" for s in report.systems}
    assert (summary["| A"], summary["| B"], summary["| C"]) == (avg["A"], f"{avg['B']} (other rows)", avg["C"])
    data = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))["systems"]
    assert data["B"]["other_rows"] == {"compared_with": "A", "rows_in_only_one": {"fra-deu": 6}}
    assert data["B"]["significance_left_out"][0]["test"] == "BLEU"
    assert why.split(": ", 1)[1] in data["B"]["significance_left_out"][0]["reason"]
    assert not {"other_rows", "significance_left_out"} & (set(data["A"]) | set(data["C"]))


def test_skip_bad_keeps_a_row_whose_audio_is_missing_as_a_failed_row(oracle, tmp_path, capsys, recwarn):
    """--skip-bad dropped a test row whose audio file was missing: the report said "failed: 0 of 7" of an 8-row test
    set and BLEU was over 7 rows, while a file that does not decode was a failed row. Both are failed rows now,
    with the audio's problem as their error, scored as empty hypotheses; a row that cannot be scored at all (an
    unknown language) is still skipped, said in one line on stderr (it was Python's UserWarning, with the line of
    code that read the manifest)."""
    oracle["fail_src"] = None
    rows = []
    for i, (sec, f) in enumerate(CLIPS):
        write_wav(tmp_path / f"c{i}.wav", tiny.tone(sec, f, seed=i))
        rows.append(row(f"{i}-ed", str(tmp_path / f"c{i}.wav"), "eng", "deu", sec))
    write_manifest(tmp_path / "test.jsonl", rows)
    with open(tmp_path / "test.jsonl", "a") as f:
        f.write(json.dumps({**vars(rows[0]), "id": "bad", "src_lang": "xxx"}) + "\n")
    (tmp_path / "c2.wav").unlink()
    report = run.evaluate({"flaky": "flaky"}, tmp_path / "test.jsonl", tmp_path / "out", task="srt", options=OPTS,
                          batch_size=4, placement=CPU, log=lambda *_: None, skip_bad=True, significance=0)
    err = capsys.readouterr().err
    [said] = [line for line in err.splitlines() if "bad rows" in line]
    assert said.startswith(f"llm-srt evaluate: warning: --skip-bad: {tmp_path / 'test.jsonl'}: skipped 1 bad rows "
                           f"({tmp_path / 'test.jsonl'}:{N + 1}: src_lang 'xxx' is not a known language")
    assert "UserWarning" not in err and not [w for w in recwarn if "bad rows" in str(w.message)]  # nor a warning
    [s] = report.systems
    assert s.failed_summary() == f"failed: 1 of {N}" and s.bleu[("eng", "deu")].n == N
    [(uid, error)] = [(r.id, r.error) for r in s.failed]
    assert uid == "2-ed" and error.startswith(f"{tmp_path / 'c2.wav'}: ") and "no such file" in error
    data = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))["systems"]["flaky"]
    assert data["failed_by_direction"] == {"eng-deu": {"failed": 1, "of": N}}
    assert "| flaky | 2-ed | eng→deu |" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_llm_re_points_the_baselines_alone_never_a_model_folder(model_dir, manifest, tmp_path):
    """--llm (the cascade's LLM) also re-pointed every model folder of the same evaluation at it: the trained model
    ran on another LLM of its shape (one warning, exit 0, other hypotheses). A model folder runs on the LLM its
    config.json names, beside a baseline given --llm; the decoded baselines' folders are in results.json."""
    other = tiny.llm_dir(tmp_path, seed=7, init_std=0.3)  # the shape of the model's LLM, other weights
    clip = tiny.tone(1.6, 650, seed=1)
    outs = [load_system(model_dir, CPU, **k).run_batch([Item(clip, "eng", "deu", Task.SRT)], OPTS)
            for k in ({}, {"llm": str(other)})]
    assert outs[0] != outs[1]  # re-pointed, the model writes other text (a test of the test)

    def hyps(out):
        return [(h.id, h.hyp_transcript, h.hyp_translation) for h in load_results(out / "hyps.tiny.jsonl")]

    own = run.evaluate({"tiny": str(model_dir)}, manifest, tmp_path / "own", task="srt", options=OPTS, batch_size=4,
                       limit=6, placement=CPU, log=lambda *_: None)
    both = run.evaluate({"tiny": str(model_dir), "mt": "mt"}, manifest, tmp_path / "both", task="srt", options=OPTS,
                        batch_size=4, limit=6, placement=CPU, llm=str(other), whisper=str(tmp_path / "unused"),
                        log=lambda *_: None, significance=0)  # mt loads no Whisper: --whisper is not its
    assert hyps(tmp_path / "both") == hyps(tmp_path / "own")
    assert not {"whisper", "llm"} & set(own.decoding)  # no baseline decoded
    assert both.decoding["llm"] == str(other.resolve()) and "whisper" not in both.decoding
    assert json.loads((tmp_path / "both" / "results.json").read_text())["decoding"]["llm"] == str(other.resolve())
    assert run.baseline_folders("cascade", "w", "l") == {"whisper": "w", "llm": "l"}
    assert (run.baseline_folders("whisper", "w", "l"), run.baseline_folders("mt", "w", "l")) == ({"whisper": "w"},
                                                                                                  {"llm": "l"})
    assert run.baseline_folders(str(model_dir), "w", "l") == {}


def test_a_model_that_is_neither_a_baseline_nor_a_model_folder_is_refused_before_any_decoding(
        oracle, model_dir, manifest, tmp_path, monkeypatch):
    """A mistyped --model path (or baseline name, read as a path) was found when its turn came, after every earlier
    system had decoded (hours at paper scale), and no report was written; so was a baseline's missing --whisper."""
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "runs" / "srt" / "fnal"
    cases = [({"a": "flaky", "b": str(missing)}, {},
              rf"^--model b: {re.escape(str(missing))} is neither a baseline \(whisper, mt, cascade, flaky\) nor a "
              "folder; give a model folder written by training or by `llm-srt convert`, or a baseline's name$"),
             ({"a": "flaky", "casade": "casade"}, {},
              rf"^--model casade: casade is neither a baseline .* nor a folder \(a relative path starts at "
              rf"{re.escape(str(tmp_path))}\);"),
             ({"a": "flaky", "b": str(tmp_path)}, {}, r"^--model b: .*: not a SpeechLLM checkpoint \(no config.json\)"),
             ({"a": "flaky", "c": "cascade"}, {"whisper": str(missing), "llm": str(model_dir)},
              rf"^--whisper {re.escape(str(missing))}: no such folder; the cascade baseline \(--model c\) loads its "
              "Whisper from it: give a Hugging Face model folder, or leave --whisper out for the embedded one$")]
    for models, folders, match in cases:
        with pytest.raises(LLMSRTError, match=match):
            run.evaluate(models, manifest, tmp_path / "o", task="srt", options=OPTS, placement=CPU,
                         log=lambda *_: None, **folders)
    assert oracle["made"] == [] and not (tmp_path / "o").exists()  # nothing built, decoded or written
    checkpoint = tiny.trained_folder(model_dir, tmp_path / "checkpoints" / "step-8", None)  # runs/x/checkpoints/..
    (checkpoint / "trainer_state").mkdir()
    (checkpoint / "trainer_state" / "state.json").write_text(json.dumps({"config": {"data": {"tasks": {"srt": 1}}}}))
    run.check_models({"ckpt": str(checkpoint), "mt": "mt"}, str(missing), str(model_dir))  # mt loads no Whisper
    # a baseline before a model folder (Table 3's order) was a TypeError: the baseline's --llm was read as the model
    # folders' re-pointed folders
    config = json.loads((model_dir / "config.json").read_text())
    run.check_models({"c": "cascade", "ckpt": str(checkpoint)}, config["encoder"], config["llm"])
    with pytest.raises(LLMSRTError, match=r"^--model ckpt: the encoder given, .*typo \(not a Hugging Face Whisper "
                                          r"folder: no such folder\)"):
        run.check_models({"c": "cascade", "ckpt": str(checkpoint)}, config["encoder"], config["llm"],
                         encoder=str(tmp_path / "typo"))


def test_limit_takes_a_results_file_to_the_rows_decoded_beside_it(oracle, manifest, tmp_path, monkeypatch):
    """--limit cut the decoded systems' rows alone: a results file beside them was scored whole, and the paired
    test against it left out (other rows). Its rows among the first N manifest rows are scored now (without a
    manifest, each file's first N rows), and a file holding none of them is refused before decoding."""
    monkeypatch.setitem(systems.SYSTEMS, "gold", lambda name, placement, **_: Oracle(placement))
    run.evaluate({"gold": "gold"}, manifest, tmp_path / "a", task="srt", options=OPTS, batch_size=4, placement=CPU,
                 log=lambda *_: None, significance=0)
    gold = tmp_path / "a" / "hyps.gold.jsonl"
    first = [r.id for r in read_manifest(manifest)[:N_ROWS - 1] if not r.is_asr]  # every clip's SRT rows (6
    #   sentences), not 9-ez
    report = run.evaluate({"gold": str(gold), "flaky": "flaky"}, manifest, tmp_path / "b", task="srt", options=OPTS,
                          batch_size=4, limit=N_ROWS - 1, placement=CPU, log=lambda *_: None, significance=100)
    assert [h.id for h in load_results(tmp_path / "b" / "hyps.gold.jsonl")] == first
    assert [s.n_rows for s in report.systems] == [N_SRT - 1] * 2 and not report.untested
    assert [(name, vs) for name, vs, _ in report.comparisons] == [("flaky", "gold")]
    alone = run.evaluate({"gold": str(gold)}, None, tmp_path / "c", limit=5, log=lambda *_: None)
    assert alone.systems[0].n_rows == 5
    assert [h.id for h in load_results(tmp_path / "c" / "hyps.gold.jsonl")] == first[:5]
    elsewhere = tmp_path / "hyps.x.jsonl"
    elsewhere.write_text("".join(json.dumps(vars(replace(r, id=f"x{r.id}"))) + "\n" for r in load_results(gold)))
    made = len(oracle["made"])
    with pytest.raises(LLMSRTError, match=rf"^--limit 3: {re.escape(str(elsewhere))} holds none of the first 3 rows"):
        run.evaluate({"x": str(elsewhere), "flaky": "flaky"}, manifest, tmp_path / "d", task="srt", options=OPTS,
                     limit=3, placement=CPU, log=lambda *_: None)
    assert len(oracle["made"]) == made


def test_an_earlier_evaluations_other_hyps_in_out_are_named_and_kept(oracle, manifest, tmp_path, monkeypatch):
    """A reused --out kept hyps.<system>.jsonl of an earlier evaluation's other systems beside the new report,
    unsaid. They are named (not removed: decoded hypotheses, which another --model may read)."""
    monkeypatch.setitem(systems.SYSTEMS, "gold", lambda name, placement, **_: Oracle(placement))
    out = tmp_path / "r"
    run.evaluate({"flaky": "flaky"}, manifest, out, task="srt", options=OPTS, limit=3, placement=CPU,
                 with_mt=True, log=lambda *_: None)
    lines = []
    run.evaluate({"gold": "gold"}, manifest, out, task="srt", options=OPTS, limit=3, placement=CPU,
                 log=lines.append)
    assert (f"{out} also holds hyps.flaky.jsonl, mt.flaky.jsonl of an earlier evaluation, not of this report (kept: "
            "they are decoded hypotheses); remove them, or give each evaluation its own --out") in lines
    assert (out / "hyps.flaky.jsonl").is_file() and (out / "mt.flaky.jsonl").is_file()
    lines = []  # hyps.flaky.jsonl read by this evaluation: not another's
    run.evaluate({"old": str(out / "hyps.flaky.jsonl"), "gold": "gold"}, manifest, out, task="srt", options=OPTS,
                 limit=3, placement=CPU, log=lines.append, significance=0)
    assert [line.split(" of an")[0] for line in lines if "also holds" in line] == [f"{out} also holds mt.flaky.jsonl"]


def test_a_moved_model_folder_is_refused_before_any_decoding_and_re_pointed_with_encoder_and_model_llm(
        oracle, model_dir, manifest, tmp_path, monkeypatch):
    """A model folder moved to another machine (its config.json's encoder and LLM gone) could not be re-pointed by
    evaluate (--llm is the baselines' now), and its missing LLM was found at its turn, after every earlier system had
    decoded, with no report. It is refused before any system is built, naming --encoder / --model-llm; given them
    (every model folder's, never a baseline's), it decodes as it did unmoved, and a resume on other folders is
    refused as other settings are."""
    folder, moved, config = tiny.moved_folder(model_dir, tmp_path)
    gone = tmp_path / "gone"

    def evaluate(out, models=None, **kwargs):
        return run.evaluate(models or {"a": "flaky", "tiny": str(folder)}, manifest, tmp_path / out, task="srt",
                            options=OPTS, batch_size=2, limit=9, placement=CPU, log=lambda *_: None, significance=0,
                            **kwargs)

    (folder / "config.json").write_text(json.dumps(config | {"llm": str(gone / "llm")}))
    cases = [({}, rf"^--model tiny: {re.escape(str(folder / 'config.json'))} names the llm "
                  rf"{re.escape(str(gone / 'llm'))} \(not a Hugging Face model folder: no such folder\); a model "
                  r"folder moved to another machine: give its llm where it is now \(.*--model-llm of evaluate;"),
             ({"llm": str(moved["llm"])}, "names the llm .* --model-llm of evaluate;"),  # --llm: the baselines' LLM
             ({"model_llm": str(gone / "typo")}, rf"^--model tiny: the llm given, {re.escape(str(gone / 'typo'))} "
                                                 r"\(not a Hugging Face model folder: no such folder\); give its llm "
                                                 "where it is now")]
    for folders, match in cases:
        with pytest.raises(LLMSRTError, match=match):
            evaluate("o", **folders)
    (folder / "config.json").write_text(json.dumps(config | {"encoder": str(gone / "whisper"),
                                                             "llm": str(gone / "llm")}))
    with pytest.raises(LLMSRTError, match=r"names the encoder .*: no such folder\); a model folder moved to another "
                                          r"machine: give its encoder where it is now \(--encoder of translate"):
        evaluate("o", model_llm=str(moved["llm"]))
    with pytest.raises(LLMSRTError, match=r"^--encoder: re-points a model folder's encoder, and no --model to decode "
                                          r"is a model folder; leave it out \(a baseline's folders: --whisper, "):
        evaluate("o", {"a": "flaky"}, encoder=str(moved["encoder"]))
    assert oracle["made"] == [] and not (tmp_path / "o").exists()  # nothing built, decoded or written

    def hyps(out):
        return [(h.id, h.hyp_transcript, h.hyp_translation) for h in load_results(tmp_path / out / "hyps.tiny.jsonl")]

    monkeypatch.setattr(run, "GROUP_BATCHES", 1)  # 3 groups of 2 rows (clips 0-2's SRT rows: 6 of the 9)
    evaluate("own", {"tiny": str(model_dir)})
    stopping = tiny.StopAt(run.run_system, 2)  # a kill after the first group
    monkeypatch.setattr(run, "run_system", stopping)
    re_pointed = {"encoder": str(moved["encoder"]), "model_llm": str(moved["llm"])}
    with pytest.raises(KeyboardInterrupt):
        evaluate("moved", {"tiny": str(folder)}, **re_pointed)
    other = tiny.llm_dir(tmp_path, seed=7, init_std=0.3)  # the shape of the model's LLM, other weights
    with pytest.raises(LLMSRTError, match=r"other settings \(llm\."):
        evaluate("moved", {"tiny": str(folder)}, **(re_pointed | {"model_llm": str(other)}))
    report = evaluate("moved", {"tiny": str(folder)}, **re_pointed)  # goes on from the journal
    assert len(stopping.calls) == 2 + 2 and hyps("moved") == hyps("own")  # the 2 rows of the first group kept: 4 of 6 to go
    assert {k: report.decoding[k] for k in ("encoder", "model_llm")} == {k: str(Path(v).resolve())
                                                                         for k, v in re_pointed.items()}


def test_limit_with_a_manifest_keeps_a_results_files_rows_among_the_first_n_decoded_beside_it_or_not(
        manifest, tmp_path, monkeypatch):
    """--limit with --manifest but only results files kept each file's first N rows, and beside a decoded system
    its rows among the first N manifest rows: under --task asr (one row per clip and source language: two of each
    clip's three) other rows. The manifest is read for --limit whenever given (its audio not checked: nothing is
    decoded from it)."""
    monkeypatch.setitem(systems.SYSTEMS, "gold", lambda name, placement, **_: Oracle(placement))
    run.evaluate({"gold": "gold"}, manifest, tmp_path / "a", task="asr", options=OPTS, batch_size=4, placement=CPU,
                 log=lambda *_: None, significance=0)
    old = str(tmp_path / "a" / "hyps.gold.jsonl")
    beside = run.evaluate({"gold": "gold", "old": old}, manifest, tmp_path / "b", task="asr", options=OPTS,
                          batch_size=4, limit=6, placement=CPU, log=lambda *_: None, significance=0)
    elsewhere = tmp_path / "test.jsonl"  # the manifest where its audio is not (scored on another machine)
    write_manifest(elsewhere, [replace(r, audio=str(tmp_path / "gone" / Path(r.audio).name))
                               for r in read_manifest(manifest)])
    alone = run.evaluate({"old": old}, elsewhere, tmp_path / "c", limit=6, log=lambda *_: None)
    ids = [h.id for h in load_results(tmp_path / "b" / "hyps.old.jsonl")]
    assert ids == ["0-de", "0-asr", "1-de", "1-asr"]  # clips 0 and 1 in each source language (eng: its ASR row)
    assert [h.id for h in load_results(tmp_path / "c" / "hyps.old.jsonl")] == ids
    assert beside.systems[1].n_rows == alone.systems[0].n_rows == 4
