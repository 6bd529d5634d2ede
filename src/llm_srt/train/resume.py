"""What a resumed run must share with its checkpoint: the settings that shape training, and the data by content.

A checkpoint stores `run_settings(cfg)`; resuming compares them with the new run's. A difference (a changed lr,
batch size, task mix, a manifest whose content changed) stops the run with a one-line error naming what changed,
unless the config says `allow_changes: true` (then the new settings apply from the resumed step, and the run log
names them). Keys that may change freely are listed in FREE_ON_RESUME: everything else is compared, so a new
config key is guarded until someone decides otherwise.
"""

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

from ..config import short
from ..model.adapter import ADAPTERS
from ..model.ctc import CTCLoss
from ..paths import weights_identity

FREE_ON_RESUME = frozenset({
    "stage", "max_steps", "log_every", "eval_every", "save_every", "keep_last", "threads", "output_dir",
    "allow_changes", "final_weights",
    # where and how it runs, not what it computes (resume across devices / strategies is supported and tested)
    "device", "distributed", "distributed_timeout_min", "activation_checkpointing", "fsdp_within_node",
    # paths that differ between hosts (the frozen models are compared by their weights: FROZEN_KEYS; the starting
    # model by INIT_KEY; the checkpoint has the rest)
    "model.encoder", "model.llm", "model.init_from",
    # how batches are built, not which (data.train / data.dev are compared by content below); a feature cache turned
    # on or off changes the features' rounding, said in the log (`cache_note`), not refused: the cache may have to go
    "data.num_workers", "data.feature_cache", "data.precompute_features", "data.dev_decode"})
CONTENT_KEYS = ("data.train", "data.dev")  # manifests: compared by a hash of their bytes, not by path
INIT_KEY = "model.init_from weights"  # the starting model by content (its path may differ between hosts); compared
#   only when the checkpoint stored it (older ones did not)
FROZEN_KEYS = {"model.encoder weights": "encoder", "model.llm weights": "llm"}  # the frozen
#   models by a sample of their weight files (`paths.weights_identity`): another LLM of the same shape (an instruct
#   model for the base one) loads without a shape error; compared only when both sides have one


# what the checkpoint's trained tensors and their Adam moments are shaped by (the adapter's kind and options, the
# LoRA's rank, layers and bias mode, which parts train, whether the CTC head is there): another value cannot resume,
# allow_changes or not (the weights would not load: peft's or torch's many-line error); lora.alpha and
# lora.dropout scale and drop the same tensors, so they may change, as the adapter's float options (dropout) and
# SHAPELESS ones may; lists are compared as sets, an adapter's options with its defaults filled in
SHAPING = ("model.adapter", "model.lora.r", "model.lora.target_modules", "model.lora.bias", "trainable")
SHAPELESS = ("num_heads",)  # adapter options that shape no parameter (the Q-Former's heads split one projection)
ADAPTER_OPTIONS = "model.adapter_kwargs"  # compared with the adapter's defaults filled in (`_with_defaults`)
PER_STEP = "examples per step (data.batch_size x optim.accumulation x ranks)"
WEIGHTED = "data.train_weights weigh"  # what the weights share out (`loader.weighted_by_kind`)
UNSET = object()  # a key one side of a comparison lacks
START_STEP = "data.start_step"  # where a fresh start's data stream begins: no resume can take another
#   (preflight._check_same_seed); a record from before the key began at step 0 (NEWER_DEFAULTS)
NEWER_DEFAULTS = {START_STEP: 0}  # keys a checkpoint or final/ from before them lacks -> the value it trained with
ORDERED = ("data.tasks",)  # mappings whose order is a setting: a task mix lays out its slots and seeds each task's
#   draw in its order, and its main task (the dev set's) is the first of the largest shares (`SpeechTextDataset`);
#   a checkpoint stores them in order (JSON objects keep it), so an older record of the same order is no change


def run_settings(cfg, world: int = 1) -> dict[str, Any]:
    """The settings a resume must match, as JSON values: dotted key -> value; manifests as content hashes.
    optim.accumulation may trade against the number of ranks (`world`): their product with the batch size is
    compared (4 ranks x 1 micro-batch resume 1 rank x 4, the same examples per optimizer step)."""
    flat = _flatten(cfg)
    settings = {k: v for k, v in flat.items() if k not in FREE_ON_RESUME and k not in CONTENT_KEYS
                and k != "optim.accumulation"}
    settings[PER_STEP] = cfg.data.batch_size * cfg.optim.accumulation * world
    settings["data.train"] = [file_hash(m) for m in cfg.data.manifests]
    settings["data.dev"] = file_hash(cfg.data.dev) if cfg.data.dev else None
    if cfg.data.train_weights is not None:  # since 2026-12-05: a checkpoint of the older weighting (all rows) has
        settings[WEIGHTED] = "each kind of row"  # none, so its resume stops instead of reading another epoch order
    settings[INIT_KEY] = init_identity(cfg.model.init_from)
    for key, kind in FROZEN_KEYS.items():
        settings[key] = weights_identity(getattr(cfg.model, kind), kind)
    return json.loads(json.dumps(settings))  # tuples as lists: as they come back from the checkpoint


def cache_note(saved_config: dict, cfg) -> str | None:
    """A line for the run log when the feature cache was turned on or off since the checkpoint (`saved_config`: its
    whole config): the resumed run goes on, but not bit-identical to an uninterrupted one. Another cache folder is
    the same features, and data.precompute_features only says when they are computed (the same numbers)."""
    data = saved_config.get("data")
    if not isinstance(data, dict) or "feature_cache" not in data:
        return None
    if cfg.data.main_task == "mt":  # a text MT stage reads no features, cached or not
        return None
    was, now = data["feature_cache"] is not None, cfg.data.feature_cache is not None
    if was == now:
        return None
    said = {True: "on", False: "null"}
    return (f"data.feature_cache changed since the checkpoint ({said[was]} -> {said[now]}): the run goes on, not "
            "bit-identical from here (cached encoder features are rounded to float16, computed ones are not)")


def listed(changed: list[str], shown: int = 3) -> str:
    """The first `shown` changes for a one-line error, and how many more there are."""
    more = f" and {len(changed) - shown} more" if len(changed) > shown else ""
    return "; ".join(changed[:shown]) + more


def changes(saved: dict[str, Any], current: dict[str, Any], init_from: str | Path | None = UNSET) -> list[str]:
    """What differs between a checkpoint's settings and this run's, one short phrase each; `init_from`: this run's
    model.init_from, which says why its weights are missing (no folder named, gone, or none there)."""
    found = []
    for key in sorted(set(saved) | set(current)):
        if key in FREE_ON_RESUME:
            continue
        old, new = (side.get(key, NEWER_DEFAULTS.get(key, UNSET)) for side in (saved, current))
        if key == ADAPTER_OPTIONS and saved.get("model.adapter") == current.get("model.adapter"):
            old, new = (_with_defaults(current.get("model.adapter"), side) for side in (old, new))  # (another kind
            #   of adapter: the options as written; its defaults would all read as changes)
        if key in ORDERED and _reordered(old, new):
            found.append(f"{key} order {short(list(old))} -> {short(list(new))} (the data order and, on a tie, the "
                         "main task follow it)")
        if old == new or key == INIT_KEY and key not in saved:
            continue
        if key in FROZEN_KEYS:
            if key in saved and old is not None and new is not None:
                found.append(f"{key.split()[0]} (it holds other weights than the checkpoint's run was trained with)")
            continue
        if key == INIT_KEY:
            found.append(_init_from_change(new, init_from))
        elif key == WEIGHTED:
            found.append("data.train_weights (the checkpoint's run weighted all rows together; they now weigh each "
                         "kind of row apart, another epoch order: allow_changes=true goes on with it)")
        elif key in CONTENT_KEYS:
            found.append(f"{key} (the manifests' content or list changed)")
        else:
            found.extend(_differences(key, old, new))
    return found


def _init_from_change(identity: str | None, init_from: str | Path | None) -> str:
    """What differs in the weights the run started from: other weights, or none (`identity` None), and why."""
    if identity is not None:
        return "model.init_from (it holds other weights than the checkpoint's run started from)"
    if init_from is None:
        return ("model.init_from (the checkpoint's run started from a model folder, this config names none; a resume "
                "loads it again under the checkpoint's weights: give it)")
    if init_from is UNSET or not Path(init_from).exists():
        return ("model.init_from (no weights there: the folder the checkpoint's run started from is gone or moved, "
                "and a resume loads it again under the checkpoint's weights; copy it back or fix the path)")
    return (f"model.init_from (no *.safetensors in {short(str(init_from))}, where the checkpoint's run started from "
            "weights; give the folder it started from)")


def shape_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Of the differences `changes` finds, those no resume can take (SHAPING, LoRA added or removed, the CTC head
    coming or going). A run started from model.init_from builds that folder's adapter (`_check_adapter_matches`),
    whatever its config says: its adapter settings are left out."""
    def shaping(settings: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in settings.items():
            if not k.startswith(SHAPING) or k.startswith("model.adapter") and current.get(INIT_KEY) is not None:
                continue
            if k == "model.adapter_kwargs" and isinstance(v, dict):
                v = _shaping_options(settings.get("model.adapter"), v)
            elif isinstance(v, list):  # target_modules, trainable: which, not in what order
                v = sorted(map(str, v))
            out[k] = v
        return out

    found = []
    lora = [("model.lora" in s and s["model.lora"] is None) for s in (saved, current)]  # flattened: None, or r...
    if lora[0] != lora[1]:
        found.append("model.lora removed" if lora[1] else f"model.lora added (r {current.get('model.lora.r')})")
    found += [c for c in changes(shaping(saved), shaping(current)) if not (lora[0] != lora[1]
                                                                           and c.startswith("model.lora."))]
    if _ctc_head(saved) != _ctc_head(current):
        found.append(f"ctc.weight / ctc.only (the CTC head's parameters {'come' if _ctc_head(current) else 'go'})")
    return found


def carries_over(shaping: list[str]) -> bool:
    """Whether the weights of a checkpoint whose resume `shape_changes` refused load as model.init_from of a new
    run: only a change of which parts train, of the CTC head, or LoRA added (it starts afresh) leaves every saved
    tensor its shape."""
    return all(c.startswith(("trainable", "ctc.", "model.lora added")) for c in shaping)


def _with_defaults(kind: Any, options: Any) -> Any:
    """An adapter's options (model.adapter_kwargs) with its constructor's defaults filled in: an option spelled out at
    its default is no change (`dropout: 0.1` was "model.adapter_kwargs.dropout (unset) -> 0.1", add allow_changes);
    as given where they are not a mapping or the kind is not known."""
    cls = ADAPTERS.get(kind) if isinstance(kind, str) else None
    if cls is None or not isinstance(options, dict):
        return options
    defaults = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **options}


def _shaping_options(kind: Any, options: dict) -> dict:
    """An adapter's options as they shape its parameters: its constructor's defaults filled in (`_with_defaults`),
    float options (dropout) and SHAPELESS ones left out."""
    return {n: v for n, v in _with_defaults(kind, options).items() if not isinstance(v, float) and n not in SHAPELESS}


def _ctc_head(settings: dict[str, Any]) -> bool:
    """Whether the run's settings train a CTC head (`CTCLoss.active` of the flattened ctc keys; absent: none)."""
    return CTCLoss(weight=settings.get("ctc.weight") or 0.0, only=bool(settings.get("ctc.only"))).active


def _differences(key: str, old: Any, new: Any) -> list[str]:
    """`key old -> new`; for two mappings, each sub-key that differs (`model.adapter_kwargs.num_queries 4 -> 8`,
    recursively): a shortened repr of the whole mapping cut off the key that changed."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for sub in sorted(set(old) | set(new), key=str):
            a, b = old.get(sub, UNSET), new.get(sub, UNSET)
            if a != b:
                found.extend(_differences(f"{key}.{sub}", a, b))
        return found
    return [f"{key} {_said(old)} -> {_said(new)}"]


def _reordered(old: Any, new: Any) -> bool:
    """Whether two mappings hold the same keys in another order (`==` ignores the order of a dict's keys)."""
    return isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys() and list(old) != list(new)


def _said(value: Any) -> str:
    return "(unset)" if value is UNSET else short(value)


def file_hash(path: str | Path) -> str | None:
    """sha256 of a file's bytes (None if it cannot be read: loading the data says why, later)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def init_identity(folder: str | Path | None) -> str | None:
    """sha256 over the trainable weights (*.safetensors) of a model folder; None without one (or none there)."""
    files = sorted(Path(folder).glob("*.safetensors")) if folder else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{file_hash(f)}\n".encode())
    return h.hexdigest()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out
