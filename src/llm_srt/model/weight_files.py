"""The weight files of a Hugging Face Whisper folder, as transformers itself loads them, for both readers of one:
the torch-only Whisper (whisper_torch.py: language ID, the whisper and cascade baselines) and the speech LLM's encoder
(encoder.py). `tensor_files` maps each tensor name to its file: model.safetensors, or the shards
model.safetensors.index.json lists (transformers shards past 5 GB: a float32 Whisper large is 6.2 GB), else an older
fine-tune's pytorch_model.bin or the shards pytorch_model.bin.index.json lists, else *.safetensors shards named by
hand; never every file (openai/whisper-large-v3 ships
model.safetensors beside fp32 shards of the same tensors). `TensorReader` opens them for one load. The folder's
settings files are checked here too: config.json (`whisper_config`) and generation_config.json (`whisper_generation`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from ..errors import LLMSRTError
from ..paths import embedded_whisper_dir
from .log_mel import read_json

WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"  # one file, or save_pretrained's shards
BIN_WEIGHTS = "pytorch_model.bin"  # an older checkpoint's pickled state dict (read with torch.load, weights only)
BIN_INDEX = "pytorch_model.bin.index.json"  # its shards (save_pretrained(safe_serialization=False) past a shard size)


def whisper_todo(folder: Path) -> str:
    """What to do about a folder that is not the Hugging Face Whisper one it should be: `llm-srt setup` for the
    embedded one (it converts the embedded models only), another folder for a user's own."""
    return ("run `llm-srt setup` (it converts the embedded Whisper)" if Path(folder) == embedded_whisper_dir() else
            "give a folder holding a Hugging Face Whisper model")


WHISPER_GIVEN = {"encoder": "point the encoder at", "whisper": "give --whisper"}  # how each reader's folder is given
WHISPER_DIMS = ("num_mel_bins", "max_source_positions", "d_model", "encoder_attention_heads", "encoder_layers",
                "encoder_ffn_dim", "vocab_size", "max_target_positions", "decoder_attention_heads", "decoder_layers",
                "decoder_ffn_dim")  # config.json's sizes, each a positive integer


def whisper_config(folder: Path, reader: str) -> dict:
    """A Hugging Face Whisper folder's config.json, checked to be one, for both readers (`reader`: "encoder", the
    speech LLM's, or "whisper", the torch Whisper of language ID and the baselines): a folder without one, a file that
    is not JSON, another model's (the LLM's folder given as the encoder) or a CTranslate2 (faster-whisper) Whisper's
    is one line saying what to do, as is a size (`WHISPER_DIMS`) that is no positive integer (null, "1280": a
    hand-edited file's; a TypeError traceback from the torch Whisper's layers, a StrictDataclassFieldValidationError
    from the encoder's WhisperConfig). The torch Whisper told a CTranslate2 folder only to give "a folder holding a
    Hugging Face Whisper model" (nothing of `convert whisper-ct2`), and an LLM's "no 'num_mel_bins'"."""
    file, given = folder / "config.json", WHISPER_GIVEN[reader]
    if not file.is_file():
        raise LLMSRTError(f"{folder}: not a Hugging Face Whisper folder (no config.json); {whisper_todo(folder)}")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except OSError as e:  # a permission, a network disk's
        raise LLMSRTError(f"{file}: cannot read it ({e.strerror or e}); check the file's permissions") from None
    except ValueError as e:  # bad JSON or bad UTF-8
        raise LLMSRTError(f"{file}: not a JSON config ({type(e).__name__}); copy or download the model again") from None
    if not isinstance(raw, dict) or raw.get("model_type") != "whisper" and "d_model" not in raw:
        if isinstance(raw, dict) and raw.get("model_type"):  # e.g. the LLM's folder given as the encoder
            swapped = " (model.encoder and model.llm swapped?)" if reader == "encoder" else ""
            raise LLMSRTError(f"{file}: a {raw['model_type']} model, not Whisper; {given} a Whisper folder{swapped}")
        raise LLMSRTError(f"{file}: not a transformers Whisper config (no model_type whisper or d_model); if it is a "
                          f"CTranslate2 (faster-whisper) Whisper, run `llm-srt convert whisper-ct2 {folder} OUT` and "
                          f"{given} OUT")
    for key in WHISPER_DIMS:  # (one missing: WhisperConfig's default for the encoder, an error of the torch Whisper's)
        if key in raw and (type(raw[key]) is not int or raw[key] < 1):
            raise LLMSRTError(f"{file}: {key} is {json.dumps(raw[key])}, not a positive integer; copy the base "
                              "Whisper's config.json")
    return raw


GENERATION = "generation_config.json"
GENERATION_IDS = ("decoder_start_token_id", "eos_token_id", "pad_token_id")  # each needed, else config.json's
COPY_BASE = "copy {} of the Whisper it was fine-tuned from (openai/whisper-*) into its folder"
WHISPER_TOKENS = {"decoder_start_token_id": "<|startoftranscript|>", "eos_token_id": "<|endoftext|>",
                  "no_timestamps_token_id": "<|notimestamps|>"}  # each id's token, in every Whisper's vocabulary


def whisper_generation(folder: Path, config: dict) -> dict:
    """What a Whisper folder's generation_config.json (none: config.json, as transformers falls back) says about
    decoding, for the torch Whisper (`config`: its checked config.json): the three ids of GENERATION_IDS (eos_token_id
    the first of a list), no_timestamps_token_id, lang_to_id and task_to_id ({} if absent), suppress_tokens and
    begin_suppress_tokens (tuples, () if absent) and is_multilingual as given. Each id is an integer of the vocabulary
    (a suppressed one any integer: one outside it is ignored, as transformers does); "50258" or 51866 in a
    hand-edited file was a ValueError, TypeError or IndexError traceback from torch at the first decode, and is one
    line naming the file and the key; so is an id that is not its token in the folder's vocabulary (`check_tokens`:
    the file of another Whisper)."""
    path = folder / GENERATION
    g = read_json(path) if path.is_file() else config
    n_vocab, base = config["vocab_size"], folder / "config.json"
    file = {k: path if g is not config and k in g else base for k in GENERATION_IDS}
    out = {k: g.get(k, config.get(k)) for k in GENERATION_IDS}
    if isinstance(out["eos_token_id"], list):  # several end ids: the first (an empty list names none)
        out["eos_token_id"] = next(iter(out["eos_token_id"]), None)
    if None in out.values():
        raise LLMSRTError(f"{folder}: config.json and {GENERATION} name no "
                          f"{', '.join(k for k, v in out.items() if v is None)}")
    source = path if g is not config else base
    ids = [(file[k], k, v) for k, v in out.items()]
    if (no_timestamps := g.get("no_timestamps_token_id")) is not None:
        ids.append((source, "no_timestamps_token_id", no_timestamps))
    for key in ("lang_to_id", "task_to_id"):
        out[key] = g.get(key) or {}
        if not isinstance(out[key], dict):
            raise LLMSRTError(f"{source}: {key} is {json.dumps(out[key])}, not an object of tokens and their ids; "
                              f"{COPY_BASE.format(source.name)}")
        ids += [(source, f"{key}'s {name}", i) for name, i in out[key].items()]
    for at, key, i in ids:
        if type(i) is not int or not 0 <= i < n_vocab:
            raise LLMSRTError(f"{at}: {key} is {json.dumps(i)}, not a token id of this Whisper (an integer from 0 "
                              f"to {n_vocab - 1}); {COPY_BASE.format(at.name)}")
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        listed = g.get(key) or []
        if not isinstance(listed, list):
            raise LLMSRTError(f"{source}: {key} is {json.dumps(listed)}, not a list of token ids; "
                              f"{COPY_BASE.format(source.name)}")
        if wrong := [i for i in listed if type(i) is not int]:
            raise LLMSRTError(f"{source}: {key} holds {json.dumps(wrong[0])}, not a token id (an integer); "
                              f"{COPY_BASE.format(source.name)}")
        out[key] = tuple(listed)
    named = [(file[k], k, out[k], WHISPER_TOKENS[k]) for k in ("decoder_start_token_id", "eos_token_id")]
    if no_timestamps is not None:
        named.append((source, "no_timestamps_token_id", no_timestamps, WHISPER_TOKENS["no_timestamps_token_id"]))
    named += [(source, f"lang_to_id's {token}", i, token) for token, i in out["lang_to_id"].items()]
    named += [(source, f"task_to_id's {task}", i, f"<|{task}|>") for task, i in out["task_to_id"].items()]
    check_tokens(folder, named, n_vocab)
    return {**out, "no_timestamps_token_id": no_timestamps, "is_multilingual": g.get("is_multilingual")}


def check_tokens(folder: Path, named: list[tuple[Path, str, int, str]], n_vocab: int) -> None:
    """Refuse settings ids that are not their tokens in the folder's own vocabulary (`named`: the file, its key, the
    id, the token it stands for), in one line naming the file and the first such key. A generation_config.json of
    another Whisper (large-v3 added <|yue|> before the task tokens: its <|transcribe|> is large-v2's <|startoflm|>,
    its <|notimestamps|> large-v2's first timestamp) loaded and decoded with the wrong prompt, silently. Without
    vocabulary.txt or tokenizer.json there is nothing to compare with (they are read only to decode text)."""
    if not named or (found := tokens_at(folder, {i for _, _, i, _ in named}, n_vocab)) is None:
        return
    source, tokens = found
    if wrong := [(at, key, i, token) for at, key, i, token in named if tokens[i] != token]:
        at, key, i, token = wrong[0]
        held = json.dumps(tokens[i]) if tokens[i] is not None else "no token"
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise LLMSRTError(f"{at}: {key} is {i}, which is {held} in this Whisper's {source.name}, not "
                          f"{json.dumps(token)}{more}: the ids of another Whisper's vocabulary (large-v3 added "
                          f"<|yue|>, one id before the task tokens); {COPY_BASE.format(at.name)}")


def tokens_at(folder: Path, ids: set[int], n_vocab: int) -> tuple[Path, dict[int, str | None]] | None:
    """The tokens of `ids` in the folder's vocabulary.txt, else in its tokenizer.json, with the file read; None without
    either. The file read decodes the text, so one that cannot be is refused here, as the folder loads, not after
    every clip of a batch decoded: a vocabulary.txt not of n_vocab UTF-8 lines (`read_vocabulary`), a tokenizer.json
    cut short, damaged, unreadable or JSON the tokenizers library refuses (`not_a_tokenizer`; it is loaded whole by
    that library and let go, ~60 ms for Whisper's 3.9 MB; the text's decoding loads it again)."""
    file = folder / "vocabulary.txt"
    if file.is_file():
        tokens = read_vocabulary(file, n_vocab)
        return file, {i: tokens[i] for i in ids}
    file = folder / "tokenizer.json"
    if not file.is_file():
        return None  # ids only (language ID); decoding text says what to do
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(file.read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001  OSError, UnicodeDecodeError; the tokenizers library raises Exception itself
        raise not_a_tokenizer(file, e) from None
    return file, {i: tokenizer.id_to_token(i) for i in ids}


def read_vocabulary(file: Path, n_vocab: int) -> list[str]:
    """id -> token from a Whisper folder's vocabulary.txt (`convert.read_vocabulary_txt`), or one line naming it: not
    UTF-8 (damaged, another encoding), or not n_vocab tokens (config.json's vocab_size)."""
    from .convert import read_vocabulary_txt

    todo = "delete it (tokenizer.json is used then) or convert the model again"
    try:
        tokens = read_vocabulary_txt(file)
    except (OSError, ValueError) as e:
        raise LLMSRTError(f"{file}: cannot read it ({type(e).__name__}); {todo}") from None
    if len(tokens) != n_vocab:
        raise LLMSRTError(f"{file}: {len(tokens)} tokens for a vocabulary of {n_vocab} (config.json); {todo}")
    return tokens


def not_a_tokenizer(file: Path, e: Exception) -> LLMSRTError:
    """One line for a tokenizer.json that cannot be read (`e`: the JSON parser's, the tokenizers library's error)."""
    return LLMSRTError(f"{file}: not a tokenizer ({(str(e).splitlines() or [''])[0][:160]}), so Whisper's tokens "
                       "cannot become text; copy or download the model's tokenizer.json again")


def tensor_files(folder: Path) -> dict[str, Path]:
    """Each tensor name of the folder's checkpoint -> the file holding it, from the files transformers itself loads:
    model.safetensors, or the shards model.safetensors.index.json maps (transformers shards past 5 GB: a float32
    Whisper large is 6.2 GB), else pytorch_model.bin or the shards pytorch_model.bin.index.json maps (older
    fine-tunes), in transformers' order; a folder with none of them has its
    *.safetensors globbed (shards named by hand), as the speech LLM's encoder reads it (encoder.py). Only headers are
    read (a pytorch_model.bin's pickle, its tensors memory-mapped). The map lets a decoder-only load skip the
    encoder's shards, and the speech LLM's encoder (encoder.py) read only the files holding its tensors, never a
    second copy beside them (large-v3's fp32 shards)."""
    from safetensors import safe_open

    if (folder / WEIGHTS).is_file():
        try:
            open(folder / WEIGHTS, "rb").close()  # safetensors says "No such file" for any error opening it
            with safe_open(folder / WEIGHTS, framework="pt") as f:
                return dict.fromkeys(f.keys(), folder / WEIGHTS)
        except Exception as e:  # noqa: BLE001  OSError (a permission, a network disk's), SafetensorError (a bad header)
            raise unreadable(folder / WEIGHTS, e) from None
    if (folder / WEIGHTS_INDEX).is_file():
        return _indexed(folder / WEIGHTS_INDEX)
    if (folder / BIN_WEIGHTS).is_file():
        return dict.fromkeys(read_bin(folder / BIN_WEIGHTS), folder / BIN_WEIGHTS)
    if (folder / BIN_INDEX).is_file():  # (transformers loads such a folder: it was "not a Hugging Face Whisper folder")
        return _indexed(folder / BIN_INDEX)
    if files := _globbed(folder):
        return files
    raise LLMSRTError(f"{folder}: not a Hugging Face Whisper folder (no {WEIGHTS}, nor {WEIGHTS_INDEX} with its "
                      f"shards, nor {BIN_WEIGHTS} or {BIN_INDEX} with its shards, or other *.safetensors); "
                      f"{whisper_todo(folder)}")


def _indexed(index: Path) -> dict[str, Path]:
    """Tensor name -> shard, from a save_pretrained index (safetensors or pytorch_model.bin shards); every shard it
    names must be there."""
    folder = index.parent
    raw = read_json(index)
    weight_map = raw.get("weight_map")  # (read_json refuses a file that is not a JSON object)
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(f, str) for f in weight_map.values()):
        raise LLMSRTError(f"{index}: no weight_map of tensor names to shard files; save the model again "
                          "(save_pretrained) or copy the folder again")
    files = {name: folder / file for name, file in weight_map.items()}
    if missing := sorted({str(file) for file in files.values() if not file.is_file()}):
        raise LLMSRTError(f"{missing[0]}: not there, though {index.name} lists it; copy or download the whole "
                          "folder again")
    return files


def _globbed(folder: Path) -> dict[str, Path]:
    """Tensor name -> file over the folder's *.safetensors (shards named by hand, no index), as encoder.py's; refused
    where two files hold one name, as two copies of the weights would be."""
    from safetensors import safe_open

    files: dict[str, Path] = {}
    for file in sorted(folder.glob("*.safetensors")):
        try:
            open(file, "rb").close()
            with safe_open(file, framework="pt") as f:
                keys = list(f.keys())
        except Exception as e:  # noqa: BLE001  OSError, SafetensorError (a bad header)
            raise unreadable(file, e) from None
        for key in keys:
            if key in files:
                raise LLMSRTError(f"{folder}: {files[key].name} and {file.name} both hold {key}; keep one copy of "
                                  f"the weights, or name the shards to read in a {WEIGHTS_INDEX}")
            files[key] = file
    return files


def unreadable(file: Path, e: Exception) -> LLMSRTError:
    """The one-line error of a weights file that cannot be read: its disk or permissions (an OSError), a tensor an
    index maps to a shard that lacks it, or damage."""
    if "does not contain tensor" in str(e):  # the shard is whole: model.safetensors.index.json maps a tensor to it
        return LLMSRTError(f"{file}: {WEIGHTS_INDEX} names a tensor this shard lacks ({e}); the index is stale or "
                           "another model's: save or copy the folder again")
    if isinstance(e, OSError):  # not damage: a permission, a network file system's error
        return LLMSRTError(f"{file}: cannot read the Whisper weights ({e.strerror or e}); check the file's "
                           "permissions and that its disk is there")
    return LLMSRTError(f"{file}: cannot read the Whisper weights ({type(e).__name__}: {str(e).splitlines()[0]}); the "
                       "file is damaged or cut short: copy or download it again")


def read_bin(file: Path) -> dict[str, torch.Tensor]:
    """A pytorch_model.bin's tensors by name, weights only (no code of the file runs), memory-mapped where its format
    allows (torch.save's zip format: float32 tensors are then the file's pages, as a safetensors file's; the legacy
    format is read whole)."""
    import pickle

    try:
        open(file, "rb").close()
    except OSError as e:
        raise unreadable(file, e) from None
    try:
        try:
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):
                raise
            state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text advises weights_only=False: running the file's code
        raise LLMSRTError(f"{file}: cannot read the Whisper weights (not a pickle of tensors alone, which is all "
                          "torch.load reads here); download it again, or load it with transformers where you trust "
                          "it and save_pretrained it (safetensors)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:  # an OSError here: a cut file's mapping
        raise LLMSRTError(f"{file}: cannot read the Whisper weights ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0]}); the file is damaged or cut short: download it again, "
                          "or load it with transformers and save_pretrained it (safetensors)") from None
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise LLMSRTError(f"{file}: no tensors by name (not a state dict); load the model with transformers and "
                          "save_pretrained it (safetensors)")
    return tensors


class _StateDict(dict):
    """A pytorch_model.bin's tensors, read as a safetensors file's (`get_tensor`)."""

    def __init__(self, file: Path, tensors: dict[str, torch.Tensor]):
        super().__init__(tensors)
        self.file = file

    def get_tensor(self, key: str) -> torch.Tensor:
        if key not in self:  # a stale pytorch_model.bin.index.json (a KeyError traceback), as a safetensors shard's
            raise LLMSRTError(f"{self.file}: {BIN_INDEX} names a tensor this shard lacks ({key}); the index is "
                              "stale or another model's: save or copy the folder again")
        return self[key]


class TensorReader:
    """Opens `tensor_files`' files for one load: a safetensors file a mapping per `open` (its pages leave memory as
    that mapping closes), a pytorch_model.bin once for the whole load (`read_bin`: one mapping of the whole file)."""

    def __init__(self):
        self.bins: dict[Path, _StateDict] = {}

    def open(self, file: Path):
        from safetensors import safe_open

        if file.suffix != ".bin":
            return safe_open(file, framework="pt")
        if file not in self.bins:
            self.bins[file] = _StateDict(file, read_bin(file))
        return contextlib.nullcontext(self.bins[file])


class NotConfigShape(ValueError):
    """Weights that are not config.json's Whisper, in one line naming the first tensor of another shape, missing or
    not the model's (the caller names the folder's weights file and says what to do)."""


def check_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> None:
    """Refuse a checkpoint's tensors (name -> shape) that are not the model's (`expected`, from config.json): a
    NotConfigShape naming the first wrong one, both shapes, and how many more (config.json of another size: all)."""
    wrong = [f"{k} is {tuple(found[k])} where config.json's Whisper has {tuple(shape)}" for k, shape in expected.items()
             if k in found and tuple(found[k]) != tuple(shape)]
    wrong += [f"{k} is in no weights file" for k in expected if k not in found]
    wrong += [f"{k} is no tensor of config.json's Whisper" for k in found if k not in expected]
    if wrong:
        raise NotConfigShape(wrong[0] + (f", and {len(wrong) - 1} more" if len(wrong) > 1 else ""))


def file_of(files: dict[str, Path], key: str) -> Path:
    if key not in files:  # from_pretrained names the folder's weights and says what to do
        raise NotConfigShape(f"{key.removeprefix('model.')} is in no weights file")
    return files[key]
