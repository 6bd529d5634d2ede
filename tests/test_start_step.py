"""data.start_step: a stage's data stream begins that many optimizer steps in (the demo's curriculum SRT stage goes
on over the examples its SMT stage did not reach), the same examples in every layout of a step, across epochs and a
task mix's varying epochs, in the feature cache's fill, in the saved position, and refused on a resume."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

import tiny
from llm_srt.audio import write_wav
from llm_srt.data.loader import BucketBatchSampler, SpeechTextDataset, weighted_by_kind
from llm_srt.data.manifest import Row, write_manifest
from llm_srt.errors import ConfigError, LLMSRTError
from llm_srt.train import data as training_data
from llm_srt.train import final, preflight, resume
from llm_srt.train.config import load_config
from llm_srt.train.data import DataSection, TrainingData, mixes_text
from llm_srt.train.parallel import Dist

SOLO = Dist()
MIX = {"srt": 0.7, "asr": 0.1, "mt": 0.2}  # text-only mt beside speech: each epoch cut into its own number of batches


def _rows(root: Path, translations: int, asr: int, clips: int = 12) -> list[Row]:
    """`translations` eng->deu rows and `asr` ASR rows over `clips` tone clips of different lengths."""
    files = []
    for k in range(clips):
        audio = root / f"tone-{k}.wav"
        if not audio.is_file():
            write_wav(audio, tiny.tone(0.3 + 0.05 * k, 200 + 30 * k, seed=k))
        files.append((str(audio), round(0.3 + 0.05 * k, 2)))
    rows = []
    for k in range(translations + asr):
        audio, seconds = files[k % clips]
        rows.append(Row(id=f"{'t' if k < translations else 'a'}{k}", audio=audio, duration=seconds, src_lang="eng",
                        transcript=f"words {k}", tgt_lang="deu" if k < translations else "",
                        translation=f"Worte {k}" if k < translations else "", split="train", corpus="tiny",
                        sentence_id=f"s{k}"))
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("start_step")
    manifest = root / "train.jsonl"
    write_manifest(manifest, _rows(root, 132, 30))
    model = tiny.speech_llm(root, adapter_kwargs={"num_queries": 4, "hidden_size": 32, "num_layers": 1,
                                                  "num_heads": 4, "intermediate_size": 64})
    return {"root": root, "manifest": str(manifest), "model": model}


def _section(corpus, **over) -> DataSection:
    return DataSection(**{"train": corpus["manifest"], "tasks": MIX, "batch_size": 2, "feature_cache": None,
                          "num_workers": 0, "dev_size": 0, **over})


def _trained(data: TrainingData, n: int) -> list[tuple]:
    """The next `n` batches' examples: (id, task) each."""
    return [tuple(zip(b["ids"], (t.value for t in b["tasks"]))) for b in (data.next_batch() for _ in range(n))]


@pytest.mark.parametrize("ranks,accumulation", [(1, 2), (2, 1)])
def test_a_start_step_trains_the_batches_that_many_steps_into_the_stream(corpus, monkeypatch, ranks, accumulation):
    """With data.start_step S each rank trains its batches S x accumulation on of the stream without it, past an
    epoch's end of a mix whose epochs hold different numbers of batches, for 1 rank x 2 micro-batches and 2 ranks
    x 1 (ranks simulated: each reads the rows itself), which train the same examples at each step; the position
    saved k steps in resumes there exactly, with or without the start."""
    monkeypatch.setattr(training_data, "from_rank0", lambda d, fn: fn())
    model, cfg = corpus["model"], _section(corpus)
    plain = [TrainingData(cfg, model, Dist(rank=r, world=ranks), accumulation=accumulation) for r in range(ranks)]
    steps = [len(plain[0].sampler.all_batches(e)) // 2 for e in range(2)]  # (2 micro-batches a step either way)
    assert steps[0] != steps[1], steps  # the mix's epochs differ: no count of one epoch's steps will do
    start, k = sum(steps) + 2, 4  # into epoch 2
    before = [_trained(data, (start + k) * accumulation) for data in plain]
    began = [TrainingData(replace(cfg, start_step=start), model, Dist(rank=r, world=ranks), accumulation=accumulation)
             for r in range(ranks)]
    assert [d.state_dict()["epoch"] for d in began] == [2] * ranks
    after = [_trained(data, k * accumulation) for data in began]
    assert after == [b[start * accumulation:] for b in before]
    saved = [d.state_dict() for d in began]
    rest = [_trained(data, 2 * accumulation) for data in began]
    for fresh_start in (start, 0):  # a resume goes on from its position, whatever the start
        again = [TrainingData(replace(cfg, start_step=fresh_start), model, Dist(rank=r, world=ranks),
                              accumulation=accumulation) for r in range(ranks)]
        for data, state in zip(again, saved):
            assert data.load_state_dict(state) == 0
        assert [_trained(data, 2 * accumulation) for data in again] == rest


def test_every_layout_of_a_step_starts_at_the_same_examples(corpus):
    """1 rank x 2 micro-batches and 2 ranks x 1 (num_replicas / rank), started S steps in (past an epoch whose
    step count differs from the next's), train the same examples at each step, and the stream's S-th step's."""
    rows = _rows(corpus["root"], 132, 30)
    dataset = SpeechTextDataset(weighted_by_kind([rows], None, MIX), MIX)

    def layout(ranks: int, accumulation: int, start: int, steps: int) -> list[list[int]]:
        samplers = [BucketBatchSampler(dataset.durations, 2, num_replicas=ranks, rank=r, step_batches=accumulation,
                                       groups=dataset.needs_speech(), bucket_batches=3) for r in range(ranks)]
        streams = []
        for s in samplers:
            s.start_at(start)
            streams.append(s.stream())
        out = []
        for _ in range(steps):
            batches = [next(streams[r]) for _ in range(accumulation) for r in range(ranks)]
            out.append(sorted(dataset.example(i, epoch).id for epoch, _, b in batches for i in b))
        return out

    counts = {len(BucketBatchSampler(dataset.durations, 2, groups=dataset.needs_speech(), bucket_batches=3)
                  .all_batches(e)) for e in range(4)}
    assert len(counts) > 1, counts
    whole = layout(1, 2, 0, 200)
    for start in (0, 5, 40, 83, 120):
        assert layout(1, 2, start, 20) == layout(2, 1, start, 20) == whole[start:start + 20], start


def test_the_cache_fill_covers_the_batches_trained_from_the_start(corpus, tmp_path):
    """ASR-only clips drawn at 0.1 (one an epoch): a run of one epoch's batches started two epochs in has that
    epoch's drawn clip encoded before step 1 (the fill counted from epoch 0 encoded epoch 0's, which it never
    trains), and one started mid-epoch 1 the clips of epochs 1 and 2."""
    rows = _rows(tmp_path, 8, 0)
    extra = []
    for k in range(6):
        audio = tmp_path / f"only-asr-{k}.wav"
        write_wav(audio, tiny.tone(0.5 + 0.1 * k, 220 + 40 * k, seed=20 + k))
        extra.append(Row(id=f"only-asr-{k}", audio=str(audio), duration=round(0.5 + 0.1 * k, 2), src_lang="eng",
                         transcript="a tone", tgt_lang="", translation="", split="train", corpus="tiny",
                         sentence_id=f"x{k}"))
    manifest = tmp_path / "mixed.jsonl"
    write_manifest(manifest, rows + extra)
    cfg = _section(corpus, train=str(manifest), tasks={"srt": 0.9, "asr": 0.1}, batch_size=3)
    for start, epochs, cache in ((6, [2], "two"), (4, [1, 2], "one")):  # 3 batches an epoch
        data = TrainingData(replace(cfg, start_step=start, feature_cache=str(tmp_path / cache)), corpus["model"], SOLO,
                            batches=3)
        slot = next(i for i, e in enumerate(data.dataset) if e.task.value == "asr")
        assert len(data.sampler.batches(0)) == 3 and data.sampler.epoch == epochs[0]
        assert ({r.audio for r in extra if data.cache.has(r.audio)}
                == {data.dataset.example(slot, e).audio for e in epochs}), start


def test_a_resume_with_another_start_step_is_refused_allow_changes_or_not(tmp_path):
    """The start only places a fresh start's stream: a resume goes on from its checkpoint's position, so another
    data.start_step cannot apply; refused before the model loads, as another data.seed is, with allow_changes too
    (it went on as the checkpoint's run and recorded the new start). A checkpoint from before the key began at 0."""
    out = tmp_path / "run"
    folder = out / "checkpoints" / "step-00000010"
    (folder / "trainer_state").mkdir(parents=True)
    for saved in ({"data.seed": 0}, {"data.seed": 0, "data.start_step": 0}):  # from before the key, and since
        (folder / "trainer_state" / "state.json").write_text(json.dumps({"settings": saved}))
        for allow in ("false", "true"):
            cfg = load_config(None, ["model.encoder=embedded", "model.llm=embedded", "data.train=x.jsonl",
                                     f"output_dir={out}", "data.start_step=20", f"allow_changes={allow}"])
            with pytest.raises(ConfigError, match=rf"^{folder}: resuming with settings that differ from the "
                                                  r"checkpoint's: data.start_step 0 -> 20; no resume can take these "
                                                  r".*Set data.start_step=0 to resume, or choose another output_dir$"):
                preflight.check_before_start(cfg, manifests=False)
            preflight.check_before_start(replace(cfg, data=replace(cfg.data, start_step=0)), manifests=False)
    assert resume.changes({"data.seed": 0}, {"data.seed": 0, "data.start_step": 0}) == []  # an older record
    assert resume.changes({"data.seed": 0}, {"data.seed": 0, "data.start_step": 20}) == ["data.start_step 0 -> 20"]


# ---- the demo ------------------------------------------------------------------------------------------------------
def _demo_rows(translations: int = 600, asr: int = 150) -> list[Row]:
    return [Row(id=f"r{k}", audio=f"clip-{k % 97}.wav", duration=1.0 + (k % 13) / 5, src_lang="eng",
                transcript=f"words {k}", tgt_lang="deu" if k < translations else "",
                translation=f"Worte {k}" if k < translations else "", split="train", corpus="mini",
                sentence_id=f"s{k}") for k in range(translations + asr)]


def _rows_trained(cfg, rows: list[Row]) -> set[str]:
    """The row ids a stage's max_steps train on."""
    return {row for step in _examples_trained(cfg, rows) for row in step}


def _examples_trained(cfg, rows: list[Row]) -> list[list[str]]:
    """The row ids of each optimizer step of a stage's max_steps, in order, its dataset and sampler built as
    TrainingData builds them."""
    data = cfg.data
    dataset = SpeechTextDataset(weighted_by_kind([rows], data.train_weights, data.tasks, seed=data.seed), data.tasks,
                                seed=data.seed)
    sampler = BucketBatchSampler(dataset.durations, data.batch_size, seed=data.seed,
                                 step_batches=cfg.optim.accumulation,
                                 groups=dataset.needs_speech() if mixes_text(data.tasks) else None)
    sampler.start_at(data.start_step)
    stream = sampler.stream()
    steps = [[next(stream) for _ in range(cfg.optim.accumulation)] for _ in range(cfg.max_steps)]
    return [[dataset.example(i, epoch).id for epoch, _, batch in step for i in batch] for step in steps]


def test_every_demo_run_trains_on_the_curriculum_s_examples(tmp_path):
    """The demo's curriculum keeps the paper's structure, each stage over the same rows: its SRT stage starts at the
    stream's start and trains on exactly SMT's rows. The Baseline and w/o SMT go over them as often: one pass a
    stage, each pass the same examples in the same steps (until 2026-12-07, 17:55, they ran the summed steps in one
    pass and heard about twice the curriculum's distinct speech). At data.start_step = SMT's steps instead (the
    demo's default from 15:21 to 16:48 on 2026-12-07) the SRT stage trains on the rows SMT did not reach; measured at
    three seeds, that variant lost the curriculum's lead (README, "Three corrections")."""
    from llm_srt.demo import demo_stages

    asr = tmp_path / "asr"
    asr.mkdir()
    (asr / "config.json").write_text("{}")
    stages = demo_stages(tmp_path / "work", tmp_path / "data", asr=asr)
    smt, srt = (s.config for s in stages["curriculum"])
    runs = stages["curriculum"] + stages["baseline"] + stages["no_smt"]
    assert [s.config.data.start_step for s in runs] == [0] * 6
    rows = _demo_rows()
    seen = _examples_trained(smt, rows)
    assert len(seen) == smt.max_steps and len({r for step in seen for r in step}) > 0.9 * smt.max_steps * 8
    assert all(_examples_trained(s.config, rows) == seen for s in runs)
    one_pass = replace(srt, max_steps=smt.max_steps + srt.max_steps)  # the single runs until 2026-12-07 (17:55)
    assert len(_rows_trained(one_pass, rows)) > 1.9 * len(_rows_trained(smt, rows))
    going_on = _rows_trained(smt, rows) | _rows_trained(replace(srt, data=replace(srt.data, start_step=20)), rows)
    assert going_on == _rows_trained(one_pass, rows)


def test_a_demo_srt_stage_finished_at_another_start_step_is_refused_in_one_line(tmp_path, monkeypatch):
    """A runs/demo/srt finished at data.start_step=20 (the demo's SRT stage from 15:21 to 16:48 on 2026-12-07) is
    not handed back as the demo's (from step 0): its turn refuses it, and the demo says which runs to remove."""
    from llm_srt import demo, demo_checks
    from llm_srt.train import curriculum

    asr = tmp_path / "asr"
    asr.mkdir()
    (asr / "config.json").write_text("{}")
    stages = demo.demo_stages(tmp_path / "work", tmp_path / "data", asr=asr)["curriculum"]
    srt = stages[1].config
    out = Path(srt.output_dir)
    (out / final.FINAL).mkdir(parents=True)
    (out / final.FINAL / "config.json").write_text("{}")
    before = resume.run_settings(replace(srt, data=replace(srt.data, start_step=20)))
    (out / final.FINAL / final.RUN_SETTINGS).write_text(json.dumps(before))
    with pytest.raises(ConfigError, match=r"finished with other settings: data.start_step 20 -> 0\. "):
        final._check_finished_settings(srt, out, 1, lambda *_: None)
    monkeypatch.setattr(curriculum, "run_stages",
                        lambda stages, log: final._check_finished_settings(srt, out, 1, log))
    with pytest.raises(LLMSRTError, match=rf"^{tmp_path / 'work'} holds runs trained with other settings "
                                          rf"\(data.start_step 20 -> 0\): give another --work, or remove {out}$"):
        demo_checks.run_with_budget(stages, log=lambda *_: None)
