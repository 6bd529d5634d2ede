"""Import of a reference LLM-SRT / SLAM-LLM model.pt, built here with the reference module structure."""

import pytest
import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

import tiny  # tests/model is on sys.path (pytest rootdir insertion)
from llm_srt.errors import LLMSRTError
from llm_srt.model.llm import LoraOptions
from llm_srt.model.slam import convert_slam
from llm_srt.model.speech_llm import SpeechLLM


class ReferenceProjector(nn.Module):
    """The reference EncoderProjectorQFormer: default Blip2QFormerConfig except the fields set below."""

    def __init__(self, encoder_dim, llm_dim, query_len, layers, hidden, mlp_hidden):
        super().__init__()
        cfg = Blip2QFormerConfig(hidden_size=hidden, num_attention_heads=hidden // 64, intermediate_size=2 * hidden)
        cfg.encoder_hidden_size = encoder_dim
        cfg.num_hidden_layers = layers
        self.query = nn.Parameter(torch.randn(1, query_len, hidden))
        self.qformer = Blip2QFormerModel(cfg)
        if mlp_hidden:
            self.linear1, self.relu, self.linear2 = nn.Linear(hidden, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden,
                                                                                                      llm_dim)
        else:
            self.linear = nn.Linear(hidden, llm_dim)
        self.norm = nn.LayerNorm(llm_dim, eps=1e-5)

    def forward(self, x, atts):
        out = self.qformer(query_embeds=self.query.expand(x.shape[0], -1, -1), encoder_hidden_states=x,
                           encoder_attention_mask=atts).last_hidden_state
        out = self.linear2(self.relu(self.linear1(out))) if hasattr(self, "linear1") else self.linear(out)
        return self.norm(out)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("slam")
    return tiny.whisper_dir(root), tiny.llm_dir(root, bos=False)  # as Qwen2.5's: no BOS


@pytest.mark.parametrize("mlp_hidden", [0, 40])
def test_import_gives_the_reference_projector_output(dirs, tmp_path, mlp_hidden):
    torch.manual_seed(0)
    whisper, llm = dirs
    ref = ReferenceProjector(32, 48, query_len=5, layers=3, hidden=128, mlp_hidden=mlp_hidden).eval()
    with torch.no_grad():  # round through bf16 as the reference stores it
        for p in ref.parameters():
            p.copy_(p.bfloat16().float())
    state = {"encoder_projector." + k: v.bfloat16() for k, v in ref.state_dict().items()}
    state["encoder_projector.qformer.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(256, 128)  # unused
    torch.save(state, tmp_path / "model.pt")

    folder = convert_slam(tmp_path / "model.pt", tmp_path / "imported", whisper, llm)
    model = SpeechLLM.from_pretrained(folder).eval()
    kw = model.adapter.kwargs
    assert (kw["num_queries"], kw["num_layers"], kw["hidden_size"], kw["mlp_hidden"]) == (5, 3, 128, mlp_hidden)
    assert model.config.pad_to_30s and model.config.lora is None
    h = torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        expected = ref(h, mask)
        ours, _ = model.adapter(h, mask.bool())
    assert torch.allclose(ours, expected, atol=1e-5)


def test_import_with_lora(dirs, tmp_path):
    torch.manual_seed(1)
    whisper, llm = dirs
    ref = ReferenceProjector(32, 48, query_len=4, layers=2, hidden=64, mlp_hidden=0)
    state = {"encoder_projector." + k: v for k, v in ref.state_dict().items()}
    donor = tiny.speech_llm(tmp_path / "donor", lora=LoraOptions(r=2, alpha=32))
    lora = {}
    for name, p in donor.llm.named_parameters():
        if "lora_" in name:
            lora["llm." + name] = torch.randn_like(p).bfloat16()  # reference naming: llm.base_model.model....default
    assert any(".lora_A.default.weight" in k for k in lora)
    torch.save(state | lora, tmp_path / "model.pt")
    model = SpeechLLM.from_pretrained(convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm))
    assert model.config.lora.r == 2 and set(model.config.lora.target_modules) == {"q_proj", "v_proj"}
    loaded = dict(model.llm.named_parameters())
    for key, value in lora.items():
        assert torch.equal(loaded[key[len("llm."):]], value.float())


def test_import_reads_no_llm_weights_and_loads_from_anywhere(tmp_path, monkeypatch):
    """The LLM is only a skeleton during the import (a 32B one in float32 would take 131 GB), and the folder names
    its models so that it loads from another working directory when they were given as relative paths."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(2)
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    whisper, llm = tiny.whisper_dir(work), tiny.llm_dir(work, bos=False)
    ref = ReferenceProjector(32, 48, query_len=4, layers=2, hidden=64, mlp_hidden=0).eval()
    donor = tiny.speech_llm(tmp_path / "donor", lora=LoraOptions(r=2, alpha=32))
    lora = {"llm." + n: torch.randn_like(p) for n, p in donor.llm.named_parameters() if "lora_" in n}
    torch.save({"encoder_projector." + k: v for k, v in ref.state_dict().items()} | lora, work / "model.pt")
    loads = []
    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    monkeypatch.chdir(work)
    convert_slam("model.pt", "out", whisper.name, llm.name)
    assert loads == []
    monkeypatch.chdir(elsewhere)
    model = SpeechLLM.from_pretrained(work / "out").eval()
    assert len(loads) == 1  # the spy sees a real load
    loaded = dict(model.llm.named_parameters())
    for key, value in lora.items():
        assert torch.equal(loaded[key[len("llm."):]], value)
    h = torch.randn(2, 9, 32)
    with torch.no_grad():
        assert torch.allclose(model.adapter(h)[0], ref(h, torch.ones(2, 9, dtype=torch.long)), atol=1e-5)


def test_wrong_llm_or_file(dirs, tmp_path):
    whisper, llm = dirs
    ref = ReferenceProjector(32, 64, query_len=4, layers=1, hidden=64, mlp_hidden=0)
    torch.save({"encoder_projector." + k: v for k, v in ref.state_dict().items()}, tmp_path / "model.pt")
    with pytest.raises(LLMSRTError, match="hidden size 48"):
        convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm)
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(LLMSRTError, match="no encoder_projector.query"):
        convert_slam(tmp_path / "bad.pt", tmp_path / "out", whisper, llm)
    (tmp_path / "junk.pt").write_text("junk\n")  # a bare number was all it said ("(174812789)")
    with pytest.raises(LLMSRTError, match=r"junk.pt: not a PyTorch checkpoint torch can read \(\w+: .*\); give the "
                                          r"model.pt the reference LLM-SRT / SLAM-LLM training wrote$"):
        convert_slam(tmp_path / "junk.pt", tmp_path / "out", whisper, llm)


def test_imported_checkpoint_runs_through_translate(dirs, tmp_path, capsys):
    """A converted reference checkpoint is a model folder like any other: `llm-srt translate` runs on it."""
    import json

    from llm_srt import cli
    from llm_srt.audio import write_wav

    whisper, llm = dirs
    ref = ReferenceProjector(32, 48, query_len=4, layers=2, hidden=64, mlp_hidden=0)
    torch.save({"encoder_projector." + k: v.bfloat16() for k, v in ref.state_dict().items()}, tmp_path / "model.pt")
    assert cli.main(["convert", "slam", str(tmp_path / "model.pt"), str(tmp_path / "imported"), "--encoder",
                     str(whisper), "--llm", str(llm)]) == 0
    assert cli.main(["convert", "slam", str(tmp_path / "model.pt"), str(tmp_path / "two-heads"), "--encoder",
                     str(whisper), "--llm", str(llm), "--num-heads", "2", "--lora-alpha", "16"]) == 0
    assert json.loads((tmp_path / "two-heads" / "config.json").read_text())["adapter_kwargs"]["num_heads"] == 2
    write_wav(tmp_path / "a.wav", tiny.tone(1.0, 440))
    capsys.readouterr()
    rc = cli.main(["translate", str(tmp_path / "a.wav"), "--model", str(tmp_path / "imported"), "--src", "eng",
                   "--tgt", "deu", "--format", "json", "--max-new-tokens", "6"])
    [result] = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["error"] is None and isinstance(result["translation"], str)


def _projector_state(seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    ref = ReferenceProjector(32, 48, query_len=4, layers=2, hidden=64, mlp_hidden=0)
    return {"encoder_projector." + k: v for k, v in ref.state_dict().items()}


def _lora_donor(root, alpha: int = 16, dropout: float = 0.1):
    """A tiny LLM with a LoRA whose weights change its output, as the reference's PeftModel `llm`."""
    donor = tiny.speech_llm(root, lora=LoraOptions(r=2, alpha=alpha, dropout=dropout))
    with torch.no_grad():
        for name, p in donor.llm.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    return donor


@pytest.mark.parametrize("part, key, says", [
    ("encoder", "encoder.layers.0.fc1.weight", r"2 encoder\.\* tensors .* also trained the Whisper encoder"),
    ("llm", "llm.base_model.model.model.layers.0.mlp.up_proj.weight",
     r"2 llm\.\* tensors that are not LoRA .* also trained the LLM's own weights"),
    ("other", "decoder.proj.weight", r"2 tensors of no part of an LLM-SRT / SLAM-LLM model \(e\.g\. decoder"),
])
def test_weights_trained_besides_the_projector_and_lora_are_refused(dirs, tmp_path, part, key, says):
    """The reference saves every trainable parameter: an encoder it trained too (freeze_encoder: False, its own
    default) or the LLM's own weights would be replaced by the original models' here, silently. The Q-Former's
    unused text-branch tensors are still passed over (the first test)."""
    whisper, llm = dirs
    state = _projector_state() | {key: torch.zeros(2, 2), key + "_2": torch.zeros(2, 2)}
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(LLMSRTError, match=says) as err:
        convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm)
    assert str(err.value).startswith(str(tmp_path / "model.pt")) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


P = "encoder_projector."
TAKE_NEW_FILE = (r"; the file is (incomplete|damaged) or another projector's: give the (whole )?model\.pt its "
                 r"training wrote$")


@pytest.mark.parametrize("change, num_heads, says", [
    (lambda s: {k: v for k, v in s.items() if not k.startswith(P + "norm.")}, None,
     r"no encoder_projector\.norm\.weight tensor, which the reference's Q-Former projector saves" + TAKE_NEW_FILE),
    (lambda s: {k: v for k, v in s.items() if ".layer.0.intermediate_query." not in k}, None,
     r"no encoder_projector\.qformer\.encoder\.layer\.0\.intermediate_query\.dense\.weight tensor, which the "
     r"reference's Q-Former projector saves" + TAKE_NEW_FILE),
    (lambda s: s | {P + "query": s[P + "query"][0]}, None,
     r"encoder_projector\.query has shape \(4, 64\), the reference's is \(1, queries, hidden\)" + TAKE_NEW_FILE),
    (lambda s: s | {P + "step": 3}, None,
     r"'encoder_projector\.step' is of type int, not a tensor \(the reference's training saves named tensors "
     r"only\); give the file its training wrote$"),
    (lambda s: s, 3, r"--num-heads 3 does not divide the Q-Former's hidden size 64 \(each head takes hidden / "
                     r"heads\); give the heads it was trained with \(default hidden / 64: 1\)$"),
])
def test_a_partial_or_wrong_projector_is_a_one_line_error(dirs, tmp_path, change, num_heads, says):
    """A model.pt without a tensor whose shape the import reads, with one of another rank, a non-tensor entry or
    a --num-heads that does not divide the hidden size gave a KeyError, ValueError or AttributeError traceback
    (the other missing tensors, `load_adapter_state`'s, a one-line error naming the file and the tensor)."""
    whisper, llm = dirs
    torch.save(change(_projector_state()), tmp_path / "model.pt")
    with pytest.raises(LLMSRTError, match=says) as err:
        convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm, num_heads=num_heads)
    assert str(err.value).startswith(f"{tmp_path / 'model.pt'}: ") and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_partial_lora_in_model_pt_is_a_one_line_error(dirs, tmp_path):
    """Its LoRA's layers come from its tensors: one lora_B missing would import that layer untrained (said in a log
    line, as a folder trained here); lora_B weights alone were a StopIteration traceback."""
    whisper, llm = dirs
    donor = tiny.speech_llm(tmp_path / "donor", lora=LoraOptions(r=2, alpha=32))
    lora = {"llm." + n: torch.randn_like(p) for n, p in donor.llm.named_parameters() if "lora_" in n}
    dropped = next(k for k in lora if "layers.1.self_attn.v_proj.lora_B" in k)
    for state, says in [
        ({k: v for k, v in lora.items() if k != dropped},
         r"no LoRA weight base_model\.model\.model\.layers\.1\.self_attn\.v_proj\.lora_B\.weight \(1 of the 8 that its "
         r"target modules q_proj, v_proj imply\); the file is incomplete, or its LoRA adapts only some layers"),
        ({k: v for k, v in lora.items() if "lora_B" in k}, r"LoRA weights without any lora_A \(e\.g\. base_model\."),
    ]:
        torch.save(_projector_state() | state, tmp_path / "model.pt")
        with pytest.raises(LLMSRTError, match=says) as err:
            convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm)
        assert str(err.value).startswith(f"{tmp_path / 'model.pt'}: ") and "\n" not in str(err.value)
        assert str(err.value).endswith("give the whole file its training wrote")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("form", ["safetensors", "bin with the reference's llm. names"])
def test_a_lora_saved_beside_model_pt_is_imported(dirs, tmp_path, capsys, form):
    """FSDP FULL_SHARD: the reference writes the LoRA with peft's save_pretrained beside a model.pt of projector
    tensors only (save_model_checkpoint_peft_full_shard hands it the `llm.`-named keys of the whole model's state);
    its r, alpha, dropout and target modules come from adapter_config.json, and the summary says where it came from."""
    whisper, llm = dirs
    donor = _lora_donor(tmp_path / "donor")
    run = tmp_path / "run"
    donor.llm.save_pretrained(run, safe_serialization=form == "safetensors")
    if form != "safetensors":  # older peft kept the llm. of the names it was given (newer peft drops every one)
        named = {"llm." + k: v for k, v in torch.load(run / "adapter_model.bin", weights_only=True).items()}
        torch.save(named, run / "adapter_model.bin")
    assert (run / ("adapter_model.safetensors" if form == "safetensors" else "adapter_model.bin")).is_file()
    torch.save(_projector_state(), run / "model.pt")
    capsys.readouterr()
    model = SpeechLLM.from_pretrained(convert_slam(run / "model.pt", tmp_path / "out", whisper, llm))
    assert "from the peft adapter beside model.pt" in capsys.readouterr().out
    lora = model.config.lora
    assert (lora.r, lora.alpha, lora.dropout, set(lora.target_modules)) == (2, 16, 0.1, {"q_proj", "v_proj"})
    assert model.config.trainable == ("adapter", "lora")
    loaded, trained = dict(model.llm.named_parameters()), dict(donor.llm.named_parameters())
    lora_names = [n for n in trained if "lora_" in n]
    assert lora_names and all(torch.equal(loaded[n], trained[n]) for n in lora_names)
    with pytest.raises(LLMSRTError, match="lora_alpha is 16 but 32 was given"):
        convert_slam(run / "model.pt", tmp_path / "out2", whisper, llm, lora_alpha=32)


def test_lora_in_model_pt_wins_over_an_adapter_beside_it_and_a_foreign_adapter_is_refused(dirs, tmp_path, capsys):
    whisper, llm = dirs
    donor, other = _lora_donor(tmp_path / "donor"), _lora_donor(tmp_path / "other")
    run = tmp_path / "run"
    other.llm.save_pretrained(run)
    inside = {"llm." + n: p.detach().clone() for n, p in donor.llm.named_parameters() if "lora_" in n}
    torch.save(_projector_state() | inside, run / "model.pt")
    capsys.readouterr()
    model = SpeechLLM.from_pretrained(convert_slam(run / "model.pt", tmp_path / "out", whisper, llm))
    printed = capsys.readouterr().out
    assert "from model.pt" in printed and "adapter_config.json) is not used" in printed
    loaded = dict(model.llm.named_parameters())
    assert all(torch.equal(loaded[k[len("llm."):]], v) for k, v in inside.items())
    torch.save(_projector_state(), run / "model.pt")  # now the adapter beside is the LoRA: made for another LLM
    wide = tiny.speech_llm(tmp_path / "wide", lora=LoraOptions(r=2), llm_hidden=64)
    wide.llm.save_pretrained(run)
    with pytest.raises(LLMSRTError, match=r"adapter_model.safetensors: LoRA weight .* has shape \(2, 64\), the LLM's "
                                          r"layer wants \(2, 48\)"):
        convert_slam(run / "model.pt", tmp_path / "out", whisper, llm)
    donor.llm.save_pretrained(run, state_dict={"llm." + k: v for k, v in donor.llm.state_dict().items()})
    with pytest.raises(LLMSRTError, match="adapter_model.safetensors: holds no LoRA weights"):  # newer peft, given
        convert_slam(run / "model.pt", tmp_path / "out", whisper, llm)  # the reference's llm. names, saves none


def adding_bos(folder):
    """`folder` with its tokenizer made to add its BOS to every text, as Llama's and Gemma's do (the tiny one names a
    BOS it never adds, as GPT-2-style tokenizers name <|endoftext|>)."""
    from tokenizers.processors import TemplateProcessing

    from llm_srt.model.llm import load_tokenizer

    tok = load_tokenizer(folder)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>",
                                                                                                tok.bos_token_id)])
    tok.save_pretrained(folder)
    assert load_tokenizer(folder)("x")["input_ids"][0] == tok.bos_token_id
    return folder


@pytest.mark.parametrize("bos", [True, False])
def test_an_imported_model_keeps_the_references_bos_place_and_mandarin_tag(tmp_path, bos):
    """The reference's input is [speech][tokenizer.encode(prompt)]: a BOS-adding tokenizer's BOS after the speech
    (bos_after_speech), none for Qwen2.5's; its Mandarin tag is <|cmn|>, written into every prompt the model gets
    and read back as zho from its outputs."""
    from llm_srt import device
    from llm_srt.model.decoding import DecodingOptions
    from llm_srt.model.protocol import Item, split_output
    from llm_srt.model.systems import SpeechLLMSystem
    from llm_srt.prompts import Task

    whisper, llm = tiny.whisper_dir(tmp_path), tiny.llm_dir(tmp_path, bos=bos)
    if bos:
        adding_bos(llm)
    torch.save({k: v.bfloat16() for k, v in _projector_state().items()}, tmp_path / "model.pt")
    model = SpeechLLM.from_pretrained(convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm)).eval()
    assert model.config.bos_after_speech is bos and model.config.language_tags == {"zho": "cmn"}
    system = SpeechLLMSystem(model, "imported", device.resolve("cpu"))
    prompts, ends = [], []
    real = model.generate_ids
    model.generate_ids = lambda batch, *a, **k: (prompts.extend(batch["prompts"]), ends.append(k["on_end"]),
                                                 real(batch, *a, **k))[-1]
    clip = tiny.tone(1.0, 440)
    items = [Item(clip, "eng", "zho", Task.SRT), Item(clip, "zho", None, Task.ASR),
             Item(clip, "zho", "eng", Task.SMT, "你好")]
    system.run_batch(items, DecodingOptions(max_new_tokens=12))
    assert prompts == ["<|eng|><|cmn|>", "<|cmn|>", "你好<|cmn|><|eng|>"]
    tok = model.tokenizer
    assert ends[0](0, []) == tok("<|eng|><|cmn|>", add_special_tokens=False)["input_ids"]  # forced tags: its own
    assert split_output("Hello.<|eng|><|cmn|>你好。", items[0], model.config.language_tags).translation == "你好。"
    assert split_output("你好<|cmn|><|eng|>Hello.", items[2], model.config.language_tags).translation == "Hello."
    # fine-tuning it, its training dev scores and the teacher-forced loss write and read the same tags
    from llm_srt.data.loader import SpeechTextDataset
    from llm_srt.data.manifest import Row
    from llm_srt.evaluate.loss import token_split
    from llm_srt.train.dev_sample import dev_scores

    row = Row(id="r", audio="a.wav", duration=1.0, src_lang="eng", transcript="Hello.", tgt_lang="zho",
              translation="你好。", split="train", corpus="t", sentence_id="s")
    example = SpeechTextDataset([row], "srt", tags=model.config.language_tags)[0]
    assert (example.prompt, example.target) == ("<|eng|><|cmn|>", "Hello.<|eng|><|cmn|>你好。")
    prompt_ids, scored = token_split(tok, row, Task.SRT, model.config.language_tags)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in ("<|eng|><|cmn|>", "Hello.<|eng|><|cmn|>你好。")]
    assert prompt_ids + scored[:-1] == ids[0] + ids[1] != sum(token_split(tok, row, Task.SRT), [])[:-1]
    scores = dev_scores(Task.SRT, [example], ["Hello.<|eng|><|cmn|>你好。"], model.config.language_tags)
    assert scores == dev_scores(Task.SRT, [example], ["Hello.<|eng|><|zho|>你好。"])  # read as ours


def test_convert_slam_zho_tag_records_the_mandarin_tag_the_checkpoint_was_trained_with(dirs, tmp_path, capsys):
    """The reference's earlier data (the paper's: evaluation/fleurs_enzh_test.jsonl) wrote Mandarin as <|zho|>, its
    later <|cmn|>: `convert slam` recorded <|cmn|> always, so a model of the earlier data got prompts it never saw."""
    import json

    from llm_srt import cli
    from llm_srt.prompts import build

    whisper, llm = dirs
    torch.save({k: v.bfloat16() for k, v in _projector_state().items()}, tmp_path / "model.pt")
    prompts = {}
    for tag in ("zho", "cmn", None):
        dst = tmp_path / f"as-{tag}"
        assert cli.main(["convert", "slam", str(tmp_path / "model.pt"), str(dst), "--encoder", str(whisper), "--llm",
                         str(llm), *(["--zho-tag", tag] if tag else [])]) == 0
        tags = json.loads((dst / "config.json").read_text())["language_tags"]
        prompts[tag] = build("srt", "eng", "zho", "Hello.", "你好。", tags=tags)
    assert prompts["zho"] == ("<|eng|><|zho|>", "Hello.<|eng|><|zho|>你好。")
    assert prompts["cmn"] == prompts[None] == ("<|eng|><|cmn|>", "Hello.<|eng|><|cmn|>你好。")  # the default as before
    out = capsys.readouterr().out
    assert "language tags: this toolkit's own (zho as <|zho|>)" in out and "language tags: zho as <|cmn|>" in out


def test_a_tokenizer_naming_a_bos_it_never_adds_is_refused(tmp_path):
    """The reference's input is [speech][tokenizer.encode(prompt)]: a tokenizer that names a BOS but never adds it
    (GPT-2 style) gave the reference none, where our models would put it before the speech: refused, saying what to
    do, not imported with a token the model never saw."""
    whisper, llm = tiny.whisper_dir(tmp_path), tiny.llm_dir(tmp_path, bos=True)
    torch.save(_projector_state(), tmp_path / "model.pt")
    with pytest.raises(LLMSRTError, match=r"names a BOS token \(<s>\) that it does not add.*names no bos_token"):
        convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm)


def test_the_references_pooling_qqm_projector_is_refused(dirs, tmp_path, capsys):
    """The reference's qqm projector has the q-former's tensor names but mean-pools its queries before a 2560-wide
    MLP (at any LLM width): imported as a q-former it would give the LLM 5x the speech tokens it learned from.
    Refused where the width says so (an LLM up to 2560 wide); above, its query count is noted."""
    whisper, llm = dirs
    ref = ReferenceProjector(32, 48, query_len=6, layers=2, hidden=64, mlp_hidden=2560)
    torch.save({"encoder_projector." + k: v for k, v in ref.state_dict().items()}, tmp_path / "model.pt")
    with pytest.raises(LLMSRTError, match=r"model.pt: the projector's MLP is 2560 wide for a 48-wide LLM.*qqm"):
        convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm)
    from llm_srt.model import slam

    notes = []
    slam._refuse_pooled({"mlp_hidden": 2560, "num_queries": 150}, 3584, tmp_path / "model.pt", notes)
    assert notes and "150 queries" in notes[0] and "qqm" in notes[0]
    slam._refuse_pooled({"mlp_hidden": 2560, "num_queries": 80}, 3584, tmp_path / "model.pt", notes)
    assert len(notes) == 1  # the paper's 7B q-former: 80 queries, 2560 wide


def _gemma_dir(root, kind: str, hidden: int = 48):
    """A tiny Gemma (v1) or Gemma-2 LLM folder with the char tokenizer made to add its BOS, as Gemma's does."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, GemmaConfig, GemmaForCausalLM

    torch.manual_seed(4)
    tok = tiny.tokenizer(bos=True)
    config, model = {"gemma": (GemmaConfig, GemmaForCausalLM), "gemma2": (Gemma2Config, Gemma2ForCausalLM)}[kind]
    cfg = config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=512,
                 pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                 initializer_range=0.2)
    path = root / kind
    model(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return adding_bos(path)


@pytest.mark.parametrize("kind", ["gemma2", "gemma", "qwen2"])
def test_a_gemma_llm_reads_the_speech_as_the_references_did(tmp_path, capsys, kind):
    """The reference's transformers (4.56) multiplied a Gemma / Gemma-2 LLM's whole input by sqrt(hidden_size),
    speech rows included; ours scales the token embeddings only, so an imported projector gave the LLM speech
    sqrt(d) too small. The import scales its LayerNorm by the normalizer as the reference computed it (bfloat16: 6.9375
    for 48 wide), and the LLM's logits on the assembled input are those of the reference's computation,
    cat(projector(h), embed(BOS prompt)) x sqrt(d). Other LLMs' projectors import as they are."""
    whisper = tiny.whisper_dir(tmp_path)
    llm = tiny.llm_dir(tmp_path, bos=False) if kind == "qwen2" else _gemma_dir(tmp_path, kind)
    torch.manual_seed(5)
    ref = ReferenceProjector(32, 48, query_len=4, layers=2, hidden=64, mlp_hidden=40).eval()
    with torch.no_grad():  # a trained LayerNorm's, not ones and zeros
        ref.norm.weight.uniform_(0.5, 1.5)
        ref.norm.bias.normal_(0, 0.3)
    torch.save({"encoder_projector." + k: v for k, v in ref.state_dict().items()}, tmp_path / "model.pt")
    capsys.readouterr()
    model = SpeechLLM.from_pretrained(convert_slam(tmp_path / "model.pt", tmp_path / "out", whisper, llm)).eval()
    scale = 6.9375 if kind != "qwen2" else 1.0  # torch.tensor(48 ** 0.5, dtype=torch.bfloat16); sqrt(48) = 6.928
    assert torch.equal(model.adapter.norm.weight, ref.norm.weight * scale)
    assert torch.equal(model.adapter.norm.bias, ref.norm.bias * scale)
    assert ("speech embeddings: x 6.9375" in capsys.readouterr().out) is (kind != "qwen2")
    h = torch.randn(1, 9, 32)
    tok = model.tokenizer
    prompt = tok("<|eng|><|deu|>", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        speech, speech_mask = model.adapter(h)
        embeds, mask, _ = model.assemble((speech, speech_mask), [prompt])
        ours = model.llm(inputs_embeds=embeds, attention_mask=mask.long()).logits
        ids = ([tok.bos_token_id] if kind != "qwen2" else []) + prompt  # [speech][BOS prompt]: bos_after_speech
        raw = model.llm.get_input_embeddings().weight[ids]  # the reference's embed_tokens: an nn.Embedding
        inputs = torch.cat([ref(h, torch.ones(1, 9, dtype=torch.long))[0], raw])[None]
        if kind != "qwen2":  # its GemmaModel / Gemma2Model.forward: inputs_embeds * normalizer
            inputs = inputs * 48 ** 0.5
            unscaled = torch.cat([inputs[:, :4] / scale, inputs[:, 4:]], 1)  # the speech rows as imported before
            assert (model.llm(inputs_embeds=unscaled).logits - ours).abs().max() > 0.5
        expected = model.llm(inputs_embeds=inputs).logits
    assert ours.shape == expected.shape and torch.allclose(ours, expected, atol=0.01, rtol=0.01)
