"""TrainingData: the DataLoader (workers, exact resume), tokenizing once, the feature cache fill, the dev selection,
several weighted manifests, and manifests read once (by rank 0) per stage."""

import contextlib
import errno
import json
import math
import re
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_srt.audio import SAMPLE_RATE, load_audio, write_wav
from llm_srt.data import features
from llm_srt.data.features import FeatureCache
from llm_srt.data.manifest import read_manifest, write_manifest
from llm_srt.errors import ConfigError, LLMSRTError
from llm_srt.prompts import Task
from llm_srt.model.encoder import WhisperEncoder
from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig, tokenize_batch
from llm_srt.train import batches as training_batches
from llm_srt.train import data as training_data
from llm_srt.train import dev_sample
from llm_srt.train.data import DataSection, TrainingData
from llm_srt.train import parallel
from llm_srt.train.parallel import Dist
from llm_srt.train.config import load_config

from .conftest import gloo_when_all_arrived

SOLO = Dist()


def _section(setup, cache, **over) -> DataSection:
    base = dict(train=setup["manifest"], feature_cache=str(cache), batch_size=3, tasks={"srt": 0.7, "asr": 0.3})
    return DataSection(**{**base, **over})


def _take(data, n):
    return [data.next_batch() for _ in range(n)]


def _same(a, b):
    assert a["ids"] == b["ids"] and a["prompt_ids"] == b["prompt_ids"] and a["target_ids"] == b["target_ids"]
    assert torch.equal(a["features"], b["features"]) and torch.equal(a["feature_mask"], b["feature_mask"])


WORKER_SIGNALS_SCRIPT = textwrap.dedent("""
    import functools, multiprocessing, os, subprocess, sys, time
    import torch
    from llm_srt.train.batches import SERVING_START, _keep_serving

    if __name__ == "__main__":  # (spawn and forkserver import this file again)
        multiprocessing.set_start_method(sys.argv[1])  # Python 3.14's default on Linux is forkserver
    batches = iter(torch.utils.data.DataLoader(range(100), batch_size=None, num_workers=1,
                                               worker_init_fn=functools.partial(_keep_serving, os.getpid()),
                                               multiprocessing_context=SERVING_START))
    next(batches)
    [worker] = multiprocessing.active_children()
    for name in ("TERM", "INT"):  # from another process, as SLURM's and torchrun's reach every process
        subprocess.run(["kill", f"-{name}", str(worker.pid)], check=True)
    time.sleep(0.5)
    print(next(batches), worker.is_alive(), flush=True)
    # the process ends with the loader open: multiprocessing's SIGTERM at exit ends the worker
""")


@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="no sigwaitinfo (macOS): torch's handler stays")
@pytest.mark.parametrize("default_start", ["fork", "forkserver"])
def test_a_worker_serves_on_through_another_process_signal_and_ends_with_the_training_process(tmp_path,
                                                                                           default_start):
    """`batches._keep_serving`: a SIGTERM from another process (SLURM's, torchrun's agent's) ended a DataLoader worker,
    and the training process then stopped, saving nothing, with "DataLoader worker (pid N) is killed by signal:
    Terminated."; Ctrl-C to the group likewise where the worker's handler is not the recipe's. The worker serves
    on, and a SIGTERM from its own process still ends it: ignored, a loader left open at exit kept that process
    waiting for it for ever. The workers are forked whatever the default start method (forkserver's have a second
    thread that took the signal, and another parent)."""
    script = tmp_path / "signals.py"
    script.write_text(WORKER_SIGNALS_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), default_start], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "1 True\n", proc.stderr[-2000:]


def test_workers_build_the_batches_the_training_process_would_tokenized_once(tiny_setup, model, tmp_path):
    inline = TrainingData(_section(tiny_setup, tmp_path / "f", num_workers=0), model, SOLO)
    workers = TrainingData(_section(tiny_setup, tmp_path / "f", num_workers=2), model, SOLO)
    batches = _take(workers, 6)  # 11 examples, batches of 3: into the second epoch
    for a, b in zip(_take(inline, 6), batches):
        _same(a, b)
    tok = model.tokenizer
    for b in batches:
        prompt_ids, target_ids = tokenize_batch(tok, b["prompts"], b["targets"])
        assert b["prompt_ids"] == prompt_ids and b["target_ids"] == target_ids
        assert all(t[-1] == tok.eos_token_id for t in b["target_ids"])
        assert b["n_target_tokens"] == sum(map(len, target_ids))
        assert b["features"].dtype == torch.float16 and b["features"].shape[:2] == b["feature_mask"].shape  # as cached
        assert "position" not in b and "pending_audio" not in b
    assert Counter(t.value for b in batches[:4] for t in b["tasks"]) == {"srt": 8, "asr": 3}  # one epoch
    # the model trains on the ids the workers made
    with torch.no_grad():
        torch.manual_seed(0)  # the same dropout masks for both
        out = model(batches[0])
        torch.manual_seed(0)
        wide = model({**batches[0], "features": batches[0]["features"].float()})  # widened on its device: exact
    assert out["n_tokens"] == batches[0]["n_target_tokens"] and out["loss"].isfinite()
    assert torch.equal(out["loss"], wide["loss"])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_after_the_last_batch_handed_out_not_the_prefetched_ones(tiny_setup, model, tmp_path,
                                                                                   workers):
    cfg = _section(tiny_setup, tmp_path / "f", num_workers=workers)
    first = TrainingData(cfg, model, SOLO)
    _take(first, 5)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batch"] == 1  # 4 batches an epoch
    if workers:  # the loader read ahead of the training loop
        assert (first.sampler.epoch, first.sampler.batch) > (state["epoch"], state["batch"])
    resumed = TrainingData(cfg, model, SOLO)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    for a, b in zip(_take(first, 6), _take(resumed, 6)):
        _same(a, b)
    assert resumed.state_dict() == first.state_dict()
    again = TrainingData(cfg, model, SOLO)
    again.load_state_dict(state)
    first.load_state_dict(state)  # a reload drops the prefetched batches and restarts the workers there
    _same(first.next_batch(), again.next_batch())


@pytest.mark.parametrize("workers", [0, 2])
def test_each_epoch_trains_on_its_own_draw_of_a_mixs_smaller_task(tiny_setup, model, tmp_path, workers):
    """The 0.3 ASR share draws other ASR rows in epoch 1 than in epoch 0 (in the batches the loader hands out,
    with or without workers), and resuming mid-epoch 1 continues that epoch's draw."""
    cfg = _section(tiny_setup, tmp_path / "f", num_workers=workers)
    data = TrainingData(cfg, model, SOLO)
    epochs = [[b for b in _take(data, 4)] for _ in range(2)]  # 4 batches an epoch
    asr = [sorted(i for b in batches for i, t in zip(b["ids"], b["tasks"]) if t.value == "asr") for batches in epochs]
    assert len(asr[0]) == len(asr[1]) == 3 and asr[0] != asr[1]
    assert asr[1] == sorted(data.dataset.example(i, 1).id for i in range(len(data.dataset))
                            if data.dataset[i].task.value == "asr")
    again = TrainingData(cfg, model, SOLO)
    again.load_state_dict({"epoch": 1, "batch": 2, "seed": 0, "replicas": 1})
    for a, b in zip(epochs[1][2:], _take(again, 2)):
        _same(a, b)


def test_the_cache_fill_covers_every_row_a_later_epoch_draws(tiny_setup, model, tmp_path):
    """Six ASR-only clips beside the translation rows, drawn at 0.1 (one an epoch): a run that reaches six epochs
    (or of unknown length) has all six encoded before step 1, not only epoch 0's; a run of one epoch, epoch 0's."""
    import tiny

    from llm_srt.audio import write_wav
    from llm_srt.data.manifest import Row

    rows = [r for r in read_manifest(tiny_setup["manifest"]) if not r.is_asr]
    extra = []
    for k in range(6):
        audio = tmp_path / f"only-asr-{k}.wav"
        write_wav(audio, tiny.tone(0.5 + 0.1 * k, 200 + 40 * k, seed=10 + k))
        extra.append(Row(id=f"only-asr-{k}", audio=str(audio), duration=0.5 + 0.1 * k, src_lang="eng",
                         transcript="a tone", tgt_lang="", translation="", split="train", corpus="tiny",
                         sentence_id=f"t{k}"))
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, rows + extra)
    cfg = _section(tiny_setup, tmp_path / "f", train=str(manifest), num_workers=0, tasks={"srt": 0.9, "asr": 0.1})
    short = TrainingData(cfg, model, SOLO, batches=3)
    assert sum(e.task.value == "asr" for e in short.dataset) == 1 and len(short.sampler) == 3
    slot = next(i for i, e in enumerate(short.dataset) if e.task.value == "asr")
    assert [r.audio for r in extra if short.cache.has(r.audio)] == [short.dataset.example(slot, 0).audio]
    two = TrainingData(replace(cfg, feature_cache=str(tmp_path / "two")), model, SOLO, batches=4)  # into epoch 1
    assert two._epochs_reached(4) == 2 and sum(two.cache.has(r.audio) for r in extra) == 2
    long = TrainingData(replace(cfg, feature_cache=str(tmp_path / "g")), model, SOLO, batches=3 * 6)
    assert all(long.cache.has(r.audio) for r in extra)
    unknown = TrainingData(replace(cfg, feature_cache=str(tmp_path / "h")), model, SOLO)
    assert all(unknown.cache.has(r.audio) for r in extra)


def test_the_cache_is_filled_longest_first_in_batches_and_pad_to_30s_keys_apart(tiny_setup, model, tmp_path,
                                                                              monkeypatch):
    seen = []
    real = TrainingData._encode

    def spy(self, audios):
        seen.append([len(a) for a in audios])
        return real(self, audios)

    monkeypatch.setattr(TrainingData, "_encode", spy)
    monkeypatch.setattr(training_data, "ENCODE_BATCH", 3)
    cfg = _section(tiny_setup, tmp_path / "f", num_workers=0)
    data = TrainingData(cfg, model, SOLO)
    assert [len(s) for s in seen] == [3, 3, 2]  # 8 distinct clips
    lengths = [n for s in seen for n in s]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) > 1
    seen.clear()
    TrainingData(cfg, model, SOLO)
    assert seen == []  # all cached
    clip = data.dataset[0].audio
    padded = replace(model.config, pad_to_30s=True)
    monkeypatch.setattr(model, "config", padded)
    other = TrainingData(replace(cfg, precompute_features=False), model, SOLO)
    assert other.cache.key(clip) != data.cache.key(clip) and not other.cache.has(clip)


def test_the_feature_cache_is_sized_before_it_is_filled(tiny_setup, model, tmp_path, monkeypatch):
    """Before encoding, the fill adds up what the cache will take (each clip's encoder frames x dim in float16, its
    .npy file in whole disk blocks: exactly what the files then take) and says it; where the disk has less free it
    refuses at once, naming the folder, the size and the two ways out, and encodes nothing."""
    logs = []
    cfg = _section(tiny_setup, tmp_path / "f", num_workers=0)
    data = TrainingData(cfg, model, SOLO, log=logs.append)
    seconds = {e.audio: e.duration for e in data.dataset}
    encoder, cache = model.encoder, data.cache
    assert len(seconds) == 8 and len(list((tmp_path / "f").rglob("*.npy"))) == 8
    for audio, s in seconds.items():
        stored = cache.path_of(cache.key(audio))
        assert cache.lookup([audio])[0].shape == (encoder.output_frames(s), encoder.dim)
        assert stored.stat().st_size == features.NPY_HEADER + encoder.output_frames(s) * encoder.dim * 2
    need = sum(cache.stored_bytes(encoder.output_frames(s), encoder.dim) for s in seconds.values())
    assert need == sum(-(-f.stat().st_size // 4096) * 4096 for f in (tmp_path / "f").rglob("*.npy"))
    said = [m for m in logs if m.startswith("encoding 8 utterances")]
    assert said and f"about {need / 2**20:.1f} MiB of the" in said[0] and "(0 cached)" in said[0], logs

    monkeypatch.setattr(FeatureCache, "free_bytes", lambda self: need - 1)
    with pytest.raises(ConfigError, match=r"data.feature_cache: the encoder features of 8 utterances \(0.0 h of "
                       rf"audio\) need about {need / 2**20:.1f} MiB in .*g, which has .* free; point "
                       r"data.feature_cache at a disk with room, or set it to null to run the encoder in every step "
                       r"\(no cache\); features an older version of the toolkit stored there are not read again"):
        TrainingData(replace(cfg, feature_cache=str(tmp_path / "g")), model, SOLO)
    assert not list(tmp_path.glob("g/**/*.npy"))
    monkeypatch.setattr(FeatureCache, "free_bytes", lambda self: need)  # just enough
    TrainingData(replace(cfg, feature_cache=str(tmp_path / "g")), model, SOLO)
    assert len(list(tmp_path.glob("g/**/*.npy"))) == 8

    padded = WhisperEncoder.from_pretrained(tiny_setup["whisper"], pad_to_30s=True)  # 30 s of frames for any clip
    audio = next(iter(seconds))
    assert padded.encode([load_audio(audio)])[0].shape[1] == padded.output_frames(seconds[audio]) == 1500


def test_a_disk_that_refuses_features_slows_training_down_instead_of_stopping_it(tiny_setup, model, tmp_path,
                                                                                  monkeypatch):
    """A cache whose disk fills up mid-run (features stored on first use): each batch still gets its features,
    computed again each time; one warning says why and what to do."""
    stored = TrainingData(_section(tiny_setup, tmp_path / "room", num_workers=0), model, SOLO)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(features, "atomic_file", full)
    logs = []
    lazy = TrainingData(_section(tiny_setup, tmp_path / "full", precompute_features=False, num_workers=0), model,
                        SOLO, log=logs.append)
    for a, b in zip(_take(stored, 3), _take(lazy, 3)):
        _same(a, b)
    assert lazy.cache.unstored >= 3 and not list(tmp_path.glob("full/**/*.npy"))
    warned = [m for m in logs if "cannot store encoder features" in m]
    assert len(warned) == 1 and "No space left on device" in warned[0] and "free space there" in warned[0], logs


def test_a_fill_stops_encoding_once_the_disk_refuses_a_file(tiny_setup, model, tmp_path, monkeypatch):
    """A quota (or a read-only folder, a run beside it that took the room) refused the 3rd file: the fill went on
    encoding every other clip, each thrown away (at the paper's ASR stage, hours of a GPU before step 1). It stops
    at the batch refused, says so, and training computes those features in the steps that need them."""
    monkeypatch.setattr(training_data, "ENCODE_BATCH", 2)
    real, written = features.atomic_file, []

    def quota(path, *args, **kwargs):
        written.append(path)
        if len(written) > 2:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(features, "atomic_file", quota)
    encoded, encode = [], TrainingData._encode
    monkeypatch.setattr(TrainingData, "_encode", lambda self, audios: encoded.append(len(audios)) or encode(self,
                                                                                                           audios))
    logs = []
    data = TrainingData(_section(tiny_setup, tmp_path / "quota", num_workers=0), model, SOLO, log=logs.append)
    assert encoded == [2, 2] and data.cache.unstored == 2  # the 2nd batch refused: no 3rd
    assert any("could not store every utterance's features" in m for m in logs), logs
    encoded.clear()
    assert _take(data, 2) and sum(encoded) > 0  # the features the cache lacks, computed for their batches


def test_features_the_cache_lacks_are_computed_by_the_training_process(tiny_setup, model, tmp_path):
    filled = TrainingData(_section(tiny_setup, tmp_path / "full", num_workers=0), model, SOLO)
    lazy = TrainingData(_section(tiny_setup, tmp_path / "lazy", precompute_features=False, num_workers=2), model,
                        SOLO)
    assert not list((tmp_path / "lazy").rglob("*.npy"))
    for a, b in zip(_take(filled, 3), _take(lazy, 3)):
        _same(a, b)
    assert list((tmp_path / "lazy").rglob("*.npy"))


def test_without_a_cache_the_workers_load_the_audio(tiny_setup, model):
    data = TrainingData(_section(tiny_setup, None, feature_cache=None, num_workers=2), model, SOLO)
    batch = data.next_batch()
    assert "features" not in batch and all(a.dtype == np.float32 and a.ndim == 1 for a in batch["audio"])
    assert model(batch)["loss"].isfinite()


@pytest.mark.parametrize("workers,cache", [(0, None), (2, None), (0, "lazy"), (2, "lazy"), (0, "filled")])
def test_a_clip_that_cannot_be_decoded_leaves_its_examples_out(tiny_setup, model, tmp_path, workers, cache):
    """A clip damaged after the manifest was checked stopped the run, and every resume stopped there again: without
    a feature cache (the paper's ASR stages) in a DataLoader worker, with a cache filled on first use
    (precompute_features: false) where the training process encodes it. Its examples are now left out of their
    batches, said once in the run's log and counted; the other examples train. A clip bad before a cache fill
    (the manifest check reads no audio) is left out of the fill and of training alike: it stopped the fill."""
    rows, broken, section = _a_broken_clip(tiny_setup, tmp_path, cache, num_workers=workers)
    said = []
    data = TrainingData(section, model, SOLO, log=said.append)
    if cache == "filled":
        assert len(list((tmp_path / "cache").rglob("*.npy"))) == len({r.audio for r in rows}) - 1
    broken.write_bytes(b"RIFF not audio any more" * 20)  # damaged after the manifest was read
    seen = []
    for _ in range(len(data.sampler) * 2):  # two epochs
        batch = data.next_batch()
        seen += batch["ids"]
        inputs = batch["features"] if cache else batch["audio"]
        assert len(inputs) == len(batch["ids"]) == len(batch["prompt_ids"]) == len(batch["target_ids"])
        assert batch["n_target_tokens"] == sum(map(len, batch["target_ids"])) and model(batch)["loss"].isfinite()
    gone = {r.id for r in rows if r.audio == rows[0].audio}
    assert seen and not gone & set(seen)
    assert data.bad_clips.keys() == {str(broken)}
    [warning] = [line for line in said if "left out of its batches" in line]
    assert warning.startswith(f"warning: {broken}: cannot decode audio")


def _a_broken_clip(setup, tmp_path, cache, **over):
    """The tiny corpus' rows on copies of its audio, the copy of the first row's clip (damaged now where the cache is
    to be filled, else left for the test to damage), and a data section over them."""
    rows = read_manifest(setup["manifest"])
    (tmp_path / "audio").mkdir()
    for r in rows:
        copy = tmp_path / "audio" / Path(r.audio).name
        if not copy.exists():
            copy.write_bytes(Path(r.audio).read_bytes())
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, [replace(r, audio=str(tmp_path / "audio" / Path(r.audio).name)) for r in rows])
    broken = tmp_path / "audio" / Path(rows[0].audio).name
    if cache == "filled":
        broken.write_bytes(b"RIFF not audio" * 20)
    folder = str(tmp_path / "cache") if cache else None
    return rows, broken, _section(setup, folder, train=str(manifest), feature_cache=folder,
                                  precompute_features=cache == "filled", **over)


@pytest.mark.parametrize("workers,cache", [(0, None), (1, None), (0, "lazy"), (1, "lazy"), (0, "filled")])
def test_a_batch_whose_every_clip_cannot_be_decoded_is_replaced(tiny_setup, model, tmp_path, workers, cache):
    """data.batch_size 1 (with accumulation, the usual way to fit a large LLM), or a clip with a batch's worth of
    rows: a batch of only an undecodable clip's examples stopped the run ("every clip of a batch cannot be
    decoded"), every resume at the same place, and under torchrun the job. The examples after it train in its
    place, counted; the epoch keeps its number of batches (the ranks stay in step) and a resume draws the same."""
    rows, broken, section = _a_broken_clip(tiny_setup, tmp_path, cache, num_workers=workers, batch_size=1)
    said = []
    data = TrainingData(section, model, SOLO, log=said.append)
    broken.write_bytes(b"RIFF not audio any more" * 20)
    bad = sum(data.dataset.example(i, 0).audio == str(broken) for [i] in data.sampler.batches(0))
    assert bad  # epoch 0 draws the clip
    epoch, states, substituted = [], [], []
    for _ in range(len(data.sampler)):
        epoch.append(data.next_batch()["ids"])
        states.append(data.state_dict())
        substituted.append(data.substituted)
    assert all(len(ids) == 1 for ids in epoch) and data.substituted == bad and data.bad_clips.keys() == {str(broken)}
    assert not {r.id for r in rows if r.audio == rows[0].audio} & {i for ids in epoch for i in ids}
    assert sum("take its place" in line for line in said) == bad
    first = substituted.index(1)  # resumed just before it, by a run that has not met the clip yet
    resumed = TrainingData(section, model, SOLO, log=said.append)
    resumed.load_state_dict(states[first - 1] if first else {"epoch": 0, "batch": 0, "seed": section.seed})
    assert [resumed.next_batch()["ids"] for _ in epoch[first:first + 2]] == epoch[first:first + 2]


def test_an_unreachable_audio_folder_stops_the_run_after_a_few_examples_in_one_line(tiny_setup, model, tmp_path,
                                                                                   monkeypatch):
    """An unmounted volume made each rank open every example's clip after a batch that did not decode, a warning
    line per clip (a million of each), before it stopped. The search stops after SEARCH_EXAMPLES (here 2), said in
    one line naming the manifest, a reason and what to check; the clips it met are counted, not said."""
    rows, broken, section = _a_broken_clip(tiny_setup, tmp_path, None, num_workers=0, batch_size=1)
    said = []
    data = TrainingData(section, model, SOLO, log=said.append)
    for clip in (tmp_path / "audio").iterdir():
        clip.unlink()
    opened = []
    real = training_batches.load_audio
    monkeypatch.setattr(training_batches, "load_audio", lambda path, **kw: opened.append(path) or real(path, **kw))
    monkeypatch.setattr(training_data, "SEARCH_EXAMPLES", 2, raising=False)
    monkeypatch.setattr(training_data, "SEARCH_BATCHES", 1, raising=False)
    with pytest.raises(LLMSRTError) as caught:
        data.next_batch()
    assert len(opened) == 3 < len({r.audio for r in rows}) - 1  # the batch's clip and 2 others, not all 8
    assert len(set(opened)) == 3 and len(said) == 1 and "left out of its batches" in said[0]  # the batch's own clip
    message = str(caught.value)
    assert "\n" not in message
    assert re.match(r"data\.train '\S+/train\.jsonl': no clip of a batch, nor of the 2 example\(s\) ", message)
    assert "check that the audio folder is reachable" in message and re.search(r"\(e\.g\. \S+\.wav: ", message)


def test_an_error_in_a_dataloader_worker_reaches_the_user_as_its_own_line(tiny_setup, model, monkeypatch):
    """It came wrapped in the DataLoader's "Caught LLMSRTError in DataLoader worker process 0. Original Traceback
    (most recent call last): ..." text, many lines long."""
    def unusable(path, **kwargs):
        raise LLMSRTError(f"{path}: unusable; do something about it")

    monkeypatch.setattr(training_batches, "load_audio", unusable)  # the worker is forked after this
    data = TrainingData(_section(tiny_setup, None, feature_cache=None, num_workers=1), model, SOLO)
    with pytest.raises(LLMSRTError) as caught:
        data.next_batch()
    assert type(caught.value) is LLMSRTError
    assert re.fullmatch(r"\S+\.wav: unusable; do something about it", str(caught.value)), str(caught.value)


@pytest.mark.parametrize("cache", [None, "lazy", "filled"])
def test_a_clip_longer_than_whisper_s_window_despite_its_row_is_left_out(tiny_setup, model, tmp_path, cache):
    """A clip whose row says 0.6 s but whose audio runs 31 s passed the manifest check (the row's duration) and,
    without a feature cache, the audio loader (its 4 h limit): the encoder then stopped the training step ("audio #1:
    31.0 s is longer than Whisper's 30 s window", naming no file), and every resume. It is left out as a clip that
    cannot be decoded is, named, with or without a cache."""
    rows, long, section = _a_broken_clip(tiny_setup, tmp_path, cache, num_workers=0, batch_size=2,
                                         tasks={"srt": 1.0})
    write_wav(long, np.full(31 * SAMPLE_RATE, 0.1, dtype=np.float32))
    pair = [r for r in read_manifest(section.train) if r.tgt_lang][:2]  # the long clip's srt row and another's
    write_manifest(section.train, pair)
    said = []
    data = TrainingData(section, model, SOLO, log=said.append)
    batch = data.next_batch()
    assert len(data.sampler) == 1 and batch["ids"] == [pair[1].id] and model(batch)["loss"].isfinite()
    assert data.bad_clips.keys() == {str(long)}
    [warning] = [line for line in said if "left out of its batches" in line]
    assert warning.startswith(f"warning: {long}: ") and " 30 s" in warning


def test_a_rank_whose_log_is_quiet_still_says_which_clips_it_left_out(capsys):
    """Only rank 0 writes the run's log: another rank's skipped clips (7 of 8 of them on 8 GPUs) went unsaid."""
    said = []
    data = TrainingData.__new__(TrainingData)
    data.d, data.log, data.bad_clips = Dist(1, 2), said.append, {}
    data._note_bad([("a.wav", "a.wav: cannot decode audio")])
    assert said == [] and data.bad_clips == {"a.wav": "a.wav: cannot decode audio"}
    assert capsys.readouterr().err.startswith("[rank 1] warning: a.wav: cannot decode audio; left out of its batches")


def test_dev_set_is_spread_over_directions_and_sized_by_dev_size(tiny_setup, model, tmp_path):
    cfg = _section(tiny_setup, tmp_path / "f", dev=tiny_setup["manifest"], dev_size=4, tasks={"srt": 1.0},
                   num_workers=0)
    data = TrainingData(cfg, model, SOLO)
    assert Counter((data.dev[i].src, data.dev[i].tgt) for i in range(len(data.dev))) == {("eng", "deu"): 2,
                                                                                        ("deu", "eng"): 2}
    result = data.evaluate(model, contextlib.nullcontext())
    assert math.isfinite(result["dev_loss"])
    other = TrainingData(replace(cfg, seed=5), model, SOLO)
    assert {other.dev[i].id for i in range(4)} != {data.dev[i].id for i in range(4)}
    with pytest.raises(ConfigError, match="'data.dev_examples' is no longer a key here; write data.dev_size"):
        load_config(None, ["data.dev_examples=5"])


def test_several_training_manifests_with_sampling_weights(tiny_setup, model, tmp_path):
    rows = read_manifest(tiny_setup["manifest"])
    eng, deu = tmp_path / "eng.jsonl", tmp_path / "deu.jsonl"
    write_manifest(eng, [r for r in rows if r.src_lang == "eng"])
    write_manifest(deu, [r for r in rows if r.src_lang == "deu"])
    cfg = load_config(None, [f"data.train=[{eng}, {deu}]", "data.train_weights=[0.8, 0.2]",
                             f"data.feature_cache={tmp_path / 'f'}", "data.tasks={srt: 1.0}", "data.num_workers=0"])
    assert cfg.data.manifests == [str(eng), str(deu)]
    data = TrainingData(cfg.data, model, SOLO)
    assert Counter(data.dataset[i].src for i in range(len(data.dataset))) == {"eng": 16, "deu": 4}  # 8 rows each
    data = TrainingData(replace(cfg.data, train_weights=[0.2, 0.8]), model, SOLO)
    assert Counter(data.dataset[i].src for i in range(len(data.dataset))) == {"eng": 4, "deu": 16}
    # the weights share what the stage reads: an ASR stage on eng transcripts alone and deu's transcripts and
    # translations takes half its examples from each (all rows weighted first gave eng twice deu's)
    asr_only = tmp_path / "eng_asr.jsonl"
    write_manifest(asr_only, [r for r in rows if r.src_lang == "eng" and r.is_asr])
    data = TrainingData(replace(cfg.data, train=[str(asr_only), str(deu)], train_weights=[0.5, 0.5],
                                tasks={"asr": 1.0}), model, SOLO)
    assert Counter(data.dataset[i].src for i in range(len(data.dataset))) == {"eng": 4, "deu": 4}
    assert load_config(None, [f"data.train={eng}"]).data.manifests == [str(eng)]
    with pytest.raises(ConfigError, match="data.train_weights has 1 weights for 2 data.train manifests"):
        load_config(None, [f"data.train=[{eng}, {deu}]", "data.train_weights=[1.0]"])


RANKS_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch.distributed as dist
    from llm_srt.data import features
    from llm_srt.errors import LLMSRTError
    from llm_srt.prompts import Task
    from llm_srt.train import data as td, parallel

    calls = {"read": 0, "hash": 0}
    real_read, real_hash = td.read_manifest, features.content_hash

    def read(*args, **kwargs):
        calls["read"] += 1
        return real_read(*args, **kwargs)

    def hash_(path):
        calls["hash"] += 1
        return real_hash(path)

    td.read_manifest, features.content_hash = read, hash_
    dist.init_process_group("gloo")
    d = td.Dist(dist.get_rank(), dist.get_world_size())
    good, bad, out = sys.argv[1:4]
    rows = td.from_rank0(d, lambda: td.read_stage_rows(td.DataSection(train=good, dev=good, dev_size=4), Task.SRT))
    try:
        td.from_rank0(d, lambda: td.read_stage_rows(td.DataSection(train=bad), Task.SRT))
        error = None
    except LLMSRTError as e:
        error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    room = {}  # the feature cache's room, checked by all ranks together: rank 1's disk is the small one
    for free in (2000, 1000):
        try:
            room[free] = td.check_cache_room(out, 10**9 if d.rank == 0 else free, [600.0, 3, 2.0, d.rank], d)
        except LLMSRTError as e:
            room[free] = f"{type(e).__name__}: {e}"
    with open(f"{out}/rank{d.rank}.json", "w") as f:
        json.dump({"calls": calls, "train": [[r.id for r in part] for part in rows.train],
                   "dev": [r.id for r in rows.dev], "hashes": rows.hashes, "error": error, "room": room}, f)
    parallel.release_groups()  # as train ends: dist.destroy_process_group() alone aborted a rank at exit now and then
""")


def test_rank0_reads_and_hashes_once_and_the_other_rank_receives_it(tiny_setup, tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    bad = tmp_path / "bad.jsonl"
    lines = Path(tiny_setup["manifest"]).read_text().splitlines()
    bad.write_text("\n".join(lines[:3] + [lines[3].replace(".wav", "-gone.wav")]) + "\n")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                           str(script), tiny_setup["manifest"], str(bad), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["calls"] == {"read": 3, "hash": 8} and r1["calls"] == {"read": 0, "hash": 0}  # 8 distinct clips
    assert r0["train"] == r1["train"] and len(r0["train"][0]) == 16 and r0["dev"] == r1["dev"]
    assert r0["hashes"] == r1["hashes"] and len(r0["hashes"]) == 8
    assert r0["error"] == r1["error"] and r1["error"].startswith("ManifestError: ") and "bad row" in r1["error"]
    fits = {"bytes": 1200.0, "utterances": 6, "seconds": 4.0, "cached": 1, "free": 2000.0}
    assert r0["room"]["2000"] == r1["room"]["2000"] == fits  # the totals of both ranks, the least free space
    for rank in (r0, r1):  # 1200 bytes in all, 1000 free on rank 1: both ranks stop, none waits for the other
        assert rank["room"]["1000"].startswith("ConfigError: data.feature_cache: the encoder features of 6 "), rank
    assert "which has 0.0 MiB free on one rank" in r0["room"]["1000"]
    assert "which has 0.0 MiB free;" in r1["room"]["1000"]


@pytest.mark.cuda
def test_on_cuda_batches_arrive_on_the_gpu_and_the_cache_fills_in_bf16(tiny_setup, tmp_path):
    """The GPU path of the same code: pinned batches moved without blocking, the encoder under autocast in bf16."""
    kwargs = {"num_queries": 4, "hidden_size": 32, "num_layers": 1, "num_heads": 4, "intermediate_size": 64}
    gpu = SpeechLLM(SpeechLLMConfig(encoder=tiny_setup["whisper"], llm=tiny_setup["llm"], adapter_kwargs=kwargs,
                                    dtype="bfloat16"), device="cuda")
    data = TrainingData(_section(tiny_setup, tmp_path / "f", num_workers=2), gpu, SOLO)
    assert data._loader().pin_memory
    batch = data.next_batch()
    assert batch["features"].device.type == "cuda" and batch["feature_mask"].device.type == "cuda"
    clips = sorted({e.audio for e in data.dataset})
    assert all(f is not None and np.isfinite(f).all() for f in data.cache.lookup(clips))
    out = gpu(batch)
    assert out["loss"].isfinite() and out["n_tokens"] == batch["n_target_tokens"]
    out["loss"].backward()
    assert all(p.grad is not None for p in gpu.adapter.parameters() if p.requires_grad)


def test_worker_default_is_two_on_cuda_and_none_on_the_cpu():
    from llm_srt.train.data import loader_workers

    assert loader_workers(None, torch.device("cpu")) == 0
    assert loader_workers(None, torch.device("cuda", 0)) == 2
    assert loader_workers(3, torch.device("cpu")) == 3 and loader_workers(0, torch.device("cuda", 0)) == 0


def test_text_only_mt_beside_speech_comes_in_batches_of_its_own(tiny_setup, model, tmp_path):
    """data.tasks {srt, mt}: each batch all speech (features from the cache) or all text (none, no audio read), in
    one shuffled order; the model trains on either kind."""
    data = TrainingData(_section(tiny_setup, tmp_path / "f", num_workers=0, tasks={"srt": 0.7, "mt": 0.3}), model,
                        SOLO)
    batches = _take(data, len(data.sampler))
    kinds = []
    for b in batches:
        text = set(b["tasks"]) == {"mt"}
        assert text or "mt" not in b["tasks"], b["tasks"]
        assert training_data.has_speech(b) == (not text) == ("features" in b)
        assert "audio" not in b and "pending_audio" not in b
        assert model(b)["loss"].isfinite()
        kinds.append(text)
    assert any(kinds) and not all(kinds)
    assert training_data.mixes_text({"srt": 0.7, "mt": 0.3}) and not training_data.mixes_text({"mt": 1.0})
    assert not training_data.mixes_text({"srt": 0.7, "asr": 0.3})
    with pytest.raises(ConfigError, match="smaller share"):
        TrainingData(_section(tiny_setup, tmp_path / "f", tasks={"mt": 0.6, "srt": 0.4}), model, SOLO)


def test_a_dev_set_with_no_example_asked_for_says_so_not_that_it_has_no_rows(tiny_setup, model, tmp_path):
    """data.dev with dev_size 0 and dev_decode 0 chooses no dev row: that was said as "data.dev ... has no
    translation rows for this stage's srt task", of a dev set full of them."""
    messages = []
    cfg = _section(tiny_setup, None, feature_cache=None, dev=tiny_setup["manifest"], dev_size=0, dev_decode=0,
                   tasks={"srt": 1.0}, num_workers=0)
    assert not TrainingData(cfg, model, SOLO, log=messages.append).has_dev
    assert [m for m in messages if m.startswith("warning")] == [
        "warning: data.dev_size is 0: no dev loss and no best checkpoint (nor dev scores: data.dev_decode is 0 too)"]


def test_a_dev_set_that_scores_no_token_gives_no_dev_loss_and_says_so(tiny_setup, model, tmp_path):
    messages = []
    cfg = _section(tiny_setup, tmp_path / "f", dev=tiny_setup["manifest"], dev_size=0, dev_decode=2,
                   tasks={"srt": 1.0}, num_workers=0)
    data = TrainingData(cfg, model, SOLO, log=messages.append)
    assert data.evaluate(model, contextlib.nullcontext())["dev_loss"] is None  # not 0.0, never a best checkpoint
    assert [m for m in messages if m.startswith("warning")] == [
        "warning: data.dev_size is 0: no dev loss and no best checkpoint (only data.dev_decode's scores)"]
    asr_only = tmp_path / "asr_dev.jsonl"
    write_manifest(asr_only, [r for r in read_manifest(tiny_setup["manifest"]) if r.is_asr])
    messages.clear()
    data = TrainingData(replace(cfg, dev=str(asr_only), dev_size=4), model, SOLO, log=messages.append)
    assert not data.has_dev
    assert [m for m in messages if m.startswith("warning")] == [
        f"warning: data.dev {asr_only} has no translation rows for this stage's srt task: no dev loss and no best "
        "checkpoint"]


class _Recorder:
    """Records the ids of each batch SpeechLLM's forward and generate_ids get (patched on the class: dev decoding
    takes the SpeechLLM itself, whose tokenizer and tags it reads); generate_ids writes "hyp <id>"."""

    def __init__(self, monkeypatch):
        self.forward, self.decoded = [], []
        forward = SpeechLLM.forward

        def forwarded(model, batch, **kwargs):
            self.forward.append(batch["ids"])
            return forward(model, batch, **kwargs)

        def generate_ids(model, batch, options, **kwargs):
            self.decoded.append(batch["ids"])
            return model.tokenizer([f"hyp {i}" for i in batch["ids"]], add_special_tokens=False)["input_ids"]

        monkeypatch.setattr(SpeechLLM, "forward", forwarded)
        monkeypatch.setattr(SpeechLLM, "generate_ids", generate_ids)


def test_a_dev_batch_whose_every_clip_cannot_be_decoded_is_not_run_nor_scored(tiny_setup, model, tmp_path,
                                                                              monkeypatch):
    """A dev batch of only an undecodable clip stopped the evaluation (and the run). Then it was replaced at every
    evaluation, its replacement run through forward and generate and thrown away, each time said again and added to
    training's count of replaced batches. Without a sharded model it is skipped (not run, not scored), said once;
    the dev loss and the decoded sample are the other examples' alone."""
    rows, broken, section = _a_broken_clip(tiny_setup, tmp_path, None, num_workers=0, batch_size=1,
                                           tasks={"srt": 1.0})
    dev = tmp_path / "dev.jsonl"
    write_manifest(dev, [r for r in read_manifest(section.train) if r.tgt_lang][:3])  # the clip's and 2 others'
    said = []
    data = TrainingData(replace(section, dev=str(dev), dev_decode=64), model, SOLO, log=said.append)
    broken.write_bytes(b"RIFF not audio any more" * 20)
    decoded = []
    monkeypatch.setattr(dev_sample, "dev_scores", lambda task, examples, hyps, tags: decoded.append(hyps) or {})
    recorder = _Recorder(monkeypatch)
    results = [data.evaluate(model, contextlib.nullcontext()) for _ in range(2)]
    good = [[data.dev[i].id] for i in range(len(data.dev)) if data.dev[i].audio != str(broken)]
    assert len(good) == len(data.dev) - 1
    assert recorder.forward == recorder.decoded == good * 2  # nothing run in the undecodable batch's place
    assert decoded == [[f"hyp {i}" for [i] in good]] * 2 and results[0] == results[1]
    assert data.substituted == 0 and len(data.dev_unscored) == 1
    assert sum("left out of every evaluation" in line for line in said) == 1
    with torch.no_grad():  # evaluate left the model in eval mode: no dropout
        scored = [model(data.batch_of([e])) for e in data.dev if e.audio != str(broken)]
    tokens = sum(float(out["n_tokens"]) for out in scored)
    assert results[0]["dev_loss"] == pytest.approx(sum(float(o["loss"] * o["n_tokens"]) for o in scored) / tokens)


@pytest.mark.parametrize("cache", [True, False])
def test_dev_decoding_gives_each_row_evaluate_s_budget_and_an_srt_row_its_tags(tiny_setup, model, tmp_path,
                                                                               monkeypatch, cache):
    """Dev decoding ran every row to DecodingOptions' 256 tokens, without SRT's forced tags, though its BLEU is to
    pick the checkpoint `llm-srt evaluate` would: an 8 s clip into Japanese (evaluate's budget: 360) was cut, and an
    SRT row that ended before its tags scored nothing. Each row now decodes as evaluate's does: to its own budget
    (`infer.item_budget` of its clip, under infer's MAX_NEW_TOKENS), the batch to the largest, with SRT's on_end."""
    from llm_srt import infer
    from llm_srt.model.protocol import Item

    short = next(r for r in read_manifest(tiny_setup["manifest"]) if r.src_lang == "eng" and r.tgt_lang == "deu")
    clip = tmp_path / "long.wav"
    write_wav(clip, 0.1 * np.random.default_rng(0).standard_normal(8 * SAMPLE_RATE).astype(np.float32))
    dev = tmp_path / "dev.jsonl"
    write_manifest(dev, [short, replace(short, id="eng-long-jpn", audio=str(clip), duration=8.0, tgt_lang="jpn",
                                        translation="ねこ", sentence_id="long")])
    section = _section(tiny_setup, None, feature_cache=str(tmp_path / "cache") if cache else None, dev=str(dev),
                       dev_decode=2, tasks={"srt": 1.0}, num_workers=0)
    data = TrainingData(section, model, SOLO, log=lambda *_: None)
    seen = []
    generate_ids = SpeechLLM.generate_ids

    def spy(self, batch, options, caps=None, on_end=None, **kwargs):
        seen.append((batch["ids"], options.max_new_tokens, caps, on_end))
        return generate_ids(self, batch, options, caps=caps, on_end=on_end, **kwargs)

    monkeypatch.setattr(SpeechLLM, "generate_ids", spy)
    data.evaluate(model, contextlib.nullcontext())
    [(ids, most, caps, on_end)] = seen
    rows = {r.id: r for r in read_manifest(dev)}
    budgets = [infer.item_budget(Item(load_audio(rows[i].audio), "eng", rows[i].tgt_lang, Task.SRT),
                                 infer.MAX_NEW_TOKENS) for i in ids]
    assert caps == budgets and most == max(budgets) > 256  # evaluate's budgets (and cap), not 256 for each
    assert [model.tokenizer.decode(on_end(k, [])) for k in range(len(ids))] == [
        f"<|eng|><|{rows[i].tgt_lang}|>" for i in ids]  # a row ending before its tags is given them


def test_a_sharded_model_runs_the_next_dev_examples_in_an_undecodable_batch_s_place(tiny_setup, model, tmp_path):
    """FSDP's forward needs every rank: there the batch is replaced (not scored), apart from training's count."""
    rows, broken, section = _a_broken_clip(tiny_setup, tmp_path, None, num_workers=0, batch_size=1,
                                           tasks={"srt": 1.0})
    dev = tmp_path / "dev.jsonl"
    write_manifest(dev, [r for r in read_manifest(section.train) if r.tgt_lang][:3])
    data = TrainingData(replace(section, dev=str(dev)), model, SOLO, log=[].append)
    broken.write_bytes(b"RIFF not audio any more" * 20)
    examples = [data.dev[i] for i in range(len(data.dev))]
    [at] = [i for i, e in enumerate(examples) if e.audio == str(broken)]
    batch, own = data._dev_batch(examples, at, replace=True)
    assert not own and batch["ids"] == [examples[(at + 1) % len(examples)].id] and data.substituted == 0
    assert data._dev_batch(examples, at, replace=False) == (None, False) and len(data.dev_unscored) == 1


def test_a_training_clip_longer_than_whisper_s_window_is_a_bad_row(tiny_setup, tmp_path):
    rows = [json.loads(line) for line in Path(tiny_setup["manifest"]).read_text().splitlines()]
    audio = Path(tiny_setup["manifest"]).parent / rows[0]["audio"]
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({**r, "audio": str(audio), "duration": 30.5 if k == 1 else r["duration"]})
                            + "\n" for k, r in enumerate(rows)))
    with pytest.raises(LLMSRTError, match=r"long.jsonl:2: 30.5 s is longer than the 30 s"):
        training_data.read_stage_rows(DataSection(train=str(long)), Task.ASR, hashes=False)
    with pytest.warns(UserWarning, match="skipped 1 bad rows"):
        kept = training_data.read_stage_rows(DataSection(train=str(long), skip_bad=True), Task.ASR, hashes=False)
    assert len(kept.train[0]) == len(rows) - 1


def test_a_text_only_stage_does_not_check_audio_it_never_reads(tiny_setup, tmp_path):
    """data.tasks {mt: 1}: rows whose audio is gone (or longer than Whisper's window) still train text MT; a speech
    stage on the same manifest refuses them, naming the line."""
    rows = [json.loads(line) for line in Path(tiny_setup["manifest"]).read_text().splitlines()]
    gone = tmp_path / "gone.jsonl"
    gone.write_text("".join(json.dumps({**r, "audio": str(tmp_path / f"missing{k}.wav"), "duration": 31.0}) + "\n"
                            for k, r in enumerate(rows)))
    text = training_data.read_stage_rows(DataSection(train=str(gone), dev=str(gone), tasks={"mt": 1.0}), Task.MT,
                                         hashes=False)
    assert len(text.train[0]) == len(rows) and text.dev
    with pytest.raises(LLMSRTError, match=r"gone.jsonl:1: "):
        training_data.read_stage_rows(DataSection(train=str(gone), tasks={"srt": 1.0}), Task.SRT, hashes=False)


def test_data_skip_bad_skips_a_translation_row_without_the_transcript_its_task_reads(tiny_setup, model, tmp_path):
    """One translation row with an empty transcript stopped an srt stage with data.skip_bad too ("task srt reads
    each translation row's transcript"); it is skipped there (train and dev rows), with one warning giving the count.
    Without data.skip_bad it still stops, naming the row."""
    rows = read_manifest(tiny_setup["manifest"])
    blank = next(k for k, r in enumerate(rows) if r.tgt_lang)  # the first translation row
    manifest = tmp_path / "blank.jsonl"
    write_manifest(manifest, [replace(r, transcript="") if k == blank else r for k, r in enumerate(rows)])
    cfg = _section(tiny_setup, None, feature_cache=None, train=str(manifest), dev=str(manifest), tasks={"srt": 1.0},
                   num_workers=0, dev_size=64)
    with pytest.raises(LLMSRTError, match=rf"^data.train .*blank.jsonl:{blank + 1}: task srt reads each translation "
                                          rf"row's transcript, but 1 of this manifest's have none \(first: id "
                                          rf"{rows[blank].id}\)"):
        TrainingData(cfg, model, SOLO)
    with pytest.warns(UserWarning) as said:
        data = TrainingData(replace(cfg, skip_bad=True), model, SOLO)
    skipped = [str(w.message) for w in said if "without a transcript" in str(w.message)]
    assert skipped == [f"data.{part} {manifest}: skipped 1 translation rows without a transcript, which task srt reads "
                       f"(first: id {rows[blank].id})" for part in ("train", "dev")]
    translation = [r.id for r in rows if r.tgt_lang]
    assert sorted(data.dataset[i].id for i in range(len(data.dataset))) == sorted(set(translation) - {rows[blank].id})
    assert len(data.dev) == len(translation) - 1
    TrainingData(replace(cfg, skip_bad=True, tasks={"s2tt": 1.0}), model, SOLO)  # reads no transcript: no warning


def test_a_resume_over_other_rows_that_data_skip_bad_read_is_refused(tiny_setup, model, tmp_path):
    """data.skip_bad: a clip gone between a run and its resume drops its rows while the manifest, whose hash the
    resume compares, is unchanged; the saved position, applied to the epoch reshuffled over the rows left, trained
    some examples twice and never reached others, silently. The count and a digest of the ids are saved with the
    position and compared. A position saved before them, or over the same rows, resumes as before."""
    rows, clip, cfg = _a_broken_clip(tiny_setup, tmp_path, None, num_workers=0, skip_bad=True)
    first = TrainingData(cfg, model, SOLO)
    _take(first, 2)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["examples"] == len(first.dataset) and len(state["ids"]) == 16
    assert TrainingData(cfg, model, SOLO).load_state_dict(state) == 0  # the same rows
    clip.unlink()
    with pytest.warns(UserWarning, match="skipped 2 bad rows"):
        resumed = TrainingData(cfg, model, SOLO)
    n = len(resumed.dataset)
    assert n < state["examples"]
    with pytest.raises(LLMSRTError, match=rf"^data.train .*train.jsonl'?: the checkpoint's data position counts "
                                          rf"{state['examples']} examples, this run reads {n}, and the rest of the "
                                          r"epoch would train some twice and never reach others: data.skip_bad "
                                          r"dropped other rows than before \(clips missing or changed since: .*; "
                                          r"restore those clips, or add allow_changes=true to go on so$"):
        resumed.load_state_dict(state)
    said = []
    resumed.log = said.append
    resumed.load_state_dict(state, allow_changes=True)  # taken as it is, said
    assert (resumed.sampler.epoch, resumed.sampler.batch) == (state["epoch"], state["batch"])
    assert len(said) == 1 and said[0].startswith("warning: data.train ") and said[0].endswith("(allow_changes)")
    assert "skip_bad" not in said[0]  # (allow_changes may have changed the manifests: no cause guessed)
    with pytest.raises(LLMSRTError, match=rf"counts {n} examples, this run reads {n} other ones, .*: data.skip_bad"):
        resumed.load_state_dict({**state, "examples": n})
    # a manifest of other rows without data.skip_bad: a change the resume names itself (allow_changes goes on)
    left = tmp_path / "left.jsonl"
    write_manifest(left, [r for r in read_manifest(cfg.train, check_audio=False) if r.audio != str(clip)])
    TrainingData(replace(cfg, train=str(left), skip_bad=False), model, SOLO).load_state_dict(state)
    older = {k: v for k, v in state.items() if k not in ("examples", "ids")}  # saved before they were
    resumed.load_state_dict(older)
    assert (resumed.sampler.epoch, resumed.sampler.batch) == (state["epoch"], state["batch"])


def test_training_on_rows_marked_dev_or_test_warns(tiny_setup, tmp_path):
    """The manifests' split field was never read: a test manifest given as data.train trained on without a word."""
    rows = [json.loads(line) for line in Path(tiny_setup["manifest"]).read_text().splitlines()]
    held = tmp_path / "held.jsonl"
    base = Path(tiny_setup["manifest"]).parent
    held.write_text("".join(json.dumps({**r, "audio": str(base / r["audio"]), "split": "test" if k < 3 else "train"})
                            + "\n" for k, r in enumerate(rows)))
    with pytest.warns(UserWarning, match=r"held.jsonl: 3 of its rows are marked split test \(e.g. id eng-"):
        training_data.read_stage_rows(DataSection(train=str(held)), Task.SRT, hashes=False)


def _node_local_cache(rank: int, world: int, store: str, setup: dict, root: str) -> None:
    """Two ranks on two "nodes" (LOCAL_WORLD_SIZE 1), each with the feature cache on its own disk; the default
    group's collectives time out after 2 s, rank 0 reads the corpus for longer than that, and rank 1 encodes each
    batch of features for longer than that (a slower node, or one whose disk is fresh). One clip cannot be decoded:
    its attempts are counted."""
    import os
    import time
    from datetime import timedelta

    import torch.distributed as dist

    from llm_srt.errors import AudioError

    torch.set_num_threads(1)
    os.environ["LOCAL_WORLD_SIZE"] = "1"
    gloo_when_all_arrived(store, rank, world, timedelta(seconds=2))
    try:
        real = training_data.read_stage_rows
        training_data.read_stage_rows = lambda *a, **k: (time.sleep(4), real(*a, **k))[1]
        if rank == 1:
            encode = TrainingData._encode
            TrainingData._encode = lambda self, audios: (time.sleep(3), encode(self, audios))[1]
        bad, attempts, decode = read_manifest(setup["manifest"])[0].audio, [0], features.load_audio

        def load(data, name=None, **kwargs):
            if name == bad:
                attempts[0] += 1
                raise AudioError(f"{bad}: cannot decode audio")
            return decode(data, name=name, **kwargs)
        features.load_audio = load
        model = SpeechLLM(SpeechLLMConfig(encoder=setup["whisper"], llm=setup["llm"], adapter="linear"))
        cache = Path(root) / f"node{rank}"
        cfg = DataSection(train=setup["manifest"], batch_size=2, feature_cache=str(cache), tasks={"asr": 1.0})
        data = TrainingData(cfg, model, Dist(rank, world), log=lambda *_: None)
        audio = sorted({e.audio for e in data.dataset})
        missing = sum(found is None for found in data.cache.lookup(audio))
        (Path(root) / f"rank{rank}.json").write_text(json.dumps({"audio": len(audio), "missing": missing,
                                                                 "attempts": attempts[0]}))
    finally:
        parallel.release_groups()  # the host groups too: destroy_process_group alone aborted a rank at exit


class _Decoder:
    """Stands in for the trained model's forward and decoding in `TrainingData.evaluate`, patched on SpeechLLM by
    `patch` (setattr, or monkeypatch's; dev decoding takes the SpeechLLM itself, whose tokenizer and tags it reads):
    a fixed loss, and as decoded ids each example's reference target's; it counts the examples it decodes."""

    def __init__(self, patch=setattr):
        self.decoded, self.synced = 0, set()

        def forward(model, batch, **kwargs):
            return {"loss": torch.tensor(1.0), "n_tokens": torch.tensor(len(batch["targets"]))}

        def generate_ids(model, batch, options, synced_ranks=False, **kwargs):
            self.decoded += len(batch["targets"])
            self.synced.add(synced_ranks)
            return model.tokenizer(list(batch["targets"]), add_special_tokens=False)["input_ids"]

        patch(SpeechLLM, "forward", forward)
        patch(SpeechLLM, "generate_ids", generate_ids)


def _dev_decoding(rank: int, world: int, store: str, setup: dict, root: str, sharded: bool) -> None:
    """One of `world` ranks scoring a dev sample of 5 (batch 2) with `_Decoder`."""
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        model = SpeechLLM(SpeechLLMConfig(encoder=setup["whisper"], llm=setup["llm"], adapter="linear"))
        cfg = DataSection(train=setup["manifest"], dev=setup["manifest"], batch_size=2, feature_cache=None,
                          tasks={"srt": 1.0}, dev_size=4, dev_decode=5)
        data = TrainingData(cfg, model, Dist(rank, world), log=lambda *_: None)
        decoder = _Decoder()
        result = data.evaluate(model, contextlib.nullcontext(), sharded=sharded)
        (Path(root) / f"dev{rank}.json").write_text(json.dumps({"result": result, "decoded": decoder.decoded,
                                                                "synced": sorted(decoder.synced)}))
    finally:
        parallel.release_groups()  # the host groups too: destroy_process_group alone aborted a rank at exit


@pytest.mark.long(12)
@pytest.mark.parametrize("sharded", [True, pytest.param(False, marks=pytest.mark.slow)])  # slow: the FSDP case
#   covers the shares and the gathering; DDP's differs only in decoding outside lockstep
def test_the_dev_sample_is_decoded_a_share_per_rank_and_scored_on_rank_0(tiny_setup, tmp_path, sharded,
                                                                         monkeypatch):
    """Each rank decodes its share of the dev sample (under FSDP in step, one batch repeated by a rank short of
    them, not counted): the texts gathered on rank 0 score what one process scores. Before, every rank decoded the
    whole sample under FSDP, and rank 0 alone under DDP."""
    import torch.multiprocessing as mp

    cfg = DataSection(train=tiny_setup["manifest"], dev=tiny_setup["manifest"], batch_size=2, feature_cache=None,
                      tasks={"srt": 1.0}, dev_size=4, dev_decode=5)
    model = SpeechLLM(SpeechLLMConfig(encoder=tiny_setup["whisper"], llm=tiny_setup["llm"], adapter="linear"))
    _Decoder(monkeypatch.setattr)
    one = TrainingData(cfg, model, SOLO, log=lambda *_: None).evaluate(model, contextlib.nullcontext())
    assert one["dev_wer"] == 0.0 and one["dev_loss"] == 1.0  # the reference texts, parsed and scored
    alone = _Decoder(monkeypatch.setattr)  # FSDP in one process: no rank to keep in step, so the fast greedy loop
    assert TrainingData(cfg, model, SOLO, log=lambda *_: None).evaluate(model, contextlib.nullcontext(),
                                                                         sharded=sharded) == one
    assert alone.synced == {False}
    mp.spawn(_dev_decoding, args=(2, str(tmp_path / "store"), dict(tiny_setup), str(tmp_path), sharded), nprocs=2,
             join=True)
    got = [json.loads((tmp_path / f"dev{r}.json").read_text()) for r in (0, 1)]
    assert got[0]["result"] == pytest.approx(one)
    assert [g["decoded"] for g in got] == [3, 4 if sharded else 2]  # rows 0-1 and 4 | 2-3 (and 0-1 again, in step)
    assert [g["synced"] for g in got] == [[sharded]] * 2  # FSDP ranks decode in step; DDP's each alone


def _refused_cache(rank: int, world: int, store: str, setup: dict, root: str, refuse: bool = True) -> None:
    """Two ranks on two "nodes" sharing one feature cache whose disk refuses every file (a quota statvfs does not
    see), or (`refuse` False) on one node, their cache storing; each rank counts the clips it encodes and the cache
    files it looks for."""
    import os
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["LOCAL_WORLD_SIZE"] = "1" if refuse else str(world)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        def refused(*a, **k):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")

        if refuse:
            features.atomic_file = refused
        looked = []
        has = FeatureCache.has
        FeatureCache.has = lambda self, audio: (looked.append(audio), has(self, audio))[1]
        encoded = []
        encode = TrainingData._encode
        TrainingData._encode = lambda self, audios: (encoded.append(len(audios)), encode(self, audios))[1]
        model = SpeechLLM(SpeechLLMConfig(encoder=setup["whisper"], llm=setup["llm"], adapter="linear"))
        cfg = DataSection(train=setup["manifest"], batch_size=2, feature_cache=str(Path(root) / "cache"),
                          tasks={"asr": 1.0})
        data = TrainingData(cfg, model, Dist(rank, world), log=lambda *_: None)
        audio = len({e.audio for e in data.dataset})
        (Path(root) / f"rank{rank}.json").write_text(json.dumps({"audio": audio, "encoded": sum(encoded),
                                                                 "looked": len(looked)}))
    finally:
        parallel.release_groups()  # the host groups too: destroy_process_group alone aborted a rank at exit


@pytest.mark.slow  # make test: the two-node fill below, and a refusing disk in one process (above)
@pytest.mark.long(10)
def test_features_a_disk_refused_are_not_encoded_again_by_every_node_before_step_1(tiny_setup, tmp_path):
    """A shared cache whose stores fail (a quota: the free-space check passed) lacks features after the fill: not
    because each node has a disk of its own, so no node encodes every other rank's share again (which doubled the
    fill's time and stored nothing)."""
    import torch.multiprocessing as mp

    mp.spawn(_refused_cache, args=(2, str(tmp_path / "store"), dict(tiny_setup), str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert got[0]["audio"] > 2 and got[0]["encoded"] + got[1]["encoded"] == got[0]["audio"]


@pytest.mark.slow  # make test: the two-node fill below
@pytest.mark.long(10)
def test_ranks_of_one_node_do_not_look_for_every_clip_after_the_fill(tiny_setup, tmp_path):
    """On one node (or a disk every node shares, seen from a sample of the other nodes' shares) nothing can be
    missing after the fill: no rank looks for every clip of the corpus (millions of file lookups per rank on a
    network disk, each rank), only for its own share before encoding it."""
    import torch.multiprocessing as mp

    mp.spawn(_refused_cache, args=(2, str(tmp_path / "store"), dict(tiny_setup), str(tmp_path), False), nprocs=2,
             join=True)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert got[0]["encoded"] + got[1]["encoded"] == got[0]["audio"]
    assert [g["looked"] for g in got] == [got[0]["audio"] // 2] * 2  # before: its share, then every clip


@pytest.mark.slow  # two processes (~35 s); make test: test_rank0_reads_and_hashes_once_and_the_other_rank_receives_it
def test_each_node_fills_its_own_feature_cache_and_ranks_wait_for_rank_0_s_reading(tiny_setup, tmp_path):
    """A cache on each node's own disk holds every utterance after the fill (not only that node's ranks' share,
    which left the rest to be encoded inside the training steps), and the ranks waiting while rank 0 reads the
    corpus, or while another rank fills its share, are not held to the collectives' timeout
    (distributed_timeout_min; here 2 s against a 4 s read and 3 s batches). A clip that cannot be decoded is tried
    by the rank whose share holds it alone: it was taken for a clip the other node had encoded, and tried again on
    both nodes."""
    import torch.multiprocessing as mp

    mp.spawn(_node_local_cache, args=(2, str(tmp_path / "store"), dict(tiny_setup), str(tmp_path)), nprocs=2,
             join=True)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert got[0]["audio"] > 2 and all(g["audio"] == got[0]["audio"] and g["missing"] == 1 for g in got)
    assert sorted(g["attempts"] for g in got) == [0, 2]  # its batch, then the clip alone (`_features`)
