"""Import a reference LLM-SRT / SLAM-LLM `model.pt` (trainable parameters only) into a SpeechLLM folder.

The reference saves `encoder_projector.query` (1, nq, 768), `encoder_projector.qformer.*` (HF Blip2QFormerModel),
`encoder_projector.linear|norm.*` (d_llm <= 1536) or `encoder_projector.linear1|linear2|norm.*`, and, with LoRA,
`llm.base_model.model.<...>.lora_A|lora_B.default.weight`; or, trained with FSDP FULL_SHARD, the LoRA beside model.pt
as peft's `save_pretrained` writes it (adapter_config.json, adapter_model.safetensors|bin). Every dimension is read
from the tensors. The imported model keeps the reference's input: Whisper on 30 s padded input (pad_to_30s), a BOS
after the speech where its tokenizer adds one (bos_after_speech), its language tags (language_tags: <|cmn|> for
Mandarin; <|zho|>, ours, for a model of its earlier data), and its speech embeddings' scale (a Gemma / Gemma-2 LLM's
input x sqrt(hidden_size): `_input_scale`).
The reference's qqm projector (its queries mean-pooled) is refused: only its q-former imports.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import LLMSRTError
from ..paths import EMBEDDED
from .adapter import QFORMER_HEADS, QFORMER_HIDDEN, QFORMER_QUERIES, paper_mlp_hidden
from .llm import LoraOptions
from .speech_llm import SpeechLLM, SpeechLLMConfig, _load_weights, load_adapter_state, load_lora_state

PROJECTOR = "encoder_projector."
LORA_PREFIX = "llm."
ENCODER_PREFIX = "encoder."
PEFT_CONFIG = "adapter_config.json"  # peft's save_pretrained: the reference's save_model_checkpoint_peft_full_shard
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # writes the LoRA so, beside a LoRA-less model.pt
REFERENCE_TAGS = {"zho": "cmn"}  # its data ("prompt": "<|eng|><|cmn|>") and language lists; its other codes of the
#   paper's 15 languages are ours (examples/st_covost2/dataset/st_dataset.py: yue, eng, deu, ... tha). Its earlier
#   data wrote <|zho|> (evaluation/fleurs_enzh_test.jsonl, fleurs_dataset.py): `convert slam --zho-tag zho`
HEAD_DIM = QFORMER_HIDDEN // QFORMER_HEADS  # BERT convention (768 / 12 heads): heads are not stored in the weights
REFERENCE_LORA_ALPHA = 32  # paper; alpha is not stored in the weights either
SCALED_INPUT = ("gemma", "gemma2")  # LLMs whose forward, in the reference's transformers (4.56, beside its torch
#   2.8 pin), multiplied all of inputs_embeds, speech included, by sqrt(hidden_size); ours (5.x) scale in the
#   embedding module: token rows only. (Gemma-3's was such a module in 4.56 already; recurrent_gemma still scales.)
_LAYER = re.compile(r"^qformer\.encoder\.layer\.(\d+)\.")
_TEXT_BRANCH = re.compile(r"^qformer\.encoder\.layer\.\d+\.(intermediate|output)\.")  # unused by query-only input


def convert_slam(ckpt_path: str | Path, dst_dir: str | Path, encoder_dir: str | Path, llm_dir: str | Path,
                 num_heads: int | None = None, lora_alpha: int | None = None,
                 language_tags: dict[str, str] | None = None) -> Path:
    """Reference checkpoint -> SpeechLLM folder at `dst_dir` (config.json, adapter.safetensors[, lora]); prints
    where its LoRA came from and how its input differs from our own models'. `lora_alpha`: default
    REFERENCE_LORA_ALPHA; for a LoRA from a peft adapter beside a model.pt holding none, that adapter config's
    lora_alpha; `language_tags`: default REFERENCE_TAGS ({} for a model trained with our <|zho|>)."""
    from .convert import check_output_dir

    check_output_dir(dst_dir, ckpt_path, encoder_dir, llm_dir)  # the folder is replaced whole: never a source's
    ckpt_path = Path(ckpt_path)
    state = _load(ckpt_path)
    projector = {k[len(PROJECTOR):]: v.float() for k, v in state.items() if k.startswith(PROJECTOR)}
    if "query" not in projector:
        raise LLMSRTError(f"{ckpt_path}: no {PROJECTOR}query tensor; only Q-Former projectors of LLM-SRT / SLAM-LLM "
                          "checkpoints can be imported")
    _check_trained_parts(state, ckpt_path)
    projector = {k: v for k, v in projector.items() if not _TEXT_BRANCH.match(k)}
    adapter_kwargs = _qformer_kwargs(projector, num_heads, ckpt_path)
    lora, lora_state, lora_file, notes = _find_lora(state, ckpt_path, lora_alpha)
    tags = dict(REFERENCE_TAGS if language_tags is None else language_tags)
    config = SpeechLLMConfig(encoder=_model_path(encoder_dir), llm=_model_path(llm_dir), adapter="qformer",
                             adapter_kwargs=adapter_kwargs, lora=lora,
                             trainable=("adapter", "lora") if lora else ("adapter",), pad_to_30s=True,
                             language_tags=tags)
    model = SpeechLLM(config, llm_device="meta")  # only its shapes and LoRA names are needed: no LLM weight is read
    tok = model.tokenizer
    if tok.bos_token_id is not None:  # the reference's input is [speech][tokenizer.encode(prompt)]: a BOS behind
        if tok("x")["input_ids"][:1] != [tok.bos_token_id]:  # the speech where encode adds one, else none at all
            raise LLMSRTError(f"{llm_dir}: its tokenizer names a BOS token ({tok.bos_token}) that it does not add, so "
                              "the reference's input had none, and our models put a named BOS before the speech; give "
                              "a copy of the LLM folder whose tokenizer_config.json names no bos_token")
        model.config = replace(model.config, bos_after_speech=True)
        notes.append("input: [speech][BOS prompt], as the reference's (this LLM's tokenizer adds a BOS)")
    notes.append("language tags: " + (", ".join(f"{code} as <|{own}|>" for code, own in sorted(tags.items()))
                                      if tags else "this toolkit's own (zho as <|zho|>)"))
    encoder_dim = next(v.shape[1] for k, v in projector.items() if k.endswith("crossattention.attention.key.weight"))
    if model.encoder_dim != encoder_dim:
        raise LLMSRTError(f"{ckpt_path}: the Q-Former reads {encoder_dim}-dim speech features but {encoder_dir} has "
                          f"{model.encoder_dim}; give the Whisper model the checkpoint was trained with")
    out_dim = _tensor(projector, "norm.weight", ckpt_path, ("llm_dim",)).shape[0]
    if model.llm_dim != out_dim:
        raise LLMSRTError(f"{ckpt_path}: the projector outputs {out_dim} dims but "
                          f"{llm_dir} has hidden size {model.llm_dim}; give the LLM the checkpoint was trained with")
    _refuse_pooled(adapter_kwargs, model.llm_dim, ckpt_path, notes)
    scale = _input_scale(model.llm.config.model_type, model.llm_dim)
    if scale != 1.0:  # s * LayerNorm(x) is LayerNorm(x) with weight s * gamma and bias s * beta: exact
        for key in ("norm.weight", "norm.bias"):
            projector[key] = projector[key] * scale
        notes.append(f"speech embeddings: x {scale:g} (the projector's LayerNorm weight and bias), as the reference's "
                     f"transformers scaled a {model.llm.config.model_type} LLM's whole input by sqrt(hidden_size) in "
                     "bfloat16; this one scales only the token embeddings")
    load_adapter_state(model.adapter, projector, str(ckpt_path))
    own = {k.replace(".default", ""): tuple(v.shape) for k, v in model.llm.state_dict().items() if "lora_" in k}
    wrong = next((k for k, v in lora_state.items() if own.get(k, tuple(v.shape)) != tuple(v.shape)), None)
    if wrong:  # (load_lora_state says so too, in the words for a folder trained here)
        raise LLMSRTError(f"{lora_file}: LoRA weight {wrong} has shape {tuple(lora_state[wrong].shape)}, the LLM's "
                          f"layer wants {own[wrong]}; give the LLM the LoRA was trained on")
    missing = sorted(k for k in own if k not in lora_state) if lora_state else []
    if missing:  # the layers it adapts come from these tensors: one without its weights would import as untrained
        raise LLMSRTError(f"{lora_file}: no LoRA weight {missing[0]} ({len(missing)} of the {len(own)} that its "
                          f"target modules {', '.join(lora.target_modules)} imply); the file is incomplete, or its "
                          "LoRA adapts only some layers, which this import cannot represent: give the whole file its "
                          "training wrote")
    if lora_state:  # checks names and shapes against the skeleton (meta tensors keep nothing): saved as read
        load_lora_state(model.llm, lora_state, lora_file)
    out = model.save_pretrained(dst_dir, state={"adapter": model.adapter.state_dict(), "lora": lora_state or None,
                                                "ctc": None})
    for note in notes:
        print(note)
    return out


def _input_scale(model_type: str, llm_dim: int) -> float:
    """The factor the reference's LLM put on the speech embeddings and ours does not: its normalizer
    `torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype)` for a SCALED_INPUT LLM, rounded as it ran (bfloat16:
    59.75 for a 3584-wide Gemma-2, not 59.87); 1 for any other. Its projector was trained to output 1/scale of what
    the LLM read, so the import multiplies its last layer, the LayerNorm, by it."""
    return torch.tensor(llm_dim**0.5, dtype=torch.bfloat16).item() if model_type in SCALED_INPUT else 1.0


def _check_trained_parts(state: dict[str, torch.Tensor], path: Path) -> None:
    """Every tensor of model.pt is the projector's or a LoRA weight: the reference saves every trainable parameter,
    and a part trained besides those would be silently replaced by the original model's here."""
    encoder = [k for k in state if k.startswith(ENCODER_PREFIX)]
    llm = [k for k in state if k.startswith(LORA_PREFIX) and "lora_" not in k]
    other = [k for k in state if not k.startswith((PROJECTOR, LORA_PREFIX, ENCODER_PREFIX))]
    cannot = "which this import (projector + LoRA onto a frozen encoder and LLM) cannot represent"
    if encoder:
        raise LLMSRTError(f"{path}: holds {len(encoder)} {ENCODER_PREFIX}* tensors (e.g. {encoder[0]}): this "
                          f"checkpoint also trained the Whisper encoder, {cannot}; run it with the reference's code")
    if llm:
        raise LLMSRTError(f"{path}: holds {len(llm)} {LORA_PREFIX}* tensors that are not LoRA (e.g. {llm[0]}): this "
                          f"checkpoint also trained the LLM's own weights, {cannot}; run it with the reference's code")
    if other:
        raise LLMSRTError(f"{path}: holds {len(other)} tensors of no part of an LLM-SRT / SLAM-LLM model (e.g. "
                          f"{other[0]}); give the model.pt the reference's training wrote")


def _find_lora(state: dict[str, torch.Tensor], path: Path, alpha: int | None
               ) -> tuple[LoraOptions | None, dict[str, torch.Tensor], str, list[str]]:
    """The checkpoint's LoRA: its options, its weights in peft's saved form, the file they came from, and the lines
    that say so. In model.pt, else in a peft adapter beside it (FSDP FULL_SHARD), else none."""
    inside = {_peft_key(k): v.float() for k, v in state.items() if k.startswith(LORA_PREFIX) and "lora_" in k}
    beside = path.parent / PEFT_CONFIG
    if inside:
        lora = _lora_options(inside, alpha or REFERENCE_LORA_ALPHA, path)
        notes = [f"lora: {_describe(lora)}, from {path.name}"]
        if beside.is_file():
            notes.append(f"lora: the peft adapter beside {path.name} ({beside}) is not used: {path.name} has its own")
        return lora, inside, str(path), notes
    if not beside.is_file():
        return None, {}, "", []
    lora, weights, file = _peft_adapter(beside, alpha)
    return lora, weights, str(file), [f"lora: {_describe(lora)}, from the peft adapter beside {path.name} ({file})"]


def _peft_adapter(config_file: Path, alpha: int | None) -> tuple[LoraOptions, dict[str, torch.Tensor], Path]:
    """A peft LoRA adapter folder (`save_pretrained`) -> its options, weights in peft's saved form, weights file."""
    try:
        cfg = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LLMSRTError(f"{config_file}: cannot read the peft adapter config ({type(e).__name__}); copy it "
                          "again") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type", "LORA") != "LORA" or not isinstance(cfg.get("r"), int):
        raise LLMSRTError(f"{config_file}: not a peft LoRA config (peft_type LORA, an integer r); move it away from "
                          "model.pt or give the adapter peft wrote")
    unsupported = [k for k in ("use_rslora", "use_dora", "rank_pattern", "alpha_pattern") if cfg.get(k)]
    if unsupported or cfg.get("bias", "none") != "none":
        raise LLMSRTError(f"{config_file}: sets {(unsupported or ['bias'])[0]}, which this import's LoRA (alpha / r "
                          "scaling, no bias) cannot represent; run it with the reference's code")
    if alpha is not None and alpha != cfg.get("lora_alpha", alpha):
        raise LLMSRTError(f"{config_file}: lora_alpha is {cfg['lora_alpha']} but {alpha} was given; leave "
                          "--lora-alpha out")
    file = next((config_file.parent / n for n in PEFT_WEIGHTS if (config_file.parent / n).is_file()), None)
    if file is None:
        raise LLMSRTError(f"{config_file.parent}: has {PEFT_CONFIG} but neither {' nor '.join(PEFT_WEIGHTS)}; copy "
                          "the adapter's weights beside it")
    raw = _load(file) if file.suffix == ".bin" else _load_weights(file)
    weights = {_peft_key(k): v.float() for k, v in raw.items() if "lora_" in k}
    other = [k for k in raw if "lora_" not in k]
    if other:
        raise LLMSRTError(f"{file}: holds {len(other)} tensors that are not LoRA (e.g. {other[0]}): the LLM's own "
                          "weights were trained too, which this import cannot represent; run it with the reference's "
                          "code")
    if not weights:  # newer peft's save_pretrained, given the reference's llm.-named state dict, saves nothing
        raise LLMSRTError(f"{file}: holds no LoRA weights (saved empty); give the adapter with the trained weights, or "
                          "a model.pt holding them")
    options = _lora_options(weights, alpha or cfg.get("lora_alpha", REFERENCE_LORA_ALPHA), file)
    if options.r != cfg["r"]:
        raise LLMSRTError(f"{file}: LoRA rank {options.r}, but {config_file.name} says r={cfg['r']}; the two files "
                          "come from different runs")
    targets = cfg.get("target_modules")  # module names, or peft's regex string (then the modules the weights adapt)
    return replace(options, dropout=float(cfg.get("lora_dropout", options.dropout)),
                   target_modules=tuple(targets) if isinstance(targets, list) and targets else options.target_modules
                   ), weights, file


def _describe(lora: LoraOptions) -> str:
    return f"r={lora.r}, alpha={lora.alpha} on {', '.join(lora.target_modules)}"


def _model_path(path: str | Path) -> str:
    """A model folder as config.json stores it: absolute, so that the output folder loads from any directory
    (`from_pretrained` takes a relative one relative to the checkpoint folder); "embedded" as it is."""
    return EMBEDDED if str(path) == EMBEDDED else str(Path(path).expanduser().absolute())


def _load(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LLMSRTError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise LLMSRTError(f"{path}: not a PyTorch checkpoint torch can read ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160]}); give the model.pt the reference LLM-SRT / SLAM-LLM "
                          "training wrote") from None
    for key in ("model", "state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and PROJECTOR + "query" not in state:
            state = state[key]
    if not isinstance(state, dict):
        raise LLMSRTError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    bad = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:  # weights_only loads ints and strings too, where each use assumed a named tensor
        what = (f"{bad!r} is of type {type(state[bad]).__name__}, not a tensor" if isinstance(bad, str)
                else f"an entry is named by {type(bad).__name__} {bad!r:.40}, not a string")
        raise LLMSRTError(f"{path}: {what} (the reference's training saves named tensors only); give the file its "
                          "training wrote")
    return state


def _qformer_kwargs(p: dict[str, torch.Tensor], num_heads: int | None, path: Path) -> dict:
    """QFormerAdapter options inferred from the projector's tensor names and shapes (each shape read through
    `_tensor`: one missing or of another rank was a KeyError or ValueError traceback)."""
    _, num_queries, hidden = _tensor(p, "query", path, ("1", "queries", "hidden")).shape
    layers = sorted({int(m.group(1)) for k in p if (m := _LAYER.match(k))})
    if not layers:
        raise LLMSRTError(f"{path}: the projector has no {PROJECTOR}qformer.encoder.layer.* tensors; only Q-Former "
                          "projectors of LLM-SRT / SLAM-LLM checkpoints can be imported")
    cross = [i for i in layers if f"qformer.encoder.layer.{i}.crossattention.attention.key.weight" in p]
    if not cross:
        raise LLMSRTError(f"{path}: the Q-Former has no cross-attention layer (no {PROJECTOR}qformer.encoder.layer.*."
                          "crossattention.attention.key.weight), so it cannot attend to speech; give the whole "
                          "model.pt its training wrote")
    frequency = cross[1] - cross[0] if len(cross) > 1 else max(2, len(layers))
    first = f"qformer.encoder.layer.{cross[0]}."
    _tensor(p, f"{first}crossattention.attention.key.weight", path, ("hidden", "encoder_dim"))
    if "linear1.weight" in p:
        mlp_hidden = _tensor(p, "linear1.weight", path, ("mlp_hidden", "hidden")).shape[0]
    elif "linear.weight" in p:
        mlp_hidden = 0
    else:
        raise LLMSRTError(f"{path}: the projector has neither {PROJECTOR}linear.* nor linear1.* tensors; give the "
                          "whole model.pt its training wrote")
    default = max(1, hidden // HEAD_DIM)
    heads = default if num_heads is None else num_heads
    if heads < 1 or hidden % heads:  # transformers' ValueError came from building the adapter, the encoder loaded
        raise LLMSRTError(f"{path}: --num-heads {num_heads} does not divide the Q-Former's hidden size {hidden} (each "
                          f"head takes hidden / heads); give the heads it was trained with (default hidden / "
                          f"{HEAD_DIM}: {default})" if num_heads is not None else
                          f"{path}: the Q-Former's hidden size {hidden} does not split into hidden / {HEAD_DIM} = "
                          f"{default} heads (the default); give --num-heads, the heads it was trained with")
    return {"num_queries": num_queries, "hidden_size": hidden, "num_layers": len(layers), "num_heads": heads,
            "intermediate_size": _tensor(p, f"{first}intermediate_query.dense.weight", path,
                                         ("intermediate_size", "hidden")).shape[0],
            "cross_attention_frequency": frequency, "mlp_hidden": mlp_hidden}


def _tensor(p: dict[str, torch.Tensor], key: str, path: Path, dims: tuple[str, ...]) -> torch.Tensor:
    """The projector tensor `key`, whose shape is read before the adapter's own check (`load_adapter_state`), in
    the reference's `dims`; else a one-line error naming it, as that check's."""
    if key not in p:
        raise LLMSRTError(f"{path}: no {PROJECTOR}{key} tensor, which the reference's Q-Former projector saves; the "
                          "file is incomplete or another projector's: give the whole model.pt its training wrote")
    if p[key].dim() != len(dims) or 0 in p[key].shape:
        raise LLMSRTError(f"{path}: {PROJECTOR}{key} has shape {tuple(p[key].shape)}, the reference's is "
                          f"({', '.join(dims)}); the file is damaged or another projector's: give the model.pt its "
                          "training wrote")
    return p[key]


QQM_MLP_HIDDEN = 2560  # the reference's qqm projector (EncoderProjectorQFormerPool): its MLP's width at any LLM width


def _refuse_pooled(kwargs: dict, llm_dim: int, path: Path, notes: list[str]) -> None:
    """Refuse the reference's qqm projector: its tensors are named as the q-former's, but it mean-pools its queries
    (150 by default) in groups of encoder_projector_ds_rate before the MLP, which our Q-Former does not: imported
    as a q-former it would give the LLM 5x the speech tokens it learned from. Its MLP is 2560 wide where the
    q-former's is 1536 or none (an LLM up to 2560 wide); above that only the query count hints at it."""
    if kwargs["mlp_hidden"] != QQM_MLP_HIDDEN:
        return
    if paper_mlp_hidden(llm_dim) != QQM_MLP_HIDDEN:
        raise LLMSRTError(f"{path}: the projector's MLP is {QQM_MLP_HIDDEN} wide for a {llm_dim}-wide LLM, as the "
                          "reference's qqm projector (queries mean-pooled before the MLP) has it; only its q-former "
                          "projector (encoder_projector=q-former) can be imported")
    if kwargs["num_queries"] != QFORMER_QUERIES:
        notes.append(f"projector: {kwargs['num_queries']} queries (the paper's q-former has {QFORMER_QUERIES}); "
                     "imported as a q-former: a qqm projector (its queries mean-pooled) would be imported wrongly")


def _peft_key(key: str) -> str:
    """'llm.base_model.model.X.lora_A.default.weight' -> 'base_model.model.X.lora_A.weight' (peft's saved form; the
    reference's full-shard save hands peft its own 'llm.'-named keys, so an adapter file may have the prefix too)."""
    return key.removeprefix(LORA_PREFIX).replace(".default.", ".")


def _lora_options(state: dict[str, torch.Tensor], alpha: int, where: Path) -> LoraOptions:
    rank = next((v.shape[0] for k, v in state.items() if "lora_A" in k and v.dim()), None)
    if rank is None:  # (a StopIteration from a file of lora_B weights alone)
        raise LLMSRTError(f"{where}: LoRA weights without any lora_A (e.g. {next(iter(state))}); the file is "
                          "incomplete: give the whole file its training wrote")
    targets = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state})
    return LoraOptions(r=rank, alpha=alpha, target_modules=tuple(targets))
