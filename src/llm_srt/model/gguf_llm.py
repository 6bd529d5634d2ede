"""`llm-srt convert gguf` (model/convert.py's CLI): a GGUF causal LM file -> a transformers safetensors folder, through
transformers' own GGUF loading, every weight checked to come from the file."""

from __future__ import annotations

import contextlib
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import LLMSRTError
from .convert import check_output_dir, output_dir

GGUF_MAGIC = b"GGUF"
GGUF_SPLIT_COUNT, GGUF_SPLIT_NO = "split.count", "split.no"  # llama-gguf-split's metadata on each part


def convert_gguf(src_gguf: str | Path, dst_dir: str | Path, dtype: str = "float32") -> Path:
    """Convert a GGUF causal LM that transformers can read (llama, qwen2, gemma3, ...) into a safetensors folder
    with config.json, generation_config.json and the tokenizer. Quantized tensors are dequantized to `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .llm import resolve_dtype

    src = Path(src_gguf)
    _check_gguf(src)
    check_output_dir(dst_dir, src)
    torch_dtype = resolve_dtype(dtype)
    try:
        with gguf_parsed_once(), _alone(src) as alone:
            _check_gguf_whole(src)
            # transformers fills a weight missing from the file, or (told to ignore sizes) of another shape, with
            # random values and only logs it: the loading info names them, and such a file is refused here.
            loaded, info = AutoModelForCausalLM.from_pretrained(str(alone.parent), gguf_file=alone.name,
                                                                dtype=torch_dtype, output_loading_info=True,
                                                                ignore_mismatched_sizes=True)
            _check_gguf_loaded(src, info)
            tokenizer = AutoTokenizer.from_pretrained(str(alone.parent), gguf_file=alone.name)
    except (ValueError, KeyError, IndexError, NotImplementedError, struct.error) as e:  # a bad file (not memory)
        reason = (str(e).splitlines() or [""])[0][:160]
        raise LLMSRTError(f"{src}: transformers cannot read this GGUF model ({type(e).__name__}: {reason}); "
                          f"is it truncated, or an architecture transformers does not support?") from None
    # A GGUF-loaded model keeps a quantization_config and refuses save_pretrained: rebuild a plain one.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    del loaded
    if not tokenizer.add_bos_token:  # Qwen2's GGUF names a bos_token it never adds (its HF folder has none); kept,
        tokenizer.bos_token = None  # SpeechLLM.assemble would put it before the speech, where the model never saw it
    with output_dir(dst_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(dst_dir)


@contextlib.contextmanager
def _alone(src: Path) -> Iterator[Path]:
    """The GGUF file alone in a fresh temporary folder (a link to it, or a copy where no link can be made), for
    transformers to load from: given the file's own folder, it also read the tokenizer.json, tokenizer_config.json,
    generation_config.json ... lying beside it (another model's added 9 tokens with ids past the embedding: an
    IndexError on the CPU, a device-side assert on CUDA). The folder is removed when the block ends."""
    with tempfile.TemporaryDirectory(prefix="llm-srt-gguf-") as folder:
        alone = Path(folder) / src.name
        try:
            alone.symlink_to(src.resolve())
        except OSError:  # no links here (a file system or an OS without them)
            try:
                shutil.copyfile(src, alone)
            except OSError as e:
                raise LLMSRTError(f"{src}: cannot copy it into {folder} to read it alone ({e.strerror or e}); free "
                                  "space there, or point TMPDIR at a folder with room for it") from None
        yield alone


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Within this block, each GGUF file is parsed once however often it is opened. transformers opens the file
    three times for one model (the config, the weights, and once more for the tokenizer's config), and gguf's reader
    parses all the metadata each time in Python: ~17 s a parse for Gemma-3-270M's 262k-token vocabulary on a 2-core
    CPU, 50 s of a 57 s `llm-srt setup`. The reader is read-only (memory-mapped; transformers copies what it
    dequantizes), so one serves all. The stand-in is a subclass (isinstance checks on the reader still hold); the
    original class is back when the block ends, however it ends.

    The reader also reads through a plain ndarray view of its np.memmap (the same mapping, no copy): each of the
    parse's ~13M slices and views of a memmap runs np.memmap's Python-level __getitem__ and __array_finalize__, which
    took 32 s of a 34 s parse on a 2-core AMD EPYC (2026-12-04)."""
    import gguf
    import numpy as np

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    class SharedReader(original):
        def __new__(cls, path, mode: str = "r"):
            key = (str(Path(path).resolve()), mode)
            if key not in readers:
                readers[key] = super().__new__(cls)
                original.__init__(readers[key], path, mode)
            return readers[key]

        def __init__(self, path, mode: str = "r"):  # parsed once, in __new__
            pass

        @property
        def data(self):
            return self._plain

        @data.setter
        def data(self, mapped) -> None:  # gguf's __init__ sets its np.memmap here; the view keeps the mapping alive
            self._plain = mapped.view(np.ndarray)

    gguf.GGUFReader = SharedReader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def magic(path: Path) -> bytes:
    """A file's first bytes, as many as GGUF's magic (a GGUF file begins with it)."""
    with open(path, "rb") as f:
        return f.read(len(GGUF_MAGIC))


def _check_gguf(src: Path) -> None:
    if not src.is_file():
        raise LLMSRTError(f"{src}: no such GGUF file")
    if (magic_bytes := magic(src)) != GGUF_MAGIC:
        raise LLMSRTError(f"{src}: not a GGUF file (starts with {magic_bytes!r}, expected {GGUF_MAGIC!r})")


def _check_gguf_whole(src: Path) -> None:
    """Refuse one part of a model that llama-gguf-split cut into several files: transformers reads the first part
    as a whole model and fills the layers of the others with random weights."""
    import gguf

    fields = gguf.GGUFReader(src).fields  # parsed once with transformers' own reads (gguf_parsed_once)
    count = fields[GGUF_SPLIT_COUNT].contents() if GGUF_SPLIT_COUNT in fields else 1
    if count > 1:
        part = fields[GGUF_SPLIT_NO].contents() + 1 if GGUF_SPLIT_NO in fields else "?"
        raise LLMSRTError(f"{src}: part {part} of a model split into {count} GGUF files; merge the parts first "
                          f"(llama-gguf-split --merge <first part> merged.gguf) and convert the merged file")


def _check_gguf_loaded(src: Path, info: dict) -> None:
    """Every weight of the model came from the file, in its shape (a tied output projection is not missing:
    transformers leaves it out of `missing_keys`)."""
    missing, mismatched = sorted(info["missing_keys"]), sorted(info["mismatched_keys"])
    if missing:
        raise LLMSRTError(f"{src}: {_weights(len(missing))} of the model not in the file ({', '.join(missing[:3])}"
                          f"{', ...' if len(missing) > 3 else ''}); is it truncated, or one part of a split model "
                          f"(merge the parts first: llama-gguf-split --merge)?")
    if mismatched:
        name, stored, wanted = mismatched[0]
        raise LLMSRTError(f"{src}: {_weights(len(mismatched))} in a shape the model's metadata does not give (e.g. "
                          f"{name}: {tuple(stored)} in the file, {tuple(wanted)} expected); is the file corrupt?")


def _weights(n: int) -> str:
    return f"{n} weight" + "s" * (n != 1)
