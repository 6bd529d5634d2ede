"""Teacher-forced loss of the reference translation (evaluate/loss.py) on a tiny random speech LLM."""

import pytest
import torch

import tiny
from llm_srt.audio import write_wav
from llm_srt.data.manifest import Row
from llm_srt.errors import LLMSRTError
from llm_srt.evaluate.loss import reference_losses, token_split
from llm_srt.model.speech_llm import SpeechLLM, tokenize_batch
from llm_srt.prompts import Task, build


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return SpeechLLM.from_pretrained(tiny.speech_llm_folder(tmp_path_factory.mktemp("loss-model"))).train()  # (given
    #   in training mode: reference_losses must leave a model's mode as it found it)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("loss-data")
    out = []
    for i, (sec, hz, tr, tl) in enumerate([(0.6, 300, "a cat sat", "die Katze sass"),
                                           (1.4, 700, "the dog ran home", "der Hund lief nach Hause"),
                                           (0.9, 500, "it rains", "es regnet")]):
        write_wav(root / f"{i}.wav", tiny.tone(sec, hz, seed=i))
        out.append(Row(id=str(i), audio=str(root / f"{i}.wav"), duration=sec, src_lang="eng", transcript=tr,
                       tgt_lang="deu", translation=tl, split="test", corpus="t", sentence_id=str(i)))
    return out


def test_srt_scores_only_the_translation_tokenized_as_in_training(model, rows):
    tok = model.tokenizer
    for r in rows:
        prompt_ids, scored = token_split(tok, r, Task.SRT)
        [p], [t] = tokenize_batch(tok, *map(list, zip(build(Task.SRT, "eng", "deu", r.transcript, r.translation))))
        assert prompt_ids + scored == p + t  # the training sequence, split where the translation begins
        assert tok.decode(scored[:-1]).strip() == r.translation and scored[-1] == tok.eos_token_id
        s2tt_prompt, s2tt_scored = token_split(tok, r, Task.S2TT)
        assert s2tt_prompt == p and tok.decode(s2tt_scored[:-1]).strip() == r.translation


def test_s2tt_loss_is_the_training_loss_of_each_row_whatever_the_batch(model, rows):
    one = reference_losses(model, rows, Task.S2TT, batch_size=1).losses
    together = reference_losses(model, rows, "s2tt", batch_size=3).losses
    assert together == pytest.approx(one, abs=1e-4)
    assert model.training  # left as it was given
    model.eval()
    with torch.no_grad():
        for r, loss in zip(rows, one):
            from llm_srt.audio import load_audio
            prompt, target = build(Task.S2TT, "eng", "deu", r.transcript, r.translation)
            expected = model({"audio": [load_audio(r.audio)], "prompts": [prompt], "targets": [target]})["loss"]
            assert loss == pytest.approx(float(expected), abs=1e-4)
    model.train()
    srt = reference_losses(model, rows, Task.SRT, batch_size=2).losses
    assert all(x > 0 for x in srt) and srt != pytest.approx(one, abs=1e-3)  # another prompt, another loss


def test_rows_without_a_translation_or_a_non_translating_task_are_errors(model, rows):
    from dataclasses import replace
    with pytest.raises(LLMSRTError, match="row 1: no reference translation"):
        reference_losses(model, [rows[0], replace(rows[1], translation="", tgt_lang="")], Task.S2TT)
    with pytest.raises(LLMSRTError, match="translating task"):
        reference_losses(model, rows, Task.ASR)
    with pytest.raises(LLMSRTError, match=r"translating task \(srt, s2tt, smt\), not 'st'"):  # a typo: one line
        reference_losses(model, rows, "st")


def test_a_clip_that_cannot_be_used_is_counted_unscored_and_the_others_keep_their_losses(model, rows, tmp_path):
    """A damaged WAV, or one past Whisper's 30 s window, costs its own row only (it stopped the whole loss step,
    the 31 s clip naming only its place in the chunk); its row id and file are in the reason."""
    from dataclasses import replace
    one = reference_losses(model, rows, Task.S2TT, batch_size=1).losses
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40)  # not empty, not audio
    write_wav(tmp_path / "long.wav", tiny.tone(31.0, 400, seed=9))
    bad = replace(rows[1], id="bad", audio=str(tmp_path / "bad.wav"))
    long = replace(rows[1], id="long", audio=str(tmp_path / "long.wav"), duration=31.0)
    got = reference_losses(model, [rows[0], bad, rows[1], long, rows[2]], Task.S2TT, batch_size=2)
    assert got.losses[1] is None and got.losses[3] is None
    assert got.scored() == pytest.approx(one, abs=1e-4)  # the rows beside them, as scored alone
    assert [i for i, _ in got.unscored] == ["bad", "long"]
    assert str(tmp_path / "bad.wav") in got.unscored[0][1]
    assert str(tmp_path / "long.wav") in got.unscored[1][1] and "30 s" in got.unscored[1][1]
    assert got.note().startswith(f"2 of 5 rows not scored: row bad: {tmp_path / 'bad.wav'}: ")
    assert "; row long: " in got.note()
    alone = reference_losses(model, [bad], Task.SRT)  # a chunk with nothing to score: no model call
    assert alone.losses == [None] and alone.scored() == [] and len(alone.unscored) == 1
    assert reference_losses(model, rows, Task.S2TT).note() == ""


def test_srt_and_smt_rows_without_a_transcript_are_errors_as_in_training(model, rows):
    """SRT teacher-forces the transcript and SMT reads it: an empty one was scored as if it were the reference."""
    from dataclasses import replace
    blank = [rows[0], replace(rows[1], transcript=" "), replace(rows[2], transcript="")]
    for task in (Task.SRT, Task.SMT):
        with pytest.raises(LLMSRTError, match=rf"^row 1: no reference transcript for the {task.value} loss \(2 such "
                                              r"rows\); fill them in or score s2tt$"):
            reference_losses(model, blank, task)
    assert reference_losses(model, blank, Task.S2TT).losses == pytest.approx(
        reference_losses(model, rows, Task.S2TT).losses, abs=1e-4)  # S2TT never reads it


def test_the_demo_loads_each_model_once_where_its_placement_says(rows, tmp_path, monkeypatch):
    """`measure_runs`: one load per run gives both its reference losses and its LLM's text MT (with the LoRA), from
    the plain LLM's MT prompt and from the speech LLM's own."""
    from dataclasses import replace

    from llm_srt import device
    from llm_srt.demo import measure_runs
    from llm_srt.model import systems

    folder = tiny.speech_llm_folder(tmp_path)
    seen = []
    load = SpeechLLM.from_pretrained.__func__

    def spy(cls, directory, **kwargs):
        seen.append(kwargs)
        return load(cls, directory, **kwargs)

    monkeypatch.setattr(SpeechLLM, "from_pretrained", classmethod(spy))
    asked = []  # the tasks the speech LLM's own system was run on (its own text-MT prompt)
    run_batch = systems.SpeechLLMSystem.run_batch

    def spy_run(self, items, options):
        asked.extend(it.task for it in items)
        return run_batch(self, items, options)

    monkeypatch.setattr(systems.SpeechLLMSystem, "run_batch", spy_run)
    bf16 = device.resolve("cpu", "bfloat16")
    probe = [r for r in rows] + [Row(id="x", audio=rows[0].audio, duration=0.6, src_lang="deu", transcript="es regnet",
                                     tgt_lang="eng", translation="it rains", split="dev", corpus="t", sentence_id="x")]
    got = measure_runs({"t": str(folder)}, rows, probe, log=lambda *_: None, placement=bf16)
    assert seen == [{"device": bf16.device, "dtype": torch.bfloat16, "merge_lora": True}]
    losses = got["losses"]
    assert len(losses["t"]) == len(rows) and all(x is not None and 0 < x < 50 for x in losses["t"])
    mt = got["text_mt"]["t"]
    assert set(mt) == {"eng-deu", "deu-eng"} and all(0 <= b <= 100 for b in mt.values())
    own = got["text_mt_own_prompt"]["t"]  # the same probe from the speech LLM's own prompt (Task.MT), text only
    assert set(own) == {"eng-deu", "deu-eng"} and all(0 <= b <= 100 for b in own.values())
    assert asked == [Task.MT] * len(probe)
    assert measure_runs({"t": str(folder)}, rows, log=lambda *_: None, placement=bf16)["text_mt"] == {}
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40)
    logged = []  # a clip that cannot be decoded: its row unscored and said, the others' losses kept
    got = measure_runs({"t": str(folder)}, rows[:2] + [replace(rows[2], id="bad", audio=str(tmp_path / "bad.wav"))],
                       log=logged.append, placement=bf16)["losses"]["t"]
    assert got[2] is None and got[:2] == pytest.approx(losses["t"][:2], abs=1e-2)
    assert logged[-1].startswith("t: mean reference loss ")
    assert f", 2 of 3 rows) [1 of 3 rows not scored: row bad: {tmp_path / 'bad.wav'}: " in logged[-1]


def test_a_chunk_out_of_gpu_memory_is_scored_in_halves_and_a_row_out_of_memory_alone_is_counted(model, rows,
                                                                                                 monkeypatch):
    """A CUDA out-of-memory error in one chunk stopped reference_losses, and every loss measured before it was lost
    (the demo's measurement of a run with it). The chunk is now scored again in halves; a row that runs out of
    memory alone is left unscored with the reason, counted, and the others keep their losses."""
    one = reference_losses(model, rows, Task.S2TT, batch_size=1).losses
    _, too_long = token_split(model.tokenizer, rows[1], Task.S2TT)  # row 1 runs out of memory even alone
    forward, seen = model.forward, []

    def forward_on_a_small_gpu(batch):
        seen.append(len(batch["target_ids"]))
        if len(batch["target_ids"]) > 1 or batch["target_ids"][0] == too_long:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore lines")
        return forward(batch)

    monkeypatch.setattr(model, "forward", forward_on_a_small_gpu)
    got = reference_losses(model, rows, Task.S2TT, batch_size=3)
    assert seen == [3, 2, 1, 1, 1]  # the chunk, its first half, each of that half's rows; the second half (row 2)
    assert got.losses[1] is None and [got.losses[0], got.losses[2]] == pytest.approx([one[0], one[2]], abs=1e-4)
    assert got.unscored == [("1", "out of GPU memory alone (CUDA out of memory. Tried to allocate 2.00 GiB)")]
    assert got.note().startswith("1 of 3 rows not scored: row 1: out of GPU memory alone")
    monkeypatch.setattr(model, "forward", lambda batch: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # not a memory error: not hidden as a row's reason
        reference_losses(model, rows, Task.S2TT, batch_size=3)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_size_below_1_is_a_one_line_error(model, rows, batch_size):
    """batch_size 0 was range()'s "arg 3 must not be zero" traceback; -1 scored no row, said none unscored, and the
    demo logged "no row's reference loss"."""
    with pytest.raises(LLMSRTError, match=rf"^reference loss: batch_size {batch_size}: give the rows scored together, "
                                          "1 or more$"):
        reference_losses(model, rows, Task.S2TT, batch_size=batch_size)
