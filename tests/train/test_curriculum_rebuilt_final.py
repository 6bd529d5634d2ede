"""A stage whose final/ is gone but whose checkpoint at max_steps is there writes the same final/ again, training no
step: the finished stage after it is not refused as trained from a start that "trains again"."""

import shutil

import pytest

from llm_srt.errors import ConfigError
from llm_srt.train import curriculum

from .conftest import overrides
from .test_stage_integrity import _stage_folder


def _final(folder):
    return {p.name: p.read_bytes() for p in (folder / "final").iterdir() if p.suffix == ".safetensors"}


def test_a_start_rebuilt_from_its_checkpoint_at_max_steps_does_not_refuse_the_stage_after_it(tiny_setup, tmp_path):
    """`cp -r R3 R8; rm -rf R8/asr/final; llm-srt curriculum cfg --out-root R8` refused R8/smt/final ("its start,
    stage asr's final/, trains again in this run"), though asr resumes at max_steps and writes the same final/."""
    folder = _stage_folder(tmp_path)
    common = [o for o in overrides(tiny_setup, "x", max_steps=2, save_every=1) if not o.startswith("output_dir")]
    common.append(f"asr:data.dev={tiny_setup['manifest']}")
    curriculum.run_curriculum([str(folder)], common, stages=["asr", "smt"], log=lambda *_: None)
    asr, smt = _final(tmp_path / "asr"), _final(tmp_path / "smt")
    shutil.rmtree(tmp_path / "asr" / "final")
    with pytest.raises(ConfigError, match=r"^stage smt .*smt/final was trained from .*asr/final, and its start, stage "
                                          r"asr's final/, trains again in this run"):  # in doubt: other settings
        curriculum.run_curriculum([str(folder)], [*common, "asr:optim.lr=1e-3", "asr:allow_changes=true"],
                                  stages=["asr", "smt"], log=lambda *_: None)
    with pytest.raises(ConfigError, match=r"^stage smt .*trains again in this run"):  # another final_weights
        curriculum.run_curriculum([str(folder)], [*common, "asr:final_weights=best"], stages=["asr", "smt"],
                                  log=lambda *_: None)
    messages = []
    curriculum.run_curriculum([str(folder)], common, stages=["asr", "smt"], log=messages.append)
    assert _final(tmp_path / "asr") == asr and _final(tmp_path / "smt") == smt
    assert any(m.startswith("[smt] already finished") for m in messages), messages
