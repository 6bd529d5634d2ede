"""The run's logs in output_dir: train_log.jsonl (one JSON record a line) and TensorBoard events; on resume, what a
killed run logged past the resumed step goes.
"""

import json
import os
from pathlib import Path

from .. import paths
from ..errors import LLMSRTError


def _tensorboard(out: Path, purge_step: int | None = None):
    """The run's TensorBoard writer in out/tensorboard, or one line saying why none can be made."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # a traceback, once the model had loaded and the feature cache filled
        raise LLMSRTError(f"cannot write the TensorBoard log: {e}; install tensorboard (make setup does), then run "
                          "the same command") from None
    try:
        return SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)
    except OSError as e:
        raise LLMSRTError(f"{out / 'tensorboard'}: cannot create the TensorBoard log ({e.strerror or e}); free "
                          "space or fix the folder, then run the same command") from None


def _drop_log_after(out: Path, step: int) -> None:
    """train_log.jsonl without the lines of steps past `step` (a killed run logged them; the resumed one redoes
    them), rewritten atomically; lines that are not a record with a step are kept. A last line without its newline
    (the disk filled, or the run was killed, mid-write) goes, or is ended if it is a whole record: the resumed run's
    first record went on the end of it, and both were one unreadable line."""
    path = out / "train_log.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return
    keep = [line for line in lines if not _logged_after(line, step)]
    if keep and not keep[-1].endswith("\n"):
        keep[-1] = keep[-1] + "\n" if _is_record(keep[-1]) else ""
    if keep != lines:
        with paths.atomic_file(path) as f:
            f.writelines(keep)


def _is_record(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def _logged_after(line: str, step: int) -> bool:
    try:
        logged = json.loads(line).get("step")
    except (ValueError, AttributeError, RecursionError):
        return False
    return isinstance(logged, int) and logged > step


def _log_json(out: Path, record: dict) -> None:
    """A line of train_log.jsonl, its floats to 7 significant digits (float32's; 6 decimals logged the paper's
    warm-up learning rates, 1e-8 and the like, as 0.0). A file that does not end in a newline (a line torn by a
    full disk that no resume has cleaned, `_drop_log_after`) gets one first: a record is never glued to a torn line."""
    line = json.dumps({k: (float(f"{v:.7g}") if isinstance(v, float) else v) for k, v in record.items()}) + "\n"
    with open(out / "train_log.jsonl", "a+b") as f:  # O_APPEND: written at the end, wherever it has read
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode("utf-8"))
