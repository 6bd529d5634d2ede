"""An adapter option written out at its default (`dropout: 0.1`, `cross_attention_frequency: 2` for the Q-Former)
stopped a plain resume ("model.adapter_kwargs.dropout (unset) -> 0.1 ... add allow_changes=true"), where README says
such an option may change: the defaults were filled in for the shape check only (`resume._shaping_options`), not
where the settings are compared (`resume.changes`)."""

from llm_srt.train import checkpoint, recipe, resume
from llm_srt.train.config import load_config

from .conftest import overrides

QFORMER = {"model.adapter": "qformer", "model.adapter_kwargs": {"num_queries": 4, "hidden_size": 32}}


def _with(**options):
    return {**QFORMER, "model.adapter_kwargs": {**QFORMER["model.adapter_kwargs"], **options}}


def test_an_option_written_at_its_default_is_no_change():
    assert resume.changes(QFORMER, _with(dropout=0.1, cross_attention_frequency=2)) == []
    assert resume.changes(_with(dropout=0.1), QFORMER) == []


def test_an_option_off_its_default_is_a_change_both_ways():
    assert resume.changes(QFORMER, _with(dropout=0.2)) == ["model.adapter_kwargs.dropout 0.1 -> 0.2"]
    assert resume.changes(_with(cross_attention_frequency=1), QFORMER) == [
        "model.adapter_kwargs.cross_attention_frequency 1 -> 2"]


def test_another_kinds_options_are_compared_as_written():
    linear = {"model.adapter": "linear", "model.adapter_kwargs": {"k": 5}}
    assert resume.changes(QFORMER, linear) == [
        "model.adapter 'qformer' -> 'linear'", "model.adapter_kwargs.hidden_size 32 -> (unset)",
        "model.adapter_kwargs.k (unset) -> 5", "model.adapter_kwargs.num_queries 4 -> (unset)"]


def test_a_resume_with_the_adapters_defaults_written_out_goes_on(tiny_setup, tmp_path):
    out = tmp_path / "run"
    recipe.train(load_config(None, overrides(tiny_setup, out, max_steps=2, save_every=2)), log=lambda *_: None)
    kwargs = ("{num_queries: 4, hidden_size: 32, num_layers: 1, num_heads: 4, intermediate_size: 64, dropout: 0.1, "
              "cross_attention_frequency: 2}")
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=3, save_every=3, **{"model.adapter_kwargs": kwargs}))
    said = []
    recipe.train(cfg, log=said.append)
    assert checkpoint.latest(out).step == 3
    assert not any("changed settings" in s for s in said), said
