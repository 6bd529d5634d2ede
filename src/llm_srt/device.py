"""Where models run and in what precision: resolved once per command, then passed down as a `Placement`.

`auto` means the GPU when one is present (under torchrun: the rank's own GPU, `cuda:$LOCAL_RANK`) in bfloat16
(on GPUs before Ampere, which emulate bfloat16: float16 for inference, float32 for training), else the CPU in
float32. `int8` (CPU inference only) keeps every linear layer in int8 (per-channel weights,
activations quantized per call: `model/int8_linear.py: quantize_int8`): the frozen models' and, for a loaded speech
model, the trained adapter's; everything else, and every activation, stays float32 (`compute_dtype`). Every verb
takes `--device` and `--dtype` (see `add_arguments`); training configs have the same two keys. Nothing below this
module picks a device by itself.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import LLMSRTError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")  # for help texts; "cuda:3" etc. are accepted too
DTYPES = {  # accepted spellings -> torch dtype
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
    "int8": torch.int8,  # CPU inference: int8 linear layers, float32 for the rest (see compute_dtype)
}
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.int8: "int8"}


@dataclass(frozen=True)
class Placement:
    """Where a command's models live."""

    device: torch.device  # cpu, or one CUDA device (cuda:0 ...)
    dtype: torch.dtype  # weight dtype of the frozen models (encoder, LLM); trained parts stay float32 (int8
    #                     inference: a loaded model's adapter is int8 too, `SpeechLLM.quantize_adapter`)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES[self.dtype]

    @property
    def compute_dtype(self) -> torch.dtype:
        """The floating dtype of activations and unquantized weights (float32 under int8)."""
        return compute_dtype(self.dtype)

    def __str__(self) -> str:
        return f"{self.device} {self.dtype_name}"


def local_rank() -> int | None:
    """This process's LOCAL_RANK under torchrun, else None."""
    return _launcher_count("LOCAL_RANK")


def _launcher_count(name: str) -> int | None:
    """A whole number a launcher (torchrun, a SLURM script) sets in the environment variable `name`, else None (unset
    or empty); anything else is a one-line error naming it: int() raised a ValueError traceback at --device auto or
    cuda on a GPU host, and LOCAL_RANK=-1 was "--device cuda: this host has N GPU(s)", naming a flag not given."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise LLMSRTError(f"{name}={value!r} in the environment is not a process count or index (torchrun sets it: "
                          f"a whole number, 0 or more); fix or unset {name}")
    return number


def resolve_device(spec: str | torch.device | None = "auto", flag: str = "--device ") -> torch.device:
    """`auto` -> the rank's GPU if CUDA is available, else the CPU; `cuda` -> cuda:$LOCAL_RANK (cuda:0 outside
    torchrun, and where the process sees a single GPU: one per rank, as SLURM's --gpus-per-task=1 gives).
    `flag`: how the user gave it, for the errors ("--device " on the command line, "device=" in a training config)."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LLMSRTError(f"{flag}{spec}: no CUDA GPU is visible to torch here (torch {torch.__version__}, "
                              f"CUDA build {torch.version.cuda or 'none'}); use {flag}cpu or auto")
        if spec == "cuda":  # a rank that sees one GPU alone (a scheduler giving each task its own) takes that one
            index = (local_rank() or 0) if torch.cuda.device_count() > 1 else 0
            if index >= torch.cuda.device_count():  # more ranks on this node than GPUs: no flag of ours is wrong
                count = torch.cuda.device_count()
                raise LLMSRTError(f"LOCAL_RANK {index} but {count} GPUs are visible: start torchrun with "
                                  f"--nproc-per-node {count} (or make more GPUs visible)")
        else:
            try:
                index = int(spec.split(":", 1)[1])
            except (ValueError, IndexError):  # cuda:x, or cuda0
                raise LLMSRTError(f"{flag}{spec}: not a device; use auto, cpu, cuda or cuda:N") from None
            if ((_launcher_count("LOCAL_WORLD_SIZE") or 1) > 1 and torch.cuda.device_count() > 1
                    and index != local_rank()):  # its own GPU, named (cuda:$LOCAL_RANK), is what cuda gives
                raise LLMSRTError(f"{flag}{spec}: every rank on this node would use that one GPU; under torchrun "
                                  f"use {flag}cuda or auto (each rank takes cuda:$LOCAL_RANK)")
        if not 0 <= index < torch.cuda.device_count():
            raise LLMSRTError(f"{flag}{spec}: this host has {torch.cuda.device_count()} GPU(s) "
                              f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        return torch.device("cuda", index)
    raise LLMSRTError(f"{flag}{spec}: not a device; use auto, cpu, cuda or cuda:N")


def resolve_dtype(spec: str | torch.dtype | None = "auto", device: torch.device | None = None,
                  training: bool = False) -> torch.dtype:
    """`auto` -> bfloat16 on a GPU with native bfloat16 (compute capability 8.0+), float32 elsewhere; on an older GPU
    (V100, T4: bfloat16 emulated, slower than float32, and no cuDNN bfloat16 convolutions for Whisper's) float16 for
    inference, float32 for `training` (float16 training would need loss scaling). Else one of DTYPES' spellings."""
    if isinstance(spec, torch.dtype):  # checked as its name is (int8 on a GPU; a dtype no model here is placed in)
        if spec not in DTYPE_NAMES:
            raise LLMSRTError(f"dtype {spec}: not a weight dtype here; use {', '.join(DTYPE_NAMES.values())}")
        spec = DTYPE_NAMES[spec]
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if device is None or device.type != "cuda":
            return torch.float32
        if native_bf16(device):
            return torch.bfloat16
        return torch.float32 if training else torch.float16
    if spec not in DTYPES:
        raise LLMSRTError(f"--dtype {spec}: unknown dtype; use auto, {', '.join(DTYPE_NAMES.values())} "
                          "(or bf16, fp16, fp32)")
    if DTYPES[spec] == torch.int8 and device is not None and device.type != "cpu":
        raise LLMSRTError(f"--dtype int8: int8 linear layers run on the CPU only, not on {device}; use --dtype "
                          "bfloat16 (or auto) on a GPU, or --device cpu")
    return DTYPES[spec]


def native_bf16(device: torch.device) -> bool:
    """Whether this CUDA device computes in bfloat16 natively (compute capability 8.0 and later: A100, RTX 30xx and
    40xx, H100); torch emulates it on older ones."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def bf16_note(placement: Placement, asked: str | torch.dtype | None = "auto") -> str | None:
    """One line where `asked` on this GPU did not mean native bfloat16: `auto` fell back (to float16 or float32), or
    bfloat16 was asked for on a GPU that emulates it; None elsewhere."""
    if not placement.cuda or native_bf16(placement.device):
        return None
    major, minor = torch.cuda.get_device_capability(placement.device)
    gpu = f"{torch.cuda.get_device_name(placement.device)} (compute capability {major}.{minor}) has no native bfloat16"
    auto = not isinstance(asked, torch.dtype) and (asked or "auto").strip().lower() == "auto"
    if auto:
        return f"{gpu}: auto takes {placement.dtype_name}"
    if placement.dtype == torch.bfloat16:
        return f"{gpu}: bfloat16 is emulated there (slower than float32; no cuDNN bfloat16 convolutions)"
    return None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The floating dtype that tensors of a model placed in `dtype` have: `dtype` itself, float32 for int8 (only the
    linear layers' weights are int8 then; embeddings, norms and activations stay float32)."""
    return torch.float32 if dtype == torch.int8 else dtype


def is_int8(dtype: str | torch.dtype | None) -> bool:
    """Whether `dtype` (a torch dtype or any DTYPES spelling) asks for int8 linear layers."""
    if isinstance(dtype, str):
        return DTYPES.get(dtype.strip().lower()) == torch.int8
    return dtype == torch.int8


def cpu_has_amx(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 on AMX tiles (the `amx_bf16` flag Linux lists; False where unknown):
    there bfloat16 products run ~7x faster than float32 ones (README, "Device and dtype")."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_bf16" in line.split() for line in text.splitlines())


def resolve(device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "auto",
            training: bool = False) -> Placement:
    """The placement a command runs in (`training`: the demo, which trains and evaluates in one dtype)."""
    d = resolve_device(device)
    placement = Placement(d, resolve_dtype(dtype, d, training))
    note = bf16_note(placement, dtype)
    if note is not None and note not in _told:  # once per process (evaluate resolves once per system)
        _told.add(note)
        if placement.dtype == torch.float16:
            note += " (--dtype float32 where a model trained in bfloat16 overflows float16: empty or looping outputs)"
        print(f"llm-srt: {note}", file=sys.stderr)
    return placement


_told: set[str] = set()


def add_arguments(parser) -> None:
    """--device and --dtype, the same on every verb."""
    parser.add_argument("--device", default="auto",
                        help="auto (the GPU when present; under torchrun the rank's own), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto",
                        help="weight dtype of the frozen models: auto (bfloat16 on CUDA, float16 on GPUs older than "
                             "Ampere, float32 on the CPU), "
                             "float32, bfloat16, float16, or int8 (CPU inference: every linear layer int8, "
                             "the adapter's included; faster; slightly different outputs)")


def from_args(args) -> Placement:
    return resolve(getattr(args, "device", "auto"), getattr(args, "dtype", "auto"))


def make_current(placement: Placement | None) -> None:
    """An indexed CUDA placement's device (`--device cuda:1`, a rank's own GPU) made the calling thread's current one
    (the CUDA runtime keeps it per thread, cuda:0 in a new one), so that what runs on "the current GPU" (the CUDA
    graphs of --compile, library handles) runs beside the model; anything else (the CPU, none) is left as it is."""
    where = getattr(placement, "device", None)
    if isinstance(where, torch.device) and where.type == "cuda" and where.index is not None:
        torch.cuda.set_device(where)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read afterwards covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


OUT_OF_MEMORY_TEXTS = ("out of memory", "alloc_failed",  # CUDA's, cuBLAS's CUBLAS_STATUS_ALLOC_FAILED
                       "can't allocate memory", "not enough memory",  # torch's CPU allocator (DefaultCPUAllocator)
                       "cannot allocate memory")  # ENOMEM's text: a weights file's mmap ("unable to mmap N bytes")
OUT_OF_MEMORY_ADVICE = ("a smaller model, a smaller --dtype (bfloat16; int8 for CPU inference), another --device, or "
                        "more free memory")


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure, on any device: torch's OutOfMemoryError (CUDA), Python's MemoryError, or a RuntimeError
    saying so (OUT_OF_MEMORY_TEXTS: a library's "out of memory", torch's CPU allocator's "can't allocate memory", a
    weights file's mmap failing with ENOMEM)."""
    text = str(error).lower()
    return isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or any(t in text for t in OUT_OF_MEMORY_TEXTS)


def out_of_memory_reason(error: BaseException) -> str:
    """What ran out, in a few words, from torch's message (its first line for one not recognized here)."""
    text = str(error)
    if m := re.search(r"tried to allocate (\d+) bytes", text):  # torch's CPU allocator
        return f"the CPU allocator could not allocate {gib(int(m[1]))} more"
    if m := re.search(r"unable to mmap (\d+) bytes from file <?([^>:]+)>?", text):  # a weights file mapped in
        return f"could not map {gib(int(m[1]))} of {m[2]} into memory"
    if m := re.search(r"Tried to allocate ([\d.]+ \w+)\. GPU (\d+) has a total capacity of ([\d.]+ \w+) of which "
                      r"([\d.]+ \w+) is free", text):  # torch.OutOfMemoryError
        return f"CUDA out of memory on GPU {m[2]} (tried to allocate {m[1]}; {m[4]} of {m[3]} free)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__


def gib(n: int) -> str:
    """Bytes as GiB (MiB below one GiB), for messages."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def available_memory_bytes() -> tuple[int, str] | None:
    """What this process can still allocate on the CPU, and what that counts: the system's available memory plus free
    swap (psutil, else /proc/meminfo's MemAvailable and SwapFree), or, when less, what an address-space limit (`ulimit
    -v`) leaves beside this process's virtual size; None where neither can be read."""
    try:
        import psutil

        found = (psutil.virtual_memory().available + psutil.swap_memory().free,
                 "available memory and free swap")
        used = psutil.Process().memory_info().vms
    except (ImportError, OSError):
        try:
            info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
            kib = lambda key: int(info[key].split()[0]) * 1024  # noqa: E731
            found = (kib("MemAvailable") + kib("SwapFree"), "MemAvailable and SwapFree")
            used = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, KeyError, ValueError, IndexError):
            return None
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY and limit - used < found[0]:
        return max(limit - used, 0), "what the address-space limit (ulimit -v) leaves"
    return found


STICKY_CUDA_ERRORS = ("device-side assert", "illegal memory access", "illegal instruction", "misaligned address",
                      "unspecified launch failure", "uncorrectable ecc", "hardware stop", "an illegal address")
#   what CUDA keeps for the rest of the process (the context is lost); "invalid configuration argument", "too many
#   resources requested for launch" or a cuBLAS call not supported depend on the batch's shape: its halves may run


def is_device_failure(error: BaseException) -> bool:
    """A CUDA error that CUDA keeps for the rest of the process (a device-side assert, an illegal memory access:
    STICKY_CUDA_ERRORS), so that every later call on the GPU fails too; not running out of memory."""
    text = str(error).lower()
    return not is_out_of_memory(error) and any(kind in text for kind in STICKY_CUDA_ERRORS)


def release(device: torch.device | None = None) -> None:
    """Free what unreachable objects hold (reference cycles: a model wrapped by FSDP points at itself) and give
    cached GPU blocks back to the driver, for the next model or another process (COMET) on the same GPU; a no-op on
    the CPU beyond the collection. `device` None: the GPU if this process has used one."""
    import gc

    gc.collect()
    if (device.type == "cuda") if device is not None else torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak bytes allocated by torch on `device` since the last reset (None on the CPU: see bench for RSS)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


def peak_reserved_bytes(device: torch.device) -> int | None:
    """Peak bytes torch's allocator held on `device` since the last reset: its allocations, the cached blocks between
    them and CUDA graphs' pools (what a per-process memory fraction caps); None on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_reserved(device))
    return None
