"""Under torchrun, a killed run's journal that decoded every transcript-only (ASR) row (an llm-srt from before
2026-12-07) is gone on from by every rank alike, though only some ranks hold one (two gloo ranks on the CPU)."""

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

N_CLIPS = 7  # each with an ASR row, all but the last with an SRT row (fra->eng): 13 rows


def _rank(rank: int, world: int, port: int, manifest: str, out: str, old: bool) -> None:
    """One torchrun rank of `run.evaluate` (its environment set by hand). `old`: as the llm-srt before (every row
    decoded, no mark in its journal's settings), rank 1's model failing to load once rank 0 has decoded some groups
    (so rank 0 alone keeps a journal). The items each rank decoded into OUT/ran-<old>-<R>, its log and what it
    raised into OUT/rank<R>-<old>.json."""
    from llm_srt.evaluate import run
    from llm_srt.model import systems

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    os.environ.pop("TORCHELASTIC_RUN_ID", None)
    torch.set_num_threads(1)
    run.GROUP_BATCHES = 1
    run.GATHER_TIMEOUT = timedelta(seconds=60)
    if old:
        run.select_rows = lambda rows, task: rows
        run.SCORED_ROWS = {}
    ran = Path(out) / f"ran-{old}-{rank}"

    class Gold:
        name = "gold"

        def __init__(self, placement):
            self.placement = placement

        def run_batch(self, items, options):
            time.sleep(0.2)
            with open(ran, "a") as fh:
                fh.writelines(f"{it.task.value}\n" for it in items)
            return [Output("un chat", "" if it.task is Task.ASR else "a cat") for it in items]

    def build(name, placement, **_):
        if old and rank == 1:
            time.sleep(1.5)
            raise LLMSRTError("gold: cannot load the model")
        return Gold(placement)

    systems.SYSTEMS["gold"] = build
    said, logged = None, []
    try:
        run.evaluate({"gold": "gold"}, manifest, Path(out) / "report", task="srt", batch_size=1, significance=0,
                     placement=run.device.resolve("cpu", "float32"), log=logged.append)
    except Exception as e:  # noqa: BLE001  what the rank stopped on, for the test to read
        said = f"{type(e).__name__}: {e}"
    (Path(out) / f"rank{rank}-{old}.json").write_text(json.dumps({"said": said, "log": logged}))


@pytest.mark.slow  # two spawned ranks, twice (~40 s on 2 cores)
@pytest.mark.long(40)
def test_every_rank_goes_on_from_an_older_journal_that_one_rank_holds(tmp_path):
    import torch.multiprocessing as mp

    rows = []
    for i in range(N_CLIPS):
        path = tmp_path / f"c{i}.wav"
        write_wav(path, tiny.tone(0.5, 300 + 50 * i, seed=i))
        common = dict(audio=str(path), duration=0.5, src_lang="fra", transcript="un chat", split="test", corpus="t",
                      sentence_id=str(i))
        rows.append(Row(id=f"{i}", tgt_lang="", translation="", **common))
        if i < N_CLIPS - 1:
            rows.append(Row(id=f"{i}:eng", tgt_lang="eng", translation="a cat", **common))
    write_manifest(tmp_path / "test.jsonl", rows)

    def spawn(old: bool) -> list[dict]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        mp.spawn(_rank, args=(2, port, str(tmp_path / "test.jsonl"), str(tmp_path), old), nprocs=2, join=True)
        return [json.loads((tmp_path / f"rank{k}-{old}.json").read_text()) for k in range(2)]

    def decoded(old: bool) -> list[int]:
        return [len((tmp_path / f"ran-{old}-{k}").read_text().splitlines()) if (tmp_path / f"ran-{old}-{k}").exists()
                else 0 for k in range(2)]

    said = spawn(True)
    assert said[1]["said"] == "LLMSRTError: gold: cannot load the model", said
    kept = decoded(True)
    assert 0 < kept[0] < len(rows) and kept[1] == 0  # rank 0 alone keeps a journal, of its first groups
    said = spawn(False)
    assert [s["said"] for s in said] == [None, None], said
    for k in range(2):  # both ranks go on as that run did: the same rows, each rank its shard of them
        assert "goes on as that run did" in said[k]["log"][0], said[k]["log"][0]
    assert sum(decoded(False)) + kept[0] == len(rows)  # every row decoded once: none twice, none left out
    hyps = [json.loads(line) for line in (tmp_path / "report" / "hyps.gold.jsonl").read_text().splitlines()]
    assert [h["id"] for h in hyps] == [r.id for r in rows if r.tgt_lang]  # the scored rows, each once
    assert not (tmp_path / "report" / "partial").exists()
