"""The causal LLM: any Hugging Face causal-LM folder, frozen, with optional LoRA (peft)."""

from __future__ import annotations

import copy
import json
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from torch import nn
from torch.autograd.function import once_differentiable
from transformers import (AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase,
                          PreTrainedTokenizerFast)

from ..device import DTYPES, compute_dtype, is_int8
from ..errors import LLMSRTError, warn_each_time
from ..paths import cwd_note, embedded_llm_dir
from . import cpu_linear, gguf_llm
from .attention import use_decode_attention
from .cpu_linear import FastLinear, fast_cpu_linears
from .int8_linear import Int8Linear, fuse_int8_projections, quantize_int8
from .mapped import checkpoint_pages_dropper, drop_pages_after_lookups, mapped_from, mapping_of

GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


@dataclass(frozen=True)
class LoraOptions:
    """LoRA on the frozen LLM (paper defaults: ~1.8M parameters on Qwen2.5-3B)."""

    r: int = 8  # rank of the update matrices
    alpha: int = 32  # scaling numerator: the update is scaled by alpha / r
    dropout: float = 0.05  # dropout on the LoRA branch input
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # linear layers that get an update, by name
    bias: str = "none"  # peft bias mode; training takes "none" only (train/config.py: LORA_BIAS)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "LoraOptions | None":
        if d is None:
            return None
        d = dict(d)
        d["target_modules"] = tuple(d.get("target_modules", cls.target_modules))
        return cls(**d)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise LLMSRTError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_llm(path: str | Path, dtype: str | torch.dtype = torch.float32, lora: LoraOptions | None = None,
             device: str | torch.device | None = None, weights: bool = True,
             merged_lora: tuple[dict[str, torch.Tensor], str] | None = None
             ) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """(model, tokenizer) of an HF causal-LM folder. Every base weight is frozen; LoRA weights (if any) are not.

    The weights load straight onto `device` in `dtype` (never a whole float32 copy on the host first). `int8` (CPU
    inference only): loaded in float32, then every linear layer, the output head included, becomes an `Int8Linear`
    (`quantize_int8`; LoRA's own small matrices stay float32). Attention is HF's SDPA, a CPU decode step of a
    grouped-query layer in a faster layout (`attention.use_decode_attention`); RMSNorm layers compute float32 CPU
    inference with torch's `F.rms_norm` (`fast_cpu_norms`).
    `weights=False` builds the LLM from its config.json with random weights directly on `device` (paper-shaped
    benchmarks need no download); `device="meta"` builds a weightless skeleton whose parameters live on the meta
    device (buffers stay real, on the CPU): FSDP fills in each rank's shards later.
    `merged_lora` (inference): (LoRA weights, the file they came from) folded into the base weights they adapt
    (peft's `merge_and_unload`): the plain LLM comes back, its weights W + B A x scale, and each step runs no LoRA
    products (`SpeechLLM.from_pretrained(merge_lora=True)`). Only in float32, where it gave the same outputs: in
    bfloat16 or int8, W + B A is rounded to the weights' own grid and LoRA's small changes with it, so the LoRA stays
    apart (float32 beside them; its weights left for the caller to load), as it does for a weight another module
    shares (a head tied to the input embeddings: merged, both would change)."""
    path = Path(path)
    if path.is_file() and _starts_gguf(path):
        raise LLMSRTError(f"{path}: a GGUF file, not a Hugging Face model folder; run `llm-srt convert gguf {path} "
                          f"OUT`, then give OUT as the LLM: --llm OUT, or model.llm in a config")
    if not (path / "config.json").is_file():
        todo = ("run `llm-srt setup` (it converts the embedded LLM)" if path == embedded_llm_dir() else
                "give a folder holding a causal LM")  # (setup converts the embedded models only)
        raise LLMSRTError(f"{path}: not a Hugging Face model folder (no config.json){cwd_note(path)}; {todo}")
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except ValueError:
        raw = None  # transformers names the fault below
    if isinstance(raw, dict) and (raw.get("is_encoder_decoder") or raw.get("model_type") == "whisper"):
        # transformers would load Whisper's decoder alone as a causal LM, and a speech LLM train on it
        raise LLMSRTError(f"{path / 'config.json'}: a {raw.get('model_type', 'encoder-decoder')} model, not a causal "
                          "LM; point the llm at a causal LM folder (model.encoder and model.llm swapped?)")
    int8 = is_int8(dtype)
    torch_dtype = compute_dtype(resolve_dtype(dtype))
    target = torch.device(device) if device is not None else torch.device("cpu")
    if int8 and target.type != "cpu":
        raise LLMSRTError(f"{path}: int8 linear layers run on the CPU only, not on {target}; use bfloat16 there")
    _check_generation_config(path)
    try:
        tokenizer = load_tokenizer(path)
        if target.type == "meta" or not weights:
            model = _from_config(path, torch_dtype, target)
        else:  # mismatched shapes reported by _check_loaded (transformers' own is a RuntimeError pointing at its log)
            model, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, device_map=target,
                                                               output_loading_info=True, ignore_mismatched_sizes=True)
            _check_loaded(path, info)
    except StrictDataclassError as e:  # transformers' typed configs (Qwen2's, Llama's): a value of another type
        detail = str(e).strip().splitlines()[-1].strip().removeprefix("TypeError: ").removeprefix("ValueError: ")
        raise LLMSRTError(f"{path / 'config.json'}: {detail}; correct the value, or copy config.json from the "
                          "model's download again") from None
    except SafetensorError as e:  # a truncated shard: neither an OSError nor a ValueError
        raise LLMSRTError(f"{_unreadable_file(path) or path}: cannot read the LLM weights ({str(e).splitlines()[0]}); "
                          "the file is damaged or cut short: copy or download it again") from None
    except (OSError, ValueError) as e:
        raise LLMSRTError(f"{path}: cannot load the LLM or its tokenizer ({str(e).splitlines()[0]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    _plain_search(model.generation_config)
    model.requires_grad_(False)
    model.eval()
    fast_cpu_linears(model)
    fast_cpu_norms(model)
    use_decode_attention(model)
    if lora is not None:
        model = apply_lora(model, lora)
        if merged_lora is not None and torch_dtype == torch.float32 and not int8 and weights \
                and target.type != "meta" and not _lora_on_shared_weights(model):
            load_lora_state(model, *merged_lora)
            model = model.merge_and_unload()
    if int8 and weights and target.type != "meta":
        _quantize_from_checkpoint(model, path)
    elif int8:
        quantize_int8(model)
    if int8:
        fuse_int8_projections(model)
    return model, tokenizer


class _FastRMSNorm:
    """Mixed into an HF RMSNorm class: float32 CPU inputs that need no gradient go through torch's `F.rms_norm`
    (one call where HF's forward makes eight: 22 against 40 us for Gemma's 640 values at one row, 0.86 against 1.61
    ms at 16 x 90 rows; 2 threads), with the same values bit for bit (tested); anything else takes HF's forward."""

    one_plus = False  # Gemma scales by (1 + weight), Qwen2 and Llama by weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dtype != torch.float32 or self.weight.dtype != torch.float32 or x.device.type != "cpu"
                or torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return super().forward(x)
        if self.one_plus:
            return F.rms_norm(x, x.shape[-1:], 1.0 + self.weight, self.eps)
        return F.rms_norm(x, x.shape[-1:], self.weight, self.variance_epsilon)


FAST_NORMS = {"Gemma3RMSNorm": True, "Qwen2RMSNorm": False, "LlamaRMSNorm": False}  # class name -> one_plus
_FAST_NORM_CLASSES: dict[type, type] = {}


def fast_cpu_norms(model: nn.Module) -> None:
    """Every RMSNorm of a FAST_NORMS class in `model` becomes its `_FastRMSNorm` subclass in place (same object,
    parameters and state dict keys, as `fast_cpu_linears` does for linear layers)."""
    for module in model.modules():
        cls = type(module)
        if cls.__name__ not in FAST_NORMS:
            continue
        if cls not in _FAST_NORM_CLASSES:  # a module-level name, so that a model pickles
            name = f"Fast{cls.__name__}"
            _FAST_NORM_CLASSES[cls] = globals()[name] = type(name, (_FastRMSNorm, cls), {
                "one_plus": FAST_NORMS[cls.__name__], "__module__": __name__})
        module.__class__ = _FAST_NORM_CLASSES[cls]


def _quantize_from_checkpoint(model: nn.Module, path: Path) -> None:
    """int8 of a model just loaded from the checkpoint in `path`: a tied head from the file (`_quantize_tied_head`),
    each linear layer's checkpoint pages let go once it is quantized (they stayed resident until loading ended: the
    int8 load of Gemma-3-270M peaked at 2,023-2,094 MiB, 1,121 of them file pages, for a 1,000 MiB result; 1,827
    with this alone, 1,083-1,225 over 7 processes with the tied head read from the file too, for 941-1,000), then
    the float weights left made the process's own (`_own_float_weights`)."""
    lm = causal_lm(model)
    table = lm.get_input_embeddings().weight
    found = _checkpoint_table(lm, path)
    _quantize_tied_head(lm, found)
    quantize_int8(model, checkpoint_pages_dropper(path, keep=table))
    _own_float_weights(model, path, found)


def _quantize_tied_head(lm: PreTrainedModel, found: tuple[str, Path] | None) -> None:
    """int8: a head tied to the input embedding table, when the checkpoint holds that table as it is loaded
    (`found`: `_checkpoint_table`'s answer), becomes an Int8Linear quantized from the file a chunk of rows a
    mapping (`Int8Linear.from_file`): read through the loader's mapping, the whole table's pages stayed resident
    until loading ended (Gemma-3-270M: 671 MB of them at the int8 load's peak)."""
    head, table = lm.get_output_embeddings(), lm.get_input_embeddings().weight
    if (found is None or type(head) not in (nn.Linear, FastLinear) or head.weight is not table
            or head.bias is not None):
        return
    key, file = found
    lm.set_output_embeddings(Int8Linear.from_file(file, key, tuple(table.shape)))


def _checkpoint_table(lm: PreTrainedModel, path: Path) -> tuple[str, Path] | None:
    """(its name, its file) when the folder's checkpoint holds the input embedding table as the model has it (the
    same name, shape, dtype and values on 64 rows across it), else None."""
    table = lm.get_input_embeddings().weight
    name = next((n for n, p in lm.named_parameters(remove_duplicate=False) if p is table), None)
    view, file = _file_tensor(path, name) if name else (None, None)
    step = max(1, table.shape[0] // 64)
    if (view is not None and view.shape == table.shape and view.dtype == table.dtype
            and torch.equal(view[::step], table[::step]) and torch.equal(view[-1], table[-1])):
        return name, file
    return None


def _own_float_weights(model: nn.Module, path: Path, found: tuple[str, Path] | None) -> None:
    """int8, after `quantize_int8`: the float tensors left (norms, LoRA's, the input embedding table) are views of
    the memory-mapped checkpoint, and one view keeps the whole file's mapping alive with every page quantization
    read resident (Gemma-3-270M: 1.0 GB of file pages; RSS after loading 1,976 -> ~970 MiB with this). Each becomes
    a copy of its own, the input embedding table a fresh view of the file's rows when the file holds it as is
    (`found`: `_checkpoint_table`'s answer, taken before quantizing), whose pages leave the process after every
    lookup (`mapped.drop_pages_after_lookups`: each row looked up had left a ~1 MB folio resident, 112-117 MiB of
    the table after 16 generations of 48 tokens, RSS 1,167-1,176 -> 1,049-1,068 MiB); else a copy when it is a
    view of the loader's mapping (a table the loader converted is its own already). The replaced float layers are
    collected at once (one in a reference cycle would keep its views, and so the mapping, until the next garbage
    collection)."""
    import gc

    gc.collect()
    lm = causal_lm(model)
    table = lm.get_input_embeddings().weight
    for t in [*model.parameters(), *model.buffers()]:
        if t is not table:
            t.data = t.data.clone()
    if found is not None:
        key, file = found
        table.data, _ = _file_tensor(path, key)  # a fresh mapping: none of the pages compared or quantized
        if mapped_from(table, file):  # the head is an int8 copy: the table serves lookups alone
            drop_pages_after_lookups(lm.get_input_embeddings())
    elif (found := mapping_of(table)) is not None and found.file is not None:  # a view of the loader's mapping
        table.data = table.data.clone()


def _file_tensor(path: Path, name: str) -> tuple[torch.Tensor | None, Path | None]:
    """The tensor `name` of the folder's safetensors checkpoint (one file or an index of shards) as a view of the
    mapped file (no page read yet), and that file; (None, None) when the folder has no such tensor. The file is the
    one transformers loads: model.safetensors where the folder has it, even beside an index of shards (a stale one
    or another dtype's: the int8 load took its table and tied head from the shard, other weights than the LLM's)."""
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    try:
        if (path / "model.safetensors").is_file() or not index.is_file():
            file = path / "model.safetensors"
        else:
            file = path / json.loads(index.read_text())["weight_map"][name]
        with safe_open(file, framework="pt") as f:
            return (f.get_tensor(name), file) if name in f.keys() else (None, None)
    except (OSError, ValueError, KeyError, SafetensorError):
        return None, None


def _check_loaded(path: Path, info: dict) -> None:
    """Every weight of the LLM came from the folder's checkpoint, in its shape: transformers fills the others with
    random values and says so only in a log (hidden by the CLI). A head tied to the input embeddings is not missing
    (transformers leaves it out of `missing_keys`). Tensors the model has no place for (`unexpected_keys`) are
    ignored but named in one warning: an extra head or buffer some checkpoints carry changes no output."""
    missing, mismatched = sorted(info["missing_keys"]), sorted(info["mismatched_keys"])
    if missing:
        raise LLMSRTError(f"{path}: {_weights(len(missing))} of the LLM not in its checkpoint "
                          f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); a shard or tensor is "
                          "missing, or the checkpoint is another model's: copy or download the folder again")
    if mismatched:
        shown = ", ".join(f"{name}: {tuple(stored)} in the file, {tuple(wanted)} expected"
                          for name, stored, wanted in mismatched[:3])
        raise LLMSRTError(f"{path}: {_weights(len(mismatched))} of the LLM in another shape than its config.json "
                          f"gives ({shown}{', ...' if len(mismatched) > 3 else ''}); are config.json and the "
                          "weights from the same model?")
    if unexpected := sorted(info["unexpected_keys"]):
        warn_each_time(f"{path}: {_weights(len(unexpected))} in the checkpoint that the LLM does not use, ignored "
                       f"({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")


def _weights(n: int) -> str:
    return f"{n} weight" + "s" * (n != 1)


def _starts_gguf(path: Path) -> bool:
    """Whether the file begins with GGUF's magic (a .gguf file given where a model folder belongs)."""
    try:
        return gguf_llm.magic(path) == gguf_llm.GGUF_MAGIC
    except OSError:
        return False


def _unreadable_file(path: Path) -> Path | None:
    """The first of the folder's safetensors files whose header safetensors cannot read (a shard cut short), if
    any: transformers' SafetensorError names none."""
    from safetensors import safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (OSError, SafetensorError):
            return file
    return None


def _from_config(path: Path, dtype: torch.dtype, device: torch.device) -> PreTrainedModel:
    """The LLM of `path`'s config.json without reading weights: random on `device`, or a meta skeleton."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if device.type == "meta":
        from accelerate import init_empty_weights  # peft depends on accelerate

        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # from_config under a device context leaves tied embeddings as two tensors
    if (path / "generation_config.json").is_file():  # as from_pretrained reads it: its end tokens (an FSDP rank's
        from transformers import GenerationConfig  # skeleton must stop decoding where rank 0's loaded LLM does)

        model.generation_config = GenerationConfig.from_pretrained(path)
    return model


def _check_generation_config(path: Path) -> None:
    """A folder's generation_config.json, where it has one, is a JSON object: transformers' from_pretrained drops a
    damaged one with an info log, so its end ids (Gemma-3's <end_of_turn>, an instruct model's) went unsaid and
    decoding ran past them to its cap, while an FSDP rank's skeleton (`_from_config`) read it and stopped."""
    file = path / "generation_config.json"
    if not file.is_file():
        return
    try:
        settings = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        settings = e
    if not isinstance(settings, dict):
        what = (f"cannot read it as JSON ({(str(settings).splitlines() or [type(settings).__name__])[0]})"
                if isinstance(settings, Exception) else f"a JSON {type(settings).__name__}, not an object")
        raise LLMSRTError(f"{file}: {what}; copy it from the model's download again (it holds the ids that end a "
                          "generation)")


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The folder's tokenizer. A generic tokenizer.json (tokenizer_class TokenizersBackend / PreTrainedTokenizerFast)
    is loaded as is: AutoTokenizer would swap in the model type's class, which rebuilds its own pre-tokenizer.
    A folder without tokenizer files is refused, and so is a tokenizer of under 2 tokens or that gives no id for
    "a": AutoTokenizer built one of a single token from config.json alone, every text tokenized to [] and training
    learned speech -> EOS without an error."""
    if not _has_tokenizer_files(path):
        raise LLMSRTError(f"{path}: no tokenizer files (tokenizer.json, vocab.json + merges.txt or tokenizer.model); "
                          "copy them from the model's download")
    config_file = path / "tokenizer_config.json"
    try:
        settings = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except ValueError as e:  # (a JSONDecodeError, or bytes that are not UTF-8)
        settings = e
    if not isinstance(settings, dict):  # a list or a number was an AttributeError traceback; damaged JSON named no file
        what = f"not JSON ({str(settings).splitlines()[0]})" if isinstance(settings, ValueError) else \
            f"a JSON {type(settings).__name__}, not an object"
        raise LLMSRTError(f"{config_file}: {what}; copy the tokenizer files from the model's download")
    cls = settings.get("tokenizer_class")
    if cls in GENERIC_TOKENIZERS and (path / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(tokenizer) < 2 or not ids:
        raise LLMSRTError(f"{path}: its tokenizer is empty ({len(tokenizer)} token(s); 'a' gives {ids}); the tokenizer "
                          "files are incomplete: copy them from the model's download")
    return tokenizer


def _has_tokenizer_files(path: Path) -> bool:
    """A fast tokenizer (tokenizer.json), a BPE one (vocab.json + merges.txt), a sentencepiece model (*.model), a
    WordPiece vocabulary (vocab.txt) or a tiktoken file."""
    return ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
            or (path / "vocab.txt").is_file() or any(path.glob("*.model")) or any(path.glob("*.tiktoken")))


def apply_lora(model: PreTrainedModel, lora: LoraOptions) -> nn.Module:
    """Wrap `model` with peft LoRA adapters (the base stays frozen). Every name of `lora.target_modules` must name a
    module of the LLM, as peft matches one (the module's whole name, or a dotted tail of it: `v_proj`,
    `self_attn.v_proj`): peft refuses only names of which none is found, so `[q_prj, v_proj]` trained LoRA on
    v_proj alone, unsaid."""
    from peft import LoraConfig, get_peft_model

    names = [name for name, _ in model.named_modules()]
    missing = [t for t in lora.target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise LLMSRTError(f"LoRA: the LLM has no module named {', '.join(missing)} (model.lora.target_modules); its "
                          f"linear layers are {', '.join(linear)}: correct the name")
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), bias=lora.bias, task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft reads transformers' deprecated attribute on every model it wraps:
            #                              that line was every from_pretrained's from Python (the CLI hides it)
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            return get_peft_model(model, config)
    except ValueError as e:
        raise LLMSRTError(f"LoRA: {str(e).splitlines()[0]} (check lora.target_modules against the LLM's layer "
                          "names)") from None


def _lora_on_shared_weights(model: nn.Module) -> bool:
    """Whether a LoRA layer's base weight is also another module's (tied embeddings and head)."""
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    return any(uses[id(m.base_layer.weight)] > 1 for m in model.modules()
               if hasattr(m, "lora_A") and hasattr(getattr(m, "base_layer", None), "weight"))


SEARCH_RUN_FIELDS = ("cache_implementation", "cache_config", "stop_strings", "max_time", "return_dict_in_generate",
                     "output_scores", "output_logits", "output_attentions", "output_hidden_states",
                     "prompt_lookup_num_tokens", "use_mtp", "assistant_early_exit", "num_beam_groups",
                     "diversity_penalty", "penalty_alpha", "dola_layers", "constraints", "force_words_ids",
                     "low_memory", "prefill_chunk_size", "forced_bos_token_id")


def _plain_search(config) -> None:
    """Set back to their defaults the settings of a model folder's generation_config.json that change how a search
    runs or what `generate` returns: `generate` fills what our decoding leaves unset (None) from the model's own,
    so a folder's `cache_implementation: static` clashed with beam search's shared prompt cache, and
    `return_dict_in_generate`, `stop_strings` (no tokenizer given) or `max_time` (beams cut short) broke it too.
    `prefill_chunk_size` crashed beam search too, and `forced_bos_token_id` forced its token second (the prompt is
    given as embeddings, so the ids start empty). Its end ids and its other logits processors (suppressed or forced
    tokens) are kept."""
    from transformers import GenerationConfig

    fresh = GenerationConfig()
    for name in SEARCH_RUN_FIELDS:
        if hasattr(config, name):
            setattr(config, name, copy.deepcopy(getattr(fresh, name, None)))


def load_lora_state(llm: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load peft LoRA weights (keys as get_peft_model_state_dict writes them). Into a meta skeleton (an FSDP rank
    other than 0, whose shards come from rank 0) only the names and shapes are checked. A weight of another shape
    (another r, or another LLM) is a one-line error before peft sees it: peft's is a many-line RuntimeError, a
    curriculum's later stage started with another model.lora got it after days of earlier stages. LoRA layers the
    file has no weights for (more target_modules than it was trained with) start afresh, said in one warning."""
    from peft import set_peft_model_state_dict

    # a folder written before 2026-12-06 with LoRA on the head or the embeddings also holds their frozen weights
    # (peft's save_embedding_layers): the LLM folder's own are kept (loaded over them, an int8 head was an error)
    state = {k: v for k, v in state.items() if ".base_layer." not in k}
    own = {k.replace(".default", ""): tuple(v.shape) for k, v in llm.state_dict().items() if "lora_" in k}
    wrong = next((k for k, v in state.items() if own.get(k, tuple(v.shape)) != tuple(v.shape)), None)
    if wrong is not None:
        raise LLMSRTError(f"{where}: {_lora_shape_mismatch(wrong, tuple(state[wrong].shape), own[wrong], where)}")
    with warnings.catch_warnings():  # torch warns once a tensor that a copy into a meta one does nothing: 256 lines
        warnings.filterwarnings("ignore", message=".*to a meta parameter in the current model")  # a rank at 32B
        result = set_peft_model_state_dict(llm, state)
    if result.unexpected_keys:
        raise LLMSRTError(f"{where}: LoRA weights do not match the LLM (e.g. {result.unexpected_keys[0]}); check "
                          "lora.target_modules and the LLM folder")
    fresh = sorted({k.split(".lora_")[0] for k in own if k not in state})
    if fresh and not any(k in state for k in own):
        raise LLMSRTError(f"{where}: none of the LoRA weights matched the LLM's LoRA layers")
    if fresh:
        layers, kinds = {k.split(".lora_")[0] for k in own}, ", ".join(sorted({m.rsplit(".", 1)[-1] for m in fresh}))
        warn_each_time(f"{where}: holds no LoRA weights for {len(fresh)} of this model's {len(layers)} LoRA layers "
                       f"({kinds}, e.g. {fresh[0]}): they start afresh, the others load from it")


def _lora_shape_mismatch(key: str, saved: tuple[int, ...], wanted: tuple[int, ...], where: str) -> str:
    """What a LoRA weight of another shape means: another rank (train with the file's, or start LoRA afresh), or,
    the rank alike, an LLM whose layer is another size."""
    rank_saved, rank_wanted = _lora_rank(key, saved), _lora_rank(key, wanted)
    said = f"LoRA weight {key} has shape {saved} (rank {rank_saved}), this model's {wanted} (rank {rank_wanted})"
    if rank_saved == rank_wanted:
        return f"{said}: the LLM's layer is another size; give the LLM the LoRA was trained on"
    return (f"{said}; set model.lora as the folder's config.json has it (r: {rank_saved}) to go on training it, or "
            f"start LoRA afresh from a copy of the folder without {Path(where).name}")


def _lora_rank(key: str, shape: tuple[int, ...]) -> int | None:
    """The rank a LoRA weight's shape implies: lora_A is (r, in, ...), lora_B (out, r, ...)."""
    axis = 0 if "lora_A" in key or "lora_embedding_A" in key else 1
    return shape[axis] if len(shape) > axis else None


def causal_lm(model: nn.Module) -> PreTrainedModel:
    """The HF causal LM inside an optional peft wrapper (LoRA layers stay injected in it)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder stack returning hidden states, lm_head) of a causal LM, so logits can be computed selectively."""
    lm = causal_lm(model)
    backbone = getattr(lm, lm.base_model_prefix, None) or lm.get_decoder()
    return backbone, lm.get_output_embeddings()


def logit_cap(model: nn.Module) -> float | None:
    """The LLM's final-logit soft-capping (Gemma 2 style: logits = cap * tanh(z / cap)), if its config sets one."""
    config = causal_lm(model).config
    cap = getattr(config, "final_logit_softcapping", None)
    if cap is None and hasattr(config, "get_text_config"):
        cap = getattr(config.get_text_config(), "final_logit_softcapping", None)
    return cap or None


def head_losses(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, cap: float | None) -> torch.Tensor:
    """(N, d) hidden states, the LLM's output head, (N,) target ids -> (N,) float32 cross-entropy of each row
    (logits in float32, soft-capped by `cap`).

    A frozen head (every stage here: the LLM is frozen or LoRA-adapted) is applied HEAD_BLOCK_LOGITS logits at a
    time: each block's logits, losses and, when `hidden` needs a gradient, its gradient are computed together and
    the logits dropped, so memory holds one block of logits, not the (N, vocab) matrix with its log-softmax and
    their gradients (N = 400 target tokens of Gemma's 262k vocab: 420 MB each). A head with trainable weights
    takes F.cross_entropy over all logits at once, and so does any head that is not a plain linear layer (int8, a
    subclass with a forward of its own, one with forward hooks)."""
    weight, bias = getattr(head, "weight", None), getattr(head, "bias", None)
    plain = type(head) in (nn.Linear, cpu_linear.FastLinear) and not head._forward_hooks \
        and not head._forward_pre_hooks
    if not plain or any(t is not None and t.requires_grad for t in (weight, bias)):
        return nn.functional.cross_entropy(_capped(head(hidden).float(), cap), targets, reduction="none")
    need_grad = torch.is_grad_enabled() and hidden.requires_grad
    return _BlockedHeadLoss.apply(hidden, weight, bias, targets, cap, need_grad)


HEAD_BLOCK_LOGITS = 32 << 20  # logits in a block of `head_losses` (128 MB in float32: 128 rows of a 262k vocab)


def _capped(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    return torch.tanh(logits / cap) * cap if cap else logits


class _BlockedHeadLoss(torch.autograd.Function):
    """`head_losses` of a frozen head: the loss's gradient for the hidden states is computed block by block in the
    forward pass (softmax - one-hot, times the cap's tanh derivative, times W) and scaled in the backward pass. A
    block holds its logits and, with a cap, their tanh (plus logsumexp's temporary)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, cap, need_grad):
        losses = torch.empty(len(hidden), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if need_grad else None
        rows = max(1, HEAD_BLOCK_LOGITS // weight.shape[0])
        for start in range(0, len(hidden), rows):
            block = slice(start, start + rows)
            # a new tensor (changed in place); a training loss takes the untimed rule (`fast_linear`'s `tune`)
            logits = cpu_linear.fast_linear(hidden[block], weight, bias, tune=not need_grad).float()
            t = None
            if cap:
                t = logits.div_(cap).tanh_()
                logits = t * cap
            lse = torch.logsumexp(logits, dim=-1)
            ignored = targets[block] < 0  # F.cross_entropy's ignore_index (-100): loss 0, no gradient (an index
            target = targets[block].clamp(min=0)  # out of range, a device-side assert on CUDA)
            losses[block] = (lse - logits.gather(1, target[:, None]).squeeze(1)).masked_fill_(ignored, 0)
            if need_grad:
                p = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                p[torch.arange(len(p), device=p.device), target] -= 1
                p.masked_fill_(ignored[:, None], 0)
                if cap:
                    p.mul_(t.mul_(t).neg_().add_(1))  # d(cap tanh(z / cap)) / dz = 1 - tanh^2
                grad[block] = cpu_linear.input_gradient(p.to(weight.dtype), weight)
        ctx.save_for_backward(grad)
        return losses

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_losses):
        (grad,) = ctx.saved_tensors
        return (grad.float() * grad_losses[:, None]).to(grad.dtype), None, None, None, None, None


def hidden_size(model: nn.Module) -> int:
    return causal_lm(model).get_input_embeddings().weight.shape[1]


