"""Training's DataLoader workers hand their batches over through /dev/shm: its free space is checked before the feature
cache fills (a container's 64 MB killed a worker mid-run with torch's "bus error"). disk_usage is monkeypatched: no
real /dev/shm changes."""

import shutil
import sys
from collections import namedtuple
from dataclasses import replace

import pytest

from llm_srt.data.manifest import Row, read_manifest, write_manifest
from llm_srt.errors import ConfigError
from llm_srt.train import room
from llm_srt.train.data import DataSection, TrainingData
from llm_srt.train.parallel import Dist
from llm_srt.train.room import check_shared_memory

Usage = namedtuple("Usage", "total used free")
MiB = 2**20
BATCH = 16 * 1500 * 1280 * 2  # README's batch: 16 Whisper-large-v3 clips of 30 s in float16, 61 MB


@pytest.fixture
def shm(monkeypatch, tmp_path):
    """set_free(n): /dev/shm (a folder of tmp_path in its place) has n bytes free; set_free.asked: each look at it."""
    asked, real = [], shutil.disk_usage
    monkeypatch.setattr(room, "SHARED_MEMORY", str(tmp_path / "shm"))
    (tmp_path / "shm").mkdir()

    def set_free(free: int):
        def usage(path):
            if str(path) != room.SHARED_MEMORY:  # (a feature cache's disk)
                return real(path)
            asked.append(path)
            return Usage(64 << 30, (64 << 30) - free, free)
        monkeypatch.setattr(shutil, "disk_usage", usage)

    set_free.asked = asked
    return set_free


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/shm is Linux's")
def test_readme_s_node_is_warned_below_its_need_and_refused_below_a_batch_per_worker(shm, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    said = []

    def check(workers=2):
        check_shared_memory(workers, 16, 1500, 1280, 2, Dist(), said.append)

    need = 8 * 2 * 5 * BATCH  # ranks x workers x (4 ahead + 1 handed over) x a batch: about 5 GB
    shm(need)  # just enough
    check()
    assert said == []
    shm(need - 1)
    check()
    assert said == [f"warning: {room.SHARED_MEMORY} has {(need - 1) / MiB:,.1f} MiB free, and training's "
                    f"DataLoader workers may hold {need / MiB:,.1f} MiB there (8 rank(s) x 2 workers x 5 batches x "
                    "58.6 MiB: 16 x 1500 frames x 1280 x 2 bytes): a worker that runs short dies with torch's \"bus "
                    "error\", the run with it; give the container --ipc=host or --shm-size 5g or more, or set "
                    "data.num_workers: 0 (batches built in the training process)"]
    shm(2 * BATCH)  # one batch per worker of this rank: warned, not refused
    check()
    assert len(said) == 2
    shm(64 * 10**6)  # Docker's default
    with pytest.raises(ConfigError, match=r"^data.num_workers: .*shm has 61.0 MiB free, less than one batch for each "
                       r"of a rank's 2 DataLoader workers \(2 x 58.6 MiB: 16 x 1500 frames x 1280 x 2 bytes\): they "
                       r"would die with a bus error; give the container --ipc=host or --shm-size 5g or more, or set "
                       r"data.num_workers: 0"):
        check()
    asked = len(shm.asked)
    check(workers=0)  # batches built in the training process: nothing passes through /dev/shm
    assert len(shm.asked) == asked and len(said) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/shm is Linux's")
def test_a_stage_is_checked_for_its_longest_clip_before_the_cache_fills(tiny_setup, model, tmp_path, shm,
                                                                        monkeypatch):
    """The largest batch: data.batch_size x the frames of the longest clip any epoch reads (here an ASR-only clip
    that a 0.1 share draws in a later epoch, not epoch 0) x the encoder's dim x 2 bytes (float16). Short of one
    batch per worker, refused before anything is encoded; short of the node's need, said, and the stage goes on."""
    import tiny

    from llm_srt.audio import write_wav

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)  # one rank

    rows = [r for r in read_manifest(tiny_setup["manifest"]) if not r.is_asr]  # clips of 0.6-0.9 s
    extra = []
    for k, seconds in enumerate([0.5, 0.6, 0.7, 0.8, 0.9, 1.5]):
        audio = tmp_path / f"only-asr-{k}.wav"
        write_wav(audio, tiny.tone(seconds, 200 + 40 * k, seed=10 + k))
        extra.append(Row(id=f"only-asr-{k}", audio=str(audio), duration=seconds, src_lang="eng", transcript="a tone",
                         tgt_lang="", translation="", split="train", corpus="tiny", sentence_id=f"t{k}"))
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, rows + extra)
    cfg = DataSection(train=str(manifest), feature_cache=str(tmp_path / "f"), batch_size=3, num_workers=2,
                      tasks={"srt": 0.9, "asr": 0.1})
    encoder = model.encoder
    batch = 3 * encoder.output_frames(1.5) * encoder.dim * 2
    assert encoder.output_frames(1.5) == 75 and encoder.output_frames(0.9) == 45

    shm(2 * batch - 1)
    with pytest.raises(ConfigError, match=rf"^data.num_workers: .* less than one batch for each of a rank's 2 "
                       rf"DataLoader workers \(2 x {batch / 2**20:.1f} MiB: 3 x 75 frames x 32 x 2 bytes\)"):
        TrainingData(cfg, model, Dist())
    assert not list(tmp_path.glob("f/**/*.npy"))  # refused before the fill
    shm(10 * batch - 1)
    logs = []
    data = TrainingData(cfg, model, Dist(), log=logs.append)
    assert data.dataset.example(next(i for i, e in enumerate(data.dataset) if e.task.value == "asr"), 0).duration < 1.5
    assert [m for m in logs if "/dev/shm" in m or "shm has" in m] == [
        f"warning: {room.SHARED_MEMORY} has {(10 * batch - 1) / MiB:,.1f} MiB free, and training's DataLoader "
        f"workers may hold {10 * batch / MiB:,.1f} MiB there (1 rank(s) x 2 workers x 5 batches x "
        f"{batch / MiB:,.1f} MiB: 3 x 75 frames x 32 x 2 bytes): a worker that runs short dies with torch's \"bus "
        "error\", the run with it; give the container --ipc=host or --shm-size 1g or more, or set data.num_workers: 0 "
        "(batches built in the training process)"]
    assert len(list(tmp_path.glob("f/**/*.npy"))) == 14 and data.next_batch()["ids"]
    asked = len(shm.asked)
    TrainingData(replace(cfg, num_workers=0), model, Dist())
    assert len(shm.asked) == asked  # no workers, no check
