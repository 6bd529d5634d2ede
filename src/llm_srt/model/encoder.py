"""The frozen Whisper encoder, run at variable length (no padding to 30 s).

HF `WhisperEncoder.forward` only accepts 3000 mel frames. We reuse its modules (conv1, conv2, the positional table,
the layers and the final LayerNorm) and run them ourselves on the real length, with the positional table sliced to
the frame count and an attention mask so that padding frames of a batch never reach real frames:
mel (B, n_mels, F) -> H (B, T, D) with T = ceil(F / 2).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

from ..audio import MIN_SAMPLES, SAMPLE_RATE, WINDOW_SECONDS
from ..errors import AudioError, LLMSRTError
from .weight_files import TensorReader, tensor_files, unreadable, whisper_config

HOP_LENGTH = 160  # samples per mel frame (10 ms at 16 kHz)
N_SAMPLES_30S = WINDOW_SECONDS * SAMPLE_RATE  # 480000 samples: Whisper's fixed window
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # a weight's bits, by its size
FEATURE_VERSION = 2  # part of `identity`; bump when the feature computation below changes (2: no bf16 autocast)
CPU_ENCODER_FRAMES = 1536  # on the CPU, an encoder pass takes as many clips as fit this many output frames (Whisper
#  base, 16 clips, 2 threads, best of 3, fp32 / int8 s: at 273 frames a clip 0.61 / 0.43 in one pass, 0.50 / 0.31
#  in passes of 5; at 500 frames 1.22 / 0.71 in passes of 8, 1.10 / 0.70 in passes of 2-3; at 150 frames any pass of
#  4-16 clips alike; at 1000 one or two clips a pass; the same values)
_PREFIXES = ("model.encoder.", "encoder.")  # WhisperForConditionalGeneration, WhisperModel (else a bare encoder)
_BARE = ("conv1.", "conv2.", "layers.", "layer_norm.", "embed_positions.")


class WhisperEncoder(nn.Module):
    """A frozen Whisper encoder plus its feature extractor.

    `pad_to_30s=True` reproduces original Whisper (and SLAM-LLM) input: every clip padded to 30 s and all 1500
    output frames marked real; the default runs each clip at its own length.
    """

    def __init__(self, encoder: HFWhisperEncoder, feature_extractor: WhisperFeatureExtractor,
                 pad_to_30s: bool = False, name: str = "whisper"):
        super().__init__()
        self.encoder = encoder
        # dither (noise added to the waveform: a training augmentation; WhisperFeatureExtractor's default and
        # OpenAI's configs 0.0) would make a clip's features random per call: a feature cache keyed on `identity`,
        # and a clip's states alone and in a batch, need them to be the audio's alone
        feature_extractor.dither = 0.0
        self.feature_extractor = feature_extractor
        self.pad_to_30s = pad_to_30s
        self.name = name
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self._identity: str | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, pad_to_30s: bool = False, device: str | torch.device | None = None,
                        dtype: torch.dtype = torch.float32, weights: bool = True) -> "WhisperEncoder":
        """Load only the encoder weights of an HF Whisper folder (the decoder is never read), straight onto
        `device` in `dtype`: built on the meta device and given the checkpoint's tensors, so float32 on the CPU
        uses the memory-mapped file's pages themselves (no random initialization, no copy) and other dtypes or
        devices copy each tensor once. `weights=False`: random weights from config.json (paper-shaped
        benchmarks)."""
        path = Path(path)
        config = _whisper_config(path)
        config._attn_implementation = "sdpa"
        target = torch.device(device) if device is not None else torch.device("cpu")
        if weights:  # the skeleton on the meta device, the checkpoint's tensors put in as they are where they can be
            with torch.device("meta"):
                encoder = HFWhisperEncoder(config)
            state = _read_encoder_weights(path)
            missing = [k for k in encoder.state_dict() if k not in state]
            if missing:
                raise LLMSRTError(f"{path}: the Whisper weights lack {len(missing)} encoder tensors (e.g. "
                                  f"{missing[0]}); is this a complete Whisper checkpoint?")
            _check_shapes(path, encoder, state)
            encoder.load_state_dict({k: state[k].to(device=target, dtype=dtype) for k in encoder.state_dict()},
                                    assign=True)
        else:
            with torch.device(target):
                encoder = HFWhisperEncoder(config).to(dtype)
        return cls(encoder, _feature_extractor(path, config.num_mel_bins), pad_to_30s=pad_to_30s, name=path.name)

    @property
    def dim(self) -> int:
        return self.encoder.config.d_model

    @property
    def max_frames(self) -> int:
        """Largest encoder output length (1500 for 30 s)."""
        return self.encoder.config.max_source_positions

    def output_frames(self, seconds: float) -> int:
        """The frames this encoder gives for a clip of `seconds` (what a feature cache stores of it): one per 20 ms
        of the clip, or the whole 30 s window's with pad_to_30s."""
        if self.pad_to_30s:
            return self.max_frames
        return -(-(round(seconds * SAMPLE_RATE) // HOP_LENGTH) // 2)

    @property
    def device(self) -> torch.device:
        return self.encoder.conv1.weight.device

    @property
    def identity(self) -> str:
        """A stable key for feature caches: config + weights fingerprint + feature settings. The weights' part is
        exact integer arithmetic on their bits, so it is the same on any device and any number of threads (a float
        sum is not: a cache filled on the CPU, or by a process with other threads, must still be found)."""
        if self._identity is None:
            h = hashlib.sha256()
            cfg = self.encoder.config.to_dict()
            keep = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("transformers_version",
                                                                                       "torch_dtype", "dtype")}
            h.update(json.dumps(keep, sort_keys=True, default=str).encode())
            h.update(json.dumps(self.feature_extractor.to_dict(), sort_keys=True, default=str).encode())
            h.update(f"v{FEATURE_VERSION}|pad30={self.pad_to_30s}".encode())
            with torch.no_grad():
                for name, p in self.encoder.state_dict().items():
                    bits = p.detach().reshape(-1).view(_BITS[p.element_size()])
                    h.update(f"{name}|{tuple(p.shape)}|{p.dtype}".encode())
                    step = max(1, bits.numel() // 256)  # 256 values spread over the tensor, in order
                    h.update(bits[::step][:256].cpu().numpy().tobytes())
                    h.update(np.int64(bits.long().sum().item()).tobytes())  # every value (wraps alike everywhere)
            self._identity = f"{self.name}-{h.hexdigest()[:16]}"
        return self._identity

    def train(self, mode: bool = True) -> "WhisperEncoder":
        return super().train(False)  # frozen: always eval (no dropout)

    def features(self, audios: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """16 kHz mono clips -> log-mel (B, n_mels, F) and its frame mask (B, F) bool (False = padding)."""
        if not audios:
            raise AudioError("no audio given to the encoder")
        mels = [self._mel(np.asarray(a, dtype=np.float32), i) for i, a in enumerate(audios)]
        n_frames = max(m.shape[-1] for m in mels)
        mel = torch.zeros(len(mels), mels[0].shape[0], n_frames)
        mask = torch.zeros(len(mels), n_frames, dtype=torch.bool)
        for i, m in enumerate(mels):
            mel[i, :, :m.shape[-1]] = torch.from_numpy(m)
            mask[i, :m.shape[-1]] = True
        return mel, mask

    def _mel(self, audio: np.ndarray, index: int) -> np.ndarray:
        if audio.ndim != 1:
            raise AudioError(f"audio #{index}: expected a mono 1-D array, got shape {audio.shape}; use "
                             "llm_srt.audio.load_audio")
        if len(audio) > N_SAMPLES_30S:
            raise AudioError(f"audio #{index}: {len(audio) / SAMPLE_RATE:.1f} s is longer than Whisper's 30 s "
                             "window; segment long audio first (llm_srt.audio)")
        if len(audio) < HOP_LENGTH:
            raise AudioError(f"audio #{index}: {len(audio)} samples is too short (need at least {HOP_LENGTH})")
        if len(audio) < MIN_SAMPLES:  # the STFT's reflect padding needs more than 200: padded as load_audio pads (a
            audio = np.pad(audio, (0, MIN_SAMPLES - len(audio)))  # 160-200 sample array was a bare RuntimeError)
        padding = "max_length" if self.pad_to_30s else "longest"
        # the STFT runs where the encoder runs: on a GPU ~20x faster than numpy's per clip (bench: 5.4 ms a 10 s clip
        # on the CPU, ~5 s per 1,000 utterances), equal to the CPU's within 1e-5 (the extractor's own tolerance);
        # outside the caller's bf16 autocast (training's step, the feature cache's fill), which ran the mel filters'
        # matmul in bf16: a coarser input than inference's, and on the CPU a TypeError (numpy takes no bf16)
        with torch.autocast(self.device.type, enabled=False):
            out = self.feature_extractor(audio, sampling_rate=SAMPLE_RATE, padding=padding, max_length=N_SAMPLES_30S,
                                         truncation=False, return_tensors="np", device=str(self.device))
        return out["input_features"][0].astype(np.float32)

    def forward(self, mel: torch.Tensor, mel_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, n_mels, F), mel_mask (B, F) -> H (B, T, D), frame_mask (B, T) bool; T = ceil(F / 2).

        Padding mel frames are zeroed before each convolution (as the conv's own zero padding would be for a
        clip alone) and masked out of self-attention, so a clip's real frames do not depend on its batch (within
        float rounding). On the CPU the batch runs in passes of clips of similar lengths (`cpu_passes`), each pass
        cut to its longest clip: up to 1.4x faster than one pass over 16 clips, and no pass pays for another's
        longest clip. Frames past a clip's pass are zeros, masked out.
        """
        passes = self.cpu_passes(mel, mel_mask)
        if len(passes) == 1 and len(passes[0][0]) == len(mel):
            return self._forward(mel, mel_mask)
        h = mask = None
        for rows, frames in passes:
            part, part_mask = self._forward(mel[rows, :, :frames],
                                            None if mel_mask is None else mel_mask[rows, :frames])
            if h is None:
                h = part.new_zeros(len(mel), (mel.shape[-1] + 1) // 2, part.shape[-1])
                mask = part_mask.new_zeros(len(mel), h.shape[1])
            h[rows, :part.shape[1]], mask[rows, :part.shape[1]] = part, part_mask
        return h, mask

    def cpu_passes(self, mel: torch.Tensor, mel_mask: torch.Tensor | None) -> list[tuple[torch.Tensor, int]]:
        """(rows of `mel` (B, n_mels, F), mel frames) of each encoder pass: all rows at F in one pass on a GPU; on
        the CPU the clips longest first (by `mel_mask`'s real frames; all F with no mask or 30 s padding), each pass
        as many as fit CPU_ENCODER_FRAMES output frames at the length of its longest (at least one), cut to it."""
        if self.encoder.conv1.weight.device.type != "cpu":
            return [(torch.arange(len(mel)), mel.shape[-1])]
        if mel_mask is None or self.pad_to_30s:
            lengths = torch.full((len(mel),), mel.shape[-1])
        else:
            lengths = mel_mask.sum(1).cpu()
        order = torch.argsort(lengths, descending=True, stable=True)
        passes, start = [], 0
        while start < len(order):
            frames = int(lengths[order[start]])
            take = max(1, CPU_ENCODER_FRAMES // max(1, (frames + 1) // 2))
            passes.append((order[start:start + take].sort().values, frames))
            start += take
        return passes

    def _forward(self, mel: torch.Tensor, mel_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder
        param = enc.conv1.weight
        mel = mel.to(device=param.device, dtype=param.dtype)
        if self.pad_to_30s or mel_mask is None:
            mel_mask = torch.ones(mel.shape[0], mel.shape[-1], dtype=torch.bool, device=mel.device)
        mel_mask = mel_mask.to(mel.device)
        keep = mel_mask[:, None, :].to(mel.dtype)
        x = nn.functional.gelu(enc.conv1(mel * keep)) * keep
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)  # (B, T, D)
        n_frames = x.shape[1]
        if n_frames > self.max_frames:
            raise AudioError(f"{n_frames} encoder frames exceed Whisper's {self.max_frames}; audio over 30 s must "
                             "be segmented first")
        frame_mask = mel_mask[:, ::2]
        x = x + enc.embed_positions.weight[:n_frames].to(x.dtype)
        bias = torch.zeros(frame_mask.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(~frame_mask, torch.finfo(x.dtype).min)
        bias = bias[:, None, None, :].expand(-1, 1, n_frames, -1)  # (B, 1, T, T): keys masked, queries free
        for layer in enc.layers:
            x = layer(x, bias)
        x = enc.layer_norm(x)
        return x, frame_mask

    @torch.no_grad()
    def encode(self, audios: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips -> H (B, T, D) and frame mask (B, T) on the encoder's device."""
        mel, mask = self.features(audios)
        return self.forward(mel, mask)


def whisper_dim(path: str | Path) -> int:
    """d_model of an HF Whisper folder without loading its weights."""
    return _whisper_config(Path(path)).d_model


def _whisper_config(path: Path) -> WhisperConfig:
    """The folder's WhisperConfig; an error for a folder whose config.json is not one (`weight_files.whisper_config`:
    WhisperConfig would take its defaults, d_model 384, and loading fail later on the missing weight files)."""
    whisper_config(path, "encoder")
    return WhisperConfig.from_pretrained(path)


def _feature_extractor(path: Path, n_mels: int) -> WhisperFeatureExtractor:
    """The folder's feature extractor as transformers reads it (processor_config.json's "feature_extractor", else
    preprocessor_config.json), else WhisperFeatureExtractor's defaults at the model's `n_mels`. A settings file that
    is there but damaged is an error naming it: the defaults were taken without a word for bad JSON (the torch
    Whisper's language ID beside it refused the same file), and bad UTF-8 or a JSON list was a traceback."""
    source = None  # the file transformers takes the settings from
    for file in (path / "preprocessor_config.json", path / "processor_config.json"):
        if not file.is_file():
            continue
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # a permission, bad JSON or bad UTF-8
            raise LLMSRTError(f"{file}: cannot read the feature extractor settings ({type(e).__name__}: "
                              f"{str(e).splitlines()[0]}); copy or download the model again") from None
        if not isinstance(raw, dict):
            raise LLMSRTError(f"{file}: not a JSON object of feature extractor settings; copy or download the model "
                              "again")
        if file.name == "preprocessor_config.json" or "feature_extractor" in raw or "audio_processor" in raw:
            source = file
    try:
        fe = WhisperFeatureExtractor.from_pretrained(path)
    except OSError:  # no settings (a processor_config.json without "feature_extractor"): the defaults
        fe = WhisperFeatureExtractor(feature_size=n_mels)
    except (ValueError, TypeError, AttributeError) as e:  # a setting of the wrong type ("feature_size": null)
        raise LLMSRTError(f"{source or path}: a feature extractor setting WhisperFeatureExtractor cannot take "
                          f"({type(e).__name__}: {str(e).splitlines()[0]}); fix it or copy the model again") from None
    if fe.feature_size != n_mels:  # (read after the weights: a config.json of another size is said as that)
        raise LLMSRTError(f"{source or path}: feature_size is {fe.feature_size} mel bins but config.json's "
                          f"num_mel_bins is {n_mels}; set feature_size to {n_mels}")
    return fe


def _read_encoder_weights(path: Path) -> dict[str, torch.Tensor]:
    """The encoder's tensors, prefix stripped, from the files transformers itself loads (`weight_files.tensor_files`:
    model.safetensors, its index's shards, pytorch_model.bin, else *.safetensors globbed). Never every file:
    openai/whisper-large-v3 ships model.safetensors (float16) beside model.fp32-0000N-of-00002.safetensors, and
    reading all three read the encoder three times (3.8 GB, not 1.3)."""
    from safetensors import SafetensorError

    reader = TensorReader()
    by_file: dict[Path, list[str]] = {}
    for key, file in tensor_files(path).items():
        if _strip(key) is not None:
            by_file.setdefault(file, []).append(key)
    state: dict[str, torch.Tensor] = {}
    for file, keys in by_file.items():  # each file holding encoder tensors opened once; the decoder's shards never
        try:
            with reader.open(file) as f:
                for key in keys:
                    state[_strip(key)] = f.get_tensor(key)
        except (OSError, SafetensorError) as e:
            raise unreadable(file, e) from None
    if not state:
        raise LLMSRTError(f"{path}: no Whisper encoder tensors found (expected keys like model.encoder.conv1.weight)")
    return state


def _check_shapes(path: Path, encoder: HFWhisperEncoder, state: dict[str, torch.Tensor]) -> None:
    """Every encoder tensor of the checkpoint has the shape the folder's config.json gives (torch's load_state_dict
    said otherwise in a many-line RuntimeError naming no folder: a config.json of another Whisper size, e.g.
    large-v3's 128 mel bins beside large-v2's weights, or d_model edited)."""
    wrong = [(k, tuple(state[k].shape), tuple(t.shape)) for k, t in encoder.state_dict().items()
             if tuple(state[k].shape) != tuple(t.shape)]
    if wrong:
        shown = ", ".join(f"{k}: {stored} in the file, {wanted} expected" for k, stored, wanted in wrong[:2])
        raise LLMSRTError(f"{path}: {len(wrong)} Whisper encoder weight(s) in another shape than its config.json "
                          f"gives ({shown}{', ...' if len(wrong) > 2 else ''}); are config.json and the weights "
                          "from the same model? copy or download the folder again")


def _strip(key: str) -> str | None:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    if key.startswith(_BARE):
        return key
    return None
