"""The files `llm-srt evaluate` writes in its --out: the systems' results (hyps.*.jsonl, mt.*.jsonl), the journals
of a killed run (OUT/partial), the report's; checked before any model loads (another evaluation's inputs kept, the
folder writable), and written whole or said in one line."""

import glob
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import LLMSRTError
from ..paths import atomic_file
from .models import is_results_file
from .render import MATRIX_PNG, REPORT_MD, RESULTS_JSON, SCATTER_PNG
from .report import UtteranceResult

PARTIAL = "partial"  # OUT/partial: the journals of decoded rows a killed run goes on from (evaluate/journal.py)
KINDS = ("hyps", "mt")  # a system's journals: its rows, its --with-mt text MT


def hyps_path(out: str | Path, system: str, mt: bool = False) -> Path:
    """Where a system's utterance results go: hyps.<system>.jsonl (its text MT: mt.<system>.jsonl)."""
    return Path(out) / f"{'mt' if mt else 'hyps'}.{file_name(system)}.jsonl"


def write_hyps(path: Path, results: list[UtteranceResult]) -> None:
    """A results file, written whole or not at all (`atomic_file`): a full disk left it cut short, or empty."""
    with atomic_file(path) as f:
        f.write("".join(json.dumps(vars(r), ensure_ascii=False) + "\n" for r in results))


@contextmanager
def writing(what: Path, kept: Path | None):
    """Writes of `what` (a file, or the report's folder): an OSError (a full disk, a read-only one) is one line
    naming it, and saying where the decoded rows are kept (`kept`: OUT/partial, if any were decoded)."""
    try:
        yield
    except OSError as e:
        then = (f"; the decoded rows are kept in {kept}: make room (or make it writable) and run the same command "
                "again to write the report from them" if kept is not None else "; make room (or make it writable)")
        raise LLMSRTError(f"{what}: cannot write ({e.strerror or e}){then}") from None


def file_name(system: str) -> str:
    """A system name as it appears in file names ("w/o SMT" must not make a folder)."""
    return system.replace("/", "_").replace("\\", "_")


def written_files(out: Path, models: dict[str, str], run_now: dict[str, str], with_mt: bool) -> list[Path]:
    """The files `evaluate` writes in `out` that are there now: the hyps (and --with-mt mt) files, the report's, and
    the decoded systems' journals (OUT/partial, removed at the end)."""
    journals = (glob.glob(str(out / PARTIAL / f"{glob.escape(file_name(name))}.{kind}.rank*.jsonl"))
                for name in run_now for kind in KINDS)
    return [p for p in (*(hyps_path(out, name) for name in models),
                        *(hyps_path(out, name, mt=True) for name in run_now if with_mt),
                        *(out / f for f in (RESULTS_JSON, REPORT_MD, MATRIX_PNG, SCATTER_PNG)),
                        *(Path(f) for found in journals for f in found)) if p.exists()]


def other_hyps(out: Path, models: dict[str, str], with_mt: bool) -> list[Path]:
    """The hyps.*.jsonl and mt.*.jsonl files in `out` that this evaluation neither wrote nor read: an earlier
    evaluation's other systems. Unlike a stale plot, they are not removed (hours of decoding; another evaluation's
    --model may read them), but said."""
    ours = {hyps_path(out, name) for name in models} | {hyps_path(out, name, mt=True) for name, spec in models.items()
                                                        if with_mt and not is_results_file(spec)}
    read = [Path(part) for spec in models.values() for part in spec.split(",") if os.path.isfile(part)]
    return [p for p in sorted((*out.glob("hyps.*.jsonl"), *out.glob("mt.*.jsonl")))
            if p not in ours and not any(os.path.samefile(p, r) for r in read)]


def check_inputs_kept(out: Path, models: dict[str, str], run_now: dict[str, str], with_mt: bool) -> None:
    """Refuse, before any decoding, an --out where evaluate would write over a results file a --model reads:
    rewritten, the file loses its COMET scores, or holds several runs' rows pooled under new ids, and the same
    command scores other rows the next time."""
    written = written_files(out, models, run_now, with_mt)
    for name, spec in models.items():
        for part in spec.split(",") if name not in run_now else ():
            hit = next((p for p in written if os.path.samefile(p, part)), None)
            if hit is not None:
                raise LLMSRTError(f"--out {out}: this evaluation writes {hit}, which --model {name} reads; give "
                                  "another --out")


def check_writable(out: Path, partial: Path) -> None:
    """Refuse, before any model loads, an --out that takes no writes: OUT/partial made and a file written in it."""
    try:
        partial.mkdir(exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=partial)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * 4096)  # a journal's first lines: a full disk refuses them, an empty file not
        finally:
            os.unlink(probe)
    except OSError as e:
        raise LLMSRTError(f"--out {out}: cannot write there ({e.strerror or e}); choose another --out") from None
