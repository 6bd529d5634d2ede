"""Paper-shaped models from configs alone: Whisper-large-v3's encoder and Qwen2.5-3B / 7B / 32B, random weights.

A preset writes model folders that hold what a real download holds except the weights: config.json, a small
byte-level BPE tokenizer (trained here on a few sentences, every `<|xxx|>` language tag an added token) for the LLM,
and preprocessor_config.json for Whisper. `SpeechLLM(config, device, weights=False)` then builds the random model
straight on its device, so speed and memory can be measured at the paper's shapes with no download.

    folders = presets.write_folders("qwen2.5-7b", root)
    model = SpeechLLM(SpeechLLMConfig(encoder=str(folders.encoder), llm=str(folders.llm)), device, weights=False)

The numbers are the public config.json files' (Hugging Face: openai/whisper-large-v3, Qwen/Qwen2.5-3B, -7B, -32B).
The LLM's embedding matrix keeps the real vocabulary size (151,936 / 152,064 rows), so memory and the output head
cost what they cost in the real model, while the tokenizer knows only a few hundred of those ids. "tiny" is the same
path at a size the CPU tests run in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, WhisperConfig, WhisperFeatureExtractor

from .. import languages
from ..errors import LLMSRTError

EOS_TOKEN = "<|endoftext|>"  # Qwen2.5 base: end of text, also its padding token; no BOS
SPECIAL_TOKENS = (EOS_TOKEN, "<|im_start|>", "<|im_end|>")
TOKENIZER_VOCAB = 600  # BPE merges stop here (the sentences below cannot fill much more)
TOKENIZER_SENTENCES = (  # what the small BPE is trained on: a few sentences per language family
    "Will it rain tomorrow? The connection to the server was lost.",
    "Please enter your password again. Do you want to save the changes before closing?",
    "Regnet es morgen? Die Verbindung zum Server wurde getrennt. Bitte geben Sie Ihr Passwort erneut ein.",
    "Va-t-il pleuvoir demain ? La connexion au serveur a été perdue.",
    "¿Lloverá mañana? Se perdió la conexión con el servidor.",
    "Завтра будет дождь? Соединение с сервером потеряно.",
    "明天会下雨吗？与服务器的连接已断开。",
    "明日は雨が降りますか？サーバーへの接続が切れました。",
    "0123456789 .,;:!?'\"()[]{}-+*/=%&#@ \n",
)


@dataclass(frozen=True)
class WhisperShape:
    """The numbers of an HF WhisperConfig that fix the encoder's size (the decoder is never built)."""

    d_model: int
    layers: int  # encoder (and decoder) layers
    heads: int
    ffn: int
    mel_bins: int
    positions: int = 1500  # encoder output frames for 30 s
    vocab: int = 51866  # decoder vocabulary (large-v3)


@dataclass(frozen=True)
class LLMShape:
    """The numbers of a Qwen2 config.json."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int  # rows of the embedding matrix (and of the output head)
    tie_word_embeddings: bool
    rope_theta: float = 1_000_000.0
    max_positions: int = 32768
    rms_norm_eps: float = 1e-6


@dataclass(frozen=True)
class Preset:
    name: str
    encoder: WhisperShape
    llm: LLMShape
    parameters: str  # the size as the model card states it (for reports)


WHISPER_LARGE_V3 = WhisperShape(d_model=1280, layers=32, heads=20, ffn=5120, mel_bins=128)
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("qwen2.5-3b", WHISPER_LARGE_V3,
           LLMShape(hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008, vocab=151936,
                    tie_word_embeddings=True), "3.09B"),
    Preset("qwen2.5-7b", WHISPER_LARGE_V3,
           LLMShape(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064,
                    tie_word_embeddings=False, max_positions=131072), "7.61B"),
    Preset("qwen2.5-32b", WHISPER_LARGE_V3,
           LLMShape(hidden=5120, layers=64, heads=40, kv_heads=8, intermediate=27648, vocab=152064,
                    tie_word_embeddings=False, max_positions=131072, rms_norm_eps=1e-5), "32.8B"),
    # the same code path at test size: 1500 positions as every Whisper (80 mel bins as up to v2), 1k LLM rows
    Preset("tiny", WhisperShape(d_model=32, layers=2, heads=4, ffn=64, mel_bins=80),
           LLMShape(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1024,
                    tie_word_embeddings=False, max_positions=2048), "0.3M"),
)}


@dataclass(frozen=True)
class PresetFolders:
    encoder: Path  # Whisper folder (config.json, preprocessor_config.json)
    llm: Path  # causal-LM folder (config.json, tokenizer files)


def get(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise LLMSRTError(f"unknown model shape {name!r}; choose one of {', '.join(PRESETS)}") from None


def whisper_config(shape: WhisperShape) -> WhisperConfig:
    return WhisperConfig(d_model=shape.d_model, encoder_layers=shape.layers, decoder_layers=shape.layers,
                         encoder_attention_heads=shape.heads, decoder_attention_heads=shape.heads,
                         encoder_ffn_dim=shape.ffn, decoder_ffn_dim=shape.ffn, num_mel_bins=shape.mel_bins,
                         max_source_positions=shape.positions, max_target_positions=448, vocab_size=shape.vocab)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE (Qwen's kind) trained on TOKENIZER_SENTENCES; `<|xxx|>` for every language as added
    tokens, Qwen2.5's end-of-text as EOS and padding. Deterministic: the same files every time."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TOKENIZER_SENTENCES, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)
    fast.add_tokens([f"<|{code}|>" for code in languages.LANGUAGES])
    return fast


def llm_config(shape: LLMShape, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    if len(tokenizer) > shape.vocab:
        raise LLMSRTError(f"tokenizer has {len(tokenizer)} tokens but the LLM shape only {shape.vocab} rows")
    return Qwen2Config(hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                       num_key_value_heads=shape.kv_heads, intermediate_size=shape.intermediate,
                       vocab_size=shape.vocab, tie_word_embeddings=shape.tie_word_embeddings,
                       rope_theta=shape.rope_theta, max_position_embeddings=shape.max_positions,
                       rms_norm_eps=shape.rms_norm_eps, max_window_layers=shape.layers, use_sliding_window=False,
                       hidden_act="silu", eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=None, architectures=["Qwen2ForCausalLM"])


def write_folders(preset: str | Preset, root: str | Path, weights: bool = False) -> PresetFolders:
    """Write `root/<preset>/whisper` and `root/<preset>/llm`. `weights=True` also saves random weights (for small
    shapes: tests and the GPU check train from them); without, the folders hold configs and tokenizer only."""
    preset = get(preset) if isinstance(preset, str) else preset
    base = Path(root) / preset.name
    folders = PresetFolders(base / "whisper", base / "llm")
    wcfg = whisper_config(preset.encoder)
    tokenizer = build_tokenizer()
    lcfg = llm_config(preset.llm, tokenizer)
    if weights:
        from transformers import Qwen2ForCausalLM, WhisperForConditionalGeneration

        torch.manual_seed(0)
        WhisperForConditionalGeneration(wcfg).save_pretrained(folders.encoder)
        Qwen2ForCausalLM(lcfg).save_pretrained(folders.llm)
    else:
        wcfg.save_pretrained(folders.encoder)
        lcfg.save_pretrained(folders.llm)
    WhisperFeatureExtractor(feature_size=preset.encoder.mel_bins).save_pretrained(folders.encoder)
    tokenizer.save_pretrained(folders.llm)
    (base / "preset.json").write_text(json.dumps({"preset": preset.name, "weights": weights}) + "\n")
    return folders


def parameter_counts(preset: str | Preset) -> dict[str, int]:
    """Parameters of the Whisper encoder and of the LLM, counted on models built on the meta device (no memory)."""
    from transformers import Qwen2ForCausalLM
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

    preset = get(preset) if isinstance(preset, str) else preset
    with torch.device("meta"):
        encoder = HFWhisperEncoder(whisper_config(preset.encoder))
        llm = Qwen2ForCausalLM(llm_config(preset.llm, build_tokenizer()))
    return {"encoder": sum(p.numel() for p in encoder.parameters()),
            "llm": sum(p.numel() for p in llm.parameters())}
