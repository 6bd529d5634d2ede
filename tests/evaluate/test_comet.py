"""`llm-srt evaluate --comet`: COMET scores from unbabel-comet in its own Python (the setup's environment), on a tiny
COMET model with random weights that the test builds (tiny_comet.py); nothing is downloaded."""

import argparse
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import comet, run, score, significance
from llm_srt.evaluate.comet import CometOptions, segment_scores
from llm_srt.evaluate.report import UtteranceResult, load_results

HERE = Path(__file__).parent
SAMPLES = [{"src": "the cat sat on the mat", "mt": "die katze sat", "ref": "die katze sat on the mat"},
           {"src": "a dog", "mt": "", "ref": "der hund"},
           {"src": "the house", "mt": "la maison ünd ça", "ref": "la maison"},
           {"src": "a cat", "mt": "le chat", "ref": "le chat"},
           {"src": "a cat", "mt": "el gato is a casa dog", "ref": "el gato"}]


@pytest.fixture(scope="session")
def comet_python() -> Path:
    """The COMET environment (`llm-srt setup --comet`: a minute the first time on a machine, then a no-op)."""
    return comet.install_env()


@pytest.fixture(scope="session")
def tiny_comet(comet_python, tmp_path_factory) -> Path:
    """A COMET regression metric with a 2-layer XLM-R of width 16 and random weights: OUT/checkpoints/model.ckpt."""
    out = tmp_path_factory.mktemp("tiny-comet")
    subprocess.run([str(comet_python), str(HERE / "tiny_comet.py"), str(out)], check=True, capture_output=True)
    return out


def comets_own(python: Path, model: Path, samples: list[dict], tmp: Path) -> list[float]:
    """unbabel-comet's `predict`, called directly in its Python (the figures the bridge must hand back)."""
    (tmp / "samples.json").write_text(json.dumps(samples))
    code = ("import json, sys; from comet import load_from_checkpoint; "
            "m = load_from_checkpoint(sys.argv[1]); s = json.load(open(sys.argv[2])); "
            "print(json.dumps(m.predict(s, batch_size=16, gpus=0, progress_bar=False).scores))")
    ckpt = model / "checkpoints" / "model.ckpt"
    out = subprocess.run([str(python), "-c", code, str(ckpt), str(tmp / "samples.json")], check=True,
                         capture_output=True, text=True, cwd=tmp).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_scores_are_comets_own_row_for_row(comet_python, tiny_comet, tmp_path):
    ours = segment_scores(SAMPLES, CometOptions(model=str(tiny_comet)))
    theirs = comets_own(comet_python, tiny_comet, SAMPLES, tmp_path)
    assert len(set(round(s, 6) for s in theirs)) == len(SAMPLES)  # distinct: a shuffled row would show
    assert ours == pytest.approx(theirs, abs=1e-6)
    file_scores = segment_scores(SAMPLES[:2], CometOptions(model=str(tiny_comet / "checkpoints" / "model.ckpt")))
    assert file_scores == pytest.approx(theirs[:2], abs=1e-6)  # a checkpoint file, not only its folder


def results(name: str, hyps: list[str]) -> list[dict]:
    """Four rows (two directions) of a system; an empty hypothesis is a failed row; row 4 has no source."""
    rows = [("1", "eng", "deu", "the cat sat on the mat", "die katze sat on the mat"),
            ("2", "eng", "deu", "a dog", "der hund"),
            ("3", "eng", "fra", "the house", "la maison"),
            ("4", "eng", "fra", None, "le chat")]
    return [{"id": i, "src": s, "tgt": t, "hyp_translation": h or None, "ref_transcript": src, "ref_translation": ref,
             "task": "s2tt", "error": None if h else f"{name} failed here"}
            for (i, s, t, src, ref), h in zip(rows, hyps)]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_evaluate_reports_comet_per_direction_and_tests_it(tiny_comet, tmp_path, monkeypatch):
    monkeypatch.setattr(significance, "MIN_SENTENCES", 1)  # the test's arithmetic on 3 sentences (the rule: its own
    #                                                         tests in test_significance.py)
    a = write(tmp_path / "hyps.a.jsonl", results("a", ["die katze sat", "der hund", "la maison", "le chat"]))
    b = write(tmp_path / "hyps.b.jsonl", results("b", ["das haus", "", "la maison", "le chat"]))
    lines = []
    report = run.evaluate({"A": str(a), "B": str(b)}, None, tmp_path / "out", significance=100, log=lines.append,
                          comet=CometOptions(model=str(tiny_comet)))
    # row 3 is the same triple in both systems (scored once), row 4 has no source: 4 + 2 - 1 segments
    assert any("5 segments scored" in line for line in lines)
    cat = {"src": "the cat sat on the mat", "ref": "die katze sat on the mat"}
    expected = segment_scores([{**cat, "mt": "die katze sat"},
                               {"src": "a dog", "mt": "der hund", "ref": "der hund"},
                               {"src": "the house", "mt": "la maison", "ref": "la maison"},
                               {**cat, "mt": "das haus"},
                               {"src": "a dog", "mt": "", "ref": "der hund"}],  # B's failed row: the empty hypothesis
                              CometOptions(model=str(tiny_comet)))
    rows = {name: {r.id: r for r in load_results(tmp_path / "out" / f"hyps.{name}.jsonl")} for name in "AB"}
    assert [rows["A"][i].comet for i in "123"] == pytest.approx(expected[:3], abs=1e-6)
    assert [rows["B"][i].comet for i in "123"] == pytest.approx([expected[3], expected[4], expected[2]], abs=1e-6)
    assert rows["A"]["4"].comet is None and rows["B"]["4"].comet is None
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["comet_model"] == str(tiny_comet)
    for name, s in zip("AB", report.systems):
        deu = 100 * (rows[name]["1"].comet + rows[name]["2"].comet) / 2
        fra = 100 * rows[name]["3"].comet
        assert s.comet[("eng", "deu")] == pytest.approx(deu) and s.comet[("eng", "fra")] == pytest.approx(fra)
        assert saved["systems"][name]["average_comet"] == pytest.approx((deu + fra) / 2, abs=1e-4)
        assert saved["systems"][name]["n_comet_unscored"] == 1
    (name, first, c), = report.comet_comparisons
    assert (name, first, c.sentences) == ("B", "A", 3)
    # the report's Avg: a mean over directions (eng->fra's row is the same in both)
    assert c.delta == pytest.approx(100 * (sum(expected[3:5]) - sum(expected[:2])) / 4)
    assert c.delta == pytest.approx(saved["systems"]["B"]["average_comet"] - saved["systems"]["A"]["average_comet"],
                                    abs=1e-3)
    assert saved["systems"]["B"]["comet_significance"]["compared_with"] == "A"
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## COMET by direction" in markdown and "## COMET: is the difference real?" in markdown


def test_without_comet_stored_scores_are_left_out(tiny_comet, tmp_path):
    rows = [dict(r, comet=0.5) for r in results("a", ["die katze", "der hund", "la maison", "le chat"])]
    report = run.evaluate({"A": str(write(tmp_path / "hyps.a.jsonl", rows))}, None, tmp_path / "out", log=print)
    assert report.systems[0].comet == {} and report.comet_model is None
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "average_comet" not in saved["systems"]["A"] and "comet_model" not in saved
    assert all(r.comet is None for r in load_results(tmp_path / "out" / "hyps.A.jsonl"))


def test_no_comet_environment_is_a_one_line_error_before_any_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_SRT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(comet.PYTHON_ENV, raising=False)
    with pytest.raises(LLMSRTError) as e:  # a model folder that does not exist: the COMET check comes first
        run.evaluate({"m": str(tmp_path / "no-model")}, tmp_path / "none.jsonl", tmp_path / "out",
                     comet=CometOptions())
    assert "llm-srt setup --comet" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv(comet.PYTHON_ENV, str(tmp_path / "python"))
    with pytest.raises(LLMSRTError, match=r"\$LLM_SRT_COMET_PYTHON .*python: no such file"):
        comet.comet_python()


def test_a_bad_comet_model_is_a_one_line_error(comet_python, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LLMSRTError) as e:
        segment_scores(SAMPLES[:1], CometOptions(model=str(tmp_path / "empty")))
    assert "no checkpoints/model.ckpt" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LLMSRTError, match="no such COMET checkpoint"):
        segment_scores(SAMPLES[:1], CometOptions(model=str(tmp_path / "missing")))


def test_a_python_without_comet_or_a_folder_without_its_checkpoint_is_refused_before_any_model_loads(
        tmp_path, monkeypatch):
    """`--comet-python X` (or $LLM_SRT_COMET_PYTHON) naming a Python without unbabel-comet passed the check made
    before decoding (the file is there), and so did `--comet FOLDER` without checkpoints/model.ckpt (the folder is
    there): each failed after every system had decoded."""
    import sys

    from llm_srt import device
    from llm_srt.audio import write_wav
    from llm_srt.data.manifest import Row, write_manifest
    from llm_srt.model import systems

    loaded = []
    monkeypatch.setitem(systems.SYSTEMS, "counting", lambda name, placement, **_: loaded.append(name))
    write_wav(tmp_path / "c.wav", torch.zeros(16000).numpy())  # a row to decode: the model would be loaded
    manifest = tmp_path / "test.jsonl"
    write_manifest(manifest, [Row("0", str(tmp_path / "c.wav"), 1.0, "eng", "a cat", "deu", "eine Katze", "test",
                                  "t", "0")])

    def refused(**options) -> str:
        with pytest.raises(LLMSRTError) as e:
            run.evaluate({"c": "counting"}, manifest, tmp_path / "o", placement=device.resolve("cpu", "float32"),
                         log=lambda *_: None, comet=CometOptions(**options))
        assert "\n" not in str(e.value)
        return str(e.value)

    ours = sys.executable  # this environment's Python: no unbabel-comet (it pins numpy < 2)
    assert refused(python=ours) == (f"--comet-python {ours}: it has no unbabel-comet (no module named comet); "
                                    f"{comet.SETUP_HINT}")
    monkeypatch.setenv(comet.PYTHON_ENV, ours)
    assert refused().startswith(f"${comet.PYTHON_ENV} {ours}: it has no unbabel-comet")
    monkeypatch.setattr(score, "check_python", lambda *_: None)  # a COMET Python that has it (`check_comet`)
    folder = tmp_path / "comet-model"
    folder.mkdir()
    assert refused(model=str(folder)) == (f"--comet {folder}: no checkpoints/model.ckpt in this folder (a COMET model "
                                          "folder holds hparams.yaml and checkpoints/model.ckpt); give the folder "
                                          "that holds it, or the .ckpt file")
    assert loaded == [] and not (tmp_path / "o").exists()
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "model.ckpt").write_bytes(b"")
    comet.check_model(str(folder))
    comet.check_model(str(folder / "checkpoints" / "model.ckpt"))


def test_score_and_evaluate_check_the_comet_python_then_the_model_through_one_helper(tmp_path, monkeypatch):
    """`score --metric comet` and `evaluate --comet` each called check_python and check_model by hand; both now call
    `score.check_comet`: the Python first (a bad model is not said while the Python cannot score it), then the
    model, named by the option the command has."""
    import sys

    folder = tmp_path / "comet-model"  # no checkpoints/model.ckpt
    folder.mkdir()
    ours = sys.executable  # no unbabel-comet here
    with pytest.raises(LLMSRTError) as e:
        score.check_comet(CometOptions(model=str(folder), python=ours), "--comet-model")
    assert str(e.value).startswith(f"--comet-python {ours}: it has no unbabel-comet")
    has_comet = CometOptions(model=str(folder), python=str(fake_comet_python(tmp_path)))
    for option, given in (("--comet-model", ("--comet-model",)), ("--comet", ())):  # (): evaluate's, the default
        with pytest.raises(LLMSRTError) as e:
            score.check_comet(has_comet, *given)
        assert str(e.value).startswith(f"{option} {folder}: no checkpoints/model.ckpt in this folder")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "model.ckpt").write_bytes(b"")
    assert score.check_comet(has_comet) is None

    def checked(options, *option):  # evaluate's check (on rank 0) is this helper, with evaluate's option
        raise LLMSRTError(f"checked {options == has_comet} {option}")

    monkeypatch.setattr(run, "check_comet", checked)
    with pytest.raises(LLMSRTError, match=r"^checked True \(\)$"):
        run.evaluate({"A": str(write(tmp_path / "hyps.a.jsonl", results("a", ["die katze sat"])))}, None,
                     tmp_path / "out", log=lambda *_: None, significance=0, comet=has_comet)


def test_the_comet_environment_passes_the_check_of_a_given_python(comet_python, monkeypatch):
    assert comet.check_python(str(comet_python)) == comet_python
    monkeypatch.setenv(comet.PYTHON_ENV, str(comet_python))
    assert comet.check_python() == comet_python


def test_options_and_command_line():
    with pytest.raises(LLMSRTError, match="--comet-batch-size 0"):
        CometOptions(batch_size=0)
    with pytest.raises(LLMSRTError, match="--comet-gpus -1"):
        CometOptions(gpus=-1)
    p = argparse.ArgumentParser()
    run.add_arguments(p)
    assert p.parse_args(["--model", "m", "--out", "o", "--comet"]).comet == comet.DEFAULT_MODEL
    assert p.parse_args(["--model", "m", "--out", "o"]).comet is None
    assert p.parse_args(["--model", "m", "--out", "o", "--comet", "dir"]).comet == "dir"


def test_more_than_one_comet_gpu_is_refused_before_any_model_loads(tmp_path, monkeypatch, capsys):
    """--comet-gpus 2 failed only after every system had decoded: COMET's DDP workers cannot hand their scores back
    (they import our evaluate/comet.py as `comet`, then torch >= 2.6 refuses to unpickle their predictions)."""
    from llm_srt import cli
    from llm_srt.audio import write_wav
    from llm_srt.data.manifest import Row, write_manifest
    from llm_srt.model import systems

    with pytest.raises(LLMSRTError) as e:
        CometOptions(gpus=2)
    assert str(e.value).startswith("--comet-gpus 2: COMET's multi-GPU scoring does not run here")
    assert str(e.value).endswith("; use 0 (CPU) or 1") and "\n" not in str(e.value)
    assert CometOptions(gpus=1).gpus == 1 and CometOptions(gpus=0).gpus == 0
    loaded = []
    monkeypatch.setattr(systems, "load_system", lambda *a, **k: loaded.append(a))
    monkeypatch.setenv(comet.PYTHON_ENV, str(fake_comet_python(tmp_path)))
    write_wav(tmp_path / "c.wav", torch.zeros(16000).numpy())  # a row to decode: the model would be loaded
    manifest = tmp_path / "test.jsonl"
    write_manifest(manifest, [Row("0", str(tmp_path / "c.wav"), 1.0, "eng", "a cat", "deu", "eine Katze", "test",
                                  "t", "0")])
    assert cli.main(["evaluate", "--model", "cascade", "--manifest", str(manifest), "--out", str(tmp_path / "o"),
                     "--device", "cpu", "--comet", "--comet-gpus", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm-srt evaluate: error: --comet-gpus 2: ") and err.count("\n") == 1
    assert loaded == [] and not (tmp_path / "o").exists()


def test_comet_may_reach_the_hub_unless_the_user_said_offline(monkeypatch):
    from llm_srt import paths

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")  # the user's own
    monkeypatch.setattr(paths, "OFFLINE_SET_HERE", set())
    paths.default_offline()  # what the CLI does first
    assert os.environ["HF_HUB_OFFLINE"] == "1" and paths.OFFLINE_SET_HERE == {"HF_HUB_OFFLINE"}
    env = comet._bridge_env()
    assert "HF_HUB_OFFLINE" not in env and env["TRANSFORMERS_OFFLINE"] == "1"


def test_comet_under_torchrun_is_not_told_it_is_a_rank(monkeypatch):
    """Rank 0 of an evaluate under torchrun runs COMET alone: Lightning would take torchrun's variables for a launch
    of its own and wait for the other ranks; the rank's GPU (CUDA_VISIBLE_DEVICES) stays."""
    launched = {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "0",
                "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x",
                "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    for key, value in launched.items():
        monkeypatch.setenv(key, value)
    env = comet._bridge_env()
    assert [k for k in launched if k in env] == ["CUDA_VISIBLE_DEVICES"]


def test_sample_reads_the_reference_transcript_as_the_source():
    row = UtteranceResult(id="1", src="eng", tgt="deu", hyp_translation="x", ref_transcript="s", ref_translation="r")
    assert comet.sample(row) == {"src": "s", "mt": "x", "ref": "r"}
    assert comet.sample(UtteranceResult(id="1", src="eng", tgt="deu", error="e", ref_transcript="s",
                                        ref_translation="r"))["mt"] == ""
    assert comet.sample(UtteranceResult(id="1", src="eng", tgt="eng", hyp_translation="x", ref_transcript="s",
                                        ref_translation="s", task="asr")) is None
    assert comet.sample(UtteranceResult(id="1", src="eng", tgt="deu", hyp_translation="x", ref_translation="r")) \
        is None


def test_score_prints_the_mean_comet_of_text_files(comet_python, tiny_comet, tmp_path, capsys):
    from llm_srt import cli

    for name, key in (("src", "src"), ("hyp", "mt"), ("ref", "ref")):
        (tmp_path / f"{name}.txt").write_text("".join(s[key] + "\n" for s in SAMPLES), encoding="utf-8")
    files = ["--hyp", str(tmp_path / "hyp.txt"), "--ref", str(tmp_path / "ref.txt"), "--tgt-lang", "deu",
             "--metric", "comet"]
    assert cli.main(["score", *files, "--src", str(tmp_path / "src.txt"), "--comet-model", str(tiny_comet),
                     "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    theirs = comets_own(comet_python, tiny_comet, SAMPLES, tmp_path)
    assert printed["n"] == len(SAMPLES)
    assert printed["score"] == pytest.approx(100 * sum(theirs) / len(theirs), abs=0.006)
    assert cli.main(["score", *files]) != 0
    assert "needs --src" in capsys.readouterr().err


def test_comet_failing_after_decoding_keeps_the_report_and_the_hypotheses(comet_python, tmp_path):
    a = write(tmp_path / "hyps.a.jsonl", results("a", ["die katze sat", "der hund", "la maison", "le chat"]))
    broken = tmp_path / "broken" / "checkpoints" / "model.ckpt"  # passes the check before decoding; COMET fails
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(LLMSRTError) as e:
        run.evaluate({"A": str(a)}, None, tmp_path / "out", log=print,
                     comet=CometOptions(model=str(tmp_path / "broken")))
    assert f"--comet {tmp_path / 'broken'}: COMET: " in str(e.value) and "score them again" in str(e.value)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["systems"]["A"]["n_rows"] == 4 and "average_comet" not in saved["systems"]["A"]
    assert [r.hyp_translation for r in load_results(tmp_path / "out" / "hyps.A.jsonl")][:3] == \
        ["die katze sat", "der hund", "la maison"]


def test_a_model_name_is_downloaded_a_path_is_not(tmp_path, monkeypatch):
    import sys
    import types

    from llm_srt.evaluate import comet_bridge

    fetched = []
    stub = types.ModuleType("comet")
    stub.download_model = lambda name: fetched.append(name) or "/hub/checkpoints/model.ckpt"
    monkeypatch.setitem(sys.modules, "comet", stub)
    assert comet_bridge.checkpoint("Unbabel/wmt22-comet-da") == "/hub/checkpoints/model.ckpt"
    assert comet_bridge.checkpoint("wmt20-comet-da") == "/hub/checkpoints/model.ckpt"  # COMET's legacy names
    assert fetched == ["Unbabel/wmt22-comet-da", "wmt20-comet-da"]
    for missing in ("./Unbabel/x", str(tmp_path / "m"), "models/comet/checkpoints", "x/model.ckpt"):
        with pytest.raises(ValueError, match="no such COMET checkpoint"):
            comet_bridge.checkpoint(missing)
        with pytest.raises(LLMSRTError, match="no such COMET checkpoint"):
            comet.check_model(missing)
    comet.check_model("Unbabel/wmt22-comet-da")
    assert fetched == ["Unbabel/wmt22-comet-da", "wmt20-comet-da"]

    def unreachable(name):
        raise KeyError(f"Model '{name}' not supported by COMET.")

    stub.download_model = unreachable
    with pytest.raises(ValueError, match="cannot download it .*give its folder to --comet$"):
        comet_bridge.checkpoint("Unbabel/wmt22-comet-da")


def test_the_source_is_part_of_what_is_scored(tiny_comet):
    rows = [UtteranceResult(id=str(i), src="eng", tgt="deu", hyp_translation="die katze", ref_transcript=src,
                            ref_translation="die katze sat") for i, src in enumerate(["the cat", "a dog sat"])]
    scored = comet.score_systems({"A": rows}, CometOptions(model=str(tiny_comet)), log=print)["A"]
    assert scored[0].comet != pytest.approx(scored[1].comet, abs=1e-6)


def test_systems_of_several_runs_are_tested_sentence_by_sentence(tiny_comet, tmp_path, monkeypatch):
    monkeypatch.setattr(significance, "MIN_SENTENCES", 1)  # 3 sentences, as above
    a = [write(tmp_path / f"a{k}.jsonl", results("a", hyps)) for k, hyps in
         enumerate((["die katze sat", "der hund", "la maison", "le chat"], ["die katze", "der hund", "la maison", ""]))]
    b = [write(tmp_path / f"b{k}.jsonl", results("b", hyps)) for k, hyps in
         enumerate((["das haus", "", "la maison", "le chat"], ["das haus", "der", "le chat", "le chat"]))]
    lines = []
    report = run.evaluate({"A": ",".join(map(str, a)), "B": ",".join(map(str, b)), "B1": str(b[0])}, None,
                          tmp_path / "out", significance=100, log=lines.append,
                          comet=CometOptions(model=str(tiny_comet)))
    (name, first, c), = report.comet_comparisons  # B1 (one run against two) is not tested, and says so
    assert any("no paired COMET test of B1 against A: 1 runs against 2" in line for line in lines)
    rows = {n: load_results(tmp_path / "out" / f"hyps.{n}.jsonl") for n in "AB"}
    mean = {n: {i: 100 * (rows[n][int(i) - 1].comet + rows[n][4 + int(i) - 1].comet) / 2 for i in "123"} for n in "AB"}
    assert (name, c.sentences) == ("B", 3)  # sentences, not run rows
    diff = {i: mean["B"][i] - mean["A"][i] for i in "123"}
    assert c.delta == pytest.approx(((diff["1"] + diff["2"]) / 2 + diff["3"]) / 2)  # eng->deu, eng->fra: averaged


def test_comet_runs_on_the_gpu_evaluate_was_given(monkeypatch, tmp_path):
    """`evaluate --device cuda:3 --comet`: COMET ran on the first visible GPU (Lightning's devices=1), whatever the
    user chose; now only the chosen GPU is visible to it (through any CUDA_VISIBLE_DEVICES of ours)."""
    from llm_srt.device import Placement

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert comet._bridge_env("cuda:2")["CUDA_VISIBLE_DEVICES"] == "6"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert comet._bridge_env("cuda:2")["CUDA_VISIBLE_DEVICES"] == "2" and "CUDA_VISIBLE_DEVICES" not in \
        comet._bridge_env("cpu")
    seen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)  # --device cuda:3 is made current (no GPU here)
    monkeypatch.setattr(run, "check_comet", lambda *_: None)
    monkeypatch.setattr(run, "score_systems", lambda systems, options, log: seen.append(options) or systems)
    rows = results("a", ["die katze", "der hund", "la maison", "le chat"])
    run.evaluate({"A": str(write(tmp_path / "hyps.a.jsonl", rows))}, None, tmp_path / "out", log=lambda *_: None,
                 comet=comet.CometOptions(), placement=Placement(torch.device("cuda", 3), torch.bfloat16))
    run.evaluate({"A": str(tmp_path / "hyps.a.jsonl")}, None, tmp_path / "cpu", log=lambda *_: None,
                 comet=comet.CometOptions(), placement=Placement(torch.device("cpu"), torch.float32))
    assert [(o.device, o.gpus) for o in seen] == [("cuda:3", None), (None, 0)]  # --device cpu: no GPU for COMET


def fake_comet_python(folder: Path) -> Path:
    """A stand-in for the COMET Python (no unbabel-comet needed): run as `PYTHON -I bridge request response`, it
    answers 0.5 for every sample; asked by `check_python` (`PYTHON -I -c ...`), it has unbabel-comet."""
    import sys

    path = folder / "fakepy"
    path.write_text("#!/bin/sh\n[ \"$2\" = -c ] && exit 0  # `check_python`'s question: it has unbabel-comet\n"
                    f"exec {sys.executable} -c \"import json, sys; r = json.load(open(sys.argv[1])); "
                    "json.dump({'scores': [0.5] * len(r['samples'])}, open(sys.argv[2], 'w'))\" \"$3\" \"$4\"\n")
    path.chmod(0o755)
    return path


def test_a_comet_python_given_as_a_relative_path_runs(tmp_path, monkeypatch):
    """--comet-python ./fakepy passed the check, then Path("./fakepy"), printed as "fakepy", was looked up on
    $PATH: "cannot run it (No such file or directory)"."""
    fake_comet_python(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert comet.comet_python("./fakepy") == tmp_path / "fakepy"
    assert segment_scores(SAMPLES[:2], CometOptions(python="./fakepy")) == [0.5, 0.5]
    monkeypatch.setenv(comet.PYTHON_ENV, "fakepy")
    assert segment_scores(SAMPLES[:1], CometOptions()) == [0.5]


def test_score_json_of_comet_has_the_keys_of_the_other_metrics(tmp_path, capsys):
    """`score --json` printed {"metric": "COMET", ...} without "skipped", where --json's help and every other
    metric give {"metric" (lowercase), "score", "signature", "n", "skipped"}."""
    from llm_srt import cli

    for name, key in (("src", "src"), ("hyp", "mt"), ("ref", "ref")):
        (tmp_path / f"{name}.txt").write_text("".join(s[key] + "\n" for s in SAMPLES), encoding="utf-8")
    files = [f"--{name}={tmp_path / name}.txt" for name in ("hyp", "ref", "src")]
    python = f"--comet-python={fake_comet_python(tmp_path)}"
    assert cli.main(["score", *files, "--tgt-lang", "deu", "--metric", "comet", python, "--json"]) == 0
    comet_json = json.loads(capsys.readouterr().out)
    assert cli.main(["score", *files[:2], "--tgt-lang", "deu", "--metric", "chrf", "--json"]) == 0
    assert comet_json.keys() == json.loads(capsys.readouterr().out).keys()
    assert comet_json == {"metric": "comet", "score": 50.0, "signature": f"model:{comet.DEFAULT_MODEL}|x100|n:5",
                          "n": len(SAMPLES), "skipped": 0}


def test_score_comet_refuses_an_unknown_target_language_before_comet_runs(tmp_path, capsys):
    """`score --metric comet --tgt-lang de` (the Whisper code) scored and printed COMET, the code read nowhere, where
    every other metric says it is not a language code; it is that one-line error, before the COMET Python starts."""
    from llm_srt import cli

    for name, key in (("src", "src"), ("hyp", "mt"), ("ref", "ref")):
        (tmp_path / f"{name}.txt").write_text("".join(s[key] + "\n" for s in SAMPLES), encoding="utf-8")
    files = [f"--{name}={tmp_path / name}.txt" for name in ("hyp", "ref", "src")]
    python = tmp_path / "python"  # a COMET Python that would leave a mark if it ran
    python.write_text(f"#!/bin/sh\ntouch {tmp_path / 'ran'}\nexec {fake_comet_python(tmp_path)} \"$@\"\n")
    python.chmod(0o755)
    assert cli.main(["score", *files, "--tgt-lang", "de", "--metric", "comet", f"--comet-python={python}"]) != 0
    err = capsys.readouterr().err
    assert "unknown language code 'de'" in err and "did you mean 'deu'?" in err and "Traceback" not in err
    assert not (tmp_path / "ran").exists()
    assert cli.main(["score", *files, "--tgt-lang", "deu", "--metric", "comet", f"--comet-python={python}"]) == 0
    assert (tmp_path / "ran").exists()


def test_score_comet_checks_the_python_and_the_model_folder_as_evaluate_does(tmp_path, capsys):
    """`score --metric comet` with a --comet-python without unbabel-comet stopped on COMET's own "COMET:
    ModuleNotFoundError: No module named 'comet'", said of "--comet", an option `score` does not have, with no word
    of the setup; a --comet-model folder without its checkpoint likewise. Both are evaluate's one-line errors now,
    naming score's options."""
    import sys

    from llm_srt import cli

    for name, key in (("src", "src"), ("hyp", "mt"), ("ref", "ref")):
        (tmp_path / f"{name}.txt").write_text("".join(s[key] + "\n" for s in SAMPLES), encoding="utf-8")
    files = [f"--{name}={tmp_path / name}.txt" for name in ("hyp", "ref", "src")] + ["--tgt-lang", "deu",
                                                                                      "--metric", "comet"]
    ours = sys.executable  # this environment's Python: no unbabel-comet (it pins numpy < 2)
    assert cli.main(["score", *files, f"--comet-python={ours}"]) != 0
    assert (f"--comet-python {ours}: it has no unbabel-comet (no module named comet); {comet.SETUP_HINT}"
            in capsys.readouterr().err)
    (tmp_path / "comet-model").mkdir()
    python = f"--comet-python={fake_comet_python(tmp_path)}"
    assert cli.main(["score", *files, python, f"--comet-model={tmp_path / 'comet-model'}"]) != 0
    assert (f"--comet-model {tmp_path / 'comet-model'}: no checkpoints/model.ckpt in this folder"
            in capsys.readouterr().err)
    assert cli.main(["score", *files, python, f"--comet-model={tmp_path / 'none'}"]) != 0
    assert f"--comet-model {tmp_path / 'none'}: no such COMET checkpoint or folder" in capsys.readouterr().err


def test_score_names_its_own_option_when_the_comet_bridge_fails(tmp_path, capsys):
    """The COMET Python failing as it scores (a model name it cannot download, a damaged checkpoint) was said of
    "--comet MODEL" under `score`, which has no --comet: it is said of --comet-model, the option the user gave;
    evaluate's stays --comet."""
    from llm_srt import cli

    python = tmp_path / "failing-python"
    python.write_text("#!/bin/sh\n[ \"$2\" = -c ] && exit 0  # `check_python`: it has unbabel-comet\n"
                      "echo 'Traceback (most recent call last):' >&2\n"
                      "echo 'COMET: cannot download Unbabel/wmt22-comet-xx (404)' >&2\nexit 1\n")
    python.chmod(0o755)
    for name, key in (("src", "src"), ("hyp", "mt"), ("ref", "ref")):
        (tmp_path / f"{name}.txt").write_text("".join(s[key] + "\n" for s in SAMPLES), encoding="utf-8")
    files = [f"--{name}={tmp_path / name}.txt" for name in ("hyp", "ref", "src")]
    assert cli.main(["score", *files, "--tgt-lang", "deu", "--metric", "comet", f"--comet-python={python}",
                     "--comet-model=Unbabel/wmt22-comet-xx"]) != 0
    assert capsys.readouterr().err == (f"llm-srt score: error: --comet-model Unbabel/wmt22-comet-xx: COMET: cannot "
                                       f"download Unbabel/wmt22-comet-xx (404) (ran {python})\n")
    with pytest.raises(LLMSRTError, match=r"^--comet Unbabel/wmt22-comet-xx: COMET: cannot download"):
        segment_scores(SAMPLES[:1], CometOptions(model="Unbabel/wmt22-comet-xx", python=str(python)))

def read_only(monkeypatch, folder: Path) -> None:
    """Make comet.py's writes under `folder` (a folder made, a file opened to write) fail as on a read-only mount."""
    import errno

    def refuse(path) -> None:
        if Path(path).is_relative_to(folder):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    real_mkdir = Path.mkdir
    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: refuse(self) or real_mkdir(self, *a, **k))
    monkeypatch.setattr(comet, "open", lambda path, mode="r", *a, **k: (set(mode) & set("wax+") and refuse(path))
                        or open(path, mode, *a, **k), raising=False)


def test_setup_comet_on_a_read_only_cache(tmp_path, monkeypatch):
    """`llm-srt setup --comet` on a read-only cache gave an OSError traceback, even with the environment set up: the
    lock was taken (its folder made, its file opened to write) before the stamp was read. A stamped environment is
    returned without writing anything; one not set up is a one-line error naming the cache folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLM_SRT_CACHE", str(cache))
    (comet.env_dir() / "bin").mkdir(parents=True)
    with monkeypatch.context() as m:
        read_only(m, cache)
        with pytest.raises(LLMSRTError) as e:
            comet.install_env(log=lambda line: None)
    assert str(e.value).startswith(f"{cache}: cannot write the COMET environment there (Read-only file system); "
                                   "set LLM_SRT_CACHE=") and "\n" not in str(e.value)
    (comet.env_dir() / comet.STAMP).write_text(json.dumps(comet._expected_stamp()))  # set up, as the setup leaves it
    (comet.env_dir() / "bin" / "python").write_text("")
    read_only(monkeypatch, cache)
    said: list[str] = []
    assert comet.install_env(log=said.append) == comet.env_dir() / "bin" / "python"
    assert said == [f"COMET environment: {comet.env_dir()} (already set up)"]
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LLM_SRT_CACHE", str(tmp_path / "file" / "sub"))  # a cache below a file: NotADirectoryError
    with pytest.raises(LLMSRTError) as e:
        comet.install_env(log=lambda line: None)
    assert str(e.value).startswith(f"{tmp_path}/file/sub: {tmp_path}/file is not a folder (a file, or a broken "
                                   "link); set LLM_SRT_CACHE")


def test_setup_comet_on_a_cache_that_takes_no_locks(tmp_path, monkeypatch, capsys):
    """`llm-srt setup --comet` on a cache whose file system takes no locks (Lustre -o noflock: ENOSYS) was flock's
    OSError traceback; it says so on stderr in one line and sets the environment up. Other errors pass as before."""
    import errno
    import fcntl
    import sys

    monkeypatch.setenv("LLM_SRT_CACHE", str(tmp_path / "cache"))
    real = fcntl.flock
    refused = [errno.ENOSYS]

    def flock(f, operation: int) -> None:
        if operation & fcntl.LOCK_EX:
            raise OSError(refused[0], os.strerror(refused[0]))
        real(f, operation)

    def run_(command: list[str], what: str) -> None:  # the venv and pip, instantly
        if "venv" in command:
            (comet.env_dir() / "bin").mkdir(parents=True)
            (comet.env_dir() / "bin" / "python").write_text("")

    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(comet, "_run", run_)
    monkeypatch.setattr(sys, "executable", "python")
    assert comet.install_env(log=lambda line: None) == comet.env_dir() / "bin" / "python"
    lock = comet.env_dir().parent / f".{comet.env_dir().name}.lock"
    assert capsys.readouterr().err == (f"{lock}: this file system takes no locks (Function not implemented); run one "
                                       "llm-srt setup --comet at a time on this cache\n")
    refused[0] = errno.EIO
    with pytest.raises(OSError, match="Input/output error"):
        comet.install_env(force=True, log=lambda line: None)
