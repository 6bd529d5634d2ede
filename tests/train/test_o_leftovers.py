"""Training leftovers: what one stage leaves behind for the next (torch's threads)."""

import pytest
import torch

from llm_srt.train import recipe

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
