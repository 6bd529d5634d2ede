"""A file that is no JSON-lines manifest (an audio file, binary data, a list of paths) is said to be one in one line,
with what a manifest is and how to make one, not reported as a thousand bad rows."""

import json
import re

import numpy as np
import pytest

from llm_srt.audio import write_wav
from llm_srt.data.manifest import read_manifest
from llm_srt.errors import ManifestError

ADVICE = r"a manifest is JSON-lines text, one row a line naming an audio file .*`llm-srt prepare`"


@pytest.mark.parametrize("skip_bad", [False, True])
def test_a_wav_given_as_a_manifest_is_named_audio_in_one_line(tmp_path, skip_bad):
    """`train data.train=in/a1.wav` said "in/a1.wav: 1199 bad row(s); fix them, or skip them", each byte run between
    newlines a "row" (with data.skip_bad: all of them skipped, then "no usable rows")."""
    wav = tmp_path / "a1.wav"
    rng = np.random.default_rng(0)
    write_wav(wav, (0.3 * rng.standard_normal(16000 * 5)).astype(np.float32))  # 5 s of noise: many "lines"
    assert wav.read_bytes().count(b"\n") > 20
    with pytest.raises(ManifestError, match=rf"a1\.wav: not a JSON-lines manifest \(WAV audio, binary\); {ADVICE}") \
            as e:
        read_manifest(wav, skip_bad=skip_bad, on_skipped=lambda _: None)
    assert "\n" not in str(e.value) and "bad row" not in str(e.value)


def test_other_binary_content_is_named_binary(tmp_path):
    blob = tmp_path / "model.bin"
    blob.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(ManifestError, match=rf"model\.bin: not a JSON-lines manifest \(binary content\); {ADVICE}") \
            as e:
        read_manifest(blob)
    assert "\n" not in str(e.value)


def test_text_with_no_json_line_is_no_manifest(tmp_path):
    """Its first line says so (what a manifest is, how to make one), then the lines' own problems follow, as a
    broken export's would."""
    listing = tmp_path / "files.txt"
    listing.write_text("a.wav\nb.wav\n\nc.wav\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(listing, skip_bad=True, on_skipped=lambda _: None)  # (nothing to skip to)
    first, *listed = str(e.value).split("\n")
    assert re.fullmatch(rf".*files\.txt: not a JSON-lines manifest, no line of it is JSON \(3 lines\); {ADVICE}.*:",
                        first), first
    assert listed[0].strip() == f"{listing}:1: not valid JSON (Expecting value at column 1)" and len(listed) == 3
    utf16 = tmp_path / "utf16.jsonl"  # a manifest saved as UTF-16: NUL bytes, yet text: its lines say how to fix it
    utf16.write_text('{"id": "x"}\n{"id": "y"}\n', encoding="utf-16")
    with pytest.raises(ManifestError, match=r"no line of it is JSON .*\n  .*utf16\.jsonl:1: not UTF-8 text \(byte 1\); "
                                            r"save the manifest as UTF-8"):
        read_manifest(utf16)
    utf16.write_text('{"id": "x"}\n{"id": "y"}\n', encoding="utf-16-le")  # no BOM: text still
    with pytest.raises(ManifestError, match=r"no line of it is JSON .*\n  .*utf16\.jsonl:1: "):  # (not "binary")
        read_manifest(utf16)


def test_a_manifest_with_some_bad_rows_still_lists_them(tmp_path):
    wav = tmp_path / "a.wav"
    write_wav(wav, np.zeros(16000, dtype=np.float32))
    good = {"id": "u1", "audio": "a.wav", "duration": 1.0, "src_lang": "eng", "transcript": "hi", "tgt_lang": "",
            "translation": "", "split": "test", "corpus": "c", "sentence_id": "1"}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(good) + "\nnot json\n{broken\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl: 2 bad row\(s\); fix them.*\n  .*m\.jsonl:2: not valid JSON"):
        read_manifest(manifest)
    one = tmp_path / "one.jsonl"  # a single line with a typo: its own problem, as before
    one.write_text('{"id": "u1",}\n')
    with pytest.raises(ManifestError, match=r"one\.jsonl: 1 bad row\(s\).*\n  .*one\.jsonl:1: not valid JSON"):
        read_manifest(one)
