"""What `SpeechTranslator.translate` takes as an input (arrays at their own rate, torch tensors, nothing else) and
how it checks its call-wide options before any work (a bad task, a bad SegmentOptions), on a stub system."""

import numpy as np
import pytest
import soxr
import torch

from llm_srt.audio import load_audio
from llm_srt.errors import LLMSRTError
from llm_srt.infer import SpeechTranslator
from test_infer import SR, Stub, recording


def test_an_array_at_another_rate_is_resampled_from_the_rate_given():
    """Before, a 44.1 kHz stereo array (sf.read's) was taken as 16 kHz: 3.26 s of audio came out as 8.98 s."""
    speech = recording(3.0, [(0.5, 2.5)])
    at_44k = soxr.resample(speech, SR, 44100)
    stereo = np.stack([at_44k, at_44k], axis=1)
    [r] = SpeechTranslator(Stub()).translate([stereo], "eng", "deu", sample_rate=44100)
    assert r.error is None and r.duration == pytest.approx(3.0, abs=1e-3)
    samples = load_audio(stereo, sample_rate=44100)
    assert samples.dtype == np.float32 and abs(samples.size - speech.size) <= 1
    [as_16k] = SpeechTranslator(Stub()).translate([speech], "eng", "deu")  # the default rate: as before
    assert as_16k.duration == pytest.approx(3.0, abs=1e-3)


@pytest.mark.parametrize("rate", [0, -16000, 44100.5, "44100", True])
def test_a_bad_sample_rate_is_refused_once_before_any_work(rate):
    stub = Stub()
    with pytest.raises(LLMSRTError, match=r"^sample_rate=.*whole number from 1000 to 768000"):
        SpeechTranslator(stub).translate([recording(1.0, [(0.2, 0.8)])], "eng", "deu", sample_rate=rate)
    assert stub.batches == []


def test_a_torch_tensor_is_read_as_its_array():
    """Before, a tensor (torchaudio's) was taken for the bytes of a file: "a bytes-like object is required"."""
    speech = recording(2.0, [(0.3, 1.7)])
    mono = torch.from_numpy(speech)
    stereo = torch.from_numpy(np.stack([speech, speech], axis=1)).to(torch.bfloat16)  # no numpy dtype of its own
    [a, b, c] = SpeechTranslator(Stub()).translate([mono, stereo.requires_grad_(), mono.to(torch.float64)],
                                                   "eng", "deu")
    assert [r.error for r in (a, b, c)] == [None] * 3
    assert a.duration == b.duration == c.duration == pytest.approx(2.0)
    assert a.audio == "<array 0>"


def test_a_channels_first_tensor_or_a_list_fails_its_input_only_with_one_line():
    speech = recording(2.0, [(0.3, 1.7)])
    first = torch.from_numpy(np.stack([speech, speech]))  # (channels, samples): torchaudio's shape
    ok, channels_first, as_list, as_int = SpeechTranslator(Stub()).translate(
        [speech, first, speech.tolist(), torch.zeros(SR, dtype=torch.int16)], "eng", "deu")
    assert ok.error is None
    assert channels_first.error == load_audio_error(first.numpy(), "<array 1>")  # the ndarray path's line
    assert "pass array.T" in channels_first.error
    assert as_list.error.startswith("<array 2>: got a list; give a path, the bytes of a file, or a float array or "
                                    "torch tensor")
    assert "dtype int16" in as_int.error
    assert all("\n" not in r.error for r in (channels_first, as_list, as_int))


def load_audio_error(x, name: str) -> str:
    with pytest.raises(LLMSRTError) as e:
        load_audio(x, name=name)
    return str(e.value)


def test_a_bad_task_for_every_input_is_refused_once_naming_the_tasks():
    """Before, task="sr" stopped the call with a raw ValueError ("'sr' is not a valid Task")."""
    stub = Stub()
    with pytest.raises(LLMSRTError, match=r"^task 'sr' is not a task: use one of auto, asr, smt, srt, s2tt, mt, "
                                          r"asr\+smt \(--task\)$"):
        SpeechTranslator(stub).translate([recording(1.0, [(0.2, 0.8)])], "eng", "deu", task="sr")
    with pytest.raises(LLMSRTError, match="^task None is not a task"):
        SpeechTranslator(stub).translate([], "eng", "deu", task=None)
    assert stub.batches == []


def test_a_bad_per_input_task_fails_its_input_only():
    """Before, task=["srt", "bogus"] stopped the whole call, where a bad per-input src or tgt fails its input."""
    stub = Stub()
    clip = recording(1.5, [(0.2, 1.3)])
    got = []
    good, bad = SpeechTranslator(stub).translate([clip, clip], "eng", "deu", task=["srt", "bogus"],
                                                 on_result=lambda i, r: got.append(i))
    assert good.error is None and good.translation.startswith("tr") and good.task == "srt"
    assert bad.error.startswith("task 'bogus' is not a task: use one of auto, asr")
    assert (bad.task, bad.segments, bad.untranslated) == ("bogus", [], 0)
    assert bad.to_dict()["error"] == bad.error and sorted(got) == [0, 1]
    assert len(stub.batches) == 1 and sum(map(len, stub.batches)) == 1  # only the good input ran


@pytest.mark.parametrize("seconds, said", [(60.0, "is longer than Whisper's 30 s window; use at most 30"),
                                           (0.1, "is too short; use at least 1 second")])
def test_segment_options_no_clip_can_be_cut_with_are_refused_once_before_any_work(seconds, said):
    """Before, SegmentOptions(max_seconds=60) failed every input alone with segment()'s error, as batch_size=0 is
    refused once."""
    from llm_srt.segment import SegmentOptions, segment

    stub, clip, got = Stub(), recording(1.5, [(0.2, 1.3)]), []
    with pytest.raises(LLMSRTError) as e:
        SpeechTranslator(stub).translate([clip, clip], "eng", "deu", on_result=lambda i, r: got.append(r),
                                         segment_options=SegmentOptions(max_seconds=seconds))
    assert str(e.value) == f"segment_options: max_seconds={seconds} {said}"
    assert stub.batches == [] and got == []
    with pytest.raises(LLMSRTError, match=f"^segment\\(\\): max_seconds={seconds} "):  # segment() says it as before
        segment(clip, options=SegmentOptions(max_seconds=seconds))
