"""evaluate under torchrun (two gloo ranks on the CPU): a rank that fails while decoding stops every rank."""

import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

import tiny
from llm_srt.audio import write_wav
from llm_srt.data.manifest import Row, write_manifest
from llm_srt.errors import LLMSRTError
from llm_srt.model.protocol import Output
from llm_srt.prompts import Task

ROWS = 8  # per rank
BATCH_S = 0.4  # each batch of rank 0's system


class Slow:
    """A system that takes BATCH_S a batch and counts its batches in `ran` (a file)."""

    def __init__(self, placement, ran: Path):
        self.name, self.placement, self.ran = "slow", placement, ran

    def run_batch(self, items, options):
        time.sleep(BATCH_S)
        with open(self.ran, "a") as fh:
            fh.write("batch\n")
        return [Output("a cat sat", "" if it.task is Task.ASR else "eine Katze") for it in items]


def _rank(rank: int, world: int, port: int, manifest: str, out: str) -> None:
    """One torchrun rank of `run.evaluate` (its environment set by hand); rank 1's model fails to load (its GPU's
    memory taken), rank 0 decodes one row a group; what each rank raised, and in how long, into OUT/rank<R>.json."""
    from llm_srt.evaluate import run
    from llm_srt.model import systems

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    os.environ.pop("TORCHELASTIC_RUN_ID", None)
    torch.set_num_threads(1)
    run.GROUP_BATCHES = 1
    run.GATHER_TIMEOUT = timedelta(seconds=30)  # the old code's wait for a rank that had gone, bounded here

    def build(name, placement, **_):
        if rank == 1:
            raise LLMSRTError("slow: cannot load the model: CUDA out of memory (another process holds the GPU)")
        return Slow(placement, Path(out) / "ran")

    systems.SYSTEMS["slow"] = build
    started, said = time.perf_counter(), None
    try:
        run.evaluate({"slow": "slow"}, manifest, Path(out) / "report", task="s2tt", batch_size=1,
                     placement=run.device.resolve("cpu", "float32"), significance=0, log=lambda *_: None)
    except Exception as e:  # noqa: BLE001  what the rank stopped on, for the test to read
        said = f"{type(e).__name__}: {e}"
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"said": said, "s": time.perf_counter() - started}))


@pytest.mark.slow  # two spawned ranks (~25 s on 2 cores); make test: the in-process tests below
@pytest.mark.long(25)
def test_a_rank_that_fails_while_decoding_stops_every_rank_promptly_on_its_line(tmp_path):
    """A rank that failed after the ranks' checks (its model not loading on its GPU, a DeviceFailed, a full disk
    under its journal) stopped alone: the others decoded their whole shards (hours at 7B), then waited for it at the
    rows' hand-over until gloo gave up or torchrun ended them, on a traceback that did not say why. Every rank now
    stops after the group it is on, on the failing rank's one line."""
    import torch.multiprocessing as mp

    rows = []
    for i in range(2 * ROWS):
        path = tmp_path / f"c{i}.wav"
        write_wav(path, tiny.tone(0.5, 300 + 50 * i, seed=i))
        rows.append(Row(id=f"{i}", audio=str(path), duration=0.5, src_lang="eng", transcript="a cat sat",
                        tgt_lang="deu", translation="eine Katze", split="test", corpus="t", sentence_id=f"{i}"))
    write_manifest(tmp_path / "test.jsonl", rows)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(2, port, str(tmp_path / "test.jsonl"), str(tmp_path)), nprocs=2, join=True)
    said = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    line = "slow: cannot load the model: CUDA out of memory (another process holds the GPU)"
    assert said[1]["said"] == f"LLMSRTError: {line}"
    assert said[0]["said"] == f"LLMSRTError: rank 1: {line}", said[0]  # the failing rank's line, named
    ran = tmp_path / "ran"  # (none: rank 0 heard of it before its first group)
    batches = len(ran.read_text().splitlines()) if ran.exists() else 0
    assert batches < ROWS // 2, batches  # stopped after the group it was on, not at the end of its shard
    assert said[0]["s"] < ROWS * BATCH_S, said


def _manifest(root: Path, n: int) -> Path:
    rows = [Row(id=f"{i}", audio=str(root / f"c{i}.wav"), duration=0.5, src_lang="eng", transcript="a cat sat",
                tgt_lang="deu", translation="eine Katze", split="test", corpus="t", sentence_id=f"{i}")
            for i in range(n)]
    for r in rows:
        write_wav(r.audio, tiny.tone(0.5, 300, seed=0))
    write_manifest(root / "test.jsonl", rows)
    return root / "test.jsonl"


def test_decode_in_groups_stops_before_its_next_group_when_told_and_keeps_what_it_decoded(tmp_path):
    from llm_srt.evaluate import run
    from llm_srt.evaluate.journal import Journal
    from llm_srt.data.manifest import read_manifest

    rows = read_manifest(_manifest(tmp_path, 6))
    journal = Journal.open(tmp_path / "partial", "s.hyps", 0, 1, {"s": 1})
    decoded = []

    def decode(group, unread, done):
        decoded.append([r.id for r in group])
        return [run._result(r, Task.S2TT, translation="eine Katze") for r in group]

    assert run.decode_in_groups(journal, rows, 2, decode, stop=lambda: len(decoded) == 2) is False
    assert decoded == [["0", "1"], ["2", "3"]]
    again = Journal.open(tmp_path / "partial", "s.hyps", 0, 1, {"s": 1})
    assert run.decode_in_groups(again, rows, 2, decode, stop=lambda: False) is True
    assert decoded[2:] == [["4", "5"]]  # the groups decoded before the stop were kept


@pytest.mark.parametrize("failing", [0, 1])
def test_under_torchrun_a_rank_failing_while_decoding_tells_the_others_and_every_rank_stops_on_its_line(
        failing, tmp_path, monkeypatch):
    """Rank 1 of two, in this process (the collectives stood in for): where rank 0 has failed while decoding (said
    in the store), rank 1 loads no model and stops on rank 0's line; where rank 1's own model fails to load, it says
    so in the store, so that rank 0 stops before its next group, and raises its own error."""
    import torch.distributed as dist

    from llm_srt.data.manifest import read_manifest
    from llm_srt.evaluate import run
    from llm_srt.model import systems

    manifest = _manifest(tmp_path, 4)
    line = "slow: the GPU failed on a batch of 1 (CUDA error: an illegal memory access was encountered)"
    store: dict[str, str] = {} if failing == 1 else {"llm-srt/evaluate/1/failed": "1"}
    gathered = []

    class Store:
        def set(self, key, value):
            store[key] = value

        def check(self, keys):
            return all(k in store for k in keys)

    def all_gather(out, obj, group):
        assert group == "long"
        gathered.append(obj)
        decoding = len(gathered) == 4  # after the checks of each rank's disk, journals' settings and journals
        out[:] = [line if decoding and failing == 0 else None, obj]

    def broadcast(box, src, group):  # rank 0's rows (none skipped as bad)
        box[0] = ((read_manifest(manifest), 0, ()), None, LLMSRTError)

    loaded = []

    def build(name, placement, **_):
        loaded.append(name)
        raise LLMSRTError(line)

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(run, "_group", [None, 0])
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: None)
    monkeypatch.setattr(dist, "new_group", lambda backend, timeout: "long")
    monkeypatch.setattr(dist, "destroy_process_group", lambda group=None: None)
    monkeypatch.setattr(dist, "all_gather_object", all_gather)
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    class World:  # the default group: its store is torchrun's rendezvous, through the public ProcessGroup method
        def get_group_store(self):
            return Store()

    monkeypatch.setattr(dist, "group", type("group", (), {"WORLD": World()}))
    monkeypatch.setitem(systems.SYSTEMS, "slow", build)
    with pytest.raises(LLMSRTError) as caught:
        run.evaluate({"slow": "slow"}, manifest, tmp_path / "o", task="s2tt", batch_size=1,
                     placement=run.device.resolve("cpu", "float32"), significance=0, log=lambda *_: None)
    assert len(gathered) == 4  # every rank agreed on the failure (`on_every_rank`), not at the rows' hand-over
    if failing == 0:
        assert str(caught.value) == f"rank 0: {line}" and loaded == [] and gathered[3] is None
    else:
        assert str(caught.value) == line and loaded == ["slow"] and gathered[3] == line
        assert store == {"llm-srt/evaluate/1/failed": "1"}
