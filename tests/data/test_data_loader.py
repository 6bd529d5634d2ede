import subprocess
import sys
from collections import Counter
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_srt.data.loader import (BucketBatchSampler, SpeechTextDataset, collate, ids_digest, pad_features, stratified,
                                 weighted_by_kind, weighted_rows, with_transcripts)
from llm_srt.data.manifest import Row
from llm_srt.errors import LLMSRTError
from llm_srt.prompts import Task


def _rows(n_sentences=10, langs=("eng", "deu", "fra"), audio="a.wav"):
    rows = []
    for s in range(n_sentences):
        for src in langs:
            text = {lang: f"{lang} sentence {s}." for lang in langs}
            common = dict(audio=audio, duration=1.0 + s + 0.1 * langs.index(src), src_lang=src, transcript=text[src],
                          split="train", corpus="t", sentence_id=str(s))
            rows.append(Row(id=f"{src}:{s}", tgt_lang="", translation="", **common))
            rows += [Row(id=f"{src}:{s}:{tgt}", tgt_lang=tgt, translation=text[tgt], **common)
                     for tgt in langs if tgt != src]
    return rows


def test_tasks_pick_their_rows_and_build_the_paper_prompts():
    rows = _rows()
    asr = SpeechTextDataset(rows, Task.ASR)
    srt = SpeechTextDataset(rows, "srt")
    assert len(asr) == 30 and len(srt) == 60
    ex = next(srt[i] for i in range(len(srt)) if srt[i].id == "eng:3:deu")
    assert (ex.prompt, ex.target) == ("<|eng|><|deu|>", "eng sentence 3.<|eng|><|deu|>deu sentence 3.")
    assert asr[0].prompt == "<|eng|>" and asr[0].target == "eng sentence 0." and asr[0].tgt == ""
    smt = SpeechTextDataset(rows, Task.SMT)[0]
    assert smt.prompt == "eng sentence 0.<|eng|><|deu|>" and smt.target == "deu sentence 0."


def test_task_mix_is_proportional_and_deterministic():
    rows = _rows()
    mixed = SpeechTextDataset(rows, {"srt": 0.8, "asr": 0.2}, seed=3)
    counts = Counter(mixed[i].task for i in range(len(mixed)))
    assert counts == {Task.SRT: 60, Task.ASR: 15}  # every SRT row once; ASR drawn to 20% of 75
    assert len({mixed[i].id for i in range(len(mixed)) if mixed[i].task is Task.ASR}) == 15
    again = SpeechTextDataset(rows, {"srt": 0.8, "asr": 0.2}, seed=3)
    other = SpeechTextDataset(rows, {"srt": 0.8, "asr": 0.2}, seed=4)
    ids = [mixed[i].id for i in range(len(mixed))]
    assert ids == [again[i].id for i in range(len(again))] and ids != [other[i].id for i in range(len(other))]
    heavy = SpeechTextDataset(rows, {"srt": 0.2, "asr": 0.8})  # every ASR row once; SRT drawn to 20% of 38
    assert Counter(heavy[i].task for i in range(len(heavy))) == {Task.ASR: 30, Task.SRT: 8}


def test_a_mix_draws_the_next_rows_each_epoch_until_every_row_was_used():
    """A drawn task's rows change with the epoch (they were one fixed subset for the whole run: an MT rehearsal at
    20% used the same 15 of 60 translation rows in every epoch); epoch 0 is the draw it always was."""
    rows = _rows()
    mixed = SpeechTextDataset(rows, {"asr": 0.8, "mt": 0.2}, seed=3)
    slots = [i for i in range(len(mixed)) if mixed[i].task is Task.MT]
    assert len(mixed) == 38 and len(slots) == 8  # every ASR row once; MT drawn to 20% of 38
    assert [mixed.example(i, 0) for i in range(len(mixed))] == [mixed[i] for i in range(len(mixed))]
    epochs = [[mixed.example(i, e).id for i in slots] for e in range(8)]
    assert all(len(set(ids)) == 8 for ids in epochs)
    assert set(epochs[0]).isdisjoint(epochs[1])
    translation = {r.id for r in rows if not r.is_asr}
    assert set().union(*epochs) == translation  # 8 epochs x 8 slots cover all 60 rows (cycled)
    assert all(mixed.example(i, e).task is Task.ASR and mixed.example(i, e) == mixed[i]
               for i in range(len(mixed)) if i not in slots for e in (1, 5))
    durations = mixed.durations(1)
    assert [durations[i] for i in slots] == [mixed.example(i, 1).duration for i in slots]
    own = [replace(r, audio=f"{r.id}.wav") for r in rows]  # a clip per row
    asr_clips = {r.audio: r.duration for r in own if r.is_asr}
    assert SpeechTextDataset(own, {"asr": 0.8, "mt": 0.2}, seed=3).speech_clips() == asr_clips  # mt reads no audio
    speech = SpeechTextDataset(own, {"asr": 0.8, "srt": 0.2}, seed=3)
    assert speech.speech_clips() == {r.audio: r.duration for r in own}  # every row any epoch may draw
    first = {f"{speech.example(i, 0).id}.wav" for i in range(len(speech)) if speech.example(i, 0).task is Task.SRT}
    assert speech.speech_clips(epochs=1) == asr_clips | {a: d for a, d in speech.speech_clips().items() if a in first}
    assert speech[-1] == speech[len(speech) - 1]


def test_the_sampler_buckets_each_epoch_by_that_epochs_durations():
    rows = _rows(n_sentences=40)
    mixed = SpeechTextDataset(rows, {"asr": 0.5, "srt": 0.5}, seed=0)
    sampler = BucketBatchSampler(mixed.durations, batch_size=4, seed=0, bucket_batches=100)
    for epoch in (0, 3):
        durations = mixed.durations(epoch)
        for batch in sampler.batches(epoch):  # one bucket: each batch is a run of the epoch's sorted durations
            assert max(durations[batch]) - min(durations[batch]) <= 1.2
    assert not np.array_equal(mixed.durations(0), mixed.durations(3))
    with pytest.raises(LLMSRTError, match="epoch 2 has 3 durations"):
        BucketBatchSampler(lambda epoch: [1.0] * (3 if epoch == 2 else 5), 2).batches(2)


def test_bad_task_specs_are_clear():
    with pytest.raises(LLMSRTError, match="unknown task"):
        SpeechTextDataset(_rows(), "translate")
    with pytest.raises(LLMSRTError, match="must be positive"):
        SpeechTextDataset(_rows(), {"srt": 0})
    asr_only = [r for r in _rows() if r.is_asr]
    with pytest.raises(LLMSRTError, match="needs translation rows"):
        SpeechTextDataset(asr_only, "s2tt")


def test_bucketed_batches_cover_everything_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    durations = rng.uniform(1, 20, size=1000)
    sampler = BucketBatchSampler(durations, batch_size=8, seed=1, bucket_batches=10)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000)) and len(batches) == 125
    spread = np.mean([np.ptp(durations[b]) for b in batches])
    random_spread = np.mean([np.ptp(durations[rng.permutation(1000)[:8]]) for _ in range(200)])
    assert spread < random_spread / 4
    assert sampler.epoch == 1 and sampler.batch == 0  # a full pass moves on to the next epoch


def test_groups_never_share_a_batch_and_the_shuffle_mixes_them():
    """`groups` (e.g. text-only mt beside speech examples): each batch is one group's, every index comes once,
    batches stay bucketed by length, and without groups the batches are what they always were."""
    rng = np.random.default_rng(3)
    durations = rng.uniform(1, 20, size=300)
    speech = rng.random(300) < 0.7
    sampler = BucketBatchSampler(durations, 8, seed=4, bucket_batches=5, groups=speech.tolist())
    batches = sampler.batches(0)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert all(len(set(speech[b])) == 1 for b in batches)
    kinds = [bool(speech[b[0]]) for b in batches]
    assert 0 < sum(kinds) < len(kinds) and any(a != b for a, b in zip(kinds, kinds[1:]))  # shuffled together
    assert sampler.batches(0) == batches and sampler.batches(1) != batches
    assert BucketBatchSampler(durations, 8, seed=4, bucket_batches=5, groups=[1] * 300).batches(0) == \
        BucketBatchSampler(durations, 8, seed=4, bucket_batches=5).batches(0)
    with pytest.raises(LLMSRTError, match="3 groups for 300 examples"):
        BucketBatchSampler(durations, 8, groups=[True, False, True])
    data = SpeechTextDataset(_rows(), {"srt": 0.6, "mt": 0.4}, seed=0)
    assert data.needs_speech().tolist() == [data[i].task is not Task.MT for i in range(len(data))]
    assert not all(data.needs_speech())


def test_deterministic_per_seed_and_epoch():
    durations = np.arange(100) % 17 + 1.0
    a = BucketBatchSampler(durations, 4, seed=5)
    b = BucketBatchSampler(durations, 4, seed=5)
    assert a.batches(0) == b.batches(0) and a.batches(0) != a.batches(1)
    assert a.batches(0) != BucketBatchSampler(durations, 4, seed=6).batches(0)


def test_resume_yields_exactly_the_remaining_batches():
    durations = np.arange(203) % 23 + 0.5
    sampler = BucketBatchSampler(durations, 5, seed=2)
    sampler.set_epoch(3)
    full = sampler.batches(3)
    it = iter(sampler)
    seen = [next(it) for _ in range(7)]
    state = sampler.state_dict()
    assert state == {"epoch": 3, "batch": 7, "seed": 2, "replicas": 1, "batch_size": 5, "bucket_batches": 50}
    resumed = BucketBatchSampler(durations, 5, seed=2)
    assert resumed.load_state_dict(state) == 0 and resumed.resume_note == ""
    rest = list(resumed)
    assert seen + rest == full and len(rest) == len(full) - 7
    assert resumed.state_dict()["epoch"] == 4 and list(resumed)[0] == resumed.batches(4)[0]
    with pytest.raises(LLMSRTError, match="same seed"):
        BucketBatchSampler(durations, 5, seed=9).load_state_dict(state)


def test_resume_with_another_number_of_ranks_continues_the_same_global_order():
    durations = np.arange(160) % 19 + 0.5  # 40 batches of 4: a multiple of 1, 2 and 4 ranks
    one = BucketBatchSampler(durations, 4, seed=1)
    full = one.batches(0)
    ranks = [BucketBatchSampler(durations, 4, seed=1, num_replicas=2, rank=r) for r in range(2)]
    iters = [iter(r) for r in ranks]
    for _ in range(3):  # 3 steps on 2 ranks = global batches 0..5
        for it in iters:
            next(it)
    single = BucketBatchSampler(durations, 4, seed=1)
    single.load_state_dict(ranks[0].state_dict())
    assert list(single) == full[6:]
    # and back: 1 rank after 8 batches -> each of 4 ranks resumes at its third batch
    it = iter(one)
    for _ in range(8):
        next(it)
    four = [BucketBatchSampler(durations, 4, seed=1, num_replicas=4, rank=r) for r in range(4)]
    for s in four:
        s.load_state_dict(one.state_dict())
    assert [next(iter(s)) for s in four] == full[8:12]
    # 9 batches (a step's micro-batches ran across an epoch's end): 4 ranks cannot split that, so they go on
    # from the next whole round, 3 batches on (this refused to resume until 2026-12-05)
    it = iter(one)
    next(it)
    assert [s.load_state_dict(one.state_dict()) for s in four] == [3] * 4
    assert [next(iter(s)) for s in four] == full[12:16]
    # near the epoch's end the skip counts only the batches left (it said 3 where the epoch had 2 more)
    odd = np.arange(42) % 9 + 0.5  # 11 batches of 4 (the last of 2): 4 ranks use 8 of them
    one = BucketBatchSampler(odd, 4, seed=1)
    one.epoch, one.batch = 0, 9
    four = [BucketBatchSampler(odd, 4, seed=1, num_replicas=4, rank=r) for r in range(4)]
    assert [s.load_state_dict(one.state_dict()) for s in four] == [2] * 4  # batches 9 and 10, not 12 - 9
    assert [next(s.stream())[2] for s in four] == BucketBatchSampler(odd, 4, seed=1).batches(1)[:4]


def _rest_of_epoch(samplers) -> list[int]:
    """The examples the ranks' samplers yield to the end of their epoch."""
    return [i for s in samplers for batch in s for i in batch]


@pytest.mark.parametrize("new_size", [8, 3])
@pytest.mark.parametrize("old_world, new_world", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_a_resume_at_another_batch_size_trains_each_example_of_the_epoch_once(new_size, old_world, new_world):
    """The position counts batches of the saved size; read as batches of another (cut from another list) it trained
    some examples of the epoch twice and others never (2,000 examples, 100 batches of 4 resumed at 8: 268 and 668)."""
    durations = np.arange(403) % 17 + 0.5
    old = [BucketBatchSampler(durations, 4, seed=3, num_replicas=old_world, rank=r) for r in range(old_world)]
    iters = []
    for s in old:
        s.set_epoch(1)
        iters.append(iter(s))
    seen = [i for _ in range(24 // old_world) for it in iters for i in next(it)]  # 24 batches of 4 in epoch 1
    new = [BucketBatchSampler(durations, new_size, seed=3, num_replicas=new_world, rank=r) for r in range(new_world)]
    assert [s.load_state_dict(old[0].state_dict()) for s in new] == [0] * new_world
    trained = seen + _rest_of_epoch(new)
    assert max(Counter(trained).values()) == 1
    assert new[0].resume_note.startswith(f"the saved data position (epoch 1: {len(seen)} examples trained, in batches "
                                         f"of 4) counts batches of another size than this run's {new_size}: the rest "
                                         f"of that epoch is its {len(durations) - len(seen)} examples not trained on")
    # every example, but for the rest's batches after its last whole step (as in any epoch of several ranks)
    assert len(durations) - len(trained) <= (new_world - 1) * new_size
    assert Counter(len(b) for s in new for b in s.batches(1)).most_common(1)[0][0] == new_size  # cut at the new size
    # the next epoch is the new size's own
    fresh = [BucketBatchSampler(durations, new_size, seed=3, num_replicas=new_world, rank=r) for r in range(new_world)]
    assert [s.state_dict() for s in new] == [{**f.state_dict(), "epoch": 2} for f in fresh]
    assert [next(iter(s)) for s in new] == [f.batches(2)[0] for f in fresh]


def test_an_epoch_resumed_at_another_batch_size_resumes_again_at_any_size():
    """The state of an epoch resumed at another size keeps the state it came from: a resume at the same size goes
    on in the same batches, one at a third size (or back at the first) with the examples still left."""
    durations = np.arange(300) % 13 + 0.5
    first = BucketBatchSampler(durations, 4, seed=1)
    it = iter(first)
    seen = [i for _ in range(10) for i in next(it)]
    second = BucketBatchSampler(durations, 8, seed=1)
    second.load_state_dict(first.state_dict())
    it = iter(second)
    seen += [i for _ in range(5) for i in next(it)]
    state = second.state_dict()
    assert state["resumed_from"] == first.state_dict() and state["batch"] == 5
    same = BucketBatchSampler(durations, 8, seed=1, num_replicas=1)
    assert same.load_state_dict(state) == 0 and same.resume_note == ""
    assert list(same) == list(second)  # the same rest, batch for batch
    for size in (4, 5):
        third = BucketBatchSampler(durations, size, seed=1)
        assert third.load_state_dict(state) == 0 and \
            f"(epoch 0: {len(seen)} examples trained, the last in batches of 8)" in third.resume_note  # both runs':
        #   10 batches of 4, then 5 of 8 (a bucket's last may be short)
        trained = seen + _rest_of_epoch([third])
        assert sorted(trained) == list(range(len(durations)))
        assert third.state_dict() == {"epoch": 1, "batch": 0, "seed": 1, "replicas": 1, "batch_size": size,
                                      "bucket_batches": 50}


def test_a_state_without_a_batch_size_resumes_as_one_of_this_size():
    """A checkpoint from before the state held its batch size: taken as this run's, as then."""
    durations = np.arange(120) % 9 + 0.5
    resumed = BucketBatchSampler(durations, 8, seed=4)
    assert resumed.load_state_dict({"epoch": 2, "batch": 5, "seed": 4, "replicas": 1}) == 0
    assert resumed.resume_note == "" and list(resumed) == resumed.batches(2)[5:]
    # a start of an epoch at another size: nothing of it trained, the new size's own batches
    resumed.load_state_dict({"epoch": 3, "batch": 0, "seed": 4, "replicas": 1, "batch_size": 3})
    assert resumed.resume_note == "" and list(resumed) == BucketBatchSampler(durations, 8, seed=4).batches(3)


def test_a_finished_epoch_resumes_at_the_next_one_on_any_number_of_ranks():
    durations = np.arange(20) % 7 + 0.5  # 5 batches of 4: 2 ranks use 4 of them and trim the fifth
    one = BucketBatchSampler(durations, 4, seed=3)
    assert len(list(iter(one))) == 5 and one.state_dict()["epoch"] == 1
    it = iter(BucketBatchSampler(durations, 4, seed=3))
    last = BucketBatchSampler(durations, 4, seed=3)
    for _ in range(5):
        next(it)  # the epoch's last batch consumed, the iterator not yet advanced
    last.epoch, last.batch = 0, 5
    assert last.state_dict()["epoch"] == 1 and last.state_dict()["batch"] == 0
    ranks = [BucketBatchSampler(durations, 4, seed=3, num_replicas=2, rank=r) for r in range(2)]
    for r in ranks:
        r.load_state_dict(last.state_dict())
    assert [next(iter(r)) for r in ranks] == BucketBatchSampler(durations, 4, seed=3).batches(1)[:2]
    two = BucketBatchSampler(durations, 4, seed=3, num_replicas=2, rank=0)
    two.epoch, two.batch = 0, 2  # 2 ranks finished epoch 0 (the trimmed fifth batch is not replayed)
    single = BucketBatchSampler(durations, 4, seed=3)
    single.load_state_dict(two.state_dict())
    assert next(iter(single)) == single.batches(1)[0]


def _steps(samplers, epochs: int, accumulation: int) -> list[list[int]]:
    """The examples of each optimizer step over `epochs`, the ranks' samplers taking `accumulation` micro-batches a
    step each, as sorted index lists."""
    streams = [s.stream() for s in samplers]
    steps = []
    while True:
        step, epoch = [], None
        for stream in streams:
            for _ in range(accumulation):
                epoch, _, indices = next(stream)
                step += indices
        if epoch >= epochs:
            return steps
        steps.append(sorted(step))


def test_every_layout_of_a_step_trains_on_the_same_examples_across_epochs_and_resumes_from_another():
    """1 process x 4 micro-batches, 2 ranks x 2, 4 ranks x 1: the same examples at every step, past epochs' ends.
    A process ran a step across an epoch's end where ranks left the epoch's last batches out, so from the first
    epoch's end on the layouts trained on other examples, and a resume on another layout skipped batches."""
    durations = np.arange(103) % 11 + 0.5  # 26 batches of 4 (the last of 3): 6 steps of 16 examples, 2 batches over
    layouts = {(world, 4 // world): [BucketBatchSampler(durations, 4, seed=5, num_replicas=world, rank=r,
                                                        step_batches=4 // world) for r in range(world)]
               for world in (1, 2, 4)}
    steps = {k: _steps(v, 3, k[1]) for k, v in layouts.items()}
    assert len(steps[(1, 4)]) == 18 and steps[(1, 4)] == steps[(2, 2)] == steps[(4, 1)]
    assert {len(step) for step in steps[(1, 4)]} == {15, 16}  # the batch of 3, where the shuffle kept it
    one = BucketBatchSampler(durations, 4, seed=5, step_batches=4)  # 1 process stopped after 7 steps ...
    stream = one.stream()
    for _ in range(28):
        position = next(stream)[:2]
    for world in (2, 4):  # ... goes on, on 2 or 4 ranks, with the steps it would have taken
        ranks = [BucketBatchSampler(durations, 4, seed=5, num_replicas=world, rank=r, step_batches=4 // world)
                 for r in range(world)]
        assert [r.load_state_dict(one.state_dict(position)) for r in ranks] == [0] * world
        assert _steps(ranks, 3, 4 // world) == steps[(1, 4)][7:]
    # a position between whole steps (a run of fewer examples a step, or one from before epochs held whole steps)
    # goes on from the next whole step: 5 batches of 1 process -> the step at batch 8, 3 batches skipped
    ranks = [BucketBatchSampler(durations, 4, seed=5, num_replicas=2, rank=r, step_batches=2) for r in range(2)]
    assert [r.load_state_dict({"epoch": 1, "batch": 5, "seed": 5, "replicas": 1}) for r in ranks] == [3, 3]
    assert _steps(ranks, 3, 2) == steps[(1, 4)][8:]


def test_ranks_split_the_batches_evenly():
    durations = np.ones(50)
    ranks = [BucketBatchSampler(durations, 4, seed=0, num_replicas=3, rank=r).batches(0) for r in range(3)]
    assert len({len(b) for b in ranks}) == 1 and len(ranks[0]) == 4  # 13 batches -> 12 used, 4 each
    flat = [i for r in ranks for b in r for i in b]
    assert len(flat) == len(set(flat))
    dropped = BucketBatchSampler(durations, 4, drop_last=True).batches(0)
    assert all(len(b) == 4 for b in dropped) and len(dropped) == 12


def test_collate_pads_features_with_a_mask_or_loads_audio(tmp_path, audio_file):
    path = str(audio_file(tmp_path / "a.wav", seconds=0.5, sr=8000))
    data = SpeechTextDataset(_rows(2, audio=path), Task.SRT)
    examples = [data[0], data[1], data[2]]
    feats = [np.ones((5, 3)), 2 * np.ones((2, 3)), 3 * np.ones((4, 3))]
    batch = collate(examples, feats)
    assert batch["features"].shape == (3, 5, 3) and batch["features"].dtype == torch.float32
    assert batch["feature_mask"].tolist() == [[True] * 5, [True] * 2 + [False] * 3, [True] * 4 + [False]]
    assert batch["features"][1, 2:].abs().sum() == 0 and batch["features"][2, 3, 0] == 3
    assert batch["ids"] == [e.id for e in examples] and batch["targets"][0] == examples[0].target
    assert batch["src"] == [e.src for e in examples] and batch["tgt"] == [e.tgt for e in examples]
    audio = collate(examples)["audio"]
    assert len(audio) == 3 and audio[0].shape == (8000,) and audio[0].dtype == np.float32
    mt = SpeechTextDataset(_rows(1, audio=path), Task.MT)
    assert collate([mt[0]])["audio"] == [None]
    with pytest.raises(LLMSRTError, match="one D"):
        collate(examples[:2], [np.ones((2, 3)), np.ones((2, 4))])


def test_pad_features_matches_row_by_row_padding_and_rejects_bad_shapes():
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((n, 6)).astype(np.float16) for n in (7, 1, 12, 3)]
    padded, mask = pad_features(feats)  # the cache's float16 stays float16 (half the bytes between processes)
    assert padded.shape == (4, 12, 6) and padded.dtype == torch.float16 and mask.shape == (4, 12)
    wide, _ = pad_features([f.astype(np.float32) for f in feats])
    assert wide.dtype == torch.float32 and torch.equal(wide, padded.float())  # the same numbers either way
    for i, f in enumerate(feats):
        assert torch.equal(padded[i, :len(f)], torch.from_numpy(f))
        assert padded[i, len(f):].abs().sum() == 0 and mask[i].tolist() == [True] * len(f) + [False] * (12 - len(f))
    with pytest.raises(LLMSRTError, match="one D"):
        pad_features([np.ones((2, 3)), np.ones(3)])
    with pytest.raises(LLMSRTError, match="one D"):
        pad_features([])


def test_weighted_rows_follow_the_weights_and_keep_every_row():
    big = _rows(10, langs=("eng", "deu"))  # 40 rows
    small = [r for r in _rows(2, langs=("fra", "spa")) if r.is_asr]  # 4 rows
    assert weighted_rows([big, small]) == big + small
    mixed = weighted_rows([big, small], [0.8, 0.2], seed=1)
    counts = Counter(r.src_lang in ("fra", "spa") for r in mixed)
    assert counts == {False: 40, True: 10}  # every big row once; small ones to 20% of 50: 2 copies + 2 drawn
    assert set(mixed) >= set(big) | set(small)
    assert Counter(r.id for r in mixed if r in small).most_common()[-1][1] >= 2
    assert mixed == weighted_rows([big, small], [0.8, 0.2], seed=1) != weighted_rows([big, small], [0.8, 0.2], 2)
    # a light weight on the bigger manifest: it is still read whole, and the small one repeated to match
    flipped = weighted_rows([big, small], [0.2, 0.8])
    assert Counter(r in small for r in flipped) == {False: 40, True: 160}
    with pytest.raises(LLMSRTError, match="2 sampling weights for 1 manifests"):
        weighted_rows([big], [0.5, 0.5])
    with pytest.raises(LLMSRTError, match="positive"):
        weighted_rows([big, small], [1.0, 0.0])


def test_the_weights_are_shares_of_the_rows_a_stage_reads():
    """Common Voice (ASR rows only) and FLEURS (1 ASR row and N-1 translation rows a clip) at 0.5 each: an ASR stage
    takes half its examples from each (weighting all rows first gave FLEURS' 10 ASR rows 1 example in 11)."""
    cv = [r for r in _rows(100, langs=("eng",))]  # 100 ASR rows
    fleurs = _rows(10, langs=("deu", "fra", "ind", "ita", "jpn", "kor", "nld", "por", "rus", "spa"))
    fleurs = [r for r in fleurs if not r.is_asr or r.src_lang == "deu"]  # 10 ASR rows, 900 translation rows
    asr = SpeechTextDataset(weighted_by_kind([cv, fleurs], [0.5, 0.5], Task.ASR), Task.ASR)
    assert Counter(asr[i].src == "eng" for i in range(len(asr))) == {True: 100, False: 100}
    # a mix reads both kinds: each kind is weighted apart (CV has no translation row: FLEURS's are all there is)
    rows = weighted_by_kind([cv, fleurs], [0.5, 0.5], {"srt": 0.6, "asr": 0.4})
    assert Counter(r.is_asr for r in rows) == {True: 200, False: 900}
    assert weighted_by_kind([cv, fleurs], None, Task.ASR) == cv + fleurs
    with pytest.raises(LLMSRTError, match="1 sampling weights for 2 manifests"):
        weighted_by_kind([cv, fleurs], [1.0], Task.ASR)


def test_a_task_that_reads_the_transcript_refuses_rows_without_one():
    """An SRT target of a row without its transcript is the tags and the translation alone: the model would learn
    to skip the transcript. S2TT does not read it."""
    rows = _rows(3, langs=("eng", "deu"))
    rows[1] = replace(rows[1], transcript="")  # a translation row (eng:0:deu)
    for task in ("srt", "smt", "mt", {"srt": 0.8, "asr": 0.2}):
        with pytest.raises(LLMSRTError, match=r"reads each translation row's transcript, but 1 of the manifest's "
                                              r"have none \(e.g. id eng:0:deu\)"):
            SpeechTextDataset(rows, task)
    assert len(SpeechTextDataset(rows, "s2tt")) == 6


def test_data_skip_bad_leaves_out_translation_rows_without_the_transcript_their_task_reads():
    """`with_transcripts` (data.skip_bad): the rows SpeechTextDataset refuses above go, with one warning giving their
    count; a task that does not read the transcript (s2tt, asr) keeps them."""
    rows = _rows(3, langs=("eng", "deu"))
    rows[1], rows[5] = replace(rows[1], transcript=""), replace(rows[5], transcript=" ")  # eng:0:deu, eng:1:deu
    for task in ("srt", {"s2tt": 0.5, "smt": 0.5}, {"asr": 0.8, "mt": 0.2}):
        with pytest.warns(UserWarning, match=r"^data.train x: skipped 2 translation rows without a transcript, which "
                                             r"task (srt|smt|mt) reads \(first: id eng:0:deu\)$"):
            kept = with_transcripts(rows, task, "data.train x")
        assert [r.id for r in kept] == [r.id for r in rows if r.id not in ("eng:0:deu", "eng:1:deu")]
        SpeechTextDataset(kept, task)  # no longer refused
    for task in ("s2tt", "asr"):
        assert with_transcripts(rows, task, "data.train x") is rows


def test_the_ids_digest_tells_the_rows_a_task_reads_apart():
    """What a saved data position counts: the ids, in order, of the rows the task (mix) reads; a row of the other
    kind does not change it."""
    rows = _rows(3, langs=("eng", "deu"))
    srt = ids_digest(rows, "srt")
    assert len(srt) == 16 and ids_digest(list(rows), {"srt": 1.0}) == srt
    assert ids_digest([r for r in rows if r.id != "eng:0"], "srt") == srt  # an ASR row: srt does not read it
    assert ids_digest([r for r in rows if r.id != "eng:0:deu"], "srt") != srt
    assert ids_digest(rows[1:] + rows[:1], {"srt": 0.8, "asr": 0.2}) != ids_digest(rows, {"srt": 0.8, "asr": 0.2})


def test_a_small_task_share_gets_an_example_not_none():
    rows = _rows(10, langs=("eng", "deu"))  # 20 translation rows, 20 ASR rows
    mix = SpeechTextDataset(rows, {"srt": 0.98, "asr": 0.01, "mt": 0.01})
    assert Counter(mix[i].task for i in range(len(mix))) == {Task.SRT: 20, Task.ASR: 1, Task.MT: 1}


def test_stratified_dev_covers_every_direction_evenly_in_any_prefix():
    rows = [r for r in _rows(10) if not r.is_asr]  # 6 directions x 10 sentences, file order: sentence by sentence
    by_direction = sorted(rows, key=lambda r: (r.src_lang, r.tgt_lang))  # the same rows in another file order
    for source in (rows, by_direction):
        dev = stratified(source, 14, seed=3)
        directions = Counter((r.src_lang, r.tgt_lang) for r in dev)
        assert len(dev) == 14 and len(directions) == 6 and set(directions.values()) == {2, 3}
        assert len({(r.src_lang, r.tgt_lang) for r in dev[:6]}) == 6
        assert len(set(dev)) == 14
    assert stratified(rows, 14, seed=3) == stratified(rows, 14, seed=3) != stratified(rows, 14, seed=4)
    assert len(stratified(rows, 1000)) == 60 and stratified(rows, 0) == []
    asr = [r for r in _rows(5) if r.is_asr]
    assert Counter(r.src_lang for r in stratified(asr, 6)) == {"eng": 2, "deu": 2, "fra": 2}


def test_stream_tags_each_batch_with_its_position_for_a_consumer_that_runs_behind():
    durations = np.arange(30) % 7 + 0.5  # 8 batches of 4 an epoch
    sampler = BucketBatchSampler(durations, 4, seed=2)
    stream = sampler.stream()
    items = [next(stream) for _ in range(11)]  # into the second epoch
    assert [(e, b) for e, b, _ in items] == [(0, k) for k in range(1, 9)] + [(1, 1), (1, 2), (1, 3)]
    assert [i for _, _, i in items] == sampler.batches(0) + sampler.batches(1)[:3]
    # the stream read ahead to (1, 3); the consumer stopped after the 5th batch: resume from there
    assert sampler.state_dict() == {"epoch": 1, "batch": 3, "seed": 2, "replicas": 1, "batch_size": 4,
                                    "bucket_batches": 50}
    state = sampler.state_dict((0, 5))
    assert state["epoch"] == 0 and state["batch"] == 5
    assert sampler.state_dict((0, 8))["epoch"] == 1 and sampler.state_dict((0, 8))["batch"] == 0
    resumed = BucketBatchSampler(durations, 4, seed=2)
    resumed.load_state_dict(state)
    assert list(islice(resumed.stream(), 6)) == items[5:11]


_FORKED_WORKER = """
import gc, os, sys
from llm_srt.data.features import FeatureCache
from llm_srt.data.loader import SpeechTextDataset
from llm_srt.data.manifest import Row
rows = [Row(id=f"cv_{i:08d}", audio=f"clips/common_voice_en_{i:08d}.mp3", duration=3.0 + i % 7, src_lang="eng",
            transcript=f"this is sentence number {i} of the corpus, with some words", tgt_lang="", translation="",
            split="train", corpus="commonvoice", sentence_id=str(i)) for i in range(int(sys.argv[1]))]
data = SpeechTextDataset(rows, "asr")
cache = FeatureCache(sys.argv[2], "encoder", hashes={row.audio: f"{i:064x}" for i, row in enumerate(rows)})
del rows
gc.collect()
def private():
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Dirty", "Private_Clean"))) / 1024
r, w = os.pipe()
if os.fork() == 0:  # a DataLoader worker: the collector runs, and it reads every example
    before = private()
    gc.collect()
    for i in range(len(data)):
        cache.hashes.get(data.example(i, 0).audio)
    os.write(w, str(private() - before).encode())
    os._exit(0)
os.wait()
print(os.read(r, 100).decode())
"""


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="reads Linux's /proc/self/smaps_rollup")
def test_a_forked_loader_worker_shares_the_rows_and_audio_hashes_instead_of_copying_them(tmp_path):
    """DataLoader workers fork from the training process. Rows kept as Python objects were copied into each worker
    as the collector and reference counts wrote to them, and the feature cache's audio hashes as they were read
    (measured here, a worker's own memory grew 58 MiB and 12 MiB per 100,000 rows: 2.3 GB per worker at 3.3M rows);
    packed, it does not grow with the rows (+0.05 MiB)."""
    grew = [float(subprocess.run([sys.executable, "-c", _FORKED_WORKER, str(n), str(tmp_path)],
                                 capture_output=True, text=True, check=True).stdout) for n in (10_000, 110_000)]
    assert grew[1] - grew[0] < 5, grew  # MiB for 100,000 more rows


def test_collate_holds_loaded_audio_to_whispers_window_as_training_does(tmp_path):
    """A clip a frame over 30 s (listed as 30 s, so the manifest check passes it) is cut to the window, as training's
    collator and the feature cache cut it; it came back 480,001 samples, which the encoder refuses naming no file.
    A clip further over is an AudioError naming its file."""
    import soundfile as sf

    from llm_srt.errors import AudioError

    over = tmp_path / "over.wav"
    sf.write(str(over), np.zeros(30 * 16000 + 1, dtype=np.float32), 16000, subtype="PCM_16")
    longer = tmp_path / "longer.wav"
    sf.write(str(longer), np.zeros(31 * 16000, dtype=np.float32), 16000, subtype="PCM_16")
    examples = SpeechTextDataset(_rows(1, audio=str(over)), Task.ASR)
    assert [a.shape for a in collate([examples[0], examples[1]])["audio"]] == [(30 * 16000,)] * 2
    with pytest.raises(AudioError, match="longer.wav"):
        collate([SpeechTextDataset(_rows(1, audio=str(longer)), Task.ASR)[0]])
