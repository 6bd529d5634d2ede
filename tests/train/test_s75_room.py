"""The room check before the first step names a checkpoint's own size, and asks for no more than it and its logs."""

import re
import shutil

import pytest

from llm_srt.errors import LLMSRTError
from llm_srt.train import checkpoint, recipe
from llm_srt.train.config import load_config

from .conftest import overrides

WIDE = "{num_queries: 4, hidden_size: 512, num_layers: 2, num_heads: 4, intermediate_size: 2048}"  # 6.9M trainable
MiB = 1 << 20


def _on_disk(folder) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def test_the_room_check_states_a_checkpoints_real_size_and_lets_a_run_that_can_save_through(tiny_setup, tmp_path,
                                                                                            monkeypatch):
    """A 2.5M-parameter run's checkpoint takes 30 MiB, yet the check said "one checkpoint of this run needs about 93
    MiB" (the 64 MiB margin added and called the checkpoint's), and refused a disk with 52 MiB free although the
    same run had saved with less. The message gives the checkpoint's own size, the logs' margin apart, and a disk
    with room for both trains."""
    def config(out):
        return load_config(None, overrides(tiny_setup, out, max_steps=2, save_every=2, keep_last=1,
                                          **{"model.adapter_kwargs": WIDE}))

    recipe.train(config(tmp_path / "ref"), log=lambda *_: None)  # what one checkpoint of this run takes on disk
    size = _on_disk(checkpoint.latest(tmp_path / "ref").path) / MiB
    real_usage = shutil.disk_usage(tmp_path)
    free = [10 * MiB]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real_usage._replace(free=free[0]))
    out = tmp_path / "run"
    with pytest.raises(LLMSRTError, match=r"run: 10 MiB free, and one checkpoint of this run needs about (\d+) MiB "
                                          r"\(6\.9M trainable parameters with AdamW's 2 moments\) and its logs "
                                          r"about 1 MiB until then; free space or choose another output_dir "
                                          r"\(keep_last 1 holds about (\d+) MiB") as e:
        recipe.train(config(out), log=lambda *_: None)
    assert "\n" not in str(e.value) and not (out / "checkpoints").exists()
    said, held = (int(n) for n in re.search(r"needs about (\d+) MiB.*holds about (\d+) MiB", str(e.value)).groups())
    assert abs(said - size) < 1 and abs(held - 2 * size) < 2, (said, held, size)  # the checkpoint's own size
    free[0] = int((size + 2) * MiB)  # room for the checkpoint and its logs, no more: it trains and saves
    assert recipe.train(config(out), log=lambda *_: None).is_dir() and checkpoint.latest(out).step == 2


def test_the_estimate_covers_what_a_checkpoint_writes(tiny_setup, tmp_path, monkeypatch):
    """The estimate held the tensors alone (weights and moments), a little short of the checkpoint on disk (its trainer
    state's JSON and RNG states, configs, checksums); it holds them all now, and not much more."""
    out = tmp_path / "run"
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=1, save_every=1, **{"model.adapter_kwargs": WIDE}))
    sizes = []
    real = checkpoint.check_room
    monkeypatch.setattr(checkpoint, "check_room", lambda folder, size, *a, **k: sizes.append(size) or
                        real(folder, size, *a, **k))
    recipe.train(cfg, log=lambda *_: None)
    on_disk = _on_disk(checkpoint.latest(out).path)
    assert on_disk <= sizes[0].total <= on_disk + MiB // 2, (on_disk, sizes[0])
    assert checkpoint.log_room(save_every=1, log_every=1) == checkpoint.LOG_ROOM  # a MiB at least
    assert checkpoint.log_room(save_every=20_000, log_every=1) > 32 * MiB  # each logged step's lines until the save
