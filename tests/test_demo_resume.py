"""A demo run again after it was cut short (llm_srt/demo_checks.py): what its --work holds is reused, or refused in
terms a user of `llm-srt demo` can act on (its runs' configs are not the user's to edit)."""
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import tiny
from llm_srt import demo
from llm_srt.audio import write_wav
from llm_srt.data.manifest import Row, write_manifest
from llm_srt.train.config import load_config
from llm_srt.train.curriculum import Stage


def _tiny_stage(root: Path, work: Path, steps: int) -> Stage:
    """A tiny SRT stage of `steps` steps writing work/srt, a checkpoint at every step."""
    root.mkdir(exist_ok=True)
    rows = []
    for k, (en, de) in enumerate((("a cat", "eine Katze"), ("the dog", "der Hund"), ("red sun", "rote Sonne"))):
        audio = root / f"s{k}.wav"
        write_wav(audio, tiny.tone(0.6 + 0.1 * k, 300 + 90 * k, seed=k))
        common = dict(audio=str(audio), duration=0.6 + 0.1 * k, src_lang="eng", transcript=en, split="train",
                      corpus="tiny", sentence_id=f"s{k}")
        rows += [Row(id=f"s{k}", tgt_lang="", translation="", **common),
                 Row(id=f"s{k}-deu", tgt_lang="deu", translation=de, **common)]
    write_manifest(root / "train.jsonl", rows)
    cfg = load_config(None, [f"{k}={v}" for k, v in {
        "model.encoder": tiny.whisper_dir(root), "model.llm": tiny.llm_dir(root), "data.train": root / "train.jsonl",
        "data.feature_cache": root / "features", "data.batch_size": 4, "optim.warmup_steps": 0, "max_steps": steps,
        "model.adapter_kwargs": "{num_queries: 4, hidden_size: 32, num_layers: 1, num_heads: 4, intermediate_size: 64}",
        "output_dir": work / "srt", "save_every": 1, "log_every": 1}.items()])
    return Stage("srt", Path("srt.yaml"), cfg)


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
