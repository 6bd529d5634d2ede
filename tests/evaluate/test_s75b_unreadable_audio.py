"""A test row whose audio no decoder reads (a file that is not audio, or one cut short) is refused before decoding, as
one whose audio is missing is, and as `prepare check` reports it: it passed evaluate's check (the file was there and
not empty) and was scored as an empty hypothesis, exit 0, though README says manifests are checked for "missing or
unreadable audio" before anything starts. With --skip-bad it is a failed row naming its file, as a missing one is."""

import json
from pathlib import Path

import pytest

from tone_rows import tone_rows

from llm_srt import cli
from llm_srt.data.manifest import row_to_dict
from llm_srt.model import systems
from llm_srt.model.protocol import Output
from llm_srt.prompts import Task

N_ROWS = 4


class Echo:
    """A system whose outputs follow from each item alone; it counts the rows it decodes."""

    def __init__(self, state):
        self.name, self.state = "echo", state

    def run_batch(self, items, options):
        self.state["rows"] += len(items)
        return [Output("a cat sat", "" if it.task is Task.ASR else "die Katze") for it in items]

    def detect_language(self, audio):
        return "eng"


@pytest.fixture
def state(monkeypatch):
    state = {"rows": 0, "loaded": 0}

    def load(name, placement, **_):
        state["loaded"] += 1
        return Echo(state)

    monkeypatch.setitem(systems.SYSTEMS, "echo", load)
    return state


def manifest_with(folder: Path, audio: bytes) -> Path:
    """N_ROWS tone rows, the last one's clip (line N_ROWS) replaced by `audio`."""
    rows = tone_rows(folder, N_ROWS)
    Path(rows[-1].audio).write_bytes(audio)
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(row_to_dict(r, folder)) + "\n" for r in rows))
    return path


def evaluate(manifest: Path, out: Path, *more: str) -> int:
    return cli.main(["evaluate", "--model", "s=echo", "--manifest", str(manifest), "--out", str(out), "--task", "srt",
                     "--significance", "0", "--device", "cpu", "--dtype", "float32", *more])


def cut_short(folder: Path) -> bytes:
    """A WAV holding half the samples its header claims (a copy cut off)."""
    (folder / "whole").mkdir()
    whole = Path(tone_rows(folder / "whole", 1)[0].audio).read_bytes()
    return whole[:len(whole) // 2]


@pytest.mark.parametrize("what", ["not audio", "cut short"])
def test_an_unreadable_clip_is_refused_before_decoding_as_prepare_check_refuses_it(what, state, tmp_path, capsys):
    manifest = manifest_with(tmp_path, b"garbage" if what == "not audio" else cut_short(tmp_path))
    assert cli.main(["prepare", "check", str(manifest)]) == 1
    checked = [line for line in capsys.readouterr().err.splitlines() if f"{manifest}:{N_ROWS}: " in line]
    assert len(checked) == 1, checked
    said = checked[0][checked[0].index(f"{manifest}:{N_ROWS}: "):]  # prepare check's words for the row
    assert evaluate(manifest, tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert said in err, err  # the same row, the same reason
    assert ("cannot be decoded" if what == "not audio" else "is cut short") in said
    assert state == {"rows": 0, "loaded": 0}  # before the model loads


def test_with_skip_bad_an_unreadable_clip_is_a_failed_row_naming_its_file(state, tmp_path, capsys):
    """README: with --skip-bad, a row whose audio file is missing or unreadable is a failed row (its error names the
    file), scored as an empty hypothesis, not skipped."""
    manifest = manifest_with(tmp_path, b"garbage")
    assert evaluate(manifest, tmp_path / "r", "--skip-bad") == 0
    assert state["rows"] == N_ROWS - 1
    hyps = [json.loads(line) for line in (tmp_path / "r" / "hyps.s.jsonl").read_text().splitlines()]
    assert len(hyps) == N_ROWS
    failed = [h for h in hyps if h["error"]]
    assert [h["id"] for h in failed] == [str(N_ROWS - 1)]
    assert str(tmp_path / f"c{N_ROWS - 1}.wav") in failed[0]["error"]
    assert "skipped_bad" not in (tmp_path / "r" / "results.json").read_text()  # failed, not skipped
    assert "--skip-bad: " not in capsys.readouterr().err
