"""Model converters: a CTranslate2 (faster-whisper) Whisper folder -> a transformers Whisper folder, a GGUF causal
LM -> a transformers safetensors folder (model/gguf_llm.py), and (via llm_srt.model.slam) a SLAM-LLM checkpoint ->
our folder.

Every converter writes into `DST.tmp-<pid>` and renames it to DST at the end, so a crash never leaves a folder
that looks complete. DST is replaced whole, so each converter first refuses a DST that is or holds its input, or
that holds anything a conversion does not write (check_output_dir).

    llm-srt convert whisper-ct2 faster-whisper-base/ whisper-base/
    llm-srt convert gguf gemma-3-270m-q4_k_m.gguf gemma-3-270m/
    llm-srt convert slam model.pt out/ --encoder whisper-large-v3/ --llm qwen2.5-7b/
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import re
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LLMSRTError
from ..paths import EMBEDDED, atomic_dir, atomic_dir_leftovers, check_folder, disk_size, folder_write_errors, holds_cwd

# --- CTranslate2 binary format (written by ctranslate2/specs/model_spec.py: ModelSpec._serialize) -------------
CT2_BINARY_VERSIONS = (6,)  # model.bin layout versions read here (every ctranslate2 release since 3.0 writes 6)
CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # type id -> dtype (include/types.h)
CT2_WHISPER_SPEC = "WhisperSpec"
CT2_FILES = ("model.bin", "config.json")  # must exist in a CTranslate2 Whisper folder
CT2_VOCABULARIES = ("vocabulary.json", "vocabulary.txt")  # id -> token, one of these

# --- the output folder: what a conversion writes (a folder of only these is a previous output, replaced whole) ----
OUTPUT_FILES = frozenset({
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",  # model
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "merges.txt", "normalizer.json", "chat_template.jinja", "chat_template.json",  # tokenizer
    "preprocessor_config.json", "processor_config.json", "vocabulary.txt",  # Whisper processor, our vocabulary
    "adapter.safetensors", "lora.safetensors", "ctc_head.safetensors",  # SpeechLLM.save_pretrained (slam)
    ".llm-srt-setup.json",  # embedded.STAMP: `llm-srt setup` marks the folders it converted
})
OUTPUT_SHARD = re.compile(r"model-\d+-of-\d+\.safetensors")  # save_pretrained's shards of a large model
OUTPUT_LEFTOVER = re.compile(r"\.(.+)\.[^.]+\.tmp")  # paths.atomic_file's temporary file, left by a killed write
OS_CLUTTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # what file browsers leave in any folder

# --- Whisper special tokens (the same strings for every Whisper size) -------------------------------------------
SOT, EOT, NO_TIMESTAMPS, SOT_PREV = "<|startoftranscript|>", "<|endoftext|>", "<|notimestamps|>", "<|startofprev|>"
TASKS = {"translate": "<|translate|>", "transcribe": "<|transcribe|>"}
WHISPER_MAX_INITIAL_TIMESTAMP_INDEX = 50  # 1.0 s, as in openai/whisper's DecodingOptions

# CT2 sub-layer path -> transformers module path, per Whisper layer (q/k/v are handled by _split_attention).
_LAYER_NORMS = {
    "self_attention/layer_norm": "self_attn_layer_norm",
    "attention/layer_norm": "encoder_attn_layer_norm",
    "ffn/layer_norm": "final_layer_norm",
}
_LINEARS = {
    "self_attention/linear_1": "self_attn.out_proj",
    "attention/linear_2": "encoder_attn.out_proj",
    "ffn/linear_0": "fc1",
    "ffn/linear_1": "fc2",
}


# ================================================================================================ whisper-ct2 =====
def convert_whisper_ct2(src_dir: str | Path, dst_dir: str | Path, dtype: str = "float32") -> Path:
    """Convert a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json, vocabulary.txt|json, optional
    preprocessor_config.json) to a transformers folder loadable by WhisperForConditionalGeneration and
    WhisperProcessor, with a generation config that makes `generate(..., language=, task=)` work. Any Whisper
    size; float32 / float16 / bfloat16 / int8 / int16 weights (integers are dequantized with their stored scale)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from .llm import resolve_dtype

    src = Path(src_dir)
    _check_ct2_folder(src)
    check_output_dir(dst_dir, src)
    ct2_config = _read_source_json(src / "config.json")
    vocab = _read_ct2_vocabulary(src)
    tokenizer_json = _read_source_json(src / "tokenizer.json")  # before model.bin's parse: a damaged one fails fast
    with _ct2_variables(src / "model.bin") as variables:
        spec = _whisper_dims(variables, src)
        if len(vocab) != spec.vocab_size:  # else an IndexError, or a folder every later load refuses
            name = next(name for name in CT2_VOCABULARIES if (src / name).is_file())
            raise LLMSRTError(f"{src / name}: {len(vocab)} tokens, but model.bin's token table has {spec.vocab_size} "
                              "rows: the vocabulary is another Whisper size's (51864 tokens: .en, 51865: "
                              "multilingual, 51866: large-v3); copy the model folder's own vocabulary again")
        state = _whisper_state_dict(variables, spec)
    config = WhisperConfig(**_whisper_config_kwargs(spec, ct2_config, vocab))
    config.dtype = dtype
    torch_dtype = resolve_dtype(dtype)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(v).to(torch_dtype) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embeddings
    if missing or unexpected:
        raise LLMSRTError(f"{src / 'model.bin'}: Whisper weights do not fit the model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); is this a Whisper model written by ctranslate2?")
    model.tie_weights()
    model.generation_config = _whisper_generation_config(config, ct2_config, vocab)

    processor = _whisper_processor(src, spec, vocab, tokenizer_json)
    with output_dir(dst_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        _write_vocabulary(Path(tmp) / "vocabulary.txt", vocab)
    return Path(dst_dir)


@contextlib.contextmanager
def output_dir(dst_dir: str | Path) -> Iterator[Path]:
    """`atomic_dir(dst_dir)` for a converter's output: a write that fails (a full or read-only disk, a file size
    limit) is a one-line error naming the folder, the reason and the free space (`folder_write_errors`), not a
    traceback of safetensors' or the OS's; the temporary folder is removed as on any error."""
    with folder_write_errors(dst_dir, "the converted model", "choose another output folder"), \
            atomic_dir(dst_dir) as tmp:
        yield tmp


def _read_source_json(path: Path):
    """A JSON file of the folder being converted, or a one-line error naming it (a damaged copy was json's bare
    JSONDecodeError, naming no file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LLMSRTError(f"{path}: cannot read it as JSON ({(str(e).splitlines() or [type(e).__name__])[0]}); copy "
                          "or download the model folder again") from None


def _write_vocabulary(path: Path, vocab: list[str]) -> None:
    """id -> token, one a line (CTranslate2's vocabulary.txt): the plain-torch Whisper decodes from it without
    loading the whole tokenizer (model/whisper_torch.py). Byte-level tokens hold no line breaks; one that did
    would misnumber every token after it, so it is refused."""
    if any("\n" in token or "\r" in token for token in vocab):
        raise LLMSRTError(f"{path.parent}: a vocabulary token holds a line break; this is not a byte-level Whisper "
                          f"vocabulary")
    path.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")


@dataclass(frozen=True)
class _WhisperDims:
    """Sizes read off the CT2 tensors (so any Whisper size converts)."""

    n_mels: int  # mel bins of the encoder input: 80, or 128 for large-v3
    d_model: int  # hidden size
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn: int
    decoder_ffn: int
    vocab_size: int  # rows of the token embedding (51865, or 51866 for large-v3)
    n_audio_ctx: int  # encoder positions (1500 = 30 s)
    n_text_ctx: int  # decoder positions (448)
    tied: bool  # the output projection is the token embedding


@dataclass
class _CT2Variables:
    """The variables of a model.bin: name -> float32/int array (dequantized on access), plus aliases."""

    arrays: dict[str, np.ndarray]
    aliases: dict[str, str]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays or name in self.aliases

    def raw(self, name: str) -> np.ndarray:
        return self.arrays[self.aliases.get(name, name)]

    def get(self, name: str) -> np.ndarray:
        """The float32 value of a weight, dequantized when stored as int8/int16 with a `<name>_scale`."""
        name = self.aliases.get(name, name)
        value = self.arrays[name]
        scale_name = name + "_scale"
        if value.dtype in (np.int8, np.int16) and scale_name in self.arrays:
            scale = self.arrays[scale_name].astype(np.float32)
            if scale.ndim:  # one scale per output row (conv weights were flattened to 2D for it)
                scale = scale.reshape((-1,) + (1,) * (value.ndim - 1))
            return value.astype(np.float32) / scale
        return value.astype(np.float32)


def _check_ct2_folder(src: Path) -> None:
    if not src.is_dir():
        raise LLMSRTError(f"{src}: not a folder; give the CTranslate2 (faster-whisper) model folder")
    missing = [name for name in CT2_FILES if not (src / name).is_file()]
    if missing:
        raise LLMSRTError(f"{src}: not a CTranslate2 Whisper folder (missing {', '.join(missing)}); give a "
                          f"faster-whisper model folder")
    if not (src / "tokenizer.json").is_file():
        raise LLMSRTError(f"{src}: tokenizer.json is missing; copy it from the original Whisper model folder")
    if not any((src / name).is_file() for name in CT2_VOCABULARIES):
        raise LLMSRTError(f"{src}: vocabulary.txt (or vocabulary.json) is missing from the CTranslate2 folder")


def _read_ct2_vocabulary(src: Path) -> list[str]:
    """id -> token, from vocabulary.json (newer conversions) or vocabulary.txt (one token a line)."""
    if (src / "vocabulary.json").is_file():
        vocab = _read_source_json(src / "vocabulary.json")
        if not isinstance(vocab, list) or not all(isinstance(token, str) for token in vocab):
            raise LLMSRTError(f"{src / 'vocabulary.json'}: not a list of tokens; copy or download the model folder "
                              "again")
        return vocab
    return read_vocabulary_txt(src / "vocabulary.txt")


def read_vocabulary_txt(path: Path) -> list[str]:
    """id -> token from a vocabulary.txt (one token a line; the last line break optional)."""
    lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: tokens may hold \u2028
    return lines[:-1] if lines and lines[-1] == "" else lines


@contextlib.contextmanager
def _ct2_variables(path: Path) -> Iterator[_CT2Variables]:
    """Parse model.bin (memory-mapped; arrays are views valid inside the `with`)."""
    with open(path, "rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as e:  # an empty file cannot be mapped
            raise LLMSRTError(f"{path}: empty or unreadable model.bin ({e})") from None
        try:
            yield _parse_ct2(buf, path)
        finally:
            with contextlib.suppress(BufferError):  # numpy views may still point into the map
                buf.close()


def _parse_ct2(buf: mmap.mmap, path: Path) -> _CT2Variables:
    offset = 0

    def take(fmt: str):
        nonlocal offset
        size = struct.calcsize(fmt)
        if offset + size > len(buf):
            raise LLMSRTError(f"{path}: truncated model.bin (ends at byte {len(buf)}); re-copy or re-download it")
        (value,) = struct.unpack_from(fmt, buf, offset)
        offset += size
        return value

    def take_string() -> str:
        nonlocal offset
        n = take("H")
        if offset + n > len(buf):
            raise LLMSRTError(f"{path}: truncated model.bin (ends at byte {len(buf)}); re-copy or re-download it")
        text = bytes(buf[offset:offset + n - 1]).decode("utf-8", errors="replace")
        offset += n
        return text

    version = take("I")
    if version not in CT2_BINARY_VERSIONS:
        raise LLMSRTError(f"{path}: not a CTranslate2 model.bin this converter reads (layout version {version}, "
                          f"expected one of {CT2_BINARY_VERSIONS}); re-convert it with a recent ctranslate2")
    spec_name = take_string()
    if spec_name != CT2_WHISPER_SPEC:
        raise LLMSRTError(f"{path}: a CTranslate2 {spec_name!r} model, not Whisper ({CT2_WHISPER_SPEC})")
    take("I")  # spec revision
    arrays: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = take_string()
        shape = tuple(take("I") for _ in range(take("B")))
        type_id, num_bytes = take("B"), take("I")
        if type_id >= len(CT2_DTYPES):
            raise LLMSRTError(f"{path}: variable {name} has unknown type id {type_id}; is the file corrupt?")
        if offset + num_bytes > len(buf):
            raise LLMSRTError(f"{path}: truncated model.bin (variable {name} runs past byte {len(buf)}); "
                              f"re-copy or re-download it")
        arrays[name] = _ct2_array(buf, offset, CT2_DTYPES[type_id], shape, num_bytes, path, name)
        offset += num_bytes
    aliases = {}
    for _ in range(take("I")):
        alias = take_string()
        aliases[alias] = take_string()
    if offset != len(buf):
        raise LLMSRTError(f"{path}: {len(buf) - offset} unexpected bytes after the last variable; is it corrupt?")
    return _CT2Variables(arrays, aliases)


def _ct2_array(buf, offset: int, dtype: str, shape: tuple, num_bytes: int, path: Path, name: str) -> np.ndarray:
    count = int(np.prod(shape)) if shape else 1
    bfloat16 = dtype == "bfloat16"  # numpy has no bfloat16: its 16 bits are read as uint16
    np_dtype = np.dtype(np.uint16 if bfloat16 else dtype)
    if count * np_dtype.itemsize != num_bytes:
        raise LLMSRTError(f"{path}: variable {name} has {num_bytes} bytes for shape {shape} {dtype}; corrupt file?")
    values = np.frombuffer(buf, np_dtype, count, offset)
    if bfloat16:  # widened into the top half of a float32
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return values.reshape(shape)


def _whisper_dims(v: _CT2Variables, src: Path) -> _WhisperDims:
    def count_layers(prefix: str) -> int:
        n = 0
        while f"{prefix}/layer_{n}/ffn/linear_0/weight" in v:
            n += 1
        return n

    required = ("encoder/conv1/weight", "decoder/embeddings/weight", "encoder/position_encodings/encodings",
                "decoder/position_encodings/encodings", "encoder/num_heads", "decoder/num_heads")
    missing = [name for name in required if name not in v]
    if missing:
        raise LLMSRTError(f"{src / 'model.bin'}: not a Whisper model (no {missing[0]})")
    conv1 = v.raw("encoder/conv1/weight")  # (d_model, n_mels, 3)
    embed = v.raw("decoder/embeddings/weight")  # (vocab, d_model)
    proj = "decoder/projection/weight"
    tied = proj not in v or v.aliases.get(proj) == "decoder/embeddings/weight"
    return _WhisperDims(
        n_mels=conv1.shape[1], d_model=conv1.shape[0],
        encoder_layers=count_layers("encoder"), decoder_layers=count_layers("decoder"),
        encoder_heads=int(v.raw("encoder/num_heads")), decoder_heads=int(v.raw("decoder/num_heads")),
        encoder_ffn=v.raw("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn=v.raw("decoder/layer_0/ffn/linear_0/weight").shape[0],
        vocab_size=embed.shape[0],
        n_audio_ctx=v.raw("encoder/position_encodings/encodings").shape[0],
        n_text_ctx=v.raw("decoder/position_encodings/encodings").shape[0],
        tied=tied,
    )


def _whisper_state_dict(v: _CT2Variables, dims: _WhisperDims) -> dict[str, np.ndarray]:
    """CT2 variable names -> WhisperForConditionalGeneration state dict (float32 numpy)."""
    state = {
        "model.encoder.conv1.weight": v.get("encoder/conv1/weight"),
        "model.encoder.conv1.bias": v.get("encoder/conv1/bias"),
        "model.encoder.conv2.weight": v.get("encoder/conv2/weight"),
        "model.encoder.conv2.bias": v.get("encoder/conv2/bias"),
        "model.encoder.embed_positions.weight": v.get("encoder/position_encodings/encodings"),
        "model.decoder.embed_tokens.weight": v.get("decoder/embeddings/weight"),
        "model.decoder.embed_positions.weight": v.get("decoder/position_encodings/encodings"),
    }
    for side, n_layers in (("encoder", dims.encoder_layers), ("decoder", dims.decoder_layers)):
        _copy_norm(state, v, f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(n_layers):
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            for ct2_name, hf_name in _LAYER_NORMS.items():
                if f"{ct2}/{ct2_name}/gamma" in v:
                    _copy_norm(state, v, f"{ct2}/{ct2_name}", f"{hf}.{hf_name}")
            for ct2_name, hf_name in _LINEARS.items():
                if f"{ct2}/{ct2_name}/weight" in v:
                    _copy_linear(state, v, f"{ct2}/{ct2_name}", f"{hf}.{hf_name}")
            _split_attention(state, v, f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q", "k", "v"))
            if side == "decoder":
                _copy_linear(state, v, f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                _split_attention(state, v, f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k", "v"))
    if not dims.tied:
        state["proj_out.weight"] = v.get("decoder/projection/weight")
    return state


def _copy_norm(state: dict, v: _CT2Variables, ct2: str, hf: str) -> None:
    state[f"{hf}.weight"], state[f"{hf}.bias"] = v.get(f"{ct2}/gamma"), v.get(f"{ct2}/beta")


def _copy_linear(state: dict, v: _CT2Variables, ct2: str, hf: str) -> None:
    state[f"{hf}.weight"], state[f"{hf}.bias"] = v.get(f"{ct2}/weight"), v.get(f"{ct2}/bias")


def _split_attention(state: dict, v: _CT2Variables, ct2: str, hf: str, parts: tuple[str, ...]) -> None:
    """CT2 fuses q/k/v (self-attention) or k/v (cross-attention) into one linear: (n*D, D) -> n x (D, D).
    Whisper's k_proj has no bias (CT2 stores zeros there; a key bias would not change the softmax anyway)."""
    weights = np.split(v.get(f"{ct2}/weight"), len(parts), axis=0)
    biases = np.split(v.get(f"{ct2}/bias"), len(parts), axis=0)
    for part, weight, bias in zip(parts, weights, biases):
        state[f"{hf}.{part}_proj.weight"] = weight
        if part != "k":
            state[f"{hf}.{part}_proj.bias"] = bias


def _whisper_config_kwargs(dims: _WhisperDims, ct2_config: dict, vocab: list[str]) -> dict:
    token_id = {token: i for i, token in enumerate(vocab)}
    eot = token_id.get(EOT, 50257)
    return dict(
        vocab_size=dims.vocab_size, num_mel_bins=dims.n_mels, d_model=dims.d_model,
        encoder_layers=dims.encoder_layers, decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_heads, decoder_attention_heads=dims.decoder_heads,
        encoder_ffn_dim=dims.encoder_ffn, decoder_ffn_dim=dims.decoder_ffn,
        max_source_positions=dims.n_audio_ctx, max_target_positions=dims.n_text_ctx,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=token_id.get(SOT, eot + 1),
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or []),
        scale_embedding=False, activation_function="gelu", tie_word_embeddings=dims.tied,
    )


def _whisper_generation_config(config, ct2_config: dict, vocab: list[str]):
    """The generation config transformers' Whisper `generate` reads (language / task / timestamp handling), with
    the special-token ids of the model's WhisperConfig. An English-only Whisper (`*.en`: CTranslate2 lists no
    lang_ids) gets no `lang_to_id` or `task_to_id`, as the Hub's `openai/whisper-*.en` configs: given an empty
    `lang_to_id`, `generate` would "detect" a language among none and put token 0 in its prompt."""
    from transformers import GenerationConfig

    token_id = {token: i for i, token in enumerate(vocab)}
    lang_ids = list(ct2_config.get("lang_ids") or [])
    tables = dict(lang_to_id={vocab[i]: i for i in lang_ids},
                  task_to_id={task: token_id[token] for task, token in TASKS.items() if token in token_id}) \
        if lang_ids else {}
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, max_length=config.max_target_positions,
        suppress_tokens=config.suppress_tokens, begin_suppress_tokens=config.begin_suppress_tokens,
        is_multilingual=bool(lang_ids), **tables,
        no_timestamps_token_id=token_id.get(NO_TIMESTAMPS),
        prev_sot_token_id=token_id.get(SOT_PREV),
        max_initial_timestamp_index=WHISPER_MAX_INITIAL_TIMESTAMP_INDEX,
        alignment_heads=[list(map(int, head)) for head in ct2_config.get("alignment_heads") or []],
        forced_decoder_ids=None,
    )


def _whisper_processor(src: Path, dims: _WhisperDims, vocab: list[str], tokenizer_json: dict):
    """WhisperProcessor = feature extractor (n_mels bins) + the fast tokenizer from tokenizer.json (`tokenizer_json`,
    its contents), completed with the timestamp tokens of the CT2 vocabulary (ids past tokenizer.json's end, e.g.
    <|0.00|> .. <|30.00|>)."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    try:
        backend = Tokenizer.from_str(json.dumps(tokenizer_json))
    except Exception as e:  # noqa: BLE001  the tokenizers library raises a bare Exception
        raise LLMSRTError(f"{src / 'tokenizer.json'}: not a tokenizer ({(str(e).splitlines() or [''])[0][:160]}); "
                          "copy tokenizer.json again from the original Whisper model folder") from None
    extra = vocab[backend.get_vocab_size():]
    if extra:
        backend.add_tokens([AddedToken(token, special=False, normalized=False) for token in extra])
    specials = [t["content"] for t in tokenizer_json.get("added_tokens", []) if t.get("special")]
    tokenizer = WhisperTokenizer(tokenizer_object=backend, additional_special_tokens=specials,
                                 model_max_length=dims.n_text_ctx)
    preprocessor = src / "preprocessor_config.json"
    if preprocessor.is_file():
        extractor = WhisperFeatureExtractor.from_pretrained(str(src))
    else:
        extractor = WhisperFeatureExtractor(feature_size=dims.n_mels)
    if extractor.feature_size != dims.n_mels:
        raise LLMSRTError(f"{preprocessor}: feature_size {extractor.feature_size} but the encoder takes "
                          f"{dims.n_mels} mel bins; fix or remove preprocessor_config.json")
    return WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)


# ================================================================================================ output folder =====
def check_output_dir(dst_dir: str | Path, *sources: str | Path) -> None:
    """Refuse `dst_dir` as a conversion's output before anything is read or written: the conversion replaces it
    whole, so it must not be nor hold one of `sources` (the converter's inputs), and, if it exists, hold only files
    a conversion writes (OUTPUT_FILES: a previous output, converted again). An absent or empty folder is fine, but
    not the current folder (`.`: the shell would be left in a folder removed under it), nor a path below a file (it
    failed only when the model was written, at the end). A link is followed: its target is the folder replaced."""
    dst = Path(dst_dir)
    target = dst.resolve()
    if holds_cwd(target):
        raise LLMSRTError(f"{dst}: is or holds the current folder, and a conversion replaces its output folder whole "
                          f"(the shell would be left in a removed folder); give a new folder's name, e.g. "
                          f"{os.path.join(dst, 'converted')}")
    for source in sources:
        if str(source) == EMBEDDED:  # the embedded default's name (convert slam --encoder embedded), not a path
            continue
        resolved = Path(source).resolve()
        if resolved == target or target in resolved.parents:
            raise LLMSRTError(f"{dst}: the output folder is or holds the input {source}, and a conversion replaces "
                              f"its output folder whole; choose another output folder")
    if not dst.exists():
        check_folder(dst, "choose another output folder")  # a broken link, or a path below a file
        return
    if not dst.is_dir():
        raise LLMSRTError(f"{dst}: exists and is not a folder; choose another output folder")
    foreign = sorted(p.name for p in dst.iterdir()
                     if not (p.is_file() and (p.name in OUTPUT_FILES or OUTPUT_SHARD.fullmatch(p.name)
                                              or p.name in OS_CLUTTER or _leftover_of_ours(p.name))))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise LLMSRTError(f"{dst}: the output folder holds files a conversion does not write ({shown}), and a "
                          f"conversion replaces it whole; choose another output folder, or empty or remove this one")


def _leftover_of_ours(name: str) -> bool:
    """Whether `name` is the temporary file of a killed atomic write of a file a conversion or setup writes (the
    setup stamp's: a setup killed while writing it left one, and every later setup was refused)."""
    m = OUTPUT_LEFTOVER.fullmatch(name)
    return bool(m) and (m.group(1) in OUTPUT_FILES or bool(OUTPUT_SHARD.fullmatch(m.group(1))))


# ======================================================================================================== CLI =====
def _run_whisper(args) -> Path:
    return convert_whisper_ct2(args.src, args.dst, dtype=args.dtype)


def _run_gguf(args) -> Path:
    from .gguf_llm import convert_gguf  # (it imports this module)

    return convert_gguf(args.src, args.dst, dtype=args.dtype)


def _run_slam(args) -> Path:
    from .slam import convert_slam  # another module; imported only when used

    alpha = {} if args.lora_alpha is None else {"lora_alpha": args.lora_alpha}
    tags = {} if args.zho_tag == "zho" else {"zho": args.zho_tag}  # <|zho|> is our own tag: nothing to record
    with folder_write_errors(args.dst, "the converted model", "choose another output folder"):  # (SpeechLLM's save)
        return convert_slam(args.ckpt, args.dst, encoder_dir=args.encoder, llm_dir=args.llm,
                            num_heads=args.num_heads, language_tags=tags, **alpha)


def remove_leftovers(dst: Path) -> None:
    """Remove the folders a conversion into `dst` that was killed (SIGKILL, the OOM killer, a power loss: no
    clean-up runs) left beside it, `DST.tmp-<pid>` and `DST.old-<pid>`, a model's size each, and say so. Only those
    of a process that no longer runs (`atomic_dir_leftovers`). The CLI's alone: `llm-srt setup` judges the cache's
    own (embedded._remove_leftovers: a cache shared between hosts)."""
    found = [p for p in atomic_dir_leftovers(dst) if p.is_dir() and not p.is_symlink()]
    if found:
        size = disk_size(found)
        for p in found:
            shutil.rmtree(p, ignore_errors=True)
        print(f"removed {len(found)} folder{'s' * (len(found) != 1)} ({size}) that a killed conversion into {dst} "
              f"left: {', '.join(p.name for p in found)}")


# sub-verb -> (runner, help)
SUBVERBS = {
    "whisper-ct2": (_run_whisper, "CTranslate2 / faster-whisper Whisper folder -> transformers Whisper folder"),
    "gguf": (_run_gguf, "GGUF causal LM file -> transformers safetensors folder"),
    "slam": (_run_slam, "SLAM-LLM / LLM-SRT model.pt checkpoint -> our speech-LLM folder"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    p = sub.add_parser("whisper-ct2", help=SUBVERBS["whisper-ct2"][1])
    p.add_argument("src", type=Path, help="CTranslate2 folder (model.bin, config.json, tokenizer.json, vocabulary)")
    p.add_argument("dst", type=Path, help="output folder (replaced atomically)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="weight dtype to save (default float32)")
    p = sub.add_parser("gguf", help=SUBVERBS["gguf"][1])
    p.add_argument("src", type=Path, help="the .gguf file")
    p.add_argument("dst", type=Path, help="output folder (replaced atomically)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="dtype of the dequantized weights (default float32)")
    p = sub.add_parser("slam", help=SUBVERBS["slam"][1])
    p.add_argument("ckpt", type=Path, help="the SLAM-LLM / LLM-SRT model.pt (projector / adapter weights)")
    p.add_argument("dst", type=Path, help="output folder (replaced atomically)")
    p.add_argument("--encoder", type=Path, required=True, help="transformers Whisper folder the model was trained on")
    p.add_argument("--llm", type=Path, required=True, help="transformers causal-LM folder the model was trained on")
    # everything else is read from the tensors; these two are not stored in them
    p.add_argument("--num-heads", type=int, default=None, help="Q-Former attention heads (default: hidden / 64)")
    p.add_argument("--lora-alpha", type=int, default=None,
                   help="LoRA alpha the checkpoint was trained with (default 32, the paper's; for a LoRA read "
                        "from a peft adapter beside a model.pt that holds none, its adapter_config.json's lora_alpha)")
    p.add_argument("--zho-tag", choices=("cmn", "zho"), default="cmn",
                   help="the tag the checkpoint was trained with for Mandarin (default cmn, the reference's current "
                        "data; zho for a model trained on its earlier data, whose prompts read <|eng|><|zho|>)")


def main(args: argparse.Namespace) -> int:
    import time

    start = time.perf_counter()
    remove_leftovers(args.dst)
    out = SUBVERBS[args.kind][0](args)
    print(f"converted {args.kind} in {time.perf_counter() - start:.1f} s -> {out}")
    return 0
