"""`llm-srt score` takes one sentence a line: a subtitle file or JSON lines is refused in one line, not scored with
its cue numbers, timings or keys as words; COMET's options without --metric comet are refused, not ignored."""

import json

import pytest

from test_score import HYPS, REFS, files, run  # noqa: F401  (files: the fixture)

SRT = ("1\n00:00:00,000 --> 00:00:02,500\n{}\n\n2\n00:00:02,500 --> 00:00:05,000\n{}\n\n"
       "3\n00:00:05,000 --> 00:00:07,000\n{}\n")
VTT = "WEBVTT\n\n00:00.000 --> 00:02.500\n{}\n\n00:02.500 --> 00:05.000\n{}\n\n00:05.000 --> 00:07.000\n{}\n"


@pytest.mark.parametrize("form", [SRT, VTT])
@pytest.mark.parametrize("side", ["--hyp", "--ref"])
def test_a_subtitle_file_is_refused_not_scored_with_its_timings(files, tmp_path, capsys, form, side):  # noqa: F811
    """Two SRT files of the same timings and different texts scored BLEU 59.9, exit 0 (the tester's)."""
    subtitles = tmp_path / "s.srt"
    subtitles.write_text(form.format(*(HYPS if side == "--hyp" else REFS)), encoding="utf-8")
    hyp, ref = (subtitles, files[1]) if side == "--hyp" else (files[0], subtitles)
    rc, out, err = run(capsys, "--hyp", hyp, "--ref", ref, "--tgt-lang", "eng")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{subtitles}: a subtitle file (SRT/VTT), whose cue numbers and timings would be scored as words" in err


def test_an_evaluate_results_file_is_refused_with_the_command_that_scores_it(files, tmp_path, capsys):  # noqa: F811
    """evaluate's own hyps.NAME.jsonl given as --hyp scored WER 636 (keys and ids as words), exit 0."""
    hyps = tmp_path / "hyps.srt.jsonl"
    hyps.write_text("".join(json.dumps({"id": f"s{i}", "hyp_translation": h}) + "\n" for i, h in enumerate(HYPS)),
                    encoding="utf-8")
    rc, out, err = run(capsys, "--hyp", hyps, "--ref", files[1], "--tgt-lang", "eng")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{hyps}: JSON lines, whose keys would be scored as words" in err
    assert f"llm-srt evaluate --model NAME={hyps} --out DIR" in err


def test_sentences_that_look_like_json_or_times_in_passing_are_scored(files, tmp_path, capsys):  # noqa: F811
    """A sentence with a brace or a time inside it is a sentence."""
    odd = ["{the cat} sat on the mat", "it rains at 10:00:00,000 in berlin", "[1, 2] see you tomorrow"]
    files[0].write_text("\n".join(odd) + "\n", encoding="utf-8")
    rc, out, err = run(capsys, "--hyp", files[0], "--ref", files[1], "--tgt-lang", "eng")
    assert rc == 0 and out.startswith("BLEU = "), err


@pytest.mark.parametrize("given", [["--src", "SRC"], ["--comet-model", "m"], ["--comet-python", "python3"]])
def test_comet_options_without_metric_comet_are_refused(files, capsys, given):  # noqa: F811
    """`--src` (or another COMET option) with BLEU was ignored unsaid: a user who meant COMET got BLEU."""
    argv = [a if a != "SRC" else files[1] for a in given]
    rc, out, err = run(capsys, "--hyp", files[0], "--ref", files[1], "--tgt-lang", "eng", *argv)
    assert rc == 2 and out == ""
    assert f"error: {given[0]}: read by --metric comet alone, and this is --metric bleu; add --metric comet" in err
