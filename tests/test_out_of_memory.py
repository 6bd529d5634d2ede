"""Running out of memory while a model is built or loaded, on the CPU as on a GPU: one line under the command's name
(what was built or loaded, what it needs where known, what to do), not a traceback; a CPU bench row that runs out of
memory is recorded as a GPU one is. The failures are torch's own exceptions and messages, raised where the allocation
would fail (an impossible request to the CPU allocator, or the messages torch gives), never memory really exhausted."""

import numpy as np
import pytest
import torch

from cli_run import run_cli
from llm_srt import device
from llm_srt.audio import write_wav
from llm_srt.bench import paper

MMAP = ("unable to mmap 1072419256 bytes from file </models/gemma-3-270m/model.safetensors>: Cannot allocate memory "
        "(12)")  # safetensors' load of a weights file under `ulimit -v`
CUDA = ("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.11 GiB of which 1.25 GiB is "
        "free. Including non-PyTorch memory, this process has 77.85 GiB memory in use. Of the allocated memory "
        "76.90 GiB is allocated by PyTorch, and 312.00 MiB is reserved by PyTorch but unallocated.")


def cpu_allocator_error() -> RuntimeError:
    """torch's CPU allocator refusing a request (the one `DefaultCPUAllocator: can't allocate memory` it gives when
    memory runs out), from a request no machine can grant."""
    try:
        torch.empty(1 << 60, dtype=torch.uint8)
    except RuntimeError as e:
        return e
    raise AssertionError("the CPU allocator granted 2**60 bytes")


def test_out_of_memory_is_recognized_on_the_cpu_as_on_a_gpu():
    cpu = cpu_allocator_error()
    assert "can't allocate memory" in str(cpu)  # (what torch says; the test relies on it)
    for error in [cpu, RuntimeError(MMAP), torch.OutOfMemoryError(CUDA), MemoryError(),
                  RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")]:
        assert device.is_out_of_memory(error), error
    for error in [RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"), ValueError("bad value"),
                  RuntimeError("unable to mmap 10 bytes from file <x>: No such device (19)")]:
        assert not device.is_out_of_memory(error), error
    assert device.out_of_memory_reason(cpu) == "the CPU allocator could not allocate 1073741824.0 GiB more"
    assert device.out_of_memory_reason(RuntimeError(MMAP)) == ("could not map 1023 MiB of "
                                                               "/models/gemma-3-270m/model.safetensors into memory")
    assert device.out_of_memory_reason(torch.OutOfMemoryError(CUDA)) == (
        "CUDA out of memory on GPU 0 (tried to allocate 20.00 GiB; 1.25 GiB of 79.11 GiB free)")


@pytest.mark.parametrize("error", [cpu_allocator_error(), RuntimeError(MMAP), torch.OutOfMemoryError(CUDA),
                                   MemoryError()], ids=["cpu-allocator", "mmap", "gpu-allocator", "MemoryError"])
def test_a_model_load_out_of_memory_is_one_line(error, tmp_path, monkeypatch, capsys):
    """`(ulimit -v 2500000; llm-srt translate x.wav --model checkpoints/embedded/srt ...)` ended in a traceback and
    "RuntimeError: unable to mmap ..."; it is one line naming the loader and what to do, exit code 2."""
    from llm_srt import infer

    def load_system(*args, **kwargs):
        raise error

    monkeypatch.setattr(infer, "load_system", load_system)
    write_wav(tmp_path / "x.wav", np.zeros(16000, dtype=np.float32), 16000)
    code, out, err = run_cli(["translate", str(tmp_path / "x.wav"), "--model", str(tmp_path), "--src", "eng",
                              "--tgt", "deu", "--device", "cpu"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err, err
    [line] = err.strip().splitlines()
    assert line.startswith("llm-srt translate: error: out of memory in llm_srt/infer.py:"), line
    assert line.endswith("; use " + device.OUT_OF_MEMORY_ADVICE) and device.out_of_memory_reason(error) in line


def test_any_other_runtime_error_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    from llm_srt import infer

    monkeypatch.setattr(infer, "load_system", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a real bug")))
    write_wav(tmp_path / "x.wav", np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(RuntimeError, match="a real bug"):
        run_cli(["translate", str(tmp_path / "x.wav"), "--model", str(tmp_path), "--src", "eng", "--tgt", "deu",
                 "--device", "cpu"], capsys)


def tiny_options(**changes) -> paper.PaperOptions:
    return paper.PaperOptions(shape="tiny", **{**paper.TINY, "compiled_batch_sizes": (), "train_batch": 0,
                                               "max_batch": 0, "pooled_batch_sizes": (), "beam_batch_sizes": (),
                                               **changes})


def test_a_cpu_bench_row_out_of_memory_is_recorded_as_on_a_gpu(monkeypatch, tmp_path):
    from llm_srt.model.systems import SpeechLLMSystem

    real = SpeechLLMSystem.run_batch

    def run_batch(self, items, options):
        if len(items) == 2:  # the batch-2 row (its warm-up): the CPU allocator refuses it
            torch.empty(1 << 60, dtype=torch.uint8)
        return real(self, items, options)

    monkeypatch.setattr(SpeechLLMSystem, "run_batch", run_batch)
    result = paper.run_paper(tiny_options(), device.resolve("cpu", "float32"), tmp_path)
    rows = {r["batch_size"]: r for r in result["decode"] if r["system"] == "llm-srt"}
    assert rows[2] == {"system": "llm-srt", "beam": 1, "batch_size": 2, "compiled": False, "out_of_memory": True}
    assert rows[1]["out_of_memory"] is False and result["finished"] is True
