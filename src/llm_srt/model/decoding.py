"""Batched greedy and beam-search decoding from input embeddings (left-padded), on HF `generate` with a KV cache."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

from ..device import is_out_of_memory
from ..errors import LLMSRTError
from .static_steps import StaticSteps, error_causes

# (row, its ids so far) -> the ids it must write before it may end (None: it may end). Asked, never told: which rows
# had ids written for them is what the decoder puts into its `written` set
OnEnd = Callable[[int, list[int]], "list[int] | None"]
# (row, its ids so far) -> the index of the first of them its n-grams are counted from: n-gram blocking within a part
# of an output (SRT's translation, once its language tags are written: `systems.TranslationStart`), 0 for all of them
PartStart = Callable[[int, list[int]], int]
ARGMAX_BLOCK = 1024  # `last_argmax` reduces CPU logits in blocks of this many (a vectorized max per block)
ARGMAX_MIN_VOCAB = 32 * ARGMAX_BLOCK  # ... for vocabularies at least this large (below, torch's argmax is as fast)
# how `refuse_broken_scores`' errors begin (a row's error, and so its request's): the same input gives NaN again, so a
# server answers it without a retry and does not count it towards a broken device
BROKEN_SCORES = "the LLM's next-token scores are not numbers (NaN)"

if TYPE_CHECKING:  # transformers is imported where a decode needs it: `DecodingOptions` alone (infer.py, the
    from transformers import GenerationConfig  # Whisper path) must not cost its ~3 s import


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode. Greedy when beam_size is 1."""

    beam_size: int = 1  # number of beams; 1 = greedy
    max_new_tokens: int = 256  # hard cap on generated tokens per utterance
    length_penalty: float = 1.0  # beam ranking: sum logprob / length ** length_penalty (0 = raw sum)
    no_repeat_ngram_size: int = 0  # forbid repeating any n-gram of this size (0 = off)
    repetition_penalty: float = 1.0  # >1 discourages tokens already generated (1 = off)
    early_stopping: bool | str = True  # beam search stops once beam_size finished hypotheses exist (False: once
    #  no hypothesis can beat them by HF's estimate at its current length; "never": once none can by a true bound,
    #  the exact search: what a search run on to max_new_tokens returns)
    share_prompt_cache: bool = True  # beam search: the prompt's KV cache is computed once per row, not per beam
    force_srt_tags: bool = True  # SRT, greedy or beam search: a row (a beam) that would end before its tag pair
    #  gets the tags it lacks written for it and goes on to the translation, and may not end before it (a
    #  well-trained model writes the pair itself: no change)
    compile: bool = False  # greedy: the LLM's decode step compiled (torch.compile) on a static KV cache; on a GPU
    #  its kernels replay as one CUDA graph a token (`StaticSteps`). The same tokens in float32 (in bfloat16 and
    #  float16 the compiled kernels round differently: a near-tie can pick another token); the first batch of each
    #  shape waits for the compilation

    def __post_init__(self):
        if self.beam_size < 1 or self.max_new_tokens < 1:
            raise LLMSRTError(f"decoding: beam_size and max_new_tokens must be >= 1 (got {self.beam_size}, "
                              f"{self.max_new_tokens})")
        if self.no_repeat_ngram_size < 0:
            raise LLMSRTError(f"decoding: --no-repeat-ngram must be >= 0 (0: off), not {self.no_repeat_ngram_size}")
        penalty = self.repetition_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not 0 < penalty < math.inf:
            raise LLMSRTError(f"decoding: repetition_penalty must be a number > 0 (1: off), not {penalty!r}")
        object.__setattr__(self, "repetition_penalty", float(penalty))  # HF's processor takes a float alone
        if self.early_stopping not in (True, False, "never"):
            raise LLMSRTError(f"decoding: early_stopping must be true, false or \"never\", not {self.early_stopping!r}")


def add_srt_tags_argument(parser) -> None:
    """`--no-force-srt-tags` (translate, serve, evaluate): sets DecodingOptions.force_srt_tags to False."""
    parser.add_argument("--no-force-srt-tags", dest="force_srt_tags", action="store_false",
                        help="SRT: let a row end without its language-tag pair (and so without a translation) "
                             "instead of writing the pair for it and decoding on")


def decoding_from_args(args) -> DecodingOptions:
    """The DecodingOptions of a command's --beam, --max-new-tokens, --no-repeat-ngram, --no-force-srt-tags and
    --compile (translate, serve, evaluate)."""
    return DecodingOptions(beam_size=args.beam, max_new_tokens=args.max_new_tokens,
                           no_repeat_ngram_size=args.no_repeat_ngram, force_srt_tags=args.force_srt_tags,
                           compile=args.compile)


def add_compile_argument(parser) -> None:
    """`--compile` (translate, serve, evaluate, bench): sets DecodingOptions.compile."""
    parser.add_argument("--compile", action="store_true",
                        help="greedy decoding: compile the LLM's decode step on a static KV cache (a GPU replays it as "
                             "a CUDA graph: far less per-token overhead); each new batch shape compiles first")


def add_no_repeat_argument(parser) -> None:
    """`--no-repeat-ngram N` (translate, serve, evaluate): sets DecodingOptions.no_repeat_ngram_size."""
    parser.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N",
                        help="forbid any n-gram of N tokens from repeating in an output (SRT: within its "
                             "transcript and within its translation; 0: off)")


def eos_ids(model: nn.Module, tokenizer) -> list[int]:
    """Every token id that ends a generation: the tokenizer's EOS plus the model's generation-config EOS ids."""
    from .llm import causal_lm

    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = causal_lm(model).generation_config.eos_token_id
    ids |= set(extra if isinstance(extra, (list, tuple)) else [extra] if extra is not None else [])
    if not ids:
        raise LLMSRTError("the LLM's tokenizer defines no EOS token; generation could not stop")
    return sorted(ids)


def generate_ids(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, options: DecodingOptions,
                 eos: list[int], pad_id: int, synced_ranks: bool = False, on_end: OnEnd | None = None,
                 written: set[int] | None = None, caps: Sequence[int] | None = None,
                 part_start: PartStart | None = None) -> list[list[int]]:
    """Left-padded inputs_embeds (B, L, d) + attention mask (B, L) -> new token ids per row (EOS and after cut).
    `synced_ranks`: keep stepping until every rank is done (a sharded model needs all ranks at each step).
    `on_end`: what a row must write before it may end (`greedy_ids`; in beam search `EndRule`); the rows whose
    output holds ids written for them go into `written`. `caps`: each row's own cap (at most
    `options.max_new_tokens`), where it ends as at EOS (`greedy_ids`; in HF `generate`, `RowCaps`: beam search
    stops each row's hypotheses there, greedy search the row, so that one row that never ends does not keep the
    batch stepping to `options.max_new_tokens`). `part_start`: n-gram blocking counts a
    row's (a hypothesis's) ids from where it says on (`PartNGrams`), so a translation may repeat its transcript's
    numbers and names; else all its new ids.

    A repetition penalty counts the new tokens alone (the prompt is speech and language tags). The prompt's
    next-token scores are checked before the first token is picked (`refuse_broken_scores`; not with `synced_ranks`,
    whose other ranks would wait for this one): NaN there is an LLM overflowing its dtype, which would write token 0
    to every row's cap.

    Greedy search (with or without n-gram blocking; no repetition penalty or other logits processor) runs
    `greedy_ids`: a finished row leaves the batch at once. Beam search (with `options.share_prompt_cache`) runs
    the prompt but its last position once per row, copies that KV cache to the row's beams, and lets `generate` go
    on from it: the prompt costs one pass, not `beam_size`."""
    from .llm import causal_lm

    config = generation_config(causal_lm(model).generation_config, options, eos, pad_id)
    if options.beam_size == 1 and not synced_ranks and options.repetition_penalty == 1.0 and greedy_loop_fits(config):
        with torch.no_grad():
            return greedy_ids(model, embeds, mask, options.max_new_tokens, eos, on_end,
                              no_repeat_ngram=options.no_repeat_ngram_size, written=written, compiled=options.compile,
                              caps=caps, part_start=part_start)
    extra = {}
    if caps is not None and min(caps) < options.max_new_tokens:  # (with `synced_ranks` a rank whose rows all
        # stopped goes on stepping with the others: HF's synced loop runs until every rank is done)
        from transformers import StoppingCriteriaList

        extra["stopping_criteria"] = StoppingCriteriaList([RowCaps(caps)])
    processors: list = [] if synced_ranks else [FirstScoresCheck(causal_lm(model).dtype, options.beam_size)]
    if part_start is not None and options.no_repeat_ngram_size:  # HF's own would count every part together
        config.no_repeat_ngram_size = 0
        processors.append(PartNGrams(options.no_repeat_ngram_size, part_start, options.beam_size))
    if options.repetition_penalty != 1.0:  # the input ids HF's processors see are the new tokens alone (embeddings
        # in); HF's own penalty would skip each row's first new tokens, as many as the row's left padding
        from transformers import RepetitionPenaltyLogitsProcessor

        processors.append(RepetitionPenaltyLogitsProcessor(options.repetition_penalty))
    rule = EndRule(on_end, eos, options.beam_size) if on_end is not None else None
    if rule is not None:
        processors.append(rule)
    if processors:
        from transformers import LogitsProcessorList

        extra["logits_processor"] = LogitsProcessorList(processors)
    with torch.no_grad(), warnings.catch_warnings():
        # n-gram blocking over generated tokens only is what we want: the prompt is speech + language tags
        warnings.filterwarnings("ignore", message=".*no_repeat_ngram_size.*inputs_embeds")
        if options.beam_size > 1 and options.share_prompt_cache and embeds.shape[1] > 1 and not synced_ranks:
            extra["past_key_values"] = prompt_cache(model, embeds[:, :-1], mask[:, :-1], options.beam_size)
        out = model.generate(inputs_embeds=embeds, attention_mask=mask.long(), generation_config=config,
                             synced_gpus=synced_ranks, **extra)
    result = []
    for k, row in enumerate(out.tolist()):
        ids = []
        for token in row if caps is None else row[:caps[k]]:  # (a row stopped at its cap is padded after it)
            if token in eos:
                break
            ids.append(token)
        result.append(ids)
    if rule is not None and written is not None:
        written.update(rule.written_rows(result))
    return result


def refuse_broken_scores(scores: torch.Tensor, dtype: torch.dtype, beams: int = 1) -> None:
    """(B * beams, V) next-token scores of the prompts -> an LLMSRTError where a row's hold a NaN (or +inf, or
    nothing finite): an LLM whose activations overflow its dtype (Gemma-3 in float16) gives NaN, whose argmax is
    token 0 (or the first NaN) at every step, so every row would come back empty at its cap with no error. Where
    every row's do, the error's `every_row_of` is B: no part of the batch would run (`infer._run_chunk` halves it
    no further); where only some rows' do, the others may run without them."""
    bad = ((scores.isnan() | scores.isposinf()).any(-1) | ~scores.isfinite().any(-1)).view(-1, beams).any(-1)
    if not bad.any():
        return
    rows, name = int(bad.sum()), str(dtype).removeprefix("torch.")
    if dtype in (torch.float16, torch.bfloat16):
        fix = (f"its activations overflow {name} (Gemma-3's do): run with --dtype float32"
               + (" (or bfloat16 where the GPU has it: compute capability 8.0+)" if dtype == torch.float16 else ""))
    else:
        fix = "its weights or the speech embeddings hold NaN or infinity (a training run that diverged writes them)"
    error = LLMSRTError(f"{BROKEN_SCORES} for {rows} of {len(bad)} rows in {name}: {fix}")
    if rows == len(bad):
        error.every_row_of = rows
    raise error


class FirstScoresCheck:
    """`refuse_broken_scores` inside HF `generate` (beam search, or greedy with a repetition penalty): at its first
    step, on the prompts' scores (beam search's log-probabilities: NaN where a logit was NaN or +inf). A logits
    processor of `generate`, put before the others."""

    def __init__(self, dtype: torch.dtype, beams: int):
        self.dtype, self.beams, self.checked = dtype, beams, False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.checked:
            self.checked = True
            refuse_broken_scores(scores, self.dtype, self.beams)
        return scores


class PartNGrams:
    """HF's `no_repeat_ngram_size` within a part of each hypothesis: its n-grams counted over its ids from
    `part_start(row, ids)` on (an SRT translation's alone once its language tags are written, so it may repeat the
    transcript's numbers and names, as `NewTokensOnly` spares the cascade's source sentence); a loop inside a part is
    still blocked. A logits processor of `generate` (called with each hypothesis's new ids; `beams` a row)."""

    def __init__(self, n: int, part_start: PartStart, beams: int):
        self.n, self.part_start, self.beams = n, part_start, beams

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows = [ids[self.part_start(h // self.beams, ids):] for h, ids in enumerate(input_ids.tolist())]
        ban_repeated_ngrams(scores, rows, self.n)
        return scores


class RowCaps:
    """Beam search to each row's own cap in one `generate` (to the largest cap): a hypothesis of row b stops once it
    holds caps[b] new tokens, as `max_new_tokens=caps[b]` stops every hypothesis, so each row's search is the one it
    makes alone to its cap (its beams never meet another row's; at its cap its beam_size best end, and no later
    hypothesis of it can join them). A row cut from its batch's largest cap instead depends on its batch-mates: the
    best hypothesis at n tokens, cut to c, is not the best at c. Greedy search: row b stops with its first caps[b]
    tokens (padded after them), and `generate` stops once every row has. A stopping criterion of `generate` (one
    bool per hypothesis, which come row by row)."""

    def __init__(self, caps: Sequence[int]):
        self.caps = torch.tensor(list(caps))
        self.start: int | None = None  # the sequences' length before their first new token (a decoder prompt's)

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        if self.start is None:  # first called with each hypothesis's first new token
            self.start = input_ids.shape[1] - 1
        if self.caps.device != input_ids.device:
            self.caps = self.caps.to(input_ids.device)
        return (input_ids.shape[1] - self.start >= self.caps).repeat_interleave(input_ids.shape[0] // len(self.caps))


class EndRule:
    """`on_end` inside HF `generate` (beam search, or greedy with a repetition penalty), as `greedy_ids` applies it:
    a hypothesis whose best next token (after the other processors) would end it while on_end asks for ids gets
    them written, one per step, each then its only possible token (log-probability 0: its score unchanged); and
    such a hypothesis may not end through any other candidate either (its end tokens' scores -inf), so no
    finished hypothesis lacks them. A logits processor of `generate` (called with the generated ids so far)."""

    def __init__(self, on_end: OnEnd, eos: list[int], beams: int):
        self.on_end, self.eos, self.beams = on_end, list(eos), beams
        self.keep = max(2, 1 + len(self.eos)) * beams  # the candidates beam search keeps per row and step (HF's
        #   `beams_to_keep`): a hypothesis's token outside its own best `keep` cannot be picked
        # a hypothesis is (row, its ids): the beams of a row share its prompt, other rows do not
        self.pending: dict[tuple, list[int]] = {}  # a hypothesis -> the ids still to write after it
        self.free: set[tuple] = set()  # last step's hypotheses on_end lets end (so every extension of them)
        self.forced: list[tuple] = []  # hypotheses up to the last id written for them

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        best, may_end = torch.stack([last_argmax(scores[:, None]), may_pick(scores, self.eos, self.keep)]).tolist()
        free = set()  # this step's: only their extensions are looked up, at the next step
        for h, ids in enumerate(input_ids.tolist()):
            row = h // self.beams
            key = (row, *ids)
            todo = self.pending.pop(key, None)
            if todo is None:
                if ids and key[:-1] in self.free:
                    free.add(key)
                    continue
                if not may_end[h]:  # no end token can be picked for it at this step: on_end (tokenizer work per
                    continue  # hypothesis and step) would change nothing now; asked again when one can
                todo = self.on_end(row, ids)
                if not todo:
                    free.add(key)
                    continue
                if best[h] not in self.eos:  # it goes on by itself, but may not end yet
                    scores[h, self.eos] = float("-inf")
                    continue
            token = todo[0]
            scores[h] = float("-inf")
            scores[h, token] = 0.0
            if todo[1:]:
                self.pending[(*key, token)] = todo[1:]
            else:
                self.forced.append((*key, token))
        self.free = free
        return scores

    def written_rows(self, outputs: list[list[int]]) -> set[int]:
        """The rows whose final output (EOS cut) holds ids this rule wrote for them."""
        return {row for row, *ids in self.forced if outputs[row][:len(ids)] == ids}


PROCESSOR_FIELDS = ("suppress_tokens", "begin_suppress_tokens", "bad_words_ids", "forced_bos_token_id",
                    "forced_eos_token_id", "sequence_bias", "exponential_decay_length_penalty", "min_new_tokens",
                    "renormalize_logits", "watermarking_config")  # what adds a logits processor
# a model folder's settings that no search from our prompts can take, set off (a None is filled from the folder's
# own again): classifier-free guidance, token healing and an assistant's cache crashed `generate` from inputs_embeds
# (greedy_ids ignored them: beam search alone, or both, stopped on a traceback); remove_invalid_values turned NaN
# scores into numbers, so beam search wrote garbage where greedy refused them; encoder_* read a prompt's ids
NOT_FOR_OUR_SEARCH = {"guidance_scale": 1.0, "token_healing": False, "is_assistant": False,
                      "remove_invalid_values": False, "encoder_no_repeat_ngram_size": 0,
                      "encoder_repetition_penalty": 1.0}


def greedy_loop_fits(config: GenerationConfig) -> bool:
    """Whether HF greedy search with `config` is the argmax of the last logits but for n-gram blocking (which
    `greedy_ids` applies itself): no other logits processor changes them."""
    return (config.repetition_penalty in (1.0, None) and not config.min_length
            and not any(getattr(config, f, None) for f in PROCESSOR_FIELDS))


def greedy_ids(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
               eos: list[int], on_end: OnEnd | None = None, no_repeat_ngram: int = 0,
               written: set[int] | None = None, compiled: bool = False,
               caps: Sequence[int] | None = None, part_start: PartStart | None = None) -> list[list[int]]:
    """Greedy decoding on the LLM's KV cache, the same argmax steps as HF greedy search, but a row that has ended
    (EOS, or its cap: `caps[row]`, at most `max_new_tokens`, which is every row's cap where `caps` is None) leaves
    the batch (its cache rows dropped), so it costs nothing more: a short item batched with a long one stops at its
    own cap with the tokens it has there at any larger one.
    Left-padded embeds (B, L, d) + mask (B, L) -> new token ids per row, EOS excluded.

    `on_end(row, ids)`, asked once per row when it first picks an end token: None lets it end; token ids are
    written for it instead (one per step, the argmax ignored meanwhile) and it goes on (SRT's language tags); such
    rows go into `written`.
    `no_repeat_ngram` n > 0: a token that would repeat an n-gram of the row's new ids is never picked (HF's
    `no_repeat_ngram_size` over generated ids, as `generate` applies it to an inputs_embeds prompt), counted over the
    ids from `part_start(row, ids)` on where it is given.
    An LLMSRTError where the prompt's next-token logits are NaN (`refuse_broken_scores`).
    `compiled`: the steps run compiled on a static cache (`StaticSteps`; the same tokens in float32, while in
    bfloat16 and float16 the compiled kernels round differently, so a near-tie can pick another token) where the model
    allows it (`kv_cache.static_fits`), else as without it."""
    from .llm import causal_lm

    lm = causal_lm(model)
    batch = embeds.shape[0]
    if caps is not None and len(caps) != batch:
        raise ValueError(f"greedy_ids: {len(caps)} caps for {batch} rows")
    caps = [min(c, max_new_tokens) for c in caps] if caps is not None else [max_new_tokens] * batch
    longest = max(caps, default=max_new_tokens)  # the cache needs room for no more new tokens than this
    if compiled and StaticSteps.fits(lm, batch, mask.shape[1] + longest):
        steps = StaticSteps(lm, embeds, mask, longest)
        # the cache back to the store however the loop ends (NaN scores, out of memory, Ctrl-C), or a served shape's,
        # its CUDA graph recorded on it, is made and recorded anew; not where this shape or model goes eager for good
        give_back = True
        try:
            return _greedy_loop(steps, batch, longest, eos, on_end, no_repeat_ngram, written, caps, part_start)
        except torch._dynamo.exc.FailOnRecompileLimitHit as e:  # torch's limit of compiled shapes: this shape eager
            give_back = False
            StaticSteps.shapes_full(e)
        except torch._dynamo.exc.TorchDynamoException as e:  # the model's step does not compile: eager, said once
            if oom := [c for c in error_causes(e) if is_out_of_memory(c)]:  # compiling or recording a CUDA graph ran
                raise oom[-1] from None  # out of memory: the batch's to retry in halves, not refused for good
            give_back = False
            StaticSteps.refuse(lm, e)
        finally:
            if give_back:
                steps.close()
    steps = GrowingSteps(lm, embeds, mask, longest)
    return _greedy_loop(steps, batch, longest, eos, on_end, no_repeat_ngram, written, caps, part_start)


def _greedy_loop(steps, batch: int, max_new_tokens: int, eos: list[int], on_end: OnEnd | None,
                 no_repeat_ngram: int, written: set[int] | None, caps: list[int] | None = None,
                 part_start: PartStart | None = None) -> list[list[int]]:
    """`greedy_ids`' argmax loop over `steps` (GrowingSteps or StaticSteps), row i ending at caps[i] tokens (every
    row at `max_new_tokens` where `caps` is None)."""
    caps = caps or [max_new_tokens] * batch
    rows = list(range(batch))  # batch slot -> row of the result
    result: list[list[int]] = [[] for _ in rows]
    refuse_broken_scores(steps.logits[:, -1], steps.lm.dtype)
    token = _pick(steps.logits, result, rows, no_repeat_ngram, part_start)
    pending: dict[int, list[int]] = {}  # row whose on_end was asked -> the ids still to write for it
    stop = set(eos)
    while True:
        keep, chosen, replaced = [], token.tolist(), False
        for slot, t in enumerate(chosen):
            row = rows[slot]
            if pending.get(row):
                t = chosen[slot] = pending[row].pop(0)
                replaced = True
            elif t in stop and on_end is not None and row not in pending:
                pending[row] = list(on_end(row, list(result[row])) or [])
                if pending[row]:
                    t = chosen[slot] = pending[row].pop(0)
                    replaced = True
                    if written is not None:
                        written.add(row)
            if t not in stop:
                result[row].append(t)
                if len(result[row]) < caps[row]:
                    keep.append(slot)
        if not keep:
            return result
        if replaced:
            token = torch.tensor(chosen, device=token.device)
        if len(keep) < len(rows):  # finished rows leave the batch
            index = torch.tensor(keep, device=token.device)
            steps.keep(index)
            token = token[index]
            rows = [rows[slot] for slot in keep]
        token = _pick(steps.step(token), result, rows, no_repeat_ngram, part_start)


class GrowingSteps:
    """`greedy_ids`' steps on a cache that grows in place (`kv_cache.growing_cache`), eager: a finished row's cache
    rows are dropped, so the batch shrinks as rows end."""

    def __init__(self, lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int):
        from .kv_cache import growing_cache

        mask = mask.long()
        positions = prompt_positions(mask)
        out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                 past_key_values=growing_cache(lm.config, max_new_tokens))
        self.lm, self.cache, self.mask, self.position = lm, out.past_key_values, mask, positions[:, -1:] + 1
        self.logits = out.logits  # (B, 1, V): the prompt's next-token logits

    def keep(self, index: torch.Tensor) -> None:
        """Only these batch slots go on."""
        self.cache.batch_select_indices(index)
        self.mask, self.position = self.mask[index], self.position[index]

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Each slot's token in -> its next-token logits (B, 1, V)."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        out = self.lm(input_ids=token[:, None], attention_mask=self.mask, position_ids=self.position,
                      past_key_values=self.cache, use_cache=True)
        self.position = self.position + 1
        return out.logits


def _pick(logits: torch.Tensor, result: list[list[int]], rows: list[int], no_repeat_ngram: int,
          part_start: PartStart | None = None) -> torch.Tensor:
    """The next token of each batch slot (`last_argmax`; slot i decodes row rows[i] of `result`), none that would
    repeat one of its row's n-grams (n > 0; from `part_start(row, ids)` on where it is given)."""
    if no_repeat_ngram > 0:
        ids = [result[row] for row in rows]
        if part_start is not None:
            ids = [row_ids[part_start(row, row_ids):] for row, row_ids in zip(rows, ids)]
        ban_repeated_ngrams(logits[:, -1], ids, no_repeat_ngram)
    return last_argmax(logits)


class NewTokensOnly:
    """A logits processor of `generate` from a text prompt (input_ids, left-padded to `prompt_length`) given the
    generated tokens alone: HF's repetition penalty and n-gram blocking count the prompt's tokens too, so they would
    push a translation off its source sentence's names and numbers, or forbid repeating them (from embeddings, as the
    speech LLM decodes, HF's processors see the new tokens alone)."""

    def __init__(self, processor: Callable, prompt_length: int):
        self.processor, self.start = processor, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.processor(input_ids[:, self.start:], scores)


class FirstLineEnd:
    """Ends each row of `generate` from a text prompt (input_ids, left-padded to `prompt_length`) at its first
    token holding a line break once the row has written text: the answer is the first line that is not blank, so
    a row that opens with a line break goes on to its first line (stopping at any line break ended it with
    nothing). `texts`: each vocabulary id's text alone. A stopping criterion of `generate` (one bool per row)."""

    def __init__(self, texts: list[str], prompt_length: int):
        self.start = prompt_length
        self.masks = torch.tensor([["\n" in t, any(line.strip() for line in t.split("\n")[:-1]), bool(t.strip())]
                                   for t in texts], dtype=torch.bool).reshape(-1, 3)  # holds a line break; a line
        #   with text that a line break in it ends ("Hund.\n", "\n\nHund.\n"); any text

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.start:]
        if self.masks.device != new.device:
            self.masks = self.masks.to(new.device)
        known = new < self.masks.shape[0]  # an id past the tokenizer's vocabulary (a padded output head) is text
        masks = self.masks[new.clamp(max=self.masks.shape[0] - 1)] & known[..., None]
        masks[..., 1:] |= ~known[..., None]
        last = masks[:, -1]
        return last[:, 0] & (last[:, 1] | masks[:, :-1, 2].any(1))


def ban_repeated_ngrams(scores: torch.Tensor, rows: list[list[int]], n: int) -> None:
    """Scores (B, V) of each row's next token: -inf, in place, for those that would repeat an n-gram of its ids."""
    for h, ids in enumerate(rows):
        banned = repeated_ngram_ends(ids, n)
        if banned:
            scores[h, banned] = float("-inf")


def repeated_ngram_ends(ids: list[int], n: int) -> list[int]:
    """The tokens that, written after `ids`, would repeat an n-gram of `ids` (HF's NoRepeatNGramLogitsProcessor)."""
    if len(ids) + 1 < n:
        return []
    start = len(ids) - n + 1  # the last n - 1 ids: a new n-gram's head
    return [ids[i + n - 1] for i in range(start) if ids[i:i + n - 1] == ids[start:]]


def last_argmax(logits: torch.Tensor) -> torch.Tensor:
    """(B, T, V) -> (B,): the argmax of each row's last logits, exactly torch's (the first of equal maxima, a NaN
    counted as the largest). On the CPU torch's argmax reads one value at a time (Gemma's 262k logits at 16 rows:
    5.3 ms, a tenth of an int8 decode step), while its max vectorizes: so the vocabulary's first ARGMAX_BLOCK-
    multiple is reduced to block maxima, and the argmax runs on those and then inside the first block holding the
    row's maximum (0.5 ms)."""
    last = logits[:, -1]
    rows, vocab = last.shape
    whole = vocab // ARGMAX_BLOCK * ARGMAX_BLOCK
    if last.device.type != "cpu" or vocab < ARGMAX_MIN_VOCAB or last.stride(-1) != 1:
        return last.argmax(-1)
    blocks = last[:, :whole].view(rows, -1, ARGMAX_BLOCK)
    block = blocks.amax(-1).argmax(-1)  # (B,): the first block holding the row's maximum (or its first NaN)
    inside = blocks[torch.arange(rows, device=last.device), block].argmax(-1)
    token = block * ARGMAX_BLOCK + inside
    if whole < vocab:  # the tail after the last whole block wins only when strictly larger (or NaN where none was)
        best = last.gather(1, token[:, None])[:, 0]
        tail_best, tail = last[:, whole:].max(-1)
        wins = (tail_best > best) | (tail_best.isnan() & ~best.isnan())
        token = torch.where(wins, tail + whole, token)
    return token


def may_pick(scores: torch.Tensor, tokens: list[int], k: int) -> torch.Tensor:
    """(H, V) scores -> (H,) 0/1: whether one of `tokens` may be among a row's `k` highest scores (ties and NaNs
    counted for it: a 0 is certain, a 1 may not be). On the CPU, for large vocabularies, from block maxima (each
    block whose maximum beats the tokens' best holds at least one score above it; 1.9 ms for 40 x 262k logits on
    2 cores against 12 ms for torch's topk); else from topk."""
    rows, vocab = scores.shape
    best = scores[:, tokens].amax(-1, keepdim=True)
    if scores.device.type == "cpu" and vocab >= ARGMAX_MIN_VOCAB and scores.stride(-1) == 1:
        whole = vocab // ARGMAX_BLOCK * ARGMAX_BLOCK
        above = (scores[:, :whole].view(rows, -1, ARGMAX_BLOCK).amax(-1) > best).sum(-1)
        above += (scores[:, whole:] > best).sum(-1)
        return (above < k).long()
    kth = scores.topk(min(k, vocab), -1).values[:, -1:]
    return (~(best < kth))[:, 0].long()


def prompt_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded prompts (B, L) from their mask, as `generate` counts them: 0 at padding."""
    mask = mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def prompt_cache(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, copies: int):
    """The LLM's KV cache of left-padded prompts (B, L, d), positions counted as `generate` counts them (from the
    mask), each row's cache repeated `copies` times in place (row i's copies at i * copies ...: generate's
    order)."""
    from .llm import backbone_and_head

    backbone, _ = backbone_and_head(model)
    positions = prompt_positions(mask)
    cache = backbone(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions,
                     use_cache=True).past_key_values
    cache.batch_repeat_interleave(copies)
    return cache


def generation_config(base: GenerationConfig, o: DecodingOptions, eos: list[int], pad_id: int) -> GenerationConfig:
    """`base` (the model's own) set for deterministic search with `o`: no sampling, EOS ids, pad id, none of
    NOT_FOR_OUR_SEARCH (greedy and beam search alike, from embeddings or text). (What would
    change how a search runs or what it returns, `load_llm` cleared from the model's own at load: `generate` fills
    every setting left None from it.)"""
    config = copy.deepcopy(base)
    # Deterministic search only: clear the sampling settings some checkpoints ship with.
    for name in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        setattr(config, name, None)
    config.do_sample = False
    for name, off in NOT_FOR_OUR_SEARCH.items():
        if getattr(config, name, None) is not None:
            setattr(config, name, off)
    config.num_beams = o.beam_size
    config.num_return_sequences = 1
    config.max_new_tokens = o.max_new_tokens
    config.max_length = None
    config.min_new_tokens = None
    config.min_length = 0
    if base.min_new_tokens:  # `generate` fills a None from the model's own: a folder's minimum held in beam search
        # and HF's greedy search, not in `greedy_ids`. 0 sets min_length to the prompt's ids (None: filled, then
        # overridden; 0 would have transformers warn at each call that both are set)
        config.min_new_tokens, config.min_length = 0, None
    config.length_penalty = o.length_penalty if o.beam_size > 1 else 1.0  # greedy has none (transformers warns)
    config.no_repeat_ngram_size = o.no_repeat_ngram_size
    config.repetition_penalty = 1.0  # the callers penalize the new tokens alone, with a processor of their own
    config.early_stopping = o.early_stopping if o.beam_size > 1 else False
    config.eos_token_id = eos
    config.pad_token_id = pad_id
    config.bos_token_id = None
    return config
