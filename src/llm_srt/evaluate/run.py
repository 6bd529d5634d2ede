"""`llm-srt evaluate`: run one or more systems over a test manifest and write the paper's report.

    llm-srt evaluate --model curriculum=runs/embedded/srt/final --model cascade \
        --manifest data/mini/test.jsonl --out reports/mini
    torchrun --nproc_per_node 4 -m llm_srt.cli evaluate --model runs/qwen2.5-7b/srt/final ...

Each manifest row a score takes (an utterance-direction; evaluate/selection.py) is one work item; every system gets
the rows as one mixed-language stream (it batches them by length, not by language pair). A row that fails (a CUDA
out-of-memory included) is an empty hypothesis in the scores and is counted (`failed: N of M`), never dropped. Under
torchrun every rank runs on its own GPU (`--device auto`) over a length-bucketed shard of the rows, and rank 0
merges and writes the report. With several systems, the report also says whether each one's average BLEU differs
from the first system's beyond chance, and its transcripts' WER/CER per source language from the first transcribing
system's (paired bootstrap resampling over the test sentences, evaluate/significance.py). What each --model names (a
baseline, a model folder, results files) and the checks of them made before any decoding are evaluate/models.py's.
"""

import functools
import glob
import os
import shlex
import sys
from dataclasses import replace
from datetime import timedelta
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .. import device
from ..data.clips import counted
from ..data.manifest import Row, read_manifest
from ..device import Placement
from ..errors import LLMSRTError, first_few, shown
from ..paths import EMBEDDED, absolute_model
from ..ranks import from_rank0, on_every_rank, stop_with_launcher
from ..model.decoding import DecodingOptions, decoding_from_args
from ..model.systems import AUTO_TASK, SYSTEMS
from ..model.systems import trained_task as model_task  # the task a model folder was trained for (--task auto)
from ..prompts import Task
from .arguments import add_arguments  # noqa: F401  the verb's options (cli.py calls run.add_arguments)
from .comet import CometOptions, score_systems
from .compare import compare_systems
from . import journal
from .grouped import ByBatch, decode_in_groups, kept_rows  # noqa: F401  (tests: run.decode_in_groups)
from .journal import Journal, remove_journals
from .models import (MT_PROMPTS, against_manifest, baseline_folders, check_models, is_results_file, limited,
                     load_runs, model_folders, mt_prompt_used, mt_system, parse_models, pooled)
from .outputs import (KINDS, PARTIAL, check_inputs_kept, check_writable, file_name, hyps_path, other_hyps,
                      write_hyps, writing)
from .render import format_table, write_report
from .report import UtteranceResult, build_report, row_ids
from .score import check_comet
from .selection import (left_out, mt_rows, named_bad, row_task, select_rows, shard,  # noqa: F401  (tests:
                        unscored_rows)  # run.shard)
from .run_options import comet_options, decoding_record  # noqa: F401  (tests: run.comet_options)
from .significance import SAMPLES, check_samples

TASKS = (AUTO_TASK, "srt", "s2tt", "smt", "asr", "asr+smt")  # --task; auto: what the model folder was trained for
GATHER_TIMEOUT = timedelta(hours=12)  # how long rank 0 waits for the slowest rank's shard
CONNECT_TIMEOUT = timedelta(minutes=30)  # the ranks connecting (a misrouted node fails in this time, not in
#   GATHER_TIMEOUT: set GLOO_SOCKET_IFNAME)
GROUP_BATCHES = 16  # rows run, then journaled, this many batches at a time (sorted by length within a group)
SHOWN_BAD = 3  # of the bad rows --skip-bad dropped, named in its notice (report.md: more; results.json: all)
SCORED_ROWS = {"rows": "scored"}  # in a hyps journal's settings where `select_rows` leaves transcript-only rows out
#   (SRT, ASR+SMT; since 2026-12-07): one without it, of an earlier run that decoded them too, goes on as that run did


def _result(r: Row, task: Task, transcript: str = "", translation: str = "", error: str | None = None,
            forced_tags: bool = False, capped: bool = False) -> UtteranceResult:
    ok = error is None
    return UtteranceResult(
        id=r.id, src=r.src_lang, tgt=r.src_lang if task is Task.ASR else r.tgt_lang, task=task.value, error=error,
        hyp_transcript=transcript if (ok or transcript) and task.writes_transcript else None,  # failed with one:
        #   its translation failed alone (e.g. the whisper system into a target other than English)
        hyp_translation=(transcript if task is Task.ASR else translation) if ok else None,
        ref_transcript=r.transcript or None, ref_translation=(r.translation or None) if task is not Task.ASR else None,
        forced_tags=ok and forced_tags, sentence=r.sentence_id if r.sentence_id and r.sentence_id.strip() else None,
        capped=ok and capped)
    #   a blank sentence id is none (`significance.sentence_key`): one id shared by every row is one test sentence


def run_system(translator, rows: list[Row], task: Task, options: DecodingOptions, batch_size: int,
               desc: str = "evaluate", progress: Callable[[int], object] | None = None,
               unread: Callable[[int, bool], object] | None = None,
               on_rows: Callable[[list[tuple[int, UtteranceResult]]], object] | None = None) -> list[UtteranceResult]:
    """Every row through `translator` (an infer.SpeechTranslator) as one mixed-language, mixed-task stream; one
    UtteranceResult per row, in row order (a failed row has `error` set). `progress(n)`: n more rows done (default:
    a progress bar of its own). `unread(k, by_content)`: row k failed before any batch (no segment reached the system:
    its audio missing or unreadable, or by its content, `by_content`: an SMT clip over 30 s); the journal keeps those
    that fail the same way while their file stays as it is (`_same_each_time`). `on_rows([(k, result), ...])`: the
    rows done (every segment back; after their `unread`) as each batch ends (`ByBatch`)."""
    tasks = [row_task(r, task) for r in rows]
    batched = ByBatch(on_rows)

    def done(k: int, res) -> None:
        if unread is not None and res.error is not None and not res.segments:
            unread(k, res.by_content)
        batched.add(k, _result(rows[k], tasks[k], res.transcript, res.translation, res.error, res.forced_tags,
                               res.capped))

    with progress_bar(len(rows), desc, progress) as update:
        results = translator.translate(
            [r.audio for r in rows], [r.src_lang for r in rows], [r.tgt_lang or None for r in rows], task=tasks,
            options=options, batch_size=batch_size, progress=batched.ended(update), whole_clips=True,
            on_result=done, transcripts=[r.transcript if t is Task.SMT else "" for r, t in zip(rows, tasks)])
    batched.flush()
    return [_result(r, t, res.transcript, res.translation, res.error, res.forced_tags, res.capped)
            for r, t, res in zip(rows, tasks, results)]


def run_text_mt(system, rows: list[Row], options: DecodingOptions, batch_size: int, desc: str = "text MT",
                progress: Callable[[int], object] | None = None,
                on_rows: Callable[[list[tuple[int, UtteranceResult]]], object] | None = None) -> list[UtteranceResult]:
    """The system's own LLM (with its LoRA; the cascade's LLM) translating each row's gold transcript (Task.MT):
    the x axis of paper Figure 3. Rows without a target are not MT rows; one without a transcript fails.
    `on_rows`: the MT rows done, as each batch ends (`ByBatch`)."""
    from ..infer import run_items
    from ..model.protocol import Item

    rows = mt_rows(rows)
    batched = ByBatch(on_rows)
    with progress_bar(len(rows), desc, progress) as update:
        outputs = run_items(system, [Item(None, r.src_lang, r.tgt_lang, Task.MT, r.transcript) for r in rows],
                            options, batch_size, progress=batched.ended(update), on_output=lambda k, o: batched.add(
                                k, _result(rows[k], Task.MT, translation=o.translation, error=o.error,
                                           capped=o.capped)))
    batched.flush()
    return [_result(r, Task.MT, translation=o.translation, error=o.error, capped=o.capped)
            for r, o in zip(rows, outputs)]


@contextmanager
def progress_bar(total: int, desc: str, progress: Callable[[int], object] | None):
    if progress is not None:
        yield progress
        return
    with tqdm(total=total, desc=desc, dynamic_ncols=True) as bar:
        yield bar.update


@contextmanager
def saying_kept(kept: Callable[[], journal.Kept]):
    """The exception leaving it (Ctrl-C, SIGTERM, another rank gone) carries what this rank's journals keep then
    (`kept()`; cli's last line says it)."""
    try:
        yield
    except BaseException as e:
        with suppress(Exception):
            e.kept = kept()
        raise


def _decoded_every_row(folder: Path, stem: str, rank: int, size: int, settings: dict, base: Path | None) -> bool:
    """Whether this rank's journal `stem` holds rows decoded with `settings` and without `SCORED_ROWS`: by an
    llm-srt that decoded every transcript-only row (a journal of other settings: no, its own refusal comes next)."""
    try:
        return bool(Journal.open(folder, stem, rank, size, settings, base=base).rows)
    except LLMSRTError:
        return False


def _taken(journal: Journal, digests: set[str]) -> bool:
    """Whether every row `journal` holds is one of the rows of `digests` (by any form of its audio path: one result
    is held under each of its line's forms, `row_digests`)."""
    taken = {id(result) for d, result in journal.rows.items() if d in digests}
    return all(id(result) in taken for result in journal.rows.values())


def world() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


_group = [None, 0]  # the gloo group of `rank_group` (None: the default group, or one process); its number


@contextmanager
def rank_group():
    """Under torchrun (WORLD_SIZE > 1), every rank in one gloo group for this evaluation (`from_rank0` at the start,
    `gather` at the end; gloo, so no shared disk is needed), ended on the way out if it is this call's own; a no-op
    in one process, but for the watch on torchrun's launcher (`--nproc_per_node 1` too)."""
    import torch.distributed as dist

    stop_with_launcher()  # under torchrun only: a rank left decoding without its launcher held the GPU
    if world()[1] == 1:
        yield
        return
    own = not dist.is_initialized()
    if own:  # connected in CONNECT_TIMEOUT (gloo connects every pair of ranks as a group is made), or failed
        dist.init_process_group("gloo", timeout=CONNECT_TIMEOUT)
    else:
        dist.new_group(backend="gloo", timeout=CONNECT_TIMEOUT)  # connected in time, or failed
    _group[0] = dist.new_group(backend="gloo", timeout=GATHER_TIMEOUT)  # its collectives wait for slower ranks
    _group[1] += 1  # (every rank makes as many: `rank_failed`'s key is the same on each)
    try:
        yield
    finally:
        if own:
            dist.destroy_process_group()
        _group[0] = None


def in_rank_group(fn):
    """`fn` run inside `rank_group`."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with rank_group():
            return fn(*args, **kwargs)
    return run


def rank_failed(size: int, what: str = "failed") -> Callable[[bool], bool]:
    """`failed(True)` on a rank that fails while decoding tells every rank, and `failed()` on any says whether one
    did (looked up, not waited for), through the default group's store (torchrun's rendezvous; the store
    `init_process_group` made, which `ProcessGroup.get_group_store` gives): the others stopped only at the rows'
    hand-over, after decoding their shards for nothing. Always False in one process. `what`: another flag of the
    ranks (one rank's older journal, `journal_settings`), read after a collective that every rank's `say` preceded."""
    import torch.distributed as dist

    world = dist.group.WORLD if size > 1 else None  # None: no default group (a test's stand-in)
    store = world.get_group_store() if world is not None else None
    key = f"llm-srt/evaluate/{_group[1]}/{what}"
    return lambda say=False: store is not None and (store.set(key, "1") is None if say else store.check([key]))


def gather(part, rank: int, size: int) -> list | None:
    """Every rank's `part` on rank 0 (in rank order), None on the others, in `rank_group`'s group."""
    import torch.distributed as dist

    parts = [None] * size if rank == 0 else None
    dist.gather_object(part, parts, dst=0, group=_group[0])
    return parts


def _read_rows(manifest: str | Path, check_audio: bool, skip_bad: bool) -> tuple[list[Row], int, tuple]:
    """The manifest's rows (`read_manifest`), and with --skip-bad how many bad rows it skipped and (file:line, why)
    of each (`skipped_bad`, for the report), the first few named in one line on stderr, as the toolkit's other
    notices (not Python's UserWarning, with a file name, a line number and a line of code). `check_audio`: its audio
    checked as `prepare check` checks it, headers read (a file no decoder opens, or cut short, was scored as an
    empty hypothesis where a missing one stopped the run before decoding)."""
    skipped: list[tuple[str, str]] = []
    rows = read_manifest(manifest, check_audio=check_audio, skip_bad=skip_bad, on_skipped=lambda _: None,
                         read_headers=check_audio, skipped=skipped)
    if n := len(skipped):
        print(f"llm-srt evaluate: warning: --skip-bad: {shown(str(Path(manifest)))}: skipped {n} bad rows "
              f"({named_bad(n, skipped, SHOWN_BAD)}); report.md and results.json count them", file=sys.stderr,
              flush=True)
    return rows, n, tuple(skipped)


def _against(name: str, runs: list[list[UtteranceResult]], model: str, rows: list[Row], manifest, skipped: int,
             log) -> list[list[UtteranceResult]]:
    """`against_manifest`, and one line saying how many of the file's rows held other references."""
    runs, differed = against_manifest(runs, model, rows, manifest, skipped)
    if differed:
        log(f"{name}: {counted(len(differed), 'row')} of {sum(map(len, runs))} held other references than --manifest "
            f"{manifest} ({first_few(differed, 3, counted=False)}); scored against the manifest's")
    return runs


@in_rank_group
def evaluate(models: dict[str, str], manifest: str | Path | None, out: str | Path, task: str = "auto",
             options: DecodingOptions = DecodingOptions(), batch_size: int = 8, limit: int | None = None,
             with_mt: bool = False, skip_bad: bool = False, log=print, placement: Placement | None = None,
             whisper: str | None = None, llm: str | None = None, significance: int = SAMPLES,
             comet: CometOptions | None = None, restart: bool = False, encoder: str | None = None,
             model_llm: str | None = None, mt_prompt: str = "auto"):
    """Run every model (name -> folder, or a baseline's name) over the manifest and write the report into `out`; the
    Report on rank 0, None on the other ranks. A model that is a results file (`is_results_file`: the
    hyps.NAME.jsonl an earlier evaluation wrote) is read, not run, so decoded systems can be scored and compared
    again; `manifest` may be None when every model is one. `whisper` / `llm`: the baselines' Whisper and LLM
    folders; `encoder` / `model_llm`: every model folder's Whisper encoder and LLM instead of those its config.json
    names (a folder moved to another machine; translate's --encoder / --llm). With several systems, each is compared
    with the first by paired bootstrap resampling (`significance` resamples; 0: no test; `compare_systems`); a
    system of several runs (results files) is tested run by run against another of as many runs. `comet`: score
    every system's rows with COMET too (each row's score in its hyps file; mean per direction in the report; paired
    test of the mean against the first system); without it, scores a results file carries are left out (another
    COMET model may have made them). `mt_prompt`: how --with-mt's text MT prompts a model folder (`mt_system`).
    Decoded rows are kept in `out`/partial as they finish (evaluate/journal.py):
    run again after a kill, only the rows not kept there are decoded; `restart`: decode every row again."""
    from ..infer import SpeechTranslator
    from ..model.systems import load_system
    from ..model.whisper_system import release_models

    if task not in TASKS:
        raise LLMSRTError(f"--task {task}: use one of {', '.join(TASKS)}")
    if mt_prompt not in MT_PROMPTS:
        raise LLMSRTError(f"--mt-prompt {mt_prompt}: use one of {', '.join(MT_PROMPTS)}")
    if limit is not None and limit < 1:  # rows[:0] was every row, rows[:-1] all but the last, unsaid
        raise LLMSRTError(f"--limit {limit}: give the number of rows to score, 1 or more (or leave it out for all)")
    if batch_size < 1:  # 0 was a traceback in `groups`; below 0 loaded the model, decoded nothing and failed
        raise LLMSRTError(f"--batch-size {batch_size}: give the number of rows decoded together, 1 or more")
    out = Path(out)
    if significance:
        check_samples(significance)  # before any decoding: a long evaluation must not end in this error
    rank, size = world()
    if comet is not None:  # the same: no COMET environment is an error before decoding, not after. Rank 0 alone
        #   runs COMET and checks it, and every rank stops on its refusal: the others went on and died in the first
        #   hand-over once rank 0 had exited, each on a gloo "Connection closed by peer" traceback
        from_rank0(lambda: check_comet(comet), rank, size, _group[0])
    same = [(a, b) for i, a in enumerate(models) for b in list(models)[i + 1:] if file_name(a) == file_name(b)]
    if same:
        raise LLMSRTError(f"--model: the names {same[0][0]!r} and {same[0][1]!r} would write the same files "
                          f"(hyps.{file_name(same[0][0])}.jsonl); name one of them otherwise (NAME=PATH)")
    run_now = {name: path for name, path in models.items() if not is_results_file(path)}
    if run_now and manifest is None:
        raise LLMSRTError(f"--manifest is needed to run {', '.join(run_now)} (only results files are scored "
                          "without one)")

    def check_disk() -> dict[str, list[list[UtteranceResult]]]:
        """What each rank finds on its own disk (a node's may differ): --out, the folders it loads; on rank 0, which
        reads them and writes the report, the results files (read here, before decoding) and what --out holds."""
        if out.exists() and not out.is_dir():
            raise LLMSRTError(f"--out {out}: a file, not a folder; choose a folder for the report")
        check_models(run_now, whisper, llm, encoder, model_llm)
        if rank != 0:
            return {}
        loaded = {name: load_runs(path) for name, path in models.items() if name not in run_now}
        check_inputs_kept(out, models, run_now, with_mt)
        return loaded

    # agreed: a rank that stopped here alone left the others to die in the next hand-over on a gloo traceback each
    loaded = on_every_rank(check_disk, rank, size, _group[0], name_rank=True)
    folders = {name: baseline_folders(spec, whisper, llm) | model_folders(spec, encoder, model_llm)  # what each
               for name, spec in run_now.items()}  # system loads its Whisper and LLM from (load_system's keywords)
    placement = placement or device.resolve("auto")
    device.make_current(placement)  # in one process too: until 2026-12-05 only under torchrun
    # --skip-bad skips the rows that cannot be scored; one whose audio is missing or unreadable can: it is a failed
    # row (its error the audio's problem, from the decoding), counted and scored as an empty hypothesis like a file
    # that does not decode, so BLEU stays over the whole test set and the report says what was missing
    read = run_now or manifest is not None  # a results file is scored against the manifest's references, and with
    #   --limit keeps its rows among its first N rows, decoded beside it or not (without one: its own first N rows)
    # ranks never decide apart what they read (--skip-bad on a node's disk); the rows --skip-bad drops: for the report
    rows, n_skipped, skipped = from_rank0(lambda: _read_rows(manifest, check_audio=bool(run_now) and not skip_bad,
                                                             skip_bad=skip_bad) if read else ([], 0, ()),
                                          rank, size, _group[0])
    if limit is not None:
        rows = rows[:limit]
        if len(run_now) < len(models):  # rank 0 holds the results files: its refusal is every rank's
            from_rank0(lambda: loaded.update({name: limited(runs, models[name], rows if manifest is not None else None,
                                                            limit, manifest) for name, runs in loaded.items()}),
                       rank, size, _group[0])
    if manifest is not None and len(run_now) < len(models):  # the manifest's references, not those a file holds
        from_rank0(lambda: loaded.update({name: _against(name, runs, models[name], rows, manifest, n_skipped, log)
                                          for name, runs in loaded.items()}), rank, size, _group[0])
    systems: dict[str, list[UtteranceResult]] = {}
    mt: dict[str, list[UtteranceResult]] = {}
    tasks: dict[str, str] = {}
    partial = out / PARTIAL
    group = GROUP_BATCHES * batch_size
    base = Path(manifest).parent if manifest is not None else None  # the folder its audio paths are read from
    opened_kinds = KINDS if with_mt else ("hyps",)  # the journals this run opens, and removes once it is done

    def journal_settings():
        """name -> (task, its journals' settings, whether this rank holds a hyps journal of them that decoded every
        row: of an llm-srt from before `select_rows` left the transcript-only rows out, `SCORED_ROWS`)."""
        here = {}
        for name, path in run_now.items():
            t = model_task(path) if task == AUTO_TASK else Task(task)
            given = folders[name]
            identity = journal.settings(path, given.get("whisper") or given.get("encoder"), given.get("llm"),
                                        decoding_record({name: t.value}, options, placement, False), batch_size,
                                        group, size)
            here[name] = (t, identity, t.writes_transcript and t is not Task.ASR and not restart
                          and _decoded_every_row(partial, f"{file_name(name)}.hyps", rank, size, identity, base))
            if here[name][2]:
                older[name](True)  # told every rank before `on_every_rank`'s collective: they shard the same rows
        return here

    older = {name: rank_failed(size, f"every-row/{k}") for k, name in enumerate(run_now)}
    settings_here = on_every_rank(journal_settings, rank, size, _group[0])
    every_row = {name for name, (_, _, here) in settings_here.items() if here or older[name]()}

    def open_journals():
        """name -> (task, this rank's rows, {kind: (its rows, its journal)}): every journal opened (and its settings
        checked) before any system decodes; --out made (and written to, where a system decodes) on every rank."""
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LLMSRTError(f"--out {out}: cannot create the folder ({e.strerror}); choose another") from None
        if run_now:  # before any model loads: a read-only or full --out failed once a group had decoded (traceback)
            check_writable(out, partial)
        opened = {}
        text = mt_rows(shard(rows, rank, size))  # every direction (--task asr keeps one row per clip in `mine`)
        for name, path in run_now.items():
            t, identity, _ = settings_here[name]
            mine = shard(rows if name in every_row else select_rows(rows, t), rank, size)
            marked = SCORED_ROWS if t.writes_transcript and t is not Task.ASR and name not in every_row else {}
            used = mt_prompt_used(path, mt_prompt)  # the text MT's prompt where it is not the model's own tags
            opened[name] = (t, mine, {
                kind: (kind_rows, Journal.open(partial, f"{file_name(name)}.{kind}", rank, size,
                                               identity | ({"mt_prompt": used} if kind == "mt" and used else
                                                           marked if kind == "hyps" else {}), restart, base))
                for kind, kind_rows in (("hyps", mine), ("mt", text)) if kind in opened_kinds})
            if restart and not with_mt:  # every row again: a killed --with-mt run's text MT is not gone on from either
                remove_journals(partial, [f"{file_name(name)}.mt"], rank=None if rank == 0 else rank)
        return opened

    # every rank's journals checked before any rank loads a model: a resume with another number of processes is
    # refused by the ranks that kept a journal, and a rank without one must not decode its shard for nothing
    runs_here = on_every_rank(open_journals, rank, size, _group[0])
    failed = rank_failed(size)

    def decode_system(name: str, t: Task, mine: list[Row], journals: dict) -> bool:
        """One system's rows of this rank decoded (or kept) into `systems` and `mt`; False where another rank failed
        first: this one stops before its next group (what it decoded is kept in its journals)."""
        tasks[name] = t.value
        todo = {kind: len(rs) - kept_rows(j, rs, group) for kind, (rs, j) in journals.items()}
        log(f"{name}: {len(mine)} rows as {t.value} on {placement}" + (f" (rank {rank} of {size})" if size > 1 else "")
            + (f"; {sum(len(rs) for rs, _ in journals.values()) - sum(todo.values())} rows decoded by an earlier "
               f"run kept ({partial}), {sum(todo.values())} to go" if any(j.rows for _, j in journals.values())
               else "") + (left_out(rows, t) if rank == 0 and name not in every_row else "")
            + ("; its journal, of an llm-srt that decoded the transcript-only (ASR) rows too, goes on as that run did "
               "(those rows not scored; --restart decodes the scored rows alone)" if name in every_row else ""))
        if any(todo.values()):  # every row kept: the model is not even loaded
            if failed():
                return False
            translator = SpeechTranslator(load_system(run_now[name], placement, **folders[name]), name)
            rs, j = journals["hyps"]
            with tqdm(total=len(rs), initial=len(rs) - todo["hyps"], desc=f"evaluate {name}") as bar:
                if not decode_in_groups(j, rs, group, lambda g, unread, done: run_system(
                        translator, g, t, options, batch_size, progress=bar.update, unread=unread, on_rows=done),
                                        failed):
                    return False
            if "mt" in journals:
                rs, j = journals["mt"]
                text_mt = mt_system(translator.system, mt_prompt)
                log(f"{name}: text MT from " + ("an instruction (MT_TEMPLATE)" if text_mt is not translator.system
                                                else "its own MT prompt"))
                with tqdm(total=len(rs), initial=len(rs) - todo["mt"], desc=f"text MT {name}") as bar:
                    if not decode_in_groups(j, rs, group, lambda g, _, done: run_text_mt(
                            text_mt, g, options, batch_size, progress=bar.update, on_rows=done), failed):
                        return False
            translator = text_mt = None  # (--with-mt: text_mt held the system on past release_models)
            release_models(placement.device)  # the next system (or COMET) gets the GPU memory this one held
        systems[name] = journals["hyps"][1].results(mine)
        if name in every_row:  # the rows a run of today decodes: its counts, its hyps file
            scored = {r.id for r in select_rows(rows, t)}
            systems[name] = [r for r in systems[name] if r.id in scored]
        if with_mt:
            mt[name] = journals["mt"][1].results(journals["mt"][0])
        return True

    def decode_here() -> bool:
        try:
            return all(decode_system(name, *here) for name, here in runs_here.items())  # to the first stop
        except Exception as e:
            with suppress(Exception):  # (the store gone: the rank's own error stands)
                failed(True)  # every other rank stops before its next group, not at the hand-over of the rows
            if isinstance(e, journal.Unwritten):  # what is kept, counted as a stop counts it: a full disk that cut
                raise e.saying(kept_now()) from None  # the first batch short said "the rows ... are kept" of none
            raise

    # agreed: a rank that failed while decoding (a model not loading on its GPU, DeviceFailed, a full disk under its
    # journal) left the others to decode their shards for nothing, then die in the hand-over on a gloo traceback
    def kept_now() -> journal.Kept:
        """What this rank's journals keep: the rows the same command does not decode again."""
        return journal.Kept(sum(kept_rows(j, rs, group) for _, _, journals in runs_here.values()
                                for rs, j in journals.values()), partial, rank if size > 1 else None)

    with saying_kept(kept_now):
        on_every_rank(decode_here, rank, size, _group[0], name_rank=True)
    written = {d for r in rows for d in journal.row_digests(r, base)}
    spent = {name: all(_taken(j, written) for _, j in journals.values())  # a journal holding rows this run did not
             for name, (_, _, journals) in runs_here.items()}  # take (--limit) is kept, on any rank
    parts = gather((systems, mt, spent), rank, size) if size > 1 else None

    def report_on_rank0():
        """Rank 0: every rank's rows merged, scored and written; (spent, comet_error) for every rank."""
        nonlocal systems, mt, spent
        if parts is not None:
            spent = {name: all(part[2][name] for part in parts) for name in spent}
            order = {r.id: i for i, r in enumerate(rows)}  # merged results in manifest order, as one process writes

            def merged(k: int, name: str) -> list[UtteranceResult]:
                return sorted((r for part in parts for r in part[k][name]), key=lambda r: order[r.id])

            systems = {name: merged(0, name) for name in systems}
            mt = {name: merged(1, name) for name in mt}
        if loaded and with_mt:
            log(f"--with-mt: no text MT for {', '.join(loaded)} (results files are scored, not run)")
        if loaded and task != AUTO_TASK:  # each file's rows keep the task they were decoded as
            log(f"--task {task}: not for {', '.join(loaded)} (results files are scored, not run)")
        runs = {name: [systems[name]] if name in systems else loaded[name] for name in models}
        scored = {name: pooled(r) for name, r in runs.items()}
        scored = {name: [replace(r, comet=None) for r in rows] for name, rows in scored.items()}
        kept = partial if runs_here else None  # where a write that fails leaves the decoded rows
        for path, results in (*((hyps_path(out, name), results) for name, results in scored.items()),
                              *((hyps_path(out, name, mt=True), results) for name, results in mt.items())):
            with writing(path, kept):  # saved before COMET runs: its failure must not lose the decoding
                write_hyps(path, results)
        comet_error = None
        if comet is not None:
            try:
                scored = score_systems(scored, comet_options(comet, placement), log)
            except LLMSRTError as e:
                comet_error = str(e)
            else:
                for name, results in scored.items():
                    with writing(hyps_path(out, name), kept):
                        write_hyps(hyps_path(out, name), results)
        report = replace(build_report(scored, mt=mt), n_skipped_bad=n_skipped, skipped_bad=skipped)
        report = replace(report, systems=tuple(replace(s, ids=row_ids(r for run in runs[s.name] for r in run),
                                                       not_scored=tuple(r.id for r in unscored_rows(rows, Task(
                                                           tasks[s.name]))) if s.name in tasks else ())
                                               for s in report.systems))  # a system's rows, not its `pooled` ids
        if tasks:
            used = {kind: absolute_model(folder or EMBEDDED) for name in tasks  # the decoded baselines' Whisper
                    for kind, folder in baseline_folders(run_now[name], whisper, llm).items()}  # and LLM folders
            if any(run_now[name] not in SYSTEMS for name in tasks):  # a decoded model folder's --encoder and
                used |= {key: absolute_model(folder) for key, folder in  # --model-llm, where given
                         (("encoder", encoder), ("model_llm", model_llm)) if folder}
            report = replace(report, decoding=decoding_record(tasks, options, placement, with_mt, size) | used
                             | ({"mt_prompt": mt_prompt} if with_mt else {}))
        if comet is not None and comet_error is None:
            if any(r.comet is not None for rows in scored.values() for r in rows):
                report = replace(report, comet_model=comet.model)
            else:
                log("COMET: no row has both a source transcript and a reference translation, so none was scored")
        if len(scored) > 1 and significance:
            report = compare_systems(report, runs, significance, log, scored=scored)
        with writing(out, kept):
            files = write_report(report, out)
        log(format_table(report))
        for s in report.systems:  # counted, never dropped unsaid (`unscored_rows`)
            if s.not_scored:
                log(f"{s.name}: {counted(len(s.not_scored), 'transcript-only row')} not scored under --task "
                    f"{tasks[s.name]} (their clip has no {tasks[s.name]} row): "
                    f"{first_few(s.not_scored, 3, counted=False)}; --task asr scores them")
        log("wrote " + ", ".join(str(p) for p in files.values()))
        if others := other_hyps(out, models, with_mt):
            log(f"{out} also holds {', '.join(p.name for p in others)} of an earlier evaluation, not of this report "
                "(kept: they are decoded hypotheses); remove them, or give each evaluation its own --out")
        return spent, comet_error, report

    # every rank waits for rank 0's files, then removes its own journals: on a node's own disk (no shared --out)
    # only that node's ranks can
    with saying_kept(kept_now):  # (a stop while the report is written: every row kept)
        spent, comet_error, report = from_rank0(report_on_rank0, rank, size, _group[0])
    for name in runs_here:  # every rank's rows are in the files written: their journals have done their work, but
        if spent[name]:  # beside an mt journal this run did not open (a killed --with-mt run's text MT, hours of
            #   decoding): both stay, and --with-mt goes on from both (its speech rows are this run's, same settings)
            stem = file_name(name)
            mt_left = "mt" not in opened_kinds and glob.glob(str(partial / f"{glob.escape(stem)}.mt.rank*.jsonl"))
            if not mt_left:
                remove_journals(partial, [f"{stem}.{kind}" for kind in opened_kinds], rank=None if rank == 0 else rank)
            elif rank == 0:
                log(f"{name}: kept its text-MT journal in {partial} (of a killed --with-mt run), and its decoded "
                    "rows beside it: --with-mt goes on from both")
        elif rank == 0:
            log(f"{name}: kept its journals in {partial}: they hold rows this run did not decode")
    if comet_error is not None and rank == 0:  # the report without COMET is written; the run still says it failed
        again = " ".join("--model " + shlex.quote(f"{name}={models[name] if name in loaded else hyps_path(out, name)}")
                         for name in models)  # quoted: a name may hold spaces ("LLM-SRT w/o SMT (this run)")
        raise LLMSRTError(f"{comet_error} -- the report without COMET and the hypotheses are in {out}: score them "
                          f"again with `llm-srt evaluate {again} --comet ... --out ANOTHER_FOLDER`")
    return report if rank == 0 else None


def main(args) -> int:
    models = parse_models(args.model)
    report = evaluate(models, args.manifest, args.out, args.task,
                      decoding_from_args(args), args.batch_size,
                      args.limit, args.with_mt, args.skip_bad, placement=device.from_args(args),
                      whisper=args.whisper, llm=args.llm, encoder=args.encoder, model_llm=args.model_llm,
                      significance=args.significance, mt_prompt=args.mt_prompt,
                      comet=CometOptions(args.comet, args.comet_python, args.comet_batch_size, args.comet_gpus)
                      if args.comet else None, restart=args.restart)
    if report is None:  # a rank other than 0 under torchrun
        return 0
    return 0 if any(len(s.failed) < s.n_rows for s in report.systems) else 1  # 1: not one row could be translated
