"""Where the toolkit keeps converted models and caches."""

import os
from pathlib import Path

CACHE_ENV = "LLM_SRT_CACHE"  # overrides the cache folder


def cache_dir() -> Path:
    """The cache folder: $LLM_SRT_CACHE, else ~/.cache/llm-srt."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "llm-srt"


def embedded_whisper_dir() -> Path:
    return cache_dir() / "models" / "whisper-base"


def embedded_llm_dir() -> Path:
    return cache_dir() / "models" / "gemma-3-270m"


EMBEDDED = "embedded"  # the model name that stands for the converted embedded default in configs and checkpoints


def resolve_model(value: str, kind: str) -> str:
    """A model folder from a config value: "embedded" -> the converted embedded model of `kind` (encoder | llm)."""
    if value != EMBEDDED:
        return value
    folder = embedded_whisper_dir() if kind == "encoder" else embedded_llm_dir()
    if not folder.is_dir():
        from .errors import LLMSRTError

        raise LLMSRTError(f"the embedded {kind} is not converted yet ({folder}); run `llm-srt setup` first")
    return str(folder)
