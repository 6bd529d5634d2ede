"""A stage started with plain `train` from a folder whose stage was run again and interrupted: README's loop over
the stages went on after such a stop and trained the next stage from the older final/ without a word."""

import shutil

import pytest

from llm_srt.errors import ConfigError
from llm_srt.train import checkpoint, recipe
from llm_srt.train.config import load_config

from .conftest import overrides


class Stop(Exception):
    pass


def test_a_start_whose_stage_was_run_again_and_interrupted_is_refused_until_it_finishes(tiny_setup, tmp_path,
                                                                                        monkeypatch):
    """ASR finished at step 2, then run again with max_steps 4 and stopped after step 3's checkpoint: SMT from
    asr/final is refused in one line (the folder, the newest checkpoint's step against final/'s, both ways on);
    with the newer checkpoints removed it trains from final/ as it is, and once ASR finishes, from the new one."""
    asr, smt = tmp_path / "asr", tmp_path / "smt"

    def asr_cfg(steps):
        return load_config(None, overrides(tiny_setup, asr, max_steps=steps, save_every=1))

    def smt_cfg(init, out):
        return load_config(None, overrides(tiny_setup, out, max_steps=1, stage="smt", **{"model.init_from": init}))

    recipe.train(asr_cfg(2), log=lambda *_: None)
    real = recipe.Recipe.train_step

    def step(self):
        loss = real(self)
        if self.step == 4:
            raise Stop()  # after step 3's checkpoint
        return loss
    with monkeypatch.context() as m, pytest.raises(Stop):
        m.setattr(recipe.Recipe, "train_step", step)
        recipe.train(asr_cfg(4), log=lambda *_: None)
    assert checkpoint.latest(asr).step == 3

    said = []
    with pytest.raises(ConfigError) as refused:
        recipe.train(smt_cfg(asr / "final", smt), log=said.append)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"model.init_from: {asr / 'final'}: "), message
    assert f"checkpoint at step 3 ({asr / 'checkpoints' / 'step-00000003'}), newer than final/, which has 2 steps" \
        in message, message
    assert "run its train command again" in message and "remove its checkpoints past step 2" in message, message
    assert not any("initialized from" in s for s in said) and not (smt / "final").exists(), said

    kept = tmp_path / "kept"  # its newer checkpoints removed: from final/ as it is
    shutil.copytree(asr, kept)
    shutil.rmtree(kept / "checkpoints" / "step-00000003")
    said.clear()
    recipe.train(smt_cfg(kept / "final", tmp_path / "smt_kept"), log=said.append)
    assert f"[smt] initialized from {kept / 'final'}" in said, said

    recipe.train(asr_cfg(4), log=lambda *_: None)  # the stage finished: the next one starts from its new final/
    said.clear()
    recipe.train(smt_cfg(asr / "final", smt), log=said.append)
    assert f"[smt] initialized from {asr / 'final'}" in said, said
