"""`llm-srt bench` on the embedded models (the CPU default): paper Table 7's shape plus the toolkit's speed levers.

    llm-srt bench [--model DIR] [--n 16] [--quick] [--json] [--device D --dtype T]

Everything is measured side by side in one process, on the same utterances, and reported as ratios:
  (a) LLM-SRT: Whisper at variable length -> Q-Former (80 queries) -> LLM; greedy and beam, by batch size;
  (b) the Qwen2-Audio-style peer: Whisper on 30 s padded input -> 2x average pooling (750 speech tokens) -> the same
      LLM (a fresh pooled adapter over the same Whisper and LLM folders);
  (c) the cascade: Whisper's own ASR decoding, then the LLM translating the transcript (model/systems.py);
  training steps with and without the encoder-feature cache, on the same batch; the encoder at variable length vs
  30 s padding on ~10 s clips; and the full `SpeechTranslator.translate()` path against the forward passes its
  output strictly needs (encoder, adapter, LLM prefill, one KV-cached LLM step per further token), each replayed
  alone on the very inputs translate() gave them (recorded by hooks).

Decode length. (a) and (b) run through the systems' own `run_batch` and generate exactly `new_tokens` tokens per
utterance (the LLM's EOS logit pinned to 0 by `common.pin_eos`, after the natural-length measurements; checked per
generation), so an untrained adapter's early EOS favours neither system. The cascade and translate() decode
naturally (EOS stops them, `new_tokens` caps them); the tokens they produced are reported next to their times.
Times are wall-clock seconds of one pass (after an untimed warm-up), timed after `device.synchronize`; peak memory
is torch's allocator peak on CUDA, the process RSS (sampled every few milliseconds) on the CPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import device as dev
from .. import languages
from ..audio import SAMPLE_RATE, load_audio
from ..device import Placement
from ..errors import LLMSRTError
from ..prompts import Task, build
from .common import LLMCalls, PeakMemory, decode_pass, pin_eos, release

DEFAULT_MANIFEST = "data/mini/test.jsonl"  # the embedded mini corpus; espeak-ng clips when it is absent
DEFAULT_TRAINED = "checkpoints/embedded/srt"  # the CLI benchmarks this trained adapter when it is a Q-Former
BATCH_SIZES = (1, 4, 8, 16)  # Q-Former greedy
BEAM_BATCH_SIZES = (4, 8)  # Q-Former beam search (paper: 4/8/12)
POOLED_BATCH_SIZES = (4, 8)  # the 750-token peer, greedy (paper: batch 4, out of memory at 8)
HEADLINE_BATCH = 8  # adapter_vs_pooled_speedup, the cascade and translate() run at this batch size
LONG_SECONDS = 10.0  # clip length for the variable-length vs 30 s padding comparison
SILENCE_SECONDS = 0.3  # gap between clips concatenated into a long clip
GOALS = {  # ratio -> target on the 2-core CPU with the embedded models (higher is better unless "max")
    "adapter_vs_pooled_speedup": (3.0, "min"),
    "feature_cache_speedup": (4.0, "min"),
    "variable_length_speedup": (2.5, "min"),
    "batch16_vs_batch1": (6.0, "min"),
    "overhead_vs_lower_bound": (1.25, "max"),
}
ESPEAK_SENTENCES = (  # fallback utterances (eng -> deu) when no manifest is available
    ("Will it rain tomorrow?", "Regnet es morgen?"),
    ("The file could not be opened because it does not exist.", "Die Datei existiert nicht."),
    ("Please enter your password again.", "Bitte geben Sie Ihr Passwort erneut ein."),
    ("Sets the number of digits displayed for floating point values.", "Setzt die Anzahl der Ziffern."),
    ("The connection to the server was lost.", "Die Verbindung zum Server wurde getrennt."),
    ("Do you want to save the changes before closing?", "Wollen Sie die Änderungen speichern?"),
    ("Select the language you would like to use.", "Wählen Sie die Sprache aus."),
    ("No printer is installed on this computer.", "Auf diesem Computer ist kein Drucker installiert."),
)
ESPEAK_SPEEDS = (120, 150, 175)  # words per minute, cycled: gives clips of about 2 to 6 s


@dataclass(frozen=True)
class BenchOptions:
    """What to benchmark and how much of it."""

    model: str | None = None  # trained model folder whose adapter (a) uses; None = a fresh Q-Former adapter
    encoder: str = "embedded"  # Whisper folder (for a fresh adapter and the cascade)
    llm: str = "embedded"  # LLM folder (for a fresh adapter and the cascade)
    adapter_kwargs: dict = field(default_factory=dict)  # fresh Q-Former options (tests shrink it)
    manifest: str | None = DEFAULT_MANIFEST  # utterances come from here; None or missing = espeak-ng clips
    n: int = 16  # utterances per configuration
    new_tokens: int = 32  # generated tokens per utterance ((a), (b)); the cap for the cascade and translate()
    batch_sizes: tuple[int, ...] = BATCH_SIZES  # (a) greedy
    beam_size: int = 5  # (a) beam search width
    beam_batch_sizes: tuple[int, ...] = BEAM_BATCH_SIZES  # (a) beam search
    pooled_batch_sizes: tuple[int, ...] = POOLED_BATCH_SIZES  # (b) greedy
    headline_batch: int = HEADLINE_BATCH  # batch of the (a)/(b) headline ratio, the cascade and translate()
    cascade: bool = True  # run (c) (needs a full Whisper folder with its tokenizer)
    train_batch: int = 8  # examples per training step
    train_steps: int = 3  # timed training steps each way (after one warm-up step each)
    long_clips: int = 4  # ~10 s clips in the encoder comparison (one batch)
    long_seconds: float = LONG_SECONDS
    encoder_repeats: int = 2  # best of this many passes for the encoder comparison
    seed: int = 0  # fresh adapter weights

    def __post_init__(self):
        if self.n < 1 or self.new_tokens < 2 or self.train_batch < 1 or self.train_steps < 1:
            raise LLMSRTError("bench: n, train_batch and train_steps must be >= 1 and new_tokens >= 2")
        if 1 not in self.batch_sizes or self.headline_batch not in self.batch_sizes \
                or self.headline_batch not in self.pooled_batch_sizes:
            raise LLMSRTError(f"bench: batch sizes must include 1 and the headline batch {self.headline_batch}")


QUICK = dict(n=16, new_tokens=16, batch_sizes=(1, 8, 16), beam_batch_sizes=(8,), pooled_batch_sizes=(8,),
             train_steps=2, encoder_repeats=1)  # --quick: the JSON keys with fewer configurations


@dataclass
class Utterance:
    path: str  # audio file (the training comparison reads it, as the recipe does)
    audio: np.ndarray  # 16 kHz float32
    src: str
    tgt: str
    transcript: str
    translation: str

    @property
    def seconds(self) -> float:
        return self.audio.size / SAMPLE_RATE


# ---- the run ------------------------------------------------------------------------------------------------------
def run_bench(options: BenchOptions = BenchOptions(), placement: Placement | None = None,
              log=lambda msg: None) -> dict:
    """Run every measurement; returns the JSON-ready result (ratios, goals and the raw times)."""
    from ..model.encoder import WhisperEncoder
    from ..model.systems import SpeechLLMSystem

    placement = placement or dev.resolve("cpu", "float32")
    started, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="llm-srt-bench-") as tmp:
        utts = load_utterances(options, Path(tmp))
        utts.sort(key=lambda u: -u.audio.size)  # longest first: batches of similar lengths
        model, model_name = _load_model(options, placement)
        whisper = model.encoder
        variable = WhisperEncoder(whisper.encoder, whisper.feature_extractor, pad_to_30s=False, name=whisper.name)
        padded = WhisperEncoder(whisper.encoder, whisper.feature_extractor, pad_to_30s=True, name=whisper.name)
        log("encoder: variable length vs 30 s padding")
        encoder = time_encoder(variable, padded, long_clips(utts, options.long_clips, options.long_seconds),
                               options.encoder_repeats, placement.device)
        log("translate() vs its lower bound")
        overhead = time_overhead(model, utts, options.headline_batch, options.new_tokens)
        log("training steps with and without the feature cache")
        train = time_training(model, utts, options.train_batch, options.train_steps, Path(tmp))
        cascade = None
        if options.cascade:
            log("cascade")
            cascade = time_cascade(model, placement, utts, options.headline_batch, options.new_tokens)
        rows = []
        pin_eos(model)  # from here on every utterance decodes exactly new_tokens tokens
        plan = ([("llm-srt", 1, b) for b in options.batch_sizes]
                + [("llm-srt", options.beam_size, b) for b in options.beam_batch_sizes])
        rows += decode_rows(SpeechLLMSystem(model, "llm-srt", placement), utts, plan, options, log)
        folders = (model.config.encoder, model.config.llm)
        del model, whisper, variable, padded
        release(placement.device)
        torch.manual_seed(options.seed)
        pooled = _pooled_model(folders, placement)
        rows += decode_rows(SpeechLLMSystem(pooled, "pooled-750", placement), utts,
                            [("pooled-750", 1, b) for b in options.pooled_batch_sizes], options, log)
    setup = {"model": model_name, "load_average_at_start": round(load, 2), "device": str(placement),
             "bench_seconds": round(time.perf_counter() - started, 1)}
    return summarize(options, setup, utts, rows, encoder, overhead, train, cascade)


def decode_rows(system, utts: list["Utterance"], plan, options: "BenchOptions", log) -> list[dict]:
    """(a) or (b): every (beam, batch) of `plan` over all utterances through `system.run_batch`, fixed length."""
    from ..model.decoding import DecodingOptions

    audios = [u.audio for u in utts]
    decoding = DecodingOptions(max_new_tokens=options.new_tokens)
    with torch.inference_mode():
        decode_pass(system, audios[:1], 1, replace(decoding, max_new_tokens=2))  # warm-up
    rows = []
    for name, beam, batch in plan:
        log(f"decode {name} beam {beam} batch {batch}")
        run = decode_pass(system, audios, batch, replace(decoding, beam_size=beam))
        rows.append({"system": name, "beam": beam, "batch_size": batch, "seconds": run.seconds,
                     "utterances_per_s": round(run.utterances / run.seconds, 3), "speech_tokens": run.speech_tokens,
                     "new_tokens": run.new_tokens, "peak_mib": run.peak_mib, "memory": run.memory})
    return rows


def summarize(options: BenchOptions, setup: dict, utts, rows, encoder, overhead, train, cascade) -> dict:
    def seconds(system: str, beam: int, batch: int) -> float:
        return next(r["seconds"] for r in rows if (r["system"], r["beam"], r["batch_size"]) == (system, beam, batch))

    head, top = options.headline_batch, max(options.batch_sizes)
    ratios = {
        "adapter_vs_pooled_speedup": seconds("pooled-750", 1, head) / seconds("llm-srt", 1, head),
        "feature_cache_speedup": train["s_per_step_audio"] / train["s_per_step_cached"],
        "variable_length_speedup": encoder["padded_s"] / encoder["variable_s"],
        "batch16_vs_batch1": seconds("llm-srt", 1, 1) / seconds("llm-srt", 1, top),
        "overhead_vs_lower_bound": overhead["translate_s"] / overhead["lower_bound_s"],
    }
    goals = {k: {"target": t, "met": bool(ratios[k] >= t if how == "min" else ratios[k] <= t)}
             for k, (t, how) in GOALS.items()}
    return {
        **{k: round(v, 3) for k, v in ratios.items()},
        "goals": goals,
        "setup": {**setup, "utterances": len(utts), "audio_seconds": round(sum(u.seconds for u in utts), 2),
                  "new_tokens": options.new_tokens, "batch16_vs_batch1_batches": [top, 1],
                  "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "decode": rows, "encoder": encoder, "overhead": overhead, "train": train, "cascade": cascade,
    }


# ---- utterances ---------------------------------------------------------------------------------------------------
def load_utterances(options: BenchOptions, workdir: Path) -> list[Utterance]:
    """`n` translation utterances (one per audio file) from the manifest, else espeak-ng clips written to workdir."""
    if options.manifest and Path(options.manifest).is_file():
        from ..data.manifest import read_manifest

        seen, utts = set(), []
        for row in read_manifest(options.manifest):
            if not row.tgt_lang or row.audio in seen:
                continue
            seen.add(row.audio)
            utts.append(Utterance(row.audio, load_audio(row.audio), row.src_lang, row.tgt_lang, row.transcript,
                                  row.translation))
            if len(utts) == options.n:
                return utts
        if utts:
            return utts
    return espeak_utterances(options.n, workdir)


def espeak_utterances(n: int, workdir: Path) -> list[Utterance]:
    from ..audio import write_wav

    if shutil.which("espeak-ng") is None:
        raise LLMSRTError(f"bench: no manifest ({DEFAULT_MANIFEST}) and espeak-ng is not installed; run "
                          "`llm-srt prepare mini` or install espeak-ng")
    voice = languages.get("eng").espeak
    utts = []
    for i in range(n):
        text, translation = ESPEAK_SENTENCES[i % len(ESPEAK_SENTENCES)]
        speed = ESPEAK_SPEEDS[i % len(ESPEAK_SPEEDS)]
        wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True,
                             capture_output=True).stdout
        audio = load_audio(wav, name=f"espeak clip {i}")
        path = workdir / f"clip{i:03d}.wav"
        write_wav(path, audio)
        utts.append(Utterance(str(path), audio, "eng", "deu", text, translation))
    return utts


def long_clips(utts: list[Utterance], count: int, seconds: float) -> list[np.ndarray]:
    """`count` clips of exactly `seconds`, each utterances joined by short silences (cycling through them)."""
    gap = np.zeros(int(SILENCE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    target, k, clips = int(seconds * SAMPLE_RATE), 0, []
    for _ in range(count):
        parts, size = [], 0
        while size < target:
            parts += [utts[k % len(utts)].audio, gap]
            size += parts[-2].size + gap.size
            k += 1
        clips.append(np.concatenate(parts)[:target])
    return clips


def _load_model(options: BenchOptions, placement: Placement):
    from ..model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(options.seed)
    if options.model:
        model = SpeechLLM.from_pretrained(options.model, device=placement.device, dtype=placement.dtype_name)
        name = options.model
    else:
        config = SpeechLLMConfig(encoder=options.encoder, llm=options.llm, adapter="qformer",
                                 adapter_kwargs=dict(options.adapter_kwargs), dtype=placement.dtype_name)
        model, name = SpeechLLM(config, device=placement.device), "fresh qformer adapter"
    if model.config.adapter != "qformer":
        raise LLMSRTError(f"bench: {options.model} has a {model.config.adapter!r} adapter; (a) benchmarks the "
                          "Q-Former (paper) — give a Q-Former model folder or none")
    return model.eval(), name


def _pooled_model(folders: tuple[str, str], placement: Placement):
    """(b): a fresh pooled adapter (750 tokens per 30 s) over the same Whisper and LLM folders as (a)."""
    from ..model.speech_llm import SpeechLLM, SpeechLLMConfig

    config = SpeechLLMConfig(encoder=folders[0], llm=folders[1], adapter="pooled", pad_to_30s=True,
                             dtype=placement.dtype_name)
    model = SpeechLLM(config, device=placement.device).eval()
    pin_eos(model)
    return model


# ---- encoder: variable length vs 30 s padding ---------------------------------------------------------------------
def time_encoder(variable, padded, clips: list[np.ndarray], repeats: int, device: torch.device) -> dict:
    """Best-of-`repeats` seconds of encode() (log-mel + forward) on one batch of long clips, each way."""
    out = {"clips": len(clips), "clip_seconds": round(clips[0].size / SAMPLE_RATE, 2)}
    for name, enc in (("variable", variable), ("padded", padded)):
        with torch.inference_mode():
            enc.encode(clips[:1])  # warm-up
            times = []
            with PeakMemory(device) as memory:
                for _ in range(repeats):
                    dev.synchronize(device)
                    t0 = time.perf_counter()
                    h, _ = enc.encode(clips)
                    dev.synchronize(device)
                    times.append(time.perf_counter() - t0)
        out |= {f"{name}_s": round(min(times), 4), f"{name}_frames": int(h.shape[1]),
                f"{name}_peak_mib": memory.mib}
    return out


# ---- translate() vs the forward passes it needs -------------------------------------------------------------------
class EncoderInputs:
    """Records the (mel, mask) of every batch the Whisper encoder computes features for, to replay them (a spy on
    this instance's `features`; `encode` calls `forward` directly, so a module hook would not see the calls)."""

    def __init__(self, whisper):
        self.whisper, self.calls = whisper, []

    def __enter__(self):
        original = self.whisper.features

        def features(audios):
            out = original(audios)
            self.calls.append(out)
            return out

        self.whisper.features = features  # an instance attribute shadows the method until __exit__
        return self

    def __exit__(self, *exc):
        del self.whisper.features


def time_overhead(model, utts: list[Utterance], batch: int, new_tokens: int) -> dict:
    """translate() on every utterance vs the sum of the encoder, adapter, LLM prefill and KV-cached LLM steps its
    output needed, each replayed alone on the inputs translate() gave them (hooks record the encoder's mel and each
    generation's prefill and step count), so nothing of translate()'s batching is re-implemented here."""
    from ..infer import SpeechTranslator
    from ..model.decoding import DecodingOptions
    from ..model.systems import SpeechLLMSystem

    translator = SpeechTranslator(SpeechLLMSystem(model, "bench"))
    audios = [u.audio for u in utts]
    src, tgt = utts[0].src, utts[0].tgt  # one call, one language pair: the prompt tags do not change the cost
    options = DecodingOptions(max_new_tokens=new_tokens)
    translator.translate(audios[:1], src, tgt, Task.SRT, replace(options, max_new_tokens=2))  # warm-up
    device = model.device
    with LLMCalls(model.llm, keep_inputs=True) as calls, EncoderInputs(model.encoder) as mels, \
            PeakMemory(device) as memory:
        dev.synchronize(device)
        t0 = time.perf_counter()
        results = translator.translate(audios, src, tgt, Task.SRT, options, batch_size=batch)
        dev.synchronize(device)
        translate_s = time.perf_counter() - t0
    errors = [r.error for r in results if r.error]
    if errors:
        raise LLMSRTError(f"bench: translate() failed: {errors[0]}")
    if len(mels.calls) != len(calls.generations):
        raise LLMSRTError(f"bench: translate() ran the encoder {len(mels.calls)} times for "
                          f"{len(calls.generations)} generations")
    parts = {"encoder_s": 0.0, "adapter_s": 0.0, "prefill_s": 0.0, "decode_s": 0.0}
    with torch.inference_mode():
        for (mel, mel_mask), gen in zip(mels.calls, calls.generations):
            for key, seconds in lower_bound(model, mel, mel_mask, gen).items():
                parts[key] += seconds
    lower = sum(parts.values())
    return {"translate_s": round(translate_s, 3), "lower_bound_s": round(lower, 3),
            **{k: round(v, 3) for k, v in parts.items()}, "batch_size": batch, "generations": len(mels.calls),
            "llm_forward_calls": sum(g["calls"] for g in calls.generations), "peak_mib": memory.mib}


def lower_bound(model, mel: torch.Tensor, mel_mask: torch.Tensor, generation: dict) -> dict[str, float]:
    """Time each needed forward pass alone: the encoder on the recorded mel, the adapter, the LLM prefill on the
    recorded inputs_embeds, then `calls - 1` KV-cached single-token steps."""
    whisper, llm, device = model.encoder, model.llm, model.device
    adapter_dtype = next(model.adapter.parameters()).dtype
    times = []

    def tick():
        dev.synchronize(device)
        times.append(time.perf_counter())

    tick()
    h, mask = whisper(mel, mel_mask)
    tick()
    model.adapter(h.to(adapter_dtype), mask)
    tick()
    attention, positions = generation["mask"], generation["positions"]  # as generate passed them
    if positions is None:
        positions = torch.arange(generation["shape"][1], device=device).expand(generation["shape"][0], -1)
    tick()
    out = llm(inputs_embeds=generation["embeds"], attention_mask=attention, position_ids=positions, use_cache=True,
              logits_to_keep=1)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    tick()
    cache = out.past_key_values
    for _ in range(generation["calls"] - 1):
        if attention is not None:
            attention = torch.cat([attention, attention.new_ones(attention.shape[0], 1)], dim=1)
        positions = positions[:, -1:] + 1
        out = llm(input_ids=token, attention_mask=attention, position_ids=positions, past_key_values=cache,
                  use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
    tick()
    return {"encoder_s": times[1] - times[0], "adapter_s": times[2] - times[1], "prefill_s": times[4] - times[3],
            "decode_s": times[5] - times[4]}


# ---- training: encoder-feature cache vs audio ---------------------------------------------------------------------
def time_training(model, utts: list[Utterance], batch_size: int, steps: int, workdir: Path) -> dict:
    """Seconds per optimizer step on one batch read as audio (encoder runs) vs from the feature cache (it does not),
    through the recipe's own pieces (collate, FeatureCache, SpeechLLM.forward, AdamW). Trained weights restored."""
    from ..data.features import FeatureCache
    from ..data.loader import Example, collate

    chosen = [utts[i % len(utts)] for i in range(batch_size)]
    examples = []
    for i, u in enumerate(chosen):
        prompt, target = build(Task.SRT, u.src, u.tgt, u.transcript, u.translation)
        examples.append(Example(id=f"bench{i}", audio=u.path, duration=u.seconds, task=Task.SRT, prompt=prompt,
                                target=target, src=u.src, tgt=u.tgt, transcript=u.transcript,
                                translation=u.translation))
    whisper = model.encoder
    cache = FeatureCache(workdir / "features", whisper.identity, {"pad_to_30s": whisper.pad_to_30s})

    @torch.inference_mode()
    def encode(audios):
        h, mask = whisper.encode(audios)
        return [h[i, mask[i]].float().cpu().numpy() for i in range(len(audios))]

    paths = [e.audio for e in examples]
    cache.get_or_compute(paths, encode)  # fill the cache (the recipe does this once, before training)
    batches = {"audio": lambda: collate(examples),
               "cached": lambda: collate(examples, cache.get_or_compute(paths, encode))}
    params = model.trainable_parameters()
    saved = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    times: dict[str, list[float]] = {"audio": [], "cached": []}
    encoder_calls = {"audio": 0, "cached": 0}
    way = "audio"

    def count(*_):
        encoder_calls[way] += 1

    handle = whisper.encoder.conv1.register_forward_hook(count)
    model.train()
    device = model.device
    try:
        with PeakMemory(device) as memory:
            for step in range(steps + 1):  # step 0 warms up; the two ways alternate so drift hits both alike
                for way in ("audio", "cached"):
                    dev.synchronize(device)
                    t0 = time.perf_counter()
                    optimizer.zero_grad(set_to_none=True)
                    model(batches[way]())["loss"].backward()
                    optimizer.step()
                    dev.synchronize(device)
                    if step:
                        times[way].append(time.perf_counter() - t0)
    finally:
        handle.remove()
        model.eval()
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)
    return {"batch_size": batch_size, "steps": steps,
            "s_per_step_audio": round(float(np.mean(times["audio"])), 4),
            "s_per_step_cached": round(float(np.mean(times["cached"])), 4),
            "encoder_calls_audio": encoder_calls["audio"], "encoder_calls_cached": encoder_calls["cached"],
            "cache_hits": cache.hits, "cache_misses": cache.misses, "peak_mib": memory.mib}


# ---- (c) the cascade ----------------------------------------------------------------------------------------------
def time_cascade(model, placement: Placement, utts: list[Utterance], batch: int, new_tokens: int) -> dict:
    """Whisper ASR decoding then LLM text MT (natural lengths, capped at new_tokens), same utterances and batch,
    through the cascade system's own run_batch."""
    from ..model.decoding import DecodingOptions
    from ..model.systems import Item, load_system

    cascade = load_system("cascade", placement, whisper=model.config.encoder, llm=model.config.llm)
    decoding = DecodingOptions(max_new_tokens=new_tokens)
    chunks = [utts[s:s + batch] for s in range(0, len(utts), batch)]

    def run(chunk):
        return cascade.run_batch([Item(u.audio, u.src, u.tgt, Task.SRT) for u in chunk], decoding)

    run(chunks[0][:1])  # warm-up
    with PeakMemory(placement.device) as memory:
        dev.synchronize(placement.device)
        t0 = time.perf_counter()
        outputs = [out for chunk in chunks for out in run(chunk)]
        dev.synchronize(placement.device)
        seconds = time.perf_counter() - t0
    failed = [o.error for o in outputs if o.error]
    if failed:
        raise LLMSRTError(f"bench: the cascade failed: {failed[0]}")
    asr_tok, mt_tok = cascade.asr.tokenizer, cascade.mt.tokenizer
    return {"batch_size": batch, "seconds": round(seconds, 3), "utterances_per_s": round(len(utts) / seconds, 3),
            "asr_tokens_mean": round(float(np.mean([len(asr_tok(o.transcript, add_special_tokens=False)["input_ids"])
                                                    for o in outputs])), 1),
            "mt_tokens_mean": round(float(np.mean([len(mt_tok(o.translation, add_special_tokens=False)["input_ids"])
                                                   for o in outputs])), 1),
            "peak_mib": memory.mib}


# ---- report -------------------------------------------------------------------------------------------------------
SYSTEM_NAMES = {"llm-srt": "LLM-SRT (Q-Former, 80 tok)", "pooled-750": "Qwen2-Audio-style (pooled, 750 tok)"}


def format_table(result: dict) -> str:
    """Paper Table 7's shape: seconds for the N utterances by system, search and batch size; then the ratios."""
    s = result["setup"]
    lines = [f"Speed: {s['utterances']} utterances ({s['audio_seconds']} s of audio), {s['new_tokens']} generated "
             f"tokens each, {s['torch_threads']} torch threads; model: {s['model']}",
             "",
             f"{'system':38} {'search':8} {'batch':>5} {'seconds':>9} {'utt/s':>7} {'speech tok':>10} {'peak MiB':>9} "
             ""]
    for r in result["decode"]:
        search = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        lines.append(f"{SYSTEM_NAMES[r['system']]:38} {search:8} {r['batch_size']:>5} {r['seconds']:>9.2f} "
                     f"{r['utterances_per_s']:>7.2f} {r['speech_tokens']:>10} {r['peak_mib']:>9.0f}")
    c = result["cascade"]
    if c:
        lines.append(f"{'Cascade (Whisper ASR -> LLM MT)':38} {'greedy':8} {c['batch_size']:>5} {c['seconds']:>9.2f} "
                     f"{c['utterances_per_s']:>7.2f} {'-':>10} {c['peak_mib']:>9.0f}  (tokens: ASR "
                     f"{c['asr_tokens_mean']}, MT {c['mt_tokens_mean']} per utterance)")
    e, t, o = result["encoder"], result["train"], result["overhead"]
    lines += ["",
              f"encoder, {e['clips']} x {e['clip_seconds']} s clips: variable length {e['variable_s']:.3f} s "
              f"({e['variable_frames']} frames), 30 s padded {e['padded_s']:.3f} s ({e['padded_frames']} frames)",
              f"training step, batch {t['batch_size']}: from audio {t['s_per_step_audio']:.3f} s, from the feature "
              f"cache {t['s_per_step_cached']:.3f} s (encoder calls {t['encoder_calls_audio']} vs "
              f"{t['encoder_calls_cached']})",
              f"translate(), batch {o['batch_size']}: {o['translate_s']:.2f} s; needed forward passes "
              f"{o['lower_bound_s']:.2f} s (encoder {o['encoder_s']:.2f}, adapter {o['adapter_s']:.2f}, prefill "
              f"{o['prefill_s']:.2f}, decode {o['decode_s']:.2f}; {o['llm_forward_calls']} LLM calls)",
              ""]
    for key, goal in result["goals"].items():
        how = ">=" if GOALS[key][1] == "min" else "<="
        lines.append(f"{key:28} {result[key]:>7.2f}   goal {how} {goal['target']:<5} "
                     f"{'met' if goal['met'] else 'MISSED'}")
    lines.append(f"(bench took {s['bench_seconds']:.0f} s)")
    return "\n".join(lines)


def _is_qformer_model(folder: Path) -> bool:
    """Whether `folder` is a model folder with a Q-Former adapter, the only kind (a) times."""
    from ..model.speech_llm import read_config

    try:
        return read_config(folder)["adapter"] == "qformer"
    except LLMSRTError:
        return False
