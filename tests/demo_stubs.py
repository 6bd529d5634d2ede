"""What the demo's tests share (tests/test_demo_*.py): a tiny SRT stage on the tiny models."""
from pathlib import Path

import tiny
from llm_srt.audio import write_wav
from llm_srt.data.manifest import Row, write_manifest
from llm_srt.train.config import load_config
from llm_srt.train.curriculum import Stage


def tiny_stage(root: Path, work: Path, steps: int) -> Stage:
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
