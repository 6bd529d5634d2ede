"""The run's logs in output_dir: train_log.jsonl (one JSON record a line) and TensorBoard events; on resume, what a
killed run logged past the resumed step goes.
"""

import json
from pathlib import Path

from .. import paths


def _tensorboard(out: Path, purge_step: int | None = None):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)


def _drop_log_after(out: Path, step: int) -> None:
    """train_log.jsonl without the lines of steps past `step` (a killed run logged them; the resumed one redoes
    them), rewritten atomically; lines that are not a record with a step are kept."""
    path = out / "train_log.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return
    keep = [line for line in lines if not _logged_after(line, step)]
    if len(keep) != len(lines):
        with paths.atomic_file(path) as f:
            f.writelines(keep)


def _logged_after(line: str, step: int) -> bool:
    try:
        logged = json.loads(line).get("step")
    except (ValueError, AttributeError, RecursionError):
        return False
    return isinstance(logged, int) and logged > step


def _log_json(out: Path, record: dict) -> None:
    """A line of train_log.jsonl, its floats to 7 significant digits (float32's; 6 decimals logged the paper's
    warm-up learning rates, 1e-8 and the like, as 0.0)."""
    with open(out / "train_log.jsonl", "a") as f:
        f.write(json.dumps({k: (float(f"{v:.7g}") if isinstance(v, float) else v) for k, v in record.items()}) + "\n")
