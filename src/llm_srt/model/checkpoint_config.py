"""What a model folder's config.json holds (`SpeechLLMConfig`; `SpeechLLM.save_pretrained` writes it), read and
checked before anything loads: a folder that is not there or not a model folder, a damaged file, a key missing or of
another type is one line naming the file and what to do."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import get_args, get_origin, get_type_hints

from ..errors import LLMSRTError
from ..paths import FINAL, STEP_FOLDER, cwd_note
from ..prompts import PROMPT_FORMAT_VERSION
from .folders import CONFIG_FILE
from .llm import LoraOptions

CHECKPOINT_FORMAT = 1  # version of a model folder's layout (config.json, adapter.safetensors, ...: speech_llm.py)


@dataclass(frozen=True)
class SpeechLLMConfig:
    """What a SpeechLLM is made of; saved as config.json in every checkpoint."""

    encoder: str  # HF Whisper folder (only its encoder is used)
    llm: str  # HF causal-LM folder
    adapter: str = "qformer"  # adapter kind: a key of adapter.ADAPTERS
    adapter_kwargs: dict = field(default_factory=dict)  # adapter options (its encoder/LLM dims are inferred)
    lora: LoraOptions | None = None  # LoRA on the LLM, or None
    trainable: tuple[str, ...] = ("adapter",)  # parameter groups to train: keys of TRAINABLE
    prompt_format: int = PROMPT_FORMAT_VERSION  # llm_srt.prompts format the model is trained with
    dtype: str = "float32"  # frozen weights: float32, bfloat16, float16 or int8 (CPU inference: every linear layer
    #                         of encoder, adapter and LLM int8; convolutions, norms and embeddings float32)
    pad_to_30s: bool = False  # run Whisper on 30 s padded input (SLAM-LLM / reference checkpoints)
    ctc_head: bool = False  # a CTCHead for the auxiliary CTC loss (model/ctc.py); trained with the adapter
    bos_after_speech: bool = False  # [speech][BOS prompt] instead of [BOS][speech][prompt]: the reference's layout
    #                                 (its tokenizer.encode(prompt) behind the speech); no effect without a BOS
    language_tags: dict[str, str] = field(default_factory=dict)  # ISO 639-3 code -> the code of its tag in this
    #                                 model's prompts and outputs, where it was trained with another (reference
    #                                 checkpoints: {"zho": "cmn"}); applied by prompts.tag. Empty: our codes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora"] = self.lora.to_dict() if self.lora else None
        d["trainable"] = list(self.trainable)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SpeechLLMConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["lora"] = LoraOptions.from_dict(known.get("lora"))
        known["trainable"] = tuple(known.get("trainable", ("adapter",)))
        return cls(**known)


SAVED_TYPES = {"format": int, "encoder_dim": int, "llm_dim": int}  # what save_pretrained writes beside the fields
TAKEN_TYPES = {"lora.alpha": float}  # a field that config.json may give as another type than its own: any number


def _checked(hint) -> tuple:
    """A config field's type -> (the JSON value's type, its items' type or None, said as), CONFIG_TYPES' form."""
    simple = {bool: (bool, None, "true or false"), int: (int, None, "an integer"),
              float: ((int, float), None, "a number"), str: (str, None, "a string"), dict: (dict, None, "a mapping")}
    if hint in simple:
        return simple[hint]
    if get_origin(hint) is tuple and get_args(hint) == (str, ...):
        return list, str, "a list of strings"
    if get_origin(hint) is dict and get_args(hint) == (str, str):
        return dict, str, "a mapping of strings"
    raise TypeError(f"read_config cannot check a config field of type {hint}: add it to checkpoint_config._checked")


CONFIG_TYPES = {  # config.json key (LoRA's as lora.key) -> (its type, its items' type or None, said as); bool no int
    key: _checked(TAKEN_TYPES.get(key, hint))
    for prefix, hints in (("", {**get_type_hints(SpeechLLMConfig), **SAVED_TYPES}),
                          ("lora.", get_type_hints(LoraOptions)))
    for name, hint in hints.items() if (key := prefix + name) != "lora"}  # (lora: a mapping or null, checked apart)

REQUIRED = ("encoder", "llm", "adapter")  # config.json keys every model folder has
CT2_WHISPER_KEYS = ("lang_ids", "suppress_ids", "alignment_heads")  # a CTranslate2 Whisper's config.json keys


def foreign_folder(directory: Path, meta: dict) -> str | None:
    """What `directory`, whose config.json `meta` has none of a model folder's keys, is instead, and what to do with
    it: a transformers Whisper folder, a CTranslate2 (faster-whisper) one, a Hugging Face LLM's; None: none of them.
    Each was "missing key 'encoder'; the checkpoint config is incomplete", though nothing was missing from it."""
    kind = meta.get("model_type")
    architectures = meta.get("architectures") if isinstance(meta.get("architectures"), list) else []
    if kind == "whisper" or any(str(a).startswith("Whisper") for a in architectures):
        return ("a transformers Whisper folder (config.json's model_type whisper), not a SpeechLLM checkpoint; run "
                f"the Whisper baseline with `--model whisper --whisper {directory}`, or train a speech LLM on it "
                "(model.encoder in a training config)")
    if kind is None and (directory / "model.bin").is_file():
        if any(key in meta for key in CT2_WHISPER_KEYS):
            return ("a CTranslate2 (faster-whisper) Whisper folder, not a SpeechLLM checkpoint; run `llm-srt convert "
                    f"whisper-ct2 {directory} OUT`, then `--model whisper --whisper OUT`")
        return ("a CTranslate2 model folder (model.bin), not a SpeechLLM checkpoint; give a folder written by "
                "training or by `llm-srt convert`")
    if isinstance(kind, str) or architectures:
        what = kind if isinstance(kind, str) else architectures[0]
        return (f"a Hugging Face {what} model folder (an LLM's), not a SpeechLLM checkpoint; translate with it as the "
                f"cascade's LLM, `--model cascade --llm {directory}`, or train a speech LLM on it (model.llm in a "
                "training config)")
    return None


def meant_in_run(directory: Path) -> str | None:
    """Where `directory`, with no config.json, is a training run's folder (or its checkpoints/): "did you mean" the
    model folder it holds, its final/, else its newest checkpoint; None where it holds neither."""
    if (directory / FINAL / CONFIG_FILE).is_file():
        return f"a training run's folder: did you mean {directory / FINAL}?"
    steps = [(int(m.group(1)), folder) for root in (directory / "checkpoints", directory)
             for folder in (root.iterdir() if root.is_dir() else ())
             if (m := STEP_FOLDER.fullmatch(folder.name)) and (folder / CONFIG_FILE).is_file()]
    if steps:
        return (f"a training run's checkpoints, and no final/ (the run has not finished): did you mean its newest, "
                f"{max(steps)[1]}?")
    return None


def read_config(directory: Path) -> dict:
    """A model folder's config.json, checked (a one-line LLMSRTError if missing or damaged)."""
    file = directory / CONFIG_FILE
    if not directory.exists():  # a mistyped path, or a relative one from another folder: said as such
        raise LLMSRTError(f"{directory}: no such folder{cwd_note(directory)}; give a model folder written by "
                          "training or by `llm-srt convert`")
    if not directory.is_dir():
        raise LLMSRTError(f"{directory}: a file, not a model folder; give the folder that holds {CONFIG_FILE} and the "
                          "weights")
    if not file.is_file():
        raise LLMSRTError(f"{directory}: not a SpeechLLM checkpoint (no {CONFIG_FILE}); "
                          + (meant_in_run(directory) or "give a folder written by training or by `llm-srt convert`"))
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LLMSRTError(f"{file}: invalid JSON (line {e.lineno}): {e.msg}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise LLMSRTError(f"{file}: not a JSON config ({type(e).__name__}); the checkpoint is damaged") from None
    if not isinstance(meta, dict):
        raise LLMSRTError(f"{file}: expected a JSON object, got {type(meta).__name__}; the checkpoint is damaged")
    if not any(key in meta for key in REQUIRED) and (other := foreign_folder(directory, meta)):
        raise LLMSRTError(f"{directory}: {other}")
    for key in REQUIRED:
        if key not in meta:
            raise LLMSRTError(f"{file}: missing key {key!r}; the checkpoint config is incomplete")
    lora = meta.get("lora")
    if lora is not None and not isinstance(lora, dict):
        raise LLMSRTError(f"{file}: 'lora' must be a mapping or null, got {lora!r:.40}; the checkpoint is damaged")
    if unknown := sorted(set(lora or ()) - set(LoraOptions.__dataclass_fields__)):
        raise LLMSRTError(f"{file}: unknown lora option {unknown[0]!r} (this llm-srt knows "
                          f"{', '.join(LoraOptions.__dataclass_fields__)}); written by another version, or edited")
    for where, values in (("", meta), ("lora.", lora or {})):  # another type was a TypeError traceback ("lora":
        for key, value in values.items():  # {"r": "8"}, "llm": 5) or a riddle ("trainable": "adapter": 'a', 'd', ...)
            kind, items, said = CONFIG_TYPES.get(where + key, (object, None, ""))
            inner = (value.values() if isinstance(value, dict) else value) if items else ()
            if not isinstance(value, kind) or isinstance(value, bool) and kind not in (bool, object) or not all(
                    isinstance(v, items) for v in inner):
                raise LLMSRTError(f"{file}: {where + key!r} must be {said}, got {value!r:.40}; "
                                  "the checkpoint is damaged or was edited")
    if meta.get("format", CHECKPOINT_FORMAT) > CHECKPOINT_FORMAT:
        raise LLMSRTError(f"{file}: checkpoint format {meta['format']} is newer than this llm-srt "
                          f"({CHECKPOINT_FORMAT}); upgrade llm-srt")
    return meta
