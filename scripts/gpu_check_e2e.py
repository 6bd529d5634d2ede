"""The GPU check's e2e step (scripts/gpu_check.py): tiny random models and a tone-clip corpus through the real CLI
verbs: `curriculum`, `train` killed with SIGKILL and resumed (its losses and state against the uninterrupted run's),
`translate` and `evaluate`."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gpu_check_env import ROOT
from gpu_check_runner import STEP_LIMITS, Check, Done, die_with_check, torch_device_type

COMMAND_LIMIT_S = 150  # seconds per command of the e2e step (its commands share the step's limit)
SENTENCES = (("a cat", "eine Katze"), ("the dog", "der Hund"), ("red sun", "rote Sonne"),
             ("big tree", "grosser Baum"), ("cold water", "kaltes Wasser"), ("my house", "mein Haus"))
TINY_ADAPTER = "{num_queries: 4, hidden_size: 32, num_layers: 1, num_heads: 4, intermediate_size: 64}"


def write_corpus(root: Path) -> dict[str, Path]:
    """Tone clips for SENTENCES in eng and deu, an ASR row and a translation row each: train, dev and test."""
    import numpy as np

    from llm_srt.audio import write_wav
    from llm_srt.data.manifest import Row, write_manifest

    (root / "audio").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list] = {"train": [], "dev": [], "test": []}
    for k, (en, de) in enumerate(SENTENCES):
        split = "train" if k < 4 else "dev" if k == 4 else "test"
        for lang, text, other, other_text, f0 in (("eng", en, "deu", de, 300), ("deu", de, "eng", en, 500)):
            seconds = 0.8 + 0.1 * k
            t = np.arange(int(seconds * 16000)) / 16000
            clip = (0.4 * np.sin(2 * np.pi * (f0 + 90 * k) * t)
                    + 0.05 * np.random.default_rng(k).standard_normal(t.size)).astype(np.float32)
            audio = root / "audio" / f"{lang}-{k}.wav"
            write_wav(audio, clip)
            base = dict(audio=str(audio), duration=seconds, src_lang=lang, transcript=text, split=split,
                        corpus="gpu-check", sentence_id=f"s{k}")
            splits[split].append(Row(id=f"{lang}-{k}", tgt_lang="", translation="", **base))
            splits[split].append(Row(id=f"{lang}-{k}-{other}", tgt_lang=other, translation=other_text, **base))
    paths = {}
    for split, rows in splits.items():
        paths[split] = root / f"{split}.jsonl"
        write_manifest(paths[split], rows)
    return paths


def train_overrides(check: Check, folders, corpus: dict[str, Path]) -> list[str]:
    """key=value overrides that point configs/embedded at the tiny models and corpus, on the check's device."""
    from llm_srt.train.config import TrainConfig

    values = {"model.encoder": folders.encoder, "model.llm": folders.llm, "model.adapter_kwargs": TINY_ADAPTER,
              "data.train": corpus["train"], "data.dev": corpus["dev"], "data.batch_size": 4,
              "data.feature_cache": check.work / "features", "optim.warmup_steps": 0, "log_every": 1,
              "data.num_workers": 2}  # a GPU's default: named, so that the CPU path runs DataLoader workers too
    fields = TrainConfig.__dataclass_fields__
    if "device" in fields:  # the training config's own device / dtype keys, once they exist
        values |= {"device": check.device, "dtype": check.dtype}
    elif check.device != "cpu":
        values["model.dtype"] = "bfloat16" if check.dtype in ("auto", "bfloat16", "bf16") else check.dtype
    return [f"{k}={v}" for k, v in values.items()]


def e2e_step(check: Check) -> dict:
    from llm_srt.model import presets

    folders = presets.write_folders("tiny", check.work / "models", weights=True)
    corpus = write_corpus(check.work / "corpus")
    common = train_overrides(check, folders, corpus)
    runs, ends = check.work / "runs", time.monotonic() + STEP_LIMITS["e2e"]
    parts: dict[str, bool | None] = {}
    resume: dict = {}  # kill_and_resume's numbers

    def limit() -> float:  # each command's: at most COMMAND_LIMIT_S, and within what the step has left
        return max(1.0, min(COMMAND_LIMIT_S, ends - time.monotonic()))

    def judge(part: str, ok: bool, done: Done) -> None:
        """parts[part] from what `done`, its command, did and wrote: a part that failed is not done (None) when the
        budget cut its command, else failed (False) on its own (exit 0 with a wrong result too): the step failed.
        Into the report at once: a check stopped from outside (SIGTERM, or a SIGKILL that runs nothing after it)
        keeps the parts it finished."""
        parts[part] = True if ok else None if done.cut else False
        check.partial = {"parts": dict(parts), **resume}
        check.report()

    done = check.cli("e2e curriculum", "curriculum", str(ROOT / "configs" / "embedded"), "--out-root", str(runs),
                     *common, "save_every=2", "asr:max_steps=4", "smt:max_steps=2", "srt:max_steps=2",
                     "srt:activation_checkpointing=true", "srt:distributed=fsdp",  # 1-rank FSDP: NCCL on a GPU
                     timeout=limit())
    final = runs / "srt" / "final"
    judge("curriculum", done.returncode == 0 and (final / "config.json").is_file(), done)

    done, proofs, numbers = kill_and_resume(check, common, limit)
    resume.update(numbers)
    for part, ok in proofs.items():  # kill_resume, resume_losses, resume_state
        judge(part, ok, done)

    clip = corpus["test"].parent / "audio" / "eng-5.wav"
    done = check.cli("e2e translate", "translate", str(clip), "--model", str(final), "--src", "eng", "--tgt", "deu",
                     "--format", "json", "--max-new-tokens", "8", "--device", check.device, "--dtype", check.dtype,
                     timeout=limit())
    try:
        results = json.loads(done.stdout)
        results = results if isinstance(results, list) else [results]
        translated = done.returncode == 0 and all(r.get("error") is None for r in results)
    except json.JSONDecodeError:
        translated = False
    judge("translate", translated, done)

    report = check.work / "eval"
    done = check.cli("e2e evaluate", "evaluate", "--model", f"srt={final}", "--manifest", str(corpus["test"]),
                     "--out", str(report), "--max-new-tokens", "8", "--device", check.device, "--dtype", check.dtype,
                     timeout=limit())
    judge("evaluate", done.returncode == 0 and (report / "results.json").is_file(), done)
    failed = [k for k, v in parts.items() if v is False]
    undone = [k for k, v in parts.items() if v is None]  # the budget cut their commands
    error = "; ".join([f"{what}: {', '.join(keys)}" for what, keys in (("failed", failed), ("not done", undone))
                       if keys] + resume.get("resume_problems", []))
    return {"ok": not failed and not undone, "parts": parts, **resume, **({"error": error} if error else {})}


RESUME_TOLERANCE = {"cpu": 1e-6, "cuda": 1e-4}  # a resumed step's loss against the uninterrupted run's (relative):
#   the CPU's float32 resume is bit-identical (make test); on a GPU both runs take deterministic kernels
#   (DETERMINISTIC), and one without a deterministic version (it only warns) moves a loss by far less than this
STATE_TOLERANCE = {"cpu": 1e-6, "cuda": 1e-2}  # the resumed run's trainable tensors and optimizer state at the next
#   checkpoint: their distance from the uninterrupted run's, as a fraction of how far that run moved them from the
#   checkpoint resumed from (Adam's moments dropped at the resume: 0.1 to 2.7 per tensor; a run started again: 1)
MARGIN = 10  # a loss tolerance decides only this many times below the run's own median step-to-step loss change,
#   about what a step trained on another batch or from other weights moves (the tiny random LLM's loss stays near
#   ln(V): 6.95 -> 6.83 over 20 steps; Adam's moments dropped moved the resumed losses by 3.6e-4 at most)
DETERMINISTIC = ("import runpy, torch; torch.use_deterministic_algorithms(True, warn_only=True); "
                 "runpy.run_module('llm_srt.cli', run_name='__main__', alter_sys=True)")  # `python -m llm_srt.cli`
#   with deterministic kernels (cuBLAS's also need CUBLAS_WORKSPACE_CONFIG); warn_only: an op that has none warns
#   in the log instead of stopping the run


def kill_and_resume(check: Check, common: list[str], limit) -> tuple[Done, dict[str, bool], dict]:
    """`train` killed with SIGKILL after its second checkpoint (B) and one more step, B moved aside as the
    uninterrupted run's, then the same command again: it must say it resumed (from the checkpoint before B), finish,
    log the steps it trained again with the killed run's losses (`compare_losses`) and write at step B the killed
    run's trainable tensors and optimizer state (`compare_states`). Both runs take deterministic kernels. `limit()`:
    the seconds a command may take now. Returns the resumed command (whether the budget cut it), each part's
    verdict, and the numbers behind them (with `resume_problems`: why a part failed)."""
    from llm_srt.train.checkpoint import step_name

    out = check.work / "killed"
    argv = [sys.executable, "-c", DETERMINISTIC, "train", str(ROOT / "configs" / "embedded" / "asr.yaml"), *common,
            "max_steps=20", "save_every=5", "keep_last=5", f"output_dir={out}",  # killed between steps 11 and 19
            "distributed=fsdp"]  # resumed: the optimizer's state loads into sharded parameters
    env = dict(check.env, CUBLAS_WORKSPACE_CONFIG=":4096:8")
    t0 = check.header("e2e kill", argv)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=check.log, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_check())  # a SIGKILLed check does not leave it training
    deadline = time.monotonic() + min(limit() / 2, check.left())
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            sealed = sealed_steps(out)
            if len(sealed) >= 2 and max(logged_losses(out), default=0) > sealed[-1]:
                break
            time.sleep(0.02)
    except BaseException:  # the check stopped (SIGTERM, Ctrl-C): the run is not left training on the GPU
        proc.kill()
        proc.wait()
        raise
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    check.ended("e2e kill", proc.returncode, t0)
    sealed = sealed_steps(out) or [0]
    start = sealed[-2] if len(sealed) > 1 else sealed[-1]
    reference = check.work / "uninterrupted" if len(sealed) > 1 else None
    if reference:  # out of the run's folder: the resume starts from the checkpoint before, and writes B again
        os.replace(out / "checkpoints" / step_name(sealed[-1]), reference)
    first = {k: v for k, v in logged_losses(out).items() if k > start}  # the steps the resumed run trains again
    check.write(f"\n----- killed: {killed} after step {max(first, default=start)} (resumes from checkpoint {start}"
                + (f"; checkpoint {sealed[-1]} moved aside: the uninterrupted run's" if reference else "") + ")\n")
    done = check.run("e2e resume", argv, limit(), env=env)
    resumed = killed and done.returncode == 0 and "resumed from" in done.stdout + done.stderr \
        and (out / "final" / "config.json").is_file()
    device = torch_device_type(check.device)
    same_losses, losses = compare_losses(first, logged_losses(out), device)
    same_state, state = compare_states(reference, out / "checkpoints" / step_name(sealed[-1]),
                                       out / "checkpoints" / step_name(start), device)
    problems = [p for p in (losses.pop("problem", None), state.pop("problem", None)) if p]
    return done, {"kill_resume": resumed, "resume_losses": same_losses, "resume_state": same_state}, {
        **losses, **state, **({"resume_problems": problems} if problems else {})}


def sealed_steps(out: Path) -> list[int]:
    """The steps of an output_dir's sealed checkpoints, oldest first (one is renamed into place once written)."""
    return sorted(int(p.parent.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*/trainer_state"))


def compare_losses(first: dict[int, float], again: dict[int, float], device: str) -> tuple[bool, dict]:
    """Whether the resumed run's losses (`again`, step -> loss) repeat the uninterrupted run's (`first`: the steps
    after the checkpoint it resumed from) within RESUME_TOLERANCE[device], and whether that tolerance can tell a
    wrong resume: MARGIN times below the uninterrupted run's median step-to-step loss change, else it cannot decide
    (not ok). Returns the verdict and its numbers, with `problem`: why not ok."""
    tolerance, steps = RESUME_TOLERANCE[device], sorted(first)
    change = statistics.median(abs(first[b] - first[a]) / max(abs(first[a]), 1e-9)
                               for a, b in zip(steps, steps[1:])) if len(steps) > 1 else None
    diffs = {k: abs(again[k] - v) / max(abs(v), 1e-9) for k, v in first.items() if k in again}
    worst = max(diffs, key=diffs.get, default=None)
    facts = {"resume_steps_compared": len(diffs), "resume_worst_relative": diffs.get(worst),
             "resume_tolerance": tolerance, "resume_loss_change": change}
    if len(diffs) < max(2, len(first)):
        problem = (f"resume_losses: the resumed run logged {len(diffs)} of the {len(first)} steps the killed run "
                   "logged after its checkpoint (at least 2 are needed)")
    elif tolerance * MARGIN > change:
        problem = (f"resume_losses cannot decide: its tolerance ({tolerance:.0e}) is not {MARGIN}x below the run's "
                   f"own step-to-step loss change ({change:.1e})")
    elif diffs[worst] > tolerance:
        problem = (f"resume_losses: step {worst}'s loss is {diffs[worst]:.1e} off the uninterrupted run's "
                   f"(tolerance {tolerance:.0e})")
    else:
        problem = None
    return problem is None, facts | ({"problem": problem} if problem else {})


def compare_states(reference: Path | None, resumed: Path, start: Path, device: str) -> tuple[bool, dict]:
    """Whether the resumed run's checkpoint `resumed` holds what the uninterrupted run's of the same step
    (`reference`) does: the same step, schedule, data position and RNG states, and each kind of tensor (a weights
    file's, the optimizer's exp_avg, exp_avg_sq, step) within STATE_TOLERANCE[device] of it, as a fraction of how
    far the uninterrupted run moved that kind from `start` (the checkpoint resumed from). Returns the verdict and
    its numbers, with `problem`: why not ok."""
    if reference is None or not resumed.is_dir():
        what = ("the killed run sealed fewer than two checkpoints: no uninterrupted state to compare with"
                if reference is None else f"the resumed run left no {resumed.name}")
        return False, {"problem": f"resume_state: {what}"}
    (ref, ref_plain), (res, res_plain), (base, _) = (checkpoint_state(f) for f in (reference, resumed, start))
    drift = {kind: relative_drift(ref[kind], res.get(kind, {}), base.get(kind, {})) for kind in ref}
    worst = max(drift, key=drift.get, default=None)
    tolerance = STATE_TOLERANCE[device]
    finite = drift.get(worst) is not None and math.isfinite(drift[worst])
    facts = {"resume_state_step": ref_plain["step"], "resume_state_drift": drift[worst] if finite else None,
             "resume_state_worst": worst, "resume_state_tolerance": tolerance}
    other = [key for key in ref_plain if not same(res_plain.get(key), ref_plain[key])]
    if other or not drift:
        problem = (f"resume_state: the resumed run's {resumed.name} has another {', '.join(other)} than the "
                   "uninterrupted run's" if other else "resume_state: no tensors to compare")
    elif not finite:
        problem = (f"resume_state: {worst} at {resumed.name} is missing, shaped otherwise, or moved where the "
                   "uninterrupted run's stayed")
    elif drift[worst] > tolerance:
        problem = (f"resume_state: {worst} at {resumed.name} is off the uninterrupted run's by {drift[worst]:.1e} "
                   f"of that run's own movement since {start.name} (tolerance {tolerance:.0e})")
    else:
        problem = None
    return problem is None, facts | ({"problem": problem} if problem else {})


def checkpoint_state(folder: Path) -> tuple[dict[str, dict[str, object]], dict]:
    """A checkpoint's tensors by kind (kind -> name -> tensor: each weights file, and each of the optimizer's
    per-parameter states: exp_avg, exp_avg_sq, step) and its training position (step, schedule, data, RNG)."""
    import torch
    from safetensors.torch import load_file

    from llm_srt.train.checkpoint import load_trainer_state

    kinds: dict[str, dict[str, object]] = {p.stem: load_file(p) for p in sorted(folder.glob("*.safetensors"))}
    state = load_trainer_state(folder)
    for param, values in state["optimizer"]["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                kinds.setdefault(f"optimizer {name}", {})[str(param)] = value
    return kinds, {key: state.get(key) for key in ("step", "scheduler", "data", "rng")}


def same(a, b) -> bool:
    """Exact equality of two nested trainer-state values (tensors and numpy arrays element by element)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
    if hasattr(a, "shape"):  # a tensor or an array
        return hasattr(b, "shape") and tuple(a.shape) == tuple(b.shape) and bool((a == b).all())
    return a == b


def relative_drift(reference: dict, resumed: dict, start: dict) -> float:
    """|resumed - reference| / |reference - start| over one kind's tensors (each a flat vector of all of them): a
    resumed run's distance from the uninterrupted one as a fraction of how far that run moved over the same steps
    (0: exact; 1: as far off as not having trained them at all). Infinite: one is missing from `resumed` or `start`
    or shaped otherwise, or the uninterrupted run did not move the kind and the resumed run's differs."""
    if any(name not in other or other[name].shape != ref.shape for name, ref in reference.items()
           for other in (resumed, start)):
        return math.inf
    off = moved = 0.0
    for name, ref in reference.items():
        ref = ref.double()
        off += float((resumed[name].double() - ref).square().sum())
        moved += float((ref - start[name].double()).square().sum())
    return math.sqrt(off / moved) if moved else 0.0 if off == 0 else math.inf


def logged_losses(out: Path) -> dict[int, float]:
    """step -> loss of an output_dir's train_log.jsonl (a line cut by a kill skipped)."""
    losses = {}
    try:
        lines = (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return losses
    for line in lines:
        try:
            record = json.loads(line)
            losses[int(record["step"])] = float(record["loss"])
        except (ValueError, KeyError, TypeError):
            continue
    return losses
