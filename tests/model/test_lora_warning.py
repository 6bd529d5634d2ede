"""apply_lora wraps the LLM without transformers' FutureWarning on `is_gradient_checkpointing` (peft reads the
deprecated attribute in get_peft_model): it was printed by every SpeechTranslator.from_pretrained from Python, as
only the CLI hid it (a global filter; pyproject's filter hides it in the tests, so this test lets every warning
through). Other warnings are left alone."""

import warnings

from transformers import LlamaConfig, LlamaForCausalLM

from llm_srt.model.llm import LoraOptions, apply_lora


def test_applying_lora_says_nothing_of_is_gradient_checkpointing():
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        wrapped = apply_lora(model, LoraOptions(r=2))
        warnings.warn("`is_gradient_checkpointing` is deprecated (ours, after)", FutureWarning)  # not filtered
    assert any("lora_A" in name for name, _ in wrapped.named_parameters())
    said = [str(w.message) for w in seen if "is_gradient_checkpointing" in str(w.message)]
    assert said == ["`is_gradient_checkpointing` is deprecated (ours, after)"]
