"""`llm-srt convert gguf` (model/convert.py's CLI): a GGUF causal LM file -> a transformers safetensors folder, through
transformers' own GGUF loading, every weight checked to come from the file and every tensor of the file to be used."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

from ..errors import LLMSRTError
from ..paths import folder_write_errors, short_name
from .convert import check_output_dir, output_dir

GGUF_MAGIC = b"GGUF"
GGUF_SPLIT_COUNT, GGUF_SPLIT_NO = "split.count", "split.no"  # llama-gguf-split's metadata on each part
GGUF_ARCH = "general.architecture"


def convert_gguf(src_gguf: str | Path, dst_dir: str | Path, dtype: str = "float32") -> Path:
    """Convert a GGUF causal LM that transformers can read (llama, qwen2, gemma3, ...) into a safetensors folder
    with config.json, generation_config.json and the tokenizer. Quantized tensors are dequantized to `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.quantization_config import GgufConfig

    from .llm import resolve_dtype

    src = Path(src_gguf)
    _check_gguf(src)
    check_output_dir(dst_dir, src)
    torch_dtype = resolve_dtype(dtype)
    try:
        with gguf_parsed_once(), _alone(src, dst_dir) as alone, _tensors_used() as used:
            arch = _check_gguf_whole(src)
            # transformers fills a weight missing from the file, or (told to ignore sizes) of another shape, with
            # random values and only logs it: the loading info names them, and such a file is refused here. A
            # tensor of the file the model has no place for it skips: `used` names those (the newer loader's
            # architectures: its unexpected keys). Its weights are unpacked (dequantize): with the `kernels`
            # package it kept them in GGUF blocks, which a plain model has no place for.
            loaded, info = AutoModelForCausalLM.from_pretrained(str(alone.parent), gguf_file=alone.name,
                                                                dtype=torch_dtype, output_loading_info=True,
                                                                ignore_mismatched_sizes=True,
                                                                quantization_config=GgufConfig(dequantize=True))
            _check_gguf_loaded(src, info, None if _newer_loader(arch) else used, loaded.config.model_type)
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
def _alone(src: Path, dst_dir: str | Path) -> Iterator[Path]:
    """The GGUF file alone in a fresh folder (a link to it, or a copy where no link can be made), for transformers
    to load from: given the file's own folder, it also read the tokenizer.json, tokenizer_config.json,
    generation_config.json ... lying beside it (another model's added 9 tokens with ids past the embedding: an
    IndexError on the CPU, a device-side assert on CUDA). The folder is the output's own temporary one,
    `DST.tmp-<pid>` (the converted model is written into it afresh later, `atomic_dir`), removed when the block
    ends: one in the system's temporary folder (a copy a model's size) stayed there for good after a SIGKILL, where
    the leftover sweeps of `convert` and `setup` remove this one."""
    target = Path(os.path.realpath(dst_dir))  # (where `atomic_dir` writes: beside a link's target)
    folder = target.with_name(f"{short_name(target.name)}.tmp-{os.getpid()}")
    shutil.rmtree(folder, ignore_errors=True)
    with folder_write_errors(dst_dir, "the converted model", "choose another output folder"):
        folder.mkdir(parents=True)
    try:
        alone = folder / src.name
        try:
            alone.symlink_to(src.resolve())
        except OSError:  # no links here (a file system or an OS without them)
            try:
                shutil.copyfile(src, alone)
            except OSError as e:
                raise LLMSRTError(f"{src}: cannot copy it into {folder} to read it alone ({e.strerror or e}); free "
                                  "space there, or choose another output folder") from None
        yield alone
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _tensors_used() -> Iterator[dict[str, bool]]:
    """Within this block, which tensors of a GGUF file transformers' loading placed in the model: GGUF tensor name
    -> whether it did. It skips, logging at the info level only, one the model has no place for (q/k/v biases of a
    llama, a block past block_count, Llama-3.1's rope_freqs): the model converted "fine" and computed something else
    than the file. The record is its own rule (transformers 5.23, modeling_gguf_pytorch_utils.load_gguf_checkpoint):
    a tensor whose processed name its GGUF -> model name map holds is placed, one its processor takes itself (the
    experts of a MoE: name None) too, any other is skipped."""
    from transformers import modeling_gguf_pytorch_utils as loading

    original = loading.get_gguf_hf_weights_map
    used: dict[str, bool] = {}

    def weights_map(hf_model, processor, *args, **kwargs):
        mapping = original(hf_model, processor, *args, **kwargs)
        if args or kwargs:  # its own calls for the submodules, within the loading's one
            return mapping
        process = processor.process

        def recorded(weights, name, **details):
            result = process(weights, name, **details)
            used[name] = result.name is None or result.name in mapping
            return result

        processor.process = recorded
        return mapping

    loading.get_gguf_hf_weights_map = weights_map
    try:
        yield used
    finally:
        loading.get_gguf_hf_weights_map = original


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
    if src.is_dir():  # (a model folder given where its .gguf file belongs)
        held = sorted(f.name for f in src.iterdir() if f.suffix.lower() == ".gguf" and f.is_file())
        todo = (f"give the GGUF file it holds: {src / held[0]}" if len(held) == 1 else
                f"give one of its {len(held)} .gguf files" if held else "it holds no .gguf file; give a GGUF file")
        raise LLMSRTError(f"{src}: a folder, not a GGUF file; {todo}")
    if not src.is_file():
        raise LLMSRTError(f"{src}: no such GGUF file")
    if (magic_bytes := magic(src)) != GGUF_MAGIC:
        raise LLMSRTError(f"{src}: not a GGUF file (starts with {magic_bytes!r}, expected {GGUF_MAGIC!r})")


def _check_gguf_whole(src: Path) -> str:
    """Refuse one part of a model that llama-gguf-split cut into several files: transformers reads the first part
    as a whole model and fills the layers of the others with random weights. Returns the file's architecture."""
    import gguf

    fields = gguf.GGUFReader(src).fields  # parsed once with transformers' own reads (gguf_parsed_once)
    count = fields[GGUF_SPLIT_COUNT].contents() if GGUF_SPLIT_COUNT in fields else 1
    if count > 1:
        part = fields[GGUF_SPLIT_NO].contents() + 1 if GGUF_SPLIT_NO in fields else "?"
        raise LLMSRTError(f"{src}: part {part} of a model split into {count} GGUF files; merge the parts first "
                          f"(llama-gguf-split --merge <first part> merged.gguf) and convert the merged file")
    return str(fields[GGUF_ARCH].contents()) if GGUF_ARCH in fields else ""


def _newer_loader(arch: str) -> bool:
    """Whether transformers reads this GGUF architecture (qwen35, lfm2, ...) with its newer loader, which reports
    a tensor it has no place for as an unexpected key itself, and never runs the older one `_tensors_used` sees."""
    try:
        from transformers.integrations.gguf.utils import is_gguf_arch_supported
    except ImportError:  # a transformers without it: every architecture is the older loader's
        return False
    return is_gguf_arch_supported(arch)


def _check_gguf_loaded(src: Path, info: dict, used: dict[str, bool] | None, arch: str) -> None:
    """Every weight of the model came from the file, in its shape (a tied output projection is not missing:
    transformers leaves it out of `missing_keys`), and every tensor of the file went into the model (`used`; None:
    the newer loader's, whose `unexpected_keys` name those it had no place for)."""
    missing, mismatched = sorted(info["missing_keys"]), sorted(info["mismatched_keys"])
    if missing:
        raise LLMSRTError(f"{src}: {_weights(len(missing))} of the model not in the file ({', '.join(missing[:3])}"
                          f"{', ...' if len(missing) > 3 else ''}); is it truncated, or one part of a split model "
                          f"(merge the parts first: llama-gguf-split --merge)?")
    if mismatched:
        name, stored, wanted = mismatched[0]
        raise LLMSRTError(f"{src}: {_weights(len(mismatched))} in a shape the model's metadata does not give (e.g. "
                          f"{name}: {tuple(stored)} in the file, {tuple(wanted)} expected); is the file corrupt?")
    if used is None:  # the newer loader's own record
        unused = sorted(info.get("unexpected_keys") or ())
    elif not used:  # a model without weights is missing them all: the record was never made (another transformers)
        raise LLMSRTError(f"{src}: cannot tell which tensors of the file transformers loaded (model/gguf_llm.py's "
                          f"_tensors_used reads transformers 5.23's GGUF loading); install transformers==5.23.0")
    else:
        unused = [name for name, placed in used.items() if not placed]
    if unused:
        raise LLMSRTError(f"{src}: {len(unused)} tensor{'s' * (len(unused) != 1)} of the file that transformers' "
                          f"{arch} model has no place for: {', '.join(unused[:4])}{', ...' if len(unused) > 4 else ''}"
                          f"; the converted model would differ from the file (use the model's Hugging Face folder "
                          f"instead)")


def _weights(n: int) -> str:
    return f"{n} weight" + "s" * (n != 1)
