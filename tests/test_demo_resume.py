"""A demo run again after it was cut short (llm_srt/demo_checks.py): what its --work holds is reused, or refused in
terms a user of `llm-srt demo` can act on (its runs' configs are not the user's to edit)."""
import shutil
from dataclasses import replace

import pytest

import demo_stubs
from llm_srt import demo


_tiny_stage = demo_stubs.tiny_stage


@pytest.mark.long(5)
def test_a_stage_cut_short_past_a_lowered_budget_is_refused_in_the_demos_terms(tmp_path):
    """A demo stopped in a stage (its checkpoints, no final/) and run again after the demo's budget for the stage was
    lowered (a pull changed its config): the finished stages' case was refused naming what to remove, this one
    stopped with the training's "raise max_steps ... or use another output_dir", neither of which `llm-srt demo`
    has a flag for."""
    work = tmp_path / "work"
    stage = _tiny_stage(tmp_path / "tiny", work, steps=3)
    demo.run_with_budget([stage], log=lambda *_: None)
    shutil.rmtree(work / "srt" / "final")  # cut short after its last checkpoint
    lowered = replace(stage, config=replace(stage.config, max_steps=2))
    with pytest.raises(demo.LLMSRTError) as refused:
        demo.run_with_budget([lowered], log=lambda *_: None)
    said = str(refused.value)
    assert said.startswith(f"{work} holds runs trained with other settings (") and "max_steps" not in said
    assert "step 3" in said and "budget" in said and "2 steps" in said
    assert said.endswith(f"give another --work, or remove {work / 'srt'}")
