"""Loading straight onto a device in a dtype, random paper-shaped builds, meta skeletons, and the vectorized
assembly of LLM inputs (checked against a plain per-row reference)."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import tiny
from llm_srt.errors import LLMSRTError
from llm_srt.model.encoder import WhisperEncoder
from llm_srt.model.llm import LoraOptions, load_llm
from llm_srt.model.speech_llm import IGNORE, SpeechLLM, SpeechLLMConfig, tokenize_batch

CLIPS = [tiny.tone(0.8, 300), tiny.tone(1.5, 700, seed=1), tiny.tone(0.5, 1200, seed=2)]
PROMPTS = ["<|eng|>", "<|deu|><|eng|>", "hello<|eng|><|fra|>"]
TARGETS = ["a cat", "the big dog", ""]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    return tiny.whisper_dir(root), tiny.llm_dir(root, init_std=0.3), root


def _reference_assemble(model, speech, prompt_ids, target_ids, left_pad):
    """The obvious per-row construction the vectorized `assemble` must equal."""
    embed = model.llm.get_input_embeddings()
    bos = model.tokenizer.bos_token_id
    rows, labels = [], []
    for i, prompt in enumerate(prompt_ids):
        target = target_ids[i] if target_ids is not None else []
        parts = [embed(torch.tensor([bos]))] if bos is not None else []
        if speech is not None:
            parts.append(speech[0][i][speech[1][i]])
        parts.append(embed(torch.tensor(prompt + target, dtype=torch.long)))
        row = torch.cat(parts)
        rows.append(row)
        labels.append([IGNORE] * (row.shape[0] - len(target)) + list(target))
    length = max(r.shape[0] for r in rows)
    out = torch.zeros(len(rows), length, rows[0].shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    lab = torch.full((len(rows), length), IGNORE)
    for i, (row, row_labels) in enumerate(zip(rows, labels)):
        span = slice(length - row.shape[0], length) if left_pad else slice(0, row.shape[0])
        out[i, span], mask[i, span], lab[i, span] = row, True, torch.tensor(row_labels)
    return out, mask, lab


@pytest.mark.parametrize("adapter", ["qformer", "pooled"])
@pytest.mark.parametrize("left_pad", [False, True])
@pytest.mark.parametrize("bos", [True, False])
def test_vectorized_assemble_equals_the_per_row_reference(tmp_path, adapter, left_pad, bos):
    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path, adapter=adapter, bos=bos).eval()
    with torch.no_grad():
        speech = model.speech_embeddings({"audio": CLIPS})
        if adapter == "pooled":  # variable-length speech: a hole in the mask must be skipped, not copied
            speech[1][0, 1] = False
        prompt_ids, target_ids = tokenize_batch(model.tokenizer, PROMPTS, TARGETS)
        for targets in (target_ids, None):
            got = model.assemble(speech, prompt_ids, targets, left_pad=left_pad)
            want = _reference_assemble(model, speech, prompt_ids, targets, left_pad)
            for g, w in zip(got, want):
                assert g.shape == w.shape and torch.equal(g, w)
        text_only = model.assemble(None, prompt_ids, target_ids, left_pad=left_pad)
        assert all(torch.equal(g, w) for g, w in
                   zip(text_only, _reference_assemble(model, None, prompt_ids, target_ids, left_pad)))
        # one lookup of the embedding table, BOS included: under FSDP an untied table is gathered whole for each
        lookups = []
        hook = model.llm.get_input_embeddings().register_forward_hook(lambda *_: lookups.append(1))
        try:
            model.assemble(speech, prompt_ids, target_ids, left_pad=left_pad)
        finally:
            hook.remove()
        assert lookups == [1]


def test_forward_takes_pretokenized_ids(tmp_path):
    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path).eval()
    prompt_ids, target_ids = tokenize_batch(model.tokenizer, PROMPTS, TARGETS)
    with torch.no_grad():
        a = model({"audio": CLIPS, "prompts": PROMPTS, "targets": TARGETS})
        b = model({"audio": CLIPS, "prompt_ids": prompt_ids, "target_ids": target_ids})
    assert torch.equal(a["loss"], b["loss"]) and int(a["n_tokens"]) == int(b["n_tokens"])
    with pytest.raises(LLMSRTError, match="2 targets"):
        model({"audio": CLIPS, "prompt_ids": prompt_ids, "target_ids": target_ids[:2]})


def test_llm_loads_in_its_dtype_and_random_or_meta_builds_read_no_weights(folders, tmp_path):
    _, llm, _ = folders
    real, _ = load_llm(llm, "bfloat16", device="cpu")
    assert {p.dtype for p in real.parameters()} == {torch.bfloat16}
    # a folder with only config.json + tokenizer (no weights): weights=False builds it, the default refuses
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in llm.iterdir():
        if not f.name.endswith(".safetensors"):
            (bare / f.name).write_bytes(f.read_bytes())
    with pytest.raises(LLMSRTError, match="cannot load the LLM"):
        load_llm(bare)
    torch.manual_seed(1)
    rand, _ = load_llm(bare, "float32", weights=False)
    assert sum(p.numel() for p in rand.parameters()) == sum(p.numel() for p in real.parameters())
    assert not torch.equal(rand.get_input_embeddings().weight, real.get_input_embeddings().weight.float())
    skeleton, _ = load_llm(llm, "bfloat16", device="meta")
    assert all(p.is_meta for p in skeleton.parameters())
    assert all(not b.is_meta for b in skeleton.buffers())  # rotary tables stay real: FSDP needs them per rank


def test_a_meta_skeleton_stops_at_the_end_tokens_the_loaded_llm_stops_at(folders, tmp_path):
    """generation_config.json (an instruct model's extra end token) is read for a weightless build too: an FSDP
    rank's skeleton must end its dev decoding where rank 0's loaded LLM does."""
    import json
    import shutil

    _, llm, _ = folders
    folder = tmp_path / "llm"
    shutil.copytree(llm, folder)
    config = json.loads((folder / "generation_config.json").read_text()) if (
        folder / "generation_config.json").is_file() else {}
    (folder / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": [3, 5]}))
    loaded, _ = load_llm(folder, "float32")
    skeleton, _ = load_llm(folder, "float32", device="meta")
    rand, _ = load_llm(folder, "float32", weights=False)
    assert loaded.generation_config.eos_token_id == skeleton.generation_config.eos_token_id == \
        rand.generation_config.eos_token_id == [3, 5]


def test_meta_llm_keeps_the_adapter_real(folders):
    whisper, llm, _ = folders
    cfg = SpeechLLMConfig(encoder=str(whisper), llm=str(llm), adapter="linear")
    model = SpeechLLM(cfg, device="cpu", llm_device="meta")
    assert all(p.is_meta for p in model.llm.parameters())
    assert not any(p.is_meta for p in model.adapter.parameters())
    assert model.device == torch.device("cpu")


def test_lora_weights_load_into_a_meta_skeleton_without_a_warning_a_tensor(folders, recwarn):
    """An FSDP rank other than 0 resuming with LoRA printed torch's "copying ... to a meta parameter ... is a no-op"
    once a LoRA tensor (256 lines a rank at 32B); its names and shapes are still checked."""
    from peft import get_peft_model_state_dict

    from llm_srt.model.llm import load_lora_state

    _, llm, _ = folders
    lora = LoraOptions(r=4, alpha=8, dropout=0.0)
    state = get_peft_model_state_dict(load_llm(llm, lora=lora)[0])
    skeleton, _ = load_llm(llm, lora=lora, device="meta")
    load_lora_state(skeleton, state, "lora.safetensors")
    assert not [str(w.message) for w in recwarn if "meta parameter" in str(w.message)]
    with pytest.raises(LLMSRTError, match=r"^lora.st: LoRA weights do not match the LLM"):
        load_lora_state(skeleton, {**state, "base_model.model.extra.lora_A.weight": torch.zeros(1)}, "lora.st")


def test_a_lora_target_module_the_llm_lacks_is_refused_beside_ones_it_has(folders):
    """peft refused only target_modules of which none was found: `[q_prj, v_proj]` put LoRA on v_proj alone, unsaid.
    A dotted tail of a module's name is a name, as peft matches it."""
    _, llm, _ = folders
    with pytest.raises(LLMSRTError, match=r"^LoRA: the LLM has no module named q_prj \(model\.lora\.target_modules\); "
                                          r"its linear layers are .*\bq_proj\b"):
        load_llm(llm, lora=LoraOptions(target_modules=("q_prj", "v_proj")))
    for targets in (("q_proj", "v_proj"), ("self_attn.q_proj", "v_proj")):
        model, _ = load_llm(llm, lora=LoraOptions(target_modules=targets))
        adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A" in n}
        assert adapted == {"q_proj", "v_proj"}, targets


def test_a_whisper_folder_given_as_the_llm_and_a_missing_relative_one_are_one_line_errors(folders, tmp_path,
                                                                                           monkeypatch):
    """transformers loads a Whisper folder as a causal LM (Whisper's decoder alone), and a speech LLM trained on
    it: refused, as the reverse mistake is. A relative folder that is not there names the folder it was read from."""
    whisper, _, _ = folders
    with pytest.raises(LLMSRTError, match=r"config.json: a whisper model, not a causal LM; .*model.encoder and "
                                          r"model.llm swapped"):
        load_llm(whisper)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LLMSRTError, match=rf"models/qwen: not a Hugging Face model folder \(no config.json\) \(a "
                                          rf"relative path starts at {tmp_path}\)"):
        load_llm("models/qwen")


def test_a_gguf_file_given_as_the_llm_says_to_convert_it(tmp_path):
    """A .gguf file as model.llm was told it is "not a Hugging Face model folder (no config.json); run llm-srt setup":
    it names the conversion that makes one. It then said to "point the config's llm at OUT", though `convert slam
    ... --llm x.gguf` and `translate --llm` have no config: it names both ways of giving the LLM."""
    gguf = tmp_path / "qwen2.5-0.5b-q4_k_m.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(gguf))}: a GGUF file, .*run `llm-srt convert gguf "
                                          rf"{re.escape(str(gguf))} OUT`, then give OUT as the LLM: --llm OUT, or "
                                          rf"model.llm in a config$"):
        load_llm(gguf)


def _copy_llm(llm: Path, to: Path, skip=()) -> Path:
    to.mkdir()
    for f in llm.iterdir():
        if not f.name.startswith(skip):
            (to / f.name).write_bytes(f.read_bytes())
    return to


def test_an_llm_folder_without_tokenizer_files_or_with_an_empty_tokenizer_is_refused(folders, tmp_path):
    """A folder of config.json + weights alone loaded with a one-token tokenizer AutoTokenizer built from
    config.json: every prompt and target tokenized to [], training learned speech -> EOS without an error."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    _, llm, _ = folders
    bare = _copy_llm(llm, tmp_path / "no_tok", skip=("tokenizer", "special_tokens", "added_tokens"))
    for device in (None, "meta"):  # an FSDP rank's skeleton tokenizes too
        with pytest.raises(LLMSRTError, match=r"no_tok: no tokenizer files \(tokenizer.json, vocab.json \+ "
                                              r"merges.txt or tokenizer.model\); copy them from the model's download"):
            load_llm(bare, device=device)
    one = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                  eos_token="<unk>")
    one.save_pretrained(bare)  # a tokenizer.json of one token: the backstop
    with pytest.raises(LLMSRTError, match=r"no_tok: its tokenizer is empty \(1 token\(s\); 'a' gives \[0\]\)"):
        load_llm(bare)


def test_weights_missing_from_the_llm_checkpoint_or_in_another_shape_are_refused(folders, tmp_path):
    """transformers filled them with random values and said so only in a log the CLI hides; a tied head is not
    missing, and a tensor the LLM has no place for is ignored with one warning."""
    from safetensors.torch import load_file, save_file

    _, llm, _ = folders
    state = load_file(llm / "model.safetensors")
    assert "lm_head.weight" in state
    folder = _copy_llm(llm, tmp_path / "cut")
    save_file({k: v for k, v in state.items() if k != "model.layers.1.mlp.down_proj.weight"},
              folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LLMSRTError, match=r"cut: 1 weight of the LLM not in its checkpoint \(model.layers.1.mlp."
                                          r"down_proj.weight\); a shard or tensor is missing"):
        load_llm(folder)
    load_llm(folder, device="meta")  # a skeleton reads no weights
    load_llm(folder, weights=False)
    save_file({**state, "lm_head.weight": state["lm_head.weight"][:-1]}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(LLMSRTError, match=r"cut: 1 weight of the LLM in another shape than its config.json gives "
                                          r"\(lm_head.weight: \(\d+, 48\) in the file, \(\d+, 48\) expected\)"):
        load_llm(folder)
    save_file({**state, "model.extra.weight": torch.zeros(2)}, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning) as caught:
        load_llm(folder)
    assert [str(w.message) for w in caught if str(folder) in str(w.message)] == [
        f"{folder}: 1 weight in the checkpoint that the LLM does not use, ignored (model.extra.weight)"]
    tied = tiny.llm_dir(tmp_path, tied=True)
    assert "lm_head.weight" not in load_file(tied / "model.safetensors")
    model, _ = load_llm(tied)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_a_truncated_llm_shard_is_a_one_line_error_naming_it(folders, tmp_path):
    """safetensors' SafetensorError is neither an OSError nor a ValueError: it was a 14-frame traceback."""
    from transformers import AutoModelForCausalLM

    _, llm, _ = folders
    sharded = tmp_path / "shards"
    AutoModelForCausalLM.from_pretrained(llm).save_pretrained(sharded, max_shard_size="20KB")
    for f in llm.glob("tokenizer*"):
        (sharded / f.name).write_bytes(f.read_bytes())
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 2
    load_llm(sharded)
    shards[1].write_bytes(shards[1].read_bytes()[:shards[1].stat().st_size // 2])
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(shards[1]))}: cannot read the LLM weights \(.*\); the "
                                          r"file is damaged or cut short: copy or download it again$"):
        load_llm(sharded)


def test_a_stale_shard_index_is_not_called_a_damaged_shard(folders, tmp_path):
    """An index that maps a tensor to a whole shard that lacks it: the shard was called "damaged or cut short"."""
    from safetensors.torch import load_file, save_file

    whisper, _, _ = folders
    folder = tmp_path / "stale"
    folder.mkdir()
    for f in whisper.iterdir():
        if f.name != "model.safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    state = load_file(whisper / "model.safetensors")
    keys = sorted(state)
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    for name, part in zip(shards, (keys[:len(keys) // 2], keys[len(keys) // 2:])):
        save_file({k: state[k] for k in part}, str(folder / name))
    index = {"metadata": {}, "weight_map": dict.fromkeys(keys, shards[0])}  # every tensor in the first shard
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(LLMSRTError, match=rf"^{re.escape(str(folder / shards[0]))}: model.safetensors.index.json "
                                          r"names a tensor this shard lacks .*save or copy the folder again$"):
        WhisperEncoder.from_pretrained(folder)


def test_encoder_loads_in_dtype_and_random_encoder_differs(folders):
    whisper, _, _ = folders
    enc = WhisperEncoder.from_pretrained(whisper, dtype=torch.bfloat16)
    assert {p.dtype for p in enc.parameters()} == {torch.bfloat16}
    h, mask = enc.encode([CLIPS[0]])
    assert h.dtype == torch.bfloat16 and torch.isfinite(h.float()).all() and mask.all()
    real = WhisperEncoder.from_pretrained(whisper)
    torch.manual_seed(3)
    rand = WhisperEncoder.from_pretrained(whisper, weights=False)
    assert not torch.equal(real.encoder.conv1.weight, rand.encoder.conv1.weight)


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc/self/maps (Linux)")
def test_encoder_weights_are_the_files_and_int8_lets_their_pages_go(folders, monkeypatch):
    """float32 on the CPU: the encoder's parameters are the checkpoint's mapped tensors themselves (built on the
    meta device: no random initialization, no copy), equal to the file's; bfloat16 copies them. An int8 speech
    LLM drops each encoder linear's file pages once it is quantized (a large-v3-shaped encoder loaded int8 had
    peaked at 5,210 MiB, 4 s of random initialization and a copy; now 1,165 MiB)."""
    from safetensors.torch import load_file

    from llm_srt.model import mapped

    whisper, llm, _ = folders
    file = (whisper / "model.safetensors").resolve()
    enc = WhisperEncoder.from_pretrained(whisper)
    assert all(mapped.mapping_of(p).file == file for p in enc.parameters())
    want = load_file(file)
    assert torch.equal(enc.encoder.conv1.weight, want["model.encoder.conv1.weight"])
    assert not any(mapped.mapping_of(p) and mapped.mapping_of(p).file == file
                   for p in WhisperEncoder.from_pretrained(whisper, dtype=torch.bfloat16).parameters())
    dropped = []
    monkeypatch.setattr(mapped, "drop_mapped_pages", lambda t: dropped.append(t.shape))
    cfg = SpeechLLMConfig(encoder=str(whisper), llm=str(llm), adapter="linear", dtype="int8")
    model = SpeechLLM(cfg, device="cpu")  # the LLM (int8 too) loads here, the encoder on first use
    dropped.clear()
    assert model.encoder is not None
    linears = [m.weight.shape for m in WhisperEncoder.from_pretrained(whisper).modules()
               if type(m) is torch.nn.Linear]
    assert sorted(dropped) == sorted(linears) and linears


def test_speech_llm_parts_take_the_fast_cpu_products_and_still_train(tmp_path):
    """Encoder, adapter and LLM linear layers all compute with `fast_linear` (oneDNN for CPU inference); the
    adapter still gets F.linear's gradients when it trains."""
    from torch import nn

    from llm_srt.model import cpu_linear

    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path, init_std=0.3)
    for part in (model.encoder, model.adapter, model.llm):
        assert not [m for m in part.modules() if type(m) is nn.Linear]
        assert [m for m in part.modules() if type(m) is cpu_linear.FastLinear]
    batch = {"audio": CLIPS[:2], "prompts": PROMPTS[:2], "targets": TARGETS[:2]}
    model.eval()  # no dropout: both passes compute the same function
    model(batch)["loss"].backward()
    grads = {n: p.grad for n, p in model.adapter.named_parameters()}
    model.zero_grad()
    for m in model.adapter.modules():  # the same step with plain nn.Linear forwards
        if type(m) is cpu_linear.FastLinear:
            m.__class__ = nn.Linear
    model(batch)["loss"].backward()
    for n, p in model.adapter.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)


def test_from_pretrained_dtype_overrides_and_prompt_format(tmp_path, folders):
    torch.manual_seed(0)
    model = tiny.speech_llm(tmp_path)
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    half = SpeechLLM.from_pretrained(ckpt, device="cpu", dtype="bfloat16")
    assert half.llm_dtype == torch.bfloat16 and half.encoder.encoder.conv1.weight.dtype == torch.bfloat16
    assert {p.dtype for p in half.adapter.parameters()} == {torch.float32}  # trained parts stay fp32
    assert torch.equal(half.adapter.state_dict()[next(iter(half.adapter.state_dict()))],
                       model.adapter.state_dict()[next(iter(model.adapter.state_dict()))])
    # moved to another host: its config names folders that no longer exist; overrides point at the new ones
    meta = json.loads((ckpt / "config.json").read_text())
    meta["encoder"], meta["llm"] = "/nonexistent/whisper", "/nonexistent/llm"
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(LLMSRTError):
        SpeechLLM.from_pretrained(ckpt)
    whisper, llm = model.config.encoder, model.config.llm
    moved = SpeechLLM.from_pretrained(ckpt, encoder=whisper, llm=llm, lora=None)
    assert moved.config.encoder == whisper and moved.config.llm == llm
    meta["prompt_format"] = meta.get("prompt_format", 1) + 1
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(LLMSRTError, match=r"prompt format \d+, but this llm-srt writes prompt format \d+"):
        SpeechLLM.from_pretrained(ckpt, encoder=whisper, llm=llm)


def test_a_moved_folders_missing_encoder_and_llm_are_one_error_before_the_llm_loads(tmp_path, monkeypatch):
    """A model folder whose encoder and LLM are both gone loaded the whole LLM (minutes for a 32B one), then named the
    LLM alone, with "run `llm-srt setup`" (it converts the embedded models only); the encoder's absence came after
    the LLM was re-pointed and loaded again. One error names both, with the options that re-point them, and nothing
    loads; `llm-srt setup` only for the embedded model, not converted."""
    from llm_srt.model import speech_llm

    torch.manual_seed(0)
    model_dir = tiny.speech_llm(tmp_path / "made").save_pretrained(tmp_path / "made" / "model")
    folder, moved, config = tiny.moved_folder(model_dir, tmp_path)
    gone = {key: str(tmp_path / f"gone-{key}") for key in ("encoder", "llm")}
    (folder / "config.json").write_text(json.dumps(config | gone))
    calls = []

    def no_load(*args, **kwargs):
        calls.append(args)
        raise LLMSRTError("load_llm ran")

    monkeypatch.setattr(speech_llm, "load_llm", no_load)
    with pytest.raises(LLMSRTError) as both:
        SpeechLLM.from_pretrained(folder)
    said = str(both.value)
    assert said == (f"{folder / 'config.json'} names the encoder {gone['encoder']} (not a Hugging Face Whisper "
                    f"folder: no such folder) and the llm {gone['llm']} (not a Hugging Face model folder: no such "
                    "folder); a model folder moved to another machine: give its encoder and llm where they are now "
                    "(--encoder and --llm of translate and serve, --encoder and --model-llm of evaluate; "
                    "model.encoder and model.llm in a training config)")
    assert calls == [] and "llm-srt setup" not in said
    with pytest.raises(LLMSRTError) as one:  # the LLM re-pointed: the encoder still gone, said alone
        SpeechLLM.from_pretrained(folder, llm=str(moved["llm"]))
    assert "the encoder " in str(one.value) and "the llm" not in str(one.value) and calls == []
    assert "(--encoder of translate and serve, --encoder of evaluate; model.encoder in" in str(one.value)
    with pytest.raises(LLMSRTError) as typo:  # a path given is said as given, not as the folder's config.json's
        SpeechLLM.from_pretrained(folder, encoder=str(tmp_path / "typo"), llm=str(moved["llm"]))
    assert str(typo.value).startswith(f"the encoder given, {tmp_path / 'typo'} (not a Hugging Face Whisper folder: "
                                      "no such folder); give its encoder where it is now") and calls == []
    with pytest.raises(LLMSRTError, match=r"^the encoder given, embeded \(not a Hugging Face Whisper folder: no such "
                                          r"folder \(did you mean 'embedded'\?\)"):  # a near miss of `embedded`
        SpeechLLM.from_pretrained(folder, encoder="embeded", llm=str(moved["llm"]))
    monkeypatch.setenv("LLM_SRT_CACHE", str(tmp_path / "cache"))  # the embedded models, not converted here
    (folder / "config.json").write_text(json.dumps(config | {"encoder": "embedded", "llm": "embedded"}))
    with pytest.raises(LLMSRTError, match=r"names the encoder embedded \(not converted yet at .*: run `llm-srt setup`\) "
                                          r"and the llm embedded \(not converted yet at .*: run `llm-srt setup`\)$"):
        SpeechLLM.from_pretrained(folder)  # `llm-srt setup` alone: not "give its encoder and llm where they are now"
    (folder / "config.json").write_text(json.dumps(config | {"encoder": "embedded", "llm": str(gone["llm"])}))
    with pytest.raises(LLMSRTError, match=r"names the encoder embedded \(not converted yet .*\) and the llm .*; a "
                                          r"model folder moved to another machine: give its llm where it is now "
                                          r"\(--llm of"):
        SpeechLLM.from_pretrained(folder)
    monkeypatch.undo()  # the real load_llm: the moved folders load
    assert SpeechLLM.from_pretrained(folder, encoder=str(moved["encoder"]), llm=str(moved["llm"])).llm_dim > 0


def test_setup_is_advised_for_the_embedded_models_alone(folders, tmp_path, monkeypatch):
    """A Whisper or LLM folder without config.json was told to run `llm-srt setup`, which converts the embedded
    models only: said for those, not for a folder of the user's."""
    from llm_srt.model.encoder import whisper_dim
    from llm_srt.model.weight_files import tensor_files
    from llm_srt.model.whisper_torch import TorchWhisper

    def torch_whisper(folder):  # translate --model whisper's
        return TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32)

    loads = (load_llm, whisper_dim, torch_whisper)
    (tmp_path / "mine").mkdir()
    (tmp_path / "weightless").mkdir()
    (tmp_path / "weightless" / "config.json").write_text("{}")
    for load, folder in [(load, tmp_path / "mine") for load in loads] + [(tensor_files, tmp_path / "weightless")]:
        with pytest.raises(LLMSRTError) as mine:
            load(folder)
        assert "(no " in str(mine.value) and "llm-srt setup" not in str(mine.value)
    monkeypatch.setenv("LLM_SRT_CACHE", str(tmp_path / "cache"))
    for load, folder in ((load_llm, "gemma-3-270m"), (whisper_dim, "whisper-base"), (torch_whisper, "whisper-base")):
        (tmp_path / "cache" / "models" / folder).mkdir(parents=True, exist_ok=True)  # a conversion cut short
        with pytest.raises(LLMSRTError, match=r"\(no config.json\); run `llm-srt setup`"):
            load(tmp_path / "cache" / "models" / folder)


@pytest.mark.cuda
def test_from_pretrained_lands_on_the_gpu_in_bf16_without_a_host_copy(tmp_path):
    torch.manual_seed(0)
    ckpt = tiny.speech_llm(tmp_path).save_pretrained(tmp_path / "ckpt")
    model = SpeechLLM.from_pretrained(ckpt, device="cuda", dtype="bfloat16")
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert model.llm_dtype == torch.bfloat16
    texts = model.generate({"audio": CLIPS, "prompts": PROMPTS})
    assert len(texts) == 3
    out = model({"audio": CLIPS, "prompts": PROMPTS, "targets": ["a", "b", "c"]})
    assert torch.isfinite(out["loss"])


def test_log_mel_runs_on_the_encoders_device(folders):
    whisper, _, _ = folders
    enc = WhisperEncoder.from_pretrained(whisper)
    spy = tiny.CallSpy(enc.feature_extractor)
    enc.feature_extractor = spy
    mel, mask = enc.features([CLIPS[0]])
    assert [kw.get("device") for kw in spy.calls] == [str(enc.device)] and mel.shape[-1] == int(mask.sum())


@pytest.mark.cuda
def test_log_mel_on_the_gpu_equals_the_cpus(folders):
    whisper, _, _ = folders
    cpu = WhisperEncoder.from_pretrained(whisper)
    gpu = WhisperEncoder.from_pretrained(whisper, device="cuda")
    a, _ = cpu.features(CLIPS)
    b, _ = gpu.features(CLIPS)
    assert torch.allclose(a, b, atol=1e-4)


# ---- int8 (CPU inference) -----------------------------------------------------------------------------------------
def test_int8_quantizes_every_linear_and_a_tied_head_as_a_copy(folders, tmp_path):
    import shutil

    from torch import nn

    from llm_srt.model.int8_linear import ACTIVATION_GRID, Int8Linear, is_quantized

    _, llm, _ = folders
    tied = tmp_path / "tied"
    shutil.copytree(llm, tied)
    config = json.loads((tied / "config.json").read_text())
    (tied / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    from safetensors.torch import load_file, save_file

    weights = load_file(tied / "model.safetensors")
    del weights["lm_head.weight"]  # tied: the head is the embedding table, as in Gemma
    save_file(weights, tied / "model.safetensors", metadata={"format": "pt"})
    ref, tok = load_llm(tied, "float32")
    assert ref.get_output_embeddings().weight is ref.get_input_embeddings().weight
    q, _ = load_llm(tied, "int8")
    assert is_quantized(q) and not is_quantized(ref)
    assert not any(isinstance(m, nn.Linear) for m in q.modules())  # the head and every projection
    head = q.get_output_embeddings()
    assert isinstance(head, Int8Linear)
    embedding = q.get_input_embeddings().weight
    assert embedding.dtype == torch.float32 and torch.equal(embedding, ref.get_input_embeddings().weight)
    assert (head.dequantized_weight() - embedding).abs().max() <= embedding.abs().amax(1).max() / 127
    ids = tok("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        exact, got = ref(ids).logits, q(ids).logits
    step, _ = ACTIVATION_GRID[head.reduce_range]  # 1/127 with VNNI, 1/63 (twice as coarse) on AVX2 alone
    bound = 0.1 * 127 * step * exact.abs().max()  # 2 sharp random layers
    assert got.dtype == torch.float32 and (got - exact).abs().max() < bound
    head.zero_rows([5])
    assert torch.equal(head(torch.randn(3, embedding.shape[1]))[:, 5], torch.zeros(3))


def test_int8_linear_quantizes_each_row_on_its_own_range():
    from torch import nn

    from llm_srt.model.int8_linear import Int8Linear

    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    q = Int8Linear.from_linear(linear)
    x = torch.randn(2, 3, 64)
    x[1] *= 1000  # one row far larger than its neighbour: a shared activation scale would flatten row 0 to ~0
    with torch.no_grad():
        exact, got, alone = linear(x), q(x), q(x[:1])
    for row in range(2):
        assert (got[row] - exact[row]).abs().max() < 0.03 * exact[row].abs().max()
    assert (got[0] - alone[0]).abs().max() < 0.01 * exact[0].abs().max()


def test_int8_rows_and_a_linear_packed_from_them(monkeypatch):
    from llm_srt.model import int8_linear
    from llm_srt.model.int8_linear import Int8Linear, quantize_rows

    torch.manual_seed(0)
    w = torch.randn(50, 16)
    w[3] = 0  # an all-zero row keeps a finite scale
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and scale.shape == (50,)
    assert (q.abs().amax(1)[torch.arange(50) != 3] == 127).all() and (q[3] == 0).all()
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-6).all()  # round to nearest
    import warnings

    with warnings.catch_warnings():  # the same integers as torch's own per-channel quantization (ties aside)
        warnings.simplefilter("ignore")
        ref = torch.quantize_per_channel(w, scale.double(), torch.zeros(50, dtype=torch.long), 0, torch.qint8)
    assert (ref.int_repr().int() - q.int()).abs().max() <= 1 and (ref.int_repr() != q).float().mean() < 0.01
    monkeypatch.setattr(int8_linear, "QUANTIZE_CHUNK_ROWS", 7)  # chunks (not a divisor of 50) change nothing
    chunked = quantize_rows(w)
    assert torch.equal(chunked[0], q) and torch.equal(chunked[1], scale)
    head = Int8Linear(q, scale=scale)  # packed from int8 rows: the same weights as quantizing the floats
    assert torch.equal(head.dequantized_weight(), Int8Linear(w).dequantized_weight())
    assert torch.equal(head.dequantized_weight(), q.float() * scale[:, None])


def test_int8_linear_rows_do_not_depend_on_their_batch():
    """Each row is quantized on its own symmetric grid: a row gives exactly the same result alone as inside any
    batch (fbgemm's dynamic product took one range from the whole input, so a row's zero point moved with its
    neighbours' signs), and a row narrower than fbgemm's least dynamic range (0.0156) keeps its precision."""
    from torch import nn

    from llm_srt.model.int8_linear import Int8Linear

    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    q = Int8Linear.from_linear(linear)
    x = torch.randn(5, 64)
    x[2] *= 50
    x[3] = x[3].abs() + 0.1  # every value positive: alone, fbgemm's dynamic range was [0, 1] for this row
    with torch.no_grad():
        batch, exact = q(x), linear(x)
        for row in range(5):
            alone = q(x[row:row + 1])
            assert alone.shape == (1, 32)
            assert torch.equal(alone[0], batch[row])
            assert torch.equal(q(x[[row, (row + 1) % 5]])[0], batch[row])  # another neighbour: the same again
            assert (alone[0] - exact[row]).abs().max() < 0.03 * exact[row].abs().max()
        narrow = nn.Linear(64, 32, bias=False)
        row = torch.randn(1, 64) * 1e-4  # fbgemm's dynamic range alone: ~13% error
        assert (Int8Linear.from_linear(narrow)(row) - narrow(row)).abs().max() < 0.03 * narrow(row).abs().max()


@pytest.mark.parametrize("reduce_range", [False, True])  # 8-bit activations (AVX-512 VNNI) and 7-bit (fbgemm's
def test_int8_linear_is_the_symmetric_per_row_product(reduce_range):  # reduce_range elsewhere): both grids
    """The product, from first principles: each row x / max|x| rounded to the grid of ACTIVATION_GRID (k / 127 with
    VNNI), times the dequantized int8 weights, times max|x|, plus the bias; inputs of more rows than a decode step
    (prefills, Whisper's 1500 frames) take their ranges as max(amax, -amin) (no |x| copy) with the same result;
    rows whose largest magnitude is negative and all-zero rows included."""
    from llm_srt.model import cpu_linear, int8_linear
    from llm_srt.model.int8_linear import Int8Linear, row_ranges

    if not reduce_range and not int8_linear._VNNI:  # the layers themselves never use 8 bits there
        pytest.skip("8-bit activations need AVX-512 VNNI: fbgemm's AVX2 kernels saturate their pair sums in 16 bits")
    torch.manual_seed(0)
    q = Int8Linear(torch.randn(48, 64), torch.randn(48))
    q.reduce_range = reduce_range
    x = torch.randn(cpu_linear.DECODE_MAX_ROWS + 30, 64)
    x[3] = -x[3].abs() * 7  # a row whose extreme is negative
    x[5] = 0  # an all-zero row: a finite range, a zero product plus the bias
    ranges = row_ranges(x)
    assert torch.equal(ranges, x.abs().amax(1, keepdim=True).clamp(min=1e-30))  # both branches: the same ranges
    assert torch.equal(row_ranges(x[:4]), ranges[:4])
    step, zero = int8_linear.ACTIVATION_GRID[q.reduce_range]
    grid = torch.round(x / ranges / step)  # -1/step .. 1/step: zero -+ 127 (63), inside 0..255 (0..127)
    assert grid.abs().max() == round(1 / step) and zero - round(1 / step) >= 0
    reference = (grid.double() * step) @ q.dequantized_weight().double().T * ranges.double() + q.bias.double()
    got = q(x)
    assert (got.double() - reference).abs().max() < 1e-5 * reference.abs().max()
    assert torch.equal(got[5], q.bias)
    assert torch.equal(q(x[None])[0], got)  # (batch, time, in) the same
    assert torch.equal(q(x[:4]), got[:4])  # a decode step's form (abs().amax()) the same


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="reads /proc/self/smaps (Linux)")
@pytest.mark.parametrize("tied", [False, True])
def test_int8_keeps_no_page_of_the_checkpoint_its_quantization_read(tmp_path, monkeypatch, tied):
    """int8: quantizing reads every linear weight (and a tied head's table) through the mapped checkpoint; each
    layer's pages leave as it is quantized, and once done no float tensor left may keep that mapping (norms become
    copies, the embedding table a fresh view whose pages drop after lookups), so the file's pages leave memory;
    the logits are those of the model loaded without the page dropping."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from llm_srt.model import llm as llm_module

    folder = tiny.llm_dir(tmp_path, hidden=256, layers=4, tied=tied)
    file = (folder / "model.safetensors").resolve()
    with safe_open(file, framework="pt") as f:  # the header alone: no page of the file is read
        linear_mib = sum(torch.Size(f.get_slice(k).get_shape()).numel() * 4 for k in f.keys() if "proj" in k) / 2 ** 20
    assert linear_mib > 8
    q, _ = load_llm(folder, "int8")
    assert tiny.mapped_kib(file) / 1024 < linear_mib / 8  # at most the table rows the view was checked on
    assert torch.equal(q.get_input_embeddings().weight, load_file(file)["model.embed_tokens.weight"])
    monkeypatch.setattr(llm_module, "_own_float_weights", lambda model, path, found: None)
    monkeypatch.setattr(llm_module, "checkpoint_pages_dropper", lambda path, keep=None: None)
    before, _ = load_llm(folder, "int8")
    assert tiny.mapped_kib(file) / 1024 > linear_mib / 2  # without them, the pages quantization read stay
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    with torch.no_grad():
        assert torch.equal(q(input_ids=ids).logits, before(input_ids=ids).logits)


def test_int8_tied_head_is_quantized_from_the_file_a_chunk_a_mapping(tmp_path, monkeypatch):
    """int8, head tied to the input embeddings: the head is quantized from the checkpoint's table a chunk of rows
    a mapping (through the loader's mapping, all the table's pages stayed resident until loading ended), with the
    numbers of `quantize_rows` on the table; an untied head is quantized from its own weight as before."""
    from safetensors.torch import load_file

    from llm_srt.model.int8_linear import Int8Linear, quantize_rows

    read = []
    from_file = Int8Linear.from_file.__func__
    monkeypatch.setattr(Int8Linear, "from_file", classmethod(lambda cls, *a: read.append(a[1]) or from_file(cls, *a)))
    for tied in (True, False):
        folder = tiny.llm_dir(tmp_path / str(tied), hidden=64, tied=tied)
        q, _ = load_llm(folder, "int8")
        state = load_file(folder / "model.safetensors")
        head = q.get_output_embeddings()
        assert isinstance(head, Int8Linear)
        weight = state["model.embed_tokens.weight" if tied else "lm_head.weight"]
        q8, scale = quantize_rows(weight)
        assert torch.equal(head.dequantized_weight(), Int8Linear(q8, scale=scale).dequantized_weight())
        assert read == (["model.embed_tokens.weight"] if tied else [])
        read.clear()


@pytest.mark.parametrize("tied", [False, True])
def test_int8_load_of_a_sharded_checkpoint_equals_the_single_files(tmp_path, tied):
    """int8 from shards (model.safetensors.index.json): the tied head read from its shard, every shard's pages
    let go as its layers are quantized: the same logits as from one file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    single = tiny.llm_dir(tmp_path / "one", hidden=64, tied=tied)
    sharded = tmp_path / "shards"
    AutoModelForCausalLM.from_pretrained(single).save_pretrained(sharded, max_shard_size="40KB")
    AutoTokenizer.from_pretrained(single).save_pretrained(sharded)
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 2
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    with torch.no_grad():
        want = load_llm(single, "int8")[0](input_ids=ids).logits
        assert torch.equal(load_llm(sharded, "int8")[0](input_ids=ids).logits, want)


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc/self/maps (Linux)")
def test_int8_input_embeddings_drop_the_tables_pages_after_each_lookup(tmp_path, monkeypatch):
    """int8: the input embedding table, a view of the checkpoint (the head is an int8 copy), drops its pages after
    every lookup (tests/model/test_mapped.py: each row looked up had left ~1 MB of the file resident), prompt
    embeddings and decode steps alike; float32 (the table is the weights in use) drops nothing."""
    from llm_srt.model import mapped

    folder = tiny.llm_dir(tmp_path, hidden=64, tied=True)
    dropped = []
    monkeypatch.setattr(mapped, "drop_mapped_pages", lambda t: dropped.append(t.data_ptr()))
    q, _ = load_llm(folder, "int8")
    table = q.get_input_embeddings().weight
    assert mapped.mapped_from(table, (folder / "model.safetensors").resolve())
    dropped.clear()
    with torch.no_grad():
        q(input_ids=torch.tensor([[3, 5, 7]]))
        q.get_input_embeddings()(torch.tensor([[9]]))
    assert dropped == [table.data_ptr()] * 2
    fp32, _ = load_llm(folder, "float32")
    with torch.no_grad():
        fp32(input_ids=torch.tensor([[3, 5, 7]]))
    assert dropped == [table.data_ptr()] * 2


@pytest.mark.parametrize("adapter", ["qformer", "linear"])  # linear: no float parameter is left once it is int8
def test_int8_speech_llm_generates_and_refuses_to_train(tmp_path, adapter):
    torch.manual_seed(0)
    ckpt = tiny.speech_llm(tmp_path, adapter=adapter, init_std=0.3).save_pretrained(tmp_path / "ckpt")
    q = SpeechLLM.from_pretrained(ckpt, dtype="int8")
    assert q.config.dtype == "int8" and q.llm_dtype == torch.float32
    from torch import nn

    from llm_srt.model.int8_linear import Int8Linear, is_quantized

    for part in (q.encoder, q.adapter, q.llm):  # every linear layer int8, as CTranslate2's int8 (encoder, adapter,
        assert not [n for n, m in part.named_modules() if isinstance(m, nn.Linear)]  # LLM); convolutions float32
        assert any(isinstance(m, Int8Linear) for m in part.modules())
    assert q.encoder.encoder.conv1.weight.dtype == torch.float32
    batch = {"audio": CLIPS[:2], "prompts": PROMPTS[:2]}
    fp32 = SpeechLLM.from_pretrained(ckpt).eval()
    with torch.no_grad():  # the trained adapter's weights went in before quantizing: int8 speech ~ float32 speech
        q.eval()
        exact, got = fp32.speech_embeddings(batch)[0], q.speech_embeddings(batch)[0]
    assert ((got - exact).norm() / exact.norm()).item() < 0.1
    with pytest.raises(LLMSRTError, match="already int8"):
        q.load_trainable(ckpt)
    with pytest.raises(LLMSRTError, match="cannot be saved"):
        q.save_pretrained(tmp_path / "int8-copy")
    fp32.config = replace(fp32.config, dtype="int8")  # the adapter alone int8: training refuses it too
    fp32.quantize_adapter()
    assert is_quantized(fp32.adapter) and not is_quantized(fp32.llm)
    with pytest.raises(LLMSRTError, match="int8 .* inference only"):
        fp32({**batch, "targets": TARGETS[:2]})
    from llm_srt.model.decoding import DecodingOptions

    options = DecodingOptions(max_new_tokens=6)
    ids = q.generate_ids(batch, options)
    assert len(ids) == 2 and all(isinstance(t, int) for row in ids for t in row)
    with pytest.raises(LLMSRTError, match="int8 .* inference only"):
        q({**batch, "targets": TARGETS[:2]})
    with torch.no_grad():
        assert torch.isfinite(q({**batch, "targets": TARGETS[:2]})["loss"])  # evaluation loss still works
    with pytest.raises(LLMSRTError, match="CPU only"):
        load_llm(q.config.llm, "int8", device="meta")


def test_int8_needs_fbgemm_and_keeps_7_bits_without_avx512_vnni(monkeypatch):
    """An int8 layer (`quantize_int8`, the int8 Whisper) refuses a quantized engine whose packed weights cannot run
    the product (one line, what to do); all 8 activation bits only with AVX-512 VNNI (fbgemm's AVX2 kernels, which
    AVX-VNNI CPUs may run, sum pairs of u8 x s8 products in 16 bits with saturation)."""
    from types import SimpleNamespace

    from torch import nn

    from llm_srt.model import int8_linear

    monkeypatch.setattr(torch.backends.quantized, "engine", "qnnpack")
    with pytest.raises(LLMSRTError, match="quantized engine is 'qnnpack'.*--dtype float32"):
        int8_linear.quantize_int8(nn.Sequential(nn.Linear(4, 4)))
    for flags, vnni in (("avx2 avx512f avx512_vnni", True), ("avx2 avx_vnni", False), ("avx2", False)):
        monkeypatch.setattr(int8_linear, "Path", lambda _, f=flags: SimpleNamespace(read_text=lambda: f"flags : {f}"))
        assert int8_linear._has_vnni() is vnni


@pytest.mark.parametrize("kind, lora", [("qwen2", True), ("llama", False)])  # q/k/v with biases (Qwen2), without
def test_int8_fused_projections_give_the_separate_layers_logits_bit_for_bit(tmp_path, monkeypatch, kind, lora):
    """int8 loads run each decoder layer's q/k/v and gate/up as one product each (`fuse_int8_projections`): the
    logits of a prompt and of cached decode steps equal those of the separate int8 layers exactly, LoRA's updates
    on q/v included, with one product per group call."""
    from llm_srt.model import llm as llm_module
    from llm_srt.model.int8_linear import Int8Linear, Int8Part
    from llm_srt.model.llm import LoraOptions

    folder = tiny.llm_dir(tmp_path, kind=kind, init_std=0.3)
    options = LoraOptions() if lora else None
    fused, tok = load_llm(folder, "int8", lora=options)
    with monkeypatch.context() as m:
        m.setattr(llm_module, "fuse_int8_projections", lambda model: 0)
        separate, _ = load_llm(folder, "int8", lora=options)
    if lora:  # peft starts lora_B at zero: random updates, the same in both
        torch.manual_seed(1)
        for (name, p), (other, q) in zip(fused.named_parameters(), separate.named_parameters()):
            assert name == other
            if "lora_" in name:
                p.data.copy_(torch.randn_like(p) * 0.3)
                q.data.copy_(p.data)
    parts = [m for m in fused.modules() if isinstance(m, Int8Part)]
    assert len(parts) == 2 * 5 and not any(isinstance(m, Int8Part) for m in separate.modules())
    # each group's fused layer is counted once: the same int8 bytes as the separate layers
    assert sum(m.weight_bytes for m in fused.modules() if isinstance(m, Int8Linear)) == \
        sum(m.weight_bytes for m in separate.modules() if isinstance(m, Int8Linear))
    ids = tok(["hello world", "a cat sat"], return_tensors="pt", padding=True)
    with torch.no_grad():
        for model in (fused, separate):
            model.eval()  # LoRA's dropout
            out = model(**ids, use_cache=True)
            step = model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values,
                         attention_mask=torch.cat([ids.attention_mask, torch.ones(2, 1, dtype=torch.long)], 1))
            model.results = (out.logits, step.logits)
    assert all(torch.equal(a, b) for a, b in zip(fused.results, separate.results))
    assert {p._shared.products for p in parts} == {2}  # prompt and step: one product per group call


def test_int8_speech_llm_fuses_its_encoders_and_q_formers_projections_exactly(folders, monkeypatch):
    """An int8 speech LLM fuses the encoder's self-attention q/k/v (k without bias) and the Q-Former's
    query/key/value (its cross-attention's key/value): the speech embeddings equal those of the separate int8
    layers exactly."""
    from llm_srt.model import speech_llm as speech_llm_module
    from llm_srt.model.int8_linear import Int8Part

    whisper, llm, _ = folders
    cfg = SpeechLLMConfig(encoder=str(whisper), llm=str(llm), adapter="qformer", dtype="int8",
                          adapter_kwargs={"num_queries": 4, "hidden_size": 48, "num_layers": 2, "num_heads": 4,
                                          "intermediate_size": 64})
    results = {}
    for fused in (True, False):
        with monkeypatch.context() as m:
            if not fused:
                m.setattr(speech_llm_module, "fuse_int8_projections", lambda module: 0)
            torch.manual_seed(0)
            model = SpeechLLM(cfg, device="cpu").eval()
            model.quantize_adapter()
            with torch.no_grad():
                results[fused] = model.speech_embeddings({"audio": CLIPS})[0]
            parts = {name: [x for x in getattr(model, name).modules() if isinstance(x, Int8Part)]
                     for name in ("encoder", "adapter")}
            # 2 layers' self-attention each, and the Q-Former's cross-attention keys and values (its queries read
            # 48-wide states, its keys and values the encoder's 32-wide ones): none split back
            assert {k: len(v) for k, v in parts.items()} == {"encoder": 6 * fused, "adapter": 8 * fused}
            assert not any(p.own is not None for p in parts["adapter"])
    assert torch.equal(results[True], results[False])
