"""Speech synthesizers behind one registry, and seeded augmentation (speed, noise, reverberation).

A voice is written `SYNTHESIZER:VOICE` (`espeak-ng:en+f2`, `flite:slt`, `festival:kal_diphone`); a bare
`SYNTHESIZER` stands for all its voices. Every synthesizer takes the same drawn numbers (a speaking rate in espeak's
words per minute and a pitch 0-99) and returns float32 mono samples at 16 kHz, or the reason it could not speak:

    espeak-ng   every language of llm_srt.languages; the voice variants m1-m4, f1-f4; rate and pitch
    flite       English: those of kal16, awb, rms, slt that `flite -lv` lists (Debian `flite`); rate as
                duration_stretch, pitch unused
    festival    English: the voices installed (Debian `festival` + festvox-kallpc16k, festvox-kdlpc16k,
                festvox-us-slt-hts); rate as Duration_Stretch, pitch unused

flite's kal16 and festival's kal_diphone are recordings of one speaker, and so are flite's slt and festival's
cmu_us_slt_arctic_hts (SAME_SPEAKER): holding out one of them (`pool`'s `exclude`) leaves out the other too, so
that a held-out voice's speaker is not heard in training under another synthesizer's name.

Augmentation (`Augmentation`, drawn per utterance by `draw_augment`, applied by `augment`) changes the speed by
resampling with soxr (length and pitch together, as Kaldi's speed perturbation), adds white noise at a drawn SNR, and
convolves with a synthetic room impulse response (noise under an exponential decay reaching -60 dB at the drawn
RT60). Everything is seeded by the caller: the same draw gives the same samples.
"""

import functools
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soxr

from .. import languages
from ..audio import SAMPLE_RATE, load_audio
from ..errors import LLMSRTError

ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")  # espeak-ng voice variants (+m1 ...)
FLITE_VOICES = ("kal16", "awb", "rms", "slt")  # flite's built-in 16 kHz voices (kal is 8 kHz, awb_time a clock)
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")  # Debian festvox packages
SAME_SPEAKER = (("flite:kal16", "festival:kal_diphone"),  # Kevin Lenzo's diphone recordings (festvox-kallpc16k)
                ("flite:slt", "festival:cmu_us_slt_arctic_hts"))  # CMU ARCTIC's speaker SLT (festvox-us-slt-hts)
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")
LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)?\)")  # espeak -x marks a switch of voice as "(en)"
REFERENCE_RATE = 160  # words per minute that flite and festival read at their own default speed


@dataclass(frozen=True)
class Voice:
    synthesizer: str  # a key of SYNTHESIZERS
    name: str  # the synthesizer's own voice name

    def __str__(self) -> str:
        return f"{self.synthesizer}:{self.name}"


def _run(cmd: list[str], text: str, label: str) -> tuple[np.ndarray | None, str]:
    """Run a synthesizer that writes a wav file given as {out} in `cmd`; returns (samples, "") or (None, why)."""
    with tempfile.TemporaryDirectory(prefix="llm-srt-tts-") as tmp:
        out, txt = Path(tmp) / "out.wav", Path(tmp) / "in.txt"
        txt.write_text(text + "\n", encoding="utf-8")
        proc = subprocess.run([c.format(out=out, txt=txt) for c in cmd], capture_output=True)
        if proc.returncode != 0 or not out.exists() or out.stat().st_size <= 44:
            return None, f"{cmd[0]} failed ({proc.stderr.decode(errors='replace').strip()[:60]})"
        return load_audio(out, name=label), ""


class Espeak:
    """espeak-ng; `speak` also rejects an utterance in which espeak switched to another language's voice (how it
    reads foreign words and letter names), seen in its phoneme output as "(en)"."""
    binary = "espeak-ng"

    def voices(self, lang: str) -> tuple[str, ...]:
        return tuple(f"{languages.get(lang).espeak}+{v}" for v in ESPEAK_VARIANTS)

    def speak(self, text: str, lang: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray | None, str]:
        with tempfile.TemporaryDirectory(prefix="llm-srt-espeak-") as tmp:
            phonemes = Path(tmp) / "phonemes.txt"
            proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-x",
                                   f"--phonout={phonemes}", "--stdout", "--stdin"],
                                  input=text.encode("utf-8"), capture_output=True)
            if proc.returncode != 0 or not proc.stdout:
                return None, f"espeak-ng failed ({proc.stderr.decode(errors='replace').strip()[:60]})"
            read = phonemes.read_text(encoding="utf-8", errors="replace") if phonemes.exists() else ""
        if LANGUAGE_SWITCH.search(read):
            return None, "switched voice (foreign word or letter names)"
        return load_audio(proc.stdout, name=f"espeak-ng:{voice}"), ""


class Flite:
    """flite; its voices are those of FLITE_VOICES this flite lists (`flite_listed`): given a name it lacks, flite
    reads with its default voice and exits 0, so a held-out flite:rms was read by a voice heard in training."""
    binary = "flite"

    def voices(self, lang: str) -> tuple[str, ...]:
        listed = flite_listed()
        return tuple(v for v in FLITE_VOICES if listed is None or v in listed) if lang == "eng" else ()

    def speak(self, text: str, lang: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray | None, str]:
        return _run(["flite", "-voice", voice, "--setf", f"duration_stretch={REFERENCE_RATE / rate:.3f}",
                     "-f", "{txt}", "-o", "{out}"], text, f"flite:{voice}")


class Festival:
    binary = "text2wave"

    def voices(self, lang: str) -> tuple[str, ...]:
        if lang != "eng":
            return ()
        return tuple(v for v in FESTIVAL_VOICES if any(FESTIVAL_VOICE_DIR.glob(f"*/{v}")))

    def speak(self, text: str, lang: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray | None, str]:
        return _run(["text2wave", "-eval", f"(voice_{voice})", "-eval",
                     f"(Parameter.set 'Duration_Stretch {REFERENCE_RATE / rate:.3f})", "-o", "{out}", "{txt}"],
                    text, f"festival:{voice}")


@functools.cache
def flite_listed() -> frozenset[str] | None:
    """The voices `flite -lv` lists ("Voices available: kal awb_time kal16 awb rms slt"); None where flite is not
    installed (`require` says so), an empty set where it lists none or fails."""
    if shutil.which("flite") is None:
        return None
    try:
        proc = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    _, colon, names = proc.stdout.partition(":")
    return frozenset(names.split()) if proc.returncode == 0 and colon else frozenset()


SYNTHESIZERS = {"espeak-ng": Espeak(), "flite": Flite(), "festival": Festival()}
VOICE_PACKAGES = {"festival": "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"}  # its voices (FESTIVAL_VOICES)
DEBIAN_PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": f"festival {VOICE_PACKAGES['festival']}"}


def parse_voice(spec: str, option: str = "--heldout-voice") -> tuple[str, str]:
    """`SYNTH` or `SYNTH:VOICE` -> (synth, voice or ""), checked against the registry."""
    synth, _, name = spec.partition(":")
    if synth not in SYNTHESIZERS:
        raise LLMSRTError(f"{option} {spec!r}: unknown synthesizer {synth!r}; use one of "
                          f"{', '.join(SYNTHESIZERS)} (optionally :VOICE, e.g. flite:slt)")
    return synth, name


def matches(voice: Voice, spec: str) -> bool:
    synth, name = parse_voice(spec)
    return voice.synthesizer == synth and (not name or voice.name == name)


def same_speaker(voice: Voice) -> tuple[Voice, ...]:
    """The voices of other synthesizers recorded from `voice`'s speaker (SAME_SPEAKER)."""
    return tuple(Voice(*other.split(":", 1)) for group in SAME_SPEAKER if str(voice) in group
                 for other in group if other != str(voice))


def held_out(voice: Voice, spec: str) -> bool:
    """Whether `spec` (a voice spec) keeps `voice` out of training: it names it, or a voice of the same speaker."""
    return matches(voice, spec) or any(matches(twin, spec) for twin in same_speaker(voice))


def pool(lang: str, synthesizers: tuple[str, ...], exclude: str = "") -> dict[str, tuple[str, ...]]:
    """synthesizer -> its voices for `lang`, for the chosen synthesizers, leaving out `exclude` (a voice spec) and
    the voices of the same speaker as one it names (`held_out`)."""
    found = {}
    for synth in (s for s in SYNTHESIZERS if s in synthesizers):  # registry order, whatever the option's order
        names = tuple(n for n in SYNTHESIZERS[synth].voices(lang) if not (exclude and held_out(Voice(synth, n),
                                                                                               exclude)))
        if names:
            found[synth] = names
    return found


def named(spec: str, langs: list[str]) -> dict[str, tuple[str, ...]]:
    """language -> the names of the installed voices `spec` (a --heldout-voice) names that speak it, for the
    languages some of them speak; a clear error when they speak none of `langs` (a mistyped name)."""
    synth, _ = parse_voice(spec)
    found = {lang: tuple(n for n in SYNTHESIZERS[synth].voices(lang) if matches(Voice(synth, n), spec))
             for lang in langs}
    found = {lang: names for lang, names in found.items() if names}
    if not found:
        every = dict.fromkeys(f"{s}:{n}" for s in SYNTHESIZERS for lang in langs for n in SYNTHESIZERS[s].voices(lang))
        raise LLMSRTError(f"--heldout-voice {spec}: no such voice speaks any of {', '.join(langs)} here (voices: "
                          f"{', '.join(every)})")
    return found


def twins_left_out(spec: str, langs: list[str], synthesizers: tuple[str, ...]) -> list[str]:
    """The voices `pool` leaves out of `langs` with `spec` only for being the same speaker as a voice it names."""
    return sorted({str(v) for lang in langs for synth, names in pool(lang, synthesizers).items() for n in names
                   if held_out(v := Voice(synth, n), spec) and not matches(v, spec)})


def require(synthesizers: tuple[str, ...]) -> None:
    """A clear error for a synthesizer unknown or not installed, or with no voice installed (festival without a
    festvox package: it was accepted, and no festival voice was drawn)."""
    for synth in synthesizers:
        parse_voice(synth, "--synthesizers")
        if shutil.which(SYNTHESIZERS[synth].binary) is None:
            raise LLMSRTError(f"--synthesizers {synth}: {SYNTHESIZERS[synth].binary} is not installed (Debian: "
                              f"apt-get install {DEBIAN_PACKAGES[synth]}); or leave it out")
        if not any(SYNTHESIZERS[synth].voices(lang) for lang in languages.LANGUAGES):
            raise LLMSRTError(f"--synthesizers {synth}: none of its voices is installed (Debian: apt-get install "
                              f"{VOICE_PACKAGES.get(synth, DEBIAN_PACKAGES[synth])}); or leave it out")


def speak(voice: Voice, text: str, lang: str, rate: int, pitch: int) -> tuple[np.ndarray | None, str]:
    """Samples (float32, 16 kHz mono) of `text` read by `voice`, or (None, why not)."""
    return SYNTHESIZERS[voice.synthesizer].speak(text, lang, voice.name, rate, pitch)


# ---------------------------------------------------------------------------------------------------------------
# Augmentation


AUG_LIMITS = {"speed": (0.5, 2.0), "snr_db": (-10.0, 60.0), "rt60": (0.05, 2.0)}  # what `check` accepts


@dataclass(frozen=True)
class Augmentation:
    """What `prepare mini` may do to a training utterance; each part applies with probability `p`."""
    speed: tuple[float, float] = (0.9, 1.1)  # speed factor range (resampling: 1.1 = 10% shorter)
    snr_db: tuple[float, float] = (5.0, 30.0)  # white noise, signal-to-noise ratio range in dB
    rt60: tuple[float, float] = (0.2, 0.8)  # reverberation time range in seconds (-60 dB decay)
    p: float = 0.5  # probability of each of the three, drawn independently


@dataclass(frozen=True)
class Augment:
    """One utterance's draw; None = not applied."""
    speed: float | None = None
    snr_db: float | None = None
    rt60: float | None = None
    seed: int = 0  # for the noise and the impulse response

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "seed"}


def check(aug: Augmentation) -> None:
    """A clear error for a range outside AUG_LIMITS or upside down."""
    for name, (lo, hi) in (("speed", aug.speed), ("snr_db", aug.snr_db), ("rt60", aug.rt60)):
        floor, ceiling = AUG_LIMITS[name]
        if not floor <= lo <= hi <= ceiling:
            raise LLMSRTError(f"augmentation {name} {lo}-{hi}: expected LOW-HIGH with {floor} <= LOW <= HIGH <= "
                              f"{ceiling}")
    if not 0.0 <= aug.p <= 1.0:
        raise LLMSRTError(f"augmentation probability {aug.p}: expected 0-1")


def draw_augment(rng, aug: Augmentation) -> Augment:
    """Draw one utterance's augmentation from `rng` (a random.Random)."""
    def maybe(lo_hi, digits):
        return round(rng.uniform(*lo_hi), digits) if rng.random() < aug.p else None
    return Augment(speed=maybe(aug.speed, 2), snr_db=maybe(aug.snr_db, 1), rt60=maybe(aug.rt60, 2),
                   seed=rng.getrandbits(32))


def augment(samples: np.ndarray, a: Augment) -> np.ndarray:
    """Apply `a` to float32 samples at 16 kHz: speed, then reverberation, then noise; peak kept within 0.99."""
    gen = np.random.default_rng(a.seed)
    x = samples.astype(np.float64)
    if a.speed is not None and a.speed != 1.0:
        x = soxr.resample(x, SAMPLE_RATE * a.speed, SAMPLE_RATE, quality="HQ")  # s x faster, 1/s as long
    if a.rt60 is not None:
        h = impulse_response(a.rt60, gen)
        n = x.size + h.size - 1
        x = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(h, n), n)  # full linear convolution
    if a.snr_db is not None:
        power = float(np.mean(x ** 2)) or 1e-10
        x = x + gen.standard_normal(x.size) * np.sqrt(power / 10 ** (a.snr_db / 10))
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0.99:
        x *= 0.99 / peak
    return x.astype(np.float32)


def impulse_response(rt60: float, gen: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room: a direct path (1.0) then Gaussian noise under exp decay reaching -60 dB at rt60 s."""
    t = np.arange(1, int(rt60 * sr)) / sr
    tail = gen.standard_normal(t.size) * np.exp(-6.9078 * t / rt60) * 0.3
    return np.concatenate([[1.0], tail])
