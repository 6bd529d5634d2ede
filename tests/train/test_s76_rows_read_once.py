"""A curriculum checks every stage's manifest rows before the first stage trains, and the first stage that trains
takes the rows that check read: its manifests were read and checked twice in a row, minutes on a large CoVoST-2
manifest. A later stage reads its own again at its turn (days later: as its files are then), and a finished stage
reads none."""

import json
import warnings
from pathlib import Path

import pytest

from llm_srt import cli
from llm_srt.train import curriculum
from llm_srt.train import data as training_data

from .conftest import overrides, three_stages


def _copies(setup, folder: Path) -> dict[str, Path]:
    """The tiny set's manifest once per stage (its audio paths absolute), so that each stage's reads are counted."""
    folder.mkdir()
    manifests = {stage: folder / f"{stage}.jsonl" for stage in ("asr", "smt", "srt")}
    for manifest in manifests.values():
        manifest.write_text(_absolute(setup), encoding="utf-8")
    return manifests


def _absolute(setup, held: bool = False) -> str:
    """The tiny set's manifest, its audio paths made absolute (`held`: its first row marked split dev)."""
    rows = [json.loads(line) for line in Path(setup["manifest"]).read_text(encoding="utf-8").splitlines()]
    for k, row in enumerate(rows):
        row["audio"] = str(Path(setup["manifest"]).parent / row["audio"])
        row["split"] = "dev" if held and k == 0 else row["split"]
    return "".join(json.dumps(r) + "\n" for r in rows)


def _counted(monkeypatch) -> dict[str, int]:
    """The manifest reader the stages' rows come from, counting its reads per manifest (by file name)."""
    reads: dict[str, int] = {}
    real = training_data.read_manifest

    def counted(path, *a, **k):
        reads[Path(path).name] = reads.get(Path(path).name, 0) + 1
        return real(path, *a, **k)
    monkeypatch.setattr(training_data, "read_manifest", counted)
    return reads


def _items(setup, manifests: dict[str, Path]) -> list[str]:
    common = [o for o in overrides(setup, "x") if not o.startswith("output_dir")]
    return common + [f"{stage}:data.train={m}" for stage, m in manifests.items()] + [
        f"asr:data.dev={manifests['asr']}"]


def test_the_first_stage_trains_on_the_rows_the_curriculum_checked(tiny_setup, tmp_path, monkeypatch):
    manifests = _copies(tiny_setup, tmp_path / "data")
    folder = three_stages(tmp_path, max_steps=1)
    reads = _counted(monkeypatch)
    trained = []  # the rows each stage's TrainingData trains on
    real = training_data.TrainingData.__init__

    def recorded(self, cfg, *a, **k):
        real(self, cfg, *a, **k)
        trained.append((Path(cfg.train).name, len(self.dataset), self.dev is not None, len(self.cache.hashes)))
    monkeypatch.setattr(training_data.TrainingData, "__init__", recorded)
    finals = curriculum.run_curriculum([str(folder)], _items(tiny_setup, manifests), log=lambda *_: None)
    assert [p.is_dir() for p in finals] == [True] * 3
    # asr (train and dev): read by the checks alone; smt and srt: by the checks, then at their turn
    assert reads == {"asr.jsonl": 2, "smt.jsonl": 2, "srt.jsonl": 2}, reads
    # its transcription rows, its dev set, and its feature cache given every clip's hash (as when it read them)
    assert trained == [("asr.jsonl", 8, True, 8), ("smt.jsonl", 8, False, 8), ("srt.jsonl", 8, False, 8)], trained


def test_a_resumed_curriculum_hands_the_first_stage_that_trains_its_rows(tiny_setup, tmp_path, monkeypatch):
    """asr finished: it reads no row; smt, the first that trains, reads its manifest once; srt at its turn again."""
    manifests = _copies(tiny_setup, tmp_path / "data")
    folder = three_stages(tmp_path, max_steps=1)
    items = _items(tiny_setup, manifests)
    asr = [o for o in items if not o.startswith(("smt:", "srt:"))]
    curriculum.run_curriculum([str(folder)], asr, stages=["asr"], log=lambda *_: None)
    reads = _counted(monkeypatch)
    said = []
    curriculum.run_curriculum([str(folder)], items, log=said.append)
    assert reads == {"smt.jsonl": 1, "srt.jsonl": 2}, reads
    assert any(s.startswith("[asr] already finished") for s in said), said
    assert (tmp_path / "srt" / "final").is_dir()


def test_the_rows_warnings_are_given_at_the_stages_turn(tiny_setup, tmp_path):
    """The checks read quietly; the held-out rows' warning of the rows handed over is given once, at the stage's turn
    (after its line), as when it read them itself."""
    held = tmp_path / "held.jsonl"
    held.write_text(_absolute(tiny_setup, held=True), encoding="utf-8")
    folder = three_stages(tmp_path, max_steps=1)
    common = [o for o in overrides(tiny_setup, "x") if not o.startswith("output_dir")]
    said: list[str] = []
    with warnings.catch_warnings():  # (puts showwarning back)
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *a, **k: said.append(f"warning: {message}")
        curriculum.run_curriculum([str(folder)], [*common, f"data.train={held}"], stages=["asr"], log=said.append)
    warned = [k for k, s in enumerate(said) if s.startswith(f"warning: data.train {held}: 1 of its rows are marked")]
    assert len(warned) == 1 and said[0].startswith("== stage 1/1: asr") and warned[0] > 0, said


@pytest.mark.parametrize("stage", ["asr", "smt"])
def test_a_stage_s_bad_row_is_still_named_with_its_stage(stage, tiny_setup, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_absolute(tiny_setup) + "{not json\n", encoding="utf-8")
    folder = three_stages(tmp_path, max_steps=1)
    common = [o for o in overrides(tiny_setup, "x") if not o.startswith("output_dir")]
    code = cli.main(["curriculum", str(folder), *common, f"{stage}:data.train={bad}"])
    err = capsys.readouterr().err
    assert code == 2 and f"llm-srt curriculum: error: stage {stage} ({folder / f'{stage}.yaml'}): {bad}:" in err, err
    assert not (tmp_path / "asr").exists()
