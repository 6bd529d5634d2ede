"""What the start-up checks (train/preflight.py) say: every missing manifest at once, the config to fix."""

import pytest

from llm_srt.errors import ConfigError
from llm_srt.train import recipe
from llm_srt.train.config import load_config
from llm_srt.train.preflight import check_before_start

from .conftest import overrides

LOCALES = ["ca", "cy", "de", "en", "es", "et", "fa", "fr", "id", "it", "ja", "lv", "mn", "nl", "pt"]


def test_every_missing_training_manifest_is_counted_in_one_line(tiny_setup, tmp_path):
    """13 of 15 Common Voice locales not prepared yet: the error named the first alone, so each run found one more."""
    ready = {"ca", "it"}
    paths = [tiny_setup["manifest"] if loc in ready else str(tmp_path / "cv" / f"{loc}.jsonl") for loc in LOCALES]
    cfg = load_config(None, overrides(tiny_setup, tmp_path / "run", device="cpu",
                                      **{"data.train": f"[{', '.join(paths)}]"}))
    with pytest.raises(ConfigError) as refused:
        check_before_start(cfg)
    message = str(refused.value)
    cv = tmp_path / "cv"
    assert message == (f"data.train: 13 of its 15 manifests are not there: {cv / 'cy.jsonl'}, {cv / 'de.jsonl'}, "
                       f"{cv / 'en.jsonl'}, ... (10 more); build them with `llm-srt prepare` or fix the paths"), message


def test_a_missing_dev_manifest_is_named_beside_the_missing_training_ones(tiny_setup, tmp_path):
    cfg = load_config(None, overrides(tiny_setup, tmp_path / "run", device="cpu", **{
        "data.train": f"[{tmp_path / 'a.jsonl'}, {tiny_setup['manifest']}, {tmp_path / 'b.jsonl'}]",
        "data.dev": str(tmp_path / "dev.jsonl")}))
    with pytest.raises(ConfigError) as refused:
        check_before_start(cfg)
    assert str(refused.value) == (f"data.train: 2 of its 3 manifests are not there: {tmp_path / 'a.jsonl'}, "
                                  f"{tmp_path / 'b.jsonl'}; data.dev: {tmp_path / 'dev.jsonl'}: no such manifest; "
                                  "build them with `llm-srt prepare` or fix the paths"), refused.value


def test_bf16_on_the_cpu_names_the_stage_yaml_and_the_override_that_fixes_it(tiny_setup, tmp_path):
    """`llm-srt train configs/paper/.../asr.yaml` on a CPU host said "precision: bf16 autocast needs a CUDA device
    here", naming no config: which stage's YAML (a loop over the stages), and that precision=fp32 on the command line
    runs it there."""
    from argparse import Namespace

    stage = tmp_path / "asr.yaml"
    stage.write_text("stage: asr\nprecision: bf16\n")
    items = [str(stage), *overrides(tiny_setup, tmp_path / "run", device="cpu")]
    with pytest.raises(ConfigError) as refused:
        recipe.main(Namespace(items=items))
    message = str(refused.value)
    assert message.startswith(f"{stage}: precision: bf16 autocast needs a CUDA device here"), message
    assert "precision=fp32 (or precision=auto) to the command line" in message and "\n" not in message, message
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"^precision: bf16 autocast needs a CUDA device here.* precision=fp32"):
        recipe.main(Namespace(items=items[1:] + ["precision=bf16"]))  # no YAML: the command line alone
