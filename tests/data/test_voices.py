import os
import random
import shutil

import numpy as np
import pytest

from llm_srt.audio import SAMPLE_RATE
from llm_srt.data import prose, voices
from llm_srt.errors import LLMSRTError

TEXT = "The file could not be opened by the user."


def _installed(synth):
    return shutil.which(voices.SYNTHESIZERS[synth].binary) is not None


@pytest.mark.parametrize("synth", list(voices.SYNTHESIZERS))
def test_each_synthesizer_reads_english_at_16k(synth):
    if not _installed(synth):
        pytest.skip(f"{voices.SYNTHESIZERS[synth].binary} is not installed (Debian package {synth})")
    names = voices.SYNTHESIZERS[synth].voices("eng")
    if not names:
        pytest.skip(f"no {synth} voice is installed")
    for name in names[:2] if synth == "festival" else names:  # festival starts slowly (~0.5 s a call)
        samples, reason = voices.speak(voices.Voice(synth, name), TEXT, "eng", 160, 50)
        assert reason == "" and samples.dtype == np.float32 and samples.ndim == 1, name
        assert 1.5 < samples.size / SAMPLE_RATE < 5.0 and np.abs(samples).max() > 0.05, name
    slow, _ = voices.speak(voices.Voice(synth, names[0]), TEXT, "eng", 120, 50)
    fast, _ = voices.speak(voices.Voice(synth, names[0]), TEXT, "eng", 200, 50)
    assert slow.size > 1.2 * fast.size  # the drawn rate reaches every synthesizer


def test_voice_pools_and_specs():
    assert voices.pool("deu", ("flite", "espeak-ng")) == {"espeak-ng": voices.Espeak().voices("deu")}
    assert list(voices.pool("eng", ("flite", "espeak-ng"))) == ["espeak-ng", "flite"]  # registry order
    assert "slt" not in voices.pool("eng", ("flite",), exclude="flite:slt")["flite"]
    assert voices.pool("eng", ("flite",), exclude="flite") == {}
    assert voices.matches(voices.Voice("flite", "slt"), "flite") and not voices.matches(
        voices.Voice("flite", "awb"), "flite:slt")
    with pytest.raises(LLMSRTError, match="unknown synthesizer 'mbrola'"):
        voices.parse_voice("mbrola:us1")


def test_holding_out_a_voice_leaves_out_its_speaker_under_another_synthesizer(monkeypatch):
    """flite's slt and festival's cmu_us_slt_arctic_hts are one speaker (CMU ARCTIC SLT), and so are flite's kal16
    and festival's kal_diphone: holding out flite:slt trained on SLT's festival voice, and the unseen-voice score
    was of a speaker heard in training."""
    monkeypatch.setattr(voices.SYNTHESIZERS["festival"], "voices",
                        lambda lang: voices.FESTIVAL_VOICES if lang == "eng" else ())  # as if all were installed
    every = ("espeak-ng", "flite", "festival")
    kept = voices.pool("eng", every, exclude="flite:slt")
    assert "slt" not in kept["flite"] and kept["festival"] == ("kal_diphone", "ked_diphone")
    assert "cmu_us_slt_arctic_hts" not in kept["festival"] and len(kept["espeak-ng"]) == 8
    assert voices.pool("eng", every, exclude="festival:kal_diphone")["flite"] == ("awb", "rms", "slt")
    assert voices.pool("eng", every, exclude="flite")["festival"] == ("ked_diphone",)  # both twins' speakers
    assert voices.pool("eng", every, exclude="flite:awb")["festival"] == voices.FESTIVAL_VOICES  # no twin
    assert voices.twins_left_out("flite:slt", ["eng", "deu"], every) == ["festival:cmu_us_slt_arctic_hts"]
    assert voices.twins_left_out("flite:slt", ["eng"], ("espeak-ng", "flite")) == []  # festival not drawn from
    assert voices.twins_left_out("flite", ["eng"], every) == ["festival:cmu_us_slt_arctic_hts",
                                                              "festival:kal_diphone"]
    for a, b in voices.SAME_SPEAKER:  # every twin is a voice its synthesizer has
        for spec in (a, b):
            synth, name = spec.split(":")
            assert name in {"flite": voices.FLITE_VOICES, "festival": voices.FESTIVAL_VOICES}[synth], spec


def test_a_heldout_voice_is_resolved_to_names_or_refused():
    assert voices.named("espeak-ng:de+f2", ["eng", "deu"]) == {"deu": ("de+f2",)}
    assert voices.named("espeak-ng", ["eng"]) == {"eng": voices.Espeak().voices("eng")}
    with pytest.raises(LLMSRTError, match=r"--heldout-voice espeak-ng:de\+f9: no such voice speaks any of eng, deu "
                                          r"here \(voices: espeak-ng:"):
        voices.named("espeak-ng:de+f9", ["eng", "deu"])
    with pytest.raises(LLMSRTError, match="no such voice speaks any of eng, deu"):
        voices.named("flite:rsm", ["eng", "deu"])  # whether flite is installed or not: its names are built in


def test_a_flite_voice_this_flite_lacks_is_neither_drawn_nor_held_out(tmp_path, monkeypatch):
    """flite reads with its default voice, and exits 0, given a voice name it does not have: where a flite lacked
    rms, --heldout-voice flite:rms was accepted and its test sentences read by a voice heard in training. flite's
    voices are those `flite -lv` lists (here a stand-in flite without rms)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "flite").write_text('#!/bin/sh\n[ "$1" = -lv ] && echo "Voices available: kal awb_time kal16 awb slt "\n')
    (fake / "flite").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    voices.flite_listed.cache_clear()
    try:
        assert voices.flite_listed() == {"kal", "awb_time", "kal16", "awb", "slt"}
        assert voices.pool("eng", ("flite",)) == {"flite": ("kal16", "awb", "slt")}
        with pytest.raises(LLMSRTError, match=r"^--heldout-voice flite:rms: no such voice speaks any of eng here "
                                              r"\(voices: .*flite:kal16, flite:awb, flite:slt[,)]") as refused:
            voices.named("flite:rms", ["eng"])
        assert "rms" not in str(refused.value).split("(voices: ")[1]
        assert voices.named("flite:slt", ["eng", "deu"]) == {"eng": ("slt",)}
        (fake / "flite").write_text("#!/bin/sh\nexit 1\n")  # a flite that lists nothing
        voices.flite_listed.cache_clear()
        with pytest.raises(LLMSRTError, match=r"^--synthesizers flite: none of its voices is installed"):
            voices.require(("flite",))
    finally:
        voices.flite_listed.cache_clear()  # the real flite's, for the tests after this one


def _tone(seconds=1.0):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_augmentation_is_seeded_and_does_what_it_says():
    x = _tone()
    aug = voices.Augmentation(p=1.0)
    a = voices.draw_augment(random.Random("0:abc:eng:augment"), aug)
    assert a == voices.draw_augment(random.Random("0:abc:eng:augment"), aug)
    assert a.speed and a.snr_db and a.rt60
    assert np.array_equal(voices.augment(x, a), voices.augment(x, a))
    assert not np.array_equal(voices.augment(x, a), voices.augment(x, voices.Augment(a.speed, a.snr_db, a.rt60,
                                                                                      a.seed + 1)))
    none = voices.draw_augment(random.Random(1), voices.Augmentation(p=0.0))
    assert none.record() == {} and np.allclose(voices.augment(x, none), x, atol=1e-7)
    # speed: 1.1 x faster is 1/1.1 as long (resampled), 0.9 x is longer
    assert voices.augment(x, voices.Augment(speed=1.1)).size == pytest.approx(x.size / 1.1, abs=2)
    assert voices.augment(x, voices.Augment(speed=0.9)).size == pytest.approx(x.size / 0.9, abs=2)
    # noise: the added noise sits at the drawn SNR (a quiet signal, so that no peak rescaling interferes)
    quiet = x * 0.1
    for snr in (5.0, 20.0):
        noisy = voices.augment(quiet, voices.Augment(snr_db=snr, seed=3)).astype(np.float64)
        measured = 10 * np.log10(np.mean(quiet.astype(np.float64) ** 2) / np.mean((noisy - quiet) ** 2))
        assert measured == pytest.approx(snr, abs=0.3)
    # reverberation: the tail grows by rt60 seconds and decays
    wet = voices.augment(x, voices.Augment(rt60=0.5, seed=3))
    assert wet.size == x.size + int(0.5 * SAMPLE_RATE) - 1
    tail = wet[x.size:]
    assert np.abs(tail[:800]).mean() > 10 * np.abs(tail[-800:]).mean() > 0
    assert np.abs(wet).max() <= 0.99 + 1e-6


def test_augmentation_ranges_are_checked():
    voices.check(voices.Augmentation())
    with pytest.raises(LLMSRTError, match="speed 1.2-0.9"):
        voices.check(voices.Augmentation(speed=(1.2, 0.9)))
    with pytest.raises(LLMSRTError, match="rt60"):
        voices.check(voices.Augmentation(rt60=(0.1, 9.0)))


def test_prose_keeps_plain_sentences_once(tmp_path):
    text = ("Installing the package is simple.\nIt takes a few minutes on most machines.  See the manual, "
            "e.g. chapter two.\n\nRun make install (as root) now. Version 2 adds support for FLAC files. "
            "Ok.\nThis file describes how the program stores its settings.\n\ninstalling is simple. "
            "Installing the package is simple.")
    assert prose.sentences(text) == ["Installing the package is simple.", "It takes a few minutes on most "
                                     "machines.", "This file describes how the program stores its settings.",
                                     "Installing the package is simple."]
    (tmp_path / "doc" / "pkg").mkdir(parents=True)
    (tmp_path / "doc" / "pkg" / "README").write_text(text)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "mod.py").write_text('"""Read the whole file into memory."""\n\ndef f():\n'
                                             '    """Return the number of lines in the file."""\n')
    (tmp_path / "lib" / "test_mod.py").write_text('"""Check that the reader works well."""\n')
    found = prose.harvest(exclude={"It takes a few minutes on most machines."}, doc_dir=tmp_path / "doc",
                          stdlib=tmp_path / "lib")
    assert found == [("Installing the package is simple.", "doc:pkg/README"),
                     ("This file describes how the program stores its settings.", "doc:pkg/README"),
                     ("Read the whole file into memory.", "python:mod"),
                     ("Return the number of lines in the file.", "python:mod")]


def test_a_synthesizer_without_voices_is_refused(tmp_path, monkeypatch):
    """festival installed without a festvox package was accepted by --synthesizers, and no festival voice was ever
    drawn; it is refused, naming the packages to install."""
    monkeypatch.setattr(voices, "FESTIVAL_VOICE_DIR", tmp_path)  # no voice folder in it
    monkeypatch.setattr(voices.shutil, "which", lambda binary: f"/usr/bin/{binary}")  # festival installed or not
    with pytest.raises(LLMSRTError) as e:
        voices.require(("espeak-ng", "festival"))
    assert str(e.value) == ("--synthesizers festival: none of its voices is installed (Debian: apt-get install "
                            "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts); or leave it out")
    voices.require(("espeak-ng", "flite"))  # their voices are built in
    (tmp_path / "english" / "kal_diphone").mkdir(parents=True)
    voices.require(("espeak-ng", "festival"))
