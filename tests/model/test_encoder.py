"""The frozen variable-length Whisper encoder (tiny random Whisper)."""

import json
import math

import numpy as np
import pytest
import torch

from llm_srt.errors import AudioError, LLMSRTError
from llm_srt.model.encoder import WhisperEncoder, whisper_dim

import tiny  # tests/model is on sys.path (pytest rootdir insertion)


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    return tiny.whisper_dir(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="module")
def enc(wdir):
    return WhisperEncoder.from_pretrained(wdir)


def test_shapes_follow_audio_length(enc):
    clips = [tiny.tone(0.51, 300), tiny.tone(1.23, 500, seed=1)]
    mel, mel_mask = enc.features(clips)
    assert mel.shape == (2, 80, 123) and mel_mask.sum(1).tolist() == [51, 123]
    h, mask = enc(mel, mel_mask)
    assert h.shape == (2, math.ceil(123 / 2), enc.dim) and enc.dim == 32
    assert mask.sum(1).tolist() == [math.ceil(51 / 2), math.ceil(123 / 2)]


def test_features_under_the_callers_bf16_autocast_are_the_fp32_ones(enc):
    """Training's step and the feature cache's fill run the encoder under bf16 autocast; the log-mel inside it ran
    the mel filters' matmul in bf16 (a TypeError on the CPU: numpy takes no bf16; a coarser input than inference's
    on CUDA, where autocast runs matmul in bf16 too). It is computed outside autocast."""
    clips = [tiny.tone(0.8, 300), tiny.tone(1.1, 450, seed=2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mel, mel_mask = enc.features(clips)
    fp32, fp32_mask = enc.features(clips)
    assert mel.dtype == torch.float32 and torch.equal(mel, fp32) and torch.equal(mel_mask, fp32_mask)


def test_padding_in_a_batch_does_not_change_real_frames(enc):
    short, long = tiny.tone(0.7, 250), tiny.tone(2.0, 700, seed=3)
    alone, alone_mask = enc.encode([short])
    batched, mask = enc.encode([short, long])
    n = alone.shape[1]
    assert alone_mask.all() and mask[0, :n].all() and not mask[0, n:].any()
    assert torch.allclose(batched[0, :n], alone[0], atol=1e-4)
    # and padding really is excluded: without the mask the short clip's frames change
    mel, mel_mask = enc.features([short, long])
    unmasked, _ = enc(mel, torch.ones_like(mel_mask))
    assert not torch.allclose(unmasked[0, :n], alone[0], atol=1e-4)


def test_cpu_batch_runs_in_passes_that_fit_the_frame_budget(enc, monkeypatch):
    """On the CPU a batch is encoded in passes of clips that fit CPU_ENCODER_FRAMES output frames: the same
    masks and real frames' states as one pass over the whole batch, in as many passes as the budget says."""
    from llm_srt.model import encoder as encoder_module

    clips = [tiny.tone(0.4 + 0.3 * i, 200 + 90 * i, seed=i) for i in range(5)]
    mel, mel_mask = enc.features(clips)
    frames = (mel.shape[-1] + 1) // 2
    whole, whole_mask = enc(mel, mel_mask)  # the default budget: all 5 tiny clips in one pass
    assert [len(rows) for rows, _ in enc.cpu_passes(mel, mel_mask)] == [5]
    passes = []
    hook = enc.encoder.conv1.register_forward_hook(lambda m, i, o: passes.append(len(o)))
    monkeypatch.setattr(encoder_module, "CPU_ENCODER_FRAMES", 2 * frames + 1)
    chunked, chunked_mask = enc(mel, mel_mask)
    assert passes == [2, 3]  # the 2 longest clips, then the 3 shorter ones at their own longest's length
    assert torch.equal(chunked_mask, whole_mask) and torch.allclose(chunked[whole_mask], whole[whole_mask], atol=1e-5)
    monkeypatch.setattr(encoder_module, "CPU_ENCODER_FRAMES", 1)  # one clip exceeds it: one at a time
    passes.clear()
    alone, alone_mask = enc(mel, mel_mask)
    hook.remove()
    assert passes == [1] * 5
    assert torch.equal(alone_mask, whole_mask) and torch.allclose(alone[whole_mask], whole[whole_mask], atol=1e-5)


def test_cpu_passes_group_clips_of_similar_length_each_cut_to_its_longest(enc, monkeypatch):
    """Clips of mixed lengths: each pass takes the longest clips left, as many as fit the budget at the length of
    its longest, and runs at that length (not the batch's): a pass of short clips pays for none of the long ones.
    Each clip's real frames are those of a whole-batch pass (to float rounding); frames past its pass are zeros."""
    from llm_srt.model import encoder as encoder_module

    seconds = [0.5, 2.0, 0.6, 1.9, 0.55, 2.1]
    clips = [tiny.tone(s, 200 + 50 * i, seed=i) for i, s in enumerate(seconds)]
    mel, mel_mask = enc.features(clips)
    whole, whole_mask = enc(mel, mel_mask)  # one pass: the default budget holds them all
    lengths = mel_mask.sum(1)
    monkeypatch.setattr(encoder_module, "CPU_ENCODER_FRAMES", 3 * int(lengths.max() + 1) // 2)
    passes = enc.cpu_passes(mel, mel_mask)
    assert [(rows.tolist(), frames) for rows, frames in passes] == [
        ([1, 3, 5], int(lengths[5])), ([0, 2, 4], int(lengths[2]))]
    widths = []
    hook = enc.encoder.conv1.register_forward_hook(lambda m, i, o: widths.append(i[0].shape[-1]))
    h, mask = enc(mel, mel_mask)
    hook.remove()
    assert widths == [int(lengths[5]), int(lengths[2])]  # the short clips' pass cut to 0.6 s, not 2.1 s
    assert h.shape == whole.shape and torch.equal(mask, whole_mask)
    assert torch.allclose(h[mask], whole[mask], atol=1e-5)
    assert not h[[0, 2, 4], (int(lengths[2]) + 1) // 2:].any()  # past the short pass: zeros


def test_pad_to_30s_matches_hf_whisper_encoder(wdir):
    enc30 = WhisperEncoder.from_pretrained(wdir, pad_to_30s=True)
    mel, mask = enc30.features([tiny.tone(1.0, 440)])
    assert mel.shape[-1] == 3000
    ours, frame_mask = enc30(mel, mask)
    with torch.no_grad():
        ref = enc30.encoder(mel).last_hidden_state
    assert ours.shape == (1, 1500, 32) and frame_mask.all()
    assert torch.allclose(ours, ref, atol=1e-5)


def test_frozen_and_identity(wdir, enc, tmp_path):
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.encoder.training
    again = WhisperEncoder.from_pretrained(wdir)
    other = WhisperEncoder.from_pretrained(tiny.whisper_dir(tmp_path, seed=1))
    padded = WhisperEncoder.from_pretrained(wdir, pad_to_30s=True)
    assert enc.identity == again.identity
    assert len({enc.identity, other.identity, padded.identity}) == 3


def test_dither_in_the_preprocessor_config_is_left_out(wdir, enc, tmp_path):
    """A preprocessor config with dither (noise on the waveform, a training augmentation; OpenAI's configs have
    none) gives the features of the audio alone: the same states on every call, and the feature cache's key of the
    folder without it (the noise made a clip's states differ per call)."""
    dithered = tmp_path / wdir.name  # the same name: part of the identity
    dithered.mkdir()
    for f in wdir.iterdir():
        (dithered / f.name).write_bytes(f.read_bytes())
    config = json.loads((wdir / "preprocessor_config.json").read_text())
    (dithered / "preprocessor_config.json").write_text(json.dumps({**config, "dither": 1.0}))
    noisy = WhisperEncoder.from_pretrained(dithered)
    clip = tiny.tone(1.0, 300)
    assert torch.equal(noisy.encode([clip])[0], noisy.encode([clip])[0])
    assert torch.equal(noisy.encode([clip])[0], enc.encode([clip])[0])
    assert noisy.identity == enc.identity


def test_identity_is_exact_on_any_number_of_threads_and_in_bfloat16():
    """The weights' fingerprint is integer arithmetic on their bits: a float sum of a large tensor changes with the
    number of threads (and on a GPU), and a feature cache filled by one process would be missed by the next."""
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

    torch.manual_seed(0)  # conv2 holds 1024 x 1024 x 3 weights: enough for a float sum to depend on the threads
    config = WhisperConfig(d_model=1024, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=64,
                           max_source_positions=8)
    enc = WhisperEncoder(HFWhisperEncoder(config), WhisperFeatureExtractor())
    threads = torch.get_num_threads()
    try:
        seen = set()
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            enc._identity = None
            seen.add(enc.identity)
    finally:
        torch.set_num_threads(threads)
    assert len(seen) == 1
    conv = enc.encoder.conv2
    w = conv.weight.detach().clone()
    w.view(-1)[12345] = torch.nextafter(w.view(-1)[12345], torch.tensor(1.0))  # one value, one bit further
    conv.weight = torch.nn.Parameter(w, requires_grad=False)
    enc._identity = None
    changed = enc.identity
    enc.encoder.to(torch.bfloat16)
    enc._identity = None
    assert len(seen | {changed, enc.identity}) == 3


@pytest.mark.cuda
def test_identity_on_cuda_is_the_one_on_the_cpu(wdir):
    """A feature cache filled on the CPU (or by another GPU) is found on a GPU: the same weights, the same key."""
    assert WhisperEncoder.from_pretrained(wdir, device="cuda").identity == WhisperEncoder.from_pretrained(wdir).identity


def test_errors(enc, tmp_path):
    with pytest.raises(AudioError, match="30 s"):
        enc.features([np.zeros(31 * 16000, dtype=np.float32)])
    with pytest.raises(AudioError, match="too short"):
        enc.features([np.zeros(50, dtype=np.float32)])
    short = np.random.default_rng(0).standard_normal(180).astype(np.float32)  # past the guard, under the STFT's
    padded = np.pad(short, (0, 400 - 180))  # reflect padding: padded as load_audio pads it, not a RuntimeError
    assert np.array_equal(enc.features([short])[0], enc.features([padded])[0])
    with pytest.raises(LLMSRTError, match="no config.json"):
        WhisperEncoder.from_pretrained(tmp_path / "nowhere")


def test_a_ctranslate2_folder_is_told_to_be_converted(tmp_path):
    """faster-whisper's config.json has no Whisper dimensions: WhisperConfig would take its defaults (d_model 384)
    and loading fail later for lack of model.safetensors."""
    (tmp_path / "model.bin").write_bytes(b"")
    (tmp_path / "config.json").write_text('{"alignment_heads": [[1, 0]], "lang_ids": [50259], "suppress_ids": [1]}')
    for load in (whisper_dim, WhisperEncoder.from_pretrained):
        with pytest.raises(LLMSRTError, match=r"config.json: not a transformers Whisper config.*llm-srt convert "
                                              r"whisper-ct2"):
            load(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "qwen2", "hidden_size": 64}')  # the LLM's folder
    with pytest.raises(LLMSRTError, match=r"config.json: a qwen2 model, not Whisper; .*model.encoder and model.llm "
                                          r"swapped"):
        whisper_dim(tmp_path)


@pytest.mark.parametrize("name, text, said", [
    ("preprocessor_config.json", b'{"feature_size": 80, "hop_', r"cannot read the feature extractor settings \(JSON"),
    ("preprocessor_config.json", b'\xff\xfe{"feature_size": 80}', r"cannot read the feature extractor settings \(Unic"),
    ("preprocessor_config.json", b"[80]", "not a JSON object of feature extractor settings"),
    ("preprocessor_config.json", b'{"feature_size": null}', "a feature extractor setting WhisperFeatureExtractor "
                                                            r"cannot take \(TypeError"),
    ("processor_config.json", b'{"feature_extractor": {"feature_si', r"cannot read the feature extractor settings"),
    ("processor_config.json", b'{"feature_extractor": {"feature_size": 128}}', "feature_size is 128 mel bins but "
                                                                              "config.json's num_mel_bins is 80"),
])
def test_a_damaged_feature_extractor_config_is_one_line_naming_it(wdir, tmp_path, name, text, said):
    """A cut-short preprocessor_config.json was taken as no file at all (WhisperFeatureExtractor's defaults, without a
    word, where the torch Whisper's language ID refuses it); bad UTF-8, a JSON list or a setting of the wrong type
    was a traceback; a mel-bin mismatch named preprocessor_config.json for processor_config.json's setting."""
    folder = tmp_path / "damaged"
    folder.mkdir()
    for f in wdir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / name).write_bytes(text)
    with pytest.raises(LLMSRTError, match=f"^{folder / name}: {said}") as e:
        WhisperEncoder.from_pretrained(folder)
    assert "\n" not in str(e.value)


def test_a_processor_config_without_feature_extractor_settings_gives_the_defaults_at_the_models_mel_bins(tmp_path):
    """processor_config.json holding no "feature_extractor" (transformers then has no settings) is no damage: a
    128-bin Whisper (large-v3) gets 128-bin features."""
    folder = tiny.whisper_dir(tmp_path, n_mels=128)
    (folder / "preprocessor_config.json").unlink()
    (folder / "processor_config.json").write_text('{"processor_class": "WhisperProcessor"}')
    enc = WhisperEncoder.from_pretrained(folder)
    assert enc.features([tiny.tone(0.5, 300)])[0].shape == (1, 128, 50)


def test_an_unreadable_config_json_is_one_line_naming_it(wdir, monkeypatch):
    """A config.json the OS refuses (a folder written 0600 by another user) was a PermissionError traceback."""
    from pathlib import Path

    read_text = Path.read_text

    def refused(self, *args, **kwargs):
        if self.name == "config.json":
            raise PermissionError(13, "Permission denied")
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refused)
    for load in (whisper_dim, WhisperEncoder.from_pretrained):
        with pytest.raises(LLMSRTError, match=f"^{wdir}/config.json: cannot read it .Permission denied.; check the "
                                              "file's permissions$"):
            load(wdir)
