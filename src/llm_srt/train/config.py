"""A training stage's typed config, the YAML's schema: each key's type, default and bounds beside it, checked when read
(`load_config`), before any model is built; the adapter's options also against model.init_from's saved adapter
(`_check_adapter_matches`).
"""

import difflib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from .. import config as config_lib
from ..config import bounds, short
from .. import device as device_lib
from ..errors import ConfigError, LLMSRTError
from ..model.ctc import CTCLoss
from ..model.llm import LoraOptions
from ..prompts import Task
from .data import DataSection, mixes_text

LORA_BIAS = ("none",)  # peft's bias modes this recipe trains: peft's "all" and "lora_only" would mark the LLM's own
#   biases trainable, but the recipe trains the LoRA matrices alone (SpeechLLM's trainable parameters), so those biases
#   would stay frozen while their checkpoints carried them: refused, not ignored (the paper: bias none)


@dataclass
class ModelSection:
    encoder: str = "embedded"  # HF Whisper folder; "embedded" = the converted Whisper base (llm-srt setup)
    llm: str = "embedded"  # HF causal-LM folder; "embedded" = the converted Gemma-3-270M
    adapter: str = "qformer"  # qformer | pooled | linear (llm_srt.model.adapter.ADAPTERS)
    adapter_kwargs: dict[str, Any] = field(default_factory=dict)  # the adapter constructor's options, checked
    #   against it (model/adapter.py), e.g. {num_queries: 80, num_layers: 8}; encoder/LLM widths are inferred
    lora: LoraOptions | None = None  # LoRA on the LLM: {r, alpha, dropout, target_modules, bias}; null = none
    pad_to_30s: bool = False  # Whisper on 30 s-padded input, as the reference trains (false: variable length)
    init_from: str | None = None  # a model folder (the previous stage) whose adapter / LoRA start this run

    MOVED: ClassVar[dict[str, str]] = {
        "dtype": "the frozen weights' dtype is the top-level key dtype (auto, float32 or bfloat16)"}

    def __post_init__(self):
        from ..model.adapter import ADAPTERS, adapter_options

        if self.adapter not in ADAPTERS:
            raise ConfigError(f"model.adapter: unknown adapter {short(self.adapter)}; choose one of "
                              f"{', '.join(ADAPTERS)}")
        options = adapter_options(self.adapter)
        unknown = [k for k in self.adapter_kwargs if k not in options]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), list(options), n=1)
            said = f"did you mean 'model.adapter_kwargs.{close[0]}'? " if close else ""
            raise ConfigError(f"unknown key 'model.adapter_kwargs.{short(unknown[0])[1:-1]}': {said}the "
                              f"{self.adapter} adapter takes {', '.join(options)}")
        self.adapter_kwargs = {k: _coerce_option(options[k][0], v, f"model.adapter_kwargs.{k}")
                               for k, v in self.adapter_kwargs.items()}
        for k, v in self.adapter_kwargs.items():  # every adapter option is a size or count, or a dropout rate;
            #   mlp_hidden 0 is the reference's one Linear (an LLM up to 1536 wide)
            allowed = (config_lib.Range(ge=0, lt=1) if isinstance(v, float)
                       else config_lib.Range(ge=0 if k == "mlp_hidden" else 1))
            if allowed.problem(v):
                raise ConfigError(f"model.adapter_kwargs.{k} {allowed.problem(v)}, got {short(v)}")
        if self.init_from is not None and not self.init_from.strip():  # "model.init_from=$ASR_FINAL" unset: it
            #   trained the stage from a random adapter without a word
            raise ConfigError("model.init_from is empty (an unset shell variable?); give the previous stage's model "
                              "folder, or write model.init_from=null to start from a fresh adapter")
        if self.adapter == "qformer":
            self._check_heads(options)
        lora = self.lora
        if lora is not None:
            if lora.bias not in LORA_BIAS:
                raise ConfigError(f"model.lora.bias must be none (the paper's; the LLM's own biases are not trained "
                                  f"here), got {short(lora.bias)}")
            if lora.r < 1 or lora.alpha <= 0 or not 0 <= lora.dropout < 1 or not lora.target_modules:
                raise ConfigError(f"model.lora: needs r >= 1, alpha > 0, 0 <= dropout < 1 and at least one of "
                                  f"target_modules; got {short(lora.to_dict())}")

    def _check_heads(self, options: dict) -> None:
        """The Q-Former's attention splits hidden_size over num_heads: a remainder was a transformers traceback once
        the encoder and LLM had loaded. Options left out take the constructor's defaults, except with init_from, whose
        saved adapter supplies them (only the options given are compared with it: `_check_adapter_matches`)."""
        given = self.adapter_kwargs
        if self.init_from and not {"hidden_size", "num_heads"} <= set(given):
            return
        hidden, heads = (given.get(k, options[k][1]) for k in ("hidden_size", "num_heads"))
        if hidden % heads:
            said = {k: "" if k in given else " (the default)" for k in ("hidden_size", "num_heads")}
            raise ConfigError(f"model.adapter_kwargs: hidden_size {hidden}{said['hidden_size']} is not a multiple of "
                              f"num_heads {heads}{said['num_heads']} (each attention head takes hidden_size / "
                              "num_heads); change one of them")


def _coerce_option(tp: Any, value: Any, key: str) -> Any:
    """`config_lib.coerce` for a key checked in `__post_init__`: its error names the dotted key alone (`from_dict`
    adds the file)."""
    try:
        return config_lib.coerce(tp, value, "", key)
    except ConfigError as e:
        raise ConfigError(str(e).removeprefix(": ")) from None


def _check_adapter_matches(m: ModelSection, init: Path) -> str | None:
    """The adapter of a run started from `init` is the one saved there: an adapter option this config sets to
    another value would silently not apply, so it is an error naming the key. Returns the saved adapter's kind when
    it is not this config's `model.adapter` (which may be the default, not chosen: said, not refused)."""
    from ..model.speech_llm import read_config

    saved = read_config(init)
    kwargs = saved.get("adapter_kwargs") or {}
    if m.adapter_kwargs and saved.get("adapter") != m.adapter:
        raise ConfigError(f"model.adapter: {m.adapter} here, but model.init_from {init} holds a {saved.get('adapter')} "
                          "adapter (it is the one trained on); set the same adapter and options or drop them")
    for key, value in m.adapter_kwargs.items():
        if kwargs.get(key) != value:
            raise ConfigError(f"model.adapter_kwargs.{key}: {value!r} here, but the adapter of model.init_from {init} "
                              f"has {kwargs.get(key)!r} (its adapter is the one trained on); make them match or drop "
                              "the key")
    return saved.get("adapter") if saved.get("adapter") not in (None, m.adapter) else None


@dataclass
class OptimSection:
    lr: float = field(default=1e-4, metadata=bounds(gt=0))  # peak learning rate (AdamW)
    warmup_steps: int = field(default=1000, metadata=bounds(ge=0))  # linear warm-up from 0
    schedule: Literal["constant", "linear", "cosine"] = "constant"  # after warm-up
    weight_decay: float = field(default=0.0, metadata=bounds(ge=0))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=bounds(ge=0, lt=1))
    grad_clip: float = field(default=1.0, metadata=bounds(ge=0))  # max global grad norm (0 = off)
    accumulation: int = field(default=1, metadata=bounds(ge=1))  # micro-batches per optimizer step


@dataclass
class TrainConfig:
    stage: str = "asr"  # a name for logs (asr, smt, srt, baseline, ...)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainable: list[str] = field(default_factory=lambda: ["adapter"])  # adapter | lora
    ctc: CTCLoss = field(default_factory=CTCLoss)  # an auxiliary CTC loss aligning the adapter's output with the
    #   LLM's input embeddings of the transcript: {weight, only, negatives} (model/ctc.py)
    device: str = "auto"  # auto (the rank's GPU when there is one, else the CPU) | cpu | cuda | cuda:N
    dtype: str = "auto"  # frozen encoder / LLM weights: auto (bfloat16 on CUDA 8.0+, else float32) | float32 |
    #   bfloat16 (float16 and int8 are for inference); the adapter and LoRA always train in float32
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # autocast: auto = bf16 on CUDA with
    #   native bfloat16 (compute capability 8.0+), else fp32
    activation_checkpointing: bool = False  # recompute each LLM decoder layer in backward (memory for time)
    distributed: Literal["ddp", "fsdp"] = "ddp"  # ddp (whole model per rank) | fsdp (LLM sharded), any world size
    fsdp_within_node: bool = False  # fsdp on several nodes: shard the LLM within each node, replicate it across
    #   nodes (HSDP): its frozen weights are gathered over the node's own links only; each GPU holds 1/(its node's
    #   GPUs) of it, not 1/(all GPUs)
    distributed_timeout_min: float = field(default=30.0, metadata=bounds(gt=0, le=10080))  # how long a rank
    #   waits for the others in a collective before failing (at most a week)
    max_steps: int = field(default=1000, metadata=bounds(ge=1))  # optimizer steps
    log_every: int = field(default=10, metadata=bounds(ge=1))  # steps between train_log.jsonl lines
    eval_every: int = field(default=0, metadata=bounds(ge=0))  # steps between dev evaluations (0 = only at the
    #   end, if dev is set)
    save_every: int = field(default=100, metadata=bounds(ge=1))  # steps between checkpoints
    keep_last: int = field(default=2, metadata=bounds(ge=1, note="the newest checkpoint is always kept"))  # checkpoints
    #   kept (plus the best by dev loss)
    final_weights: Literal["last", "best"] = "last"  # final/ (and so the next stage's start): the last step's
    #   trainable weights, or the best checkpoint's by dev loss (the reference keeps the checkpoint whose dev loss
    #   improved; needs data.dev)
    seed: int = field(default=0, metadata=bounds(ge=0, le=2**32 - 1))  # model init / dropout seed
    threads: int = field(default=0, metadata=bounds(ge=0, le=4096))  # torch CPU threads (0 = torch's default)
    output_dir: str = "runs/default"
    allow_changes: bool = False  # resume even if settings that shape training (lr, batch size, task mix, manifest
    #   content, ...: train/resume.py) differ from the checkpoint's; the new ones apply from the resumed step

    def __post_init__(self):
        from ..model.speech_llm import TRAINABLE  # checked here, not after the LLM has loaded (a curriculum
        #   would otherwise learn of a typo in its last stage after days of the earlier ones)
        config_lib.check_bounds(self)  # also a config composed with dataclasses.replace (a curriculum's, the demo's)
        if not self.output_dir.strip():  # the run's checkpoints, final/, log and lock in the working folder
            raise ConfigError("output_dir is empty, which would be the current folder; name the run's folder, e.g. "
                              "runs/NAME")
        if not self.trainable:
            raise ConfigError("trainable is empty, so nothing would train; list adapter and/or lora, e.g. [adapter]")
        if unknown := [g for g in self.trainable if g not in TRAINABLE]:
            raise ConfigError(f"trainable: unknown group(s) {short(unknown)}; choose from {', '.join(TRAINABLE)}")
        if "lora" in self.trainable and self.model.lora is None:
            raise ConfigError("trainable lists lora but model.lora is null; set model.lora (e.g. {r: 8, alpha: 32}) "
                              "or drop lora from trainable")
        if self.fsdp_within_node and self.distributed != "fsdp":
            raise ConfigError("fsdp_within_node: true needs distributed: fsdp")
        if self.final_weights == "best" and not self.data.dev:
            raise ConfigError("final_weights: best takes the checkpoint with the lowest dev loss, and there is no dev "
                              "set; set data.dev, or final_weights: last")
        for key, value, what in (("eval_every", self.eval_every, "evaluates on"),
                                 ("data.dev_decode", self.data.dev_decode, "decodes examples of")):
            if value and not self.data.dev:  # silently no evaluation at all (final_weights: best is refused so too)
                raise ConfigError(f"{key} {value} {what} the dev set, and there is no dev set; set data.dev, or "
                                  f"{key}=0")
        for name in self.data.tasks:
            try:
                Task.trainable_named(name)
            except LLMSRTError as e:
                raise ConfigError(f"data.tasks: {e}") from None
        if {Task.S2TT.value, Task.SRT.value} <= set(self.data.tasks):  # the same speech and prompt with two
            #   targets (Table 1: transcript<|src|><|tgt|>translation, or the translation alone)
            raise ConfigError(f"data.tasks {dict(self.data.tasks)}: s2tt and srt share the prompt <|src|><|tgt|>; "
                              "train them in separate stages")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {short(self.device)}")
        if self.dtype != "auto" and self.dtype not in device_lib.DTYPES:
            raise ConfigError(f"dtype must be auto, float32 or bfloat16 (the frozen weights'; float16 and int8 are "
                              f"for inference), got {short(self.dtype)}")
        if device_lib.DTYPES.get(self.dtype) is torch.float16:  # float16 or fp16: frozen weights: under bf16
            #   autocast two half formats meet (their sums promote to float32), and without it the gradients through
            #   the LLM have no loss scaling to keep them
            raise ConfigError("dtype: float16 is for inference; training takes bfloat16 (the paper's, auto on a GPU) "
                              "or float32 frozen weights")
        if self.ctc.active and set(self.data.tasks) == {Task.MT.value}:
            raise ConfigError("ctc: the CTC loss reads speech; a text-only mt stage cannot use it (set ctc.weight: 0 "
                              "and ctc.only: false)")
        if mixes_text(self.data.tasks):
            if self.data.main_task == Task.MT.value:
                raise ConfigError(f"data.tasks {dict(self.data.tasks)}: text-only mt joins a speech stage as a smaller "
                                  "share than its largest speech task (the dev set and the feature cache follow that "
                                  "task); lower mt's weight")
            if self.ctc.only:
                raise ConfigError("ctc.only trains the adapter against speech alone; drop mt from data.tasks or set "
                                  "ctc.only: false")
            if self.distributed == "fsdp":
                raise ConfigError("data.tasks mixes text-only mt with speech tasks, which distributed: fsdp does not "
                                  "support (every rank must run the same modules at each step); use ddp")
        if Task.MT.value in self.data.tasks and "lora" not in self.trainable:
            raise ConfigError(f"data.tasks: text-only mt trains the LLM's LoRA alone (no speech, no adapter), but "
                              f"trainable is {list(self.trainable)}; add lora (and model.lora) or drop mt")
        if self.ctc.only and list(self.trainable) != ["adapter"]:
            raise ConfigError(f"ctc.only trains the adapter alone (the LLM does not run), but trainable is "
                              f"{list(self.trainable)}; set trainable: [adapter] or ctc.only: false")
        if self.ctc.active and "adapter" not in self.trainable:  # the CTC loss scores the adapter's output with its
            #   head (trained as `adapter`) against the frozen input embeddings: with both frozen it trained nothing,
            #   and only added a term to every logged loss
            raise ConfigError(f"ctc.weight {self.ctc.weight}: the CTC loss trains the adapter and its CTC head, but "
                              f"trainable is {list(self.trainable)}; add adapter to trainable or set ctc.weight: 0")
        if device_lib.is_int8(self.dtype):
            raise ConfigError("dtype int8 is for CPU inference only (int8 layers have no gradient); train in "
                              "float32 or bfloat16 and pass --dtype int8 to translate/evaluate/serve")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """The config of the YAML at `path` with `overrides`; one that names no stage (neither the YAML nor an override)
    is named by its file (x.yaml: x), as a curriculum's stage is: TrainConfig's default named every line of
    `llm-srt train x.yaml`, its stop line included, "[asr]" whatever stage it trained."""
    cfg = config_lib.load(TrainConfig, path, overrides)
    if path is None or any(item.partition("=")[0].strip() == "stage" for item in overrides or []):
        return cfg
    written = config_lib.parse_yaml(Path(path).read_text(encoding="utf-8")) or {}  # (read whole by load above)
    return cfg if "stage" in written else replace(cfg, stage=Path(path).stem)
