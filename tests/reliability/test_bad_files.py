"""Bad model folders, manifests and configs through the real CLI (`translate`, `evaluate`, `train`).

Each case must end in a user error (exit 2) whose message names the file (and line, for manifests and YAML) and
says what to do, never a traceback. `evaluate` over a manifest whose rows are fine but whose audio is not reports
each failed utterance and scores the rest.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from llm_srt import cli
from llm_srt.train import recipe

pytestmark = pytest.mark.reliability("bad-input")
# Known gaps, fixed by patches to files outside this folder (see the reliability report); set to None once applied.
PATCH_MODEL = None
PATCH_EVALUATE = None


def _errors(capsys, verb: str) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith(f"llm-srt {verb}:")]


# ---- model folders ----------------------------------------------------------------------------------------------
def _edit_config(**changes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        meta = json.loads((folder / "config.json").read_text())
        meta.update(changes)
        (folder / "config.json").write_text(json.dumps(meta))
    return edit


def _drop_config_key(folder: Path, key: str) -> None:
    meta = json.loads((folder / "config.json").read_text())
    del meta[key]
    (folder / "config.json").write_text(json.dumps(meta))


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def _truncate(name: str, keep: int) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:keep])


def _reshape_first_tensor(folder: Path) -> None:
    state = load_file(str(folder / "adapter.safetensors"))
    state[sorted(state)[0]] = torch.zeros(3, 5)
    save_file(state, str(folder / "adapter.safetensors"))


def _drop_a_tensor(folder: Path) -> None:
    state = load_file(str(folder / "adapter.safetensors"))
    del state[sorted(state)[-1]]
    save_file(state, str(folder / "adapter.safetensors"))


def _replace_by_dir(name: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()
    return edit


@dataclass(frozen=True)
class ModelCase:
    id: str
    damage: Callable[[Path], None] | None  # applied to a copy of a good model folder
    error: str  # a fragment of the one-line error
    xfail: str | None = None
    model: Callable[[Path, Path], Path] | None = None  # (good folder, tmp) -> the --model argument


MODEL_CASES = [
    ModelCase("folder-missing", None, "nowhere: no such folder", model=lambda good, tmp: tmp / "nowhere"),
    ModelCase("a-file-not-a-folder", None, "config.json: a file, not a model folder",
              model=lambda good, tmp: good / "config.json"),
    ModelCase("no-config-json", lambda f: (f / "config.json").unlink(), "no config.json"),
    ModelCase("corrupt-config-json", _write("config.json", b'{"encoder": "x", '), "invalid JSON (line 1)"),
    ModelCase("config-json-not-utf8", _write("config.json", b"\xff\xfe{}"), "config.json", PATCH_MODEL),
    ModelCase("config-json-is-a-list", _write("config.json", b"[1, 2]"), "config.json"),
    ModelCase("config-json-is-a-number", _write("config.json", b"123"), "config.json", PATCH_MODEL),
    ModelCase("config-missing-adapter-key", lambda f: _drop_config_key(f, "adapter"), "missing key 'adapter'"),
    ModelCase("config-format-newer", _edit_config(format=99), "newer than this llm-srt"),
    ModelCase("config-format-not-a-number", _edit_config(format="one"), "format", PATCH_MODEL),
    ModelCase("config-unknown-adapter", _edit_config(adapter="transformer-xl"), "unknown adapter", PATCH_MODEL),
    ModelCase("config-bad-adapter-option", _edit_config(adapter_kwargs={"bogus": 1}), "bad options", PATCH_MODEL),
    ModelCase("config-adapter-options-not-a-mapping", _edit_config(adapter_kwargs="big"), "adapter_kwargs",
              PATCH_MODEL),
    ModelCase("config-encoder-folder-missing", _edit_config(encoder="/nonexistent/whisper"),
              "not a Hugging Face Whisper folder"),
    ModelCase("config-llm-folder-missing", _edit_config(llm="/nonexistent/llm"), "not a Hugging Face model folder"),
    ModelCase("no-adapter-safetensors", lambda f: (f / "adapter.safetensors").unlink(), "adapter.safetensors is "
              "missing"),
    ModelCase("adapter-is-a-folder", _replace_by_dir("adapter.safetensors"), "adapter.safetensors is missing"),
    ModelCase("adapter-wrong-shape", _reshape_first_tensor, "has shape (3, 5)"),
    ModelCase("adapter-missing-a-tensor", _drop_a_tensor, "adapter weights do not match"),
    ModelCase("adapter-truncated", _truncate("adapter.safetensors", 300), "adapter.safetensors", PATCH_MODEL),
    ModelCase("adapter-empty", _write("adapter.safetensors", b""), "adapter.safetensors", PATCH_MODEL),
    ModelCase("adapter-random-bytes", _write("adapter.safetensors", np.random.default_rng(0).bytes(2000)),
              "adapter.safetensors", PATCH_MODEL),
    ModelCase("stray-lora-file", _write("lora.safetensors", b"\x00" * 16), "lora is disabled"),
]


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(reason=c.xfail, strict=True))
                                  if c.xfail else c for c in MODEL_CASES], ids=[c.id for c in MODEL_CASES])
def test_model_folder(case, model_dir, good_clip, tmp_path, capsys):
    if case.model is not None:
        model = case.model(model_dir, tmp_path)
    else:
        model = tmp_path / "model"
        shutil.copytree(model_dir, model)
        case.damage(model)
    rc = cli.main(["translate", good_clip, "--model", str(model), "--src", "eng", "--tgt", "deu"])
    lines = _errors(capsys, "translate")
    assert rc == 2 and len(lines) == 1, lines
    assert case.error in lines[0] and "\n" not in lines[0]
    assert str(model) in lines[0] or "/nonexistent/" in lines[0], lines[0]  # names the folder it is about


# ---- manifests (llm-srt evaluate stops before loading any model) ------------------------------------------------
def _row(i: int, **over) -> dict:
    row = {"id": f"u{i}", "audio": "clip.wav", "duration": 1.2, "src_lang": "eng", "transcript": "a cat",
           "tgt_lang": "deu", "translation": "eine Katze", "split": "test", "corpus": "t", "sentence_id": str(i)}
    row.update(over)
    return row


def _without(*keys: str) -> dict:
    return {k: v for k, v in _row(2).items() if k not in keys}


@dataclass(frozen=True)
class ManifestCase:
    id: str
    line: str | bytes | None  # line 2 of a 3-line manifest (lines 1 and 3 are good); None: `text` is the file
    error: str  # a fragment of the error line that points at the problem
    text: bytes | None = None  # the whole file, for cases about the file rather than one row
    where: str = ":2: "  # what follows the manifest's path on that line (":LINE: " for a row)
    also: str = ""  # another fragment the message must hold


MANIFEST_CASES = [
    ManifestCase("bad-json", '{"id": "u2", "audio": ', "not valid JSON"),
    ManifestCase("json-array", "[1, 2, 3]", "expected a JSON object"),
    ManifestCase("json-string", '"just a string"', "expected a JSON object"),
    ManifestCase("missing-field", json.dumps(_without("audio")), "missing field(s) audio"),
    ManifestCase("missing-fields", json.dumps(_without("src_lang", "transcript", "split")), "src_lang, transcript"),
    ManifestCase("duration-is-a-string", json.dumps(_row(2, duration="1.2")), "field 'duration' should be"),
    ManifestCase("duration-is-a-bool", json.dumps(_row(2, duration=True)), "field 'duration' should be"),
    ManifestCase("id-is-a-number", json.dumps(_row(2, id=7)), "field 'id' should be str"),
    ManifestCase("transcript-is-null", json.dumps(_row(2, transcript=None)), "field 'transcript' should be"),
    ManifestCase("empty-id", json.dumps(_row(2, id=" ")), "field 'id' is empty"),
    ManifestCase("zero-duration", json.dumps(_row(2, duration=0)), "not positive"),
    ManifestCase("negative-duration", json.dumps(_row(2, duration=-3)), "not positive"),
    ManifestCase("infinite-duration", json.dumps(_row(2, duration=float("inf"))), "not positive and finite"),
    ManifestCase("nan-duration", json.dumps(_row(2, duration=float("nan"))), "not positive"),
    ManifestCase("empty-src-lang", json.dumps(_row(2, src_lang="")), "field 'src_lang' is empty"),
    ManifestCase("unknown-src-lang", json.dumps(_row(2, src_lang="xx")), "src_lang 'xx' is not a known language"),
    ManifestCase("unknown-tgt-lang", json.dumps(_row(2, tgt_lang="english")), "tgt_lang 'english'"),
    ManifestCase("translation-without-tgt", json.dumps(_row(2, tgt_lang="")), "must both be set"),
    ManifestCase("tgt-without-translation", json.dumps(_row(2, translation=" ")), "must both be set"),
    ManifestCase("audio-missing", json.dumps(_row(2, audio="gone.wav")), "gone.wav does not exist"),
    ManifestCase("audio-is-a-folder", json.dumps(_row(2, audio=".")), "is not a file"),
    ManifestCase("audio-empty", json.dumps(_row(2, audio="empty.wav")), "is empty (0 bytes)"),
    ManifestCase("audio-path-with-nul", json.dumps(_row(2, audio="a\u0000.wav")), "does not exist"),
    ManifestCase("audio-path-too-long", json.dumps(_row(2, audio="x" * 5000 + ".wav")), "cannot be checked"),
    ManifestCase("duplicate-id", json.dumps(_row(1)), "duplicate id 'u1' (first on line 1)"),
    ManifestCase("not-utf8", b'{"id": "u2", "transcript": "caf\xe9"}', "not UTF-8"),
    ManifestCase("nested-too-deep", "[" * 100_000 + "]" * 100_000, "not usable JSON"),
    ManifestCase("number-with-5000-digits", json.dumps(_row(2)).replace('"duration": 1.2', '"duration": ' + "9" * 5000),
                 "not usable JSON"),
    ManifestCase("thirty-bad-rows", None, "not valid JSON", text=b"{oops\n" * 30, where=":20: ", also="and 10 more"),
    ManifestCase("empty-file", None, "no usable rows", text=b"", where=": "),
    ManifestCase("only-blank-lines", None, "no usable rows", text=b"\n  \n\t\n", where=": "),
    ManifestCase("binary-file", None, "not a JSON-lines manifest (binary content); a manifest is JSON-lines text",
                 text=np.random.default_rng(1).bytes(3000), where=": "),
]


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("manifests")
    sf.write(folder / "clip.wav", (0.3 * np.sin(np.arange(19200) / 5)).astype(np.float32), 16000)
    (folder / "empty.wav").write_bytes(b"")
    return folder


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[c.id for c in MANIFEST_CASES])
def test_manifest(case, manifest_dir, model_dir, tmp_path, capsys):
    manifest = manifest_dir / f"{case.id}.test.jsonl"
    if case.text is not None:
        manifest.write_bytes(case.text)
    else:
        line = case.line.encode() if isinstance(case.line, str) else case.line
        manifest.write_bytes(json.dumps(_row(1)).encode() + b"\n" + line + b"\n" + json.dumps(_row(3)).encode())
    rc = cli.main(["evaluate", "--model", str(model_dir), "--manifest", str(manifest), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and rc == 2
    first, *listed = err.strip().splitlines()
    assert first.startswith(f"llm-srt evaluate: error: {manifest}: "), first  # names the file, then the problems
    assert any(f"{manifest}{case.where}" in line and case.error in line for line in [first, *listed]), err
    assert case.also in err


@pytest.mark.parametrize("name,words", [("no-such-manifest.jsonl", "no such manifest file; build one with `llm-srt "
                                                                    "prepare`"), (".", "is a directory, not a file")],
                         ids=["manifest-missing", "manifest-is-a-folder"])
def test_manifest_path(name, words, manifest_dir, model_dir, tmp_path, capsys):
    rc = cli.main(["evaluate", "--model", str(model_dir), "--manifest", str(manifest_dir / name), "--out",
                   str(tmp_path)])
    lines = _errors(capsys, "evaluate")
    assert rc == 2 and len(lines) == 1 and words in lines[0]


def test_manifest_with_a_bom_is_read(manifest_dir):
    """A UTF-8 byte-order mark (what some editors write) is not a bad first row."""
    from llm_srt.data.manifest import read_manifest

    path = manifest_dir / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_row(1)).encode() + b"\r\n" + json.dumps(_row(2)).encode() + b"\r\n")
    assert [r.id for r in read_manifest(path)] == ["u1", "u2"]


@pytest.mark.reliability("batch")
def test_evaluate_skips_bad_rows_and_bad_audio_and_scores_the_rest(manifest_dir, model_dir, tmp_path, capsys):
    """--skip-bad drops the rows that cannot be scored at all (with a warning naming them); a row whose audio file is
    missing, or exists but does not decode, fails only its own utterance, counted and scored as empty (a missing
    file's row left the report until 2026-12-06); every other row is translated and scored (but for the
    transcript-only row u6: under srt the SRT rows of its clip give the WER, so it is not decoded, and said so)."""
    (manifest_dir / "junk.wav").write_bytes(np.random.default_rng(2).bytes(3000))
    rows = [_row(1), _row(2, audio="gone.wav"), _row(3, audio="junk.wav"), {"id": "u4"}, _row(5),
            _row(6, tgt_lang="", translation="")]
    manifest = manifest_dir / "mixed.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = cli.main(["evaluate", "--model", f"tiny={model_dir}", "--manifest", str(manifest), "--out", str(tmp_path),
                   "--skip-bad", "--max-new-tokens", "4"])
    out = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out.err
    assert "llm-srt evaluate: warning: --skip-bad: " in out.err and "skipped 1 bad rows" in out.err  # one line
    hyps = {h["id"]: h for h in map(json.loads, (tmp_path / "hyps.tiny.jsonl").read_text().splitlines())}
    assert sorted(hyps) == ["u1", "u2", "u3", "u5"]
    assert "gone.wav" in hyps["u2"]["error"] and "no such file" in hyps["u2"]["error"]
    assert "junk.wav" in hyps["u3"]["error"] and "cannot decode" in hyps["u3"]["error"]
    assert all(hyps[i]["error"] is None and hyps[i]["hyp_translation"] is not None for i in ("u1", "u5"))
    assert "1 transcript-only (ASR) row not decoded" in out.out and "not scored" not in out.out  # u6, of u1's clip
    assert "failed: 2 of 4" in out.out + out.err and (tmp_path / "report.md").is_file()


@pytest.mark.reliability("batch")
@pytest.mark.xfail(reason=PATCH_EVALUATE, strict=True) if PATCH_EVALUATE else lambda f: f
def test_evaluate_where_nothing_can_be_translated_exits_1(manifest_dir, model_dir, tmp_path, capsys):
    """--skip-bad: without it, a clip no decoder reads is refused before decoding, as `prepare check` refuses it."""
    (manifest_dir / "noise.wav").write_bytes(np.random.default_rng(4).bytes(3000))
    rows = [_row(1, audio="noise.wav"), _row(2, audio="noise.wav", tgt_lang="", translation="")]
    manifest = manifest_dir / "all-bad.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = cli.main(["evaluate", "--model", f"tiny={model_dir}", "--manifest", str(manifest), "--out", str(tmp_path),
                   "--max-new-tokens", "4", "--skip-bad"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "failed: 1 of 1" in out.out + out.err  # u2: the ASR row of u1's clip
    assert rc == 1 and (tmp_path / "report.md").is_file()  # the report still lists the failures


# ---- configs (llm-srt train stops before building anything) -----------------------------------------------------
@dataclass(frozen=True)
class ConfigCase:
    id: str
    yaml: str | bytes | None  # the config file's text; None: no file is given
    overrides: tuple[str, ...] = ()
    error: str = ""  # a fragment of the one-line error
    names_file: bool = True  # the message names the YAML file


CONFIG_CASES = [
    ConfigCase("unknown-top-level-key", "stage: asr\nlearning_rate: 1e-4\n", error="unknown key 'learning_rate'"),
    ConfigCase("unknown-nested-key", "optim:\n  lrate: 1e-4\n", error="unknown key 'optim.lrate'"),
    ConfigCase("int-is-a-word", "max_steps: many\n", error="max_steps must be int"),
    ConfigCase("int-is-a-bool", "max_steps: true\n", error="max_steps must be int"),
    ConfigCase("int-is-a-float", "max_steps: 10.5\n", error="max_steps must be int"),
    ConfigCase("section-is-a-list", "optim: [1, 2]\n", error="optim must be a mapping"),
    ConfigCase("list-is-a-string", "trainable: adapter\n", error="trainable must be a list"),
    ConfigCase("choice-not-allowed", "precision: fp8\n", error="precision must be one of"),
    ConfigCase("pair-with-one-item", "optim:\n  betas: [0.9]\n", error="optim.betas must be a list of 2 items"),
    ConfigCase("float-is-a-word", "optim:\n  lr: fast\n", error="optim.lr must be float"),
    ConfigCase("unknown-task", "data:\n  tasks: {translate: 1.0}\n", error="unknown task 'translate'"),
    ConfigCase("zero-steps", "max_steps: 0\n", error="max_steps must be >= 1, got 0"),
    ConfigCase("mixed-type-keys", "1: a\nfoo: b\n", error="unknown key"),
    ConfigCase("unset-env-var", "model:\n  llm: ${LLM_SRT_TEST_UNSET_VAR}\n", error="LLM_SRT_TEST_UNSET_VAR"),
    ConfigCase("invalid-yaml", "stage: asr\noptim:\n  lr: [1e-4\nmax_steps: 3\n", error="not valid YAML"),
    ConfigCase("top-level-list", "- stage: asr\n", error="top level must be a mapping"),
    ConfigCase("not-utf8", b"stage: \xff\xfe\n", error="not UTF-8"),
    ConfigCase("missing-file", None, ("missing.yaml",), error="no such config file", names_file=False),
    ConfigCase("two-config-files", None, ("a.yaml", "b.yaml"), error="give one config file", names_file=False),
    ConfigCase("override-without-key", "stage: asr\n", ("=5",), error="write overrides as key=value"),
    ConfigCase("override-bad-yaml", "stage: asr\n", ("optim.lr=[1",), error="not valid YAML"),
    ConfigCase("override-into-a-scalar", "stage: asr\n", ("stage.name=x",),
               error="stage is 'asr', not a mapping of keys; set stage itself"),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_config(case, tmp_path, monkeypatch, capsys):
    def must_not_train(cfg, log=print):
        raise AssertionError(f"the bad config was accepted: {cfg}")

    monkeypatch.setattr(recipe, "train", must_not_train)
    monkeypatch.delenv("LLM_SRT_TEST_UNSET_VAR", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = list(case.overrides)
    if case.yaml is not None:
        path = tmp_path / "stage.yaml"
        path.write_bytes(case.yaml.encode() if isinstance(case.yaml, str) else case.yaml)
        argv.insert(0, str(path))
    rc = cli.main(["train", *argv])
    lines = _errors(capsys, "train")
    assert rc == 2 and len(lines) == 1, lines
    assert case.error in lines[0], lines[0]
    assert not case.names_file or "stage.yaml" in lines[0] or "override" in lines[0], lines[0]
    if case.id == "invalid-yaml":
        assert "stage.yaml:4:" in lines[0]  # the line of the problem
