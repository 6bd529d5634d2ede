"""The mini corpus's split order (data/mini_order.py): the shipped reference order, and sentences it does not list."""

import hashlib
import random
import re

import pytest

from llm_srt.data import catalogues, mini, mini_order
from llm_srt.errors import LLMSRTError


def _shuffled(ids, seed):
    """The order the builds before the reference file gave: a seeded shuffle of the sorted ids."""
    ids = sorted(ids)
    random.Random(seed).shuffle(ids)
    return ids


def test_the_shipped_order_is_the_shuffle_the_checkpoints_were_built_with():
    """mini_order.txt is the seed-0 shuffle of its own ids (what `write_reference` writes), ids only; where this
    machine's catalogues give exactly those sentences, every seed orders them as the builds before the file did."""
    listed = mini_order.reference_order(0)
    assert len(listed) == len(set(listed)) > 350 and all(re.fullmatch(r"[0-9a-f]{10}", i) for i in listed)
    assert listed == _shuffled(listed, 0)
    assert mini_order.reference_order(3) == _shuffled(listed, 3)
    here = catalogues.harvest(list(mini.DEFAULT_LANGS), catalogues.LOCALE_DIR)
    if set(here) != set(listed):
        pytest.skip("this machine's catalogues give other sentences than the reference's")
    for seed in (0, 1):
        assert mini_order.sentence_order(here, seed) == _shuffled(here, seed)


def test_a_missing_or_extra_sentence_moves_no_other(tmp_path):
    """The order was a shuffle of the installed ids: one id more or less reshuffled them all. Listed ids keep their
    rank; the others follow, by sha256 of "seed:id"."""
    reference = tmp_path / "order.txt"
    reference.write_text("# a comment line\nccc\naaa\nbbb\n")
    extra = ["x1", "x2", "x3", "x4"]
    by_hash = sorted(extra, key=lambda i: hashlib.sha256(f"0:{i}".encode()).hexdigest())
    assert mini_order.sentence_order({"aaa", "bbb", "ccc", *extra}, 0, reference) == ["ccc", "aaa", "bbb", *by_hash]
    full = mini_order.sentence_order({"aaa", "bbb", "ccc", *extra}, 5, reference)
    assert full[:3] == _shuffled(["aaa", "bbb", "ccc"], 5)
    for gone in full:
        assert mini_order.sentence_order(set(full) - {gone}, 5, reference) == [i for i in full if i != gone]
    with pytest.raises(LLMSRTError, match=r"cannot read the mini corpus's split order .*\(make setup\)$"):
        mini_order.sentence_order({"aaa"}, 0, tmp_path / "missing.txt")


def test_write_reference_writes_the_seed_0_shuffle_of_the_harvest(tmp_path, mo_file):
    root = tmp_path / "locale"
    english = ["The file could not be opened.", "Please try again later.", "The password is too short."]
    said = {"ru": "Это предложение {}.", "zh_CN": "这是第{}句。"}
    words = {"ru": ["один", "два", "три"], "zh_CN": ["一", "二", "三"]}
    for lang in ("de", "fr", "es", "ru", "zh_CN"):
        mo_file(root / lang / "LC_MESSAGES" / "app.mo", {
            en: said.get(lang, "Das ist Satz {}.").format(words.get(lang, ["eins", "zwei", "drei"])[k])
            for k, en in enumerate(english)})
    out = tmp_path / "order.txt"
    n = mini_order.write_reference(root, out)
    found = catalogues.harvest(list(mini.DEFAULT_LANGS), root)
    assert n == len(found) == 3 and mini_order.reference_order(0, out) == _shuffled(found, 0)
    assert all(line.startswith("#") for line in out.read_text().splitlines()[:2])  # then ids alone
