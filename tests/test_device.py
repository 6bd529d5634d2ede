"""--device / --dtype resolution: one place decides, and `auto` never picks the CPU where a GPU is present."""

import argparse

import pytest
import torch

from llm_srt import device
from llm_srt.errors import LLMSRTError


def fake_gpus(monkeypatch, count: int, capability=(9, 0), name="NVIDIA H200"):
    """torch sees `count` GPUs of one kind (CPU-only torch: nothing of CUDA is called)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: name)
    monkeypatch.setattr(device, "_told", set())


def test_auto_is_cpu_float32_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = device.resolve("auto", "auto")
    assert p.device == torch.device("cpu") and p.dtype == torch.float32 and not p.cuda


def test_auto_is_the_ranks_gpu_in_bf16_when_one_is_present(monkeypatch):
    fake_gpus(monkeypatch, 4)
    monkeypatch.setenv("LOCAL_RANK", "2")
    p = device.resolve("auto", "auto")
    assert p.device == torch.device("cuda", 2) and p.dtype == torch.bfloat16 and p.cuda
    assert device.resolve("cuda:1", "fp32").device == torch.device("cuda", 1)
    assert device.resolve("cpu", "auto").dtype == torch.float32  # auto dtype follows the device


@pytest.mark.parametrize("gpu", [("Tesla V100-SXM2-32GB", (7, 0)), ("Tesla T4", (7, 5))])
def test_auto_on_a_gpu_that_emulates_bfloat16_takes_float16_to_infer_and_float32_to_train(monkeypatch, capsys, gpu):
    """Before Ampere bfloat16 is emulated (slower than float32; no cuDNN bfloat16 convolution for Whisper's): auto
    infers in float16 (tensor cores) and trains in float32 (float16 training needs loss scaling), saying so once; an
    explicit bfloat16 is kept, with a line; Ampere and later keep bfloat16 silently."""
    name, capability = gpu
    fake_gpus(monkeypatch, 1, capability, name)
    assert device.resolve("auto", "auto").dtype == torch.float16
    assert device.resolve("cuda", "auto", training=True).dtype == torch.float32
    assert device.resolve("cuda").dtype == torch.float16  # said once per process
    told = capsys.readouterr().err.splitlines()
    assert told == [f"llm-srt: {name} (compute capability {capability[0]}.{capability[1]}) has no native bfloat16: "
                    "auto takes float16 (--dtype float32 where a model trained in bfloat16 overflows float16: empty "
                    "or looping outputs)",
                    f"llm-srt: {name} (compute capability {capability[0]}.{capability[1]}) has no native bfloat16: "
                    "auto takes float32"]
    assert device.resolve("cuda", "bfloat16").dtype == torch.bfloat16
    assert "bfloat16 is emulated there" in capsys.readouterr().err
    assert device.resolve("cuda", "float32").dtype == torch.float32 and not capsys.readouterr().err
    fake_gpus(monkeypatch, 1, (8, 0), "NVIDIA A100-SXM4-80GB")
    assert device.resolve("cuda", "auto", training=True).dtype == torch.bfloat16
    assert device.resolve("cuda", "auto").dtype == torch.bfloat16 and not capsys.readouterr().err


def test_a_rank_that_sees_one_gpu_alone_takes_it(monkeypatch):
    """torchrun rank 3 on a cluster that gives each rank its own GPU (CUDA_VISIBLE_DEVICES of one): cuda:0, not an
    error that stops every rank but the first; with several GPUs visible, a LOCAL_RANK past them is still one."""
    fake_gpus(monkeypatch, 1)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert device.resolve("auto", "auto").device == device.resolve("cuda", "auto").device == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(LLMSRTError, match="2 GPU"):
        device.resolve("cuda", "auto")


def test_a_fixed_gpu_index_is_refused_where_several_ranks_share_a_node(monkeypatch):
    """device cuda:1 under torchrun with 4 ranks a node put every rank on cuda:1; a rank that sees one GPU alone
    (cuda:0, the scheduler's choice) and a single process may still name one."""
    fake_gpus(monkeypatch, 4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(LLMSRTError, match=r"device=cuda:1: every rank on this node would use that one GPU; under "
                                          r"torchrun use device=cuda or auto"):
        device.resolve_device("cuda:1", flag="device=")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert device.resolve_device("cuda") == torch.device("cuda", 2)
    assert device.resolve_device("cuda:2") == device.resolve_device(torch.device("cuda", 2)) == torch.device("cuda", 2)
    with pytest.raises(LLMSRTError, match="every rank on this node would use that one GPU"):
        device.resolve_device("cuda:1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert device.resolve_device("cuda:1") == torch.device("cuda", 1)
    fake_gpus(monkeypatch, 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert device.resolve_device("cuda:0") == torch.device("cuda", 0)


def test_out_of_memory_is_recognised_and_release_collects_cycles():
    assert device.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert device.is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert not device.is_out_of_memory(RuntimeError("shape mismatch"))
    import gc
    import weakref

    class Cycle:
        pass

    held = Cycle()
    held.me = held
    ref = weakref.ref(held)
    gc.disable()
    try:
        del held
        assert ref() is not None  # reference counting alone keeps a cycle
        device.release(torch.device("cpu"))
        assert ref() is None
    finally:
        gc.enable()


def test_bad_specs_are_one_line_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LLMSRTError, match="no CUDA GPU"):
        device.resolve("cuda", "auto")
    for spec in ("tpu", "meta"):  # meta loaded every model as no-op copies, then failed every row
        with pytest.raises(LLMSRTError, match=f"--device {spec}: not a device"):
            device.resolve(spec, "auto")
    with pytest.raises(LLMSRTError, match="unknown dtype"):
        device.resolve("cpu", "int3")
    fake_gpus(monkeypatch, 1)
    with pytest.raises(LLMSRTError, match="1 GPU"):
        device.resolve("cuda:3", "auto")
    for spec in ("cuda0", "cuda:x"):  # cuda0 was an IndexError
        with pytest.raises(LLMSRTError, match=f"{spec}: not a device"):
            device.resolve(spec, "auto")


def test_arguments_round_trip():
    parser = argparse.ArgumentParser()
    device.add_arguments(parser)
    args = parser.parse_args(["--device", "cpu", "--dtype", "bf16"])
    assert device.from_args(args) == device.Placement(torch.device("cpu"), torch.bfloat16)
    assert str(device.from_args(args)) == "cpu bfloat16"


def test_timers_and_memory_are_noops_on_the_cpu():
    cpu = torch.device("cpu")
    device.synchronize(cpu)
    device.reset_peak_memory(cpu)
    assert device.peak_memory_bytes(cpu) is None


@pytest.mark.cuda
def test_cuda_peak_memory_counts_an_allocation():
    """The peak since the last reset: 1 MiB allocated after a freed 64 MiB block reads as ~1 MiB (a reset that did
    nothing would still show the 64 MiB; the test before only checked that an allocation counts)."""
    d = device.resolve("cuda", "auto").device
    big = torch.empty(64 << 20, dtype=torch.uint8, device=d)
    device.synchronize(d)
    assert device.peak_memory_bytes(d) >= 64 << 20
    del big
    held = torch.cuda.memory_allocated(d)  # what earlier tests in this process still hold counts in any peak
    device.reset_peak_memory(d)
    x = torch.empty(1 << 20, dtype=torch.uint8, device=d)
    device.synchronize(d)
    peak = device.peak_memory_bytes(d) - held
    assert 1 << 20 <= peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB above what was held"
    del x


def test_int8_is_a_cpu_only_choice_computing_in_float32(monkeypatch):
    fake_gpus(monkeypatch, 1)
    p = device.resolve("cpu", "int8")
    assert p.dtype == torch.int8 and p.dtype_name == "int8" and p.compute_dtype == torch.float32
    assert device.is_int8("int8") and device.is_int8(torch.int8) and not device.is_int8("bf16")
    assert device.resolve("cpu", "bf16").compute_dtype == torch.bfloat16
    with pytest.raises(LLMSRTError, match="int8 .*CPU only.*bfloat16"):
        device.resolve("cuda", "int8")


def test_a_torch_dtype_object_is_checked_as_its_name_is(monkeypatch):
    """resolve(device, torch.int8) (the Python API, a Placement's own dtype passed on) returned int8 for a GPU
    unchecked, to fail later inside a model; a dtype no model is placed in (float64) gave a Placement whose
    dtype_name was a KeyError. Both are the one-line errors the spellings give."""
    fake_gpus(monkeypatch, 1)
    with pytest.raises(LLMSRTError, match="int8 .*CPU only"):
        device.resolve("cuda", torch.int8)
    with pytest.raises(LLMSRTError, match="int8 .*CPU only"):
        device.resolve_dtype(torch.int8, torch.device("cuda", 0))
    with pytest.raises(LLMSRTError, match="float64.*float32"):
        device.resolve("cpu", torch.float64)
    assert device.resolve("cpu", torch.int8).dtype == torch.int8
    assert device.resolve("cuda", torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("name, value", [("LOCAL_RANK", "1x"), ("LOCAL_RANK", "-1"), ("LOCAL_WORLD_SIZE", "two")])
def test_a_launcher_variable_that_is_no_count_is_one_line_naming_it(monkeypatch, name, value):
    """LOCAL_RANK / LOCAL_WORLD_SIZE that are not a whole number (a launcher script's typo): int() raised a ValueError
    traceback at the first --device auto or cuda on a GPU host; LOCAL_RANK=-1 blamed --device cuda."""
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv(name, value)
    with pytest.raises(LLMSRTError) as e:
        device.resolve_device("cuda" if name == "LOCAL_RANK" else "cuda:1")
    assert str(e.value) == (f"{name}={value!r} in the environment is not a process count or index (torchrun sets "
                            f"it: a whole number, 0 or more); fix or unset {name}")
    monkeypatch.setenv(name, "")  # empty: as unset
    assert device.resolve_device("cuda") == torch.device("cuda", 0 if name == "LOCAL_RANK" else 1)


def test_more_ranks_on_a_node_than_gpus_names_nproc_per_node(monkeypatch):
    """torchrun with 4 ranks a node where 2 GPUs are visible: rank 3's `auto` said "--device cuda: this host has 2
    GPU(s)", naming a flag the user never gave; it names the torchrun option to change."""
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    told = ("LOCAL_RANK 3 but 2 GPUs are visible: start torchrun with --nproc-per-node 2 (or make more GPUs "
            "visible)")
    for spec in ("auto", "cuda"):
        with pytest.raises(LLMSRTError) as e:
            device.resolve_device(spec)
        assert str(e.value) == told
