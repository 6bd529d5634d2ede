"""`evaluate --with-mt`: a system was let go (`del translator`, then `release_models`: gc and the CUDA cache given
back) while `text_mt`, its text-MT system (the system itself, or a TextMTSystem over its model), still held it: its
GPU memory stayed in torch's cache past `release_models`, reserved by this process while COMET (another process)
ran on the GPU after the last system. Each system is now gone by the time `release_models` runs."""

import gc
import weakref

import pytest

import tiny
from llm_srt import device
from llm_srt.data.manifest import Row, write_manifest
from llm_srt.evaluate import run
from llm_srt.model import systems, whisper_system
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.protocol import Output


class _Holder:
    """A system (a baseline, so --with-mt's text MT is the system itself) whose outputs are its items' languages."""

    def __init__(self, placement):
        self.name, self.placement = "holder", placement

    def run_batch(self, items, options):
        return [Output(f"heard {it.src}", f"{it.tgt} {it.transcript or 'speech'}") for it in items]

    def detect_language(self, audio):
        return "eng"


@pytest.fixture
def manifest(tmp_path):
    from llm_srt.audio import write_wav

    write_wav(tmp_path / "c.wav", tiny.tone(0.8, 300, seed=0))
    write_manifest(tmp_path / "test.jsonl", [Row(id="0", audio=str(tmp_path / "c.wav"), duration=0.8, src_lang="eng",
                                                 transcript="a cat sat", tgt_lang="deu", translation="die Katze",
                                                 split="test", corpus="t", sentence_id="0")])
    return tmp_path / "test.jsonl"


@pytest.mark.parametrize("with_mt", [True, False])
def test_each_system_is_gone_when_its_memory_is_released(manifest, tmp_path, monkeypatch, with_mt):
    loaded, alive_at_release = [], []

    def load(name, placement, **_):
        system = _Holder(placement)
        loaded.append(weakref.ref(system))
        return system

    def release(where):
        gc.collect()
        alive_at_release.append([ref() is not None for ref in loaded])

    monkeypatch.setitem(systems.SYSTEMS, "holder", load)
    monkeypatch.setattr(whisper_system, "release_models", release)
    report = run.evaluate({"a": "holder", "b": "holder"}, manifest, tmp_path / "out", task="srt",
                          options=DecodingOptions(max_new_tokens=8), placement=device.resolve("cpu", "float32"),
                          log=lambda *_: None, significance=0, with_mt=with_mt)
    assert report is not None and len(loaded) == 2
    assert alive_at_release == [[False], [False, False]]  # a's system gone at its release, b's at its own
