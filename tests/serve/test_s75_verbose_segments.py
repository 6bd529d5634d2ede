"""verbose_json's segments carry OpenAI's Whisper fields where this server measures them (seek, temperature,
compression_ratio); the rest (avg_logprob, tokens, no_speech_prob) are null, never made up."""

import json
import zlib

from llm_srt.infer import SegmentResult, TranslationResult
from llm_srt.serve.forms import ENDPOINTS
from llm_srt.serve.responses import render_verbose


def test_segments_carry_the_whisper_fields_measured_here():
    """They were absent (read as null by OpenAI's SDK): a filter like `s.compression_ratio > 2.4` raised TypeError."""
    loop = "the the the the the the the the the the the the the the the the"
    segments = [SegmentResult(0.0, 2.5, "Hello there.", "Hallo."), SegmentResult(3.25, 9.0, loop, loop)]
    result = TranslationResult("clip.wav", "eng", "deu", "srt", "Hello there. " + loop, "Hallo. " + loop, 9.0,
                               segments)
    body = json.loads(render_verbose(result, ENDPOINTS["transcriptions"], "transcript").body)
    first, second = body["segments"]
    assert (first["seek"], second["seek"]) == (0, 325)  # the 10 ms mel frame each segment's decode started at
    assert first["temperature"] == second["temperature"] == 0.0
    for seg, text in ((first, "Hello there."), (second, loop)):
        data = text.encode()
        assert seg["text"] == text and seg["compression_ratio"] == len(data) / len(zlib.compress(data))
        assert seg["avg_logprob"] is None and seg["tokens"] is None and seg["no_speech_prob"] is None
        assert "transcript" in seg and "capped" in seg  # ours are kept
    assert second["compression_ratio"] > 2.4 > first["compression_ratio"]  # Whisper's threshold for a looping text
