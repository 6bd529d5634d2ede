"""Whisper's encoder-decoder in plain torch, for greedy decoding without transformers (`translate --model whisper`).

Reads an HF Whisper folder as `convert whisper-ct2` / `save_pretrained` write it: config.json (dimensions),
model.safetensors, or the shards model.safetensors.index.json lists (memory-mapped: float32 weights are used in
place, never copied; only the shards holding wanted tensors are opened), else an older fine-tune's pytorch_model.bin
or hand-named *.safetensors shards (the layouts the speech LLM's encoder reads: `tensor_files`), vocabulary.txt (its
tokens through the `tokenizers` library's byte-level decoder; without it, tokenizer.json), generation_config.json (task
prompt, suppressed tokens) and the feature extractor's settings (preprocessor_config.json, or
processor_config.json's "feature_extractor"). The modules keep HF's parameter names,
so the state dict loads as is; the numbers are HF's WhisperForConditionalGeneration's (tests/model/
test_whisper_torch.py checks the token ids, and the log-mel of model/log_mel.py against WhisperFeatureExtractor).

    whisper = TorchWhisper.from_pretrained(folder, device, torch.float32)
    ids = whisper.greedy(whisper.mel(audios), prompts, max_new=100)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LLMSRTError
from .cpu_linear import FastLinear, fast_linear
from .log_mel import LogMel
from .mapped import drop_pages_after_lookups, mapped_from
from .weight_files import (BIN_INDEX, WEIGHTS_INDEX, TensorReader, check_shapes, file_of, not_a_tokenizer,
                           read_vocabulary, tensor_files, whisper_config, whisper_generation)

TIMESTAMP = re.compile(r"<\|(\d+\.\d+)\|>")  # timestamp tokens are not special in tokenizer.json: HF drops their text
VOCABULARY = "vocabulary.txt"  # id -> token, one a line (CTranslate2's file; `convert whisper-ct2` writes it)
EMBED_TOKENS = "decoder.embed_tokens"  # the token table (tied to the head), under HF's `model.` prefix
HEAD = "proj_out.weight"  # the output head: a copy of the token table, or an untied Whisper's own
CPU_MMAP_THRESHOLD = 64 << 20  # bytes: on glibc, CPU allocations this large are mapped and unmapped on their own
#   (16 MiB until 2026-12-08: then a speech LLM's batch-16 int8 prefill in the same process, whose products write
#   25 MB blocks, faulted 27,343-140,638 pages in per prefill, against 2,875-9,762 under glibc's own thresholds and
#   none at 64 MiB, two runs each; a batch-16 decode step's 16.8 MB of logits were mapped afresh at every step)
CPU_TRIM_THRESHOLD = 128 << 20  # bytes: free memory at the heap's top kept for reuse (`return_freed_memory`)
LOAD_TRIM_EVERY = 8  # int8 load: the heap is trimmed after this many linear layers
CPU_ENCODER_ROWS = 256  # encoder positions an encoder layer's row-wise parts take at a time on the CPU
NOT_ITS_SHAPE = ("config.json is another Whisper's than these weights: copy the config.json saved with them, or "
                 "the whole folder again")  # what to do about weights that are not config.json's Whisper


@functools.cache
def _glibc():
    """The C library when it is glibc (it has `mallopt` and `malloc_trim`), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Bound what glibc keeps of freed CPU memory without a page fault per 4 KiB of every fresh activation. By
    default glibc raises its mmap threshold to the largest block freed, so freed activations (3-12 MB each) stay
    resident; mapping every block of 1 MiB or more instead (the setting before 2026-12-01) faulted each fresh
    activation in again, process-wide (Whisper's encoder and an int8 LLM's decode steps alike). So blocks below
    CPU_MMAP_THRESHOLD come from the heap and are reused, the heap's top is kept up to CPU_TRIM_THRESHOLD (as
    glibc's own adjustment would), and `trim_heap` hands the freed pages back where a stage ends (after loading,
    after each clip's encoder pass and decoding). The setting is the whole process's: the threshold is above a
    speech LLM's activations too, which another system of the same process (evaluate's, serve's) allocates.
    Measured in docs/performance.md ("The heap, not the arithmetic"). No glibc: nothing to do."""
    if (libc := _glibc()) is not None:
        libc.mallopt(-3, CPU_MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, CPU_TRIM_THRESHOLD)  # M_TRIM_THRESHOLD


def trim_heap() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing)."""
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)


class EncoderAlone(LLMSRTError):
    """A Whisper folder holding the encoder's weights alone (encoder.py reads such a one: a bare encoder's names):
    no decoder to decode with, nor to tell the language by (it was "not a Whisper of config.json's shape")."""


# ---- the model -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WhisperDims:
    """What config.json says about the shapes."""

    n_mels: int  # mel bins of the input
    n_audio_ctx: int  # encoder positions (1500: 30 s after the stride-2 convolution)
    d_model: int  # width of encoder and decoder
    encoder_heads: int
    encoder_layers: int
    encoder_ffn: int
    n_vocab: int
    n_text_ctx: int  # decoder positions (448)
    decoder_heads: int
    decoder_layers: int
    decoder_ffn: int
    tied: bool = True  # the output head is the token table (else proj_out.weight: tie_word_embeddings false)

    @classmethod
    def from_config(cls, c: dict) -> "WhisperDims":
        return cls(c["num_mel_bins"], c["max_source_positions"], c["d_model"], c["encoder_attention_heads"],
                   c["encoder_layers"], c["encoder_ffn_dim"], c["vocab_size"], c["max_target_positions"],
                   c["decoder_attention_heads"], c["decoder_layers"], c["decoder_ffn_dim"],
                   c.get("tie_word_embeddings", True) is not False)  # (transformers' default: tied)


class SuppressTokens:
    """Whisper's suppressed tokens (`suppress` at every step, `begin` also at the first generated one) over masks made
    once; also an HF logits processor (HF's own rebuild their masks with `torch.isin` at every step). One instance
    per decode: its first call is the first step."""

    def __init__(self, vocab_size: int, suppress: tuple[int, ...], begin: tuple[int, ...], device: torch.device):
        # an id outside the vocabulary (a generation_config.json of another Whisper size) is no token: ignored, as
        # transformers' processors ignore it (its index would fail, or a negative one mask the last tokens)
        suppress, begin = ([i for i in ids if 0 <= i < vocab_size] for ids in (suppress, begin))
        self.always = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self.always[suppress] = True
        self.first = self.always.clone()
        self.first[begin] = True
        self.started = False

    def __call__(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        mask = self.always if self.started else self.first
        self.started = True
        return scores.masked_fill(mask, -float("inf"))


class Linear(FastLinear):
    """`FastLinear` (products on `fast_linear`'s faster CPU kernels) without its random init: parameters come from
    the checkpoint (init on meta tensors alone would import torch._dynamo, ~1 s)."""

    def reset_parameters(self) -> None:
        pass


class LayerNorm(nn.LayerNorm):
    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass


class Conv1d(nn.Conv1d):
    def reset_parameters(self) -> None:
        pass


class Attention(nn.Module):
    """Multi-head attention with HF Whisper's projections (k_proj has no bias); heads (B, H, T, d / H)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = Linear(d, d), Linear(d, d, bias=False)
        self.v_proj, self.out_proj = Linear(d, d), Linear(d, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) -> keys and values (B, H, T, D / H)."""
        return self.split(self.k_proj(x)), self.split(self.v_proj(x))

    def cross_kv(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, T, D) -> keys and values (B, H, T, D / H) for every decode step, contiguous: the CPU
        attention kernel reads one query against them in half the time it takes on the projections' transposed
        views (Whisper base: 120 vs 280 us a layer); each projection's output is freed once it is copied."""
        return self.split(self.k_proj(states)).contiguous(), self.split(self.v_proj(states)).contiguous()

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
        y = F.scaled_dot_product_attention(self.split(self.q_proj(x)), k, v, is_causal=causal)
        return self.out_proj(y.transpose(1, 2).flatten(2))


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = Attention(d, heads), LayerNorm(d)
        self.fc1, self.fc2, self.final_layer_norm = Linear(d, ffn), Linear(ffn, d), LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.shape[1] > CPU_ENCODER_ROWS:
            return self._in_rows(x)
        h = self.self_attn_layer_norm(x)
        x = x + self.self_attn(h, *self.self_attn.kv(h))
        return x + self.fc2(torch.ops.aten.gelu_(self.fc1(self.final_layer_norm(x))))

    def _in_rows(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` on the CPU, its row-wise parts (norms, products, GELU, residuals) over even slices of at most
        CPU_ENCODER_ROWS positions, only the attention itself over all of them: the same values (each row's
        products, norms and activations do not depend on the other rows; int8 bit for bit, float32 so with this
        machine's oneDNN, which need not hold on every CPU: tests/model/test_whisper_torch.py),
        with activations of a slice at a time where a 30 s clip's fc1 output alone was 12 MB (one clip through the
        int8 encoder of Whisper base, its peak RSS above its start: +87-109 -> +52-78 MiB, the same time)."""
        a, rows = self.self_attn, even_slices(x.shape[1], CPU_ENCODER_ROWS)
        parts = [self.self_attn_layer_norm(p) for p in x.split(rows, dim=1)]
        q, k, v = (a.split(torch.cat([proj(h) for h in parts], dim=1)) for proj in (a.q_proj, a.k_proj, a.v_proj))
        del parts
        y = F.scaled_dot_product_attention(q, k, v)
        del q, k, v
        out = torch.empty_like(x)
        for start in range(0, x.shape[1], rows):
            part = x[:, start:start + rows] + a.out_proj(y[:, :, start:start + rows].transpose(1, 2).flatten(2))
            out[:, start:start + rows] = part + self.fc2(torch.ops.aten.gelu_(self.fc1(self.final_layer_norm(part))))
        return out


def even_slices(n: int, most: int) -> int:
    """The length of the slices that cut n rows into as few as hold at most `most` each, all but the last of that
    length (so no slice is much shorter than the others: a product over 2-4 rows takes another kernel)."""
    count = -(-n // most)
    return -(-n // count)


class DecoderLayer(EncoderLayer):
    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__(d, heads, ffn)
        self.encoder_attn, self.encoder_attn_layer_norm = Attention(d, heads), LayerNorm(d)

    def forward(self, x: torch.Tensor, cache: "KVCache", layer: int) -> torch.Tensor:
        h = self.self_attn_layer_norm(x)
        k, v = cache.append(layer, *self.self_attn.kv(h))
        x = x + self.self_attn(h, k, v, causal=x.shape[1] > 1)
        x = x + self.encoder_attn(self.encoder_attn_layer_norm(x), *cache.cross[layer])
        return x + self.fc2(torch.ops.aten.gelu_(self.fc1(self.final_layer_norm(x))))


class Encoder(nn.Module):
    """mel (B, n_mels, 2 * n_audio_ctx) -> states (B, n_audio_ctx, D)."""

    def __init__(self, dims: WhisperDims):
        super().__init__()
        d = dims.d_model
        self.conv1 = Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = Embedding(dims.n_audio_ctx, d)
        self.layers = nn.ModuleList(EncoderLayer(d, dims.encoder_heads, dims.encoder_ffn)
                                    for _ in range(dims.encoder_layers))
        self.layer_norm = LayerNorm(d)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.embed_positions.weight[:x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


class KVCache:
    """Per decoder layer: the self-attention keys/values so far, in buffers of `n_ctx` positions, and the
    cross-attention keys/values of the encoder states (computed once per clip)."""

    def __init__(self, cross: list[tuple[torch.Tensor, torch.Tensor]], n_ctx: int):
        self.cross = cross
        b, h, _, hd = cross[0][0].shape
        like = cross[0][0]
        self.k = [like.new_empty(b, h, n_ctx, hd) for _ in cross]
        self.v = [like.new_empty(b, h, n_ctx, hd) for _ in cross]
        self.length = 0  # positions filled (the same for every row: prompts have one length)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end], self.v[layer][:, :, self.length:end] = k, v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def select(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (finished rows leave the batch)."""
        self.cross = [(k[rows], v[rows]) for k, v in self.cross]
        self.k, self.v = [k[rows] for k in self.k], [v[rows] for v in self.v]


class Decoder(nn.Module):
    """Token ids (B, T) at positions cache.length .. -> hidden states (B, T, D); the head is embed_tokens'
    transpose (tied)."""

    def __init__(self, dims: WhisperDims):
        super().__init__()
        d = dims.d_model
        self.embed_tokens = Embedding(dims.n_vocab, d)
        self.embed_positions = Embedding(dims.n_text_ctx, d)
        self.layers = nn.ModuleList(DecoderLayer(d, dims.decoder_heads, dims.decoder_ffn)
                                    for _ in range(dims.decoder_layers))
        self.layer_norm = LayerNorm(d)

    def forward(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        x = self.embed_tokens(ids) + self.embed_positions.weight[cache.length:cache.length + ids.shape[1]]
        for i, layer in enumerate(self.layers):
            x = layer(x, cache, i)
        cache.advance(ids.shape[1])
        return self.layer_norm(x)


class _Model(nn.Module):
    """HF's `model.` prefix: encoder + decoder."""

    def __init__(self, dims: WhisperDims):
        super().__init__()
        self.encoder, self.decoder = Encoder(dims), Decoder(dims)


@dataclass(frozen=True)
class GenerationSettings:
    """What generation_config.json says about decoding."""

    start: int  # decoder_start_token_id (<|startoftranscript|>)
    eos: int
    pad: int
    lang_to_id: dict  # "<|en|>" -> id
    task_to_id: dict  # "transcribe" / "translate" -> id
    no_timestamps: int | None
    suppress: tuple[int, ...]  # never generated
    begin_suppress: tuple[int, ...]  # not as the first generated token
    multilingual: bool | None = None  # is_multilingual (None: not said, as in a fine-tune's of transformers < 4.27)

    @classmethod
    def from_folder(cls, folder: Path, config: dict) -> "GenerationSettings":
        """generation_config.json when present (it alone says how to generate, as in HF), else config.json, its ids
        checked (`weight_files.whisper_generation`)."""
        g = whisper_generation(folder, config)
        return cls(g["decoder_start_token_id"], g["eos_token_id"], g["pad_token_id"], g["lang_to_id"],
                   g["task_to_id"], g["no_timestamps_token_id"], g["suppress_tokens"], g["begin_suppress_tokens"],
                   g["is_multilingual"])


class TorchWhisper(nn.Module):
    """The whole Whisper: `mel`, `encode`, `greedy`, `decode_text`, loaded from an HF folder onto one device."""

    def __init__(self, folder: Path, dims: WhisperDims, generation: GenerationSettings, features: LogMel):
        super().__init__()
        self.folder, self.dims, self.generation, self.features = folder, dims, generation, features
        self.model = _Model(dims)
        # the output head: int8, an Int8Linear of its own; an untied Whisper's, proj_out; else embed_tokens' weight
        self.head: nn.Module | None = None if dims.tied else Linear(dims.d_model, dims.n_vocab, bias=False)
        self._stored: dict[str, str] = {}  # a tensor's name under HF's `model.` -> its name in the file

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device, dtype: torch.dtype,
                        int8: bool = False, decoder_only: bool = False) -> "TorchWhisper":
        """The folder's Whisper on `device` in `dtype` (float32 on the CPU: the mapped file's pages themselves).
        `int8` (CPU, float32): every linear layer int8 as it is read (`_load_int8`), the tied head an int8 copy of
        the token table (as CTranslate2's int8; an untied Whisper's, of proj_out.weight); convolutions, embeddings
        and norms float32 (a float16 file's too).
        `decoder_only`: no encoder is read (a speech LLM's own Whisper encoder gives the states: language ID beside
        it)."""
        folder = Path(folder)
        config = whisper_config(folder, "whisper")
        found = tensor_files(folder)  # a WhisperModel's names (no `model.` prefix) taken as HF's, as transformers does
        stored = {f"model.{k}" if k.startswith(("encoder.", "decoder.")) else k: k for k in found}
        files = {name: found[k] for name, k in stored.items()}
        if not any(k.startswith("model.decoder.") for k in files):  # a folder the speech LLM's encoder reads
            raise EncoderAlone(f"{folder}: a Whisper encoder alone (no decoder tensors in its weights), which encodes "
                               "speech for a speech LLM but cannot decode; give --whisper a whole Whisper folder")
        try:
            dims = WhisperDims.from_config(config)
            generation = GenerationSettings.from_folder(folder, config)
        except KeyError as e:
            raise LLMSRTError(f"{folder}/config.json: no {e} (not a Whisper config)") from None
        features = LogMel.from_folder(folder, dims.n_mels)
        if torch.device(device).type == "cpu":
            return_freed_memory()
        with torch.device("meta"):
            whisper = cls(folder, dims, generation, features)
        if decoder_only:
            whisper.model.encoder = None
        whisper._stored = stored
        try:
            whisper._load_int8(files) if int8 else whisper._load(files, device, dtype)
        except ValueError as e:  # a weight of another shape, or none (`check_shapes`, `Int8Linear.from_file`); a
            #   RuntimeError is not the folder's fault: out of memory (CUDA's OutOfMemoryError, the CPU's), a GPU's
            names = sorted({file.name for file in files.values()})  # the file, else the index `tensor_files` read
            weights = names[0] if len(names) == 1 else next(
                (index for index in (WEIGHTS_INDEX, BIN_INDEX) if (folder / index).is_file()), "*.safetensors")
            detail = (str(e).splitlines() or [type(e).__name__])[0]
            raise LLMSRTError(f"{folder}/{weights}: not a Whisper of config.json's shape ({detail}); "
                              f"{NOT_ITS_SHAPE}") from None
        whisper._trim()
        return whisper.eval().requires_grad_(False)

    def _load(self, files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> None:
        """The wanted tensors (`tensor_files`), each shard opened once; a shard with none of them (decoder_only: the
        encoder's) is never opened."""
        reader = TensorReader()
        keys = [k for k in files if k != HEAD and self._wanted(k)]
        state = {}
        for file in dict.fromkeys(files[k] for k in keys):
            with reader.open(file) as f:
                state.update({k.removeprefix("model."): self._tensor(f, k).to(device=device, dtype=dtype)
                              for k in keys if files[k] == file})
        check_shapes(self._shapes(), {k: v.shape for k, v in state.items()})
        self.model.load_state_dict(state, strict=True, assign=True)
        if self.head is not None:  # untied: proj_out.weight is the head (a tied one's copy in the file is not read)
            with reader.open(file_of(files, HEAD)) as f:
                weight = f.get_tensor(HEAD).to(device=device, dtype=dtype)
            check_shapes({HEAD: (self.dims.n_vocab, self.dims.d_model)}, {HEAD: weight.shape})
            self.head.load_state_dict({"weight": weight}, strict=True, assign=True)

    def _load_int8(self, files: dict[str, Path]) -> None:
        """Each linear layer's float32 weights are read through a mapping of their own and quantized at once, so
        the file's pages leave memory as each mapping closes: the peak holds the int8 model and one float32 matrix,
        not every float32 weight besides. The head is quantized first, from the token table (an untied
        Whisper's from proj_out.weight) QUANTIZE_CHUNK_ROWS rows a mapping (16 MB of Whisper base's;
        `Int8Linear.from_file`); the table itself stays a view of the file, so lookups are exact, and its pages
        leave the process after each lookup (`mapped.drop_pages_after_lookups`; a copy of it would cost 106 MB, or
        26 MB as int8). From a float16 or
        bfloat16 file (HF's whisper-large-v3 is float16) the other tensors, the table too, become float32 copies:
        else the mel, convolutions and norms would run in float16 on the CPU (at Whisper base's shapes the
        convolutions 9x slower; a tiny test model's states off by 0.09). `files`: `tensor_files`' map (a
        sharded checkpoint's weight and bias may lie in two shards). A pytorch_model.bin is one mapping for the whole
        load (`TensorReader`), so the float32 pages read stay resident until the load ends, and, where the token
        table is a view of them, after it: save such a Whisper as safetensors for the lower peak."""
        from .int8_linear import Int8Linear

        reader = TensorReader()
        linears = {name: m for name, m in self.model.named_modules() if isinstance(m, nn.Linear)}
        shapes = {k: shape for k, shape in self._shapes().items() if k.rsplit(".", 1)[0] not in linears}
        table = f"{EMBED_TOKENS}.weight"
        path = file_of(files, f"model.{table}")
        head = f"model.{table}" if self.head is None else HEAD  # untied: proj_out.weight
        shape = (self.dims.n_vocab, self.dims.d_model)
        if file_of(files, head).suffix != ".bin":
            self.head = Int8Linear.from_file(file_of(files, head), self._stored.get(head, head), shape)
        else:
            with reader.open(file_of(files, head)) as f:
                weight = self._tensor(f, head)
            check_shapes({head.removeprefix("model."): shape}, {head.removeprefix("model."): weight.shape})
            self.head = Int8Linear(weight)
        trim_heap()  # first: its quantized and packed forms (2 x 26 MB) are resident together before the rest is
        keys = [k for k in files if k not in (HEAD, f"model.{table}") and self._wanted(k)
                and k.removeprefix("model.").rsplit(".", 1)[0] not in linears]
        state = {}
        for file in dict.fromkeys(files[k] for k in keys):
            with reader.open(file) as f:
                state.update({k.removeprefix("model."): self._tensor(f, k).to(torch.float32, copy=True)
                              for k in keys if files[k] == file})
        with reader.open(path) as f:  # a mapping of its own: the copies' pages above are let go
            state[table] = self._tensor(f, f"model.{table}").float()  # a float32 file's: a view
        for i, (name, module) in enumerate(linears.items()):
            with reader.open(file_of(files, f"model.{name}.weight")) as f:
                weight = self._tensor(f, f"model.{name}.weight")
            check_shapes({f"{name}.weight": module.weight.shape}, {f"{name}.weight": weight.shape})
            bias = None
            if module.bias is not None:
                with reader.open(file_of(files, f"model.{name}.bias")) as f:
                    bias = self._tensor(f, f"model.{name}.bias")
                check_shapes({f"{name}.bias": module.bias.shape}, {f"{name}.bias": bias.shape})
            parent, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent), child, Int8Linear(weight, bias))
            if i % LOAD_TRIM_EVERY == LOAD_TRIM_EVERY - 1:  # the layers' temporaries (Whisper base's load peaked
                trim_heap()  # at 323 or 405 MiB, run to run; now 321-329, for ~15 ms)
        check_shapes(shapes, {k: v.shape for k, v in state.items()})  # the linear layers' are loaded above
        self.model.load_state_dict(state, strict=False, assign=True)
        embed = self.model.decoder.embed_tokens
        if mapped_from(embed.weight, path):  # int8's head is its own copy: the table serves lookups alone
            drop_pages_after_lookups(embed)

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """The model's tensors (names without HF's `model.`) and the shapes config.json gives them."""
        return {k: tuple(v.shape) for k, v in self.model.state_dict().items()}

    def _tensor(self, f, key: str) -> torch.Tensor:
        """Tensor `key` (HF's name, under `model.`) of an opened weights file, by the name it has there."""
        return f.get_tensor(self._stored.get(key, key))

    def _wanted(self, key: str) -> bool:
        """Whether a checkpoint tensor is loaded (not an encoder's where there is none: `decoder_only`)."""
        return self.model.encoder is not None or not key.startswith("model.encoder.")

    @cached_property
    def tokenizer(self):
        """The folder's tokenizer.json (a `tokenizers.Tokenizer`), read when first needed (one the library refuses is
        refused as the folder loads, `weight_files.tokens_at`; one damaged since, here in the same line)."""
        from tokenizers import Tokenizer

        path = self.folder / "tokenizer.json"
        if not path.is_file():
            raise LLMSRTError(f"{self.folder}: no tokenizer.json, so Whisper's tokens cannot become text; convert the "
                              "model with `llm-srt convert whisper-ct2` or save its tokenizer there")
        try:
            return Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001  the tokenizers library raises Exception itself
            raise not_a_tokenizer(path, e) from None

    @cached_property
    def vocabulary(self) -> list[str] | None:
        """id -> token from the folder's vocabulary.txt (one token a line, as CTranslate2 writes it and `convert
        whisper-ct2` copies it), or None without one. Decoding from it costs ~6 MiB of memory where the whole
        tokenizer costs 30-48 (Whisper base; 1,608 added tokens) in a process whose peak is measured against
        faster-whisper's."""
        path = self.folder / VOCABULARY
        return read_vocabulary(path, self.dims.n_vocab) if path.is_file() else None

    @property
    def device(self) -> torch.device:
        return self.model.decoder.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.decoder.embed_tokens.weight.dtype

    def mel(self, audios: list[np.ndarray]) -> torch.Tensor:
        """16 kHz clips -> (B, n_mels, 3000) on the model's device, in its dtype (on the CPU, the STFTs' freed
        pages handed back: `_trim`)."""
        mel = self.features(audios, device=self.device).to(self.dtype)
        self._trim()
        return mel

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        if self.model.encoder is None:
            raise RuntimeError("TorchWhisper.encode: loaded decoder_only, without its encoder")
        states = self.model.encoder(mel)
        self._trim()
        return states

    def _trim(self) -> None:
        """On the CPU, the heap's free pages back to the system (`return_freed_memory`)."""
        if self.device.type == "cpu":
            trim_heap()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, vocab) float32 through the head (the token table, tied, unless `self.head`)."""
        if self.head is not None:
            return self.head(hidden).float()
        return fast_linear(hidden, self.model.decoder.embed_tokens.weight).float()

    def next_logits(self, states: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """Encoder states (B, n_audio_ctx, D), prompts (B, P) -> the logits after each prompt (B, vocab), nothing
        suppressed (language ID reads the language tokens' among them)."""
        decoder = self.model.decoder
        cache = KVCache([layer.encoder_attn.cross_kv(states) for layer in decoder.layers], prompts.shape[1])
        return self.logits(decoder(prompts, cache)[:, -1])

    def greedy(self, states: torch.Tensor, prompts: torch.Tensor, max_new: int) -> torch.Tensor:
        """Encoder states (B, n_audio_ctx, D), prompts (B, P) -> new tokens (B, <= max_new): an argmax per step
        with the suppressed tokens masked; a row that ended (EOS) leaves the batch and is padded after it. At most
        n_text_ctx - P new tokens, those that fit (HF's `generate` raises instead): the model has no positions past
        its context."""
        g, decoder = self.generation, self.model.decoder
        max_new = max(0, min(max_new, self.dims.n_text_ctx - prompts.shape[1]))
        cache = KVCache([layer.encoder_attn.cross_kv(states) for layer in decoder.layers], prompts.shape[1] + max_new)
        suppress = SuppressTokens(self.dims.n_vocab, g.suppress, g.begin_suppress, states.device)
        out = torch.full((len(prompts), max_new), g.pad, dtype=torch.long, device=states.device)
        rows = torch.arange(len(prompts), device=states.device)  # batch slot -> row of `out`
        ids = prompts
        for step in range(max_new):
            token = suppress(None, self.logits(decoder(ids, cache)[:, -1])).argmax(-1)
            out[rows, step] = token
            live = token != g.eos
            if not bool(live.all()):
                if not bool(live.any()):
                    out = out[:, :step + 1]
                    break
                keep = live.nonzero().squeeze(1)
                cache.select(keep)
                rows, token = rows[keep], token[keep]
            ids = token[:, None]
        del cache
        self._trim()
        return out

    def decode_text(self, rows: list[list[int]]) -> list[str]:
        """Token ids -> texts, special tokens and timestamps left out (as HF's WhisperTokenizer with
        skip_special_tokens). With a vocabulary.txt: its tokens before <|endoftext|> (in every Whisper vocabulary
        the added tokens, special or timestamps, are <|endoftext|> and after it) through the tokenizer's own
        byte-level decoder; else the whole tokenizer.json."""
        if self.vocabulary is None:
            return [TIMESTAMP.sub("", t) for t in self.tokenizer.decode_batch(rows, skip_special_tokens=True)]
        from tokenizers.decoders import ByteLevel

        decoder, vocab, end = ByteLevel(), self.vocabulary, self.generation.eos
        return [decoder.decode([vocab[i] for i in row if 0 <= i < end]) for row in rows]
