"""A tiny corpus (tone clips) and tiny random models for recipe tests."""

import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
import tiny  # noqa: E402

from llm_srt.audio import write_wav  # noqa: E402
from llm_srt.data.manifest import Row, write_manifest  # noqa: E402

SENTENCES = {  # sentence id -> (English, German)
    "s1": ("a cat", "eine Katze"), "s2": ("the dog", "der Hund"), "s3": ("red sun", "rote Sonne"),
    "s4": ("big tree", "grosser Baum"),
}


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    whisper = tiny.whisper_dir(root)
    llm = tiny.llm_dir(root)
    rows = []
    for k, (sid, (en, de)) in enumerate(SENTENCES.items()):
        for lang, text, other, other_text, f0 in (("eng", en, "deu", de, 300), ("deu", de, "eng", en, 500)):
            audio = root / "audio" / f"{lang}-{sid}.wav"
            audio.parent.mkdir(exist_ok=True)
            write_wav(audio, tiny.tone(0.6 + 0.1 * k, f0 + 90 * k, seed=k))
            base = dict(audio=str(audio), duration=0.6 + 0.1 * k, src_lang=lang, transcript=text, split="train",
                        corpus="tiny", sentence_id=sid)
            rows.append(Row(id=f"{lang}-{sid}", tgt_lang="", translation="", **base))
            rows.append(Row(id=f"{lang}-{sid}-{other}", tgt_lang=other, translation=other_text, **base))
    manifest = root / "train.jsonl"
    write_manifest(manifest, rows)
    return {"root": root, "whisper": str(whisper), "llm": str(llm), "manifest": str(manifest)}


@pytest.fixture(scope="module")
def model(tiny_setup):
    """A tiny speech LLM (Q-Former of 4 queries) on `tiny_setup`'s Whisper and LLM, one per test module."""
    from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig

    kwargs = {"num_queries": 4, "hidden_size": 32, "num_layers": 1, "num_heads": 4, "intermediate_size": 64}
    return SpeechLLM(SpeechLLMConfig(encoder=tiny_setup["whisper"], llm=tiny_setup["llm"], adapter_kwargs=kwargs))


def overrides(setup, out, **extra):
    base = {"model.encoder": setup["whisper"], "model.llm": setup["llm"], "data.train": setup["manifest"],
            "data.feature_cache": str(Path(setup["root"]) / "features"), "data.batch_size": 4,
            "model.adapter_kwargs": "{num_queries: 4, hidden_size: 32, num_layers: 1, num_heads: 4, "
                                    "intermediate_size: 64}",
            "optim.warmup_steps": 0, "optim.lr": 3e-3, "output_dir": str(out), "save_every": 1000, "log_every": 1}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


SHORT_STEPS = 2  # the steps of a `saved_every_step` run by default


def three_stages(tmp_path: Path, max_steps: int) -> Path:
    """A folder of asr, smt and srt YAMLs (each stage's task alone, output_dir under `tmp_path`), for a curriculum
    over the tiny setup's `overrides`."""
    folder = tmp_path / "cfgs"
    folder.mkdir()
    for stage in ("asr", "smt", "srt"):
        (folder / f"{stage}.yaml").write_text(f"stage: {stage}\ndata:\n  tasks: {{{stage}: 1.0}}\n"
                                              f"output_dir: {tmp_path / stage}\nmax_steps: {max_steps}\n")
    return folder


def saved_every_step(setup, out, steps=SHORT_STEPS, **extra):
    """A tiny run's config saving a checkpoint every step, the last 3 kept (what the resume tests copy and cut)."""
    from llm_srt.train.config import load_config

    return load_config(None, overrides(setup, out, **{"max_steps": steps, "save_every": 1, "keep_last": 3, **extra}))


@pytest.fixture(scope="module")
def base(tiny_setup, tmp_path_factory, request):
    """A finished `saved_every_step` run, one per test module, which its tests copy before changing."""
    from llm_srt.train import recipe

    out = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]) / "base"
    recipe.train(saved_every_step(tiny_setup, out), log=lambda *_: None)
    return out


def gloo_when_all_arrived(store_path: str, rank: int, world: int, timeout: timedelta) -> None:
    """init_process_group("gloo") with a short collective `timeout` (what a test times), once every rank has reached
    this line: gloo connects the ranks within that timeout, and spawned ranks of a loaded machine start seconds apart
    (CI once failed two such tests at init_process_group: 'Wait timeout')."""
    import torch.distributed as dist

    store = dist.FileStore(store_path, world)
    store.add("arrived", 1)
    while store.add("arrived", 0) < world:
        time.sleep(0.05)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
