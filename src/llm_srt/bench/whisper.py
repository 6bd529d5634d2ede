"""`translate --model whisper` against faster-whisper (CTranslate2) on the same clips and the same weights.

Each side runs as a whole process of its own, as a user runs it (imports, model load, audio, features, encoder,
decoder): `python -m llm_srt.cli translate CLIPS --model whisper --task asr` and a faster-whisper script
(`WhisperModel(..., compute_type=<same precision>)`, greedy, temperature 0, no timestamps). The two alternate in
`rounds` pairs (A B, B A, ...) so that a busy machine slows both alike; a pair's ratio is ours / theirs. Wall time
is read around each process; peak memory is the process's own RSS high-water mark, VmHWM of /proc/self/status read
as it exits (not `getrusage`'s ru_maxrss: Linux carries the spawning process's high-water mark over `exec`, so a
child of a bench holding models in memory would read as large as its parent).

    from llm_srt.bench.whisper import WhisperBenchOptions, run_whisper_bench, format_whisper
    print(format_whisper(run_whisper_bench(WhisperBenchOptions(), placement, workdir)))
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..device import Placement
from ..errors import LLMSRTError

GOALS = {"wall_ratio": 1.1, "memory_ratio": 1.2}  # issue 17: ours / faster-whisper at the same precision, at most
CT2_COMPUTE_TYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "int8": "int8"}
CLIP_TEXTS = (  # five clips of about 5 s each (espeak-ng, English, 175 words per minute): ~25 s of speech
    "The file could not be opened because it does not exist. Please enter your password again.",
    "Sets the number of digits displayed for floating point values, and the connection to the server was lost.",
    "Do you want to save the changes before closing? Select the language you would like to use.",
    "No printer is installed on this computer. Will it rain tomorrow in the mountains?",
    "The quick brown fox jumps over the lazy dog while the children play in the garden.",
)
ESPEAK_WPM = 175
MEASURED = """
import atexit, runpy, sys
out, kind, target, *rest = sys.argv[1:]
def high_water():
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # no procfs: getrusage (may include the parent's mark)
        import resource
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(out, "w") as f:
        f.write(str(kib))
atexit.register(high_water)
sys.argv = [target if kind == "-m" else "-c", *rest]
if kind == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
"""  # runs `-m MODULE ARGS` or `-c CODE ARGS`, then writes its own peak RSS (KiB) to `out` at exit
FASTER_WHISPER = """
import json, sys
from faster_whisper import WhisperModel
folder, device, index, compute_type, threads, *clips = sys.argv[1:]
model = WhisperModel(folder, device=device, device_index=int(index), compute_type=compute_type,
                     cpu_threads=int(threads))
texts = []
for clip in clips:
    segments, _ = model.transcribe(clip, language="en", task="transcribe", beam_size=1, temperature=0.0,
                                   without_timestamps=True, condition_on_previous_text=False, vad_filter=False)
    texts.append(" ".join(s.text.strip() for s in segments))
print(json.dumps(texts))
"""


@dataclass(frozen=True)
class WhisperBenchOptions:
    """What the Whisper row compares."""

    rounds: int = 3  # A/B pairs, the order alternating; ratios are the median over pairs
    clips: int = len(CLIP_TEXTS)  # espeak-ng clips (cycling through CLIP_TEXTS)
    threads: int = 0  # CPU threads for both sides (0: torch's default here, given to both)
    whisper: str | None = None  # HF Whisper folder for `translate --model whisper` (None: the embedded one)
    ct2: str | None = None  # the same model as a CTranslate2 folder (None: rebuilt from the embedded packages)

    def __post_init__(self):
        # one without the other paired two models (faster-whisper ran the embedded Whisper base against --whisper's
        #   fine-tune, or the embedded one against another CTranslate2 folder): the ratios compared other weights
        if (self.whisper is None) != (self.ct2 is None):
            given, missing = ("whisper", "ct2") if self.ct2 is None else ("ct2", "whisper")
            raise LLMSRTError(f"bench: the Whisper row was given {given}={getattr(self, given)!r} without {missing}=, "
                              "so its other side would run the embedded Whisper, other weights; give both, the same "
                              "model as a CTranslate2 folder and as a Hugging Face one (`llm-srt convert whisper-ct2 "
                              "CT2_FOLDER HF_FOLDER` makes it), or neither")


def faster_whisper_missing() -> str | None:
    """Why the row cannot run here (a one-line reason), or None."""
    if importlib.util.find_spec("faster_whisper") is None:
        return "faster-whisper is not installed (pip install faster-whisper), so the Whisper row is skipped"
    return None


def precision_missing(placement: Placement) -> str | None:
    """Why faster-whisper cannot run at the placement's precision (CTranslate2's CPU build has no bfloat16 or
    float16: `bench --dtype bfloat16` ran the whole bench, then lost its table to that process's error), or None."""
    import ctranslate2

    wanted = CT2_COMPUTE_TYPES[placement.dtype_name]
    try:
        have = ctranslate2.get_supported_compute_types(placement.device.type)
    except (RuntimeError, ValueError) as e:  # CTranslate2 cannot use the device here (a CPU-only build, a driver)
        return (f"CTranslate2 cannot run on {placement.device.type} here ({(str(e).splitlines() or [''])[0][:200]}), "
                "so the Whisper row is skipped")
    if wanted in have:
        return None
    return (f"CTranslate2 on {placement.device.type} has no {wanted} (it has {', '.join(sorted(have))}), so the "
            f"Whisper row is skipped at this precision; run bench with --dtype float32 for it")


def make_clips(workdir: Path, n: int) -> list[Path]:
    """`n` English clips spoken by espeak-ng into `workdir` (22.05 kHz wav; both sides resample them)."""
    if shutil.which("espeak-ng") is None:
        raise LLMSRTError("bench: the Whisper row needs espeak-ng to speak its clips; install espeak-ng")
    clips = []
    for i in range(n):
        path = workdir / f"whisper-clip{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-s", str(ESPEAK_WPM), "-w", str(path),
                        CLIP_TEXTS[i % len(CLIP_TEXTS)]], check=True, capture_output=True)
        clips.append(path)
    return clips


def run_process(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> dict:
    """Run `python -m MODULE ARGS` or `python -c CODE ARGS` (`argv` without the interpreter) to its end: wall
    seconds, its own peak RSS (MiB) and its stdout. A failure is an LLMSRTError naming `name`, with the tail of its
    stderr."""
    out, err, peak = workdir / "stdout.txt", workdir / "stderr.txt", workdir / "peak-kib.txt"
    peak.unlink(missing_ok=True)
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-c", MEASURED, str(peak), *argv], stdout=stdout, stderr=stderr,
                              env=env).returncode
        seconds = time.perf_counter() - start
    if code or not peak.is_file():
        tail = err.read_text(errors="replace").strip().splitlines()[-3:]
        raise LLMSRTError(f"bench: the Whisper row's {name} process exited with {code}: {' | '.join(tail)}")
    return {"seconds": round(seconds, 3), "peak_mib": round(int(peak.read_text()) / 1024, 1),
            "stdout": out.read_text(errors="replace")}


def commands(options: WhisperBenchOptions, placement: Placement, clips: list[Path], ct2: Path) -> dict[str, list]:
    """The two command lines (same clips, device, precision and threads)."""
    precision = placement.dtype_name
    ours = ["-m", "llm_srt.cli", "translate", *map(str, clips), "--model", "whisper", "--task",
            "asr", "--src", "eng", "--device", str(placement.device), "--dtype", precision, "--format", "json"]
    if options.whisper:
        ours += ["--whisper", options.whisper]
    theirs = ["-c", FASTER_WHISPER, str(ct2), placement.device.type, str(placement.device.index or 0),
              CT2_COMPUTE_TYPES[precision], str(threads(options)), *map(str, clips)]  # cuda:1's GPU too (was 0)
    return {"llm_srt": ours, "faster_whisper": theirs}


def threads(options: WhisperBenchOptions) -> int:
    import torch

    return options.threads or torch.get_num_threads()


def run_whisper_bench(options: WhisperBenchOptions, placement: Placement, workdir: Path | None = None,
                      log: Callable[[str], None] = lambda msg: None) -> dict:
    """Both sides `rounds` times, alternating -> a JSON-able dict: per-side runs, median wall and peak memory,
    the median pair ratios against GOALS, and how many clips got the same transcript (normalized). With
    faster-whisper missing: {"skipped": reason}."""
    reason = faster_whisper_missing() or precision_missing(placement)
    if reason:
        log(reason)
        return {"skipped": reason}
    if options.rounds < 1 or options.clips < 1:
        raise LLMSRTError(f"bench: the Whisper row needs rounds and clips >= 1 (got {options.rounds}, "
                          f"{options.clips})")
    with tempfile.TemporaryDirectory(prefix="llm-srt-whisper-bench-", dir=workdir) as tmp:
        tmp = Path(tmp)
        clips = make_clips(tmp, options.clips)
        audio_seconds = sum(_seconds(c) for c in clips)
        ct2 = Path(options.ct2) if options.ct2 else _embedded_ct2(tmp / "ct2")
        argv = commands(options, placement, clips, ct2)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads(options)), PYTHONPATH=os.pathsep.join(sys.path))
        runs: dict[str, list[dict]] = {"llm_srt": [], "faster_whisper": []}
        for r in range(options.rounds):
            for side in ("llm_srt", "faster_whisper") if r % 2 == 0 else ("faster_whisper", "llm_srt"):
                run = run_process(side, argv[side], env, tmp)
                log(f"whisper row, round {r + 1}/{options.rounds}: {side} {run['seconds']:.2f} s, "
                    f"{run['peak_mib']:.0f} MiB")
                runs[side].append(run)
    texts = {"llm_srt": [r["transcript"] for r in json.loads(runs["llm_srt"][-1]["stdout"])],
             "faster_whisper": json.loads(runs["faster_whisper"][-1]["stdout"])}
    return summarize(options, placement, audio_seconds, runs, texts)


def summarize(options: WhisperBenchOptions, placement: Placement, audio_seconds: float, runs: dict,
              texts: dict) -> dict:
    """The runs of both sides -> the row's dict (see run_whisper_bench)."""
    pairs = list(zip(runs["llm_srt"], runs["faster_whisper"]))
    # judged, stored and printed as one number (1.1051 was stored 1.105, printed 1.10 and judged 1.11: missed)
    ratios = {"wall_ratio": round(statistics.median(a["seconds"] / b["seconds"] for a, b in pairs), 2),
              "memory_ratio": round(statistics.median(a["peak_mib"] / b["peak_mib"] for a, b in pairs), 2)}
    same = sum(_normal(a) == _normal(b) for a, b in zip(texts["llm_srt"], texts["faster_whisper"]))
    return {
        "options": asdict(options) | {"threads": threads(options)},
        "device": str(placement.device), "precision": placement.dtype_name, "clips": options.clips,
        "audio_seconds": round(audio_seconds, 2),
        "memory": "rss",
        **{side: {"seconds": [r["seconds"] for r in rs], "peak_mib": [r["peak_mib"] for r in rs],
                  "median_seconds": statistics.median(r["seconds"] for r in rs),
                  "median_peak_mib": statistics.median(r["peak_mib"] for r in rs)}
           for side, rs in runs.items()},
        **ratios,
        "goals": {k: f"<= {v}" for k, v in GOALS.items()},
        "met": {k: ratios[k] <= v if not placement.cuda else None  # CPU goals; on a GPU `peak_mib` is host memory
                for k, v in GOALS.items()},
        "same_transcripts": f"{same}/{len(texts['llm_srt'])}",
        "transcripts": texts,
    }


def format_whisper(result: dict) -> str:
    """The row's lines for the bench table."""
    if "skipped" in result:
        return f"whisper vs faster-whisper: skipped ({result['skipped']})"
    if "failed" in result:
        return f"whisper vs faster-whisper: FAILED ({result['failed']})"
    ours, theirs = result["llm_srt"], result["faster_whisper"]
    def met(k: str) -> str:
        return "not judged: a CPU goal" if result["met"][k] is None else "met" if result["met"][k] else "missed"

    return (f"whisper ({result['precision']}, {result['device']}, {result['options']['threads']} threads), "
            f"{result['clips']} clips ({result['audio_seconds']} s), {len(ours['seconds'])} alternating pairs: "
            f"translate --model whisper {ours['median_seconds']:.2f} s {ours['median_peak_mib']:.0f} MiB, "
            f"faster-whisper {theirs['median_seconds']:.2f} s {theirs['median_peak_mib']:.0f} MiB; "
            f"wall {result['wall_ratio']:.2f}x ({met('wall_ratio')}, goal {result['goals']['wall_ratio']}), "
            f"memory {result['memory_ratio']:.2f}x ({met('memory_ratio')}, goal {result['goals']['memory_ratio']}); "
            f"same transcript {result['same_transcripts']}")


def _embedded_ct2(dst: Path) -> Path:
    from ..embedded import assemble_whisper_ct2

    return assemble_whisper_ct2(dst)


def _seconds(path: Path) -> float:
    import soundfile

    return soundfile.info(str(path)).duration


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())
