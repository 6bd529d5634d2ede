"""A toolkit warning printed while a progress bar is on the line (evaluate's per-system bar, train's) starts a line
of its own: `cli.one_line_warnings` printed it right after the bar's text ("evaluate x:  50%|...| 1/2 [...]llm-srt
evaluate: warning: ..."); it now goes through tqdm.write, which clears the bar, writes the line and draws the bar
again."""

import sys
import warnings

from tqdm import tqdm

from llm_srt import cli


def _segments(text: str) -> list[str]:
    return [part for line in text.split("\n") for part in line.split("\r")]


def test_a_warning_under_a_progress_bar_starts_its_own_line(capsys):
    show = cli.one_line_warnings("evaluate", warnings.showwarning)
    with tqdm(total=2, desc="evaluate x", file=sys.stderr, mininterval=0) as bar:
        bar.update(1)
        show(UserWarning("2 rows skipped"), UserWarning, cli.__file__, 1)
        bar.update(1)
    err = capsys.readouterr().err
    assert "llm-srt evaluate: warning: 2 rows skipped" in _segments(err), err
    assert err.count("llm-srt evaluate: warning:") == 1


def test_without_a_bar_the_warning_is_one_plain_line(capsys):
    show = cli.one_line_warnings("translate", warnings.showwarning)
    show(UserWarning("cut short"), UserWarning, cli.__file__, 1)
    assert capsys.readouterr().err == "llm-srt translate: warning: cut short\n"
