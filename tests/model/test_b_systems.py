"""Systems: what each answers for an item into its own language."""

from __future__ import annotations

import pytest

import tiny
from llm_srt import device
from llm_srt.model.decoding import DecodingOptions
from llm_srt.model.protocol import Item, Output
from llm_srt.model.systems import TextMTSystem
from llm_srt.prompts import Task

OPTS = DecodingOptions(max_new_tokens=8)


@pytest.fixture(scope="module")
def mt(tmp_path_factory):
    return TextMTSystem(tiny.llm_dir(tmp_path_factory.mktemp("b-systems"), init_std=0.3), device.resolve("cpu"))


def test_text_mt_answers_an_item_into_its_own_language_with_its_text(mt, monkeypatch):
    """fra -> fra: the text MT system asked its LLM to "translate French into French" (a random one wrote anything);
    now it answers with the given text, as the speech LLM, the whisper system and the cascade do, while the
    batch's other items are translated as alone."""
    items = [Item(None, "fra", "fra", Task.MT, " le chat "), Item(None, "eng", "deu", Task.MT, "a cat"),
             Item(None, "eng", "eng", Task.SMT, "a dog")]
    alone = mt.run_batch(items[1:2], OPTS)
    asked = []
    real = mt.translate
    monkeypatch.setattr(mt, "translate", lambda texts, *a, **k: asked.append(list(texts)) or real(texts, *a, **k))
    out = mt.run_batch(items, OPTS)
    assert out[0] == Output("le chat", "le chat") and out[2] == Output("a dog", "a dog")
    assert out[1] == alone[0] and asked == [["a cat"]]
