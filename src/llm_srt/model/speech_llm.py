"""SpeechLLM = frozen Whisper encoder + trainable adapter + frozen causal LLM (optional LoRA).

Input sequence per example: [BOS if the tokenizer has one ; speech embeddings (N, d) ; prompt tokens ;
target tokens + EOS at train time] (imported reference models, `bos_after_speech`: the BOS after the speech).
Training right-pads, generation left-pads. The loss is cross-entropy on the target tokens (and EOS) only, and the
LM head runs only at those positions (Gemma-3 has a 262k vocabulary).

A batch is a dict: `audio` (list of 16 kHz arrays) or `features` (B, T, D) + `feature_mask` (B, T) (cached encoder
output), or neither for text-only tasks (MT); plus `prompts` (list[str], from llm_srt.prompts.build) and, for
training, `targets` (list[str]).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..device import DTYPE_NAMES, compute_dtype, is_int8
from ..errors import ConfigError, LLMSRTError, warn_each_time
from ..paths import atomic_dir, checkpoint_relative, resolve_model, weights_identity
from ..prompts import PROMPT_FORMAT_VERSION
from .adapter import Adapter, build_adapter
from .checkpoint_config import CHECKPOINT_FORMAT, SpeechLLMConfig, read_config  # (callers import the last two from
#   here)
from .folders import CONFIG_FILE, MODEL_FOLDER_OPTIONS, check_model_folders
from .decoding import DecodingOptions, OnEnd, PartStart, eos_ids, generate_ids
from .encoder import WhisperEncoder, whisper_dim
from .cpu_linear import fast_cpu_linears
from .ctc import CTCHead, CTCLoss
from .int8_linear import fuse_int8_projections, is_quantized, quantize_int8
from .llm import backbone_and_head, head_losses, hidden_size, load_llm, load_lora_state, logit_cap, resolve_dtype
from .mapped import checkpoint_pages_dropper

log = logging.getLogger(__name__)

FROZEN_WEIGHTS = "frozen_weights"  # in config.json: {"encoder": .., "llm": ..} `paths.weights_identity` when saved
ADAPTER_FILE = "adapter.safetensors"
LORA_FILE = "lora.safetensors"
CTC_FILE = "ctc_head.safetensors"  # the CTC loss's head, while a stage trains with it
IGNORE = -100  # label of positions without loss


def _lora_parameters(model: "SpeechLLM") -> list[nn.Parameter]:
    if model.config.lora is None:
        raise ConfigError("trainable lists 'lora' but the model has no LoRA; set lora options (e.g. lora: {r: 8})")
    return [p for n, p in model.llm.named_parameters() if "lora_" in n]


TRAINABLE = {  # parameter group -> its parameters
    "adapter": lambda m: list(m.adapter.parameters()) + (list(m.ctc_head.parameters()) if m.ctc_head else []),
    "lora": _lora_parameters,
}


def tokenize_batch(tokenizer, prompts: list[str], targets: list[str] | None = None
                   ) -> tuple[list[list[int]], list[list[int]] | None]:
    """Prompt ids and target ids (+ EOS) per example, no special tokens added (BOS is placed by the model)."""
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if targets is None:
        return prompt_ids, None
    if len(targets) != len(prompts):
        raise LLMSRTError(f"batch has {len(prompts)} prompts but {len(targets)} targets")
    target_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in targets]
    return prompt_ids, target_ids


class SpeechLLM(nn.Module):
    """Encoder (lazy) -> adapter -> LLM. `forward(batch)` -> loss; `generate(batch, options)` -> texts."""

    def __init__(self, config: SpeechLLMConfig, device: str | torch.device | None = None, weights: bool = True,
                 llm_device: str | torch.device | None = None,
                 merged_lora: tuple[dict[str, torch.Tensor], str] | None = None):
        """Build the model with every part straight on `device` (default: CPU): the LLM and (lazily) the encoder in
        `config.dtype`, the adapter in float32 (int8: `quantize_adapter` once its weights are in; `from_pretrained`
        does it). `weights=False`: random encoder and LLM from their config.json
        (paper-shaped benchmarks). `llm_device="meta"`: the LLM as a weightless skeleton (FSDP ranks other than 0
        receive their shards from rank 0). `merged_lora` (inference): LoRA weights and their file, folded into the
        LLM's weights as it loads where `load_llm` can do so exactly (`from_pretrained(merge_lora=True)`)."""
        super().__init__()
        self.config = config
        self._weights = weights
        target = torch.device(device) if device is not None else torch.device("cpu")
        self.encoder_dim = whisper_dim(resolve_model(config.encoder, "encoder"))  # its config.json, before the LLM
        #   loads (minutes for a 32B one), so that a bad encoder folder is said at once
        self.llm, self.tokenizer = load_llm(resolve_model(config.llm, "llm"), config.dtype, config.lora,
                                            device=llm_device if llm_device is not None else target, weights=weights,
                                            merged_lora=merged_lora)
        if self.tokenizer.eos_token_id is None:  # every target ends with it: a None id was a TypeError at step 1
            raise LLMSRTError(f"{config.llm}: its tokenizer names no EOS token; set eos_token in tokenizer_config.json")
        self.lora_merged = (merged_lora is not None and config.lora is not None
                            and not any("lora_" in name for name, _ in self.llm.named_parameters()))
        self.llm_dim = hidden_size(self.llm)
        self.adapter: Adapter = build_adapter(config.adapter, self.encoder_dim, self.llm_dim, **config.adapter_kwargs)
        self.adapter.to(target)
        self.ctc_head = CTCHead(self.llm_dim).to(target) if config.ctc_head else None
        fast_cpu_linears(self.adapter)  # CPU inference on the faster kernels; training keeps F.linear's
        self._whisper: WhisperEncoder | None = None
        self._frozen_weights = None if weights else {"encoder": None, "llm": None}  # random: not the folders' weights
        self.set_trainable(config.trainable)
        counts = self.parameter_counts()
        lora = (f"LoRA r={config.lora.r} merged into the LLM" if self.lora_merged else  # ("lora 0.00M" read as none)
                f"lora {counts['lora'] / 1e6:.2f}M")
        log.info("trainable parameters: adapter %.2fM, %s, total %.2fM (of %.1fM)", counts["adapter"] / 1e6, lora,
                 counts["trainable"] / 1e6, counts["all"] / 1e6)

    # ---- parts -------------------------------------------------------------------------------------------------
    @property
    def encoder(self) -> WhisperEncoder:
        """The frozen Whisper encoder, loaded on first use (training from cached features never loads it)."""
        if self._whisper is None:
            folder = resolve_model(self.config.encoder, "encoder")
            enc = WhisperEncoder.from_pretrained(folder, pad_to_30s=self.config.pad_to_30s, device=self.device,
                                                 dtype=compute_dtype(resolve_dtype(self.config.dtype)),
                                                 weights=self._weights)
            if enc.dim != self.encoder_dim:
                raise LLMSRTError(f"{self.config.encoder}: encoder dim {enc.dim} != {self.encoder_dim}")
            if is_int8(self.config.dtype):  # as CTranslate2's int8 Whisper: its linear layers, not its convolutions
                dropper = checkpoint_pages_dropper(folder) if self._weights else None  # file pages go once quantized
                quantize_int8(enc, dropper)
                fuse_int8_projections(enc)
            fast_cpu_linears(enc)  # float32 on the CPU: the faster kernels (frozen, so it never needs a gradient)
            self._whisper = enc  # registered as a submodule: follows .to() and train()
        return self._whisper

    @property
    def device(self) -> torch.device:
        """The adapter's device (an int8 adapter may keep no float parameter: int8 runs on the CPU)."""
        first = next(itertools.chain(self.adapter.parameters(), self.adapter.buffers()), None)
        return first.device if first is not None else torch.device("cpu")

    @property
    def adapter_dtype(self) -> torch.dtype:
        """The dtype the adapter takes its input in (float32 for an int8 adapter)."""
        first = next(self.adapter.parameters(), None)
        return first.dtype if first is not None else torch.float32

    @property
    def llm_dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def set_trainable(self, groups: tuple[str, ...] | list[str]) -> None:
        """Freeze everything, then unfreeze the named groups (keys of TRAINABLE)."""
        unknown = [g for g in groups if g not in TRAINABLE]
        if unknown:
            raise ConfigError(f"unknown trainable group(s) {unknown}; choose from {', '.join(TRAINABLE)}")
        self.requires_grad_(False)
        for group in groups:
            for p in TRAINABLE[group](self):
                p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """Trainable counts: adapter, lora, trainable (total); plus all parameters loaded."""
        lora = sum(p.numel() for n, p in self.llm.named_parameters() if "lora_" in n and p.requires_grad)
        adapter = sum(p.numel() for p in self.adapter.parameters() if p.requires_grad)
        return {"adapter": adapter, "lora": lora, "trainable": sum(p.numel() for p in self.trainable_parameters()),
                "all": sum(p.numel() for p in self.parameters())}

    def train(self, mode: bool = True) -> "SpeechLLM":
        super().train(mode)
        if self._whisper is not None:
            self._whisper.train(False)
        return self

    # ---- inputs ------------------------------------------------------------------------------------------------
    def speech_embeddings(self, batch: dict, llm_dtype: bool = True) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Batch -> adapter output (B, N, d_llm) in the LLM dtype (`llm_dtype=False`: as the adapter made it) + mask
        (B, N); None for text-only batches."""
        if batch.get("features") is not None:
            h = batch["features"].to(self.device)
            mask = batch.get("feature_mask")
            mask = torch.ones(h.shape[:2], dtype=torch.bool) if mask is None else mask
        elif batch.get("audio") is not None:
            h, mask = self.encoder.encode(batch["audio"])
        else:
            return None
        if h.shape[-1] != self.encoder_dim:
            raise LLMSRTError(f"encoder features have dim {h.shape[-1]} but the adapter expects {self.encoder_dim}; "
                              "the feature cache was made with another encoder")
        if h.shape[1] == 0:  # the Q-Former's windows cannot be cut from no frames (a reshape error deep inside it)
            raise LLMSRTError(f"encoder features of shape {tuple(h.shape)} hold no frames; a cached entry is empty or "
                              "damaged: delete it (the cache computes it again from the audio)")
        emb, emb_mask = self.adapter(h.to(self.adapter_dtype), mask.to(self.device).bool())
        return (emb.to(self.llm_dtype) if llm_dtype else emb), emb_mask

    def assemble(self, speech: tuple[torch.Tensor, torch.Tensor] | None, prompt_ids: list[list[int]],
                 target_ids: list[list[int]] | None = None, left_pad: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> inputs_embeds (B, L, d), attention mask (B, L) bool, labels (B, L) (IGNORE except target tokens).

        Row i is [BOS ; its real speech embeddings ; prompt ; target] ([speech ; BOS ; prompt ; target] with
        `config.bos_after_speech`), right-padded (training) or left-padded (generation) to the longest row; built
        with one embedding call and scatter-style indexing. A row of none of them is an error: the LLM has nothing
        to read (alone a reshape error in attention, in a batch a fully masked row's garbage)."""
        dev = self.device
        n = len(prompt_ids)
        sizes = {"clips": len(speech[0]) if speech is not None else None, "prompts": n,
                 "targets": len(target_ids) if target_ids is not None else None}
        have = [f"{size} {name}" for name, size in sizes.items() if size is not None]
        if len(set(sizes.values()) - {None}) > 1:  # else a tensor size error deep below
            raise LLMSRTError(f"the batch has {have[0]} but {' and '.join(have[1:])}; give every row one of each")
        targets = target_ids if target_ids is not None else [[] for _ in range(n)]
        text = [p + t for p, t in zip(prompt_ids, targets)]
        bos = self.tokenizer.bos_token_id
        if bos is None and not all(text):  # only then: a speech row's frame count is read back from the device
            heard = speech[1].sum(1).tolist() if speech is not None else [0] * n
            empty = [i for i, (t, frames) in enumerate(zip(text, heard)) if not t and not frames]
            if empty:
                raise LLMSRTError(f"batch row {empty[0]} has nothing for the LLM to read (no speech frames, no prompt "
                                  "or target tokens, and this tokenizer adds no BOS); give it a prompt or audio")
        # the token ids, their rows and columns are laid out on the host and sent once: on a GPU, reading a length
        # back or indexing with a mask there waits for the device; BOS rides in the same lookup (one gather of an
        # FSDP-sharded table, not two)
        lengths = [len(t) for t in text]
        width = max(1, max(lengths, default=0))
        n_bos = 0 if bos is None else 1
        rows_ids = [t + [0] * (width - len(t)) + ([bos] if n_bos else []) for t in text]
        ids = torch.tensor(rows_ids, dtype=torch.long).reshape(n, width + n_bos).to(dev, non_blocking=True)
        lengths_host = torch.tensor(lengths, dtype=torch.long)
        text_len = lengths_host.to(dev, non_blocking=True)
        prompt_len = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long).to(dev, non_blocking=True)
        b_host = torch.repeat_interleave(torch.arange(n), lengths_host)
        k_host = torch.tensor([j for length in lengths for j in range(length)], dtype=torch.long)
        embed = self.llm.get_input_embeddings()
        text_emb = embed(ids)
        if speech is not None:
            speech_emb, speech_mask = speech[0], speech[1].to(dev).bool()
            speech_len = speech_mask.sum(1)
        else:
            speech_len = torch.zeros(n, dtype=torch.long, device=dev)
        total = n_bos + speech_len + text_len
        length = int(total.max()) if n else 0
        offset = length - total if left_pad else torch.zeros_like(total)
        out = text_emb.new_zeros(n, length, text_emb.shape[-1])
        rows = torch.arange(n, device=dev)
        after = self.config.bos_after_speech
        if n_bos:
            out[rows, offset + speech_len if after else offset] = text_emb[:, width]
        if speech is not None:
            b, j = speech_mask.nonzero(as_tuple=True)
            rank = (speech_mask.long().cumsum(1) - 1)[b, j]  # the k-th real speech frame goes to slot k
            out[b, offset[b] + (0 if after else n_bos) + rank] = speech_emb[b, j].to(out.dtype)
        b, k = b_host.to(dev, non_blocking=True), k_host.to(dev, non_blocking=True)
        where = offset[b] + n_bos + speech_len[b] + k
        out[b, where] = text_emb[b, k]
        positions = torch.arange(length, device=dev)[None, :]
        mask = (positions >= offset[:, None]) & (positions < (offset + total)[:, None])
        labels = torch.full((n, length), IGNORE, dtype=torch.long, device=dev)
        is_target = k >= prompt_len[b]
        labels[b[is_target], where[is_target]] = ids[b[is_target], k[is_target]]
        return out, mask, labels

    # ---- training ----------------------------------------------------------------------------------------------
    def forward(self, batch: dict, ctc: CTCLoss | None = None) -> dict[str, torch.Tensor]:
        """Batch with prompts and targets (or pre-tokenized `prompt_ids` and `target_ids`, targets ending with EOS,
        as `tokenize_batch` makes them) -> {"loss": mean CE over target tokens, "n_tokens": their count}; with
        `batch["row_losses"]` true, also "row_losses": (B,) each row's own mean CE over its target tokens.
        With an active `ctc` (a speech batch with `transcripts`), also "ctc_loss" (model/ctc.py) and "ctc_rows" (its
        (feasible rows, rows): `CTCHead.loss`), and "loss" is the objective: CE + ctc.weight x CTC, or CTC alone with
        `ctc.only` (then the LLM does not run)."""
        if batch.get("target_ids") is not None:
            prompt_ids, target_ids = batch["prompt_ids"], batch["target_ids"]
            if len(prompt_ids) != len(target_ids):
                raise LLMSRTError(f"batch has {len(prompt_ids)} prompts but {len(target_ids)} targets")
        elif batch.get("targets"):
            prompt_ids, target_ids = tokenize_batch(self.tokenizer, batch["prompts"], batch["targets"])
        else:
            raise LLMSRTError("forward needs batch['targets'] (or 'target_ids'); use generate() for inference")
        if torch.is_grad_enabled() and (is_quantized(self.llm) or is_quantized(self.adapter)):
            raise LLMSRTError("the model has int8 linear layers (dtype int8), which are for inference only; train "
                              "with dtype float32 or bfloat16")
        speech = self.speech_embeddings(batch, llm_dtype=False)
        aux = None
        if ctc is not None and ctc.active:
            if speech is None or not batch.get("transcripts"):
                raise LLMSRTError("ctc: the CTC loss needs speech and its transcripts; set ctc.weight: 0 and "
                                  "ctc.only: false for a text-only stage")
            if self.ctc_head is None:
                raise LLMSRTError("ctc: this model has no CTC head; build it with ctc_head=True (training with a "
                                  "ctc section does)")
            aux, ctc_rows = self.ctc_loss(speech, batch["transcripts"], ctc.negatives)
            if ctc.only:
                return {"loss": aux, "ctc_loss": aux.detach(), "ctc_rows": ctc_rows,
                        "n_tokens": torch.tensor(sum(map(len, target_ids)), device=aux.device)}
        if speech is not None:
            speech = (speech[0].to(self.llm_dtype), speech[1])
        embeds, mask, labels = self.assemble(speech, prompt_ids, target_ids)
        backbone, head = backbone_and_head(self.llm)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = backbone(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions,
                          use_cache=False).last_hidden_state
        select = labels[:, 1:] != IGNORE  # position t predicts token t + 1
        per_token = head_losses(hidden[:, :-1][select], head, labels[:, 1:][select], logit_cap(self.llm))
        out = {"loss": per_token.mean(), "n_tokens": select.sum()}
        if batch.get("row_losses"):
            rows = select.nonzero(as_tuple=True)[0]
            out["row_losses"] = per_token.new_zeros(len(select)).index_add_(0, rows, per_token) / select.sum(1)
        if aux is not None:
            out["loss"] = out["loss"] + ctc.weight * aux
            out["ctc_loss"], out["ctc_rows"] = aux.detach(), ctc_rows
        return out

    def ctc_loss(self, speech: tuple[torch.Tensor, torch.Tensor], transcripts: list[str],
                 negatives: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC of the adapter's output (`speech_embeddings(..., llm_dtype=False)`) against the transcripts' tokens,
        scored against the LLM's own input embeddings by the CTC head: (loss, (feasible rows, rows)), as
        `CTCHead.loss`."""
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in transcripts]
        return self.ctc_head.loss(speech[0], speech[1].to(speech[0].device), ids, self.llm.get_input_embeddings(),
                                  negatives)

    # ---- inference ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, batch: dict, options: DecodingOptions = DecodingOptions(),
                     synced_ranks: bool = False, on_end: OnEnd | None = None,
                     written: set[int] | None = None, caps: Sequence[int] | None = None,
                     part_start: PartStart | None = None) -> list[list[int]]:
        """Batch with prompts -> generated token ids per example (EOS excluded). `synced_ranks`: every rank of a
        sharded (FSDP) model decodes in lockstep until all are done, as each step needs all ranks' shards.
        `on_end`: what a row must write before it may end (`decoding.generate_ids`); rows that had ids written
        for them go into `written`. `caps`: each row's own cap, where beam search stops it (`decoding.RowCaps`; the
        caller cuts greedy rows). `part_start`: where each row's n-grams are counted from (`decoding.PartStart`).
        An empty batch (no prompts) gives no rows."""
        if not batch["prompts"]:
            return []
        speech = self.speech_embeddings(batch)
        prompt_ids, _ = tokenize_batch(self.tokenizer, batch["prompts"])
        embeds, mask, _ = self.assemble(speech, prompt_ids, left_pad=True)
        return generate_ids(self.llm, embeds, mask, options, eos_ids(self.llm, self.tokenizer),
                            self.tokenizer.pad_token_id, synced_ranks=synced_ranks, on_end=on_end,
                            written=written, caps=caps, part_start=part_start)

    def generate(self, batch: dict, options: DecodingOptions = DecodingOptions(),
                 synced_ranks: bool = False) -> list[str]:
        """Batch with prompts -> decoded texts (special tokens dropped, language tags kept)."""
        ids = self.generate_ids(batch, options, synced_ranks=synced_ranks)
        return [self.tokenizer.decode(x, skip_special_tokens=True) for x in ids]

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, dict[str, torch.Tensor] | None]:
        """What a model folder stores besides its config: {"adapter": state dict, "lora": peft state dict or None,
        "ctc": the CTC head's state dict or None}."""
        if is_quantized(self.adapter):
            raise LLMSRTError("this model's adapter is int8 (dtype int8, for inference): its weights cannot be saved; "
                              "save the float32 model it was loaded from")
        if self.lora_merged:
            raise LLMSRTError("this model's LoRA is merged into its LLM's weights (loaded for inference): it cannot be "
                              "saved; load the checkpoint with SpeechLLM.from_pretrained(merge_lora=False)")
        lora = None
        if self.config.lora is not None:
            from peft import get_peft_model_state_dict

            # LoRA weights only: peft's "auto" also saved a LoRA-targeted head's or embedding's frozen weight (a
            # 262k x 640 head in every checkpoint), which loading wrote over the LLM's own (`load_lora_state`)
            lora = get_peft_model_state_dict(self.llm, save_embedding_layers=False)
        return {"adapter": self.adapter.state_dict(), "lora": lora,
                "ctc": self.ctc_head.state_dict() if self.ctc_head is not None else None}

    def save_pretrained(self, directory: str | Path, state: dict | None = None,
                        extra_files: dict[str, str] | None = None) -> Path:
        """Write config.json, adapter.safetensors and (with LoRA) lora.safetensors; atomic (tmp folder, rename).
        `state`: tensors gathered by the caller in `trainable_state()`'s form (FSDP); default: this model's own.
        `extra_files`: file name -> text, written in the same folder before it is renamed into place (a training
        run's record: the folder is there whole or not at all)."""
        from safetensors.torch import save_file

        state = self.trainable_state() if state is None else state
        directory = Path(directory)
        kwargs = {k: v for k, v in self.adapter.kwargs.items() if k not in ("encoder_dim", "llm_dim")}
        meta = {"format": CHECKPOINT_FORMAT, **replace(self.config, adapter_kwargs=kwargs).to_dict(),
                "encoder_dim": self.encoder_dim, "llm_dim": self.llm_dim, FROZEN_WEIGHTS: self.frozen_weights()}
        with atomic_dir(directory) as tmp:
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            save_file(_cpu(state["adapter"]), str(tmp / ADAPTER_FILE))
            if state["lora"] is not None:
                save_file(_cpu(state["lora"]), str(tmp / LORA_FILE))
            if state.get("ctc") is not None:
                save_file(_cpu(state["ctc"]), str(tmp / CTC_FILE))
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, llm_device: str | torch.device | None = None,
                        merge_lora: bool = False, **overrides) -> "SpeechLLM":
        """Load a checkpoint folder straight onto `device`. `dtype` overrides the frozen models' weight dtype
        (e.g. bfloat16 on a GPU for a checkpoint trained in float32; int8 quantizes the loaded adapter too);
        `merge_lora` (inference): in float32, the folder's LoRA folded into the LLM's weights as it loads, so a decode
        step runs no LoRA products (such a model refuses to be saved; its LoRA can no longer train). Other dtypes
        keep it apart, float32 beside their weights: merged, W + B A is rounded to their grid (the shipped model on
        the held-out voice, greedy, against LoRA apart: float32 the same outputs, bfloat16 26 of 40 the same,
        int8 7.9 against 9.5 BLEU); so does a LoRA on a weight another module shares (`load_llm`);
        `overrides` replace SpeechLLMConfig fields
        (e.g. encoder=, llm= for a checkpoint moved to another host, trainable=, lora= to add fresh LoRA)."""
        directory = Path(directory)
        meta = read_config(directory)
        config = SpeechLLMConfig.from_dict(meta)
        if config.prompt_format != PROMPT_FORMAT_VERSION:
            raise LLMSRTError(f"{directory / CONFIG_FILE}: trained with prompt format {config.prompt_format}, but "
                              f"this llm-srt writes prompt format {PROMPT_FORMAT_VERSION}; use the llm-srt version "
                              "the model was trained with, or train it again")
        config = replace(config, encoder=checkpoint_relative(directory, config.encoder),
                         llm=checkpoint_relative(directory, config.llm))
        if dtype is not None:
            config = replace(config, dtype=DTYPE_NAMES[resolve_dtype(dtype)])
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None or k == "lora"})
        has_lora = (directory / LORA_FILE).is_file()
        if has_lora and config.lora is None:
            raise LLMSRTError(f"{directory}: holds {LORA_FILE} but lora is disabled; keep the checkpoint's lora "
                              "options")
        check_model_folders(directory, config, {k for k in ("encoder", "llm") if overrides.get(k)})
        merged = None
        if merge_lora and has_lora:
            merged = (_load_weights(directory / LORA_FILE), str(directory / LORA_FILE))
        try:
            model = cls(config, device=device, llm_device=llm_device, merged_lora=merged)
        except LLMSRTError as e:  # a bad adapter name or option: say which checkpoint asked for it (not for a path
            given = [str(v) for k, v in overrides.items() if k in ("encoder", "llm") and v]  # the caller gave)
            if str(directory) in str(e) or any(g in str(e) for g in given):
                raise e from None
            raise type(e)(f"{directory / CONFIG_FILE}: {e}") from None
        for key, actual, source in (("encoder_dim", model.encoder_dim, config.encoder),
                                    ("llm_dim", model.llm_dim, config.llm)):
            if key in meta and meta[key] != actual:
                raise LLMSRTError(f"{directory}: trained with {key}={meta[key]} but {source} has {actual}; point the "
                                  "checkpoint at the models it was trained with")
        saved = meta.get(FROZEN_WEIGHTS)
        for kind, now in model.frozen_weights().items() if isinstance(saved, dict) else ():
            if saved.get(kind) and now and saved[kind] != now:
                warn_each_time(f"{directory}: trained with other {kind} weight files than {getattr(config, kind)} "
                               "holds (another model of the same shape, or the same one in another format); give the "
                               f"{kind} it was trained with ({MODEL_FOLDER_OPTIONS[kind][0]} of translate and serve, "
                               f"{MODEL_FOLDER_OPTIONS[kind][1]} of evaluate; model.{kind} in a training config), or "
                               "its outputs are not the trained model's")
        model.load_trainable(directory, lora=merged)  # LoRA kept apart (not float32): the weights already read
        model.quantize_adapter()
        return model.eval()  # as transformers' from_pretrained: the adapter's and LoRA's dropout off (recipe trains)

    def frozen_weights(self) -> dict[str, str | None]:
        """The frozen encoder's and LLM's `paths.weights_identity` (read once): a folder records them, and loading it
        with other weight files says so."""
        if self._frozen_weights is None:
            self._frozen_weights = {kind: weights_identity(getattr(self.config, kind), kind)
                                    for kind in ("encoder", "llm")}
        return self._frozen_weights

    def quantize_adapter(self) -> None:
        """dtype int8 (CPU inference): the adapter's linear layers int8 too, as the encoder's and the LLM's; call it
        once the adapter's weights are loaded (they cannot be loaded into it afterwards). Otherwise nothing."""
        if is_int8(self.config.dtype) and not is_quantized(self.adapter):
            quantize_int8(self.adapter)
            fuse_int8_projections(self.adapter)

    def load_trainable(self, directory: str | Path, lora: tuple[dict[str, torch.Tensor], str] | None = None) -> None:
        """The adapter (and LoRA, and the CTC head, when the folder has them) weights of a model or checkpoint folder
        into this model; `lora`: the folder's LoRA weights and file, already read."""
        directory = Path(directory)
        if not (directory / ADAPTER_FILE).is_file():
            raise LLMSRTError(f"{directory}: {ADAPTER_FILE} is missing; the checkpoint is incomplete")
        if is_quantized(self.adapter):
            raise LLMSRTError(f"{directory}: this model's adapter is already int8 (dtype int8, for inference); load "
                              "the checkpoint with SpeechLLM.from_pretrained instead")
        load_adapter_state(self.adapter, _load_weights(directory / ADAPTER_FILE), str(directory / ADAPTER_FILE))
        if (directory / LORA_FILE).is_file() and self.lora_merged and lora is None:  # (from_pretrained passes it)
            raise LLMSRTError(f"{directory}: holds a LoRA, and this model's LoRA is merged into its LLM's weights "
                              "(merge_lora): another LoRA cannot be loaded into it; load the folder with "
                              "SpeechLLM.from_pretrained")
        if (directory / LORA_FILE).is_file() and not self.lora_merged:
            load_lora_state(self.llm, *(lora or (_load_weights(directory / LORA_FILE), str(directory / LORA_FILE))))
        if self.ctc_head is not None and (directory / CTC_FILE).is_file():  # else the head starts afresh
            load_adapter_state(self.ctc_head, CTCHead.upgrade_state(_load_weights(directory / CTC_FILE)),
                               str(directory / CTC_FILE))


def load_adapter_state(adapter: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load adapter weights, with an error naming the first missing / unexpected / mis-shaped tensor."""
    own = adapter.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected else
                  f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the model wants {tuple(own[wrong[0]].shape)}")
        raise LLMSRTError(f"{where}: adapter weights do not match the model ({detail}); the checkpoint was made for "
                          "another adapter or LLM size")
    adapter.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, with a one-line error for a truncated or damaged one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LLMSRTError(f"{path}: cannot read the weights ({detail}); the file is damaged or incomplete, copy or "
                          "save the checkpoint again") from None


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


