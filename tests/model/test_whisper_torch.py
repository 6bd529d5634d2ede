"""model/whisper_torch.py: the plain-torch Whisper gives HF's numbers (log-mel, encoder states, logits, language ID,
text) without importing transformers; the Whisper system's greedy path on it (token ids: tests/model/
test_systems.py) and `translate --model whisper` on the embedded Whisper base give the transcripts of HF greedy."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import tiny
from llm_srt import device, languages
from llm_srt.errors import LLMSRTError
from llm_srt.model import whisper_torch
from llm_srt.model.whisper_system import WhisperSystem, detect_language
from llm_srt.model.log_mel import LogMel, mel_filters
from llm_srt.model.whisper_torch import TorchWhisper

CPU = device.resolve("cpu")
CLIPS = [tiny.tone(0.7, 300), tiny.tone(31.0, 650, seed=1), tiny.tone(2.0, 1300, seed=3, noise=0.0)]  # 31 s: cut


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    """The numbers of two loads of the same weights from different files. A float32 load on the CPU computes on
    the file's mapped pages themselves, where each tensor lies at its file's own offset, and the CPU's GEMM kernels
    may round the last bit otherwise for another alignment (MKL's results are reproducible only at the same
    alignment): CI's machine gave logits 1 ulp apart where this one gave equal ones. A wrong or missing tensor is
    off by far more than the tolerance."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny.whisper_lid_dir(tmp_path_factory.mktemp("whisper-torch"))


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_equals_whisper_feature_extractor(tmp_path, n_mels):
    """The same (B, n_mels, 3000) as WhisperFeatureExtractor, read from processor_config.json as `convert` and
    transformers 5 write it; the filterbank equals transformers' Slaney bank."""
    from transformers import WhisperFeatureExtractor
    from transformers.audio_utils import mel_filter_bank

    (tmp_path / "processor_config.json").write_text(json.dumps({"feature_extractor": {"feature_size": n_mels}}))
    ours = LogMel.from_folder(tmp_path)(CLIPS, device=torch.device("cpu"))
    ref = WhisperFeatureExtractor(feature_size=n_mels)(CLIPS, sampling_rate=16000, return_tensors="pt")
    assert ours.shape == ref.input_features.shape == (3, n_mels, 3000)
    assert float((ours - ref.input_features).abs().max()) <= 1e-4
    bank = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0, max_frequency=8000.0,
                           sampling_rate=16000, norm="slaney", mel_scale="slaney")
    assert np.allclose(mel_filters(400, n_mels, 16000), bank, rtol=0, atol=1e-12)


def test_cpu_log_mel_takes_one_clip_at_a_time(monkeypatch):
    """On the CPU each clip's STFT runs alone (a batch's STFT and power held ~17 MB a clip at once), with the values
    of the whole batch's."""
    mel = LogMel.from_folder(Path("no-such-folder"))
    batched = mel._log_mel(CLIPS, torch.device("cpu"))
    rows, stft = [], torch.stft
    monkeypatch.setattr(torch, "stft", lambda wave, *a, **k: rows.append(len(wave)) or stft(wave, *a, **k))
    ours = mel(CLIPS, device=torch.device("cpu"))
    assert rows == [1, 1, 1]
    assert ours.shape == batched.shape and float((ours - batched).abs().max()) <= 1e-6


def test_encoder_states_logits_and_language_id_equal_hf(folder):
    from transformers import WhisperForConditionalGeneration

    ours = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32)
    hf = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    mel = ours.mel(CLIPS)
    prompts = torch.tensor([[ours.generation.start, 5, 6, 7]] * len(CLIPS))
    with torch.inference_mode():
        states, ref_states = ours.encode(mel), hf.get_encoder()(mel).last_hidden_state
        logits = ours.next_logits(states, prompts)
        ref = hf(encoder_outputs=(states,), decoder_input_ids=prompts).logits[:, -1]
    assert float((states - ref_states).abs().max()) < 1e-4
    assert float((logits - ref).abs().max()) < 1e-4 and torch.equal(logits.argmax(-1), ref.argmax(-1))
    # language ID: the registry language whose token HF's first-step logits rank highest
    lang_ids = hf.generation_config.lang_to_id
    for clip in CLIPS:
        with torch.inference_mode():
            first = hf(input_features=ours.mel([clip]), decoder_input_ids=prompts[:1, :1]).logits[0, -1]
        code = detect_language(folder, clip, CPU)
        want = max((tid for tok, tid in lang_ids.items()), key=lambda t: float(first[t]))
        assert lang_ids[f"<|{languages.get(code).whisper}|>"] == want


@pytest.mark.integration
def test_text_equals_hf_tokenizer_decode(embedded):
    """Special tokens and timestamp tokens (not special in tokenizer.json) leave no text, as in HF's
    WhisperTokenizer.batch_decode(skip_special_tokens=True), on the embedded Whisper's tokenizer (the weights are
    only mapped, never read)."""
    from llm_srt.model.llm import load_tokenizer

    whisper = TorchWhisper.from_pretrained(embedded.whisper, torch.device("cpu"), torch.float32)
    hf = load_tokenizer(Path(embedded.whisper))
    words = hf("Hello world, it's 3.5 degrees. Grüße!", add_special_tokens=False)["input_ids"]
    rows = [[50258, 50259, 50359, 50363, *words, 50257, 50257], [*words[:3], 50364, *words[3:], 51864],
            [50257], words[:1]]
    assert whisper.decode_text(rows) == hf.batch_decode(rows, skip_special_tokens=True)


def test_bad_folders_are_clear_errors(folder, tmp_path):
    with pytest.raises(LLMSRTError, match="not a Hugging Face Whisper folder .no config.json.; give a folder "
                                          "holding a Hugging Face Whisper model"):
        TorchWhisper.from_pretrained(tmp_path, torch.device("cpu"), torch.float32)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("model.safetensors", "generation_config.json", "preprocessor_config.json"):
        (bad / name).write_bytes((folder / name).read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "d_model": 48}))
    for int8 in (False, True):
        with pytest.raises(LLMSRTError, match="bad/model.safetensors: not a Whisper of config.json's shape"):
            TorchWhisper.from_pretrained(bad, torch.device("cpu"), torch.float32, int8=int8)
    (bad / "config.json").write_text(json.dumps(config))
    whisper = TorchWhisper.from_pretrained(bad, torch.device("cpu"), torch.float32)  # no tokenizer.json: ids only
    with pytest.raises(LLMSRTError, match="no tokenizer.json"):
        whisper.decode_text([[5, 6]])
    (bad / "preprocessor_config.json").write_text(json.dumps({"feature_size": 80, "dither": 1.0}))
    clip = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    dithered = TorchWhisper.from_pretrained(bad, torch.device("cpu"), torch.float32).features
    assert torch.equal(dithered([clip], torch.device("cpu")), whisper.features([clip], torch.device("cpu")))


@pytest.mark.parametrize("int8, error", [
    (False, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.22 GiB. GPU 0 has a total capacity of "
                                   "23.55 GiB of which 1.02 GiB is free.")),
    (True, RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried "
                        "to allocate 265420800 bytes.")),
    (False, RuntimeError("CUDA error: an illegal memory access was encountered\nCompile with `TORCH_USE_CUDA_DSA`")),
])
def test_running_out_of_memory_while_loading_is_not_called_a_folder_of_another_shape(folder, monkeypatch, int8,
                                                                                      error):
    """A load that ran out of GPU (or CPU) memory, or met a failed GPU, raises that error: it was "FOLDER/
    model.safetensors: not a Whisper of config.json's shape (CUDA out of memory...)", sending the user to their
    folder, and hid the out-of-memory error from the callers that tell it apart (`device.is_out_of_memory`)."""
    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(TorchWhisper, "_load_int8" if int8 else "_load", fails)
    with pytest.raises(type(error)) as e:
        TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32, int8=int8)
    assert e.value is error and not isinstance(e.value, LLMSRTError)


def test_a_ctranslate2_or_an_llm_folder_given_as_whisper_is_told_what_to_do(tmp_path):
    """A faster-whisper (CTranslate2) folder given as --whisper was "not a Hugging Face Whisper folder (no
    model.safetensors, ...)" without a word of `convert whisper-ct2` (the speech LLM's encoder says it), and an LLM's
    folder "config.json: no 'num_mel_bins'"."""
    ct2 = tmp_path / "faster-whisper-base"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"")
    (ct2 / "config.json").write_text('{"alignment_heads": [[1, 0]], "lang_ids": [50259], "suppress_ids": [1]}')
    with pytest.raises(LLMSRTError, match=rf"^{ct2}/config.json: not a transformers Whisper config .*run `llm-srt "
                                          rf"convert whisper-ct2 {ct2} OUT` and give --whisper OUT$"):
        TorchWhisper.from_pretrained(ct2, torch.device("cpu"), torch.float32)
    llm = tiny.llm_dir(tmp_path)
    with pytest.raises(LLMSRTError, match=rf"^{llm}/config.json: a qwen2 model, not Whisper; give --whisper a "
                                          "Whisper folder$"):
        TorchWhisper.from_pretrained(llm, torch.device("cpu"), torch.float32, decoder_only=True)


@pytest.mark.parametrize("name, text, said", [
    ("generation_config.json", "[]", r"not a JSON object \(list\); copy or download the model again"),
    ("generation_config.json", '{"decoder_start_token_id": 1', r"cannot read it \(.*\); copy or download the model "
                                                               "again"),
    ("preprocessor_config.json", "[80]", r"not a JSON object \(list\); copy or download"),
    ("preprocessor_config.json", '{"feature_size": 80, "hop_length": null}', "hop_length is None, not a positive "
                                                                             "whole number; fix it"),
    ("preprocessor_config.json", '{"feature_size": 80, "n_fft": 0}', "n_fft is 0, not a positive whole number"),
    ("processor_config.json", '{"feature_extractor": [80]}', '"feature_extractor" is not a JSON object of settings'),
])
def test_a_damaged_settings_file_is_one_line_naming_it(folder, tmp_path, name, text, said):
    """A generation or feature extractor config of the wrong shape (a JSON list, a setting null or 0) was an
    AttributeError, TypeError or ZeroDivisionError traceback; one that is not JSON told a user's own (downloaded)
    folder to re-run `llm-srt setup`, which converts the embedded Whisper alone."""
    damaged = _copy(folder, tmp_path / "damaged", lambda t: t)
    if name == "processor_config.json":
        (damaged / "preprocessor_config.json").unlink()
    (damaged / name).write_text(text)
    with pytest.raises(LLMSRTError, match=f"^{damaged / name}: {said}") as e:
        TorchWhisper.from_pretrained(damaged, torch.device("cpu"), torch.float32, decoder_only=True)
    assert "\n" not in str(e.value) and "llm-srt setup" not in str(e.value)


def test_unreadable_weights_are_not_called_damaged(folder, monkeypatch):
    """A permission error (a folder written 0600 by another user) or a network disk's is said as such: it was
    "damaged or cut short: copy or download it again"."""
    import builtins

    real_open = builtins.open

    def refused(file, *args, **kwargs):  # as the OS refuses a 0600 file of another user (safetensors' own open
        if str(file).endswith("model.safetensors"):  # error says "No such file or directory" whatever happened)
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refused)
    with pytest.raises(LLMSRTError, match=r"model.safetensors: cannot read the Whisper weights \(Permission denied\); "
                                          "check the file's permissions"):
        TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32, decoder_only=True)


def test_a_folder_without_weights_is_a_one_line_error(folder, tmp_path):
    """No model.safetensors and no index of shards: one line naming the folder and both layouts; an index naming a
    shard that is not there: one line naming the shard."""
    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    with pytest.raises(LLMSRTError, match=f"^{tmp_path}: not a Hugging Face Whisper folder .no model.safetensors, "
                                          "nor model.safetensors.index.json with its shards.*; give a folder") as e:
        TorchWhisper.from_pretrained(tmp_path, torch.device("cpu"), torch.float32, decoder_only=True)
    assert "\n" not in str(e.value)
    index = {"metadata": {}, "weight_map": {"model.decoder.embed_tokens.weight": "model-00001-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(LLMSRTError, match=f"^{tmp_path}/model-00001-of-00002.safetensors: not there, though "
                                          "model.safetensors.index.json lists it"):
        TorchWhisper.from_pretrained(tmp_path, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("int8", [False, True])
def test_a_sharded_folder_gives_the_single_files_numbers(folder, tmp_path, monkeypatch, int8):
    """save_pretrained's shards and model.safetensors.index.json (past 5 GB: a float32 Whisper large fine-tune, which
    a speech LLM's encoder reads) load as model.safetensors does, whole and decoder_only (language ID's); decoder_only
    opens no shard that holds only encoder tensors."""
    import safetensors
    from transformers import WhisperForConditionalGeneration

    from llm_srt.model import mapped

    sharded = tmp_path / "sharded"
    WhisperForConditionalGeneration.from_pretrained(folder).save_pretrained(sharded, max_shard_size="100KB")
    for f in folder.iterdir():  # the tokenizer's and feature extractor's files
        if not (sharded / f.name).exists() and f.name != "model.safetensors":
            (sharded / f.name).write_bytes(f.read_bytes())
    weight_map = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(weight_map.values())) > 1 and not (sharded / "model.safetensors").exists()
    one, many = (TorchWhisper.from_pretrained(f, torch.device("cpu"), torch.float32, int8=int8)
                 for f in (folder, sharded))
    prompts = torch.tensor([[one.generation.start, 5, 6, 7]])
    with torch.inference_mode():
        states = one.encode(one.mel(CLIPS[:1]))
        _same(many.encode(many.mel(CLIPS[:1])), states)
        logits = one.next_logits(states, prompts)
        _same(many.next_logits(states, prompts), logits)
        assert torch.equal(many.greedy(states, prompts, 8), one.greedy(states, prompts, 8))
    if int8:  # the token table stays a view of its shard, so its pages can be dropped after lookups
        table = "model.decoder.embed_tokens.weight"
        assert mapped.mapped_from(many.model.decoder.embed_tokens.weight, sharded / weight_map[table])
    opened, safe_open = [], safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda path, *a, **k: opened.append(Path(path).name) or
                        safe_open(path, *a, **k))
    decoder = TorchWhisper.from_pretrained(sharded, torch.device("cpu"), torch.float32, int8=int8, decoder_only=True)
    encoder_only = set(weight_map.values()) - {f for k, f in weight_map.items() if not k.startswith("model.encoder.")}
    assert encoder_only and opened and not encoder_only & set(opened)
    with torch.inference_mode():
        _same(decoder.next_logits(states, prompts), logits)
    config = json.loads((sharded / "config.json").read_text())
    (sharded / "config.json").write_text(json.dumps({**config, "d_model": 48}))
    with pytest.raises(LLMSRTError, match="sharded/model.safetensors.index.json: not a Whisper of config.json's shape"):
        TorchWhisper.from_pretrained(sharded, torch.device("cpu"), torch.float32, int8=int8)


@pytest.mark.parametrize("int8", [False, True])
def test_a_pytorch_model_bin_or_hand_named_shards_load_as_the_speech_llms_encoder_reads_them(folder, tmp_path, int8):
    """An older fine-tune's pytorch_model.bin alone, or *.safetensors shards named by hand without an index (both of
    which the speech LLM's encoder reads: encoder.py), give model.safetensors' numbers, whole and decoder_only, and
    language ID beside a speech LLM's encoder works on them: it said "not a Hugging Face Whisper folder"."""
    from safetensors.torch import load_file, save_file

    from llm_srt.model.encoder import WhisperEncoder

    state = load_file(folder / "model.safetensors")
    binary, shards = _copy(folder, tmp_path / "bin", lambda t: t), _copy(folder, tmp_path / "shards", lambda t: t)
    (binary / "model.safetensors").unlink()
    torch.save(state, binary / "pytorch_model.bin")
    (shards / "model.safetensors").unlink()
    names = sorted(state)
    save_file({k: state[k] for k in names[::2]}, str(shards / "part-a.safetensors"), metadata={"format": "pt"})
    save_file({k: state[k] for k in names[1::2]}, str(shards / "part-b.safetensors"), metadata={"format": "pt"})
    one = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32, int8=int8)
    prompts = torch.tensor([[one.generation.start, 5, 6, 7]])
    placement = device.Placement(torch.device("cpu"), torch.int8 if int8 else torch.float32)
    with torch.inference_mode():
        states = one.encode(one.mel(CLIPS[:1]))
        logits = one.next_logits(states, prompts)
        heard = detect_language(folder, CLIPS[0], placement)
        for other in (binary, shards):
            w = TorchWhisper.from_pretrained(other, torch.device("cpu"), torch.float32, int8=int8)
            _same(w.encode(w.mel(CLIPS[:1])), states)
            _same(w.next_logits(states, prompts), logits)
            assert torch.equal(w.greedy(states, prompts, 8), one.greedy(states, prompts, 8))
            decoder = TorchWhisper.from_pretrained(other, torch.device("cpu"), torch.float32, int8=int8,
                                                   decoder_only=True)
            assert decoder.model.encoder is None
            _same(decoder.next_logits(states, prompts), logits)
            encoder = WhisperEncoder.from_pretrained(other, pad_to_30s=True)
            assert detect_language(other, CLIPS[0], placement, encoder=encoder) == heard
    (binary / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(LLMSRTError, match=r"bin/pytorch_model.bin: cannot read the Whisper weights .*save_pretrained"):
        TorchWhisper.from_pretrained(binary, torch.device("cpu"), torch.float32, int8=int8)


@pytest.mark.parametrize("int8", [False, True])
def test_a_whisper_model_checkpoint_without_the_model_prefix_loads_whole_decoder_only_and_int8(folder, tmp_path,
                                                                                              monkeypatch, int8):
    """WhisperModel.save_pretrained's names have no `model.` prefix (transformers loads them into a
    WhisperForConditionalGeneration, proj_out tied). The int8 load said "not a Whisper of config.json's shape
    (model.decoder.embed_tokens.weight is in no weights file)", and decoder_only (a speech LLM's language ID) read
    every encoder tensor besides the decoder's."""
    import safetensors
    from transformers import WhisperModel

    bare = tmp_path / "whisper-model"
    WhisperModel.from_pretrained(folder).save_pretrained(bare)
    for f in folder.iterdir():
        if not (bare / f.name).exists():
            (bare / f.name).write_bytes(f.read_bytes())
    one = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32, int8=int8)
    prompts = torch.tensor([[one.generation.start, 5, 6, 7]])
    with torch.inference_mode():
        states = one.encode(one.mel(CLIPS[:1]))
        logits = one.next_logits(states, prompts)
        w = TorchWhisper.from_pretrained(bare, torch.device("cpu"), torch.float32, int8=int8)
        _same(w.encode(w.mel(CLIPS[:1])), states)
        _same(w.next_logits(states, prompts), logits)
    read, safe_open = [], safetensors.safe_open

    class Spy:
        def __init__(self, *args, **kwargs):
            self.f = safe_open(*args, **kwargs)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def get_tensor(self, key):
            read.append(key)
            return self.f.get_tensor(key)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    decoder = TorchWhisper.from_pretrained(bare, torch.device("cpu"), torch.float32, int8=int8, decoder_only=True)
    assert read and not [k for k in read if k.startswith("encoder.")]
    with torch.inference_mode():
        _same(decoder.next_logits(states, prompts), logits)


def test_language_id_beside_an_encoder_alone_asks_for_the_source_language(folder, tmp_path):
    """A speech LLM's encoder folder holding the encoder's weights alone (a bare encoder's names, which encoder.py
    reads) has no decoder to tell the language by: language ID said "FOLDER/model.safetensors: not a Whisper of
    config.json's shape (Missing key(s)...)", which a server counted as a broken model (a 500, then 'failing');
    it is language ID's own error (LID_MISSING: the client's to fix, a 400), naming --src."""
    from safetensors.torch import load_file, save_file

    from llm_srt.model.encoder import WhisperEncoder
    from llm_srt.model.protocol import LID_MISSING
    from llm_srt.serve.batcher import language_id_failed

    alone = _copy(folder, tmp_path / "encoder-alone", lambda t: t)
    state = load_file(alone / "model.safetensors")
    save_file({k.removeprefix("model.encoder."): v for k, v in state.items() if k.startswith("model.encoder.")},
              str(alone / "model.safetensors"), metadata={"format": "pt"})
    encoder = WhisperEncoder.from_pretrained(alone)
    placement = device.Placement(torch.device("cpu"), torch.float32)
    with pytest.raises(LLMSRTError) as e:
        detect_language(alone, CLIPS[0], placement, encoder=encoder)
    assert str(e.value) == (f"{alone}: a Whisper encoder alone (no decoder tensors in its weights), so it "
                            f"{LID_MISSING}; give the source language (--src)")
    assert language_id_failed(str(e.value))
    with pytest.raises(LLMSRTError, match=f"^{alone}: a Whisper encoder alone .*; give --whisper a whole Whisper"):
        TorchWhisper.from_pretrained(alone, torch.device("cpu"), torch.float32, int8=True)


def _copy(folder: Path, to: Path, convert) -> Path:
    """The folder's files in `to`, each tensor of model.safetensors passed through `convert`."""
    from safetensors.torch import load_file, save_file

    to.mkdir()
    for f in folder.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    state = load_file(folder / "model.safetensors")
    save_file({k: convert(v).contiguous() for k, v in state.items()}, str(to / "model.safetensors"),
              metadata={"format": "pt"})
    return to


def test_int8_from_a_float16_file_keeps_the_rest_float32(folder, tmp_path):
    """int8 from a float16 checkpoint (HF's whisper-large-v3): convolutions, norms, positional and token tables are
    float32 (in float16 the mel, convolutions and norms ran ~9x slower on the CPU, the states off by up to 0.09),
    and the states and tokens are those of a float32 file holding the same (float16-rounded) values."""
    half = _copy(folder, tmp_path / "half", torch.Tensor.half)
    rounded = _copy(folder, tmp_path / "rounded", lambda t: t.half().float())
    w16, w32 = (TorchWhisper.from_pretrained(f, torch.device("cpu"), torch.float32, int8=True) for f in (half, rounded))
    assert w16.dtype == torch.float32
    assert {p.dtype for p in w16.parameters()} == {torch.float32}  # Int8Linear's weights are packed, not parameters
    assert {type(m).__name__ for m in w16.modules() if next(m.parameters(recurse=False), None) is not None} == {
        "Conv1d", "LayerNorm", "Embedding"}
    prompt = torch.tensor([[w16.generation.start, 5, 6, 7]])
    with torch.inference_mode():
        mel = w16.mel(CLIPS[:1])
        states = w16.encode(mel)
        assert mel.dtype == states.dtype == torch.float32
        assert torch.equal(states, w32.encode(w32.mel(CLIPS[:1])))
        assert torch.equal(w16.greedy(states, prompt, 8), w32.greedy(states, prompt, 8))


def test_an_untied_whispers_head_is_its_proj_out(folder, tmp_path):
    """A Whisper with tie_word_embeddings false (`convert whisper-ct2` writes one from a CTranslate2 model with its
    own projection) decodes through proj_out.weight, as HF's: the token table was the head always (logits off by
    12, another argmax). int8 quantizes proj_out."""
    from safetensors.torch import load_file, save_file
    from transformers import WhisperForConditionalGeneration

    untied = _copy(folder, tmp_path / "untied", lambda t: t)
    state = load_file(untied / "model.safetensors")
    state["proj_out.weight"] = torch.randn(state["model.decoder.embed_tokens.weight"].shape, generator=
                                           torch.Generator().manual_seed(0))
    save_file(state, str(untied / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((untied / "config.json").read_text())
    (untied / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    hf = WhisperForConditionalGeneration.from_pretrained(untied).eval()
    assert torch.equal(hf.proj_out.weight, state["proj_out.weight"])  # HF's reference reads it
    ours, int8 = (TorchWhisper.from_pretrained(untied, torch.device("cpu"), torch.float32, int8=q)
                  for q in (False, True))
    prompts = torch.tensor([[ours.generation.start, 5, 6, 7]])
    with torch.inference_mode():
        states = ours.encode(ours.mel(CLIPS[:1]))
        ref = hf(encoder_outputs=(states,), decoder_input_ids=prompts).logits[:, -1]
        assert float((ours.next_logits(states, prompts) - ref).abs().max()) < 1e-5
        head = int8.head.dequantized_weight()
        table = state["model.decoder.embed_tokens.weight"]
        assert float((head - state["proj_out.weight"]).abs().max()) < 0.05 < float((head - table).abs().max())


def test_mel_bins_follow_config_json(tmp_path):
    """Without a preprocessor config the log-mel has config.json's num_mel_bins (a 128-bin Whisper, large-v3's
    shape, got 80 and failed at its first encode); a preprocessor config naming another number is an error at load
    that names the file."""
    folder = tiny.whisper_dir(tmp_path, n_mels=128)
    (folder / "preprocessor_config.json").unlink()
    w = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        mel = w.mel(CLIPS[:1])
        assert mel.shape == (1, 128, 3000) and w.encode(mel).shape == (1, 1500, 32)
    for name, settings in (("preprocessor_config.json", {"feature_size": 80}),
                           ("processor_config.json", {"feature_extractor": {"feature_size": 80}})):  # read first, as
        #   transformers reads it
        (folder / name).write_text(json.dumps(settings))
        with pytest.raises(LLMSRTError, match=f"{folder}/{name}: feature_size is 80 mel bins but config.json's "
                                              "num_mel_bins is 128; set feature_size to 128"):
            TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32)
    assert LogMel.from_folder(tmp_path).filters.shape == (80, 201)  # no model to say otherwise: Whisper's 80


def test_greedy_stops_at_the_end_of_the_decoders_context(folder):
    """prompt + max_new past n_text_ctx (64 here) writes the n_text_ctx - P tokens that fit (HF's `generate` raises)
    (it was an IndexError past the positional table)."""
    w = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32)
    prompt = torch.tensor([[w.generation.start, 5, 6, 7]])
    with torch.inference_mode():
        states = w.encode(w.mel(CLIPS[:1]))
        assert torch.equal(w.greedy(states, prompt, 1000), w.greedy(states, prompt, 60))
        assert w.greedy(states, torch.tensor([[w.generation.start] * 64]), 5).shape == (1, 0)  # a full context


@pytest.mark.parametrize("int8", [False, True])
def test_cpu_encoder_layers_take_rows_in_slices_with_the_same_values(folder, monkeypatch, int8):
    """On the CPU an encoder layer's row-wise parts run over slices of at most CPU_ENCODER_ROWS positions, only the
    attention over all 1500: the states of the whole-sequence layer (int8 bit for bit)."""
    w = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32, int8=int8)
    mel = w.mel(CLIPS[:2])
    monkeypatch.setattr(whisper_torch, "CPU_ENCODER_ROWS", 10**6)  # the whole sequence at once
    with torch.inference_mode():
        whole = w.encode(mel)
    monkeypatch.setattr(whisper_torch, "CPU_ENCODER_ROWS", 256)
    rows = []
    fc1 = w.model.encoder.layers[0].fc1
    hook = fc1.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[1]))
    with torch.inference_mode():
        sliced = w.encode(mel)
    hook.remove()
    assert rows == [250] * 6  # 1500 positions in 6 even slices
    if int8:  # per-row scales and int32 sums: exact
        assert torch.equal(sliced, whole)
    else:  # bit for bit with this machine's oneDNN; another CPU's kernels may split a product's sums by rows
        torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-5)


def test_int8_token_table_stays_the_files_and_drops_its_pages_after_each_lookup(folder, monkeypatch):
    """int8: the decoder's token table stays a view of the file, its pages dropped after every lookup (the
    mechanism: tests/model/test_mapped.py); float32 reads the whole table every step (it is the head), so its
    lookups drop nothing. The rows looked up are the file's."""
    from safetensors.torch import load_file

    from llm_srt.model import mapped

    path = folder / "model.safetensors"
    dropped = []
    monkeypatch.setattr(mapped, "drop_mapped_pages", lambda t: dropped.append(t.data_ptr()))
    w = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32, int8=True)
    embed = w.model.decoder.embed_tokens
    assert mapped.mapped_from(embed.weight, path)
    table = load_file(path)["model.decoder.embed_tokens.weight"].clone()
    ids = torch.tensor([[0, 5, table.shape[0] - 1]])
    with torch.inference_mode():
        assert torch.equal(embed(ids), table[ids])
        assert dropped == [embed.weight.data_ptr()]
        w.greedy(w.encode(w.mel(CLIPS[:1])), torch.tensor([[w.generation.start]]), 3)
    assert len(dropped) >= 3  # the prompt's step and each decode step
    plain = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32).model.decoder.embed_tokens
    dropped.clear()
    with torch.inference_mode():
        plain(ids)
    assert not dropped


def test_even_slices():
    assert [whisper_torch.even_slices(n, 256) for n in (1, 256, 257, 1500, 1025)] == [1, 256, 129, 250, 205]


def test_int8_head_is_quantized_in_chunks_and_the_table_stays_the_files(folder, monkeypatch):
    """int8: the tied head is quantized QUANTIZE_CHUNK_ROWS rows a mapping (chunk boundaries change nothing: the
    same int8 rows as quantizing the whole table); the token table stays the file's float32 rows, unchanged."""
    from safetensors.torch import load_file

    from llm_srt.model import int8_linear
    from llm_srt.model.int8_linear import Int8Linear, quantize_rows

    table = load_file(folder / "model.safetensors")["model.decoder.embed_tokens.weight"]
    q, scale = quantize_rows(table)  # the whole table at once
    monkeypatch.setattr(int8_linear, "QUANTIZE_CHUNK_ROWS", 7)  # not a divisor of the vocabulary
    assert table.shape[0] % 7
    w = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32, int8=True)
    assert torch.equal(w.head.dequantized_weight(), Int8Linear(q, scale=scale).dequantized_weight())
    assert torch.equal(w.model.decoder.embed_tokens.weight, table)


HEAP = """
import ctypes, json, os
import torch
from llm_srt.model import whisper_torch
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = whisper_torch._glibc()
libc.mallinfo2.restype = MallInfo2
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page / 2**20  # MiB
whisper_torch.return_freed_memory()
mapped = libc.mallinfo2().hblkhd
blocks, pins = [], []
for _ in range(48):  # 48 activations of 4 MiB, touched, each followed by a small live block: free() alone
    blocks.append(torch.ones(2**20))  # cannot give their pages back
    pins.append(torch.ones(2**18))
heap_blocks = libc.mallinfo2().hblkhd - mapped < 2**20
big = torch.ones(whisper_torch.CPU_MMAP_THRESHOLD // 4)  # at the threshold: mapped on its own
big_mapped = libc.mallinfo2().hblkhd - mapped >= whisper_torch.CPU_MMAP_THRESHOLD
del big, blocks
kept = rss()
whisper_torch.trim_heap()
print(json.dumps({"heap_blocks": heap_blocks, "big_mapped": big_mapped, "kept": kept, "trimmed": rss()}))
"""


@pytest.mark.skipif(not hasattr(whisper_torch._glibc(), "mallinfo2") or not Path("/proc/self/statm").is_file(),
                    reason="glibc >= 2.33 (mallinfo2) on Linux")
def test_cpu_activations_are_reused_from_the_heap_and_trimmed_back():
    """After `return_freed_memory`, activations below CPU_MMAP_THRESHOLD come from the heap (reused, no page fault
    per fresh block: the encoder's 3-12 MB activations), larger blocks are mapped on their own,
    and `trim_heap` hands the freed pages back (a fresh process: the setting is process-wide)."""
    out = subprocess.run([sys.executable, "-c", HEAP], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["heap_blocks"] and result["big_mapped"]
    assert result["kept"] - result["trimmed"] > 150, result  # 192 MiB freed between live blocks, then returned


REUSED = """
import json, resource
import torch
from llm_srt.model import whisper_torch
whisper_torch.return_freed_memory()
faults = []
for _ in range(6):  # an int8 product's output at a batch-16 prefill (1568 x 4096 float32: 25.7 MB), made and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = torch.ones(1568, 4096)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del y
print(json.dumps(faults))
"""


@pytest.mark.skipif(whisper_torch._glibc() is None, reason="glibc's mallopt")
def test_a_speech_llms_large_activations_are_reused_once_a_cpu_whisper_set_the_heap():
    """The heap setting is the whole process's: with a 16 MiB threshold a speech LLM's 25 MB activations beside a
    CPU Whisper (evaluate's cascade, serve) were mapped afresh at each call, every page faulted in again (27,343-
    140,638 faults per batch-16 int8 prefill of Gemma-3-270M); now they come from the heap and are reused."""
    out = subprocess.run([sys.executable, "-c", REUSED], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr[-2000:]
    faults = json.loads(out.stdout)
    assert sum(faults[3:]) < 1000, faults  # the last three; 6,272 pages a call when each is a fresh mapping

def test_the_heaps_top_is_kept_for_the_next_step(monkeypatch):
    """`return_freed_memory` also raises glibc's trim threshold (fixing the mmap threshold alone leaves it at 128
    KiB: free() then gives the heap's top back after each decode step and the next one faults it in again)."""
    calls = []
    monkeypatch.setattr(whisper_torch, "_glibc", lambda: SimpleNamespace(mallopt=lambda *a: calls.append(a)))
    whisper_torch.return_freed_memory()
    assert sorted(calls) == [(-3, whisper_torch.CPU_MMAP_THRESHOLD), (-1, whisper_torch.CPU_TRIM_THRESHOLD)]
    assert whisper_torch.CPU_TRIM_THRESHOLD >= 2 * whisper_torch.CPU_MMAP_THRESHOLD  # glibc's own ratio


def test_cpu_whisper_trims_the_heap_after_loading_encoding_and_decoding(folder, monkeypatch):
    calls = []
    monkeypatch.setattr(whisper_torch, "trim_heap", lambda: calls.append(1))
    w = TorchWhisper.from_pretrained(folder, torch.device("cpu"), torch.float32)
    assert len(calls) == 1
    with torch.inference_mode():
        mel = w.mel([CLIPS[0]])
        assert len(calls) == 2
        states = w.encode(mel)
        assert len(calls) == 3
        w.greedy(states, torch.tensor([[w.generation.start]]), 3)
    assert len(calls) == 4


NO_TRANSFORMERS = """
import json, sys
from types import SimpleNamespace
import numpy as np
from llm_srt import device, languages
from llm_srt.model.systems import WhisperSystem
system = WhisperSystem(sys.argv[1], device.resolve("cpu", sys.argv[2]))
clip = (0.3 * np.sin(np.arange(16000) * 0.2)).astype(np.float32)
options = SimpleNamespace(beam_size=1, no_repeat_ngram_size=0, repetition_penalty=1.0,  # DecodingOptions' fields
                          max_new_tokens=5)
texts = system.decode([clip, clip[:8000]], ["eng", "deu"], "transcribe", options)
lang = system.detect_language(clip)
print(json.dumps({"texts": texts, "lang": lang,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "transformers")}))
"""


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_greedy_whisper_imports_no_transformers(folder, dtype):
    """The Whisper system's greedy decoding and language ID run without transformers ever being imported (int8
    too: `Int8Linear` lives in the torch-only `model/int8_linear.py`)."""
    out = subprocess.run([sys.executable, "-c", NO_TRANSFORMERS, str(folder), dtype], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["loaded"] == [] and len(result["texts"]) == 2 and result["lang"]


# ---- the embedded Whisper base -------------------------------------------------------------------------------------
SENTENCES = ("The weather is nice today. We will go to the park.",
             "Please enter your password again, and then press the green button.",
             "Do you want to save the changes before closing the window?")


@pytest.mark.integration
@pytest.mark.slow  # the embedded Whisper through the CLI (37 s in a loaded make test); in make test, on tiny models:
#   test_greedy_whisper_imports_no_transformers, test_systems' test_whisper_decodes_the_same_tokens_as_hf_generate;
#   on the embedded one, in process: test_infer's test_whisper_baseline_transcribes_and_detects_english
def test_translate_whisper_gives_hf_greedy_transcripts_and_imports_no_transformers(embedded, speak, tmp_path):
    """`translate --model whisper` (a whole process, as users run it) writes the transcripts of HF greedy
    `generate` on the same clips without importing transformers, and its plain-torch path loads the float32 weights
    in place (anonymous memory grows by far less than the 290 MB of weights)."""
    import soundfile
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    clips = [speak(s) for s in SENTENCES]
    paths = []
    for i, clip in enumerate(clips):
        paths.append(tmp_path / f"clip{i}.wav")
        soundfile.write(paths[-1], clip, 16000)
    code = ("import sys, io, json, contextlib; from llm_srt.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out: code = main(sys.argv[1:])\n"
            "print(json.dumps([code, 'transformers' in sys.modules, out.getvalue()]))")
    out = subprocess.run([sys.executable, "-c", code, "translate", *map(str, paths), "--model", "whisper", "--task",
                          "asr", "--src", "eng", "--device", "cpu", "--format", "json"],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr[-2000:]
    status, imported, text = json.loads(out.stdout)
    assert status == 0 and imported is False, out.stderr[-2000:]
    ours = [r["transcript"] for r in json.loads(text)]

    model = WhisperForConditionalGeneration.from_pretrained(embedded.whisper).eval()
    mel = WhisperFeatureExtractor.from_pretrained(embedded.whisper)(clips, sampling_rate=16000,
                                                                    return_tensors="pt").input_features
    with torch.inference_mode():
        ids = model.generate(mel, language="en", task="transcribe")
    want = [t.strip() for t in WhisperTokenizer.from_pretrained(embedded.whisper).batch_decode(
        ids, skip_special_tokens=True)]
    print(ours, want, sep="\n")
    assert ours == want and all(ours)

    def anon_mib():
        return int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                        if line.startswith("RssAnon")).split()[1]) / 1024

    before = anon_mib()
    system = WhisperSystem(embedded.whisper, CPU)
    assert anon_mib() - before < 50 and system.whisper.dtype == torch.float32


def test_log_mel_reads_the_settings_file_transformers_reads(tmp_path):
    """Beside preprocessor_config.json, processor_config.json's "feature_extractor" is the one transformers (and the
    speech LLM's encoder) reads; the torch Whisper read preprocessor_config.json first, so language ID and the
    baselines took other features (here refused: 80 bins for a 128-bin model)."""
    from transformers import WhisperFeatureExtractor

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_size": 80}))
    (tmp_path / "processor_config.json").write_text(json.dumps({"feature_extractor": {"feature_size": 128}}))
    ours = LogMel.from_folder(tmp_path, 128)(CLIPS[:1], device=torch.device("cpu"))
    ref = WhisperFeatureExtractor.from_pretrained(tmp_path)(CLIPS[:1], sampling_rate=16000, return_tensors="pt")
    assert ours.shape == ref.input_features.shape == (1, 128, 3000)
    assert float((ours - ref.input_features).abs().max()) <= 1e-4
