"""A stage's manifests are read and checked row by row before its model loads: `llm-srt train` with a manifest of bad
rows built the whole model (minutes per rank at 7B/32B) and printed its parameter counts before "N bad row(s)"; a
curriculum whose later stage names such a manifest trained the stages before it first. The rows read are the ones
the stage trains on (read once)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llm_srt import cli
from llm_srt.data.manifest import read_manifest
from llm_srt.errors import ManifestError
from llm_srt.model import speech_llm
from llm_srt.train import data as training_data

from .conftest import overrides, three_stages
from .test_recipe import _free_port


def _bad_manifest(setup, path) -> str:
    """The tiny set's rows, then a bad row of each kind: not JSON, fields missing, an unknown language, no audio."""
    rows = [json.loads(line) for line in Path(setup["manifest"]).read_text(encoding="utf-8").splitlines()]
    for row in rows:  # (relative to the tiny set's folder)
        row["audio"] = str(Path(setup["manifest"]).parent / row["audio"])
    lines, row = [json.dumps(r) for r in rows], rows[0]
    bad = ["{not json", json.dumps({"id": "few"}), json.dumps({**row, "id": "lang", "src_lang": "xxq"}),
           json.dumps({**row, "id": "gone", "audio": str(path.parent / "gone.wav")})]
    path.write_text("\n".join(lines + bad) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError) as refused:
        read_manifest(path)
    return str(refused.value)


def _no_model(monkeypatch) -> list[str]:
    """The model's constructors, recording each call and going on (the run must not reach them)."""
    built = []
    init, pretrained = speech_llm.SpeechLLM.__init__, speech_llm.SpeechLLM.from_pretrained.__func__

    def recorded_init(self, *a, **k):
        built.append("SpeechLLM")
        init(self, *a, **k)

    def recorded_pretrained(cls, *a, **k):
        built.append("from_pretrained")
        return pretrained(cls, *a, **k)
    monkeypatch.setattr(speech_llm.SpeechLLM, "__init__", recorded_init)
    monkeypatch.setattr(speech_llm.SpeechLLM, "from_pretrained", classmethod(recorded_pretrained))
    return built


@pytest.mark.parametrize("key", ["data.train", "data.dev"])
def test_train_refuses_a_bad_row_before_the_model_loads(key, tiny_setup, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.jsonl"
    said = _bad_manifest(tiny_setup, bad)
    built = _no_model(monkeypatch)
    code = cli.main(["train", *overrides(tiny_setup, tmp_path / "run", max_steps=2, **{key: str(bad)})])
    err = capsys.readouterr().err
    assert code == 2 and built == [], (built, err[-2000:])
    assert f"llm-srt train: error: {said}" in err and "4 bad row(s)" in said, err[-2000:]
    assert "trainable parameters" not in err


def test_the_rows_checked_first_are_the_ones_trained_on_read_once(tiny_setup, tmp_path, monkeypatch, capsys):
    """The recipe's early read is the only one: TrainingData takes its rows (the same rows, the same batches)."""
    reads = []
    real = training_data.read_stage_rows

    def counted(*a, **k):
        reads.append(k.get("hashes"))
        return real(*a, **k)
    monkeypatch.setattr(training_data, "read_stage_rows", counted)
    assert cli.main(["train", *overrides(tiny_setup, tmp_path / "run", max_steps=1)]) == 0, capsys.readouterr().err
    assert reads == [True]


def test_a_later_curriculum_stage_with_a_bad_row_stops_it_before_the_first_trains(tiny_setup, tmp_path, monkeypatch,
                                                                                    capsys):
    bad = tmp_path / "bad.jsonl"
    said = _bad_manifest(tiny_setup, bad)
    built = _no_model(monkeypatch)
    folder = three_stages(tmp_path, max_steps=1)
    common = [o for o in overrides(tiny_setup, "x") if not o.startswith("output_dir")]
    code = cli.main(["curriculum", str(folder), *common, f"srt:data.train={bad}"])
    err = capsys.readouterr().err
    assert code == 2 and built == [], (built, err[-2000:])
    assert f"llm-srt curriculum: error: stage srt ({folder / 'srt.yaml'}): {said}" in err, err[-2000:]
    assert not (tmp_path / "asr").exists() and not (tmp_path / "smt").exists()


@pytest.mark.long(20)
def test_every_rank_stops_with_rank_0s_bad_rows_before_the_model(tiny_setup, tmp_path):
    """Under torchrun rank 0 reads the manifests; every rank stops with its error, none loads the model or hangs."""
    bad = tmp_path / "bad.jsonl"
    said = _bad_manifest(tiny_setup, bad)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = overrides(tiny_setup, tmp_path / "out", max_steps=2, distributed_timeout_min=1, **{"data.train": str(bad)})
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                            str(_free_port()), "-m", "llm_srt.cli", "train", *args], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = run.communicate(timeout=150)[0]
    except subprocess.TimeoutExpired:
        pytest.fail("a rank hung")
    finally:
        run.kill()
    first = f"llm-srt train: error: {said.splitlines()[0]}"
    assert [s for s in out.splitlines() if s.startswith("llm-srt train: error:")] == [first, first], out[-3000:]
    assert "trainable parameters" not in out and "(exitcode: 2)" in out, out[-3000:]
    assert not re.search(r"^\[rank\d+\]: Traceback", out, re.M), out[-3000:]
