import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_srt.errors import LLMSRTError
from llm_srt.train import checkpoint, parallel, run_lock


def _save_model(weights):
    def save(folder):
        folder.mkdir(parents=True)
        torch.save(weights, folder / "adapter.pt")
        (folder / "config.json").write_text("{}")
    return save


def test_keep_last_and_best(tmp_path):
    losses = {1: 3.0, 2: 1.0, 3: 2.0, 4: 2.5, 5: 2.4}
    for step, loss in losses.items():
        checkpoint.save(tmp_path, step, _save_model({"w": torch.full((3,), float(step))}), {"step": step},
                        keep_last=2, dev_loss=loss)
    on_disk = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert on_disk == ["step-00000002", "step-00000004", "step-00000005"]  # best (2) + last two
    index = json.loads((tmp_path / "checkpoints" / "index.json").read_text())
    assert index["best_step"] == 2 and index["best_loss"] == 1.0
    assert checkpoint.latest(tmp_path).step == 5


def test_the_best_is_chosen_among_the_checkpoints_of_one_dev_set(tmp_path):
    """Dev losses of another dev set (data.dev edited on a resume) are not compared: the old set's 1.0 was never
    beaten. A checkpoint from before the record counts as the current set's, as it did."""
    dev_a, dev_b = {"data.dev": "aaa", "data.dev_size": 4}, {"data.dev": "bbb", "data.dev_size": 4}
    for step, loss, dev_set in ((1, 2.0, None), (2, 2.5, dev_a), (3, 1.0, dev_a), (4, 4.0, dev_b), (5, 4.5, dev_b)):
        checkpoint.save(tmp_path, step, _save_model({"w": torch.zeros(2)}), {"step": step}, keep_last=1,
                        dev_loss=loss, dev_set=dev_set)
        index = json.loads((tmp_path / "checkpoints" / "index.json").read_text())
        assert index["best_step"] == {1: 1, 2: 1, 3: 3, 4: 4, 5: 4}[step], (step, index)
    assert index == {"steps": [4, 5], "best_step": 4, "best_loss": 4.0}
    root = tmp_path / "checkpoints"
    assert checkpoint.by_dev_loss(root, [4, 5], dev_a) == [] and checkpoint.by_dev_loss(root, [4, 5]) == [(4, 4.0),
                                                                                                         (5, 4.5)]
    assert not checkpoint.measured_on(root / checkpoint.step_name(4), dev_a)


@pytest.mark.parametrize("keep_last", [1, 2])
def test_a_run_resumed_from_an_older_checkpoint_keeps_its_own_and_its_true_best(tmp_path, keep_last):
    """Steps 2 and 3 damaged, the run resumes from 1 and saves 2 again: the abandoned steps' numbers (and step 3's
    dev loss of 0.5) crowded the new checkpoint out of keep_last (nothing resumable was left) and kept a stale best."""
    for step, loss in ((1, 1.0), (2, 0.9), (3, 0.5)):
        checkpoint.save(tmp_path, step, _save_model({"w": torch.randn(100)}), {"step": step}, keep_last=3,
                        dev_loss=loss)
    for step in (2, 3):
        (tmp_path / "checkpoints" / checkpoint.step_name(step) / "adapter.pt").write_bytes(b"")
    assert checkpoint.latest(tmp_path, log=lambda _: None).step == 1
    checkpoint.save(tmp_path, 2, _save_model({"w": torch.randn(100)}), {"step": 2}, keep_last=keep_last,
                    dev_loss=float("nan"))  # a NaN dev loss is no best either
    index = json.loads((tmp_path / "checkpoints" / "index.json").read_text())
    assert index == {"steps": [1, 2], "best_step": 1, "best_loss": 1.0}
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000001", "step-00000002"]
    assert checkpoint.latest(tmp_path, log=lambda _: None).step == 2


def test_checkpoints_a_resumed_run_passed_over_are_kept_aside_and_said(tmp_path):
    """A damaged (or, at the time, unreadable: a network file system's passing error) newest checkpoint made the run
    resume from an older one; its saves deleted or overwrote the folders past it without a word. Its first save keeps
    them as abandoned-step-N (-2, -3 beside an earlier one) and the log says so; a step the run saved itself, written
    again (a last checkpoint after an error), is replaced as before."""
    root = tmp_path / "checkpoints"

    def folders():
        return sorted(p.name for p in root.iterdir() if p.name != "index.json")

    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, _save_model({"w": torch.full((4,), float(step))}), {"step": step}, keep_last=4)
    (root / checkpoint.step_name(3) / "adapter.pt").write_bytes(b"")  # damaged; step 4 unreadable at the start
    said = []
    checkpoint.save(tmp_path, 3, _save_model({"w": torch.zeros(4)}), {"step": 3}, keep_last=4, log=said.append,
                    resumed_from=2)  # the resumed run's first save: step 3, itself a step it passed over
    assert folders() == ["abandoned-step-00000003", "abandoned-step-00000004", "step-00000001", "step-00000002",
                         "step-00000003"]
    assert torch.load(root / "abandoned-step-00000004" / "adapter.pt")["w"].tolist() == [4.0] * 4  # whole
    assert [m.split(": ", 1)[1] for m in said] == [
        f"passed over by this resumed run (damaged or unreadable when it started); kept as abandoned-step-0000000{n}: "
        "remove it once you no longer need it" for n in (3, 4)]  # nothing else: the index names the steps it keeps
    assert checkpoint.latest(tmp_path).step == 3 and torch.load(root / "step-00000003" / "adapter.pt")["w"].sum() == 0
    said.clear()
    checkpoint.save(tmp_path, 3, _save_model({"w": torch.ones(4)}), {"step": 3}, keep_last=4, log=said.append)
    assert said == [] and torch.load(root / "step-00000003" / "adapter.pt")["w"].tolist() == [1.0] * 4  # its own
    checkpoint.save(tmp_path, 3, _save_model({"w": torch.ones(4)}), {"step": 3}, keep_last=4, log=said.append,
                    resumed_from=2)  # another run passing over step 3 again: beside the first one kept
    assert "abandoned-step-00000003-2" in folders() and len(said) == 1
    for step in (4, 5, 6):  # the aside folders are no run's: never pruned, never resumed from
        checkpoint.save(tmp_path, step, _save_model({"w": torch.zeros(4)}), {"step": step}, keep_last=1)
    assert folders() == ["abandoned-step-00000003", "abandoned-step-00000003-2", "abandoned-step-00000004",
                         "step-00000006"]


def test_a_damaged_checkpoint_between_the_resumed_step_and_the_first_save_is_passed_over_too(tmp_path):
    """Steps 25 (a best saved between save_every's) and 30 damaged; the run resumes from 20 and first saves at 30.
    Step 25, below the save, stayed in the index with its abandoned run's dev loss as the best, and with keep_last 2
    the step resumed from was pruned for it: a damaged folder and the new step were all that was kept."""
    root = tmp_path / "checkpoints"
    for step, loss in ((10, 2.0), (20, 1.5), (25, 1.0), (30, 1.2)):
        checkpoint.save(tmp_path, step, _save_model({"w": torch.full((4,), float(step))}), {"step": step}, keep_last=3,
                        dev_loss=loss)
    for step in (25, 30):
        (root / checkpoint.step_name(step) / "adapter.pt").write_bytes(b"")
    assert checkpoint.latest(tmp_path, log=lambda _: None).step == 20
    said = []
    checkpoint.save(tmp_path, 30, _save_model({"w": torch.zeros(4)}), {"step": 30}, keep_last=2, dev_loss=1.4,
                    log=said.append, resumed_from=20)
    assert json.loads((root / "index.json").read_text()) == {"steps": [20, 30], "best_step": 30, "best_loss": 1.4}
    assert sorted(p.name for p in root.iterdir()) == ["abandoned-step-00000025", "abandoned-step-00000030",
                                                      "index.json", "step-00000020", "step-00000030"]
    assert len(said) == 2 and all("passed over by this resumed run" in m for m in said)


def test_a_passed_over_checkpoint_that_cannot_be_set_aside_is_said_to_go_as_it_goes(tmp_path, monkeypatch):
    """Where the rename fails (a read-only entry, another user's folder), the log says what becomes of each folder:
    the step this save writes is written over, a later one is removed with the steps the run abandons."""
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, _save_model({"w": torch.full((4,), float(step))}), {"step": step}, keep_last=4)
    rename = os.replace

    def refuse_aside(src, dst):
        if Path(dst).name.startswith(checkpoint.ABANDONED):
            raise PermissionError(13, "Permission denied")
        rename(src, dst)

    monkeypatch.setattr(os, "replace", refuse_aside)
    said = []
    checkpoint.save(tmp_path, 2, _save_model({"w": torch.zeros(4)}), {"step": 2}, keep_last=4, log=said.append,
                    resumed_from=1)
    assert [m.split("; ", 1)[1] for m in said] == ["written over by this run's own save of that step",
                                                   "removed with the steps this run abandons"]
    assert ["step-00000002" in said[0], "step-00000003" in said[1]] == [True, True]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["index.json", "step-00000001",
                                                                             "step-00000002"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_saved_model_folders_and_checkpoints_are_readable_as_the_umask_allows(tmp_path, umask):
    """safetensors writes its files 0o600: a model folder or checkpoint shared with a group, or served by another
    user, could not be read, where config.json beside it could. Now every file gets 0o666 less the umask."""
    import tiny

    before = os.umask(umask)
    try:
        model = tiny.speech_llm(tmp_path / "m")
        folder = model.save_pretrained(tmp_path / "model")
        checkpoint.save(tmp_path / "run", 1, model.save_pretrained, {"step": 1}, keep_last=1)
    finally:
        os.umask(before)
    files = [p for root in (folder, tmp_path / "run" / "checkpoints") for p in root.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"adapter.safetensors", "config.json", "tensors.safetensors"}, files
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: 0o666 & ~umask for p in files}


def test_truncated_checkpoint_falls_back_with_a_message(tmp_path):
    for step in (1, 2):
        checkpoint.save(tmp_path, step, _save_model({"w": torch.randn(1000)}), {"step": step}, keep_last=3)
    newest = tmp_path / "checkpoints" / "step-00000002" / "adapter.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    messages = []
    info = checkpoint.latest(tmp_path, log=messages.append)
    assert info.step == 1
    assert "damaged" in messages[0] and "truncated" in messages[0]


def test_leftover_tmp_from_a_crash_is_ignored_and_removed_only_by_the_locked_run(tmp_path):
    """latest() removed every .tmp-* folder, and a second launch reads the checkpoints (is the run finished?) before
    it meets the run lock: it deleted the running job's half-written checkpoint, whose rename then failed."""
    checkpoint.save(tmp_path, 1, _save_model({"w": torch.zeros(2)}), {"step": 1})
    tmp = tmp_path / "checkpoints" / ".tmp-step-00000002-99"
    tmp.mkdir()
    assert checkpoint.latest(tmp_path).step == 1
    assert tmp.is_dir()  # another run's checkpoint being written, for all latest() knows
    checkpoint.remove_leftovers(tmp_path)  # the run holding the lock
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    assert checkpoint.latest(tmp_path).step == 1


def test_an_unreadable_file_marks_the_checkpoint_damaged_in_one_line(tmp_path, monkeypatch):
    """A permission or I/O error hashing a checkpoint's file escaped latest() as a traceback naming no file."""
    for step in (1, 2):
        checkpoint.save(tmp_path, step, _save_model({"w": torch.randn(10)}), {"step": step}, keep_last=3)
    real = checkpoint._sha256

    def sha256(path):
        if Path(path).parent.name == "step-00000002" and Path(path).name == "adapter.pt":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(checkpoint, "_sha256", sha256)
    messages = []
    assert checkpoint.latest(tmp_path, log=messages.append).step == 1
    assert messages == [f"checkpoint {tmp_path / 'checkpoints' / 'step-00000002'} is damaged (adapter.pt unreadable "
                        "(Permission denied)); trying the previous one"]


class _Killed(BaseException):
    """A kill -9 at that line: nothing after it runs, no except either."""


def _fail_renaming_into_place(monkeypatch, error):
    real = checkpoint.os.replace

    def replace(src, dst):
        if Path(src).name.startswith(".tmp-step-"):
            monkeypatch.setattr(checkpoint.os, "replace", real)  # once
            raise error
        return real(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)


@pytest.mark.parametrize("failure", ["error", "kill"])
def test_a_step_written_again_keeps_its_old_folder_until_the_new_one_is_in_place(tmp_path, monkeypatch, failure):
    """A step written again (resumed from an older checkpoint) had its old folder deleted before the new one took
    its name: a failure or kill -9 between the two left no folder for that step."""
    for step in (1, 2):
        checkpoint.save(tmp_path, step, _save_model({"w": torch.zeros(2)}), {"step": step, "run": "old"}, keep_last=3)
    root = tmp_path / "checkpoints"
    if failure == "error":
        _fail_renaming_into_place(monkeypatch, OSError(5, "Input/output error"))
        with pytest.raises(LLMSRTError, match=r"step-00000002: cannot write the checkpoint \(Input/output error\)"):
            checkpoint.save(tmp_path, 2, _save_model({"w": torch.ones(2)}), {"step": 2, "run": "new"}, keep_last=3)
    else:
        _fail_renaming_into_place(monkeypatch, _Killed())
        with pytest.raises(_Killed):
            checkpoint.save(tmp_path, 2, _save_model({"w": torch.ones(2)}), {"step": 2, "run": "new"}, keep_last=3)
        messages = []
        checkpoint.remove_leftovers(tmp_path, log=messages.append)  # the next run, once it holds the lock
        assert len(messages) == 1 and "step-00000002" in messages[0] and "put back" in messages[0]
    assert sorted(p.name for p in root.iterdir() if p.name != "index.json") == ["step-00000001", "step-00000002"]
    info = checkpoint.latest(tmp_path)
    assert info.step == 2 and checkpoint.load_trainer_state(info.path)["run"] == "old"
    checkpoint.save(tmp_path, 2, _save_model({"w": torch.ones(2)}), {"step": 2, "run": "new"}, keep_last=3)
    assert checkpoint.load_trainer_state(checkpoint.latest(tmp_path).path)["run"] == "new"
    assert sorted(p.name for p in root.iterdir() if p.name != "index.json") == ["step-00000001", "step-00000002"]


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    a = (torch.rand(3), np.random.rand(3))
    checkpoint.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_unwritable_output_is_detected_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LLMSRTError, match="not writable"):
        checkpoint.check_writable(blocker / "run")
    with pytest.raises(LLMSRTError, match="MiB free"):
        checkpoint.check_writable(tmp_path / "run", need_bytes=1 << 60)


def test_dev_scores_split_srt_output_and_score_both_parts():
    from types import SimpleNamespace

    from llm_srt.prompts import Task
    from llm_srt.train.dev_sample import dev_scores

    ex = [SimpleNamespace(src="eng", tgt="deu", transcript="the red cat sleeps here",
                          translation="die rote Katze schläft hier")] * 2
    perfect = dev_scores(Task.SRT, ex, ["the red cat sleeps here<|eng|><|deu|>die rote Katze schläft hier"] * 2)
    assert perfect["dev_bleu"] == pytest.approx(100.0) and perfect["dev_wer"] == 0.0
    wrong = dev_scores(Task.SRT, ex, ["a dog<|eng|><|deu|>ein Hund"] * 2)
    assert wrong["dev_bleu"] < 10 and wrong["dev_wer"] > 50
    # BLEU is the mean over directions (as `llm-srt evaluate` reports), not over target languages
    mixed = ex + [SimpleNamespace(src="fra", tgt="deu", transcript="le chat", translation="die Katze")] * 2
    two = dev_scores(Task.SRT, mixed, ["the red cat sleeps here<|eng|><|deu|>die rote Katze schläft hier"] * 2
                      + ["x<|fra|><|deu|>ein Hund"] * 2)
    assert two["dev_bleu"] == pytest.approx(50.0, abs=1e-6)
    assert set(dev_scores(Task.ASR, ex, ["the red cat sleeps here"] * 2)) == {"dev_wer"}
    assert set(dev_scores(Task.S2TT, ex, ["die rote Katze"] * 2)) == {"dev_bleu"}
    # one-part outputs are taken as evaluate takes them (protocol.split_output): an SRT-trained model asked for
    # S2TT may write the transcript and tags first, asked for ASR go on with tags and a translation
    said = "the red cat sleeps here<|eng|><|deu|>die rote Katze schläft hier"
    assert dev_scores(Task.S2TT, ex, [said] * 2)["dev_bleu"] == pytest.approx(100.0)
    assert dev_scores(Task.SMT, ex, [said] * 2)["dev_bleu"] == pytest.approx(100.0)
    assert dev_scores(Task.ASR, ex, [said] * 2)["dev_wer"] == 0.0


def test_rng_resumed_on_another_number_of_ranks_is_defined_and_differs_per_rank():
    import torch

    from llm_srt.train import checkpoint
    from llm_srt.train.parallel import Dist
    from llm_srt.train.rng import _restore_rng

    torch.manual_seed(1)
    saved = [checkpoint.rng_state(), checkpoint.rng_state()]  # a 2-rank checkpoint
    draws = []
    for rank in range(4):
        _restore_rng(saved, Dist(rank=rank, world=4), seed=0, step=10)
        draws.append(torch.rand(3))
    assert all(not torch.equal(draws[0], d) for d in draws[1:])
    _restore_rng(saved, Dist(rank=0, world=4), seed=0, step=10)
    assert torch.equal(torch.rand(3), draws[0])  # the same on every resume
    checkpoint.set_rng_state(saved[0])
    assert torch.equal(torch.rand(3), draws[0])  # rank 0 continues the saved stream (rank 0's, not a seed of its own)


def _fake_cuda(monkeypatch, gpus):
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((device, state)))
    return restored


@pytest.mark.parametrize("gpus", [0, 1, 2])
def test_cuda_rng_of_more_gpus_restores_on_fewer_or_none(monkeypatch, gpus):
    """A checkpoint from a 3-GPU host resumes on a host with fewer GPUs (or none): the GPUs present get their saved
    state, the rest is reported, the CPU generators are restored exactly."""
    state = checkpoint.rng_state()
    state["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(3)]  # as get_rng_state_all gives
    expected = torch.rand(3)
    restored = _fake_cuda(monkeypatch, gpus)
    messages = []
    checkpoint.set_rng_state(state, log=messages.append)
    assert torch.equal(torch.rand(3), expected)
    assert [(device, int(s[0])) for device, s in restored] == [(i, i) for i in range(gpus)]
    assert len(messages) == 1 and f"restored {gpus}, dropped {3 - gpus}" in messages[0]


def test_a_rank_on_another_gpu_of_its_node_goes_on_with_its_own_cuda_draws(monkeypatch):
    """Saved by the rank on GPU 5 of a node of 8, resumed where that rank is GPU 1 of a node of 4 (the same world
    size): its GPU gets the state of GPU 5, the one it drew on. Before, GPU 1's never-used state."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 5)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.full((16,), i, dtype=torch.uint8)
                                                                  for i in range(8)])
    state = checkpoint.rng_state()
    assert state["cuda_device"] == 5
    restored = _fake_cuda(monkeypatch, 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    checkpoint.set_rng_state(state, log=lambda *_: None)
    assert restored[-1][0] == 1 and int(restored[-1][1][0]) == 5


def test_cuda_rng_restores_silently_when_every_gpu_is_there(monkeypatch):
    state = {**checkpoint.rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2}
    restored = _fake_cuda(monkeypatch, 4)
    messages = []
    checkpoint.set_rng_state(state, log=messages.append)
    assert [device for device, _ in restored] == [0, 1] and not messages


def _resume_ranks(rank: int, world: int, store: str, root: str, case: str) -> None:
    """Two gloo ranks run the recipe's `find_resume` on output_dir "run": "stale": a shared folder whose listing
    rank 1 reads as empty (checkpoint.latest gives it None); "local": each rank in its own working directory, as
    on two nodes with their own disks, rank 0's holding step 3 and rank 1's only step 1."""
    import os

    import torch.distributed as dist

    from llm_srt.train import recipe
    from llm_srt.train.config import load_config
    from llm_srt.train.parallel import Dist

    torch.set_num_threads(1)
    os.chdir(Path(root) / (f"node{rank}" if case == "local" else "shared"))
    if case == "stale" and rank == 1:
        checkpoint.latest = lambda *a, **k: None
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    try:
        r = recipe.Recipe(load_config(None, ["output_dir=run"]), log=lambda *_: None)
        r.d, r.extending = Dist(rank, world), False
        try:
            r.find_resume()
            got = {"step": r.latest.step, "path": str(r.latest.path)}
        except LLMSRTError as e:
            got = {"error": str(e)}
        (Path(root) / f"{case}{rank}.json").write_text(json.dumps(got))
    finally:
        parallel.release_groups()  # the host groups too: destroy_process_group alone aborted a rank at exit


@pytest.mark.slow  # two 2-rank runs (44 s); make test: test_every_rank_takes_rank_0s_view_of_a_finished_run
def test_every_rank_resumes_from_the_checkpoint_rank_0_found(tmp_path):
    """Rank 0 picks the checkpoint and every rank resumes from it, or every rank stops with one line when one of
    them cannot read it; no rank starts from step 0 (or an older step) beside rank 0's step 3."""
    import torch.multiprocessing as mp

    for folder, steps in (("shared", (1, 3)), ("node0", (1, 3)), ("node1", (1,))):
        for step in steps:
            checkpoint.save(tmp_path / folder / "run", step, _save_model({"w": torch.zeros(2)}), {"step": step})
    for case in ("stale", "local"):
        mp.spawn(_resume_ranks, args=(2, str(tmp_path / f"store-{case}"), str(tmp_path), case), nprocs=2, join=True)
    stale = [json.loads((tmp_path / f"stale{r}.json").read_text()) for r in (0, 1)]
    assert stale[0] == stale[1] == {"step": 3, "path": str(Path("run/checkpoints/step-00000003"))}
    local = [json.loads((tmp_path / f"local{r}.json").read_text()) for r in (0, 1)]
    assert local[0] == local[1] and local[0]["error"].startswith("rank 1 cannot read run/checkpoints/step-00000003")


def _finished_ranks(rank: int, world: int, store: str, root: str) -> None:
    """Two gloo ranks under torchrun's environment run `Recipe.run` on output_dir "run", each in its own working
    directory (two nodes' disks): rank 0's holds a model finished at 4 steps, rank 1's nothing. Asked for 4 steps
    (finished) and then 6 (continue): what each rank does (the set-up after the check is replaced by a marker)."""
    import os

    import torch.distributed as dist

    from llm_srt.train import recipe
    from llm_srt.train.config import load_config

    def went_on(self):
        raise RuntimeError("went on")

    torch.set_num_threads(1)
    os.chdir(Path(root) / f"node{rank}")
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0")
    recipe.Recipe.setup_processes = went_on
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    got = {}
    try:
        for steps in (4, 6):
            r = recipe.Recipe(load_config(None, ["output_dir=run", f"max_steps={steps}", "device=cpu"]),
                              log=lambda *_: None)
            try:
                got[steps] = str(r.run())
            except RuntimeError as e:
                got[steps] = str(e)
            got[f"extending{steps}"] = r.extending
        (Path(root) / f"finished{rank}.json").write_text(json.dumps(got))
    finally:
        parallel.release_groups()  # the host groups too: destroy_process_group alone aborted a rank at exit


def test_every_rank_takes_rank_0s_view_of_a_finished_run(tmp_path):
    """A finished run is skipped on every rank, or continued on every rank, as rank 0 finds output_dir: a rank that
    decided for itself (nothing there on its node) would train while rank 0 returned, and wait at its first
    collective until the timeout."""
    import torch.multiprocessing as mp

    final = tmp_path / "node0" / "run" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    (final / "train_config.json").write_text(json.dumps({"max_steps": 4}))
    (tmp_path / "node1").mkdir()
    mp.spawn(_finished_ranks, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"finished{r}.json").read_text()) for r in (0, 1)]
    assert got[0] == got[1] == {"4": str(Path("run/final")), "extending4": False,
                                "6": "went on", "extending6": True}


def _seed_ranks(rank: int, world: int, store: str, root: str) -> None:
    """A fresh start on two gloo ranks, seeded alike as `setup_processes` seeds them: what each draws after
    `setup_optimizer` (the dropout masks' and CTC negatives' stream)."""
    import torch.distributed as dist

    from llm_srt.train import recipe
    from llm_srt.train.config import load_config
    from llm_srt.train.parallel import Dist

    class Model:
        def trainable_parameters(self):
            return [torch.nn.Parameter(torch.zeros(2))]

    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    try:
        r = recipe.Recipe(load_config(None, ["seed=5"]), log=lambda *_: None)
        r.d, r.model, r.latest = Dist(rank, world), Model(), None
        torch.manual_seed(5)
        np.random.seed(5)
        r.setup_optimizer()
        draws = {"torch": torch.rand(3).tolist(), "numpy": np.random.rand(3).tolist()}
        (Path(root) / f"seed{rank}.json").write_text(json.dumps(draws))
    finally:
        parallel.release_groups()  # the host groups too: destroy_process_group alone aborted a rank at exit


def test_each_rank_draws_its_own_dropout_masks_from_a_fresh_start(tmp_path):
    """Rank 0 keeps the run's stream (a one-process run's); the other ranks each take their own, so their dropout
    masks are not copies of rank 0's (weights are placed and broadcast before)."""
    import torch.multiprocessing as mp

    mp.spawn(_seed_ranks, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"seed{r}.json").read_text()) for r in (0, 1))
    torch.manual_seed(5)
    np.random.seed(5)
    assert r0 == {"torch": torch.rand(3).tolist(), "numpy": np.random.rand(3).tolist()}
    assert r1["torch"] != r0["torch"] and r1["numpy"] != r0["numpy"]


def test_weights_identity_follows_the_weights_not_the_path_and_reads_a_sample(tmp_path, monkeypatch):
    from llm_srt import paths

    rng = np.random.default_rng(0)
    weights = rng.integers(0, 256, 5 << 20, dtype=np.uint8).tobytes()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model-00001.safetensors").write_bytes(weights)
    (tmp_path / "a" / "README.md").write_text("not weights")
    first = paths.weights_identity(str(tmp_path / "a"), "llm")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "README.md").write_text("other notes")
    # files the loader does not read beside the safetensors: another download's extras, a Trainer's leftovers
    (tmp_path / "b" / "pytorch_model.bin").write_bytes(b"old format")
    (tmp_path / "b" / "training_args.bin").write_bytes(b"args")
    (tmp_path / "b" / "original").mkdir()
    (tmp_path / "b" / "original" / "consolidated.00.pth").write_bytes(b"meta's own format")
    assert paths.weights_identity(str(tmp_path / "b"), "llm") == first  # a copy elsewhere: the same model
    changed = np.frombuffer(weights, dtype=np.uint8).copy()
    changed[1 << 10::1 << 14] ^= 1  # a bit in every 16 KiB past the header: a fine-tune changes nearly every block
    (tmp_path / "b" / "model-00001.safetensors").write_bytes(changed.tobytes())
    assert paths.weights_identity(str(tmp_path / "b"), "llm") != first
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(weights)
    renamed = tmp_path / "renamed.gguf"
    renamed.write_bytes(weights)
    assert paths.weights_identity(str(gguf), "llm") == paths.weights_identity(str(renamed), "llm") is not None
    assert paths.weights_identity(str(tmp_path / "missing"), "llm") is None
    ct2 = tmp_path / "ct2"  # a CTranslate2 Whisper folder: its model.bin
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(weights)
    (ct2 / "training_args.bin").write_bytes(b"args")
    assert [f.name for f in paths.weight_files(ct2)] == ["model.bin"]
    assert paths.weights_identity(None, "llm") is None
    read = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: read.append(f) or real_open(f, *a, **k))
    paths.weights_identity(str(tmp_path / "a"), "llm")
    assert [Path(f).name for f in read] == ["model-00001.safetensors"]  # README and the like are not weights


def test_a_file_system_without_flock_does_not_pass_for_another_run(tmp_path, monkeypatch, caplog):
    """Lustre mounted -o noflock (ENOLCK), some FUSE mounts (ENOSYS): the run goes on with a warning; before, it was
    refused as "another training run is writing this output folder". A lock another process holds still refuses."""
    import errno
    import fcntl

    for code in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
        monkeypatch.setattr(fcntl, "flock", lambda fd, op, code=code: (_ for _ in ()).throw(OSError(code, "no")))
        with caplog.at_level("WARNING"):
            lock = run_lock.RunLock(tmp_path).acquire()
        lock.release()
        assert "takes no lock" in caplog.text
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: (_ for _ in ()).throw(OSError(errno.EWOULDBLOCK, "busy")))
    with pytest.raises(LLMSRTError, match=r"another training run is writing this output folder .* once that host is "
                                          r"surely gone, delete .*\.lock\)$"):
        run_lock.RunLock(tmp_path).acquire()


def test_a_model_folder_is_on_disk_before_it_takes_its_name(tmp_path, monkeypatch):
    """final/ (and every model folder) is written through paths.atomic_dir: its files were never fsynced, so after a
    power loss a finished run's final/ could hold empty files and still count as finished. Now each file and folder
    is synced before the rename, and the parent after it."""
    import os

    from llm_srt import paths

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    with paths.atomic_dir(tmp_path / "final") as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "adapter.safetensors").write_bytes(b"x" * 10)
        name = tmp.name
    assert {Path(p).name for p in synced} >= {"config.json", "adapter.safetensors", "sub", name, tmp_path.name}
    assert Path(synced[-1]) == tmp_path  # the parent last, after the rename


def test_a_checkpoint_folder_no_index_names_goes_with_keep_last(tmp_path):
    """A crash between a checkpoint's rename and its index line leaves a folder the index never names: it was kept
    for ever (resumable, never counted by keep_last). The next saves treat it as any other."""
    checkpoint.save(tmp_path, 1, _save_model({"w": torch.zeros(2)}), {"step": 1}, keep_last=2)
    index = tmp_path / "checkpoints" / "index.json"
    index.write_text(json.dumps({"steps": [], "best_step": None, "best_loss": None}))  # the crash: no line for it
    checkpoint.save(tmp_path, 2, _save_model({"w": torch.zeros(2)}), {"step": 2}, keep_last=2)
    assert json.loads(index.read_text())["steps"] == [1, 2]  # counted among the last two
    checkpoint.save(tmp_path, 3, _save_model({"w": torch.zeros(2)}), {"step": 3}, keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000003"]


def test_a_folder_no_index_names_keeps_its_dev_loss_as_the_best(tmp_path):
    """The same crash after a checkpoint with the best dev loss: its loss was never read, so the next save pruned
    it for a worse 'best', and a resume from it took the stale best (a reviewer's find, reproduced with SIGKILL)."""
    from llm_srt.train.final import best_dev_loss

    checkpoint.save(tmp_path, 100, _save_model({"w": torch.zeros(2)}), {"step": 100}, keep_last=1, dev_loss=2.0)
    # the crash: step 200 renamed into place, its index line never written (nor step 100 pruned)
    checkpoint.save(tmp_path / "other", 200, _save_model({"w": torch.ones(2)}), {"step": 200}, dev_loss=1.0)
    shutil.move(tmp_path / "other" / "checkpoints" / "step-00000200", tmp_path / "checkpoints")
    index = tmp_path / "checkpoints" / "index.json"
    assert json.loads(index.read_text()) == {"steps": [100], "best_step": 100, "best_loss": 2.0}
    assert best_dev_loss(tmp_path, 200) == 1.0  # what a resume at step 200 takes as the best so far
    checkpoint.save(tmp_path, 300, _save_model({"w": torch.ones(2)}), {"step": 300}, keep_last=1, dev_loss=1.5)
    assert json.loads(index.read_text()) == {"steps": [200, 300], "best_step": 200, "best_loss": 1.0}
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000200", "step-00000300"]


def test_a_sealed_checkpoint_has_its_folders_synced_too(tmp_path, monkeypatch):
    """seal fsynced the files but not the folders naming them (trainer_state/ is made after the model's files):
    after a power loss, a checkpoint that pruned older ones could lack its trainer state."""
    synced = []
    monkeypatch.setattr(checkpoint, "fsync_dir", lambda d: synced.append(Path(d)))
    final = checkpoint.save(tmp_path, 1, _save_model({"w": torch.zeros(2)}), {"step": 1})
    tmp = [d for d in synced if d.name.startswith(".tmp-step-00000001")]
    assert tmp and tmp[0].parent == final.parent
    state = tmp[0] / checkpoint.STATE_DIR
    assert state in synced and synced.index(state) < synced.index(tmp[0])  # deepest first


def test_a_save_hashes_its_files_once(tmp_path, monkeypatch):
    """read_index took the checkpoint just renamed into place for one a crash left unnamed and verified it: every
    file hashed twice per save (about 1 GB of adapter and optimizer state at the paper's scale)."""
    hashed = []
    real = checkpoint._sha256
    monkeypatch.setattr(checkpoint, "_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    checkpoint.save(tmp_path, 1, _save_model({"w": torch.zeros(2)}), {"step": 1})  # no index yet: one is built
    assert sorted(hashed) == ["adapter.pt", "config.json", "state.json", "tensors.safetensors"]
    checkpoint.save(tmp_path, 2, _save_model({"w": torch.zeros(2)}), {"step": 2})
    assert len(hashed) == 8 and hashed.count("adapter.pt") == 2


def test_only_a_failed_write_is_blamed_on_the_disk(tmp_path):
    """Any RuntimeError during a save became "cannot write the checkpoint ...; free space": a DataLoader worker killed
    by a signal was blamed on the disk. torch.save's own failed writes (a folder gone, a file it cannot open) keep the
    advice; another error keeps its own words, and the partial folder goes either way."""
    def folder_gone(folder):
        folder.mkdir(parents=True)
        torch.save({"w": torch.zeros(2)}, folder / "gone" / "adapter.pt")  # "Parent directory ... does not exist."

    def not_a_file(folder):
        (folder / "adapter.pt").mkdir(parents=True)
        torch.save({"w": torch.zeros(2)}, folder / "adapter.pt")  # "open file failed with strerror: Is a directory"

    def worker_killed(folder):
        folder.mkdir(parents=True)
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")

    for save_model in (folder_gone, not_a_file):
        with pytest.raises(LLMSRTError, match=r"step-00000001: cannot write the checkpoint \(.*\); free space"):
            checkpoint.save(tmp_path, 1, save_model, {"step": 1})
    with pytest.raises(RuntimeError, match=r"^DataLoader worker \(pid 4242\) is killed by signal: Terminated\. $"):
        checkpoint.save(tmp_path, 1, worker_killed, {"step": 1})
    assert list((tmp_path / "checkpoints").iterdir()) == []  # no partial folder left
