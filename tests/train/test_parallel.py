"""train/parallel.py: activation checkpointing, FSDP at any world size (1 included), rank-0 loading into meta-device
skeletons, and a bf16 LLM with fp32 LoRA/adapter under FSDP (2 gloo processes on the CPU), where the recipe also runs
without a feature cache, stops on an output_dir not every rank sees, and stops every rank at one saved step on a
SIGTERM to one rank or all."""

import sys
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
import tiny  # noqa: E402

from llm_srt.errors import ConfigError, LLMSRTError  # noqa: E402
from llm_srt.model.ctc import CTCLoss  # noqa: E402
from llm_srt.model.llm import LoraOptions  # noqa: E402
from llm_srt.train import parallel  # noqa: E402
from llm_srt.train.parallel import Dist, Parallel  # noqa: E402

from .conftest import gloo_when_all_arrived, overrides  # noqa: E402

LORA = LoraOptions(r=4, alpha=8, dropout=0.0)
CTC = CTCLoss(weight=0.5, negatives=8)  # the two-rank checks train with the auxiliary CTC loss too
ADAPTER = {"num_queries": 4, "hidden_size": 32, "num_layers": 1, "num_heads": 4, "intermediate_size": 64,
           "dropout": 0.0}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    return str(tiny.whisper_dir(root)), str(tiny.llm_dir(root, layers=3))


def _model(folders, dtype="float32", seed=0, llm_device=None, ctc_head=False):
    from llm_srt.model.speech_llm import SpeechLLM, SpeechLLMConfig

    torch.manual_seed(seed)
    whisper, llm = folders
    cfg = SpeechLLMConfig(encoder=whisper, llm=llm, adapter="qformer", adapter_kwargs=ADAPTER, lora=LORA,
                          trainable=("adapter", "lora"), dtype=dtype, ctc_head=ctc_head)
    model = SpeechLLM(cfg, llm_device=llm_device)
    model.train()
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"features": torch.randn(2, 12, 32, generator=g), "feature_mask": torch.ones(2, 12, dtype=torch.bool),
            "prompts": ["<|eng|><|deu|>", "<|deu|><|eng|>"], "targets": ["a red cat", "der Hund"],
            "transcripts": ["ab", "dc"]}  # short enough for the adapter's 4 queries: CTC has a path


def _ctc_loss(runner):
    """CE + CTC on _batch(), the CTC's random negatives drawn from one seed on every rank and in the reference."""
    torch.manual_seed(7)
    out = runner(_batch(), CTC)
    assert out["ctc_loss"] > 0
    return out["loss"]


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: parallel._full(p.grad).detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _held_whole(model) -> dict[str, bool]:
    """Whether FSDP holds the LLM's input embedding table and output head gathered whole now (a plain tensor: FSDP2
    swaps a gathered group's parameters in for its DTensor shards)."""
    from torch.distributed.tensor import DTensor

    llm = model.llm
    return {"embedding": not isinstance(llm.get_input_embeddings().weight, DTensor),
            "head": not isinstance(llm.get_output_embeddings().weight, DTensor)}


def _count_layer_forwards(model) -> list[int]:
    """A counter of the MLP forwards inside the decoder layers. It wraps `forward` itself: module hooks do not run
    when checkpointing recomputes a layer in the backward."""
    calls = [0]

    def counted(forward):
        def run(*args, **kwargs):
            calls[0] += 1
            return forward(*args, **kwargs)
        return run

    for layer in parallel.decoder_layers(model.llm):
        layer.mlp.forward = counted(layer.mlp.forward)
    return calls


def test_activation_checkpointing_recomputes_each_layer_with_the_same_loss_and_gradients(folders):
    plain, checkpointed = _model(folders), _model(folders)
    for model in (plain, checkpointed):  # LoRA B starts at zero, which would leave A without a gradient
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for n, p in model.llm.named_parameters():
                if "lora_B" in n:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
    assert parallel.apply_activation_checkpointing(checkpointed) == 3
    counts, hooked = {}, []  # the layers' own forward pre-hooks, where FSDP2 gathers a layer's shards
    for layer in parallel.decoder_layers(checkpointed.llm):
        layer.register_forward_pre_hook(lambda *_: hooked.append(1))
    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        calls = _count_layer_forwards(model)
        loss = model(_batch())["loss"]
        forwards = calls[0]
        loss.backward()
        counts[name] = (loss.item(), forwards, calls[0])
    assert counts["plain"][1:] == (3, 3)  # no recompute
    assert counts["checkpointed"][1:] == (3, 6)  # each layer's forward ran again in the backward
    assert len(hooked) == 3  # ... but not its module hooks: the recomputed region is `forward`, not `__call__`
    assert counts["plain"][0] == counts["checkpointed"][0]
    a, b = _grads(plain), _grads(checkpointed)
    assert a.keys() == b.keys() and any("lora_" in k for k in a) and any(k.startswith("adapter.") for k in a)
    for k in a:  # the frozen LLM passes gradients through to the adapter and into LoRA inside the layers
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7, msg=k)
        assert a[k].abs().sum() > 0, k


def _saved_activation_bytes(model, batch) -> int:
    """Bytes autograd keeps for the backward of one forward (checkpointed layers keep only their inputs)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(batch)["loss"].backward()
    return saved[0]


def _long_batch():
    batch = _batch()
    return {**batch, "targets": ["a red cat sleeps. " * 20, "der Hund. " * 30]}


def test_activation_checkpointing_keeps_less_for_the_backward(folders):
    plain, checkpointed = _model(folders), _model(folders)
    parallel.apply_activation_checkpointing(checkpointed)
    kept, kept_checkpointed = _saved_activation_bytes(plain, _long_batch()), _saved_activation_bytes(
        checkpointed, _long_batch())
    assert kept_checkpointed < 0.5 * kept, (kept, kept_checkpointed)


def test_activation_checkpointing_refuses_an_llm_without_layers_to_recompute():
    from transformers import PreTrainedModel

    class Flat(PreTrainedModel):
        supports_gradient_checkpointing = False

    with pytest.raises(ConfigError, match="activation_checkpointing: .* does not support it"):
        parallel.apply_activation_checkpointing(torch.nn.Module.__new__(Flat))


def test_llm_device_only_rank_0_loads_the_llm_under_fsdp():
    cuda = torch.device("cuda", 0)
    assert parallel.llm_device("fsdp", Dist(1, 4)) == "meta"
    assert parallel.llm_device("fsdp", Dist(3, 4), cuda) == "meta"
    assert parallel.llm_device("fsdp", Dist(0, 4), cuda) == "cpu"  # shards move to the GPU one layer at a time
    assert parallel.llm_device("fsdp", Dist(0, 4), torch.device("cpu")) is None
    assert parallel.llm_device("fsdp", Dist()) is None
    assert parallel.llm_device("ddp", Dist(1, 4), cuda) is None
    with pytest.raises(ConfigError, match="distributed: must be ddp or fsdp, got 'zero3'"):
        parallel.llm_device("zero3", Dist())


def test_init_distributed_passes_the_timeout_and_checks_it(monkeypatch):
    with pytest.raises(ConfigError, match="distributed_timeout_min: must be > 0"):
        parallel.init_distributed(timeout_min=0)
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: seen.update(b=backend, t=timeout))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    d, device = parallel.init_distributed(timeout_min=2.5, device="cpu")
    assert (d.rank, d.world, d.local_rank, device.type) == (1, 2, 1, "cpu")
    assert seen == {"b": "gloo", "t": timedelta(minutes=2.5)}


def test_a_torchrun_rank_watches_its_launcher_at_any_world_size(monkeypatch):
    """Under `torchrun --nproc_per_node 1` the rank did not watch its launcher (only WORLD_SIZE > 1 did): after
    torchrun's SIGKILL it trained on, 427 steps, holding the GPU and the run's lock. Outside torchrun, no watch."""
    import os
    from types import SimpleNamespace

    from llm_srt import ranks

    started = []
    monkeypatch.setattr(ranks, "threading", SimpleNamespace(Thread=lambda target, name, daemon: SimpleNamespace(
        start=lambda: started.append(name))))
    monkeypatch.setattr(ranks, "_watching", [])
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert parallel.init_distributed(device="cpu")[0] == Dist() and started == []
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert parallel.init_distributed(device="cpu")[0] == Dist()
    assert started == ["llm-srt-launcher-watch"] and ranks._watching == [os.getppid()]


def test_fsdp_in_one_process_shards_over_its_own_group_and_matches_the_plain_model(folders):
    from torch.distributed.tensor import DTensor

    assert not dist.is_initialized()
    reference, model = _model(folders), _model(folders)
    par = Parallel(model, "fsdp", Dist(), torch.device("cpu"), activation_checkpointing=True)
    store = Path(par._own_group)
    try:
        assert par.sharded and par.checkpointed_layers == 3 and dist.get_world_size() == 1 and store.is_dir()
        par.wrap()
        assert all(isinstance(p, DTensor) for p in model.llm.parameters())
        calls = _count_layer_forwards(model)
        loss = par.runner(_batch())["loss"]
        assert _held_whole(model) == {"embedding": False, "head": True}  # between forward and backward
        loss.backward()
        assert calls[0] == 6  # checkpointing holds under FSDP
        ref_loss = reference(_batch())["loss"]
        ref_loss.backward()
        assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)
        a, b = _grads(reference), _grads(model)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
        assert par.trainable_state()["lora"].keys() == reference.trainable_state()["lora"].keys()
    finally:
        par.close()
    assert not dist.is_initialized() and not store.exists()  # the group made for this run is gone


def test_fsdp_keeps_a_table_the_head_shares_in_the_root_group(folders, tmp_path):
    """A tied head (Qwen2.5-3B) reads the table directly in `head_losses`: the table stays in the root group, held
    whole with the head, and the loss is the plain model's."""
    tied = (folders[0], str(tiny.llm_dir(tmp_path, layers=2, tied=True)))
    untied, (reference, model) = _model(folders), (_model(tied), _model(tied))
    assert parallel.embedding_tied(model.llm) and not parallel.embedding_tied(untied.llm)
    par = Parallel(model, "fsdp", Dist(), torch.device("cpu"))
    try:
        par.wrap()
        loss = par.runner(_batch())["loss"]
        assert _held_whole(model) == {"embedding": True, "head": True}
        loss.backward()
        assert loss.item() == pytest.approx(reference(_batch())["loss"].item(), abs=1e-6)
    finally:
        par.close()


def test_fsdp_needs_rank_0_to_hold_the_weights(folders):
    model = _model(folders, llm_device="meta")
    par = Parallel(model, "fsdp", Dist(), torch.device("cpu"))
    try:
        with pytest.raises(LLMSRTError, match="rank 0 must load the LLM's weights"):
            par.wrap()
    finally:
        par.close()


# ---- two gloo processes -------------------------------------------------------------------------------------------
def _two_ranks(rank: int, world: int, store: str, folders, out: str, setup: dict) -> None:
    """Every check in one pair of processes (starting one costs more than any check)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world,
                            timeout=timedelta(minutes=2))
    try:
        _fsdp_rank(Dist(rank, world), folders, out)
        _ddp_rank(Dist(rank, world), folders, out)
        _stopped_ranks(Dist(rank, world), setup, Path(out) / "stop")  # before _recipe_ranks patches the recipe
        _recipe_ranks(Dist(rank, world), setup, Path(out))
    finally:
        parallel.release_groups()


def _fsdp_rank(d: Dist, folders, out: str) -> None:
    """Rank 0 loads the model (bf16 LLM, fp32 LoRA and adapter); the others build the LLM as a meta skeleton (as
    the recipe does, `llm_device`) and their adapter from another seed, so everything they end up with must come
    from rank 0."""
    model = _model(folders, dtype="bfloat16", seed=0 if d.main else 100 + d.rank,
                   llm_device=parallel.llm_device("fsdp", d), ctc_head=True)
    assert all(p.is_meta for p in model.llm.parameters()) == (not d.main)
    par = Parallel(model, "fsdp", d, torch.device("cpu"), activation_checkpointing=True)
    par.wrap()
    held, whole = par.llm_numel()
    calls = _count_layer_forwards(model)
    loss = _ctc_loss(par.runner)  # every rank the same batch: the averaged gradient is the batch's
    between = _held_whole(model)
    loss.backward()
    state = {k: parallel._full(v).detach().clone() for k, v in model.llm.state_dict().items()}
    buffers = {n: b.clone() for n, b in model.llm.named_buffers()}
    dtypes = {n: (p.dtype, p.grad.dtype if p.grad is not None else None) for n, p in model.named_parameters()}
    torch.save({"loss": loss.item(), "grads": _grads(model), "state": state, "buffers": buffers,
                "adapter": {k: parallel._full(v).clone() for k, v in model.adapter.state_dict().items()},
                "ctc_head": {k: parallel._full(v).clone() for k, v in model.ctc_head.state_dict().items()},
                "dtypes": dtypes, "held": (held, whole), "forwards": calls[0], "between": between},
               f"{out}/fsdp{d.rank}.pt")


def _ddp_rank(d: Dist, folders, out: str) -> None:
    """DDP broadcasts rank 0's trainable parameters at the start (their init: rank 1's adapter is drawn from another
    seed), never the frozen LLM every rank loaded itself (15 GB at 7B in bf16), and its set-up warns of nothing
    deprecated (`broadcast_buffers` printed a FutureWarning on every rank of every run)."""
    model = _model(folders, seed=d.rank, ctc_head=True)
    par = Parallel(model, "ddp", d, torch.device("cpu"), activation_checkpointing=True)
    sent, real = [], dist._broadcast_coalesced
    dist._broadcast_coalesced = lambda group, tensors, *a: sent.extend(tensors) or real(group, tensors, *a)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            par.wrap()
    finally:
        dist._broadcast_coalesced = real
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    trainable = {p.data_ptr() for p in model.parameters() if p.requires_grad}
    assert sent and {t.data_ptr() for t in sent} == trainable, (len(sent), len(trainable))
    assert isinstance(par.runner, torch.nn.parallel.DistributedDataParallel)
    calls = _count_layer_forwards(model)
    loss = _ctc_loss(par.runner)
    loss.backward()
    torch.save({"loss": loss.item(), "grads": _grads(model), "forwards": calls[0]}, f"{out}/ddp{d.rank}.pt")


def _recipe_ranks(d: Dist, setup: dict, out: Path) -> None:
    """`recipe.train` under torchrun's environment: FSDP without a feature cache (when Whisper loads); then, each
    rank in its own working directory (two nodes' disks), into output_dir "run" (node-local) and from a
    model.init_from "init" only rank 0's node holds: what each rank raises (past the set-up checks: "went on")."""
    import json
    import os

    from llm_srt.model.encoder import WhisperEncoder
    from llm_srt.train import recipe, shared
    from llm_srt.train.config import load_config

    def went_on(*args, **kwargs):
        raise RuntimeError("went on")

    os.environ.update(RANK=str(d.rank), WORLD_SIZE=str(d.world), LOCAL_RANK="0")
    loads, shard, load = [], parallel._fully_shard, WhisperEncoder.from_pretrained
    parallel._fully_shard = lambda *a, **k: loads.append("sharded") or shard(*a, **k)
    WhisperEncoder.from_pretrained = staticmethod(lambda *a, **k: loads.append("whisper") or load(*a, **k))
    common = {"max_steps": 2, "device": "cpu", "distributed_timeout_min": 2}
    recipe.train(load_config(None, overrides(setup, out / "nocache", **common, save_every=1, distributed="fsdp", **{
        "data.feature_cache": "null", "data.tasks": "{asr: 1.0}", "data.batch_size": 2})), log=lambda *_: None)
    got = {"loads": list(loads)}  # (the TensorBoard run below loads Whisper again)
    try:  # rank 0 alone writes TensorBoard, and out/tb/tensorboard is a file
        recipe.train(load_config(None, overrides(setup, out / "tb", **common)), log=lambda *_: None)
    except LLMSRTError as e:
        (out / f"tb{d.rank}.txt").write_text(str(e))
    os.chdir(out / f"node{d.rank}")
    shared.PROBE_WAIT_S = 0.5  # how long rank 1 looks for the probe (a run: 5 s)
    parallel.HOST_WAIT = timedelta(seconds=60)  # a rank left waiting fails the test, not hangs it
    recipe.Recipe.setup_data, recipe._check_adapter_matches = went_on, went_on
    for case, where, extra in (("local", "run", {}), ("init", out / "shared", {"model.init_from": "init"})):
        try:
            recipe.train(load_config(None, overrides(setup, where, **common, **extra)), log=lambda *_: None)
        except (LLMSRTError, RuntimeError) as e:
            got[case] = str(e)
    (out / f"recipe{d.rank}.json").write_text(json.dumps(got))


@pytest.fixture(scope="module")
def two_ranks(folders, tiny_setup, tmp_path_factory):
    import time

    out = tmp_path_factory.mktemp("two-ranks")
    (out / "node0" / "init").mkdir(parents=True)
    (out / "node0" / "init" / "config.json").write_text("{}")  # a model folder on rank 0's node only
    (out / "node1").mkdir()
    (out / "tb").mkdir()
    (out / "tb" / "tensorboard").write_text("not a folder")  # rank 0 cannot make its TensorBoard log there
    ranks = mp.spawn(_two_ranks, args=(2, str(out / "store"), folders, str(out), dict(tiny_setup)), nprocs=2,
                     join=False)
    deadline = time.monotonic() + 300  # a rank stuck outside a collective (their timeout: 2 min) fails too
    while not ranks.join(timeout=1):  # (raises what a rank raised)
        if time.monotonic() > deadline:
            for p in ranks.processes:
                p.kill()
            pytest.fail("the two ranks hung")
    return out


@pytest.mark.long(30)  # the two_ranks fixture's pair of processes, which it starts (the SIGTERM runs: 7 s of it)
def test_two_rank_fsdp_fills_meta_ranks_from_rank_0_with_a_bf16_llm_and_fp32_trainables(folders, two_ranks):
    """... with the auxiliary CTC loss: the CTC head (in the root's shard group) starts from rank 0's init and its
    embedding lookup sees the whole table."""
    ref = _model(folders, dtype="bfloat16", ctc_head=True)
    ref_loss = _ctc_loss(ref)
    ref_loss.backward()
    ref_state, ref_grads = ref.llm.state_dict(), _grads(ref)
    assert {"ctc_head.blank", "ctc_head.log_scale"} <= ref_grads.keys()
    ref_buffers = dict(ref.llm.named_buffers())
    assert any(n.endswith("inv_freq") for n in ref_buffers)  # non-persistent: no state dict carries it
    for rank in (0, 1):
        got = torch.load(two_ranks / f"fsdp{rank}.pt", weights_only=True)
        assert got["held"][0] < 0.75 * got["held"][1]  # each rank holds about half of the LLM
        assert got["forwards"] == 6  # 3 layers, each recomputed in the backward
        assert got["between"] == {"embedding": False, "head": True}  # the untied table: gathered per lookup only
        for k, v in ref_state.items():  # base weights, LoRA init: rank 0's, bit for bit
            assert torch.equal(got["state"][k], v), (rank, k)
        for k, v in ref_buffers.items():
            assert torch.equal(got["buffers"][k], v), (rank, k)
        for k, v in ref.adapter.state_dict().items():
            assert torch.equal(got["adapter"][k], v), (rank, k)
        for k, v in ref.ctc_head.state_dict().items():
            assert torch.equal(got["ctc_head"][k], v), (rank, k)
        dtypes = got["dtypes"]
        base = [d for n, d in dtypes.items() if n.startswith("llm.") and "lora_" not in n]
        trained = [d for n, d in dtypes.items() if "lora_" in n or n.startswith(("adapter.", "ctc_head."))]
        assert base and all(d == (torch.bfloat16, None) for d in base)  # frozen: bf16, no gradient
        assert trained and all(d == (torch.float32, torch.float32) for d in trained)
        assert got["loss"] == pytest.approx(ref_loss.item(), rel=1e-4)
        assert got["grads"].keys() == ref_grads.keys()
        for k, g in ref_grads.items():
            torch.testing.assert_close(got["grads"][k], g, rtol=1e-3, atol=1e-5, msg=f"rank {rank} {k}")


def test_two_rank_ddp_with_activation_checkpointing_matches_one_process(folders, two_ranks):
    ref = _model(folders, ctc_head=True)
    ref_loss = _ctc_loss(ref)
    ref_loss.backward()
    ref_grads = _grads(ref)
    assert {"ctc_head.blank", "ctc_head.log_scale"} <= ref_grads.keys()
    for rank in (0, 1):
        got = torch.load(two_ranks / f"ddp{rank}.pt", weights_only=True)
        assert got["forwards"] == 6 and got["loss"] == pytest.approx(ref_loss.item(), rel=1e-6)
        assert got["grads"].keys() == ref_grads.keys()
        for k, g in ref_grads.items():  # both ranks saw the same batch: the all-reduced mean is its gradient
            torch.testing.assert_close(got["grads"][k], g, rtol=1e-4, atol=1e-6, msg=f"rank {rank} {k}")


def test_two_rank_fsdp_without_a_feature_cache_loads_whisper_in_the_sharded_forward_and_trains(two_ranks):
    """data.feature_cache: null, as the 32B paper configs set: Whisper loads on each rank inside the first forward
    of the model FSDP has already sharded, and the stage trains, checkpoints and saves final/."""
    import json
    import math

    for rank in (0, 1):
        assert json.loads((two_ranks / f"recipe{rank}.json").read_text())["loads"] == ["sharded", "whisper"]
    out = two_ranks / "nocache"
    losses = [r["loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses
    assert (out / "final" / "config.json").is_file() and (out / "checkpoints" / "step-00000002").is_dir()


def test_an_output_dir_that_not_every_rank_sees_stops_every_rank_before_training(two_ranks):
    """On several nodes a node-local output_dir trained a whole stage (only rank 0 writes), then every resume
    stopped ("rank 1 cannot read" the checkpoint): rank 0 now writes a probe every rank must read, and removes it.
    A model.init_from only rank 0 sees stops every rank too (rank 0 went on to wait at the next collective)."""
    import json
    import re

    got = [json.loads((two_ranks / f"recipe{rank}.json").read_text()) for rank in (0, 1)]
    assert got[0] == got[1], got
    assert re.fullmatch(r"rank 1 cannot see run/\.ranks-[0-9a-f]{16} that rank 0 wrote: output_dir must be one "
                        r"folder every rank reads and writes \(on several nodes, a shared file system\); choose such "
                        r"a folder", got[0]["local"]), got[0]
    assert got[0]["init"] == ("model.init_from: init is not a model folder (no config.json) on rank 1; train the "
                              "previous stage first or fix the path (one that every rank reads)")
    for out in (two_ranks / "node0" / "run", two_ranks / "shared", two_ranks / "nocache"):  # the probe is gone
        assert out.is_dir() and not [p.name for p in out.iterdir() if "ranks-" in p.name]
    assert not (two_ranks / "node0" / "run" / "checkpoints").exists()


def test_a_tensorboard_log_rank_0_cannot_make_stops_every_rank_in_one_line(two_ranks):
    """Only rank 0 writes TensorBoard: its failure stopped rank 0 alone, and rank 1 went on into the first step's
    collective, dying of a gloo transport error (under NCCL: blocked until torchrun killed it)."""
    got = [(two_ranks / f"tb{rank}.txt").read_text() for rank in (0, 1)]
    said = f"{two_ranks / 'tb' / 'tensorboard'}: cannot create the TensorBoard log"
    assert got[0].startswith(said) and got[1].startswith(f"rank 1: rank 0 stopped: {said}"), got


def _stopped_ranks(d: Dist, setup: dict, out: Path) -> None:
    """Three 4-step DDP runs: uninterrupted ("ref"); SIGTERM to rank 1 alone after step 2's update ("rank1": torchrun
    and SLURM may reach some ranks only); SIGTERM to both ranks and their DataLoader workers after step 3's ("both":
    SLURM). Each stopped run is then resumed by the same command. What each rank raised, the step it stopped at, the
    checkpoint left and the logs go to stopped{rank}.json."""
    import json
    import multiprocessing
    import os
    import signal

    from llm_srt import cli
    from llm_srt.errors import Terminated
    from llm_srt.train import checkpoint, recipe
    from llm_srt.train.config import load_config

    from .test_run_safety import _signalled

    multiprocessing.set_start_method("fork", force=True)  # a torchrun rank's DataLoader workers' (spawned: spawn)
    os.environ.update(RANK=str(d.rank), WORLD_SIZE=str(d.world), LOCAL_RANK="0")
    parallel.HOST_WAIT = timedelta(seconds=60)  # a rank left waiting fails the test, not hangs it
    got = {}

    def config(case):
        return load_config(None, overrides(setup, out / case, max_steps=4, device="cpu", distributed_timeout_min=0.5,
                                           **{"data.num_workers": 1}))  # a worker, which must outlive the signal

    recipe.train(config("ref"), log=lambda *_: None)
    for case, at, signalled in (("rank1", 2, (1,)), ("both", 3, (0, 1))):
        said, stops, raised = [], [], None
        with pytest.MonkeyPatch.context() as m, cli.stop_on_sigterm():  # the CLI's handler, as `llm-srt train`
            if d.rank in signalled:
                _signalled(m, at, signal.SIGTERM)
            stop = recipe.Recipe._stop_on_signal
            m.setattr(recipe.Recipe, "_stop_on_signal", lambda self, *a: stops.append(self.step) or stop(self, *a))
            try:
                recipe.train(config(case), log=said.append)
            except Terminated:
                raised = "Terminated"
        latest = checkpoint.latest(out / case)  # the newest intact one (a damaged one is passed over)
        got[case] = {"raised": raised, "stops": stops, "said": said[-1:], "latest": latest and latest.step,
                     "final": (out / case / "final").exists(), "resumed": []}
        recipe.train(config(case), log=got[case]["resumed"].append)
    (out / f"stopped{d.rank}.json").write_text(json.dumps(got))


def test_sigterm_to_one_rank_or_both_stops_every_rank_at_one_saved_step_and_resumes_bit_identically(two_ranks):
    """The one-process test of the stop (test_run_safety) cannot show what two ranks do: a SIGTERM that reaches rank 1
    alone must stop rank 0 at the same step too (each step's end is agreed on), every rank must take part in the
    checkpoint's collectives and raise Terminated, and the same command must resume there and end with the
    uninterrupted run's weights."""
    import json

    from llm_srt.train import checkpoint
    from safetensors.torch import load_file

    root = two_ranks / "stop"
    got = [json.loads((root / f"stopped{rank}.json").read_text()) for rank in (0, 1)]
    ref = load_file(str(root / "ref" / "final" / "adapter.safetensors"))
    for case, at, name in (("rank1", 2, "a signal to another rank"), ("both", 3, "SIGTERM")):
        out = root / case
        for rank in (0, 1):
            g = got[rank][case]
            assert (g["raised"], g["stops"], g["latest"], g["final"]) == ("Terminated", [at], at, False), (rank, g)
        assert got[0][case]["said"] == [f"[asr] {name} at step {at}: saved a checkpoint, "
                                        f"{out / 'checkpoints' / f'step-{at:08d}'}; the same command resumes from it"]
        resumed, where = got[0][case]["resumed"], f"resumed from {out / 'checkpoints'}/step-{at:08d} at step {at}"
        assert any(where in line for line in resumed), resumed
        assert checkpoint.latest(out).step == 4
        final = load_file(str(out / "final" / "adapter.safetensors"))
        assert final.keys() == ref.keys() and all(torch.equal(final[k], ref[k]) for k in ref), case


# ---- one device, and the CUDA checks (make gpu-check) -------------------------------------------------------------
@pytest.mark.parametrize("where", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_fsdp_on_one_device_trains_fp32_lora_beside_a_bf16_llm(folders, where):
    """One step of single-process FSDP (NCCL on a GPU, gloo on the CPU); on a GPU rank 0 loads the LLM on the host
    and the shards move to the GPU."""
    device = torch.device(where, 0) if where == "cuda" else torch.device("cpu")
    d = Dist()
    assert parallel.llm_device("fsdp", d, device) == ("cpu" if where == "cuda" else None)
    model = _model(folders, dtype="bfloat16", llm_device=parallel.llm_device("fsdp", d, device))
    par = Parallel(model, "fsdp", d, device, activation_checkpointing=True)
    try:
        par.wrap()
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
        before = {k: v.clone() for k, v in par.trainable_state()["lora"].items()}
        loss = par.runner(_batch())["loss"]
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
        for n, p in model.named_parameters():
            trained = "lora_" in n or n.startswith("adapter.")
            assert p.device.type == where, n
            assert p.dtype == (torch.float32 if trained else torch.bfloat16), n
        after = par.trainable_state()["lora"]
        assert any(not torch.equal(before[k], after[k]) for k in before)
    finally:
        par.close()


@pytest.mark.cuda
def test_activation_checkpointing_lowers_peak_gpu_memory(folders):
    from llm_srt import device as device_lib

    device = torch.device("cuda", 0)
    peaks = {}
    for on in (False, True):
        model = _model(folders).to(device)
        if on:
            parallel.apply_activation_checkpointing(model)
        torch.cuda.empty_cache()
        device_lib.reset_peak_memory(device)
        start = torch.cuda.memory_allocated(device)
        model(_long_batch())["loss"].backward()
        device_lib.synchronize(device)
        peaks[on] = device_lib.peak_memory_bytes(device) - start
        del model
    assert peaks[True] < 0.8 * peaks[False], peaks


def _hybrid_rank(rank: int, world: int, store: str, folders, out: str) -> None:
    """One of 4 ranks on 2 "nodes" of 2 (LOCAL_WORLD_SIZE), FSDP within each node (fsdp_within_node)."""
    import os

    os.environ["LOCAL_WORLD_SIZE"] = "2"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    try:
        d = Dist(rank, world)
        model = _model(folders, dtype="bfloat16", seed=0 if d.main else 100 + d.rank,
                       llm_device=parallel.llm_device("fsdp", d), ctc_head=True)
        par = Parallel(model, "fsdp", d, torch.device("cpu"), within_node=True)
        par.wrap()
        mesh = parallel.shard_mesh(torch.device("cpu"), d, within_node=True)
        assert mesh is parallel.shard_mesh(torch.device("cpu"), d, within_node=True)  # no new groups: one per stage
        weight = next(parallel.decoder_layers(model.llm)[0].parameters())
        assert weight.device_mesh is mesh
        loss = _ctc_loss(par.runner)
        loss.backward()
        torch.save({"loss": loss.item(), "grads": _grads(model), "held": par.llm_numel(),
                    "mesh": (weight.device_mesh.ndim, [str(p) for p in weight.placements])}, f"{out}/hsdp{rank}.pt")
    finally:
        parallel.release_groups()  # the host groups too: destroy_process_group alone aborted a rank at exit


@pytest.mark.slow  # four processes; the same wrap on a 1-D mesh: test_two_rank_fsdp_fills_meta_ranks_...
@pytest.mark.long(25)
def test_fsdp_within_each_node_replicates_across_nodes_and_trains_as_one_process(folders, tmp_path):
    """fsdp_within_node on 2 nodes x 2 ranks: the LLM is sharded over a node's ranks and replicated across nodes
    (HSDP: its frozen weights are gathered within the node only), each rank holds half of it (not a quarter), and the
    loss and gradients are one process's."""
    ref = _model(folders, dtype="bfloat16", ctc_head=True)
    ref_loss = _ctc_loss(ref)
    ref_loss.backward()
    ref_grads = _grads(ref)
    mp.spawn(_hybrid_rank, args=(4, str(tmp_path / "store"), folders, str(tmp_path)), nprocs=4, join=True)
    for rank in range(4):
        got = torch.load(tmp_path / f"hsdp{rank}.pt", weights_only=True)
        assert got["mesh"] == (2, ["R", "S(0)"])  # replicated over nodes, sharded over a node's ranks
        held, whole = got["held"]
        assert 0.4 * whole < held < 0.75 * whole  # half of the LLM (its embeddings and head are sharded too)
        assert got["loss"] == pytest.approx(ref_loss.item(), rel=1e-4)
        for k, g in ref_grads.items():
            torch.testing.assert_close(got["grads"][k], g, rtol=1e-3, atol=1e-5, msg=f"rank {rank} {k}")
    with pytest.raises(ConfigError, match="needs distributed: fsdp"):
        Parallel(ref, "ddp", Dist(), torch.device("cpu"), within_node=True)


def _slow_rank0(rank: int, world: int, store: str, out: str) -> None:
    """Rank 0's work takes 6 s; every collective timeout is 2 s (distributed_timeout_min)."""
    import json
    import time

    torch.set_num_threads(1)
    parallel._host[2] = timedelta(seconds=2)
    gloo_when_all_arrived(store, rank, world, timedelta(seconds=2))
    try:
        from llm_srt.train import data as training_data

        got = training_data.from_rank0(Dist(rank, world), lambda: (time.sleep(6), "rows")[1])
        parallel.host_wait(Dist(rank, world))
        Path(out, f"rank{rank}.json").write_text(json.dumps(got))
    finally:
        parallel.release_groups()  # the host groups too: destroy_process_group alone aborted a rank at exit


@pytest.mark.slow  # 3 processes and 6 s of waits, 30 s; make test: test_training_data's two-node cache fill, whose
#   ranks wait 4 s for rank 0's reading against 2 s collective timeouts in the same host group
@pytest.mark.long(30)
def test_the_host_group_connects_in_the_collective_timeout_and_waits_for_rank_0_far_longer(tmp_path, monkeypatch):
    """The ranks' host group is made after a group of distributed_timeout_min connected them (gloo connects every
    pair of ranks as a group is made: a misrouted node hung for HOST_WAIT, 24 h, before failing), and the other
    ranks wait for rank 0's hours of reading in a group of HOST_WAIT: here 6 s of work against 2 s timeouts. (A
    monitored barrier of HOST_WAIT in the short group failed: its timeout holds on rank 0 only.)"""
    import json
    from types import SimpleNamespace

    mp.spawn(_slow_rank0, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    assert [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)] == ["rows", "rows"]
    monkeypatch.setattr(parallel, "_host", [None, None, timedelta(minutes=30)])
    parallel.init_distributed(timeout_min=7, device="cpu")
    made = []
    monkeypatch.setattr(dist, "group", SimpleNamespace(WORLD=object()))
    monkeypatch.setattr(dist, "new_group", lambda backend, timeout: made.append(timeout) or timeout)
    assert parallel.host_group(Dist(1, 2)) == parallel.HOST_WAIT  # the group made with it
    assert made == [timedelta(minutes=7), parallel.HOST_WAIT]


def _one_gpu_shown(rank: int, world: int, store: str, out: str) -> None:
    """Two ranks on a host that shows them one GPU (CUDA faked: its availability, one device, its uuid): what
    init_distributed says on each rank, first with the GPU shared, then with one each."""
    import json
    import os
    from types import SimpleNamespace

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank))
    gloo_when_all_arrived(store, rank, world, timedelta(seconds=30))  # (the default group: NCCL's in a real run)
    torch.cuda.is_available, torch.cuda.device_count = (lambda: True), (lambda: 1)
    torch.cuda.set_device = lambda device: None
    said = []
    try:
        for uuids in (("GPU-aaaa", "GPU-aaaa"), ("GPU-aaaa", "GPU-bbbb")):
            torch.cuda.get_device_properties = lambda device: SimpleNamespace(uuid=uuids[rank], name="NVIDIA H100")
            try:
                d, placed = parallel.init_distributed(device="cuda")
                said.append([d.rank, d.world, str(placed)])
            except LLMSRTError as e:
                said.append(str(e))
    finally:
        parallel.release_groups()
    Path(out, f"rank{rank}.json").write_text(json.dumps(said))


@pytest.mark.long(15)
def test_ranks_that_share_one_gpu_are_refused_by_every_rank_before_nccl_fails(tmp_path, monkeypatch):
    """Several ranks on a host that shows one GPU all take cuda:0 (as SLURM's one GPU a task wants), and NCCL failed
    at the first collective ("Duplicate GPU detected", a traceback on every rank, rank 0 holding the run's lock).
    Every rank now gathers each rank's (host, GPU uuid) over gloo as it joins, and raises the same line."""
    import json
    import socket

    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's environment (each rank sets its RANK and LOCAL_RANK)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    mp.spawn(_one_gpu_shown, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    said = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    host = socket.gethostname()
    line = (f"ranks 0 and 1 both use GPU NVIDIA H100 (GPU-aaaa) on {host}: start torchrun with --nproc-per-node "
            "equal to the GPUs each node shows (or give each rank its own GPU: CUDA_VISIBLE_DEVICES)")
    assert said == [[line, [0, 2, "cuda:0"]], [line, [1, 2, "cuda:0"]]], said
    # the first pair of ranks that share one (host, GPU) is named, whichever ranks lie between; one uuid on two hosts
    # is two GPUs
    assert parallel.shared_gpu([("a", "u0", "A"), ("a", "u1", "A"), ("a", "u0", "A")]).startswith(
        "ranks 0 and 2 both use GPU A (u0) on a:")
    assert parallel.shared_gpu([("a", "u0", "A"), ("b", "u0", "A"), ("a", "u1", "A")]) is None


def _uneven_nodes(rank: int, world: int, store: str, out: str) -> None:
    import json
    import os

    os.environ["LOCAL_WORLD_SIZE"] = "2" if rank < 2 else "1"  # a node of 2 GPUs and a node of 1
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world,
                            timeout=timedelta(seconds=20))
    try:
        parallel.shard_mesh(torch.device("cpu"), Dist(rank, world), within_node=True)
        said = "sharded"
    except ConfigError as e:
        said = str(e)
    finally:
        parallel.release_groups()  # the host groups too: destroy_process_group alone aborted a rank at exit
    Path(out, f"rank{rank}.json").write_text(json.dumps(said))


@pytest.mark.slow  # three processes for a refusal (20 s of make test); the 2-node HSDP tests pass the same check
@pytest.mark.long(20)
def test_nodes_of_other_sizes_are_refused_by_every_rank(tmp_path):
    """fsdp_within_node on nodes of 2 and 1 GPUs: every rank refuses it alike (before, the ranks of one node raised
    while the others went into the mesh's collectives and hung until the timeout)."""
    import json

    mp.spawn(_uneven_nodes, args=(3, str(tmp_path / "store"), str(tmp_path)), nprocs=3, join=True)
    said = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert all("not whole nodes of one size (LOCAL_WORLD_SIZE 1 to 2)" in s for s in said), said


def test_only_rank_0_keeps_host_copies_of_what_it_saves():
    """Every rank gathers the trainable tensors and the optimizer's moments for a save (a collective under FSDP);
    only rank 0 writes them, so only it keeps whole CPU copies (at 32B each rank held ~1.1 GB for nothing)."""
    par = Parallel.__new__(Parallel)
    t = torch.arange(4.0)
    par.d = Dist(1, 2)
    assert par._kept(t) is None
    par.d = Dist(0, 2)
    kept = par._kept(t)
    assert torch.equal(kept, t) and kept.device.type == "cpu"
