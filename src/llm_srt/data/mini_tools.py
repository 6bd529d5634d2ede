"""The programs the mini corpus (data/mini.py) runs besides its Python: espeak-ng, which reads every sentence, and
mecab, which gives espeak-ng's Japanese voice kana to read; each checked before a build touches OUT."""

import shutil
import subprocess

from .. import languages
from ..errors import LLMSRTError


def kana(texts: list[str]) -> list[str]:
    """Japanese text -> katakana readings (mecab -Oyomi), which espeak-ng's Japanese voice reads."""
    if not texts:
        return []
    proc = subprocess.run(["mecab", "-Oyomi"], input="\n".join(texts) + "\n", capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or len(lines) != len(texts):
        raise LLMSRTError(f"mecab -Oyomi failed ({proc.stderr.strip()[:80] or 'line count mismatch'}); "
                          "install mecab and a dictionary (make setup), or leave jpn out of --langs")
    return lines


def require_tools(langs: list[str]) -> None:
    """espeak-ng, and mecab where Japanese is read, installed (checked before an earlier build's manifests go)."""
    tools = ["espeak-ng"] + (["mecab"] if "jpn" in langs else [])
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise LLMSRTError(f"{', '.join(missing)} not installed; the mini corpus needs them (make setup installs "
                          "them)")


def require_espeak_voices(langs: list[str]) -> None:
    """Each language's espeak-ng voice tried once (one letter read): an espeak-ng without it failed every utterance,
    after the earlier build's manifests were removed, and the build ended in "only 0 sentences could be read"."""
    for lang in langs:
        voice = languages.get(lang).espeak
        proc = subprocess.run(["espeak-ng", "-v", voice, "--stdout", "a"], capture_output=True)
        if proc.returncode != 0 or not proc.stdout:
            why = proc.stderr.decode(errors="replace").strip().removeprefix("Error: ") or f"exit {proc.returncode}"
            raise LLMSRTError(f"{lang}: this espeak-ng has no voice {voice!r} to read it ({why}); install espeak-ng "
                              f"with its data (make setup), or leave {lang} out of --langs")
