"""Import a reference LLM-SRT / SLAM-LLM `model.pt` (trainable parameters only) into a SpeechLLM folder.

The reference saves `encoder_projector.query` (1, nq, 768), `encoder_projector.qformer.*` (HF Blip2QFormerModel),
`encoder_projector.linear|norm.*` (d_llm <= 1536) or `encoder_projector.linear1|linear2|norm.*`, and, with LoRA,
`llm.base_model.model.<...>.lora_A|lora_B.default.weight`. Every dimension is read from the tensors. Its Whisper ran
on 30 s padded input, so the imported model does too (pad_to_30s).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from ..errors import LLMSRTError
from ..paths import EMBEDDED
from .adapter import QFORMER_HEADS, QFORMER_HIDDEN
from .llm import LoraOptions
from .speech_llm import SpeechLLM, SpeechLLMConfig, load_adapter_state, load_lora_state

PROJECTOR = "encoder_projector."
LORA_PREFIX = "llm."
HEAD_DIM = QFORMER_HIDDEN // QFORMER_HEADS  # BERT convention (768 / 12 heads): heads are not stored in the weights
REFERENCE_LORA_ALPHA = 32  # paper; alpha is not stored in the weights either
_LAYER = re.compile(r"^qformer\.encoder\.layer\.(\d+)\.")
_TEXT_BRANCH = re.compile(r"^qformer\.encoder\.layer\.\d+\.(intermediate|output)\.")  # unused by query-only input


def convert_slam(ckpt_path: str | Path, dst_dir: str | Path, encoder_dir: str | Path, llm_dir: str | Path,
                 num_heads: int | None = None, lora_alpha: int = REFERENCE_LORA_ALPHA) -> Path:
    """Reference checkpoint -> SpeechLLM folder at `dst_dir` (config.json, adapter.safetensors[, lora])."""
    state = _load(Path(ckpt_path))
    projector = {k[len(PROJECTOR):]: v.float() for k, v in state.items() if k.startswith(PROJECTOR)}
    if "query" not in projector:
        raise LLMSRTError(f"{ckpt_path}: no {PROJECTOR}query tensor; only Q-Former projectors of LLM-SRT / SLAM-LLM "
                          "checkpoints can be imported")
    projector = {k: v for k, v in projector.items() if not _TEXT_BRANCH.match(k)}
    adapter_kwargs = _qformer_kwargs(projector, num_heads)
    lora_state = {_peft_key(k): v.float() for k, v in state.items() if k.startswith(LORA_PREFIX) and "lora_" in k}
    lora = _lora_options(lora_state, lora_alpha) if lora_state else None
    config = SpeechLLMConfig(encoder=_model_path(encoder_dir), llm=_model_path(llm_dir), adapter="qformer",
                             adapter_kwargs=adapter_kwargs, lora=lora,
                             trainable=("adapter", "lora") if lora else ("adapter",), pad_to_30s=True)
    model = SpeechLLM(config, llm_device="meta")  # only its shapes and LoRA names are needed: no LLM weight is read
    encoder_dim = next(v.shape[1] for k, v in projector.items() if k.endswith("crossattention.attention.key.weight"))
    if model.encoder_dim != encoder_dim:
        raise LLMSRTError(f"{ckpt_path}: the Q-Former reads {encoder_dim}-dim speech features but {encoder_dir} has "
                          f"{model.encoder_dim}; give the Whisper model the checkpoint was trained with")
    if model.llm_dim != projector["norm.weight"].shape[0]:
        raise LLMSRTError(f"{ckpt_path}: the projector outputs {projector['norm.weight'].shape[0]} dims but "
                          f"{llm_dir} has hidden size {model.llm_dim}; give the LLM the checkpoint was trained with")
    load_adapter_state(model.adapter, projector, str(ckpt_path))
    if lora_state:  # checks names and shapes against the skeleton (meta tensors keep nothing): saved as read
        with warnings.catch_warnings():  # torch warns, once a tensor, that copying into a meta tensor does nothing
            warnings.filterwarnings("ignore", message=".*to a meta parameter in the current model")
            load_lora_state(model.llm, lora_state, str(ckpt_path))
    return model.save_pretrained(dst_dir, state={"adapter": model.adapter.state_dict(), "lora": lora_state or None,
                                                 "ctc": None})


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
        raise LLMSRTError(f"{path}: cannot read as a torch state dict ({str(e).splitlines()[0]})") from None
    for key in ("model", "state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and PROJECTOR + "query" not in state:
            state = state[key]
    if not isinstance(state, dict):
        raise LLMSRTError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return state


def _qformer_kwargs(p: dict[str, torch.Tensor], num_heads: int | None) -> dict:
    """QFormerAdapter options inferred from the projector's tensor names and shapes."""
    _, num_queries, hidden = p["query"].shape
    layers = sorted({int(m.group(1)) for k in p if (m := _LAYER.match(k))})
    if not layers:
        raise LLMSRTError("the projector has no qformer.encoder.layer.* tensors; is it a Q-Former projector?")
    cross = [i for i in layers if f"qformer.encoder.layer.{i}.crossattention.attention.key.weight" in p]
    if not cross:
        raise LLMSRTError("the Q-Former has no cross-attention layer; cannot attach it to speech")
    frequency = cross[1] - cross[0] if len(cross) > 1 else max(2, len(layers))
    first = f"qformer.encoder.layer.{cross[0]}."
    if "linear1.weight" in p:
        mlp_hidden = p["linear1.weight"].shape[0]
    elif "linear.weight" in p:
        mlp_hidden = 0
    else:
        raise LLMSRTError("the projector has neither linear.* nor linear1.* tensors")
    return {"num_queries": num_queries, "hidden_size": hidden, "num_layers": len(layers),
            "num_heads": num_heads or max(1, hidden // HEAD_DIM),
            "intermediate_size": p[f"{first}intermediate_query.dense.weight"].shape[0],
            "cross_attention_frequency": frequency, "mlp_hidden": mlp_hidden}


def _peft_key(key: str) -> str:
    """'llm.base_model.model.X.lora_A.default.weight' -> 'base_model.model.X.lora_A.weight' (peft's saved form)."""
    return key[len(LORA_PREFIX):].replace(".default.", ".")


def _lora_options(state: dict[str, torch.Tensor], alpha: int) -> LoraOptions:
    rank = next(v.shape[0] for k, v in state.items() if "lora_A" in k)
    targets = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state})
    return LoraOptions(r=rank, alpha=alpha, target_modules=tuple(targets))
