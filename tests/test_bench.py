"""`llm-srt bench` on tiny random models: every measurement runs, the JSON has its keys, and the numbers are
consistent with what each configuration must do (750 pooled speech tokens on 30 s padding, no encoder call from the
feature cache, ...). No timing thresholds: those are for the embedded models on the real machine."""

import json
import shutil

import numpy as np
import pytest

import tiny
from llm_srt import bench
from llm_srt.errors import LLMSRTError

QFORMER = {"num_queries": 8, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
RATIOS = ("adapter_vs_pooled_speedup", "feature_cache_speedup", "variable_length_speedup", "batch16_vs_batch1",
          "overhead_vs_lower_bound")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    root = tmp_path_factory.mktemp("bench")
    options = bench.BenchOptions(encoder=str(tiny.whisper_dir(root)), llm=str(tiny.llm_dir(root)),
                                 adapter_kwargs=QFORMER, manifest=None, n=6, new_tokens=3, batch_sizes=(1, 2, 4),
                                 beam_size=2, beam_batch_sizes=(2,), pooled_batch_sizes=(1, 4), headline_batch=4,
                                 cascade=False, train_batch=3, train_steps=1, long_clips=2, encoder_repeats=1)
    return bench.run_bench(options)


def test_json_has_the_ratios_goals_and_raw_times(result):
    text = json.dumps(result)  # JSON-ready as is
    assert set(RATIOS) <= set(json.loads(text)) and set(result["goals"]) == set(RATIOS)
    for key in RATIOS:
        assert result[key] > 0 and np.isfinite(result[key])
        assert isinstance(result["goals"][key]["met"], bool)
    assert result["setup"]["utterances"] == 6 and result["setup"]["batch16_vs_batch1_batches"] == [4, 1]
    assert result["cascade"] is None


def test_decode_rows_cover_the_plan_with_the_right_speech_tokens(result):
    rows = {(r["system"], r["beam"], r["batch_size"]): r for r in result["decode"]}
    assert set(rows) == {("llm-srt", 1, 1), ("llm-srt", 1, 2), ("llm-srt", 1, 4), ("llm-srt", 2, 2),
                         ("pooled-750", 1, 1), ("pooled-750", 1, 4)}
    for (system, _, _), r in rows.items():
        assert r["speech_tokens"] == (750 if system == "pooled-750" else QFORMER["num_queries"])
        assert r["seconds"] > 0 and r["new_tokens"] == 3 and r["peak_rss_mb"] > 0
        assert r["utterances_per_s"] == pytest.approx(6 / r["seconds"], rel=0.03)  # both rounded
    head = rows[("pooled-750", 1, 4)]["seconds"] / rows[("llm-srt", 1, 4)]["seconds"]
    assert result["adapter_vs_pooled_speedup"] == pytest.approx(head, rel=0.01)


def test_encoder_runs_ten_second_clips_at_their_length_and_padded(result):
    e = result["encoder"]
    assert e["clips"] == 2 and e["clip_seconds"] == 10.0
    assert e["variable_frames"] == 500 and e["padded_frames"] == 1500
    assert result["variable_length_speedup"] == pytest.approx(e["padded_s"] / e["variable_s"], rel=0.01)


def test_feature_cache_path_skips_the_encoder(result):
    t = result["train"]
    assert t["encoder_calls_audio"] == 2 and t["encoder_calls_cached"] == 0  # warm-up + 1 timed step each way
    assert t["cache_misses"] == 3 and t["cache_hits"] == 3 * 2
    assert t["s_per_step_audio"] > 0 and t["s_per_step_cached"] > 0


def test_lower_bound_replays_translate_batches(result):
    o = result["overhead"]
    assert o["generations"] == 2  # 6 utterances at batch 4
    assert o["generations"] <= o["llm_forward_calls"] <= o["generations"] * 3
    parts = [o[k] for k in ("encoder_s", "adapter_s", "prefill_s", "decode_s")]
    assert all(p >= 0 for p in parts) and o["lower_bound_s"] == pytest.approx(sum(parts), abs=0.01)


def test_table_has_table7_shape(result):
    table = bench.format_table(result)
    assert "LLM-SRT (Q-Former" in table and "Qwen2-Audio-style" in table and "beam 2" in table
    assert all(key in table for key in RATIOS)


def test_long_clips_are_exact_and_options_are_checked():
    utts = [bench.Utterance("x", np.ones(16000 * 3, np.float32), "eng", "deu", "", "")]
    clips = bench.long_clips(utts, 3, 10.0)
    assert len(clips) == 3 and all(c.size == 160000 for c in clips)
    with pytest.raises(LLMSRTError, match="headline"):
        bench.BenchOptions(batch_sizes=(1, 4), headline_batch=8)


def test_bench_default_model_is_used_only_when_it_has_a_qformer(tmp_path):
    from pathlib import Path

    from llm_srt.bench import DEFAULT_TRAINED, _is_qformer_model

    assert not _is_qformer_model(tmp_path)  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"encoder": "e", "llm": "l", "adapter": "linear"}))
    assert not _is_qformer_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"encoder": "e", "llm": "l", "adapter": "qformer"}))
    assert _is_qformer_model(tmp_path)
    folder = Path(__file__).resolve().parents[1] / DEFAULT_TRAINED
    shipped = json.loads((folder / "config.json").read_text())["adapter"]
    assert _is_qformer_model(folder) == (shipped == "qformer")
