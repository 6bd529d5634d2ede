"""Tiny random-weight models for tests: a Whisper encoder, a char-level tokenizer with language tags, a causal LM.

Every builder writes a real Hugging Face folder so tests exercise the same loading code as real models.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration)

from llm_srt import languages

SAMPLE_RATE = 16000
LANG_TAGS = tuple(f"<|{code}|>" for code in ("eng", "deu", "fra", "spa", "zho", "jpn"))
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
CHARS = string.ascii_letters + string.digits + " .,?!'-"


def whisper_dir(root: Path, d_model: int = 32, layers: int = 2, n_mels: int = 80, seed: int = 0) -> Path:
    """A tiny random WhisperForConditionalGeneration folder (d_model 32, 2+1 layers, 1500 positions)."""
    torch.manual_seed(seed)
    cfg = WhisperConfig(d_model=d_model, encoder_layers=layers, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
                        num_mel_bins=n_mels, vocab_size=64, max_source_positions=1500, max_target_positions=32,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    path = root / f"whisper-{d_model}-{layers}-{seed}"
    WhisperForConditionalGeneration(cfg).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=n_mels).save_pretrained(path)
    return path


def whisper_lid_dir(root: Path, seed: int = 0) -> Path:
    """A tiny random Whisper encoder-decoder with a char tokenizer holding Whisper's special tokens (one language
    token per registry language) and the generation config `generate(language=, task=)` reads."""
    torch.manual_seed(seed)
    lang_tokens = sorted({f"<|{lang.whisper}|>" for lang in languages.LANGUAGES.values()})
    specials = ["<|endoftext|>", "<|startoftranscript|>", *lang_tokens, "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    vocab = {c: i for i, c in enumerate(["<unk>", *CHARS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    cfg = WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                        vocab_size=len(tok), max_source_positions=1500, max_target_positions=64,
                        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
                        eos_token_id=ids["<|endoftext|>"], decoder_start_token_id=ids["<|startoftranscript|>"],
                        init_std=0.5)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=cfg.decoder_start_token_id, bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, max_length=64, is_multilingual=True,
        lang_to_id={t: ids[t] for t in lang_tokens},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        forced_decoder_ids=None, begin_suppress_tokens=None,
        suppress_tokens=[ids[t] for t in specials[1:]])  # a random decoder writes characters, not special tokens
    path = root / f"whisper-lid-{seed}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


def tokenizer(bos: bool = True) -> PreTrainedTokenizerFast:
    """A char-level tokenizer: one token per character, language tags as whole added tokens."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + tuple(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>" if bos else None)
    fast.add_tokens(list(LANG_TAGS))
    return fast


def llm_dir(root: Path, kind: str = "qwen2", hidden: int = 48, layers: int = 2, bos: bool = True,
            seed: int = 0, init_std: float = 0.02, tied: bool = False) -> Path:
    """A tiny random causal LM folder with the char tokenizer ("qwen2" or "llama").

    A larger `init_std` gives a random LLM whose outputs depend strongly on its input (the overfit test uses it).
    """
    torch.manual_seed(seed)
    tok = tokenizer(bos=bos)
    common = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=tied,
                  initializer_range=init_std)
    model = (Qwen2ForCausalLM(Qwen2Config(**common)) if kind == "qwen2"
             else LlamaForCausalLM(LlamaConfig(bos_token_id=tok.bos_token_id, **common)))
    path = root / f"{kind}-{hidden}-{layers}-{seed}-{init_std}-{'bos' if bos else 'nobos'}{'-tied' if tied else ''}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tone(seconds: float, freq: float, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """A test clip: a sine at `freq` Hz plus a little noise, 16 kHz float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.4 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)).astype(np.float32)


def speech_llm(root: Path, adapter: str = "qformer", adapter_kwargs: dict | None = None, lora=None,
               trainable=("adapter",), kind: str = "qwen2", bos: bool = True, llm_hidden: int = 48,
               init_std: float = 0.02, ctc_head: bool = False):
    """A tiny SpeechLLM on tiny random Whisper + LLM folders written under `root`."""
    from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig

    if adapter_kwargs is None:
        adapter_kwargs = ({"num_queries": 8, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
                           "intermediate_size": 64} if adapter == "qformer" else {})
    llm = llm_dir(root, kind, llm_hidden, bos=bos, init_std=init_std)
    cfg = SpeechLLMConfig(encoder=str(whisper_dir(root)), llm=str(llm),
                          adapter=adapter, adapter_kwargs=adapter_kwargs, lora=lora, trainable=tuple(trainable),
                          ctc_head=ctc_head)
    return SpeechLLM(cfg)


assert all(languages.get(t[2:-2]) for t in LANG_TAGS)


def speech_llm_folder(root: Path, **kwargs) -> Path:
    """A saved tiny SpeechLLM (seeded; `kwargs` as speech_llm's) whose outputs depend on its input."""
    torch.manual_seed(0)
    return speech_llm(root, **{"init_std": 0.3, **kwargs}).save_pretrained(root / "model")


class CallSpy:
    """Wraps a callable (a feature extractor): records each call's keyword arguments, then delegates; other
    attributes pass through."""

    def __init__(self, wrapped):
        self.wrapped, self.calls = wrapped, []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.wrapped(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.wrapped, name)


class StopAt(CallSpy):
    """Wraps a callable: call number `n` raises KeyboardInterrupt (a kill there), the others delegate; `calls` has
    one entry per call."""

    def __init__(self, wrapped, n: int):
        super().__init__(wrapped)
        self.n = n

    def __call__(self, *args, **kwargs):
        if len(self.calls) + 1 == self.n:
            self.calls.append(kwargs)
            raise KeyboardInterrupt
        return super().__call__(*args, **kwargs)


def moved_folder(model_dir: Path, root: Path) -> tuple[Path, dict[str, Path], dict]:
    """A copy of the model folder `model_dir` at root/model, and copies of the encoder and LLM folders its
    config.json names at root/moved-encoder and root/moved-llm (where they are "now", on another machine): (the
    copy, {"encoder": ..., "llm": ...}, its config). The caller points the copy's config.json where it likes."""
    import json
    import shutil

    config = json.loads((model_dir / "config.json").read_text())
    moved = {key: root / f"moved-{key}" for key in ("encoder", "llm")}
    for key, dst in moved.items():
        shutil.copytree(config[key], dst)
    shutil.copytree(model_dir, root / "model")
    return root / "model", moved, config


def trained_folder(model_dir: Path, root: Path, tasks: dict | None) -> Path:
    """A copy of the model folder `model_dir` (its files linked) with a train_config.json of data.tasks `tasks`
    (None: none, as a reference model imported by `llm-srt convert`): what `--task auto` reads."""
    import json

    root.mkdir(parents=True)
    for f in model_dir.iterdir():
        (root / f.name).symlink_to(f)
    if tasks is not None:
        (root / "train_config.json").write_text(json.dumps({"stage": "x", "data": {"tasks": tasks}}))
    return root


def mapped_kib(path: Path) -> int:
    """This process's resident KiB of its mappings of the file `path` (/proc/self/smaps)."""
    total, current = 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's header line
            current = head[5] if len(head) == 6 else None
        elif line.startswith("Rss:") and current == str(Path(path).resolve()):
            total += int(line.split()[1])
    return total
