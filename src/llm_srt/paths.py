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
