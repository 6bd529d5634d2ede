"""Training leftovers: what one stage leaves behind for the next (torch's threads), and a final/ record that is JSON
but not the object it should be."""

import json
import shutil

import pytest
import torch

from llm_srt.errors import ConfigError
from llm_srt.train import recipe
from llm_srt.train.final import FINAL, RUN_SETTINGS

from .conftest import saved_every_step


def test_a_stages_threads_end_with_it(tiny_setup, tmp_path):
    """threads: N was set for the process and never undone: a curriculum's next stage with threads: 0 ("torch's
    default") ran on the earlier stage's count, and so did whatever the caller ran after train()."""
    before = torch.get_num_threads()
    threads = 1 if before != 1 else 2
    seen = []
    real = recipe.Recipe.setup_model

    def noting(self):
        seen.append(torch.get_num_threads())
        return real(self)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(recipe.Recipe, "setup_model", noting)
            recipe.train(saved_every_step(tiny_setup, tmp_path / "a", steps=1, threads=threads), log=lambda *_: None)
            assert seen == [threads]  # the stage itself ran on its count
            assert torch.get_num_threads() == before
            recipe.train(saved_every_step(tiny_setup, tmp_path / "b", steps=1), log=lambda *_: None)
        assert seen == [threads, before]  # threads: 0, after a stage with its own count: torch's default
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)  # (the other tests of this process)


@pytest.mark.parametrize("record", ["[1, 2]", "5", '"settings"'])
def test_a_final_run_settings_that_is_not_an_object_is_read_as_missing(base, tiny_setup, tmp_path, record):
    """final/run_settings.json holding JSON that is not an object (a list, a number) stopped every later run of the
    output_dir on a TypeError / AttributeError traceback; it is taken as a record that cannot be read (bad JSON
    was already): the newest checkpoint's settings are compared instead."""
    out = tmp_path / "run"
    shutil.copytree(base, out)
    (out / FINAL / RUN_SETTINGS).write_text(record + "\n")
    with pytest.raises(ConfigError, match=r"optim.lr 0.003 -> 0.001"):
        recipe.train(saved_every_step(tiny_setup, out, **{"optim.lr": 1e-3}), log=lambda *_: None)
    said = []
    recipe.train(saved_every_step(tiny_setup, out), log=said.append)
    assert any("already finished" in line for line in said)
